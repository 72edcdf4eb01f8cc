"""The ``counterpoint`` command line: thin wrappers over the library, JSONL in and out.

Every command validates its options before loading a model; user errors end with one ``Error:``
line and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from counterpoint import __version__
from counterpoint.models import ModelNotInstalledError

# What a user error looks like when it comes out of the library: turned into one "Error:" line.
# TypeError and other RuntimeErrors are left alone: from here they would be bugs, worth a traceback.
_USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportError, ModelNotInstalledError)

METHODS = ("knn", "mmr", "dpp", "bm25", "random", "vote-k")
# Selection methods that match by embedding (the embedder is loaded only for these).
_EMBEDDING_METHODS = ("knn", "mmr", "dpp", "vote-k")

# CLI flag of each GenerationOptions knob, for messages.
_FLAGS = {
    "alpha": "--alpha",
    "top_k": "--top-k",
    "beta": "--beta",
    "form": "--form",
    "gamma": "--gamma",
    "tau": "--tau",
    "temperature": "--temperature",
    "top_p": "--top-p",
    "num_beams": "--num-beams",
    "do_sample": "--do-sample",
    "amateur": "--amateur",
    "layers": "--layers",
    "layer_mode": "--layer-mode",
    "variant": "--variant",
}


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the library's validation errors into one-line ``click.ClickException``s."""
    try:
        yield
    except click.ClickException:
        raise
    except _USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise click.ClickException(str(message)) from None


class UsageError(click.UsageError):
    """A usage error shown as one ``Error:`` line (exit status 2), without click's usage banner."""

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _unescape(text: str | None) -> str | None:
    """``\\n`` and ``\\t`` typed on a shell command line mean a newline and a tab."""
    return None if text is None else text.replace("\\n", "\n").replace("\\t", "\t")


# -- shared options -----------------------------------------------------------------------------


def _strategy_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--strategy",
            default="greedy",
            show_default=True,
            help="Decoding strategy: greedy, sample, beam, contrastive-search, contrastive-decoding, "
            "layer-contrast or input-contrast.",
        ),
        click.option(
            "--alpha",
            type=float,
            help="contrastive-search: degeneration penalty (0.6); "
            "contrast strategies: plausibility threshold in (0, 1] (0.1).",
        ),
        click.option(
            "--top-k", type=int, help="contrastive-search: candidates (4); sampling: keep the k most likely."
        ),
        click.option(
            "--beta", type=float, help="Contrast strategies: weight of the contrast, 'beta' form (0.5)."
        ),
        click.option(
            "--form",
            type=click.Choice(["beta", "difference"]),
            help="Contrast strategies: score form (beta).",
        ),
        click.option(
            "--gamma", type=float, help="Contrast strategies: amateur weight, 'difference' form (1.0)."
        ),
        click.option("--tau", type=float, help="Contrast strategies: amateur temperature (1.0)."),
        click.option(
            "--temperature",
            type=float,
            help="Sampling temperature (sample; contrast strategies with --do-sample).",
        ),
        click.option("--top-p", type=float, help="Nucleus sampling mass in (0, 1]."),
        click.option("--num-beams", type=int, help="Beam width (beam: 4; contrast strategies: 1)."),
        click.option(
            "--do-sample", is_flag=True, default=False, help="Contrast strategies: sample instead of greedy."
        ),
        click.option(
            "--amateur", metavar="MODEL", help="contrastive-decoding: the amateur model (path or name)."
        ),
        click.option(
            "--layers",
            metavar="I[,J...]",
            help="layer-contrast: amateur layer index or indices, e.g. 4 or 2,4,6.",
        ),
        click.option(
            "--layer-mode",
            type=click.Choice(["fixed", "jsd", "fusion"]),
            help="layer-contrast: how layers are used (fixed).",
        ),
        click.option(
            "--backend",
            type=click.Choice(["transformers", "vllm"]),
            default="transformers",
            show_default=True,
            help="Where generation runs: transformers (every strategy) or a vLLM engine (greedy, sample, "
            "beam, contrastive-decoding; needs the vllm extra).",
        ),
        click.option(
            "--model",
            metavar="MODEL",
            help="Model: a local folder, a .gguf file or a Hub id. "
            "Default: the embedded SmolLM2-135M-Instruct.",
        ),
        click.option(
            "--max-new-tokens",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="Generated tokens per prompt at most.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
            help="Prompts per generate call (prompts are grouped by length); with --backend vllm, "
            "per engine call.",
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Random seed (batch b uses seed + b)."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "-o",
            "--output",
            type=click.Path(dir_okay=False),
            help="JSONL output file (default: standard output).",
        ),
        click.option(
            "--resume", is_flag=True, help="Keep the rows already in --output and do only the missing ones."
        ),
        click.option("--overwrite", is_flag=True, help="Replace an existing --output file."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


_progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on standard error (default: when it is a terminal).",
)


def _template_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--instruction", default="", help="Text before the demonstrations (\\n for a newline)."),
        click.option(
            "--demo-format",
            default="Input: {input}\\nOutput: {output}",
            show_default=True,
            help="How one demonstration is written; {field}s come from its record.",
        ),
        click.option(
            "--query-format",
            default="Input: {input}\\nOutput:",
            show_default=True,
            help="How the query is written; the model continues after it.",
        ),
        click.option(
            "--separator",
            default="\\n\\n",
            show_default=True,
            help="Between instruction, demonstrations and query.",
        ),
        click.option(
            "--chat",
            is_flag=True,
            help="Render through the tokenizer's chat template (user/assistant turns).",
        ),
        click.option("--system-prompt", help="With --chat: the system turn (default: --instruction)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _generation_options(strategy: str, kw: dict[str, Any]) -> Any:
    """Check the knobs given on the command line against the strategy and backend; build GenerationOptions."""
    from counterpoint.prompting.strategies import GenerationOptions, check_backend, get_strategy

    spec = get_strategy(strategy)
    given = {name: kw.get(name) for name in _FLAGS if kw.get(name) not in (None, False)}
    extra_flags = [_FLAGS[name] for name in given if name not in spec.knobs]
    if extra_flags:
        takes = ", ".join(_FLAGS[k] for k in spec.knobs) or "no options"
        raise UsageError(
            f"{', '.join(extra_flags)} cannot be used with --strategy {strategy} (it takes {takes})"
        )
    if "layers" in given:
        try:
            parts = tuple(int(p) for p in str(given["layers"]).split(","))
        except ValueError:
            raise UsageError(
                f"--layers {given['layers']!r} is not a layer index or a comma-separated list of them "
                "(e.g. 4 or 2,4,6)"
            ) from None
        given["layers"] = parts[0] if len(parts) == 1 else parts
    if strategy == "contrastive-decoding" and "amateur" not in given:
        raise UsageError("--strategy contrastive-decoding needs --amateur MODEL")
    if strategy == "layer-contrast" and "layers" not in given:
        raise UsageError("--strategy layer-contrast needs --layers")
    options = GenerationOptions(**given)
    check_backend(strategy, options, kw["backend"])  # a strategy the backend cannot run, vLLM missing
    return options


def _quiet_loading(progress: bool | None) -> None:
    """Keep transformers' weight-loading bars off standard error unless progress bars are wanted."""
    if not (progress or (progress is None and sys.stderr.isatty())):
        from transformers.utils import logging

        logging.disable_progress_bar()


def _load_models(kw: dict[str, Any], options: Any) -> tuple[Any, Any, Any]:
    """Load the model for --backend, and the amateur named in ``options``."""
    from counterpoint.prompting.pipeline import load_models

    _quiet_loading(kw["progress"])
    return load_models(kw["model"], options, backend=kw["backend"], seed=kw["seed"])


def _build_template(kw: dict[str, Any], tokenizer: Any = None) -> Any:
    from counterpoint.prompting.template import FewShotTemplate

    template = FewShotTemplate(
        instruction=_unescape(kw["instruction"]) or "",
        demo_format=_unescape(kw["demo_format"]),
        query_format=_unescape(kw["query_format"]),
        separator=_unescape(kw["separator"]),
    )
    if kw.get("system_prompt") is not None and not kw["chat"]:
        raise UsageError("--system-prompt needs --chat")
    if kw["chat"] and tokenizer is not None:
        return template.chat(tokenizer, _unescape(kw.get("system_prompt")))
    return template


def _open_output(output: str | None, resume: bool, overwrite: bool) -> Any:
    """The JSONL sink: a resumable file, or standard output."""
    from counterpoint.io import JsonlOutput

    if output is None:
        if resume or overwrite:
            raise UsageError(f"{'--resume' if resume else '--overwrite'} needs --output FILE")
        return None
    if resume and overwrite:
        raise UsageError("--resume and --overwrite cannot be used together")
    out = JsonlOutput(output, resume=resume, overwrite=overwrite)
    if out.dropped_partial_line:
        click.echo(f"{output}: its last row was cut off mid-write; redoing that row", err=True)
    return out


def _check_resumed(out: Any, rows: list[dict[str, Any]]) -> None:
    """Resuming against a changed input would mix two runs: refuse when a done row's id differs."""
    for index, done in out.done.items():
        if not isinstance(index, int) or not 0 <= index < len(rows):
            raise click.ClickException(
                f"output file {str(out.path)!r} has a row with index {index!r}, but the input has {len(rows)} rows: "
                "is it the output of another input?"
            )
        if "id" in done and done["id"] != rows[index].get("id"):
            raise click.ClickException(
                f"output file {str(out.path)!r}, row index {index} has id {done['id']!r} but input row {index} has id "
                f"{rows[index].get('id')!r}: the input changed since the output was written"
            )


def _emit(out: Any, row: dict[str, Any]) -> None:
    if out is None:
        click.echo(json.dumps(row, ensure_ascii=False))
    else:
        out.write(row)


# -- commands -----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="counterpoint")
def main() -> None:
    """Contrastive decoding and few-shot demonstration selection."""


@main.command()
@click.argument("prompts", nargs=-1)
@click.option(
    "-i",
    "--input",
    "input_path",
    type=click.Path(dir_okay=False),
    help="JSONL file of prompts, one object per line.",
)
@click.option(
    "--prompt-key",
    default="prompt",
    show_default=True,
    help="The field of each --input row that holds the prompt.",
)
@click.option(
    "--amateur-prompt",
    help="input-contrast: the amateur's prompt (default: each --input row's amateur_prompt field).",
)
@click.option(
    "--chat", is_flag=True, help="Send each prompt as a user turn through the tokenizer's chat template."
)
@click.option("--system-prompt", help="With --chat: the system turn.")
@_strategy_options
@_output_options
@_progress_option
def generate(prompts: tuple[str, ...], input_path: str | None, **kw: Any) -> None:
    """Generate continuations of PROMPTS.

    Prompts come from the PROMPTS arguments, from --input (a JSONL file) or, when neither is given,
    from standard input (one prompt per line; blank lines are skipped). A single prompt is streamed
    to the terminal as it is generated; several prompts, or any run with --output, give JSONL rows
    {"index", "id" (when the input row has one), "prompt", "output"}. Rows are written as each batch
    finishes, in the order batches run (longest prompts first); "index" is the input position.

    \b
    Examples:
      counterpoint generate "The capital of France is"
      counterpoint generate --strategy contrastive-search --alpha 0.6 --top-k 4 "Once upon a time"
      counterpoint generate -i prompts.jsonl -o out.jsonl --strategy sample --temperature 0.8
      counterpoint generate --backend vllm --model ./expert --strategy contrastive-decoding \\
          --amateur ./amateur -i prompts.jsonl -o out.jsonl
    """
    with _user_errors():
        from counterpoint.io import read_jsonl
        from counterpoint.prompting.pipeline import generate_texts

        amateur_prompt = kw.pop("amateur_prompt")
        options = _generation_options(kw["strategy"], kw)
        if kw["system_prompt"] is not None and not kw["chat"]:
            raise UsageError("--system-prompt needs --chat")
        if prompts and input_path:
            raise UsageError("give prompts as arguments or with --input, not both")
        if input_path:
            rows = read_jsonl(input_path, "input")
            for n, row in enumerate(rows):
                if not isinstance(row.get(kw["prompt_key"]), str):
                    raise click.ClickException(
                        f"input file {input_path!r}, row {n + 1}: no string field {kw['prompt_key']!r} (--prompt-key); "
                        f"it has keys {sorted(row)}"
                    )
        else:
            if not prompts:
                if sys.stdin.isatty():
                    raise UsageError(
                        "no prompts: pass PROMPT arguments, --input FILE, or pipe prompts on standard input"
                    )
                prompts = tuple(line.rstrip("\n") for line in sys.stdin if line.strip())
            rows = [{kw["prompt_key"]: p} for p in prompts]
        if not rows:
            raise click.ClickException("no prompts to generate for: the input is empty")
        amateur_prompts = None
        if kw["strategy"] == "input-contrast":
            amateur_prompts = []
            for n, row in enumerate(rows):
                text = row.get("amateur_prompt", amateur_prompt)
                if not isinstance(text, str):
                    raise UsageError(
                        f"--strategy input-contrast needs --amateur-prompt or an 'amateur_prompt' field (row {n + 1} has none)"
                    )
                amateur_prompts.append(text)
        elif amateur_prompt is not None:
            raise UsageError(f"--amateur-prompt cannot be used with --strategy {kw['strategy']}")

        out = _open_output(kw["output"], kw["resume"], kw["overwrite"])
        try:
            if out is not None:
                _check_resumed(out, rows)
            lm, tokenizer, options = _load_models(kw, options)
            texts = [row[kw["prompt_key"]] for row in rows]
            add_special = True
            if kw["chat"]:
                from counterpoint.prompting.template import FewShotTemplate

                chat = FewShotTemplate(chat_user_format="{input}").chat(
                    tokenizer, _unescape(kw["system_prompt"])
                )
                texts = [chat.render_text([], t) for t in texts]
                if amateur_prompts is not None:
                    amateur_prompts = [chat.render_text([], t) for t in amateur_prompts]
                add_special = False
            stream = out is None and len(rows) == 1
            streamer = _echo_streamer(tokenizer) if stream else None
            for i, text, _ in generate_texts(
                lm,
                tokenizer,
                texts,
                strategy=kw["strategy"],
                options=options,
                amateur_prompts=amateur_prompts,
                max_new_tokens=kw["max_new_tokens"],
                batch_size=kw["batch_size"],
                seed=kw["seed"],
                add_special_tokens=add_special,
                backend=kw["backend"],
                skip=set(out.done) if out is not None else set(),
                streamer=streamer,
                progress=kw["progress"],
            ):
                if stream:
                    if not streamer.received:  # the strategy does not stream (beam search): print it whole
                        click.echo(text)
                    continue
                row = {"index": i, **({"id": rows[i]["id"]} if "id" in rows[i] else {})}
                row.update({"prompt": rows[i][kw["prompt_key"]], "output": text})
                _emit(out, row)
        finally:
            if out is not None:
                out.close()


def _echo_streamer(tokenizer: Any) -> Any:
    """A TextStreamer that prints through click and notes whether any generated token came through."""
    from transformers import TextStreamer

    class EchoStreamer(TextStreamer):
        received = False

        def put(self, value: Any) -> None:
            if not self.next_tokens_are_prompt:
                self.received = True
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            click.echo(text, nl=stream_end)

    return EchoStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _selection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "-k",
            "k",
            type=click.IntRange(min=0),
            default=4,
            show_default=True,
            help="Demonstrations per query.",
        ),
        click.option(
            "--method", default="knn", show_default=True, help=f"Selection method: {', '.join(METHODS)}."
        ),
        click.option(
            "--balance-labels",
            is_flag=True,
            help="Spread the demonstrations over the labels (needs --label-key).",
        ),
        click.option(
            "--max-tokens",
            type=click.IntRange(min=1),
            help="Token budget of the rendered prompt (drops demonstrations that do not fit).",
        ),
        click.option(
            "--order",
            default="most_similar_last",
            show_default=True,
            help="Where the most similar demonstration goes in the prompt.",
        ),
        click.option(
            "--text-key",
            "text_keys",
            multiple=True,
            default=("input",),
            show_default=True,
            help="Pool field(s) matched against the query; repeat for several.",
        ),
        click.option("--label-key", help="Pool field holding the label."),
        click.option(
            "--query-key", default="input", show_default=True, help="Query field matched against the pool."
        ),
        click.option(
            "--embedder",
            metavar="MODEL",
            help="Sentence-transformers embedder (default: the embedded all-MiniLM-L6-v2).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _build_selector(pool_path: str, kw: dict[str, Any], template: Any, tokenizer: Any) -> Any:
    """A PoolSelector over the pool file, set from the command's selection options."""
    from counterpoint.prompting.pipeline import PoolSelector
    from counterpoint.selection import DemoPool

    embedder = None
    if kw["method"] in _EMBEDDING_METHODS:
        from counterpoint.models import load_embedder

        embedder = load_embedder(kw["embedder"])
    pool = DemoPool.from_jsonl(
        pool_path, text_keys=tuple(kw["text_keys"]), label_key=kw["label_key"], embedder=embedder
    )
    budget = kw["max_tokens"] is not None
    return PoolSelector(
        pool,
        k=kw["k"],
        method=kw["method"],
        query_key=kw["query_key"],
        balance_labels=kw["balance_labels"],
        max_tokens=kw["max_tokens"],
        tokenizer=tokenizer if budget else None,
        render=template.render_text if budget else None,
        order=kw["order"],
        seed=kw["seed"],
    )


def _check_selection(kw: dict[str, Any], pool_path: str | None) -> None:
    from pathlib import Path

    if kw["method"] not in METHODS:
        raise UsageError(f"--method {kw['method']!r} is unknown; use one of: {', '.join(METHODS)}")
    if kw["balance_labels"] and not kw["label_key"]:
        raise UsageError("--balance-labels needs --label-key")
    if pool_path is not None and not Path(pool_path).is_file():
        raise click.ClickException(f"pool file {pool_path!r} does not exist")


@main.command()
@click.argument("pool", type=click.Path(dir_okay=False))
@click.argument("queries", type=click.Path(dir_okay=False))
@_selection_options
@_template_options
@click.option(
    "--model",
    metavar="MODEL",
    help="With --max-tokens: whose tokenizer counts tokens (default: the embedded SmolLM2).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Random seed of the random and sampling methods."
)
@_output_options
def select(pool: str, queries: str, **kw: Any) -> None:
    """Select demonstrations from POOL for each query in QUERIES (both JSONL).

    Writes one JSONL row per query: {"index", "id" (when the query has one), "demos"}, each demo
    {"index" (its pool row), "score", "example"}. With --max-tokens, demonstrations are kept only
    while the prompt the template options render fits the budget.

    \b
    Example:
      counterpoint select pool.jsonl queries.jsonl -k 4 --method mmr -o demos.jsonl
    """
    with _user_errors():
        from counterpoint.io import read_jsonl

        _check_selection(kw, pool)
        rows = read_jsonl(queries, "queries")
        out = _open_output(kw["output"], kw["resume"], kw["overwrite"])
        try:
            if out is not None:
                _check_resumed(out, rows)
            tokenizer = None
            if kw["max_tokens"] is not None:
                from transformers import AutoTokenizer

                from counterpoint.models import resolve_language_model_path

                tokenizer = AutoTokenizer.from_pretrained(resolve_language_model_path(kw["model"]))
            template = _build_template(kw, tokenizer)
            selector = _build_selector(pool, kw, template, tokenizer)
            pending = [i for i in range(len(rows)) if out is None or i not in out.done]
            demos = selector.select([rows[i] for i in pending]) if pending else []
            for i, selected in zip(pending, demos, strict=True):
                row = {"index": i, **({"id": rows[i]["id"]} if "id" in rows[i] else {}), "demos": selected}
                _emit(out, row)
        finally:
            if out is not None:
                out.close()


@main.command()
@click.argument("queries", type=click.Path(dir_okay=False))
@click.option(
    "--pool", type=click.Path(dir_okay=False), help="JSONL pool of demonstrations (omit for zero-shot)."
)
@_selection_options
@_template_options
@click.option(
    "--variant",
    type=click.Choice(["no-demos", "no-context", "noisy-instruction"]),
    help="input-contrast: the amateur's prompt (no-demos).",
)
@click.option(
    "--noisy-instruction", help="input-contrast --variant noisy-instruction: the amateur's instruction."
)
@_strategy_options
@_output_options
@_progress_option
def run(queries: str, pool: str | None, **kw: Any) -> None:
    """Select demonstrations, build prompts and generate, for every query in QUERIES (JSONL).

    Writes one JSONL row per query: {"index", "id" (when the query has one), "query", "demos",
    "prompt", "amateur_prompt" (input-contrast), "output"}, as each batch finishes; "index" is the
    query's position. With --output, --resume continues an interrupted run.

    \b
    Example:
      counterpoint run queries.jsonl --pool train.jsonl -k 4 --instruction "Classify the sentiment." \\
          --strategy contrastive-search -o out.jsonl
    """
    with _user_errors():
        from dataclasses import replace

        from counterpoint.io import read_jsonl
        from counterpoint.prompting.pipeline import Pipeline

        options = _generation_options(kw["strategy"], kw)
        if kw["noisy_instruction"] is not None and kw["variant"] != "noisy-instruction":
            raise UsageError("--noisy-instruction needs --variant noisy-instruction")
        _check_selection(kw, pool)
        rows = read_jsonl(queries, "queries")
        template = _build_template(kw)  # validates the formats before any model loads
        if kw["noisy_instruction"] is not None:
            template = replace(template, noisy_instruction=_unescape(kw["noisy_instruction"]))
        out = _open_output(kw["output"], kw["resume"], kw["overwrite"])
        try:
            if out is not None:
                _check_resumed(out, rows)
            lm, tokenizer, options = _load_models(kw, options)
            if kw["chat"]:
                template = template.chat(tokenizer, _unescape(kw["system_prompt"]))
            selector = _build_selector(pool, kw, template, tokenizer) if pool else None
            pipe = Pipeline(
                lm,
                tokenizer,
                template,
                selector,
                kw["strategy"],
                options,
                max_new_tokens=kw["max_new_tokens"],
                batch_size=kw["batch_size"],
                seed=kw["seed"],
                backend=kw["backend"],
            )
            skip = set(out.done) if out is not None else set()
            for result in pipe.iter_run(rows, skip=skip, progress=kw["progress"]):
                row = result.to_dict()
                if "id" in result.query:
                    row = {"index": row.pop("index"), "id": result.query["id"], **row}
                _emit(out, row)
        finally:
            if out is not None:
                out.close()


if __name__ == "__main__":  # pragma: no cover
    main()
