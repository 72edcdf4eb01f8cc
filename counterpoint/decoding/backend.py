"""Where generation runs: the backend interface, and the batched runner over it.

A backend holds a loaded model (a transformers ``PreTrainedModel``, or a vLLM engine), its tokenizer and
one strategy with its options, and implements three things:

* ``check(strategy, options)`` (a classmethod): can this backend run it? Called before anything loads.
* ``load(model, strategy, options, ...)`` (a classmethod): load the model (and an amateur the options
  name) for this backend.
* ``generate(batch) -> list[Generated]``: one batch of prompts.

:func:`run_batches` is the one batched generation loop of counterpoint: it plans length-grouped batches,
seeds each, skips finished rows (regenerating a partly finished batch whole, so a resumed run writes what
an uninterrupted one would), and shows progress. The pipeline, the command line, the evaluation code and
the benchmarks all generate through it.

Example:
    >>> backend = get_backend("transformers")(model, tokenizer, "contrastive-search", GenerationOptions(alpha=0.6))
    >>> for index, out in run_batches(backend, ["The capital of France is"], max_new_tokens=8):
    ...     print(index, out.text)
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from counterpoint.batching import length_batches
from counterpoint.decoding.registry import get_strategy
from counterpoint.decoding.spec import GenerationOptions, StrategySpec
from counterpoint.errors import MISSING, OptionError

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "Batch",
    "Generated",
    "check_model",
    "get_backend",
    "read_facts",
    "run_batches",
]

BACKEND_NAMES = ("transformers", "vllm")


@dataclass
class Batch:
    """One batch of prompts for :meth:`Backend.generate`."""

    prompts: list[str]  # prompt texts
    max_new_tokens: int
    amateur_prompts: list[str] | None = None  # one per prompt, for strategies that take them
    seed: int | None = None  # seeds sampling for this batch (None: unseeded)
    add_special_tokens: bool = True  # passed to the tokenizer (False for chat-rendered prompts)
    streamer: Any = None  # a transformers streamer (single-prompt runs on the transformers backend)
    truncate: bool = False  # cut prompts longer than the context on the left instead of refusing them


@dataclass(frozen=True)
class Generated:
    """One prompt's continuation: its text (special tokens removed) and its token ids (up to the first EOS,
    included)."""

    text: str
    token_ids: list[int]


class Backend(ABC):
    """A loaded model that runs one strategy. See the module docstring.

    Args:
        model: what the backend runs (a ``PreTrainedModel`` or a ``vllm.LLM``).
        tokenizer: its tokenizer (needs a pad token; pads on the left).
        strategy: a strategy name or spec.
        options: its options.
    """

    name: ClassVar[str]
    streaming: ClassVar[bool] = False  # whether a transformers streamer can follow generation

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        strategy: str | StrategySpec = "greedy",
        options: GenerationOptions | Mapping[str, Any] | None = None,
        *,
        generate_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.generate_kwargs = dict(generate_kwargs or {})  # more arguments of the backend's generate call
        self.spec = get_strategy(strategy)
        self.options = (
            options if isinstance(options, GenerationOptions) else GenerationOptions(**dict(options or {}))
        )
        self.check(self.spec, self.options)
        self.values = self.spec.resolve(self.options)
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token; set tokenizer.pad_token (e.g. to its eos_token)"
            )
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    @abstractmethod
    def check(
        cls, strategy: str | StrategySpec, options: GenerationOptions | Mapping[str, Any] | None = None
    ) -> StrategySpec:
        """Refuse a strategy or option this backend cannot run, before anything loads."""

    @classmethod
    @abstractmethod
    def load_model(
        cls, model: Any, options: GenerationOptions | None = None, **kwargs: Any
    ) -> tuple[Any, Any, GenerationOptions]:
        """Load ``model`` (a name or path; ``None`` for the embedded default) and the amateur ``options`` name.

        Returns:
            ``(model, tokenizer, options)``, ``options.amateur`` replaced by what this backend needs.
        """

    @classmethod
    def load(
        cls,
        model: Any = None,
        strategy: str | StrategySpec = "greedy",
        options: GenerationOptions | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Backend:
        """Check the strategy, then load ``model`` and what ``options`` name, and return the backend."""
        options = (
            options if isinstance(options, GenerationOptions) else GenerationOptions(**dict(options or {}))
        )
        spec = cls.check(strategy, options)
        check_model(spec, options, read_facts(model))  # before the weights load
        if isinstance(options.amateur, str | os.PathLike):
            read_facts(options.amateur, argument="amateur")  # a bad amateur name fails before anything loads
        lm, tokenizer, options = cls.load_model(model, options, **kwargs)
        return cls(lm, tokenizer, strategy, options)

    @abstractmethod
    def generate(self, batch: Batch) -> list[Generated]:
        """Generate for every prompt of ``batch``, in order."""

    def context_length(self) -> int | None:
        """The most tokens (prompt and continuation) the model takes, when known."""
        return None

    def streams(self) -> bool:
        """Whether a streamer can follow this backend's generation with this strategy."""
        return self.streaming and self.spec.streams(self.values)

    def prompt_ids(self, prompts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        """The token ids of each prompt as the backend will read them."""
        return self.tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]


def read_facts(model: Any, argument: str = "model") -> Any:
    """The :class:`~counterpoint.models.ModelFacts` of a model name or path, from its config alone."""
    from counterpoint.models import model_facts, read_model_config

    return model_facts(read_model_config(model, argument=argument))


def check_model(
    strategy: str | StrategySpec, options: GenerationOptions | Mapping[str, Any] | None, facts: Any
) -> None:
    """Refuse options that do not fit the model (layer indices, ``top_k``) before its weights load."""
    spec = get_strategy(strategy)
    if spec.check_model is not None:
        spec.check_model(spec.resolve(options), facts)


def get_backend(name: str) -> type[Backend]:
    """The backend class called ``name`` (``"transformers"`` or ``"vllm"``)."""
    from counterpoint.decoding.transformers_backend import TransformersBackend
    from counterpoint.decoding.vllm.backend import VllmBackend

    table: dict[str, type[Backend]] = {cls.name: cls for cls in (TransformersBackend, VllmBackend)}
    if name not in table:
        raise OptionError("backend", name, f"is unknown; use one of: {', '.join(table)}")
    return table[name]


def check_prompts(
    backend: Backend,
    prompts: Sequence[str],
    amateur_prompts: Sequence[str] | None,
    max_new_tokens: int,
    add_special_tokens: bool,
    truncate: bool,
) -> list[int]:
    """Refuse empty prompts, prompts too long for the model, and missing amateur prompts; return lengths.

    Raises:
        OptionError: naming ``prompts`` (or ``amateur_prompts``) and the first bad row (0-based).
    """
    if isinstance(prompts, str):
        raise OptionError("prompts", prompts, "is one string; pass a list of prompts")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise OptionError("max_new_tokens", max_new_tokens, "must be an int >= 1")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise OptionError(
                f"prompts[{i}]",
                p,
                "is empty: every prompt needs some text" if isinstance(p, str) else "is not a string",
            )
    if backend.spec.amateur_prompt:
        if amateur_prompts is None:
            raise OptionError(
                "amateur_prompts",
                MISSING,
                f"are needed by strategy {backend.spec.name!r}: one per prompt ({len(prompts)})",
            )
        if len(amateur_prompts) != len(prompts):
            raise OptionError(
                "amateur_prompts",
                f"<{len(amateur_prompts)} prompts>",
                f"must hold one amateur prompt per prompt ({len(prompts)}) for strategy {backend.spec.name!r}",
            )
        for i, p in enumerate(amateur_prompts):
            if not isinstance(p, str) or not p.strip():
                raise OptionError(
                    f"amateur_prompts[{i}]", p, "is empty: every amateur prompt needs some text"
                )
    elif amateur_prompts is not None:
        raise OptionError(
            "amateur_prompts",
            f"<{len(amateur_prompts)} prompts>",
            f"apply to strategy 'input-contrast' only, not {backend.spec.name!r}",
        )
    lengths = [len(ids) for ids in backend.prompt_ids(prompts, add_special_tokens)] if prompts else []
    limit = backend.context_length()
    for i, n in enumerate(lengths):
        if n == 0:
            raise OptionError(f"prompts[{i}]", prompts[i], "tokenizes to no tokens")
        if limit is not None and not truncate and n + max_new_tokens > limit:
            raise OptionError(
                f"prompts[{i}]", f"<{n} tokens>",
                f"is too long: {n} prompt tokens + max_new_tokens {max_new_tokens} exceed the model's context of "
                f"{limit} tokens; shorten it, lower max_new_tokens, or ask for truncation (truncate=True, on the "
                "command line --truncate)",
            )  # fmt: skip
    return lengths


def run_batches(
    backend: Backend,
    prompts: Sequence[str],
    *,
    amateur_prompts: Sequence[str] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    seed: int | None = 0,
    add_special_tokens: bool = True,
    skip: Sequence[int] | set[int] = (),
    streamer: Any = None,
    progress: bool | None = False,
    truncate: bool = False,
) -> Iterator[tuple[int, Generated]]:
    """Generate for many prompts in length-grouped batches; yield ``(index, Generated)`` as batches finish.

    Args:
        backend: the loaded model and strategy.
        prompts: the prompt texts (each non-empty).
        amateur_prompts: one per prompt, for strategies that take them (input contrast).
        max_new_tokens: generated tokens per prompt at most.
        batch_size: prompts per generate call (vLLM: per engine call; the engine schedules them).
        seed: batch ``b`` of the plan over *all* prompts is seeded with ``seed + b``; ``None``: unseeded.
        add_special_tokens: passed to the tokenizer (``False`` for chat-rendered prompts).
        skip: indices already done. The batch plan is the plan of the full run, and a batch that is only
            partly done is generated whole again (its done rows are not yielded), so every row is exactly
            what an uninterrupted run gives, under sampling too.
        streamer: a transformers streamer, used when there is one prompt to do and the backend and
            strategy allow streaming (not beam search, not vLLM).
        progress: a tqdm bar on stderr; ``None`` shows it only when stderr is a terminal.
        truncate: prompts longer than the model's context keep their last tokens instead of being refused.

    Raises:
        OptionError: an empty or too long prompt, or missing amateur prompts (before any generation).
    """
    from tqdm.auto import tqdm

    lengths = check_prompts(backend, prompts, amateur_prompts, max_new_tokens, add_special_tokens, truncate)
    plan = length_batches(lengths, batch_size) if prompts else []
    skip = set(skip)
    pending = len(prompts) - len(skip & set(range(len(prompts))))
    use_streamer = streamer if (pending == 1 and backend.streams()) else None
    with tqdm(
        total=pending, file=sys.stderr, disable=None if progress is None else not progress, unit="row"
    ) as bar:
        for b, rows in enumerate(plan):
            todo = [i for i in rows if i not in skip]
            if not todo:
                continue
            batch = Batch(
                prompts=[prompts[i] for i in rows],
                max_new_tokens=max_new_tokens,
                amateur_prompts=[amateur_prompts[i] for i in rows] if backend.spec.amateur_prompt else None,
                seed=None if seed is None else seed + b,
                add_special_tokens=add_special_tokens,
                streamer=use_streamer if len(rows) == 1 else None,  # streamers follow one row
                truncate=truncate,
            )
            for i, out in zip(rows, backend.generate(batch), strict=True):
                if i in skip:
                    continue
                yield i, out
                bar.update(1)
