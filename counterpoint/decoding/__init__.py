"""Contrastive decoding: contrastive search and the expert-vs-amateur family, strategies and backends.

One file per method (``contrastive_search``, ``contrastive_decoding``, ``layer_contrast``,
``input_contrast``; transformers' own searches in ``standard``), each holding its processor, its
``generate(custom_generate=...)`` strategy and its :class:`StrategySpec`; the shared engine in ``engine``
and ``scores``; teacher-forced scoring of given continuations under any of these distributions in
``scoring``; the registry of strategies in ``registry``; backends in ``backend``,
``transformers_backend`` and the ``vllm`` subpackage. See ``docs/architecture.md``.
"""

from counterpoint.batching import left_pad
from counterpoint.decoding.backend import BACKEND_NAMES, Backend, Batch, Generated, get_backend, run_batches
from counterpoint.decoding.contrastive_decoding import (
    CD_PRESETS,
    ModelContrast,
    Preset,
    contrastive_decoding,
    truncated_amateur,
)
from counterpoint.decoding.contrastive_search import contrastive_search
from counterpoint.decoding.engine import (
    AlteredPrompt,
    AmateurCache,
    CachedAmateurContrast,
    ContrastLogitsProcessor,
    FullPrompt,
    LastToken,
)
from counterpoint.decoding.input_contrast import (
    AMATEUR_VARIANTS,
    INSTRUCTIVE_DECODING,
    OPPOSITE_INSTRUCTION,
    InputContrast,
    input_contrast,
    noisy_instruction,
    perturb_token_ids,
    without_spans,
)
from counterpoint.decoding.layer_contrast import LayerContrast, layer_contrast
from counterpoint.decoding.registry import STRATEGIES, get_strategy
from counterpoint.decoding.scores import ContrastConfig, contrast_scores, plausible_head
from counterpoint.decoding.scoring import (
    DOLA_MC,
    AlteredInput,
    EarlierLayers,
    Scorer,
    SecondModel,
    score_continuations,
)
from counterpoint.decoding.spec import GenerationOptions, Option, StrategySpec

__all__ = [
    "AMATEUR_VARIANTS",
    "BACKEND_NAMES",
    "CD_PRESETS",
    "DOLA_MC",
    "INSTRUCTIVE_DECODING",
    "OPPOSITE_INSTRUCTION",
    "STRATEGIES",
    "AlteredInput",
    "AlteredPrompt",
    "AmateurCache",
    "Backend",
    "Batch",
    "CachedAmateurContrast",
    "ContrastConfig",
    "ContrastLogitsProcessor",
    "EarlierLayers",
    "FullPrompt",
    "Generated",
    "GenerationOptions",
    "InputContrast",
    "LastToken",
    "LayerContrast",
    "ModelContrast",
    "Option",
    "Preset",
    "Scorer",
    "SecondModel",
    "StrategySpec",
    "contrast_scores",
    "contrastive_decoding",
    "contrastive_search",
    "get_backend",
    "get_strategy",
    "input_contrast",
    "layer_contrast",
    "left_pad",
    "noisy_instruction",
    "perturb_token_ids",
    "plausible_head",
    "run_batches",
    "score_continuations",
    "truncated_amateur",
    "without_spans",
]
