"""Deprecated: moved to counterpoint.decoding.vllm.pool. This path keeps working for one release."""

from counterpoint._deprecated import moved

__getattr__ = moved(
    "counterpoint.decoding.amateur_pool",
    {
        "AmateurPool": "counterpoint.decoding.vllm.pool",
    },
)
