"""JsonlOutput: no file until the first row, no file ever lost, and resume only against the same run.

The reference for every resumed file is the file one uninterrupted JsonlOutput writes.
"""

import json
import os

import pytest

import counterpoint
from counterpoint import io
from counterpoint.errors import OptionError, RunMismatchError
from counterpoint.io import JsonlOutput

ROWS = [{"id": i, "prompt": f"prompt {i}"} for i in range(5)]
OPTIONS = {"strategy": "sample", "temperature": 0.7, "max_new_tokens": 8, "seed": 0, "model": None}


def result(i):
    return {"index": i, "id": ROWS[i]["id"], "output": f"out {i} \u2028 \u00e9"}  # U+2028 is no line break


def write_run(path, rows=ROWS, options=OPTIONS, n=None, **kwargs):
    with JsonlOutput(path, input_rows=rows, options=options, **kwargs) as out:
        for i in range(len(rows) if n is None else n):
            if i not in out.done:
                out.write(result(i))
    return out


@pytest.fixture
def full(tmp_path):
    """The uninterrupted run's output and record, as bytes."""
    path = tmp_path / "reference" / "full.jsonl"
    write_run(path)
    return path.read_bytes(), (path.parent / "full.jsonl.run.json").read_bytes()


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# -- no file until the first row -------------------------------------------------------------------


@pytest.mark.parametrize("failure", [RuntimeError("model failed to load"), KeyboardInterrupt()])
def test_a_run_that_fails_before_its_first_row_leaves_no_file(tmp_path, failure):
    out = tmp_path / "sub" / "out.jsonl"
    with pytest.raises(type(failure)), JsonlOutput(out, input_rows=ROWS, options=OPTIONS):
        raise failure
    assert listing(tmp_path) == []  # not the file, not its record, not its folder, no temporary file
    write_run(out)  # and the rerun is not refused as "already exists"


@pytest.mark.parametrize("failure", [RuntimeError("model failed to load"), KeyboardInterrupt()])
def test_overwrite_then_failure_keeps_the_old_file_byte_for_byte(tmp_path, full, failure):
    out = tmp_path / "out.jsonl"
    write_run(out)
    before = {name: (tmp_path / name).read_bytes() for name in listing(tmp_path) if name != "reference"}
    with pytest.raises(type(failure)), JsonlOutput(out, overwrite=True, input_rows=ROWS[:2], options={}):
        raise failure
    after = {name: (tmp_path / name).read_bytes() for name in listing(tmp_path) if name != "reference"}
    assert after == before and before["out.jsonl"] == full[0]


def test_overwrite_replaces_file_and_record_with_the_first_row(tmp_path):
    out = tmp_path / "out.jsonl"
    write_run(out)
    options = {**OPTIONS, "seed": 1}
    with JsonlOutput(out, overwrite=True, input_rows=ROWS, options=options) as writer:
        writer.write(result(3))
        assert out.read_text(encoding="utf-8") == json.dumps(result(3), ensure_ascii=False) + "\n"
        assert json.loads((tmp_path / "out.jsonl.run.json").read_text())["options"] == options
    assert listing(tmp_path) == ["out.jsonl", "out.jsonl.run.json"]


def test_a_failure_while_moving_the_first_row_in_leaves_no_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt), JsonlOutput(out, input_rows=ROWS, options=OPTIONS) as writer:
        writer.write(result(0))
    assert listing(tmp_path) == []


# -- resume -------------------------------------------------------------------------------------------


def test_matching_resume_continues_to_the_uninterrupted_file(tmp_path, full):
    out = tmp_path / "out.jsonl"
    write_run(out, n=2)
    resumed = write_run(out, resume=True)
    assert sorted(resumed.done) == [0, 1] and not resumed.dropped_partial_line
    assert (out.read_bytes(), (tmp_path / "out.jsonl.run.json").read_bytes()) == full


def test_resume_after_a_row_cut_off_mid_write(tmp_path, full):
    """kill -9 while writing row 2: the partial row is cut with the first new row, then redone."""
    out = tmp_path / "out.jsonl"
    write_run(out, n=3)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 7])
    cut = out.read_bytes()
    with JsonlOutput(out, resume=True, input_rows=ROWS, options=OPTIONS) as writer:
        assert writer.dropped_partial_line and sorted(writer.done) == [0, 1]
        assert out.read_bytes() == cut  # nothing changes before a row is written
        for i in range(2, len(ROWS)):
            writer.write(result(i))
    assert (out.read_bytes(), (tmp_path / "out.jsonl.run.json").read_bytes()) == full


def test_resume_of_a_missing_output_starts_it(tmp_path, full):
    out = tmp_path / "out.jsonl"
    write_run(out, resume=True)
    assert (out.read_bytes(), (tmp_path / "out.jsonl.run.json").read_bytes()) == full


def test_resume_of_an_output_with_no_complete_row_starts_it_afresh(tmp_path, full):
    """Nothing would be kept, so there is nothing to prove: no record needed, the partial line goes."""
    out = tmp_path / "out.jsonl"
    out.write_text('{"index": 0, "outp')
    with JsonlOutput(out, resume=True, input_rows=ROWS, options=OPTIONS) as writer:
        assert writer.dropped_partial_line and writer.done == {}
        for i in range(len(ROWS)):
            writer.write(result(i))
    assert (out.read_bytes(), (tmp_path / "out.jsonl.run.json").read_bytes()) == full


def test_killed_between_the_first_row_and_its_record_resume_refuses(tmp_path, monkeypatch):
    """The rows move in before their record: a kill in between never pairs old rows with a new record."""
    out = tmp_path / "out.jsonl"
    write_run(out, options={"seed": 0})

    def killed(path, text):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(io, "write_atomically", killed)
        with pytest.raises(KeyboardInterrupt):
            write_run(out, options={"seed": 1}, overwrite=True)
    new_row = json.dumps(result(0), ensure_ascii=False) + "\n"
    assert out.read_text(encoding="utf-8") == new_row  # the new run's row, under the old run's record:
    with pytest.raises(RunMismatchError, match=r"seed 0 there, 1 now"):
        write_run(out, options={"seed": 1}, resume=True)
    assert listing(tmp_path) == ["out.jsonl", "out.jsonl.run.json"]


def mismatch(tmp_path, *, old_rows=ROWS, old_options=OPTIONS, rows=ROWS, options=OPTIONS):
    out = tmp_path / "out.jsonl"
    write_run(out, rows=old_rows, options=old_options, n=2)
    before = out.read_bytes()
    with pytest.raises(RunMismatchError) as err:
        JsonlOutput(out, resume=True, input_rows=rows, options=options)
    assert out.read_bytes() == before
    return str(err.value), err.value


def expected(tmp_path, what):
    return f"cannot resume '{tmp_path / 'out.jsonl'}', written by another run: {what}; pass --overwrite to start it again"


CHANGED_ROW = [*ROWS[:3], {"id": 3, "prompt": "prompt 3, edited"}, ROWS[4]]

MISMATCHES = [
    ("option", {"options": {**OPTIONS, "temperature": 1.0}}, "temperature 0.7 there, 1.0 now"),
    (
        "string option",
        {"options": {**OPTIONS, "strategy": "greedy"}},
        'strategy "sample" there, "greedy" now',
    ),
    ("option added", {"options": {**OPTIONS, "top_k": 50}}, "top_k not set there, 50 now"),
    (
        "option removed",
        {"options": {k: v for k, v in OPTIONS.items() if k != "seed"}},
        "seed 0 there, not set now",
    ),
    ("null to value", {"options": {**OPTIONS, "model": "./expert"}}, 'model null there, "./expert" now'),
    ("bool is not int", {"old_options": {"chat": 1}, "options": {"chat": True}}, "chat 1 there, true now"),
    (
        "long value",
        {"options": {**OPTIONS, "seed": "x" * 100}},
        'seed 0 there, "' + "x" * 56 + "... now",
    ),
    (
        "two options",
        {"options": {**OPTIONS, "seed": 1, "temperature": 0.9}},
        "seed 0 there, 1 now; temperature 0.7 there, 0.9 now",
    ),
    ("row edited", {"rows": CHANGED_ROW}, "the input rows changed (first differing row: index 3)"),
    (
        "rows added",
        {"old_rows": ROWS[:3]},
        "the input rows changed (3 rows there, 5 now; the first 3 are the same)",
    ),
    (
        "rows removed and edited",
        {"rows": CHANGED_ROW[:4]},
        "the input rows changed (first differing row: index 3; 5 rows there, 4 now)",
    ),
    (
        "row order",
        {"rows": [ROWS[1], ROWS[0], *ROWS[2:]]},
        "the input rows changed (first differing row: index 0)",
    ),
    (
        "option and rows",
        {"options": {**OPTIONS, "seed": 2}, "rows": CHANGED_ROW},
        "seed 0 there, 2 now; the input rows changed (first differing row: index 3)",
    ),
]


@pytest.mark.parametrize(("case", "change", "what"), MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_every_kind_of_mismatch_is_one_line_and_keeps_the_file(tmp_path, case, change, what):
    message, _ = mismatch(tmp_path, **change)
    assert message == expected(tmp_path, what)


def test_a_mismatch_renders_with_the_command_lines_flags(tmp_path):
    _, err = mismatch(tmp_path, options={**OPTIONS, "temperature": 1.0, "max_new_tokens": 9})
    flags = {"temperature": "--temperature", "max_new_tokens": "--max-new-tokens"}
    assert err.render(flags) == expected(
        tmp_path, "--max-new-tokens 8 there, 9 now; --temperature 0.7 there, 1.0 now"
    )
    assert [(name, old, new) for name, old, new in err.options] == [
        ("max_new_tokens", 8, 9),
        ("temperature", 0.7, 1.0),
    ]


def test_another_counterpoint_version_is_a_mismatch(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    write_run(out, n=1)
    version = counterpoint.__version__
    monkeypatch.setattr(counterpoint, "__version__", "9.9.9")
    with pytest.raises(RunMismatchError) as err:
        write_run(out, resume=True)
    assert str(err.value) == expected(tmp_path, f"counterpoint {version} there, 9.9.9 now")


def test_numbers_equal_as_json_are_the_same_option(tmp_path, full):
    out = tmp_path / "out.jsonl"
    write_run(out, options={**OPTIONS, "max_new_tokens": 8}, n=2)
    write_run(out, options={**OPTIONS, "max_new_tokens": 8.0}, resume=True)
    assert out.read_bytes() == full[0]


def test_resume_without_a_record_is_refused_naming_overwrite(tmp_path):
    """An output from before run records (or whose record was deleted) cannot show it is this run's."""
    out = tmp_path / "out.jsonl"
    write_run(out, n=2)
    (tmp_path / "out.jsonl.run.json").unlink()
    with pytest.raises(RunMismatchError) as err:
        write_run(out, resume=True)
    assert str(err.value) == (
        f"cannot resume '{out}': it has no run record (out.jsonl.run.json), so nothing shows that its rows come "
        "from this input and these options (outputs written before counterpoint kept records have none); pass "
        "--overwrite to start it again"
    )


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (
            "{not json",
            "its run record out.jsonl.run.json cannot be read (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        ),
        ("[1, 2]", "its run record out.jsonl.run.json cannot be read (not a JSON object)"),
        ('{"format": 2}', "its run record out.jsonl.run.json has format 2, not 1"),
    ],
)
def test_an_unreadable_record_is_refused(tmp_path, record, reason):
    out = tmp_path / "out.jsonl"
    write_run(out, n=2)
    (tmp_path / "out.jsonl.run.json").write_text(record)
    with pytest.raises(RunMismatchError) as err:
        write_run(out, resume=True)
    assert str(err.value) == f"cannot resume '{out}': {reason}; pass --overwrite to start it again"


def test_without_run_information_no_record_is_kept_and_a_stale_one_goes(tmp_path):
    out = tmp_path / "out.jsonl"
    write_run(out, n=2)
    with JsonlOutput(out, overwrite=True) as writer:
        writer.write(result(0))
    assert listing(tmp_path) == ["out.jsonl"]  # the old record must not vouch for these rows
    with JsonlOutput(out, resume=True) as writer:  # and resume without run information checks nothing
        assert list(writer.done) == [0]


# -- what JsonlOutput refuses up front -------------------------------------------------------------------


def test_an_existing_output_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "out.jsonl"
    write_run(out, n=1)
    with pytest.raises(FileExistsError) as err:
        JsonlOutput(out)
    assert str(err.value) == (
        f"output file '{out}' already exists; pass --overwrite to replace it or --resume to continue it"
    )
    with pytest.raises(ValueError, match="^resume and overwrite cannot both be set"):
        JsonlOutput(out, resume=True, overwrite=True)


def test_outputs_that_can_never_be_written_are_refused_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("")
    cases = [
        (tmp_path, f"path={str(tmp_path)!r} is a folder; expected a file name"),
        (
            tmp_path / "a_file" / "sub" / "out.jsonl",
            f"path={str(tmp_path / 'a_file' / 'sub' / 'out.jsonl')!r} cannot be created: "
            f"{str(tmp_path / 'a_file')!r} is a file, not a folder",
        ),
    ]
    for path, message in cases:
        with pytest.raises(OptionError) as err:
            JsonlOutput(path)
        assert str(err.value) == message
    assert err.value.render("--output").startswith(f"--output {path} cannot be created")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(OptionError, match="is not writable$"):
        JsonlOutput(folder / "out.jsonl")


def test_what_cannot_be_recorded_is_named(tmp_path):
    with pytest.raises(TypeError, match=r"^options\['model'\] cannot be recorded: Object of type object"):
        JsonlOutput(tmp_path / "o.jsonl", input_rows=ROWS, options={"model": object()})
    with pytest.raises(TypeError, match=r"^input row 1 cannot be recorded: Object of type set"):
        JsonlOutput(tmp_path / "o.jsonl", input_rows=[{"a": 1}, {"a": {1}}], options={})
    assert listing(tmp_path) == []


def test_a_malformed_output_row_is_reported_with_its_line(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"index": 0}\nnot json\n')
    with pytest.raises(
        ValueError, match=rf"^output file '{out}', line 2: not valid JSON \(Expecting value\)$"
    ):
        JsonlOutput(out, resume=True)
    out.write_text('{"index": 0}\n{"id": 3}\n')
    with pytest.raises(ValueError, match=r"has a row without 'index', so it cannot be resumed: \{'id': 3\}$"):
        JsonlOutput(out, resume=True)
