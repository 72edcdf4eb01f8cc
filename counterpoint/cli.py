"""The ``counterpoint`` command line: thin wrappers over the library, JSONL in and out."""

from __future__ import annotations

import click

from counterpoint import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="counterpoint")
def main() -> None:
    """Contrastive decoding and few-shot demonstration selection."""


if __name__ == "__main__":  # pragma: no cover
    main()
