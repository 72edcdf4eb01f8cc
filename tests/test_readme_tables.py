"""The README's benchmark tables are the benchmark scripts' own output, copied verbatim."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location(
        "update_readme_tables", ROOT / "scripts" / "update_readme_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_benchmark_results():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "<!-- bench:" in readme
    assert _script().render(readme) == readme, "run: python scripts/update_readme_tables.py"


def test_render_replaces_only_the_marked_region(tmp_path, monkeypatch):
    module = _script()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x.md").write_text("| a |\n|---|\n| 1 |\n")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    text = "before\n<!-- bench:x -->\nstale\n<!-- /bench:x -->\nafter\n"
    assert module.render(text) == "before\n<!-- bench:x -->\n| a |\n|---|\n| 1 |\n<!-- /bench:x -->\nafter\n"
    assert module.render("<!-- bench:x -->\n") == "<!-- bench:x -->\n| a |\n|---|\n| 1 |\n<!-- /bench:x -->\n"
