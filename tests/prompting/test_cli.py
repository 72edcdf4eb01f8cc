"""The command line driven through click's CliRunner on a saved tiny model: exact output and exit codes."""

import json

import pytest
import torch
from click.testing import CliRunner

import counterpoint.models
from counterpoint import cli
from counterpoint.models import load_language_model
from counterpoint.prompting import FewShotTemplate, Pipeline
from tests.prompting.test_pipeline import POOL, QUERIES, OverlapSelector

PROMPTS = ["Once upon a time", "The capital of France is a city called", "Hi", "A B C D E F G H I J K"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_language_model(tiny_model_dir)


def alone(model, tokenizer, prompt, n):
    """Oracle: greedy on the prompt alone, no padding, no batching."""
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    new = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False
    )
    return tokenizer.decode(new[0, ids.shape[1] :], skip_special_tokens=True)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_single_prompt_is_streamed(runner, tiny_model_dir, tiny):
    result = runner.invoke(
        cli.main, ["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "6", PROMPTS[0]]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == alone(*tiny, PROMPTS[0], 6) + "\n"


def test_several_prompts_give_jsonl_rows_longest_first(runner, tiny_model_dir, tiny):
    args = [
        "generate",
        "--model",
        str(tiny_model_dir),
        "--max-new-tokens",
        "5",
        "--batch-size",
        "2",
        *PROMPTS,
    ]
    result = runner.invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    lengths = [len(tiny[1](p)["input_ids"]) for p in PROMPTS]
    order = sorted(range(len(PROMPTS)), key=lambda i: -lengths[i])
    expected = [{"index": i, "prompt": PROMPTS[i], "output": alone(*tiny, PROMPTS[i], 5)} for i in order]
    assert result.stdout == "".join(json.dumps(r) + "\n" for r in expected)


def test_prompts_from_stdin(runner, tiny_model_dir, tiny):
    result = runner.invoke(
        cli.main,
        ["generate", "--model", str(tiny_model_dir), "--max-new-tokens", "3"],
        input="Hi\n\nOnce upon a time\n",
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted((r["index"], r["prompt"]) for r in rows) == [(0, "Hi"), (1, "Once upon a time")]
    assert all(r["output"] == alone(*tiny, r["prompt"], 3) for r in rows)


def test_beam_single_prompt_prints_whole(runner, tiny_model_dir, tiny):
    model, tok = tiny
    args = [
        "generate",
        "--model",
        str(tiny_model_dir),
        "--strategy",
        "beam",
        "--num-beams",
        "2",
        "--max-new-tokens",
        "4",
        "Hi",
    ]
    result = runner.invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    enc = tok(["Hi"], return_tensors="pt")
    ref = model.generate(**enc, max_new_tokens=4, num_beams=2, do_sample=False)[
        0, enc["input_ids"].shape[1] :
    ]
    assert result.stdout == tok.decode(ref, skip_special_tokens=True) + "\n"


def test_input_file_to_output_file_keeps_ids(runner, tiny_model_dir, tiny, tmp_path):
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": p} for i, p in enumerate(PROMPTS[:2])]
    )
    out = tmp_path / "out.jsonl"
    args = [
        "generate",
        "--model",
        str(tiny_model_dir),
        "-i",
        str(src),
        "-o",
        str(out),
        "--max-new-tokens",
        "3",
    ]
    result = runner.invoke(cli.main, args)
    assert result.exit_code == 0 and result.stdout == ""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {"index": 1, "id": "r1", "prompt": PROMPTS[1], "output": alone(*tiny, PROMPTS[1], 3)},
        {"index": 0, "id": "r0", "prompt": PROMPTS[0], "output": alone(*tiny, PROMPTS[0], 3)},
    ]
    again = runner.invoke(cli.main, args)
    assert again.exit_code == 1
    assert again.stderr == (
        f"Error: output file '{out}' already exists; pass --overwrite to replace it or --resume to continue it\n"
    )
    assert runner.invoke(cli.main, [*args, "--overwrite"]).exit_code == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def interrupting_loader(after_calls):
    """load_language_model whose model raises KeyboardInterrupt (Ctrl-C) on generate call number after_calls + 1."""
    real = counterpoint.models.load_language_model

    def load(name, **kw):
        model, tok = real(name, **kw)
        original, calls = model.generate, []

        def generate(**kwargs):
            calls.append(1)
            if len(calls) > after_calls:
                raise KeyboardInterrupt
            return original(**kwargs)

        model.generate = generate
        return model, tok

    return load


@pytest.mark.parametrize("command", ["generate", "run"])
def test_resume_after_interruption_gives_the_uninterrupted_file(
    runner, tiny_model_dir, tmp_path, monkeypatch, command
):
    monkeypatch.setattr(
        cli,
        "_build_selector",
        lambda pool, kw, template, tok, method_kwargs, model=None: OverlapSelector(POOL),
    )
    rows = [{"id": i, "prompt": q["input"], "input": q["input"]} for i, q in enumerate(QUERIES)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    pool = write_jsonl(tmp_path / "pool.jsonl", POOL)
    common = [
        "--model",
        str(tiny_model_dir),
        "--strategy",
        "sample",
        "--temperature",
        "2.0",
        "--batch-size",
        "2",
    ]
    common += ["--max-new-tokens", "4", "--seed", "7"]
    if command == "generate":
        args = lambda out: ["generate", "-i", str(src), "-o", str(out), *common]  # noqa: E731
    else:
        args = lambda out: ["run", str(src), "--pool", str(pool), "-o", str(out), *common]  # noqa: E731

    full = tmp_path / "full.jsonl"
    assert runner.invoke(cli.main, args(full)).exit_code == 0
    assert len(full.read_text().splitlines()) == len(QUERIES)

    part = tmp_path / "part.jsonl"
    with monkeypatch.context() as m:
        m.setattr(counterpoint.models, "load_language_model", interrupting_loader(after_calls=1))
        stopped = runner.invoke(cli.main, args(part))
    assert stopped.exit_code == 1 and "Aborted!" in stopped.stderr
    assert part.read_text().splitlines() == full.read_text().splitlines()[:2]  # the finished batch is kept

    resumed = runner.invoke(cli.main, [*args(part), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert part.read_bytes() == full.read_bytes()


def test_resume_redoes_a_row_cut_off_mid_write(runner, tiny_model_dir, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in PROMPTS])
    out = tmp_path / "out.jsonl"
    args = [
        "generate",
        "-i",
        str(src),
        "-o",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--max-new-tokens",
        "4",
    ]
    assert runner.invoke(cli.main, args).exit_code == 0
    full = out.read_bytes()
    out.write_bytes(full[: full.index(b"\n", len(full) // 2) - 5])  # a crash while writing a row
    result = runner.invoke(cli.main, [*args, "--resume", "--batch-size", "3"])
    assert result.exit_code == 0
    assert result.stderr == f"{out}: its last row was cut off mid-write; redoing that row\n"
    assert out.read_bytes() == full


def test_resume_refuses_a_changed_input(runner, tiny_model_dir, tmp_path):
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": "a", "prompt": "Hi"}, {"id": "b", "prompt": "Hello there"}]
    )
    out = tmp_path / "out.jsonl"
    args = [
        "generate",
        "-i",
        str(src),
        "-o",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--max-new-tokens",
        "2",
    ]
    assert runner.invoke(cli.main, args).exit_code == 0
    write_jsonl(src, [{"id": "a", "prompt": "Hi"}, {"id": "c", "prompt": "Hello there"}])
    result = runner.invoke(cli.main, [*args, "--resume"])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"Error: cannot resume '{out}', written by another run: the input rows changed (first differing row: index 1); "
        "pass --overwrite to start it again\n"
    )
    result = runner.invoke(cli.main, [*args, "--resume", "--max-new-tokens", "3"])
    assert result.stderr.startswith(
        f"Error: cannot resume '{out}', written by another run: --max-new-tokens 2 there, 3 now"
    )


def test_run_prompts_are_the_template_rendering_of_the_selected_demos(
    runner, tiny_model_dir, tiny, tmp_path, monkeypatch
):
    selector = OverlapSelector(POOL)
    monkeypatch.setattr(
        cli, "_build_selector", lambda pool, kw, template, tok, method_kwargs, model=None: selector
    )
    src = write_jsonl(tmp_path / "q.jsonl", QUERIES)
    pool = write_jsonl(tmp_path / "pool.jsonl", POOL)
    args = ["run", str(src), "--pool", str(pool), "--model", str(tiny_model_dir), "--max-new-tokens", "3"]
    args += ["--instruction", "Topic?\\n", "--query-format", "Input: {input}\\nTopic:"]
    result = runner.invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    template = FewShotTemplate(instruction="Topic?\n", query_format="Input: {input}\nTopic:")
    ref = Pipeline(*tiny, template, selector, max_new_tokens=3).run(QUERIES)
    rows = sorted((json.loads(line) for line in result.stdout.splitlines()), key=lambda r: r["index"])
    assert rows == [r.to_dict() for r in ref]
    for row, demos, q in zip(rows, selector.select(QUERIES), QUERIES, strict=True):
        assert row["prompt"] == template.render_text(demos, q)


def test_run_with_chat_template(runner, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(
        cli,
        "_build_selector",
        lambda pool, kw, template, tok, method_kwargs, model=None: OverlapSelector(POOL, k=1),
    )
    src = write_jsonl(tmp_path / "q.jsonl", QUERIES[:1])
    pool = write_jsonl(tmp_path / "pool.jsonl", POOL)
    args = ["run", str(src), "--pool", str(pool), "--model", str(tiny_model_dir), "--max-new-tokens", "2"]
    result = runner.invoke(cli.main, [*args, "--chat", "--system-prompt", "Name the topic."])
    assert result.exit_code == 0, result.output
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["prompt"] == (
        "<|im_start|>system\nName the topic.<|im_end|>\n<|im_start|>user\na dog barked all night long<|im_end|>\n"
        "<|im_start|>assistant\ndogs<|im_end|>\n<|im_start|>user\nmy dog<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    "strategy", [["--strategy", "sample", "--temperature", "2.0"], ["--strategy", "beam", "--num-beams", "2"]]
)
def test_resume_after_a_kill_between_two_rows_of_one_batch(
    runner, tiny_model_dir, tmp_path, monkeypatch, strategy
):
    """The row after the kill belongs to a batch whose first row was written: resuming regenerates that whole
    batch (same rows, same seed) and writes only the missing row, so the file equals an uninterrupted run's."""
    from counterpoint.io import JsonlOutput

    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in PROMPTS])
    common = [
        "--model",
        str(tiny_model_dir),
        *strategy,
        "--batch-size",
        "2",
        "--max-new-tokens",
        "4",
        "--seed",
        "3",
    ]
    full = tmp_path / "full.jsonl"
    assert runner.invoke(cli.main, ["generate", "-i", str(src), "-o", str(full), *common]).exit_code == 0

    part = tmp_path / "part.jsonl"
    real_write = JsonlOutput.write

    def write(self, row):
        if (
            len(self.done) + self._rows_written >= 3
        ):  # rows 1-2 (batch 1) and row 3 (batch 2's first) are written
            raise KeyboardInterrupt
        real_write(self, row)
        self._rows_written += 1

    with monkeypatch.context() as m:
        m.setattr(JsonlOutput, "_rows_written", 0, raising=False)
        m.setattr(JsonlOutput, "write", write)
        stopped = runner.invoke(cli.main, ["generate", "-i", str(src), "-o", str(part), *common])
    assert stopped.exit_code == 1
    assert len(part.read_text().splitlines()) == 3
    resumed = runner.invoke(cli.main, ["generate", "-i", str(src), "-o", str(part), *common, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert part.read_bytes() == full.read_bytes()
