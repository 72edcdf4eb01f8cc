"""Deprecated: moved to counterpoint._hf, counterpoint.decoding.contrastive_decoding, counterpoint.decoding.engine, counterpoint.decoding.input_contrast, counterpoint.decoding.layer_contrast. This path keeps working for one release."""

from counterpoint._deprecated import moved

__getattr__ = moved(
    "counterpoint.decoding.processors",
    {
        "HEAD_ONLY_MAX_FRACTION": "counterpoint.decoding.layer_contrast",
        "ContrastLogitsProcessor": "counterpoint.decoding.engine",
        "InputContrast": "counterpoint.decoding.input_contrast",
        "LayerContrast": "counterpoint.decoding.layer_contrast",
        "ModelContrast": "counterpoint.decoding.contrastive_decoding",
        "check_vocabularies": "counterpoint.decoding.engine",
        "decoder_parts": "counterpoint._hf",
    },
)
