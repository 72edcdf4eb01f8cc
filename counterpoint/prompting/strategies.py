"""Decoding strategies by name: which knobs each takes and how it calls ``model.generate``.

One registry shared by :class:`~counterpoint.prompting.Pipeline` and the command line, so that a
strategy's name, knobs and defaults are written down once.

Example:
    >>> kwargs = generate_kwargs("sample", GenerationOptions(temperature=0.7, top_p=0.9))
    >>> kwargs["do_sample"], kwargs["temperature"], kwargs["top_p"]
    (True, 0.7, 0.9)
    >>> generate_kwargs("contrastive-search", GenerationOptions(beta=0.5))
    Traceback (most recent call last):
    ...
    ValueError: beta does not apply to strategy 'contrastive-search'; it takes: alpha, top_k

The expert-vs-amateur strategies (contrastive search, contrastive decoding, layer contrast, input
contrast) live in :mod:`counterpoint.decoding` and are imported only when used.

Backends: ``"transformers"`` (``model.generate``, every strategy) and ``"vllm"``
(:func:`counterpoint.decoding.vllm_backend.generate_vllm`: greedy, sample, beam and
contrastive-decoding). :func:`check_backend` refuses the others on vLLM, naming the reason:

    >>> check_backend("contrastive-search", GenerationOptions(), "vllm")
    Traceback (most recent call last):
    ...
    ValueError: strategy 'contrastive-search' cannot run on the vLLM backend: it needs the model's hidden states at every step, which vLLM does not expose; use the transformers backend (backend='transformers', on the command line --backend transformers)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "BACKENDS",
    "CONTRAST_KNOBS",
    "STRATEGIES",
    "GenerationOptions",
    "Strategy",
    "StrategyUnavailableError",
    "check_backend",
    "check_options",
    "generate_kwargs",
    "get_strategy",
]

LAYER_MODES = ("fixed", "jsd", "fusion")
# Where generation runs: transformers' model.generate, or a vLLM engine (the optional "vllm" extra).
BACKENDS = ("transformers", "vllm")


class StrategyUnavailableError(ImportError):
    """A strategy's implementation is missing from this install of counterpoint."""


@dataclass(frozen=True)
class GenerationOptions:
    """The knobs of every strategy; ``None`` means "not given": the strategy's default applies.

    A knob given to a strategy that does not take it is an error (see :func:`generate_kwargs`).
    """

    alpha: float | None = None  # contrastive search: degeneration penalty (0.6); contrast: plausibility (0.1)
    top_k: int | None = None  # contrastive search: candidates (4); sampling: keep the k most likely
    beta: float | None = None  # contrast "beta" form weight (0.5)
    form: str | None = None  # contrast form, "beta" (default) or "difference"
    gamma: float | None = None  # contrast "difference" form: amateur weight (1.0)
    tau: float | None = None  # contrast: amateur temperature (1.0)
    temperature: float | None = None  # sampling temperature (> 0)
    top_p: float | None = None  # nucleus sampling mass in (0, 1]
    num_beams: int | None = None  # beam width (beam: 4; contrast strategies: 1)
    do_sample: bool | None = None  # contrast strategies: sample from the contrast scores
    amateur: Any = None  # contrastive decoding: the amateur PreTrainedModel (required)
    layers: int | tuple[int, ...] | None = None  # layer contrast: amateur layer(s) (required)
    layer_mode: str | None = None  # layer contrast: "fixed", "jsd" or "fusion" ("fixed")
    variant: str | None = None  # input contrast: amateur prompt, "no-demos" (default), "no-context", ...

    def __post_init__(self) -> None:
        def check(name: str, ok: Callable[[Any], bool], valid: str) -> None:
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise ValueError(f"{name}={value!r} is not valid; {name} must be {valid}")

        check("top_k", lambda v: isinstance(v, int) and v >= 1, "an int >= 1")
        check("num_beams", lambda v: isinstance(v, int) and v >= 1, "an int >= 1")
        check("temperature", lambda v: v > 0, "> 0")
        check("top_p", lambda v: 0 < v <= 1, "in (0, 1]")
        check("layer_mode", lambda v: v in LAYER_MODES, f"one of {LAYER_MODES}")
        check(
            "layers",
            lambda v: (
                isinstance(v, int) or (isinstance(v, tuple) and v and all(isinstance(i, int) for i in v))
            ),
            "an int or a non-empty tuple of ints",
        )
        from counterpoint.prompting.template import AMATEUR_VARIANTS

        check("variant", lambda v: v in AMATEUR_VARIANTS, f"one of {AMATEUR_VARIANTS}")

    def given(self) -> dict[str, Any]:
        """The knobs that were set (not ``None``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Strategy:
    """A named way to call ``model.generate``."""

    name: str
    summary: str  # one line for --help
    knobs: tuple[str, ...]  # the GenerationOptions fields it takes
    build: Callable[[GenerationOptions], dict[str, Any]]  # options -> generate kwargs
    needs_amateur_prompt: bool = False  # input contrast: the caller supplies amateur_input_ids
    # options -> generate_vllm kwargs (its strategy name and knobs); None: vLLM cannot run it.
    build_vllm: Callable[[GenerationOptions], dict[str, Any]] | None = None
    no_vllm_reason: str = ""  # why vLLM cannot run it (when build_vllm is None), for the error

    def streams(self, kwargs: dict[str, Any]) -> bool:
        """Whether generate accepts a streamer with these kwargs (transformers refuses it for beams)."""
        return kwargs.get("num_beams", 1) in (None, 1)


def _decoding(attr: str, strategy: str) -> Callable[..., Any]:
    """``counterpoint.decoding.<attr>``, imported on first use."""
    try:
        found = getattr(importlib.import_module("counterpoint.decoding"), attr, None)
        if found is None:
            found = importlib.import_module(f"counterpoint.decoding.{attr}")
        if not callable(found):  # a submodule of the same name: the callable inside it
            found = getattr(found, attr)
    except (ImportError, AttributeError):
        raise StrategyUnavailableError(
            f"strategy {strategy!r} needs counterpoint.decoding.{attr}, which this install of counterpoint "
            "does not have"
        ) from None
    return found


def _contrast(o: GenerationOptions) -> Any:
    from counterpoint.decoding.scores import ContrastConfig

    given = {k: getattr(o, k) for k in ("form", "alpha", "beta", "gamma", "tau") if getattr(o, k) is not None}
    return ContrastConfig(**given)


def _search_kwargs(o: GenerationOptions) -> dict[str, Any]:
    """Greedy / sampling / beam settings for the contrast strategies (they run under any of them)."""
    kw: dict[str, Any] = {"do_sample": bool(o.do_sample), "num_beams": o.num_beams or 1}
    kw.update({k: getattr(o, k) for k in ("temperature", "top_k", "top_p") if getattr(o, k) is not None})
    return kw


def _greedy(o: GenerationOptions) -> dict[str, Any]:
    return {"do_sample": False, "num_beams": 1}


def _sample(o: GenerationOptions) -> dict[str, Any]:
    kw: dict[str, Any] = {"do_sample": True, "num_beams": 1}
    kw.update({k: getattr(o, k) for k in ("temperature", "top_k", "top_p") if getattr(o, k) is not None})
    return kw


def _beam(o: GenerationOptions) -> dict[str, Any]:
    return {"do_sample": False, "num_beams": o.num_beams or 4}


def _contrastive_search(o: GenerationOptions) -> dict[str, Any]:
    return {
        "custom_generate": _decoding("contrastive_search", "contrastive-search"),
        "penalty_alpha": 0.6 if o.alpha is None else o.alpha,
        "top_k": o.top_k or 4,
    }


def _contrastive_decoding(o: GenerationOptions) -> dict[str, Any]:
    if o.amateur is None:
        raise ValueError("strategy 'contrastive-decoding' needs amateur (the amateur model)")
    return {
        "custom_generate": _decoding("contrastive_decoding", "contrastive-decoding"),
        "amateur_model": o.amateur,
        "contrast": _contrast(o),
        **_search_kwargs(o),
    }


def _layer_contrast(o: GenerationOptions) -> dict[str, Any]:
    if o.layers is None:
        raise ValueError("strategy 'layer-contrast' needs layers (the amateur layer index or indices)")
    return {
        "custom_generate": _decoding("layer_contrast", "layer-contrast"),
        "amateur_layers": o.layers if isinstance(o.layers, int) else list(o.layers),
        "layer_mode": o.layer_mode or "fixed",
        "contrast": _contrast(o),
        **_search_kwargs(o),
    }


def _input_contrast(o: GenerationOptions) -> dict[str, Any]:
    return {
        "custom_generate": _decoding("input_contrast", "input-contrast"),
        "contrast": _contrast(o),
        **_search_kwargs(o),
    }


# -- the vLLM backend: GenerationOptions -> generate_vllm kwargs ------------------------------------


def _vllm_greedy(o: GenerationOptions) -> dict[str, Any]:
    return {"strategy": "greedy"}


def _vllm_sample(o: GenerationOptions) -> dict[str, Any]:
    # vLLM's own defaults where a knob is not given: temperature 1, top_p 1, top_k off.
    return {
        "strategy": "sampling",
        "temperature": o.temperature,
        "top_p": 1.0 if o.top_p is None else o.top_p,
        "top_k": o.top_k or 0,
    }


def _vllm_beam(o: GenerationOptions) -> dict[str, Any]:
    return {"strategy": "beam", "num_beams": o.num_beams or 4}


def _vllm_contrastive_decoding(o: GenerationOptions) -> dict[str, Any]:
    if o.amateur is None:
        raise ValueError("strategy 'contrastive-decoding' needs amateur (the amateur model)")
    if not isinstance(o.amateur, str | os.PathLike):
        raise ValueError(
            f"amateur={type(o.amateur).__name__} object: on the vLLM backend amateur must be the amateur's "
            "folder or Hub id (the engine loads it beside the expert), not a loaded model"
        )
    if (o.num_beams or 1) > 1:
        raise ValueError(
            f"num_beams={o.num_beams} is not available for strategy 'contrastive-decoding' on the vLLM "
            "backend, which runs it greedy or sampled (do_sample); use the transformers backend for "
            "contrastive beam search"
        )
    sampling = {k: getattr(o, k) for k in ("temperature", "top_k", "top_p") if getattr(o, k) is not None}
    if sampling and not o.do_sample:
        names = ", ".join(f"{k}={v!r}" for k, v in sampling.items())
        verb = "needs" if len(sampling) == 1 else "need"
        raise ValueError(
            f"{names} {verb} do_sample=True with strategy 'contrastive-decoding' on the vLLM backend"
        )
    return {
        "strategy": "contrastive_decoding",
        "contrast": _contrast(o),
        # temperature 0 is vLLM's greedy; sampling from the contrast scores at temperature 1 by default.
        "temperature": (o.temperature or 1.0) if o.do_sample else 0.0,
        "top_p": 1.0 if o.top_p is None else o.top_p,
        "top_k": o.top_k or 0,
    }


CONTRAST_KNOBS = (
    "alpha",
    "beta",
    "form",
    "gamma",
    "tau",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "num_beams",
)

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("greedy", "the most likely token at each step", (), _greedy, build_vllm=_vllm_greedy),
        Strategy(
            "sample",
            "sampling, with temperature / top-k / top-p",
            ("temperature", "top_k", "top_p"),
            _sample,
            build_vllm=_vllm_sample,
        ),
        Strategy("beam", "beam search", ("num_beams",), _beam, build_vllm=_vllm_beam),
        Strategy(
            "contrastive-search",
            "contrastive search (Su et al. 2022): alpha penalises similarity to the context",
            ("alpha", "top_k"),
            _contrastive_search,
            no_vllm_reason="it needs the model's hidden states at every step, which vLLM does not expose",
        ),
        Strategy(
            "contrastive-decoding",
            "expert vs a smaller amateur model (Li et al. 2022)",
            ("amateur", *CONTRAST_KNOBS),
            _contrastive_decoding,
            build_vllm=_vllm_contrastive_decoding,
        ),
        Strategy(
            "layer-contrast",
            "final layer vs early layers of the same model (DoLa, Chuang et al. 2023)",
            ("layers", "layer_mode", *CONTRAST_KNOBS),
            _layer_contrast,
            no_vllm_reason="it needs the hidden states of intermediate layers at every step, which vLLM "
            "does not expose",
        ),
        Strategy(
            "input-contrast",
            "full prompt vs a weakened prompt (no demos, no context, noisy instruction)",
            ("variant", *CONTRAST_KNOBS),
            _input_contrast,
            needs_amateur_prompt=True,
            no_vllm_reason="input contrast (the amateur reading another prompt) is not built for vLLM",
        ),
    )
}


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; a ValueError listing the valid names otherwise."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"strategy={name!r} is unknown; use one of: {', '.join(STRATEGIES)}") from None


def check_options(name: str, options: GenerationOptions) -> Strategy:
    """Validate that every knob set in ``options`` applies to strategy ``name``; return the strategy."""
    strategy = get_strategy(name)
    extra = [k for k in options.given() if k not in strategy.knobs]
    if extra:
        takes = ", ".join(strategy.knobs) if strategy.knobs else "no knobs"
        verb = "does" if len(extra) == 1 else "do"
        raise ValueError(f"{', '.join(extra)} {verb} not apply to strategy {name!r}; it takes: {takes}")
    return strategy


def generate_kwargs(name: str, options: GenerationOptions | None = None) -> dict[str, Any]:
    """The ``model.generate`` kwargs for strategy ``name`` with ``options``.

    Raises:
        ValueError: unknown strategy, a knob the strategy does not take, or a required knob missing.
        StrategyUnavailableError: the strategy's implementation is not installed.
    """
    options = options or GenerationOptions()
    return check_options(name, options).build(options)


def check_backend(
    name: str, options: GenerationOptions | None = None, backend: str = "transformers"
) -> Strategy:
    """Validate strategy ``name`` with ``options`` for ``backend``, before any model loads.

    For ``"vllm"`` it also checks the knobs vLLM cannot honour and that vLLM is importable.

    Raises:
        ValueError: an unknown backend or strategy, a knob the strategy does not take, or a strategy
            (or knob) the backend cannot run; the message names the transformers backend.
        ImportError: ``backend="vllm"`` without vLLM installed; the message names the ``vllm`` extra.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; use one of: {', '.join(BACKENDS)}")
    options = options or GenerationOptions()
    strategy = check_options(name, options)
    if backend == "vllm":
        if strategy.build_vllm is None:
            raise ValueError(
                f"strategy {name!r} cannot run on the vLLM backend: {strategy.no_vllm_reason}; use the "
                "transformers backend (backend='transformers', on the command line --backend transformers)"
            )
        strategy.build_vllm(options)  # knob checks
        from counterpoint.decoding.vllm_backend import require_vllm

        require_vllm()
    return strategy
