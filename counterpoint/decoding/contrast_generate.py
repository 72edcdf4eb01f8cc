"""Deprecated: moved to counterpoint.decoding.contrastive_decoding, counterpoint.decoding.input_contrast, counterpoint.decoding.layer_contrast. This path keeps working for one release."""

from counterpoint._deprecated import moved

__getattr__ = moved(
    "counterpoint.decoding.contrast_generate",
    {
        "contrastive_decoding": "counterpoint.decoding.contrastive_decoding",
        "layer_contrast": "counterpoint.decoding.layer_contrast",
        "input_contrast": "counterpoint.decoding.input_contrast",
    },
)
