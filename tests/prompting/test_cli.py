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
    monkeypatch.setattr(cli, "_build_selector", lambda pool, kw, template, tok: OverlapSelector(POOL))
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
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "Hi"}])
    out = write_jsonl(tmp_path / "out.jsonl", [{"index": 0, "id": "b", "prompt": "Hi", "output": "x"}])
    result = runner.invoke(
        cli.main, ["generate", "-i", str(src), "-o", str(out), "--resume", "--model", str(tiny_model_dir)]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: output file '{out}', row index 0 has id 'b' but input row 0 has id 'a': the input changed since the "
        "output was written\n"
    )


def test_run_prompts_are_the_template_rendering_of_the_selected_demos(
    runner, tiny_model_dir, tiny, tmp_path, monkeypatch
):
    selector = OverlapSelector(POOL)
    monkeypatch.setattr(cli, "_build_selector", lambda pool, kw, template, tok: selector)
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
    monkeypatch.setattr(cli, "_build_selector", lambda pool, kw, template, tok: OverlapSelector(POOL, k=1))
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


BAD_JSONL = '{"prompt": "ok"}\n{"prompt": oops}\n'


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["generate", "--strategy", "nucleus", "x"],
            1,
            "strategy='nucleus' is unknown; use one of: greedy, sample, beam, contrastive-search, contrastive-decoding, "
            "layer-contrast, input-contrast",
        ),
        (
            ["generate", "--strategy", "contrastive-search", "--beta", "0.5", "x"],
            2,
            "--beta cannot be used with --strategy contrastive-search (it takes --alpha, --top-k)",
        ),
        (
            ["generate", "--temperature", "0.7", "x"],
            2,
            "--temperature cannot be used with --strategy greedy (it takes no options)",
        ),
        (
            ["generate", "--strategy", "contrastive-decoding", "x"],
            2,
            "--strategy contrastive-decoding needs --amateur MODEL",
        ),
        (["generate", "--strategy", "layer-contrast", "x"], 2, "--strategy layer-contrast needs --layers"),
        (
            ["generate", "--strategy", "layer-contrast", "--layers", "2,x", "x"],
            2,
            "--layers '2,x' is not a layer index or a comma-separated list of them (e.g. 4 or 2,4,6)",
        ),
        (
            ["generate", "--strategy", "sample", "--top-p", "2", "x"],
            1,
            "top_p=2.0 is not valid; top_p must be in (0, 1]",
        ),
        (["generate", "-i", "{tmp}/missing.jsonl"], 1, "input file '{tmp}/missing.jsonl' does not exist"),
        (
            ["generate", "-i", "{tmp}/bad.jsonl"],
            1,
            "input file '{tmp}/bad.jsonl', line 2: not valid JSON (Expecting value)",
        ),
        (
            ["generate", "-i", "{tmp}/bad.jsonl", "x"],
            2,
            "give prompts as arguments or with --input, not both",
        ),
        (["generate", "--resume", "x"], 2, "--resume needs --output FILE"),
        (
            ["generate", "-o", "{tmp}/o.jsonl", "--resume", "--overwrite", "x"],
            2,
            "--resume and --overwrite cannot be used together",
        ),
        (["generate", "--system-prompt", "s", "x"], 2, "--system-prompt needs --chat"),
        (
            ["generate", "--amateur-prompt", "s", "x"],
            2,
            "--amateur-prompt cannot be used with --strategy greedy",
        ),
        (
            ["generate", "--strategy", "input-contrast", "x"],
            2,
            "--strategy input-contrast needs --amateur-prompt or an 'amateur_prompt' field (row 1 has none)",
        ),
        (
            ["generate", "-i", "{tmp}/noprompt.jsonl"],
            1,
            "input file '{tmp}/noprompt.jsonl', row 1: no string field 'prompt' (--prompt-key); it has keys ['text']",
        ),
        (["run", "{tmp}/missing.jsonl"], 1, "queries file '{tmp}/missing.jsonl' does not exist"),
        (
            ["run", "{tmp}/q.jsonl", "--pool", "{tmp}/nopool.jsonl"],
            1,
            "pool file '{tmp}/nopool.jsonl' does not exist",
        ),
        (
            ["run", "{tmp}/q.jsonl", "--method", "nearest"],
            2,
            "--method 'nearest' is unknown; use one of: knn, mmr, dpp, bm25, random, vote-k",
        ),
        (["run", "{tmp}/q.jsonl", "--balance-labels"], 2, "--balance-labels needs --label-key"),
        (
            ["run", "{tmp}/q.jsonl", "--demo-format", "plain"],
            1,
            "demo_format='plain' must be a str.format string with at least one {field}, e.g. 'Input: {input}'",
        ),
        (
            ["run", "{tmp}/q.jsonl", "--noisy-instruction", "n"],
            2,
            "--noisy-instruction needs --variant noisy-instruction",
        ),
        (
            ["run", "{tmp}/q.jsonl", "--variant", "no-demos"],
            2,
            "--variant cannot be used with --strategy greedy (it takes no options)",
        ),
        (
            ["select", "{tmp}/nopool.jsonl", "{tmp}/q.jsonl"],
            1,
            "pool file '{tmp}/nopool.jsonl' does not exist",
        ),
        (
            ["select", "{tmp}/q.jsonl", "{tmp}/bad.jsonl"],
            1,
            "queries file '{tmp}/bad.jsonl', line 2: not valid JSON (Expecting value)",
        ),
    ],
)
def test_user_errors_are_one_line(runner, tiny_model_dir, tmp_path, args, code, message):
    (tmp_path / "bad.jsonl").write_text(BAD_JSONL)
    write_jsonl(tmp_path / "q.jsonl", QUERIES)
    write_jsonl(tmp_path / "noprompt.jsonl", [{"text": "a"}])
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(cli.main, [*args, "--model", str(tiny_model_dir)] if args[0] != "select" else args)
    assert (result.exit_code, result.stderr) == (
        code,
        "Error: " + message.replace("{tmp}", str(tmp_path)) + "\n",
    )
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert result.stdout == ""
