"""Few-shot prompt templates and select-prompt-generate pipelines.

Strategies by name and their options live in :mod:`counterpoint.decoding` (``STRATEGIES``,
``GenerationOptions``); they are re-exported here for convenience.
"""

from counterpoint.decoding.backend import BACKEND_NAMES as BACKENDS
from counterpoint.decoding.registry import STRATEGIES, get_strategy
from counterpoint.decoding.spec import GenerationOptions
from counterpoint.prompting.pipeline import (
    Pipeline,
    PipelineResult,
    PoolSelector,
    PreparedPrompt,
    Selector,
    generate_texts,
    length_batches,
    load_models,
)
from counterpoint.prompting.template import (
    AMATEUR_VARIANTS,
    ChatTemplate,
    FewShotTemplate,
    RenderedPrompt,
    as_example,
    count_tokens,
)

__all__ = [
    "AMATEUR_VARIANTS",
    "BACKENDS",
    "STRATEGIES",
    "ChatTemplate",
    "FewShotTemplate",
    "GenerationOptions",
    "Pipeline",
    "PipelineResult",
    "PoolSelector",
    "PreparedPrompt",
    "RenderedPrompt",
    "Selector",
    "as_example",
    "count_tokens",
    "generate_texts",
    "get_strategy",
    "length_batches",
    "load_models",
]
