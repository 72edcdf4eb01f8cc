import importlib.util
from pathlib import Path

import click

from counterpoint.cli import main

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_generated_from_the_current_help():
    script = load_script()
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == script.render(), (
        "docs/cli.md is stale: run python scripts/gen_cli_docs.py"
    )


def test_every_command_and_option_is_documented():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    ctx = click.Context(main, info_name="counterpoint")
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert f"## counterpoint {name}" in text
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"counterpoint {name} {param.opts[0]} has no help"
