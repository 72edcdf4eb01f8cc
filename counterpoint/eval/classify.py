"""Few-shot classification accuracy: verbalizer scoring and exact match of a generated label.

Two ways to read a label off a causal LM, both batched with left padding:

* :func:`verbalizer_scores` / :func:`verbalizer_predict`: for each prompt and each label's verbalizer
  (e.g. ``" positive"``), the summed log-probability of the verbalizer's tokens given the prompt; the
  prediction is the label with the highest score. Scored by the project's one continuation scorer
  (:func:`counterpoint.decoding.scoring.score_continuations`): the prompt is run once; when a verbalizer
  has more than one token, its remaining tokens are scored on a copy of the prompt's KV cache, one row
  per label.
* :func:`generate_labels` and :func:`exact_match`: greedy-generate a few tokens and compare the first
  line, normalized, to the gold label string.

Tokenization: the prompt and each verbalizer are tokenized separately (the verbalizer without special
tokens) and concatenated, so put the separating space in the verbalizer (``" positive"``), not at the
end of the prompt.

Example:
    >>> model, tok = load_language_model()
    >>> verbalizer_predict(model, tok, ["Review: great fun.\\nSentiment:"], [" negative", " positive"])
    [1]
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "accuracy",
    "continuation_logprobs",
    "exact_match",
    "generate_labels",
    "normalize_label",
    "verbalizer_predict",
    "verbalizer_scores",
]


def _check_batch_size(batch_size: int) -> None:
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")


def continuation_logprobs(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    continuation_ids: Sequence[Sequence[int]],
    *,
    pad_token_id: int = 0,
    batch_size: int = 8,
) -> torch.Tensor:
    """Summed log-probability of every continuation after every prompt.

    Computed by :func:`counterpoint.decoding.scoring.score_continuations` (plain decoding) on every
    (prompt, continuation) pair; each prompt runs once for all its continuations.

    Args:
        model: a causal LM (``model(input_ids, attention_mask, position_ids, past_key_values,
            use_cache)`` returning ``.logits`` and ``.past_key_values``).
        prompt_ids: N prompts as token-id lists (each non-empty).
        continuation_ids: L continuations as token-id lists (each non-empty).
        pad_token_id: id used for padding; padded positions are masked, so any id works.
        batch_size: prompts per forward pass.

    Returns:
        ``(N, L)`` fp32 tensor on CPU: ``log p(c_1..c_m | prompt) = sum_j log p(c_j | prompt, c_<j)``.
    """
    from counterpoint.decoding.scoring import score_continuations

    _check_batch_size(batch_size)
    if len(continuation_ids) == 0:
        raise ValueError("continuation_ids is empty; pass at least one continuation (one per label)")
    for name, rows in (("prompt_ids", prompt_ids), ("continuation_ids", continuation_ids)):
        for i, r in enumerate(rows):
            if len(r) == 0:
                raise ValueError(
                    f"{name}[{i}] is empty; every prompt and continuation needs at least one token"
                )
    n_labels = len(continuation_ids)
    pairs_prompts = [list(p) for p in prompt_ids for _ in range(n_labels)]  # prompt i, label j at i * L + j
    pairs_conts = [list(c) for _ in prompt_ids for c in continuation_ids]
    scores = score_continuations(
        model, pairs_prompts, pairs_conts, None, batch_size=batch_size * n_labels, pad_token_id=pad_token_id
    )
    return scores.view(len(prompt_ids), n_labels)


def _tokenize_verbalizers(tokenizer: Any, verbalizers: Sequence[str]) -> list[list[int]]:
    if isinstance(verbalizers, str) or len(verbalizers) < 2:
        raise ValueError(f"verbalizers={verbalizers!r} must be a list of at least two label strings")
    ids = [tokenizer(v, add_special_tokens=False)["input_ids"] for v in verbalizers]
    for v, i in zip(verbalizers, ids, strict=True):
        if not i:
            raise ValueError(f"verbalizer {v!r} tokenizes to no tokens; use a non-empty label string")
    return ids


def verbalizer_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    verbalizers: Sequence[str],
    *,
    batch_size: int = 8,
) -> torch.Tensor:
    """``(N, L)`` summed log-probability of each verbalizer (L labels) after each prompt (N prompts)."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    _check_batch_size(batch_size)
    cont = _tokenize_verbalizers(tokenizer, verbalizers)
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return continuation_logprobs(model, prompt_ids, cont, pad_token_id=pad, batch_size=batch_size)


def verbalizer_predict(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    verbalizers: Sequence[str],
    *,
    batch_size: int = 8,
) -> list[int]:
    """Index of the highest-scoring verbalizer for each prompt (ties go to the lower index)."""
    return (
        verbalizer_scores(model, tokenizer, prompts, verbalizers, batch_size=batch_size).argmax(-1).tolist()
    )


def accuracy(predictions: Sequence[Any], gold: Sequence[Any]) -> float:
    """Share of positions where ``predictions[i] == gold[i]``."""
    if len(predictions) != len(gold):
        raise ValueError(f"predictions has {len(predictions)} items but gold has {len(gold)}")
    if not gold:
        raise ValueError("gold is empty; accuracy of nothing is undefined")
    return sum(p == g for p, g in zip(predictions, gold, strict=True)) / len(gold)


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_label(text: str) -> str:
    """First non-empty line, lower-cased, punctuation removed, whitespace collapsed."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    return " ".join(_PUNCT.sub(" ", line.lower()).split())


@torch.no_grad()
def generate_labels(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 4,
    batch_size: int = 8,
) -> list[str]:
    """Greedy-generate up to ``max_new_tokens`` after each prompt; returns the decoded new text."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    _check_batch_size(batch_size)
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
    from counterpoint.decoding.backend import run_batches
    from counterpoint.decoding.transformers_backend import TransformersBackend

    backend = TransformersBackend(model, tokenizer, "greedy")
    texts: list[str] = [""] * len(prompts)
    for i, out in run_batches(
        backend, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size, seed=None
    ):
        texts[i] = out.text
    return texts


def exact_match(generated: Sequence[str], gold_labels: Sequence[str]) -> float:
    """Share of generations whose :func:`normalize_label` equals the gold label's."""
    return accuracy([normalize_label(g) for g in generated], [normalize_label(g) for g in gold_labels])
