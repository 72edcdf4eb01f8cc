"""Deprecated: moved to counterpoint.decoding.vllm.processor. This path keeps working for one release."""

from counterpoint._deprecated import moved

__getattr__ = moved(
    "counterpoint.decoding.vllm_processor",
    {
        "ContrastiveLogitsProcessor": "counterpoint.decoding.vllm.processor",
    },
)
