"""The vLLM backend: two-model contrastive decoding as a vLLM logits processor, and generation on an engine.

Nothing here imports vLLM at import time; :mod:`counterpoint.decoding.vllm.processor` (the logits processor
class the engine loads) does, and is imported by :func:`build_llm` only.

* :mod:`~counterpoint.decoding.vllm.args`: the request and engine settings (``extra_args``, ``additional_config``).
* :mod:`~counterpoint.decoding.vllm.pool`: the amateur beside the engine (one cache per request, decode steps batched).
* :mod:`~counterpoint.decoding.vllm.processor`: ``ContrastiveLogitsProcessor`` (vLLM's two interfaces).
* :mod:`~counterpoint.decoding.vllm.engine`: :func:`build_llm`, :func:`generate_vllm`.
* :mod:`~counterpoint.decoding.vllm.backend`: :class:`VllmBackend`, the backend interface.
"""

from counterpoint.decoding.vllm.args import (
    AMATEUR_CONFIG_KEY,
    AMATEUR_DTYPE_CONFIG_KEY,
    CONTRAST_EXTRA_ARGS_KEY,
    contrast_extra_args,
    load_engine_amateur,
    parse_contrast_args,
    require_vllm,
)
from counterpoint.decoding.vllm.engine import VllmEngineError, VllmOutput, build_llm, generate_vllm
from counterpoint.decoding.vllm.pool import AmateurPool

__all__ = [
    "AMATEUR_CONFIG_KEY",
    "AMATEUR_DTYPE_CONFIG_KEY",
    "CONTRAST_EXTRA_ARGS_KEY",
    "AmateurPool",
    "VllmEngineError",
    "VllmOutput",
    "build_llm",
    "contrast_extra_args",
    "generate_vllm",
    "load_engine_amateur",
    "parse_contrast_args",
    "require_vllm",
]
