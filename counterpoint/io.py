"""JSONL in and out, with resumable output: what the command line reads and writes.

Output rows are written one at a time and flushed, so an interrupted run keeps every finished row.
The output file appears with its first row, so a run that fails before it leaves no file and
replaces none. :class:`JsonlOutput` with ``resume=True`` reads the rows already there and reports
which input rows they cover (by their ``"index"`` field), so the run picks up where it stopped; a
run record beside the output (``out.jsonl.run.json``) proves that those rows come from the same
input and options.

Example:
    >>> rows = read_jsonl("queries.jsonl")                       # doctest: +SKIP
    >>> options = {"strategy": "greedy", "max_new_tokens": 64}
    >>> with JsonlOutput("out.jsonl", resume=True, input_rows=rows, options=options) as out:  # doctest: +SKIP
    ...     for i, row in enumerate(rows):
    ...         if i not in out.done:
    ...             out.write({"index": i, **row})
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from counterpoint.errors import OptionError, RunMismatchError

__all__ = [
    "RUN_RECORD_SUFFIX",
    "JsonlOutput",
    "check_run_record",
    "iter_jsonl",
    "iter_jsonl_lines",
    "read_jsonl",
    "run_record",
    "write_atomically",
]


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
            yield lineno, _parse_line(line, path, lineno, what)


def _parse_line(line: str, path: Path, lineno: int, what: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} file {str(path)!r}, line {lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(
            f"{what} file {str(path)!r}, line {lineno}: expected a JSON object, got {type(row).__name__}"
        )
    return row


def iter_jsonl(path: str | os.PathLike[str], what: str = "input") -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file, one per non-blank line; see :func:`iter_jsonl_lines`."""
    for _, row in iter_jsonl_lines(path, what):
        yield row


def read_jsonl(path: str | os.PathLike[str], what: str = "input") -> list[dict[str, Any]]:
    """All the JSON objects of a JSONL file; see :func:`iter_jsonl`."""
    return list(iter_jsonl(path, what))


RUN_RECORD_SUFFIX = ".run.json"
_RECORD_FORMAT = 1  # bump when the record's layout changes; a newer one is refused, not misread


class JsonlOutput:
    """A JSONL output file written row by row: never clobbered by accident, never lost, resumable.

    The file appears only with its first row. Until then nothing on disk changes: a run that fails
    (a bad option, a model that does not load, Ctrl-C) leaves no new file, and with ``overwrite``
    the previous file stays byte for byte. The first row is written to a temporary file beside
    ``path`` (``.<name>.<random>.tmp``) and moved into place; later rows are appended and flushed,
    so an interrupted run keeps every finished row. Only a ``kill -9`` during that first move can
    leave the temporary file behind.

    **Run record.** Given ``input_rows`` and/or ``options``, the output gets a sidecar
    ``<path>.run.json`` holding the counterpoint version, the options and a hash of each input row.
    ``resume`` compares it with this run's and refuses (:class:`~counterpoint.errors.RunMismatchError`)
    when an option, the input rows or the version differ, or when the output has rows but no record
    (an output written before records existed, or one whose record was removed): nothing would show
    that its rows belong to this run, and keeping another run's rows is the silent error the record
    exists to prevent. ``overwrite`` starts again. A sidecar rather than a header line, so that the
    output stays plain JSONL, one row per line, for every tool that reads it.

    Args:
        path: the output file (its folder is created with the first row).
        resume: keep the rows already in ``path`` and append; ``done`` holds their ``"index"`` values.
            A last line cut off mid-write (no newline) is dropped with the first new row: that row
            is redone.
        overwrite: replace an existing ``path`` (when the first row is written).
        key: the field of each row that identifies its input row.
        input_rows: the run's input rows (JSON-able mappings), recorded as one hash per row.
        options: everything else that decides the rows' content, JSON-able (strategy, its knobs,
            model, ``max_new_tokens``, seed, template, and the batch size where sampling makes rows
            depend on it). Not where the output goes, progress bars or the like.

    Raises:
        FileExistsError: ``path`` exists and neither ``resume`` nor ``overwrite`` is set.
        OptionError: ``path`` could never be written: a folder, under a file, in a folder not
            writable (checked now, so that the run fails before its model loads).
        RunMismatchError: resuming an output whose run record differs from this run's, or is missing.
        TypeError: ``input_rows`` or ``options`` that are not JSON-able.
        ValueError: both ``resume`` and ``overwrite``; or, when resuming, a malformed row in ``path``.

    Example:
        >>> with JsonlOutput("out.jsonl", resume=True, input_rows=rows,             # doctest: +SKIP
        ...                  options={"strategy": "greedy", "max_new_tokens": 64}) as out:
        ...     for i, row in enumerate(rows):
        ...         if i not in out.done:
        ...             out.write({"index": i, **generate(row)})
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        resume: bool = False,
        overwrite: bool = False,
        key: str = "index",
        input_rows: Sequence[Mapping[str, Any]] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if resume and overwrite:
            raise ValueError(
                "resume and overwrite cannot both be set: resume keeps the output, overwrite replaces it"
            )
        self.path = Path(path)
        self.record_path = self.path.with_name(self.path.name + RUN_RECORD_SUFFIX)
        self.key = key
        self.done: dict[Any, dict[str, Any]] = {}  # key -> the row already written
        self.dropped_partial_line = False
        self.record: dict[str, Any] | None = None
        if input_rows is not None or options is not None:
            self.record = run_record(input_rows or [], options or {})
        self._file: IO[str] | None = None
        self._append_at: int | None = None  # resuming: the byte offset to append at (a partial row cut)
        _check_writable(self.path)
        exists = self.path.exists()
        if exists and not (resume or overwrite):
            raise FileExistsError(
                f"output file {str(self.path)!r} already exists; pass --overwrite to replace it or --resume "
                "to continue it"
            )
        if exists and resume:
            self._load_done()

    def _load_done(self) -> None:
        data = self.path.read_bytes()
        cut = len(data)
        if data and not data.endswith(b"\n"):
            # The run died while writing its last row: that partial row is cut off and redone.
            cut = data.rfind(b"\n") + 1
            self.dropped_partial_line = True
        # split on "\n" only: str.splitlines() would also split inside a row at U+2028 and the like
        for lineno, line in enumerate(data[:cut].decode("utf-8").split("\n"), start=1):
            if not line.strip():
                continue
            row = _parse_line(line, self.path, lineno, "output")
            if self.key not in row:
                raise ValueError(
                    f"output file {str(self.path)!r} has a row without {self.key!r}, so it cannot be resumed: {row}"
                )
            self.done[row[self.key]] = row
        if not self.done:
            return  # nothing to keep: the first row replaces whatever is there, as for a new file
        if self.record is not None:
            check_run_record(self.record_path, self.record, output=self.path)
        self._append_at = cut

    def write(self, row: dict[str, Any]) -> None:
        """Append one row and flush it to the operating system (the first row creates the file)."""
        line = json.dumps(row, ensure_ascii=False) + "\n"
        if self._file is None:
            self._open_with(line)
        else:
            self._file.write(line)
            self._file.flush()

    def _open_with(self, line: str) -> None:
        if self._append_at is not None:  # resuming: cut a partial last row, then append
            with open(self.path, "r+b") as f:
                f.truncate(self._append_at)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self._file.write(line)
            self._file.flush()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.record is None:
            # A record left from an earlier run must not vouch for these rows.
            self.record_path.unlink(missing_ok=True)
        tmp = _write_temp(self.path, line)
        try:
            # The rows first, then their record: killed in between, the output has another run's record
            # (or none) and resume refuses it. The other order could pair old rows with a new record.
            os.replace(tmp, self.path)
            if self.record is not None:
                write_atomically(
                    self.record_path, json.dumps(self.record, ensure_ascii=False, indent=1) + "\n"
                )
        finally:
            tmp.unlink(missing_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write_all(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def close(self) -> None:
        """Close the file; a run that wrote no row leaves everything as it found it."""
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> JsonlOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_writable(path: Path) -> None:
    """Fail now, not after the model has loaded, when ``path`` can never be written."""
    if path.is_dir():
        raise OptionError("path", str(path), "is a folder; expected a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the first row creates the missing folders below this one
    if not folder.is_dir():
        raise OptionError("path", str(path), f"cannot be created: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OptionError("path", str(path), f"cannot be created: the folder {str(folder)!r} is not writable")


def run_record(input_rows: Sequence[Mapping[str, Any]], options: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's record holds: format, counterpoint version, options and one hash per input row.

    Raises:
        TypeError: an option or a row that is not JSON-able, naming it.
    """
    from counterpoint import __version__

    for name, value in options.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise TypeError(f"options[{name!r}] cannot be recorded: {err}") from None
    return {
        "format": _RECORD_FORMAT,
        "counterpoint": __version__,
        "options": json.loads(json.dumps(dict(options), ensure_ascii=False)),  # as the file will hold them
        "input": {
            "rows": len(input_rows),
            "row_sha256": [_row_hash(row, i) for i, row in enumerate(input_rows)],
        },
    }


def _row_hash(row: Mapping[str, Any], index: int) -> str:
    try:
        text = json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise TypeError(f"input row {index} cannot be recorded: {err}") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]  # 64 bits: a changed row is never missed


def check_run_record(record_path: Path, record: dict[str, Any], *, output: Path) -> None:
    """Raise :class:`RunMismatchError` unless ``record_path`` holds ``record`` (this run's)."""
    shown = str(output)
    if not record_path.exists():
        raise RunMismatchError(
            shown,
            reason=f"it has no run record ({record_path.name}), so nothing shows that its rows come from this "
            "input and these options (outputs written before counterpoint kept records have none)",
        )
    try:
        old = json.loads(record_path.read_text(encoding="utf-8"))
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise RunMismatchError(
            shown, reason=f"its run record {record_path.name} cannot be read ({err})"
        ) from None
    if old.get("format") != record["format"]:
        raise RunMismatchError(
            shown,
            reason=f"its run record {record_path.name} has format {old.get('format')!r}, not {record['format']}",
        )
    problems = []
    if old.get("counterpoint") != record["counterpoint"]:
        problems.append(f"counterpoint {old.get('counterpoint')} there, {record['counterpoint']} now")
    old_options, new_options = old.get("options") or {}, record["options"]
    unset = RunMismatchError.UNSET
    options = [
        (name, old_options.get(name, unset), new_options.get(name, unset))
        for name in sorted(set(old_options) | set(new_options))
        if name not in old_options
        or name not in new_options
        or not _same(old_options[name], new_options[name])
    ]
    old_input = old.get("input") or {}
    rows = _input_change(old_input.get("row_sha256") or [], record["input"]["row_sha256"])
    if rows:
        problems.append(rows)
    if options or problems:
        raise RunMismatchError(shown, options=options, problems=problems)


def _input_change(old: list[str], new: list[str]) -> str | None:
    """How the input rows changed, in words, or ``None``."""
    first = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), None)
    if first is None and len(old) == len(new):
        return None
    counts = f"{len(old)} rows there, {len(new)} now"
    if first is None:
        return f"the input rows changed ({counts}; the first {min(len(old), len(new))} are the same)"
    if len(old) != len(new):
        return f"the input rows changed (first differing row: index {first}; {counts})"
    return f"the input rows changed (first differing row: index {first})"


def _same(a: Any, b: Any) -> bool:
    """JSON equality, strict about types where Python is not: ``True != 1``, but ``1 == 1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: a reader sees the old file or the new one, never half."""
    tmp = _write_temp(path, text)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_temp(path: Path, text: str) -> Path:
    """``text`` in a new hidden file beside ``path``, synced to disk; its path."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp
