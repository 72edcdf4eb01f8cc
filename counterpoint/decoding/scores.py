"""The contrast score shared by every expert-vs-amateur decoder (transformers and vLLM backends).

Plausible head (Li et al. 2022): ``V_head = {v : z_e(v) >= log(alpha) + max_w z_e(w)}`` on the
expert's log-probabilities; outside it the score is ``-inf``. ``alpha = 0`` makes every token plausible
(no mask: Li et al.'s reference code decodes greedily that way, and DoLa scores TruthfulQA's options that
way). Inside it, one of two forms:

* ``"difference"`` (Li et al. 2022): ``log p_e(v) - gamma * log p_a(v)``, the amateur at temperature
  ``tau`` (their code: ``tau = 0.5``);
* ``"beta"`` (O'Brien and Lewis 2023): ``(1 + beta) * z_e(v) - beta * z_a(v)``.

Both are computed on log-probabilities in fp32. For the beta form that differs from raw logits by a
per-row constant, which changes neither the argmax nor any softmax taken afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from counterpoint.decoding.spec import Option

__all__ = ["CONTRAST_OPTIONS", "ContrastConfig", "contrast_scores", "plausible_head"]

Form = Literal["difference", "beta"]


# The contrast options, declared once: every contrast strategy takes them, and ContrastConfig checks its
# fields with them (so the library and the command line word the same rule the same way).
CONTRAST_OPTIONS = (
    Option("form", "str", "score form: 'beta' (O'Brien and Lewis) or 'difference' (Li et al.)", default="beta",
           choices=("beta", "difference")),
    Option("alpha", "float", "plausibility threshold in [0, 1] (0: no mask)", default=0.1,
           check=lambda v: 0.0 <= v <= 1.0,
           valid="must be in [0, 1] (the plausibility threshold; 0 keeps every token, 1 the expert's argmax only)"),
    Option("beta", "float", "contrast weight, 'beta' form", default=0.5,
           check=lambda v: v >= 0.0, valid="must be >= 0 (0 gives the expert alone)"),
    Option("gamma", "float", "amateur weight, 'difference' form", default=1.0,
           check=lambda v: v >= 0.0, valid="must be >= 0"),
    Option("tau", "float", "amateur temperature", default=1.0,
           check=lambda v: v > 0.0, valid="must be > 0 (the amateur's temperature)"),
)  # fmt: skip


@dataclass(frozen=True)
class ContrastConfig:
    """How expert and amateur views are combined. Validated on creation (:data:`CONTRAST_OPTIONS`)."""

    form: Form = "beta"  # "difference" (Li et al.) or "beta" (O'Brien and Lewis)
    alpha: float = 0.1  # plausibility threshold, in [0, 1]; 0 keeps every token, 1 the expert's argmax only
    beta: float = 0.5  # beta form: weight of the contrast, >= 0; 0 gives the expert alone
    gamma: float = 1.0  # difference form: weight of the amateur's log-probability, >= 0
    tau: float = 1.0  # amateur temperature, > 0 (Li et al.'s code used 0.5)

    def __post_init__(self) -> None:
        for option in CONTRAST_OPTIONS:
            option.validate(getattr(self, option.name))

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> ContrastConfig:
        """The config from resolved option values (the keys of :data:`CONTRAST_OPTIONS`)."""
        return cls(**{o.name: values[o.name] for o in CONTRAST_OPTIONS if values.get(o.name) is not None})


def plausible_head(expert_logprobs: torch.Tensor, alpha: float) -> torch.Tensor:
    """Boolean mask of the expert's plausible head.

    Args:
        expert_logprobs: ``(B, V)`` log-probabilities (or logits: the set is shift invariant).
        alpha: threshold in [0, 1]; 0 puts every token in the head (no mask).

    Returns:
        ``(B, V)`` bool, True where ``z(v) >= log(alpha) + max_w z(w)``. The argmax is always in.
    """
    if alpha == 0:
        return torch.ones_like(expert_logprobs, dtype=torch.bool)
    cutoff = expert_logprobs.amax(dim=-1, keepdim=True) + math.log(alpha)
    return expert_logprobs >= cutoff


class ExpertStep:
    """One step's expert log-probabilities and plausible head, each computed once and only when asked for.

    A processor builds one per call and hands it to the amateur and to :func:`contrast_scores`, which would
    otherwise each take the expert's ``log_softmax`` and head again (three ``(N, V)`` passes apiece)."""

    def __init__(self, logits: torch.Tensor, alpha: float) -> None:
        self.logits = logits  # (N, V) as given
        self.alpha = alpha
        self._logprobs: torch.Tensor | None = None
        self._head: torch.Tensor | None = None

    @property
    def logprobs(self) -> torch.Tensor:
        """``(N, V)`` fp32 ``log_softmax`` of the logits."""
        if self._logprobs is None:
            self._logprobs = torch.log_softmax(self.logits.float(), dim=-1)
        return self._logprobs

    @property
    def head(self) -> torch.Tensor:
        """``(N, V)`` bool: :func:`plausible_head` of :attr:`logprobs` at ``alpha``."""
        if self._head is None:
            self._head = plausible_head(self.logprobs, self.alpha)
        return self._head

    def of(self, logits: torch.Tensor, alpha: float) -> bool:
        """Whether this step was built from ``logits`` (the same tensor) at ``alpha``."""
        return self.logits is logits and self.alpha == alpha


def contrast_scores(
    expert_logits: torch.Tensor,
    amateur_logits: torch.Tensor,
    config: ContrastConfig,
    step: ExpertStep | None = None,
) -> torch.Tensor:
    """Score every token by expert vs amateur, ``-inf`` outside the expert's plausible head.

    Args:
        expert_logits: ``(B, V)`` expert logits (any float dtype).
        amateur_logits: ``(B, V')`` amateur logits on the expert's device, ``V' >= V`` allowed when the
            amateur's lm_head is padded past the tokenizer: the extra columns are dropped.
            Columns the expert has and the amateur lacks are an error.

        config: the form and its weights.
        step: the expert's log-probabilities and head, when the caller has them already; it must have been
            built from ``expert_logits`` at ``config.alpha``.

    Returns:
        ``(B, V)`` fp32 scores, a new tensor.
    """
    vocab = expert_logits.shape[-1]
    if amateur_logits.shape[-1] < vocab:
        raise ValueError(
            f"amateur_logits has {amateur_logits.shape[-1]} columns but the expert has {vocab}: the amateur "
            "must cover the expert's vocabulary"
        )
    if amateur_logits.shape[:-1] != expert_logits.shape[:-1]:
        raise ValueError(
            f"amateur_logits shape {tuple(amateur_logits.shape)} does not match expert_logits "
            f"{tuple(expert_logits.shape)} outside the vocabulary dimension"
        )
    if step is None:
        step = ExpertStep(expert_logits, config.alpha)
    elif not step.of(expert_logits, config.alpha):
        raise ValueError("step was built from other expert logits or another alpha than this call's")
    z_e = step.logprobs
    z_a = torch.log_softmax(amateur_logits[..., :vocab].float().to(z_e.device) / config.tau, dim=-1)
    if config.form == "difference":
        scores = z_e - config.gamma * z_a
    else:
        scores = (1.0 + config.beta) * z_e - config.beta * z_a
    return scores.masked_fill_(~step.head, float("-inf"))
