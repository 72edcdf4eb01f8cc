"""The ``counterpoint`` command line: a thin layer over the registries and the library, JSONL in and out.

Strategy choices, their flags, defaults and help come from the strategy registry
(:mod:`counterpoint.decoding.registry`); selection methods from the selection registry; backends from
:mod:`counterpoint.decoding.backend`. Every check that needs no model runs before anything loads, and the
checks that need the model (its depth, its vocabulary) run on its config before the weights load. A user
error ends with one ``Error:`` line naming the flag, the value and what is valid, and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from counterpoint import __version__
from counterpoint.decoding.backend import BACKEND_NAMES, get_backend
from counterpoint.decoding.registry import STRATEGIES, get_strategy, options_by_name
from counterpoint.decoding.spec import GenerationOptions, MissingOptionError, UnknownOptionError
from counterpoint.errors import OptionError, RunMismatchError
from counterpoint.models import ModelNotInstalledError

# What a user error looks like when it comes out of the library: turned into one "Error:" line.
# TypeError and other RuntimeErrors are left alone: from here they would be bugs, worth a traceback.
_USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportError, ModelNotInstalledError)

# Library argument names that are not strategy options, and the flag each command shows for them.
_ARGUMENT_FLAGS = {
    "strategy": "--strategy",
    "backend": "--backend",
    "model": "--model",
    "embedder": "--embedder",
    "input": "--input",
    "prompt_key": "--prompt-key",
    "amateur_prompt": "--amateur-prompt",
    "system_prompt": "--system-prompt",
    "max_new_tokens": "--max-new-tokens",
    "method": "--method",
    "order": "--order",
    "k": "-k",
    "max_tokens": "--max-tokens",
    "demo_format": "--demo-format",
    "query_format": "--query-format",
}


def _flag(name: str) -> str | None:
    """The flag of a library argument, strategy option or selection option; None when there is none."""
    if name in options_by_name() or name in _method_kwarg_names():
        return "--" + name.replace("_", "-")
    return _ARGUMENT_FLAGS.get(name)


def _message(err: Exception) -> str:
    """One line for a user error, in the command line's own words."""
    if isinstance(err, MissingOptionError):
        return err.render(_flag(err.argument))
    if isinstance(err, UnknownOptionError) and err.strategy is not None:
        takes = ", ".join(_flag(name) for name in err.takes) or "no options"
        return f"{_flag(err.argument)} cannot be used with --strategy {err.strategy} (it takes {takes})"
    if isinstance(err, OptionError):
        flag = _flag(err.argument)
        if flag is None and err.argument.startswith("prompts["):
            row = int(err.argument[len("prompts[") : -1]) + 1
            return f"prompt {row} {err.problem}"
        return err.render(flag) if flag else str(err)
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the library's validation errors into one-line errors (exit 2 for bad options, 1 otherwise)."""
    from counterpoint.decoding.vllm.engine import VllmEngineError

    try:
        yield
    except click.ClickException:
        raise
    except RunMismatchError as err:
        raise click.ClickException(
            err.render({name: _flag(name) or name for name in options_by_name()} | _ARGUMENT_FLAGS)
        ) from None
    except OptionError as err:
        raise UsageError(_message(err)) from None
    except (*_USER_ERRORS, VllmEngineError) as err:
        raise click.ClickException(_message(err)) from None


class UsageError(click.UsageError):
    """A usage error shown as one ``Error:`` line (exit status 2), without click's usage banner."""

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _unescape(text: str | None) -> str | None:
    """``\\n`` and ``\\t`` typed on a shell command line mean a newline and a tab."""
    return None if text is None else text.replace("\\n", "\n").replace("\\t", "\t")


def _apply(f: Callable[..., Any], options: list[Callable[..., Any]]) -> Callable[..., Any]:
    for option in reversed(options):
        f = option(f)
    return f


# -- strategy options, built from the registry -------------------------------------------------------

_CLICK_TYPES = {"float": float, "int": int, "str": str, "model": str, "layers": str}


def _option_help(name: str) -> str:
    """One help line for an option: what it means for each strategy that takes it, with its default."""
    parts = []
    for strategy, option in options_by_name()[name]:
        default = "" if option.default is None else f" ({option.default})"
        parts.append(f"{strategy}: {option.help}{default}")
    merged: dict[str, list[str]] = {}
    for part in parts:  # strategies sharing one meaning are listed together
        strategy, _, text = part.partition(": ")
        merged.setdefault(text, []).append(strategy)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in merged.items()) + "."


def _strategy_flags() -> list[Callable[..., Any]]:
    flags = [
        click.option(
            "--strategy",
            type=click.Choice(list(STRATEGIES)),
            default="greedy",
            show_default=True,
            help="Decoding strategy: "
            + "; ".join(f"{s.name}: {s.summary}" for s in STRATEGIES.values())
            + ".",
        )
    ]
    for name, uses in options_by_name().items():
        option = uses[0][1]
        flag = "--" + name.replace("_", "-")
        if option.type == "bool":
            flags.append(click.option(flag, name, is_flag=True, default=None, help=_option_help(name)))
            continue
        choices = {c for _, o in uses for c in (o.choices or ())}
        kind = (
            click.Choice(sorted(choices, key=str))
            if choices and all(o.choices for _, o in uses)
            else _CLICK_TYPES[option.type]
        )
        metavar = {"layers": "I[,J...]|low|high", "model": "MODEL"}.get(option.type)
        flags.append(
            click.option(flag, name, type=kind, default=None, metavar=metavar, help=_option_help(name))
        )
    flags += [
        click.option(
            "--backend",
            type=click.Choice(list(BACKEND_NAMES)),
            default="transformers",
            show_default=True,
            help="Where generation runs: transformers (every strategy) or a vLLM engine (the strategies with a "
            "vLLM path; needs the vllm extra).",
        ),
        click.option(
            "--model",
            metavar="MODEL",
            help="Model: a local folder, a .gguf file or a Hub id. Default: the embedded SmolLM2-135M-Instruct.",
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
            help="Prompts per generate call (prompts are grouped by length); with --backend vllm, per engine call.",
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Random seed (batch b uses seed + b)."
        ),
        click.option(
            "--truncate",
            is_flag=True,
            help="Cut prompts longer than the model's context on the left instead of refusing them.",
        ),
    ]
    return flags


def _generation_options(kw: dict[str, Any]) -> GenerationOptions:
    """The strategy options given on the command line (every given value, 0 included), checked for the
    strategy and backend before any model loads."""
    given = {name: kw.pop(name) for name in list(options_by_name()) if name in kw}
    given = {name: value for name, value in given.items() if value is not None}
    if "layers" in given and given["layers"] not in ("low", "high"):  # DoLa's buckets stay names
        try:
            parts = tuple(int(p) for p in str(given["layers"]).split(","))
        except ValueError:
            raise OptionError(
                "layers",
                given["layers"],
                "is not a layer index, a comma-separated list of them (e.g. 4 or 2,4,6), or low / high",
            ) from None
        given["layers"] = parts[0] if len(parts) == 1 else parts
    options = GenerationOptions(**given)
    get_backend(kw["backend"]).check(kw["strategy"], options)
    return options


def _quiet_loading(verbose: bool) -> None:
    """Keep transformers' and sentence-transformers' loading bars off standard error unless --verbose."""
    if not verbose:
        from transformers import logging

        logging.disable_progress_bar()


def _load_backend(kw: dict[str, Any], options: GenerationOptions) -> Any:
    _quiet_loading(kw["verbose"])
    return get_backend(kw["backend"]).load(kw["model"], kw["strategy"], options, seed=kw["seed"])


_output_flags = [
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
_progress_flag = click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on standard error (default: when it is a terminal).",
)
_verbose_flag = click.option("--verbose", is_flag=True, help="Show the model-loading messages and bars.")


def _template_flags() -> list[Callable[..., Any]]:
    return [
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


def _template(kw: dict[str, Any]) -> Any:
    from counterpoint.prompting.template import FewShotTemplate

    if kw.get("system_prompt") is not None and not kw["chat"]:
        raise UsageError("--system-prompt needs --chat")
    return FewShotTemplate(
        instruction=_unescape(kw["instruction"]) or "",
        demo_format=_unescape(kw["demo_format"]),
        query_format=_unescape(kw["query_format"]),
        separator=_unescape(kw["separator"]),
    )


# Flags that do not change what the rows hold, so a resumed run may change them.
_NOT_RECORDED = {"output", "resume", "overwrite", "progress", "verbose", "batch_size"}


def _run_record(
    command: str,
    kw: dict[str, Any],
    options: GenerationOptions | None,
    files: dict[str, str],
    method_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What decides the rows' content: the command, its flags and the strategy's options (and the batch
    size when sampling makes a row depend on its batch), and a hash of each file it reads besides the input."""
    import hashlib
    from pathlib import Path

    record: dict[str, Any] = {"command": command}
    record.update({k: v for k, v in kw.items() if k not in _NOT_RECORDED})
    record.update(method_kwargs or {})
    if options is not None:
        record.update(
            {k: v if isinstance(v, str | int | float | bool | tuple) else repr(v) for k, v in options.items()}
        )
        values = get_strategy(kw["strategy"]).resolve(options)
        if kw["strategy"] == "sample" or values.get("do_sample"):
            record["batch_size"] = kw["batch_size"]
    for name, path in files.items():
        record[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return record


def _open_output(
    output: str | None,
    resume: bool,
    overwrite: bool,
    rows: list[dict[str, Any]] | None = None,
    record: dict[str, Any] | None = None,
) -> Any:
    """The JSONL sink: a resumable file with its run record, or standard output."""
    from counterpoint.io import JsonlOutput

    if output is None:
        if resume or overwrite:
            raise UsageError(f"{'--resume' if resume else '--overwrite'} needs --output FILE")
        return None
    if resume and overwrite:
        raise UsageError("--resume and --overwrite cannot be used together")
    out = JsonlOutput(output, resume=resume, overwrite=overwrite, input_rows=rows, options=record)
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


@contextlib.contextmanager
def _sink(kw: dict[str, Any], rows: list[dict[str, Any]], record: dict[str, Any]) -> Iterator[Any]:
    out = _open_output(kw["output"], kw["resume"], kw["overwrite"], rows, record)
    try:
        if out is not None:
            _check_resumed(out, rows)
        yield out
    finally:
        if out is not None:
            out.close()


def _emit(out: Any, row: dict[str, Any]) -> None:
    if out is None:
        click.echo(json.dumps(row, ensure_ascii=False))
    else:
        out.write(row)


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


# -- commands -------------------------------------------------------------------------------------


class _Group(click.Group):
    """click's group, with every usage error (a bad choice, a missing argument) shown as one ``Error:`` line."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as err:
            click.echo(f"Error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.ClickException as err:
            err.show()
            sys.exit(err.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="counterpoint")
def main() -> None:
    """Contrastive decoding and few-shot demonstration selection."""


def _generate_command(f: Callable[..., Any]) -> Callable[..., Any]:
    return _apply(
        f,
        [
            click.argument("prompts", nargs=-1),
            click.option(
                "-i",
                "--input",
                "input_path",
                type=click.Path(dir_okay=False),
                help="JSONL file of prompts, one object per line.",
            ),
            click.option(
                "--prompt-key",
                default="prompt",
                show_default=True,
                help="The field of each --input row that holds the prompt.",
            ),
            click.option(
                "--amateur-prompt",
                help="input-contrast: the amateur's prompt (default: each --input row's amateur_prompt field).",
            ),
            click.option(
                "--chat",
                is_flag=True,
                help="Send each prompt as a user turn through the tokenizer's chat template.",
            ),
            click.option("--system-prompt", help="With --chat: the system turn."),
            *_strategy_flags(),
            *_output_flags,
            _progress_flag,
            _verbose_flag,
        ],
    )


@main.command()
@_generate_command
def generate(prompts: tuple[str, ...], input_path: str | None, **kw: Any) -> None:
    """Generate continuations of PROMPTS.

    Prompts come from the PROMPTS arguments, from --input (a JSONL file) or, when neither is given,
    from standard input (one prompt per line; blank lines are skipped). A single prompt given as an
    argument is streamed to the terminal as it is generated; every other run gives JSONL rows
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
        from counterpoint.decoding.backend import run_batches
        from counterpoint.prompting.inputs import prompt_rows, render_prompts

        options = _generation_options(kw)
        stdin = None if (prompts or input_path or sys.stdin.isatty()) else sys.stdin
        rows = prompt_rows(prompts, input_path, prompt_key=kw["prompt_key"], stdin=stdin)
        spec = get_strategy(kw["strategy"])
        render = {
            "prompt_key": kw["prompt_key"],
            "amateur_prompt": kw["amateur_prompt"],
            "needs_amateur": spec.amateur_prompt,
            "chat": kw["chat"],
            "system_prompt": _unescape(kw["system_prompt"]),
        }
        render_prompts(rows, **{**render, "chat": False, "system_prompt": None})  # checks, before loading
        if kw["system_prompt"] is not None and not kw["chat"]:
            raise UsageError("--system-prompt needs --chat")
        record = _run_record("generate", kw, options, {})
        with _sink(kw, rows, record) as out:
            backend = _load_backend(kw, options)
            rendered = render_prompts(rows, **render, tokenizer=backend.tokenizer)
            stream = out is None and bool(prompts) and len(rows) == 1
            streamer = _echo_streamer(backend.tokenizer) if stream else None
            for i, result in run_batches(
                backend,
                rendered.texts,
                amateur_prompts=rendered.amateur_texts,
                max_new_tokens=kw["max_new_tokens"],
                batch_size=kw["batch_size"],
                seed=kw["seed"],
                add_special_tokens=rendered.add_special_tokens,
                skip=set(out.done) if out is not None else set(),
                streamer=streamer,
                progress=kw["progress"],
                truncate=kw["truncate"],
            ):
                if stream:
                    if not streamer.received:  # the strategy does not stream (beam search): print it whole
                        click.echo(result.text)
                    continue
                row = {"index": i, **({"id": rows[i]["id"]} if "id" in rows[i] else {})}
                row.update({"prompt": rows[i][kw["prompt_key"]], "output": result.text})
                _emit(out, row)


def _method_kwarg_names() -> dict[str, list[str]]:
    """Each selection keyword argument, with the methods that take it (the CLI has one flag per name)."""
    from counterpoint.selection.registry import METHODS

    table: dict[str, list[str]] = {}
    for spec in METHODS.values():
        for kwarg in spec.kwargs:
            table.setdefault(kwarg.name, []).append(spec.name)
    return table


def _selection_flags() -> list[Callable[..., Any]]:
    """The selection options, the --method choices and each method's own options, from the registry."""
    from counterpoint.selection.registry import METHODS
    from counterpoint.selection.selectors import ORDERS

    flags = [
        click.option(
            "-k",
            "k",
            type=click.IntRange(min=0),
            default=4,
            show_default=True,
            help="Demonstrations per query.",
        ),
        click.option(
            "--method",
            type=click.Choice(list(METHODS)),
            default="knn",
            show_default=True,
            help="Selection method: " + "; ".join(f"{s.name}: {s.summary}" for s in METHODS.values()) + ".",
        ),
    ]
    seen: dict[str, Any] = {}
    for spec in METHODS.values():
        for kwarg in spec.kwargs:
            seen.setdefault(kwarg.name, []).append((spec.name, kwarg))
    for name, uses in seen.items():
        help_text = "; ".join(f"{method}: {kwarg.help} ({kwarg.default})" for method, kwarg in uses) + "."
        flags.append(
            click.option(
                "--" + name.replace("_", "-"), name, type=uses[0][1].type, default=None, help=help_text
            )
        )
    flags += [
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
            type=click.Choice(list(ORDERS)),
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
    return flags


def _method_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """The selection method's own options given on the command line (0 included); refuses another method's."""
    from counterpoint.selection.registry import get_method

    given = {name: kw.pop(name) for name in list(_method_kwarg_names()) if name in kw}
    given = {name: value for name, value in given.items() if value is not None}
    takes = [k.name for k in get_method(kw["method"]).kwargs]
    for name in given:
        if name not in takes:
            flags = ", ".join("--" + t.replace("_", "-") for t in takes) or "no options"
            raise UsageError(
                f"--{name.replace('_', '-')} cannot be used with --method {kw['method']} (it takes {flags})"
            )
    return given


def _check_selection(kw: dict[str, Any], pool_path: str | None) -> dict[str, Any]:
    """Every selection check that needs no embedder; returns the method's own options."""
    from pathlib import Path

    from counterpoint.selection.registry import get_method

    method_kwargs = _method_kwargs(kw)
    if kw["balance_labels"] and not kw["label_key"]:
        raise UsageError("--balance-labels needs --label-key")
    if pool_path is not None and kw["k"] > 0 and get_method(kw["method"]).needs_scorer:
        if not kw["label_key"] and not method_kwargs.get("answers_key"):
            raise UsageError(
                f"--method {kw['method']} scores each query's candidate answers with the model: give --label-key "
                "(the pool's labels are the answers) or --answers-key (the query field that lists them)"
            )
        if kw.get("backend", "transformers") != "transformers":
            raise UsageError(
                f"--method {kw['method']} scores demonstrations with the model in this process; use "
                "--backend transformers"
            )
    if pool_path is not None and not Path(pool_path).is_file():
        raise click.ClickException(f"pool file {pool_path!r} does not exist")
    if pool_path is not None and kw["k"] > 0:
        from counterpoint.io import read_jsonl
        from counterpoint.selection.selectors import check_arguments

        check_arguments(kw["method"], kw["k"], len(read_jsonl(pool_path, "pool")), **method_kwargs)
    if pool_path is not None and get_method(kw["method"]).needs_embedder:
        from counterpoint.models import resolve_embedder_path

        resolve_embedder_path(kw["embedder"])  # a bad embedder name fails before anything loads
    return method_kwargs


def _build_selector(
    pool_path: str,
    kw: dict[str, Any],
    template: Any,
    tokenizer: Any,
    method_kwargs: dict[str, Any],
    model: Any = None,
) -> Any:
    """A PoolSelector over the pool file, set from the command's selection options (``model``: the target
    model, for the methods that score demonstrations with it)."""
    from counterpoint.selection import DemoPool, LMScorer, PoolSelector
    from counterpoint.selection.registry import get_method

    if get_method(kw["method"]).needs_scorer:
        method_kwargs = {**method_kwargs, "scorer": LMScorer.from_template(model, tokenizer, template)}

    embedder = None
    if get_method(kw["method"]).needs_embedder:
        from counterpoint.models import load_embedder

        embedder = load_embedder(kw["embedder"])
    pool = DemoPool.from_jsonl(
        pool_path,
        text_keys=tuple(kw["text_keys"]),
        label_key=kw["label_key"],
        embedder=embedder,
        show_progress_bar=kw.get("progress"),
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
        method_kwargs=method_kwargs,
    )


@main.command()
@click.argument("pool", type=click.Path(dir_okay=False))
@click.argument("queries", type=click.Path(dir_okay=False))
@lambda f: _apply(
    f,
    [
        *_selection_flags(),
        *_template_flags(),
        click.option(
            "--model",
            metavar="MODEL",
            help="The target model: whose tokenizer counts --max-tokens, and which scores demonstrations for "
            "--method lm and se2 (default: the embedded SmolLM2).",
        ),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Random seed of the random and sampling methods.",
        ),
        *_output_flags,
        _progress_flag,
        _verbose_flag,
    ],
)
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

        method_kwargs = _check_selection(kw, pool)
        rows = read_jsonl(queries, "queries")
        template = _template(kw)  # checks the formats before anything loads
        with _sink(kw, rows, _run_record("select", kw, None, {"pool_sha256": pool}, method_kwargs)) as out:
            _quiet_loading(kw["verbose"])
            from counterpoint.selection.registry import get_method

            tokenizer = model = None
            if get_method(kw["method"]).needs_scorer:
                from counterpoint.models import load_language_model

                model, tokenizer = load_language_model(kw["model"])
            elif kw["max_tokens"] is not None:
                from transformers import AutoTokenizer

                from counterpoint.models import resolve_language_model_path

                tokenizer = AutoTokenizer.from_pretrained(resolve_language_model_path(kw["model"]))
            if kw["chat"]:
                template = template.chat(tokenizer, _unescape(kw["system_prompt"]))
            selector = _build_selector(pool, kw, template, tokenizer, method_kwargs, model)
            pending = [i for i in range(len(rows)) if out is None or i not in out.done]
            demos = selector.select([rows[i] for i in pending]) if pending else []
            for i, selected in zip(pending, demos, strict=True):
                _emit(
                    out, {"index": i, **({"id": rows[i]["id"]} if "id" in rows[i] else {}), "demos": selected}
                )


@main.command()
@click.argument("queries", type=click.Path(dir_okay=False))
@lambda f: _apply(
    f,
    [
        click.option(
            "--pool",
            type=click.Path(dir_okay=False),
            help="JSONL pool of demonstrations (omit for zero-shot).",
        ),
        *_selection_flags(),
        *_template_flags(),
        click.option(
            "--noisy-instruction",
            help="input-contrast --variant noisy-instruction: the amateur's instruction.",
        ),
        *_strategy_flags(),
        *_output_flags,
        _progress_flag,
        _verbose_flag,
    ],
)
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

        options = _generation_options(kw)
        if kw["noisy_instruction"] is not None and options.variant != "noisy-instruction":
            raise UsageError("--noisy-instruction needs --variant noisy-instruction")
        method_kwargs = _check_selection(kw, pool)
        rows = read_jsonl(queries, "queries")
        template = _template(kw)  # checks the formats before any model loads
        if kw["noisy_instruction"] is not None:
            template = replace(template, noisy_instruction=_unescape(kw["noisy_instruction"]))
        record = _run_record("run", kw, options, {"pool_sha256": pool} if pool else {}, method_kwargs)
        with _sink(kw, rows, record) as out:
            backend = _load_backend(kw, options)
            if kw["chat"]:
                template = template.chat(backend.tokenizer, _unescape(kw["system_prompt"]))
            selector = (
                _build_selector(pool, kw, template, backend.tokenizer, method_kwargs, backend.model)
                if pool
                else None
            )
            pipe = Pipeline(
                None,
                None,
                template,
                selector,
                max_new_tokens=kw["max_new_tokens"],
                batch_size=kw["batch_size"],
                seed=kw["seed"],
                backend=backend,
            )
            skip = set(out.done) if out is not None else set()
            for result in pipe.iter_run(rows, skip=skip, progress=kw["progress"]):
                row = result.to_dict()
                if "id" in result.query:
                    row = {"index": row.pop("index"), "id": result.query["id"], **row}
                _emit(out, row)


if __name__ == "__main__":  # pragma: no cover
    main()
