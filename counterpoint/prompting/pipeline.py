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

Backends: ``backend="transformers"`` (the default) runs ``model.generate`` on a ``PreTrainedModel``;
``backend="vllm"`` runs a ``vllm.LLM`` engine (the optional ``vllm`` extra) for greedy, sample, beam
and contrastive-decoding, and refuses the other strategies before any work. :func:`load_models`
loads either from a model name:

    >>> model, tokenizer, options = load_models("path/to/expert", GenerationOptions(amateur="path/to/amateur"),
    ...                                         backend="vllm")                 # doctest: +SKIP
    >>> pipe = Pipeline(model, tokenizer, strategy="contrastive-decoding", options=options,
    ...                 backend="vllm")                                          # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from counterpoint.prompting.strategies import GenerationOptions, Strategy, check_backend
from counterpoint.prompting.template import FewShotTemplate

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "Pipeline",
    "PipelineResult",
    "PoolSelector",
    "PreparedPrompt",
    "Selector",
    "generate_texts",
    "length_batches",
    "load_models",
]


@runtime_checkable
class Selector(Protocol):
    """Anything with ``select(queries) -> list[list[dict]]`` (one list of demonstrations per query)."""

    def select(self, queries: list[Any]) -> list[list[dict[str, Any]]]: ...


@dataclass
class PoolSelector:
    """A :class:`Selector` over a :class:`counterpoint.selection.DemoPool` via ``selection.select``.

    Every field but ``pool`` is passed to ``select`` as is. For a token budget (``max_tokens``) pass
    the pipeline's template as ``render=template.render_text`` and its ``tokenizer``, so the budget
    counts tokens the way the prompt will be built.
    """

    pool: Any  # a counterpoint.selection.DemoPool
    k: int = 4  # demonstrations per query
    method: str = "knn"  # knn, mmr, dpp, bm25, random, vote-k
    query_key: str = "input"  # the query field to match against the pool
    balance_labels: bool = False  # as many demonstrations of each label as possible
    max_tokens: int | None = None  # prompt budget; None: no budget
    tokenizer: Any = None  # counts tokens for max_tokens
    render: Callable[[list[dict[str, Any]], Any], str] | None = None  # formats a prompt for max_tokens
    order: str = "most_similar_last"  # where the best demonstration sits in the prompt
    seed: int = 0  # for random and sampling methods
    method_kwargs: dict[str, Any] = field(default_factory=dict)  # extra knobs of the method

    def __post_init__(self) -> None:
        if not (isinstance(self.k, int) and self.k >= 0):
            raise ValueError(f"k={self.k!r} must be an int >= 0")
        if self.max_tokens is not None and (self.tokenizer is None or self.render is None):
            raise ValueError(
                f"max_tokens={self.max_tokens} needs tokenizer and render (e.g. render=template.render_text)"
            )

    def select(self, queries: list[Any]) -> list[list[dict[str, Any]]]:
        from counterpoint.selection import select

        return select(
            self.pool,
            queries,
            k=self.k,
            method=self.method,
            query_key=self.query_key,
            balance_labels=self.balance_labels,
            max_tokens=self.max_tokens,
            tokenizer=self.tokenizer,
            render=self.render,
            order=self.order,
            seed=self.seed,
            **self.method_kwargs,
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


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Group row indices into batches of similar length, longest first (ties keep input order).

    Longest first so a batch that does not fit in memory fails at once, not at the end of a run.
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _eos_ids(model: PreTrainedModel) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)


def _tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], add_special_tokens: bool, device: Any
) -> Any:
    return tokenizer(
        texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=add_special_tokens
    ).to(device)


def _engine_amateur(llm: Any) -> str | None:
    """The amateur a ``vllm.LLM`` was built with (``build_llm(amateur=...)``), ``None`` without one."""
    from counterpoint.decoding.vllm_backend import AMATEUR_CONFIG_KEY

    config = getattr(getattr(llm, "llm_engine", None), "vllm_config", None)
    extra = getattr(config, "additional_config", None)
    return extra.get(AMATEUR_CONFIG_KEY) if isinstance(extra, Mapping) else None


def _check_model(model: Any, spec: Strategy, options: GenerationOptions, backend: str) -> None:
    """The model suits the backend (and, for vLLM contrast, the engine holds the named amateur)."""
    is_engine = hasattr(model, "llm_engine")
    if backend == "transformers" and is_engine:
        raise ValueError("model is a vLLM engine: pass backend='vllm' (on the command line --backend vllm)")
    if backend != "vllm":
        return
    if not is_engine:
        raise ValueError(
            f"backend='vllm' needs model to be a vllm.LLM (see load_models), not {type(model).__name__}"
        )
    if spec.name == "contrastive-decoding":
        engine = _engine_amateur(model)
        if engine is None:
            raise ValueError(
                "strategy 'contrastive-decoding' on the vLLM backend needs an engine built with its amateur: "
                "load_models(..., backend='vllm') or vllm_backend.build_llm(model, amateur=...)"
            )
        if os.path.abspath(str(engine)) != os.path.abspath(str(options.amateur)):
            raise ValueError(
                f"amateur={str(options.amateur)!r} but the vLLM engine was built with amateur {engine!r}: "
                "an engine has one amateur; build another engine for another amateur"
            )


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
        options: the strategy's knobs; a string ``amateur`` is loaded (transformers) or handed to
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
    from dataclasses import replace

    from counterpoint.models import load_language_model, resolve_language_model_path

    options = options or GenerationOptions()
    if backend == "vllm":
        from transformers import AutoTokenizer

        from counterpoint.decoding.vllm_backend import build_llm, require_vllm

        require_vllm()  # before any conversion or loading
        path = resolve_language_model_path(model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"  # as load_language_model sets it up
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        amateur = None
        if isinstance(options.amateur, str | os.PathLike):
            amateur = resolve_language_model_path(options.amateur)
            options = replace(options, amateur=amateur)
        return build_llm(path, amateur=amateur, seed=seed, **engine_kwargs), tokenizer, options
    if backend != "transformers":
        raise ValueError(f"backend={backend!r} is unknown; use one of: transformers, vllm")
    lm, tokenizer = load_language_model(model, **engine_kwargs)
    if isinstance(options.amateur, str | os.PathLike):
        amateur, _ = load_language_model(options.amateur, device=lm.device)
        options = replace(options, amateur=amateur)
    return lm, tokenizer, options


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
) -> Iterator[tuple[int, str, list[int]]]:
    """Generate for many prompts in length-grouped batches; yield ``(index, text, token_ids)`` as done.

    Args:
        model: a causal LM; with ``backend="vllm"`` a ``vllm.LLM`` (see :func:`load_models`).
        tokenizer: its tokenizer (needs a pad token); prompts are padded on the left.
        prompts: the prompt texts.
        strategy: a name in :data:`~counterpoint.prompting.strategies.STRATEGIES`.
        options: the strategy's knobs.
        amateur_prompts: input contrast only: the amateur's prompt for each prompt.
        max_new_tokens: generated tokens per prompt at most.
        batch_size: prompts per ``generate`` call (vLLM: per engine call; the engine schedules them).
        seed: ``torch.manual_seed(seed + b)`` before batch ``b`` of the plan over *all* prompts, so a
            resumed run (``skip``) samples each untouched batch as the full run did (a batch that was
            partly skipped is generated with fewer rows, so under sampling its rows may differ).
            vLLM: ``seed + b`` is the sampling seed of batch ``b``'s requests. ``None``: unseeded.
        add_special_tokens: passed to the tokenizer (``False`` for chat-rendered prompts).
        skip: indices not to generate (already done); the batch plan is the same as without them.
        streamer: a transformers streamer, used when there is one prompt to do and the strategy
            allows streaming (not beam search, not the vLLM backend).
        progress: a tqdm bar on stderr; ``None`` shows it only when stderr is a terminal.
        generate_kwargs: extra kwargs for ``model.generate`` (vLLM: for
            :func:`~counterpoint.decoding.vllm_backend.generate_vllm`), over the strategy's.
        backend: ``"transformers"`` or ``"vllm"``; see :func:`check_backend`.

    Yields:
        ``(index, text, token_ids)``: the continuation decoded without special tokens and its ids
        up to and including the first EOS.
    """
    options = options or GenerationOptions()
    spec = check_backend(strategy, options, backend)
    _check_model(model, spec, options, backend)
    kwargs = spec.build_vllm(options) if backend == "vllm" else spec.build(options)
    kwargs.update(generate_kwargs or {})
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 1")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to its eos_token)")
    if spec.needs_amateur_prompt:
        if amateur_prompts is None or len(amateur_prompts) != len(prompts):
            got = None if amateur_prompts is None else len(amateur_prompts)
            raise ValueError(
                f"strategy {strategy!r} needs one amateur prompt per prompt ({len(prompts)}); got {got}"
            )
    elif amateur_prompts is not None:
        raise ValueError(f"amateur_prompts apply to strategy 'input-contrast' only, not {strategy!r}")

    skip = set(skip)
    lengths = [
        len(ids) for ids in tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    ]
    plan = length_batches(lengths, batch_size) if prompts else []
    pending = len(prompts) - len(skip & set(range(len(prompts))))
    use_streamer = streamer if (backend == "transformers" and pending == 1 and spec.streams(kwargs)) else None
    eos = _eos_ids(model) if backend == "transformers" else set()

    from tqdm.auto import tqdm

    with tqdm(
        total=pending, file=sys.stderr, disable=None if progress is None else not progress, unit="row"
    ) as bar:
        for b, batch in enumerate(plan):
            rows = [i for i in batch if i not in skip]
            if not rows:
                continue
            if backend == "vllm":
                from counterpoint.decoding.vllm_backend import generate_vllm

                # Token ids, so the engine reads exactly what transformers would (no re-tokenizing).
                ids = tokenizer([prompts[i] for i in rows], add_special_tokens=add_special_tokens)[
                    "input_ids"
                ]
                outs = generate_vllm(
                    None,
                    ids,
                    max_new_tokens=max_new_tokens,
                    seed=None if seed is None else seed + b,
                    llm=model,
                    **kwargs,
                )
                for i, out in zip(rows, outs, strict=True):  # vLLM stops at EOS itself (and keeps it)
                    yield i, tokenizer.decode(out.token_ids, skip_special_tokens=True), list(out.token_ids)
                    bar.update(1)
                continue
            enc = _tokenize(tokenizer, [prompts[i] for i in rows], add_special_tokens, model.device)
            call = dict(kwargs)
            if spec.needs_amateur_prompt:
                amateur = _tokenize(
                    tokenizer, [amateur_prompts[i] for i in rows], add_special_tokens, model.device
                )
                call["amateur_input_ids"] = amateur["input_ids"]
                call["amateur_attention_mask"] = amateur["attention_mask"]
            if use_streamer is not None:
                call["streamer"] = use_streamer
            if seed is not None:
                torch.manual_seed(seed + b)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, **call)
            new = out[:, enc["input_ids"].shape[1] :].tolist()
            for i, ids in zip(rows, new, strict=True):
                cut = next((j + 1 for j, t in enumerate(ids) if t in eos), len(ids))
                ids = ids[:cut]
                yield i, tokenizer.decode(ids, skip_special_tokens=True), ids
                bar.update(1)


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
            ``vllm.LLM``, e.g. from :func:`load_models`): greedy, sample, beam, contrastive-decoding.

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
        self.options = options or GenerationOptions()
        self.spec = check_backend(strategy, self.options, backend)
        if backend == "transformers":
            self.spec.build(self.options)  # fail now on a missing knob or implementation, not mid-run
        _check_model(model, self.spec, self.options, backend)
        if selector is not None and not (isinstance(selector, Selector) or callable(selector)):
            raise TypeError(
                f"selector={selector!r} must be None, an object with select(queries), or a callable"
            )
        self.template = template if template is not None else FewShotTemplate()
        if not hasattr(self.template, "render_text"):
            raise TypeError(f"template={self.template!r} has no render_text(demos, query)")
        if self.spec.needs_amateur_prompt and not hasattr(self.template, "amateur_text"):
            raise TypeError(
                f"strategy {strategy!r} needs a template with amateur_text(demos, query, variant)"
            )
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")
        if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.selector = selector
        self.strategy = strategy
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed
        self.generate_kwargs = dict(generate_kwargs or {})
        self.backend = backend

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
        variant = self.options.variant or "no-demos"
        add_special = getattr(self.template, "add_special_tokens", True)
        prepared = []
        for i, (query, demos) in enumerate(zip(queries, self.select(queries), strict=True)):
            prompt = self.template.render_text(demos, query)
            amateur = (
                self.template.amateur_text(demos, query, variant) if self.spec.needs_amateur_prompt else None
            )
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
        texts = [p.prompt for p in prepared]
        amateurs = [p.amateur_prompt for p in prepared] if self.spec.needs_amateur_prompt else None
        for i, text, ids in generate_texts(
            self.model,
            self.tokenizer,
            texts,
            strategy=self.strategy,
            options=self.options,
            amateur_prompts=amateurs,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            seed=self.seed,
            add_special_tokens=getattr(self.template, "add_special_tokens", True),
            skip=skip,
            streamer=streamer,
            progress=progress,
            generate_kwargs=self.generate_kwargs,
            backend=self.backend,
        ):
            p = prepared[i]
            yield PipelineResult(i, p.query, p.demos, p.prompt, text, ids, p.amateur_prompt)

    def run(self, queries: Sequence[Any], *, progress: bool | None = False) -> list[PipelineResult]:
        """Every query's result, in input order."""
        return sorted(self.iter_run(queries, progress=progress), key=lambda r: r.index)

    __call__ = run
