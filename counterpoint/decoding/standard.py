"""transformers' own searches as strategies: greedy, sampling and beam search.

Their options are declared here once; the contrast strategies run under any of these searches and reuse
:data:`SEARCH_OPTIONS` (``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``num_beams``).

Example:
    >>> from counterpoint.decoding.registry import get_strategy
    >>> get_strategy("sample").generate_kwargs({"temperature": 0.7, "top_p": 0.9})
    {'do_sample': True, 'num_beams': 1, 'temperature': 0.7, 'top_p': 0.9}
"""

from __future__ import annotations

from typing import Any

from counterpoint.decoding.spec import Option, StrategySpec

__all__ = ["BEAM", "GREEDY", "SAMPLE", "SEARCH_OPTIONS", "check_sampling", "search_kwargs", "vllm_search"]

TEMPERATURE = Option(
    "temperature",
    "float",
    "sampling temperature",
    check=lambda v: v > 0,
    valid="must be > 0 (sampling temperature)",
)
TOP_K = Option(
    "top_k", "int", "keep the k most likely tokens", check=lambda v: v >= 1, valid="must be an int >= 1"
)
TOP_P = Option(
    "top_p", "float", "nucleus mass", check=lambda v: 0 < v <= 1, valid="must be in (0, 1] (nucleus mass)"
)
NUM_BEAMS = Option(
    "num_beams", "int", "beam width", default=4, check=lambda v: v >= 1, valid="must be an int >= 1"
)

# The search a contrast strategy's scores feed: greedy (default), sampling (do_sample) or beams.
SEARCH_OPTIONS = (
    Option("do_sample", "bool", "sample from the scores instead of greedy", default=False),
    Option(
        TEMPERATURE.name, "float", "sampling temperature", check=TEMPERATURE.check, valid=TEMPERATURE.valid
    ),
    Option(TOP_K.name, "int", "sampling: keep the k most likely", check=TOP_K.check, valid=TOP_K.valid),
    Option(TOP_P.name, "float", "sampling: nucleus mass", check=TOP_P.check, valid=TOP_P.valid),
    Option(NUM_BEAMS.name, "int", "beam width", default=1, check=NUM_BEAMS.check, valid=NUM_BEAMS.valid),
)
_SAMPLING = ("temperature", "top_k", "top_p")


def search_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """``generate`` kwargs of the search part of ``values`` (``do_sample``, ``num_beams``, warpers given)."""
    kw: dict[str, Any] = {
        "do_sample": bool(values.get("do_sample")),
        "num_beams": values.get("num_beams") or 1,
    }
    kw.update({k: values[k] for k in _SAMPLING if values.get(k) is not None})
    return kw


def vllm_search(values: dict[str, Any], *, sample: bool) -> dict[str, Any]:
    """vLLM request settings for a greedy or sampled search (vLLM's own defaults where not given)."""
    if not sample:
        return {"temperature": 0.0, "top_p": 1.0, "top_k": 0}
    temperature = values.get("temperature")
    return {
        "temperature": 1.0 if temperature is None else temperature,
        "top_p": 1.0 if values.get("top_p") is None else values["top_p"],
        "top_k": values.get("top_k") or 0,
    }


def check_sampling(values: dict[str, Any]) -> None:
    """Sampling knobs for a contrast strategy need do_sample (else they would be silently ignored)."""
    from counterpoint.errors import OptionError

    if not values.get("do_sample"):
        for name in _SAMPLING:
            if values.get(name) is not None:
                raise OptionError(name, values[name], "needs do_sample (it only shapes sampling)")


GREEDY = StrategySpec(
    position=0,
    name="greedy",
    summary="the most likely token at each step",
    options=(),
    build=lambda values: {"do_sample": False, "num_beams": 1},
    build_vllm=lambda values: {"mode": "sample", **vllm_search(values, sample=False)},
)

SAMPLE = StrategySpec(
    position=1,
    name="sample",
    summary="sampling, with temperature / top-k / top-p",
    options=(TEMPERATURE, TOP_K, TOP_P),
    build=lambda values: {
        "do_sample": True,
        "num_beams": 1,
        **{k: values[k] for k in _SAMPLING if values[k] is not None},
    },
    build_vllm=lambda values: {"mode": "sample", **vllm_search(values, sample=True)},
    aliases=("sampling",),
)

BEAM = StrategySpec(
    position=2,
    name="beam",
    summary="beam search",
    options=(NUM_BEAMS,),
    build=lambda values: {"do_sample": False, "num_beams": values["num_beams"]},
    build_vllm=lambda values: {"mode": "beam", "num_beams": values["num_beams"], "temperature": 0.0},
    streams=lambda values: False,
)

SPECS = (GREEDY, SAMPLE, BEAM)
