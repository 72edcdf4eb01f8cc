"""The default embedder end to end (slow: runs all-MiniLM-L6-v2)."""

from __future__ import annotations

import numpy as np
import pytest

from counterpoint.selection import DemoPool, Embedder, select

pytestmark = pytest.mark.slow

RECORDS = [
    {"input": "How do I bake sourdough bread?", "output": "cooking"},
    {"input": "What is the capital of France?", "output": "geography"},
    {"input": "Tips for kneading dough by hand", "output": "cooking"},
    {"input": "Which river flows through Cairo?", "output": "geography"},
    {"input": "How long should pasta boil?", "output": "cooking"},
]


def test_minilm_pool_selects_paraphrases(minilm):
    pool = DemoPool.from_records(RECORDS, label_key="output", embedder=minilm)
    assert pool.dim == 384
    np.testing.assert_allclose(np.linalg.norm(pool.embeddings.numpy(), axis=1), 1.0, rtol=1e-5)
    got = select(pool, ["What is the capital city of Egypt?"], k=2, order="most_similar_first")[0]
    assert {d["example"]["output"] for d in got} == {"geography"}
    # Encoding matches sentence-transformers' own normalised encode(); a string gives a vector.
    want = minilm.encode([r["input"] for r in RECORDS], normalize_embeddings=True)
    np.testing.assert_allclose(pool.embeddings.numpy(), want, atol=1e-5)
    assert Embedder(minilm).encode("one sentence").shape == (384,)
