"""AmateurPool against a full recompute: joins, growth, reorders, rollbacks and drops, in fp32."""

import pytest
import torch

from counterpoint.decoding.amateur_pool import AmateurPool
from tests.tiny_models import MIXED_PROMPTS, tiny_llama


def full_logits(model, tokens):
    """The naive reference: the whole sequence from scratch, no cache."""
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0, -1]


def check(pool, model, rows):
    got = pool.logits(rows)
    want = torch.stack([full_logits(model, t) for _, t in rows])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_requests_join_grow_and_move_like_a_full_recompute():
    model = tiny_llama(seed=3)
    pool = AmateurPool(model)
    a, b, c = (list(p) for p in MIXED_PROMPTS)
    check(pool, model, [("a", a), ("b", b)])
    a, b = a + [7], b + [11]
    check(pool, model, [("b", b), ("a", a)])  # rows reordered: state follows the key
    c = c + [2, 4]
    check(pool, model, [("a", a + [9]), ("c", c)])  # c joins late; b skips a step
    a = a + [9]
    pool.move("a", "slot0")
    check(pool, model, [("slot0", a + [5]), ("b", b + [6, 6])])  # b grew by two tokens at once
    assert set(pool._seqs) == {"slot0", "b", "c"}


def test_unchanged_tokens_reuse_logits_and_divergent_tokens_recompute():
    model = tiny_llama(seed=4)
    pool = AmateurPool(model)
    seq = list(MIXED_PROMPTS[0])
    check(pool, model, [("x", seq)])
    first = pool.logits([("x", seq)])
    check(pool, model, [("x", seq)])  # asked twice (chunked prefill): same answer
    torch.testing.assert_close(pool.logits([("x", seq)]), first)
    check(pool, model, [("x", seq[:3])])  # rolled back (preempted and resumed shorter)
    check(pool, model, [("x", seq[:3] + [50, 51])])  # then diverges from what was cached
    check(pool, model, [("x", [60])])  # a one-token sequence from scratch


def test_swap_drop_and_idle_eviction():
    model = tiny_llama(seed=5)
    pool = AmateurPool(model, max_idle_steps=2)
    a, b = list(MIXED_PROMPTS[0]), list(MIXED_PROMPTS[1])
    check(pool, model, [(0, a), (1, b)])
    pool.swap(0, 1)
    check(pool, model, [(0, b + [3]), (1, a + [4])])
    pool.drop(0)
    assert 0 not in pool
    check(pool, model, [(1, a + [4, 8])])
    check(pool, model, [(2, [9, 9])])
    assert 1 in pool
    check(pool, model, [(2, [9, 9, 1])])
    assert 1 not in pool and len(pool) == 1  # idle for two calls: freed


def test_bad_input_is_rejected():
    pool = AmateurPool(tiny_llama())
    with pytest.raises(ValueError, match=r"max_idle_steps=0 must be >= 1"):
        AmateurPool(tiny_llama(), max_idle_steps=0)
    with pytest.raises(ValueError, match=r"got a key twice in one call"):
        pool.logits([("a", [1, 2]), ("a", [1, 2])])
    with pytest.raises(ValueError, match=r"request 'a' has no tokens"):
        pool.logits([("a", [])])
    assert pool.logits([]).shape == (0, 97)
