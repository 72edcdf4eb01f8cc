"""counterpoint: contrastive LLM decoding and retrieval-backed few-shot prompting."""

from counterpoint.models import load_embedder, load_language_model

__version__ = "0.1.0"

__all__ = ["__version__", "load_embedder", "load_language_model"]
