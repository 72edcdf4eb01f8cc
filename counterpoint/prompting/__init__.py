"""Few-shot prompt templates, decoding strategies by name, and select-prompt-generate pipelines."""

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
from counterpoint.prompting.strategies import (
    BACKENDS,
    STRATEGIES,
    GenerationOptions,
    Strategy,
    StrategyUnavailableError,
    check_backend,
    check_options,
    generate_kwargs,
    get_strategy,
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
    "Strategy",
    "StrategyUnavailableError",
    "as_example",
    "check_backend",
    "check_options",
    "count_tokens",
    "generate_kwargs",
    "generate_texts",
    "get_strategy",
    "length_batches",
    "load_models",
]
