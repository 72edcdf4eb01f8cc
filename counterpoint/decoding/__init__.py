"""Contrastive decoding strategies: contrastive search and the expert-vs-amateur family."""

from counterpoint.decoding.scores import ContrastConfig, contrast_scores, plausible_head

__all__ = ["ContrastConfig", "contrast_scores", "plausible_head"]
