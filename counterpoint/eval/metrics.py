"""Text-quality metrics used by the contrastive-decoding papers: rep-n, diversity, coherence, MAUVE.

Definitions (SimCTG, Su et al. 2022; contrastive decoding, Li et al. 2022):

* ``rep-n = 1 - |unique n-grams| / |total n-grams|``, pooled over a corpus: each text's unique and
  total n-gram counts are summed, then divided once (as SimCTG's ``measure_repetition_and_diversity``
  does). An n-gram repeated across two texts is not a repeat; one repeated inside a text is.
* ``diversity = prod_{n=2..4} (1 - rep-n)``: 1 for a corpus with no repeated 2-, 3- or 4-gram.
* coherence: mean cosine similarity between the embeddings of each prompt and its continuation.
* MAUVE (Pillutla et al. 2021) between human and model text, through the ``mauve-text`` package, on
  features from a sentence embedder (ours: all-MiniLM-L6-v2), not GPT-2 large as in the published
  numbers, so the scores are comparable between rows of one table, not with the papers' values.

Which n-grams count (``count=``):

* ``"simctg"`` (the default): those SimCTG's ``measure_repetition_and_diversity``
  (yxuansu/SimCTG, ``simctg/evaluation.py``) counts, whose loop ``while end_idx < len(tokens)`` never
  reaches a text's last n-gram: a text of L tokens gives ``max(L - n, 0)`` n-grams, so one of exactly
  n tokens gives none. The contrastive-decoding paper (Li et al. 2022) evaluates with the same function,
  so this is the count behind both papers' published rep-n and diversity. The pooled unique and total
  counts equal that function's, text by text (tested against a re-statement of its loop).
* ``"all"``: every one of the ``max(L - n + 1, 0)`` n-grams, the textbook definition.

The values are fractions, not rounded. SimCTG's function returns ``round(100 * rep-n, 2)`` and
computes diversity from those rounded values: ``round(100 * rep_n(texts, n), 2)`` gives its rep-n
exactly, and :func:`diversity` differs from its diversity by that rounding only (at most about 1.5e-4).

Tokenization for rep-n: by default whitespace-separated words (``str.split``), as SimCTG's script
(its ``text.strip().split()`` is the same split: runs of spaces, tabs and newlines are one separator,
leading and trailing whitespace gives no empty token, an empty or all-whitespace text has no token and
adds nothing to the counts), so that numbers do not depend on the model's tokenizer. Pass
``tokenize=`` (any ``str -> sequence`` callable, e.g. a tokenizer's ``encode``) for another, or pass
token sequences; n-grams are compared as tuples of tokens (SimCTG joins the words with a space, which
is the same comparison for whitespace-split words).

Example:
    >>> rep_n("a b a b a", 2)                 # SimCTG's 2-grams ab ba ab (the last, ba, is skipped)
    0.33333333333333337
    >>> rep_n("a b a b a", 2, count="all")    # all 2-grams ab ba ab ba: 2 unique of 4
    0.5
    >>> diversity("the cat sat on the mat")
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from counterpoint.errors import OptionError

__all__ = [
    "COUNTS",
    "DEFAULT_NS",
    "MauveResult",
    "coherence",
    "coherence_scores",
    "diversity",
    "embed",
    "mauve_score",
    "ngram_counts",
    "rep_n",
    "repetition",
]

DEFAULT_NS = (2, 3, 4)  # the n of rep-n that SimCTG and contrastive decoding report
# Which n-grams of a text count: SimCTG's evaluation script's (all but the last), or all of them.
COUNTS = ("simctg", "all")

Texts = str | Sequence[str | Sequence[Hashable]]


def _as_token_lists(texts: Texts, tokenize: Callable[[str], Sequence[Hashable]]) -> list[Sequence[Hashable]]:
    """One string is one text; otherwise each item is a text (tokenized) or an already tokenized sequence."""
    if isinstance(texts, str):
        return [tokenize(texts)]
    out = []
    for i, item in enumerate(texts):
        if isinstance(item, str):
            out.append(tokenize(item))
        elif isinstance(item, Sequence) or hasattr(item, "tolist"):
            out.append(item.tolist() if hasattr(item, "tolist") else item)
        else:
            raise TypeError(
                f"texts[{i}] is a {type(item).__name__}; each item must be a string or a sequence of tokens"
            )
    if not out:
        raise ValueError("texts is empty; pass at least one text")
    return out


def _check_count(count: str) -> None:
    if count not in COUNTS:
        raise OptionError(
            "count",
            count,
            "is not a way to count n-grams; use 'simctg' (SimCTG's script: each text's last n-gram is "
            "not counted) or 'all' (every n-gram)",
        )


def ngram_counts(tokens: Sequence[Hashable], n: int, *, count: str = "simctg") -> tuple[int, int]:
    """Return ``(unique, total)`` n-gram counts of one token sequence.

    Args:
        tokens: one text's tokens.
        n: n-gram length, >= 1.
        count: ``"simctg"`` counts the n-grams starting at positions ``0 .. len - n - 1``, as SimCTG's
            ``eval_text`` (a text of n tokens or fewer has none); ``"all"`` counts all ``len - n + 1``.

    Example:
        >>> ngram_counts("a b a b a".split(), 2)                 # ab ba ab
        (2, 3)
        >>> ngram_counts("a b a b a".split(), 2, count="all")    # ab ba ab ba
        (2, 4)
    """
    if not (isinstance(n, int) and n >= 1):
        raise OptionError("n", n, "must be a positive integer")
    _check_count(count)
    stop = len(tokens) - n + (1 if count == "all" else 0)  # n-grams start at 0 .. stop - 1
    grams = [tuple(tokens[i : i + n]) for i in range(stop)]
    return len(set(grams)), len(grams)


def rep_n(
    texts: Texts,
    n: int,
    *,
    tokenize: Callable[[str], Sequence[Hashable]] = str.split,
    count: str = "simctg",
) -> float:
    """Share of duplicate n-grams, ``1 - unique / total``, pooled over the texts.

    Args:
        texts: one string, or a list of strings and/or token sequences (lists of ids or words).
        n: n-gram length, >= 1.
        tokenize: how a string becomes tokens (default: whitespace words, as SimCTG).
        count: which n-grams of each text count: ``"simctg"`` (default; all but the last, as SimCTG's
            script, which the published numbers use) or ``"all"``. See the module docstring.

    Returns:
        rep-n in [0, 1) as a fraction, unrounded (the papers print it times 100, to 2 decimals).

    Raises:
        OptionError: for a bad ``n`` or ``count``.
        ValueError: when the texts hold no n-gram at all (SimCTG's function divides by zero there).
    """
    _check_count(count)
    unique = total = 0
    for tokens in _as_token_lists(texts, tokenize):
        u, t = ngram_counts(tokens, n, count=count)
        unique, total = unique + u, total + t
    if total == 0:
        need = f"more than {n}" if count == "simctg" else f"{n} or more"
        raise ValueError(
            f"rep-{n} is undefined: no text has {need} tokens, so there is no {n}-gram to count "
            f"(count={count!r})"
        )
    return 1.0 - unique / total


def repetition(
    texts: Texts,
    ns: Sequence[int] = DEFAULT_NS,
    *,
    tokenize: Callable[[str], Sequence[Hashable]] = str.split,
    count: str = "simctg",
) -> dict[int, float]:
    """rep-n for each n in ``ns`` (tokenizing once): ``{2: rep-2, 3: rep-3, 4: rep-4}`` by default."""
    token_lists = _as_token_lists(texts, tokenize)
    return {n: rep_n(token_lists, n, count=count) for n in ns}


def diversity(
    texts: Texts,
    ns: Sequence[int] = DEFAULT_NS,
    *,
    tokenize: Callable[[str], Sequence[Hashable]] = str.split,
    count: str = "simctg",
) -> float:
    """``prod_n (1 - rep-n)`` over ``ns`` (default n = 2, 3, 4); 1.0 when no n-gram repeats.

    With the defaults this is SimCTG's diversity before rounding: SimCTG multiplies its rep-n values
    after rounding them to 2 decimals in percent, which moves the result by at most about 1.5e-4.
    """
    return float(np.prod([1.0 - r for r in repetition(texts, ns, tokenize=tokenize, count=count).values()]))


def embed(embedder: Any, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """Embed texts with a SentenceTransformer (anything with ``encode``) or a ``list[str] -> (N, D)`` callable.

    ``None`` loads the default embedder (all-MiniLM-L6-v2). Returns a float32 ``(N, D)`` array.
    """
    if embedder is None:
        from counterpoint.models import load_embedder

        embedder = load_embedder()
    texts = list(texts)
    if hasattr(embedder, "encode"):
        vectors = embedder.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
    elif callable(embedder):
        vectors = embedder(texts)
    else:
        raise TypeError(
            f"embedder={embedder!r} has no encode() and is not callable; pass a SentenceTransformer, "
            "a list[str] -> (N, D) callable, or None for the default"
        )
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(
            f"the embedder returned shape {vectors.shape} for {len(texts)} texts; expected (N, D)"
        )
    return vectors


def coherence_scores(
    prompts: Sequence[str], continuations: Sequence[str], *, embedder: Any = None, batch_size: int = 32
) -> np.ndarray:
    """Cosine similarity between each prompt's embedding and its continuation's, shape ``(N,)``.

    Args:
        prompts: N prompt strings.
        continuations: N continuation strings (the generated part only).
        embedder: SentenceTransformer, ``list[str] -> (N, D)`` callable, or ``None`` for all-MiniLM-L6-v2.
    """
    if len(prompts) != len(continuations):
        raise ValueError(
            f"prompts has {len(prompts)} items but continuations has {len(continuations)}; pass one "
            "continuation per prompt"
        )
    if len(prompts) == 0:
        raise ValueError("prompts is empty; pass at least one prompt and continuation")
    a = embed(embedder, prompts, batch_size=batch_size)
    b = embed(embedder, continuations, batch_size=batch_size)
    # A zero vector (possible from a custom embedder) has no direction: its cosine counts as 0.
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("nd,nd->n", a, b)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def coherence(
    prompts: Sequence[str], continuations: Sequence[str], *, embedder: Any = None, batch_size: int = 32
) -> float:
    """Mean of :func:`coherence_scores`: the contrastive-decoding paper's coherence, with our embedder."""
    return float(coherence_scores(prompts, continuations, embedder=embedder, batch_size=batch_size).mean())


@dataclass(frozen=True)
class MauveResult:
    """MAUVE between human (p) and model (q) text, with the features it was computed on."""

    mauve: float  # in (0, 1]; higher means model text is closer to human text
    num_buckets: int  # k-means clusters used to quantize the features (mauve-text: n / 10 by default)
    features: str  # which features were clustered, e.g. "all-MiniLM-L6-v2 embeddings (384-d)"
    n_human: int
    n_model: int


def _embedder_name(embedder: Any) -> str:
    if embedder is None:
        return "all-MiniLM-L6-v2"
    card = getattr(getattr(embedder, "model_card_data", None), "base_model", None)
    return str(card or type(embedder).__name__)


def mauve_score(
    human_texts: Sequence[str],
    model_texts: Sequence[str],
    *,
    embedder: Any = None,
    num_buckets: int | str = "auto",
    mauve_scaling_factor: float = 5.0,
    seed: int = 25,
    batch_size: int = 32,
) -> MauveResult:
    """MAUVE between human and model text, on sentence-embedder features (not GPT-2 large).

    Needs the ``eval`` extra (``pip install counterpoint[eval]``: mauve-text, scikit-learn).

    Args:
        human_texts: N human continuations (p).
        model_texts: M model continuations (q); MAUVE needs a few dozen of each to mean much.
        embedder: SentenceTransformer or ``list[str] -> (N, D)`` callable; ``None``: all-MiniLM-L6-v2.
        num_buckets: k-means clusters; ``"auto"`` is mauve-text's ``max(2, round(min(N, M) / 10))``.
        mauve_scaling_factor: the constant c of the paper (mauve-text's default 5).
        seed: k-means seed (mauve-text's default 25), so that reruns give the same score.
    """
    try:
        import mauve
    except ImportError as err:
        raise ImportError(
            "MAUVE needs the mauve-text package: pip install 'counterpoint[eval]' (or pip install mauve-text)"
        ) from err
    if len(human_texts) < 2 or len(model_texts) < 2:
        raise ValueError(
            f"MAUVE needs at least 2 texts on each side; got {len(human_texts)} human and "
            f"{len(model_texts)} model texts"
        )
    p = embed(embedder, human_texts, batch_size=batch_size)
    q = embed(embedder, model_texts, batch_size=batch_size)
    out = mauve.compute_mauve(
        p_features=p,
        q_features=q,
        num_buckets=num_buckets,
        mauve_scaling_factor=mauve_scaling_factor,
        seed=seed,
        verbose=False,
    )
    return MauveResult(
        mauve=float(out.mauve),
        num_buckets=int(out.num_buckets),
        features=f"{_embedder_name(embedder)} sentence embeddings ({p.shape[1]}-d)",
        n_human=len(human_texts),
        n_model=len(model_texts),
    )
