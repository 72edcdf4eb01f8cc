"""The package's layering: no import runs back up, module-level imports form no circle, and
docs/architecture.md is generated from the code as it is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "gen_architecture", ROOT / "scripts" / "gen_architecture.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_runs_back_up_the_layers():
    arch = _script()
    upward = [
        f"{src} -> {dst}"
        for src, targets in arch.edges().items()
        for dst in targets
        if arch.layer_of(dst) > arch.layer_of(src) and not src.endswith(("counterpoint", "__main__"))
    ]
    assert upward == []


def test_module_level_imports_form_no_circle():
    graph = _script().edges(top_level_only=True)
    done, path, cycles = set(), [], []

    def visit(node):
        if node in path:
            cycles.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if not node.startswith(nxt + "."):  # a module's own package __init__ runs first by design
                visit(nxt)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    assert cycles == []


def test_docs_architecture_md_is_generated_from_the_code():
    assert (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8") == _script().render(), (
        "docs/architecture.md is stale: run python scripts/gen_architecture.py"
    )
