"""Deprecated: moved to counterpoint.decoding.vllm.args, counterpoint.decoding.vllm.engine. This path keeps working for one release."""

from counterpoint._deprecated import moved

__getattr__ = moved(
    "counterpoint.decoding.vllm_backend",
    {
        "AMATEUR_CONFIG_KEY": "counterpoint.decoding.vllm.args",
        "AMATEUR_DTYPE_CONFIG_KEY": "counterpoint.decoding.vllm.args",
        "CONTRAST_EXTRA_ARGS_KEY": "counterpoint.decoding.vllm.args",
        "VllmOutput": "counterpoint.decoding.vllm.engine",
        "build_llm": "counterpoint.decoding.vllm.engine",
        "contrast_extra_args": "counterpoint.decoding.vllm.args",
        "generate_vllm": "counterpoint.decoding.vllm.engine",
        "load_engine_amateur": "counterpoint.decoding.vllm.args",
        "parse_contrast_args": "counterpoint.decoding.vllm.args",
        "require_vllm": "counterpoint.decoding.vllm.args",
    },
)
