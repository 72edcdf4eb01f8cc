"""Small helpers shared by the benchmark scripts: markdown tables and number formatting."""

from __future__ import annotations

import platform
from collections.abc import Sequence

import torch

__all__ = ["fmt", "machine_line", "markdown_table"]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; every cell is turned into a string with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or an em dash for a value that was not measured."""
    return "—" if value is None else f"{value:.{digits}f}"


def machine_line() -> str:
    """One line saying where the numbers were measured."""
    return (
        f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
