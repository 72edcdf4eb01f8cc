"""Contrastive decoding strategies: contrastive search and the expert-vs-amateur family."""

from counterpoint.decoding.altered import (
    INSTRUCTIVE_DECODING,
    OPPOSITE_INSTRUCTION,
    left_pad,
    noisy_instruction,
    perturb_token_ids,
    without_spans,
)
from counterpoint.decoding.contrast_generate import contrastive_decoding, input_contrast, layer_contrast
from counterpoint.decoding.contrastive_search import contrastive_search
from counterpoint.decoding.processors import (
    ContrastLogitsProcessor,
    InputContrast,
    LayerContrast,
    ModelContrast,
)
from counterpoint.decoding.scores import ContrastConfig, contrast_scores, plausible_head

__all__ = [
    "INSTRUCTIVE_DECODING",
    "OPPOSITE_INSTRUCTION",
    "ContrastConfig",
    "ContrastLogitsProcessor",
    "InputContrast",
    "LayerContrast",
    "ModelContrast",
    "contrast_scores",
    "contrastive_decoding",
    "contrastive_search",
    "input_contrast",
    "layer_contrast",
    "left_pad",
    "noisy_instruction",
    "perturb_token_ids",
    "plausible_head",
    "without_spans",
]
