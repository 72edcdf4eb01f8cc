"""Deprecated: moved to counterpoint.batching, counterpoint.decoding.input_contrast. This path keeps working for one release."""

from counterpoint._deprecated import moved

__getattr__ = moved(
    "counterpoint.decoding.altered",
    {
        "INSTRUCTIVE_DECODING": "counterpoint.decoding.input_contrast",
        "OPPOSITE_INSTRUCTION": "counterpoint.decoding.input_contrast",
        "noisy_instruction": "counterpoint.decoding.input_contrast",
        "perturb_token_ids": "counterpoint.decoding.input_contrast",
        "without_spans": "counterpoint.decoding.input_contrast",
        "left_pad": "counterpoint.batching",
    },
)
