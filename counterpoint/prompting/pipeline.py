"""Select demonstrations, render prompts, generate: one batched pipeline over a list of queries.

Example:
    >>> from counterpoint import load_language_model
    >>> from counterpoint.prompting import FewShotTemplate, Pipeline
    >>> model, tokenizer = load_language_model()
    >>> pipe = Pipeline(model, tokenizer, FewShotTemplate(), selector=None, strategy="greedy")
    >>> [r.output for r in pipe.run([{"input": "2 + 2 ="}])]          # doctest: +SKIP

Selector protocol: ``selector`` is ``None`` (zero-shot), an object with
``select(queries: list) -> list[list[dict]]``, or a callable with that signature. It returns, per
query and in query order, the demonstrations to show: selection results ``{"index", "score",
"example"}`` (what :func:`counterpoint.selection.select` returns; :class:`PoolSelector` wraps it) or
plain example dicts. The template renders them in the order given.

Batches are grouped by prompt length (longest first) so padding stays small; :meth:`Pipeline.run`
returns results in input order, :meth:`Pipeline.iter_run` yields them as batches finish.

Backends (:mod:`counterpoint.decoding.backend`): ``backend="transformers"`` (the default) runs
``model.generate`` on a ``PreTrainedModel``; ``backend="vllm"`` runs a ``vllm.LLM`` engine (the optional
``vllm`` extra) for greedy, sample, beam and contrastive-decoding, and refuses the other strategies before
any work. :func:`load_models` loads either from a model name:

    >>> model, tokenizer, options = load_models("path/to/expert", GenerationOptions(amateur="path/to/amateur"),
    ...                                         backend="vllm")                 # doctest: +SKIP
    >>> pipe = Pipeline(model, tokenizer, strategy="contrastive-decoding", options=options,
    ...                 backend="vllm")                                          # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from counterpoint._deprecated import moved
from counterpoint.batching import length_batches
from counterpoint.decoding.backend import Backend, get_backend, run_batches
from counterpoint.decoding.spec import GenerationOptions
from counterpoint.prompting.template import FewShotTemplate
from counterpoint.selection.selector import Selector

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "Pipeline",
    "PipelineResult",
    "PreparedPrompt",
    "generate_texts",
    "length_batches",
    "load_models",
]

# Moved to counterpoint.selection (beside the LangChain adapter); the old path works for one release.
__getattr__ = moved(
    "counterpoint.prompting.pipeline",
    {"PoolSelector": "counterpoint.selection.selector", "Selector": "counterpoint.selection.selector"},
)


@dataclass
class PreparedPrompt:
    """One query's demonstrations and rendered prompts, before generation."""

    index: int  # position in the input
    query: Any
    demos: list[dict[str, Any]]
    prompt: str
    amateur_prompt: str | None  # input contrast only
    num_tokens: int  # prompt length in tokens


@dataclass
class PipelineResult:
    """One query's output with what produced it."""

    index: int  # position in the input
    query: Any
    demos: list[dict[str, Any]]  # as the selector returned them
    prompt: str  # exactly the text given to the model
    output: str  # the generated continuation, special tokens removed
    output_ids: list[int]  # generated token ids, up to and including the first EOS
    amateur_prompt: str | None = None  # input contrast: the amateur's prompt

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready row."""
        row: dict[str, Any] = {"index": self.index, "query": self.query, "demos": self.demos}
        row["prompt"] = self.prompt
        if self.amateur_prompt is not None:
            row["amateur_prompt"] = self.amateur_prompt
        row["output"] = self.output
        return row


def load_models(
    model: str | os.PathLike[str] | None = None,
    options: GenerationOptions | None = None,
    *,
    backend: str = "transformers",
    seed: int = 0,
    **engine_kwargs: Any,
) -> tuple[Any, PreTrainedTokenizerBase, GenerationOptions]:
    """Load the model for ``backend``, and the amateur ``options.amateur`` names when it is a name.

    Args:
        model: as :func:`counterpoint.models.load_language_model` takes it (``None``: the embedded
            SmolLM2-135M-Instruct; GGUF is converted to safetensors once, which vLLM needs).
        options: the strategy's options; a string ``amateur`` is loaded (transformers) or handed to
            the engine, which runs it beside the expert (vLLM).
        backend: ``"transformers"``: a ``PreTrainedModel`` (fp32); ``"vllm"``: a ``vllm.LLM`` in fp32
            with the contrastive logits processor when there is an amateur.
        seed: the vLLM engine's seed.
        **engine_kwargs: more arguments of ``load_language_model`` (transformers) or of
            ``vllm.LLM`` (vLLM: ``tensor_parallel_size``, ``dtype``, ``max_model_len``, ...).

    Returns:
        ``(model, tokenizer, options)``: ``options`` with ``amateur`` replaced by the loaded model
        (transformers) or its resolved path (vLLM).
    """
    return get_backend(backend).load_model(model, options or GenerationOptions(), seed=seed, **engine_kwargs)


def _backend(
    model: Any,
    tokenizer: Any,
    strategy: str,
    options: GenerationOptions | None,
    backend: str | Backend,
    generate_kwargs: Mapping[str, Any] | None,
) -> Backend:
    if isinstance(backend, Backend):
        return backend
    return get_backend(backend)(model, tokenizer, strategy, options, generate_kwargs=generate_kwargs)


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    strategy: str = "greedy",
    options: GenerationOptions | None = None,
    amateur_prompts: Sequence[str] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    seed: int | None = 0,
    add_special_tokens: bool = True,
    skip: Sequence[int] | set[int] = (),
    streamer: Any = None,
    progress: bool | None = False,
    generate_kwargs: Mapping[str, Any] | None = None,
    backend: str = "transformers",
    truncate: bool = False,
) -> Iterator[tuple[int, str, list[int]]]:
    """Generate for many prompts in length-grouped batches; yield ``(index, text, token_ids)`` as done.

    A convenience over :func:`counterpoint.decoding.backend.run_batches` (see it for ``seed``, ``skip``,
    ``streamer`` and ``truncate``): it builds the backend for ``model`` and ``strategy`` first.

    Args:
        model: a causal LM; with ``backend="vllm"`` a ``vllm.LLM`` (see :func:`load_models`).
        tokenizer: its tokenizer (needs a pad token); prompts are padded on the left.
        prompts: the prompt texts.
        strategy: a name in :data:`counterpoint.decoding.STRATEGIES`.
        options: the strategy's options.
        amateur_prompts: input contrast only: the amateur's prompt for each prompt.
        generate_kwargs: extra kwargs for ``model.generate`` (transformers backend).
        backend: ``"transformers"`` or ``"vllm"``.

    Yields:
        ``(index, text, token_ids)``: the continuation decoded without special tokens and its ids
        up to and including the first EOS.
    """
    runner = _backend(model, tokenizer, strategy, options, backend, generate_kwargs)
    for i, out in run_batches(
        runner, prompts, amateur_prompts=amateur_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
        seed=seed, add_special_tokens=add_special_tokens, skip=skip, streamer=streamer, progress=progress,
        truncate=truncate,
    ):  # fmt: skip
        yield i, out.text, out.token_ids


class Pipeline:
    """Select demonstrations, render prompts with a template, generate with a strategy.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (needs a pad token).
        template: a :class:`FewShotTemplate` or :class:`ChatTemplate` (anything with
            ``render_text(demos, query)``; input contrast also needs ``amateur_text``). Default:
            ``FewShotTemplate()``.
        selector: ``None`` (no demonstrations), a :class:`Selector` or a callable; see the module doc.
        strategy: a name in :data:`~counterpoint.prompting.strategies.STRATEGIES`.
        options: the strategy's knobs; for input contrast ``options.variant`` picks the amateur prompt
            (default ``"no-demos"``).
        max_new_tokens: generated tokens per query at most.
        batch_size: queries per ``generate`` call.
        seed: see :func:`generate_texts`.
        generate_kwargs: extra kwargs for ``model.generate`` (vLLM: for ``generate_vllm``).
        backend: ``"transformers"`` (``model`` a ``PreTrainedModel``) or ``"vllm"`` (``model`` a
            ``vllm.LLM``, e.g. from :func:`load_models`): greedy, sample, beam, contrastive-decoding; or a
            :class:`~counterpoint.decoding.backend.Backend` already built (then ``model``, ``tokenizer``,
            ``strategy``, ``options`` and ``generate_kwargs`` are taken from it and may be None).

    Raises:
        ValueError: an unknown strategy or backend, a knob the strategy does not take, or a strategy
            the backend cannot run, before any work starts.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        template: Any = None,
        selector: Selector | Callable[[list[Any]], list[list[dict[str, Any]]]] | None = None,
        strategy: str = "greedy",
        options: GenerationOptions | None = None,
        *,
        max_new_tokens: int = 64,
        batch_size: int = 8,
        seed: int | None = 0,
        generate_kwargs: Mapping[str, Any] | None = None,
        backend: str = "transformers",
    ) -> None:
        self.runner = _backend(model, tokenizer, strategy, options, backend, generate_kwargs)
        self.spec = self.runner.spec
        self.options = self.runner.options
        if selector is not None and not (isinstance(selector, Selector) or callable(selector)):
            raise TypeError(
                f"selector={selector!r} must be None, an object with select(queries), or a callable"
            )
        self.template = template if template is not None else FewShotTemplate()
        if not hasattr(self.template, "render_text"):
            raise TypeError(f"template={self.template!r} has no render_text(demos, query)")
        if self.spec.amateur_prompt and not hasattr(self.template, "amateur_text"):
            raise TypeError(
                f"strategy {strategy!r} needs a template with amateur_text(demos, query, variant)"
            )
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")
        if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 1")
        self.model = self.runner.model
        self.tokenizer = self.runner.tokenizer
        self.selector = selector
        self.strategy = self.spec.name
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed

    def select(self, queries: Sequence[Any]) -> list[list[dict[str, Any]]]:
        """The demonstrations for each query (empty lists without a selector)."""
        queries = list(queries)
        if self.selector is None:
            return [[] for _ in queries]
        fn = self.selector.select if isinstance(self.selector, Selector) else self.selector
        demos = fn(queries)
        if len(demos) != len(queries):
            raise ValueError(f"the selector returned {len(demos)} demo lists for {len(queries)} queries")
        return [list(d) for d in demos]

    def prepare(self, queries: Sequence[Any]) -> list[PreparedPrompt]:
        """Select and render every query's prompt (and amateur prompt), without generating."""
        queries = list(queries)
        variant = self.runner.values.get("variant")
        add_special = getattr(self.template, "add_special_tokens", True)
        prepared = []
        for i, (query, demos) in enumerate(zip(queries, self.select(queries), strict=True)):
            prompt = self.template.render_text(demos, query)
            amateur = self.template.amateur_text(demos, query, variant) if self.spec.amateur_prompt else None
            n = len(self.tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
            prepared.append(PreparedPrompt(i, query, demos, prompt, amateur, n))
        return prepared

    def iter_run(
        self,
        queries: Sequence[Any],
        *,
        skip: Sequence[int] | set[int] = (),
        progress: bool | None = False,
        streamer: Any = None,
    ) -> Iterator[PipelineResult]:
        """Yield each query's result as its batch finishes (length-grouped order, not input order).

        Args:
            queries: dicts or strings.
            skip: input positions to leave out (already done); the others are batched and seeded as
                in the full run.
            progress: a tqdm bar on stderr (``None``: when stderr is a terminal).
            streamer: a transformers streamer for a single query.
        """
        prepared = self.prepare(queries)
        amateurs = [p.amateur_prompt for p in prepared] if self.spec.amateur_prompt else None
        for i, out in run_batches(
            self.runner,
            [p.prompt for p in prepared],
            amateur_prompts=amateurs,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            seed=self.seed,
            add_special_tokens=getattr(self.template, "add_special_tokens", True),
            skip=skip,
            streamer=streamer,
            progress=progress,
        ):
            p = prepared[i]
            yield PipelineResult(i, p.query, p.demos, p.prompt, out.text, out.token_ids, p.amateur_prompt)

    def run(self, queries: Sequence[Any], *, progress: bool | None = False) -> list[PipelineResult]:
        """Every query's result, in input order."""
        return sorted(self.iter_run(queries, progress=progress), key=lambda r: r.index)

    __call__ = run
