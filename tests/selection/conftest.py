"""Fixtures for the selection tests: random unit embeddings and an embedder that looks texts up."""

from __future__ import annotations

import numpy as np
import pytest

from counterpoint.selection import DemoPool


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    """``(n, d)`` float32 random unit vectors."""
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class LookupEmbedder:
    """A callable embedder: a fixed vector per known text (so tests control every similarity)."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])


def make_pool(n: int = 60, d: int = 16, seed: int = 0, n_queries: int = 9, labels: int = 0, **kwargs):
    """A pool of ``n`` random examples ``p{i}`` and query texts ``q{j}``, all embedded by lookup.

    Returns:
        ``(pool, query_texts, pool_matrix (n, d), query_matrix (Q, d))``.
    """
    mat = unit_rows(n + n_queries, d, seed)
    pool_mat, q_mat = mat[:n], mat[n:]
    texts = [f"p{i}" for i in range(n)]
    qtexts = [f"q{j}" for j in range(n_queries)]
    table = dict(zip(texts + qtexts, list(pool_mat) + list(q_mat), strict=True))
    records = [{"input": t, "output": f"o{i}", "id": i} for i, t in enumerate(texts)]
    if labels:
        for i, r in enumerate(records):
            r["label"] = f"L{i % labels}"
    pool = DemoPool.from_records(
        records,
        label_key="label" if labels else None,
        embedder=LookupEmbedder(table),
        **kwargs,
    )
    return pool, qtexts, pool_mat, q_mat


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The embedded SmolLM2-135M-Instruct's tokenizer (the model's weights are not loaded)."""
    from transformers import AutoTokenizer

    from counterpoint.models import resolve_language_model_path

    return AutoTokenizer.from_pretrained(resolve_language_model_path(None))
