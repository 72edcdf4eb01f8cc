"""JSONL in and out, with resumable output: what the command line reads and writes.

Output rows are written one at a time and flushed, so an interrupted run keeps every finished row.
:class:`JsonlOutput` with ``resume=True`` reads the rows already there and reports which input rows
they cover (by their ``"index"`` field), so the run picks up where it stopped.

Example:
    >>> rows = read_jsonl("queries.jsonl")                       # doctest: +SKIP
    >>> with JsonlOutput("out.jsonl", resume=True) as out:       # doctest: +SKIP
    ...     for i, row in enumerate(rows):
    ...         if i not in out.done:
    ...             out.write({"index": i, **row})
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["JsonlOutput", "iter_jsonl", "iter_jsonl_lines", "read_jsonl"]


def iter_jsonl_lines(
    path: str | os.PathLike[str], what: str = "input"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a JSONL file (numbers are 1-based).

    Args:
        path: the file.
        what: how error messages name the file ("queries", "pool", ...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a JSON object, naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines (a trailing newline, spacing) carry no row
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{what} file {str(path)!r}, line {lineno}: not valid JSON ({err.msg})"
                ) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{what} file {str(path)!r}, line {lineno}: expected a JSON object, got {type(row).__name__}"
                )
            yield lineno, row


def iter_jsonl(path: str | os.PathLike[str], what: str = "input") -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file, one per non-blank line; see :func:`iter_jsonl_lines`."""
    for _, row in iter_jsonl_lines(path, what):
        yield row


def read_jsonl(path: str | os.PathLike[str], what: str = "input") -> list[dict[str, Any]]:
    """All the JSON objects of a JSONL file; see :func:`iter_jsonl`."""
    return list(iter_jsonl(path, what))


class JsonlOutput:
    """A JSONL output file written row by row, never clobbered by accident, resumable.

    Args:
        path: the output file (its folder is created when missing).
        resume: keep the rows already in ``path`` and append; ``done`` holds their ``"index"`` values.
            A last line cut off mid-write (no newline) is dropped first: that row is redone.
        overwrite: replace an existing ``path``.
        key: the field of each row that identifies its input row.

    Raises:
        FileExistsError: ``path`` exists and neither ``resume`` nor ``overwrite`` is set.
        ValueError: both ``resume`` and ``overwrite``; or, when resuming, a malformed row in ``path``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        resume: bool = False,
        overwrite: bool = False,
        key: str = "index",
    ) -> None:
        if resume and overwrite:
            raise ValueError(
                "resume and overwrite cannot both be set: resume keeps the output, overwrite replaces it"
            )
        self.path = Path(path)
        self.key = key
        self.done: dict[Any, dict[str, Any]] = {}  # key -> the row already written
        self.dropped_partial_line = False
        exists = self.path.exists()
        if exists and not (resume or overwrite):
            raise FileExistsError(
                f"output file {str(self.path)!r} already exists; pass --overwrite to replace it or --resume "
                "to continue it"
            )
        if exists and resume:
            self._load_done()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(self.path, "a" if resume else "w", encoding="utf-8")  # noqa: SIM115

    def _load_done(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # The run died while writing its last row: cut that partial row off and redo it.
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            self.dropped_partial_line = True
        for row in iter_jsonl(self.path, "output"):
            if self.key not in row:
                raise ValueError(
                    f"output file {str(self.path)!r} has a row without {self.key!r}, so it cannot be resumed: {row}"
                )
            self.done[row[self.key]] = row

    def write(self, row: dict[str, Any]) -> None:
        """Append one row and flush it to the operating system."""
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()

    def write_all(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
