"""Contrastive decoding strategies: contrastive search and the expert-vs-amateur family."""

from counterpoint.decoding.contrastive_search import contrastive_search
from counterpoint.decoding.scores import ContrastConfig, contrast_scores, plausible_head

__all__ = ["ContrastConfig", "contrast_scores", "contrastive_search", "plausible_head"]
