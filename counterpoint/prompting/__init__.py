"""Few-shot prompt templates and select-prompt-generate pipelines.

Strategies by name and their options live in :mod:`counterpoint.decoding` (``STRATEGIES``,
``GenerationOptions``); they are re-exported here for convenience.
"""

from counterpoint._deprecated import moved
from counterpoint.decoding.backend import BACKEND_NAMES as BACKENDS
from counterpoint.decoding.registry import STRATEGIES, get_strategy
from counterpoint.decoding.spec import GenerationOptions
from counterpoint.prompting.pipeline import (
    Pipeline,
    PipelineResult,
    PreparedPrompt,
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
    "PreparedPrompt",
    "RenderedPrompt",
    "as_example",
    "count_tokens",
    "generate_texts",
    "get_strategy",
    "length_batches",
    "load_models",
]

# Moved to counterpoint.selection (beside the LangChain adapter); the old names work for one release.
__getattr__ = moved(
    "counterpoint.prompting",
    {"PoolSelector": "counterpoint.selection.selector", "Selector": "counterpoint.selection.selector"},
)
