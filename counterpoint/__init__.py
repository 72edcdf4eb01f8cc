"""counterpoint: contrastive LLM decoding and retrieval-backed few-shot prompting.

The handful of names most users need; everything else lives in the subpackages
(``counterpoint.decoding``, ``.selection``, ``.prompting``, ``.eval``). Names are imported on first
use, so ``import counterpoint`` (and ``counterpoint --help``) does not load torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ContrastConfig": "counterpoint.decoding",
    "contrastive_decoding": "counterpoint.decoding",
    "contrastive_search": "counterpoint.decoding",
    "input_contrast": "counterpoint.decoding",
    "layer_contrast": "counterpoint.decoding",
    "load_embedder": "counterpoint.models",
    "load_language_model": "counterpoint.models",
    "ChatTemplate": "counterpoint.prompting",
    "FewShotTemplate": "counterpoint.prompting",
    "GenerationOptions": "counterpoint.decoding",
    "Pipeline": "counterpoint.prompting",
    "PoolSelector": "counterpoint.selection",
    "DemoPool": "counterpoint.selection",
    "select": "counterpoint.selection",
}

__all__ = [
    "ChatTemplate",
    "ContrastConfig",
    "DemoPool",
    "FewShotTemplate",
    "GenerationOptions",
    "Pipeline",
    "PoolSelector",
    "__version__",
    "contrastive_decoding",
    "contrastive_search",
    "input_contrast",
    "layer_contrast",
    "load_embedder",
    "load_language_model",
    "select",
]

if TYPE_CHECKING:
    from counterpoint.decoding import (
        ContrastConfig,
        GenerationOptions,
        contrastive_decoding,
        contrastive_search,
        input_contrast,
        layer_contrast,
    )
    from counterpoint.models import load_embedder, load_language_model
    from counterpoint.prompting import (
        ChatTemplate,
        FewShotTemplate,
        Pipeline,
    )
    from counterpoint.selection import DemoPool, PoolSelector, select


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'counterpoint' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
