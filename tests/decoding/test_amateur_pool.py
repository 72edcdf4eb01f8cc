"""AmateurPool against a full recompute: joins, growth, reorders, rollbacks and drops, in fp32."""

import pytest
import torch

from counterpoint.decoding.vllm.pool import AmateurPool
from tests.tiny_models import MIXED_PROMPTS, tiny_gpt2, tiny_llama


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


# -- the batched decode step --------------------------------------------------------------------
class Forwards:
    """Records the ``input_ids`` shape of every forward of one model."""

    def __init__(self, model):
        self.shapes = []
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        self.shapes.append(tuple(ids.shape))

    def take(self):
        shapes, self.shapes = self.shapes, []
        return shapes


def pool_and_oracle(make, seed, **kwargs):
    """A pool over one model, its forward recorder, and an identical model for the reference."""
    model = make(seed=seed)
    return AmateurPool(model, **kwargs), Forwards(model), make(seed=seed)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])  # rotary and learned positions
def test_steady_decoding_is_one_batched_forward_per_step(make):
    pool, calls, oracle = pool_and_oracle(make, seed=6)
    assert pool.batch_decode
    seqs = {key: list(p) for key, p in zip("abc", MIXED_PROMPTS, strict=True)}  # lengths 7, 2, 4
    check(pool, oracle, list(seqs.items()))
    assert calls.take() == [(1, 7), (1, 2), (1, 4)]  # prefill: one forward per joining request
    for step in range(6):
        for i, key in enumerate(seqs):
            seqs[key] = seqs[key] + [(13 * step + 7 * i) % 90 + 2]
        check(pool, oracle, list(seqs.items()))
        assert calls.take() == [(3, 1)]  # every request one new token: ONE forward for all three


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_batched_rows_join_leave_diverge_and_move_like_a_full_recompute(make):
    pool, calls, oracle = pool_and_oracle(make, seed=7)
    a, b, c = (list(p) for p in MIXED_PROMPTS)
    d = [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40]  # longer than the others: the batch widens

    def step(rows, want_calls):
        check(pool, oracle, rows)
        assert calls.take() == want_calls

    step([("a", a), ("b", b)], [(1, 7), (1, 2)])
    a, b = a + [3], b + [4]
    step([("a", a), ("b", b)], [(2, 1)])  # the batch is built
    a, b = a + [5], b + [6]
    step([("b", b), ("c", c), ("a", a)], [(2, 1), (1, 4)])  # c joins beside the batch (prefill)
    a, b, c = a + [7], b + [8], c + [9]
    step([("a", a), ("b", b), ("c", c)], [(3, 1)])  # c enters the batch
    a, b, c = a + [10], b[:3] + [50], c + [11]  # b rolled back and diverged mid-batch
    step([("a", a), ("b", b), ("c", c)], [(2, 1), (1, 1)])  # a, c batched; b cropped to 3, refed
    a, b, c = a + [12], b + [13], c + [14]
    step([("c", c), ("a", a), ("b", b)], [(3, 1)])
    pool.drop("a")  # a finishes; d joins
    b, c = b + [15], c + [16]
    step([("b", b), ("c", c), ("d", d)], [(2, 1), (1, 11)])
    pool.swap("b", "c")  # rows follow their tokens, not their keys
    b, c, d = b + [17], c + [18], d + [19]
    step([("b", c), ("c", b), ("d", d)], [(3, 1)])
    b, c, d = b + [20], c + [21, 22], d + [23]  # c (now under key "b") grows by two at once
    step([("b", c), ("c", b), ("d", d)], [(2, 1), (1, 2)])
    d = d + [24]
    step([("d", d)], [(1, 1)])  # a lone request decodes on its own
    b, d = b + [25], d + [26]
    step([("c", b), ("d", d)], [(2, 1)])
    step([("c", b), ("d", d)], [])  # asked again unchanged: the logits it has, no forward
    assert set(pool._seqs) == {"b", "c", "d"}


def test_unbatched_pool_is_one_forward_per_request_and_agrees():
    pool, calls, oracle = pool_and_oracle(tiny_llama, seed=8, batch_decode=False)
    batched = AmateurPool(tiny_llama(seed=8))
    seqs = [list(p) for p in MIXED_PROMPTS]
    for step in range(3):
        rows = [(i, s) for i, s in enumerate(seqs)]
        check(pool, oracle, rows)
        torch.testing.assert_close(batched.logits(rows), pool.logits(rows), rtol=1e-5, atol=1e-5)
        assert calls.take() == ([(1, 7), (1, 2), (1, 4)] if step == 0 else [(1, 1)] * 3)
        seqs = [s + [step + 2] for s in seqs]


def test_idle_eviction_of_a_batch_member_rebuilds_the_batch():
    pool, calls, oracle = pool_and_oracle(tiny_llama, seed=9, max_idle_steps=1)
    a, b, c = (list(p) for p in MIXED_PROMPTS)
    check(pool, oracle, [("a", a), ("b", b), ("c", c)])
    a, b, c = a + [2], b + [3], c + [4]
    check(pool, oracle, [("a", a), ("b", b), ("c", c)])
    a, b = a + [5], b + [6]
    calls.take()
    check(pool, oracle, [("a", a), ("b", b)])  # c not asked: evicted at once
    assert "c" not in pool and calls.take() == [(2, 1)]
    check(pool, oracle, [("a", a + [7]), ("c", c + [8])])  # c comes back: recomputed from its tokens
    assert calls.take() == [(1, 1), (1, 6)]


def test_sliding_window_models_decode_per_request():
    from transformers import MistralConfig, MistralForCausalLM

    def make(seed):
        torch.manual_seed(seed)
        config = MistralConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=4,
            max_position_embeddings=256,
        )
        return MistralForCausalLM(config).eval()

    pool, calls, oracle = pool_and_oracle(make, seed=10)
    assert not pool.batch_decode  # a sliding-window cache cannot be left-padded and stacked
    seqs = [list(p) for p in MIXED_PROMPTS]
    check(pool, oracle, list(enumerate(seqs)))
    calls.take()
    seqs = [s + [5] for s in seqs]
    check(pool, oracle, list(enumerate(seqs)))
    assert calls.take() == [(1, 1)] * 3


# -- device tokens told by length (vLLM's Model Runner V2) ------------------------------------------------


class Stepper:
    """Drives ``pool.step`` from token lists: lengths and last tokens as the engine gives them, the whole
    lists only through ``history`` (recorded, so a test can tell which rows were read back)."""

    def __init__(self, pool, oracle):
        self.pool, self.oracle, self.asked = pool, oracle, []

    def __call__(self, rows):
        keys = [k for k, _ in rows]
        fed = torch.tensor([t[-1] for _, t in rows])

        def history(idx):
            self.asked.append([keys[i] for i in idx])
            return [rows[i][1] for i in idx]

        got = self.pool.step(keys, [len(t) for _, t in rows], fed, history)
        want = torch.stack([full_logits(self.oracle, t) for _, t in rows])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    def take(self):
        asked, self.asked = self.asked, []
        return asked


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_device_tokens_join_leave_diverge_and_move_like_a_full_recompute(make):
    pool, calls, oracle = pool_and_oracle(make, seed=7)
    step = Stepper(pool, oracle)
    a, b, c = (list(p) for p in MIXED_PROMPTS)
    d = [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40]

    def run(rows, want_calls, want_asked):
        step(rows)
        assert calls.take() == want_calls
        assert step.take() == want_asked

    run([("a", a), ("b", b)], [(1, 7), (1, 2)], [["a", "b"]])  # joins: read back once, both rows
    a, b = a + [3], b + [4]
    run([("a", a), ("b", b)], [(2, 1)], [])  # steady: the batch, fed on the device, nothing read
    a, b = a + [5], b + [6]
    run([("b", b), ("c", c), ("a", a)], [(2, 1), (1, 4)], [["c"]])
    a, b, c = a + [7], b + [8], c + [9]
    run([("a", a), ("b", b), ("c", c)], [(3, 1)], [])  # c enters the batch (the batch reads back its tokens)
    a, b, c = a + [10], b[:3] + [50], c + [11]  # b rolled back, shorter than cached: read back
    run([("a", a), ("b", b), ("c", c)], [(2, 1), (1, 1)], [["b"]])
    a, b, c = a + [12], b + [13], c + [14]
    run([("c", c), ("a", a), ("b", b)], [(3, 1)], [])
    pool.drop("a")
    b, c = b + [15], c + [16]
    run([("b", b), ("c", c), ("d", d)], [(2, 1), (1, 11)], [["d"]])
    pool.swap("b", "c")
    b, c, d = b + [17], c + [18], d + [19]
    run([("b", c), ("c", b), ("d", d)], [(3, 1)], [])
    b, c, d = b + [20], c + [21, 22], d + [23]  # grown by two: read back
    run([("b", c), ("c", b), ("d", d)], [(2, 1), (1, 2)], [["b"]])
    d = d + [24]
    run([("d", d)], [(1, 1)], [])  # alone, still fed on the device
    d = d + [25]
    run([("d", d)], [(1, 1)], [])
    check(pool, oracle, [("c", b + [26]), ("d", d + [27])])  # token lists again: what step() fed is read back
    assert pool._seqs["d"].tokens == d + [27] and not pool._seqs["d"].pending


def test_device_tokens_on_an_unbatched_pool_and_a_sliding_window_model():
    pool, calls, oracle = pool_and_oracle(tiny_llama, seed=8, batch_decode=False)
    step = Stepper(pool, oracle)
    seqs = [list(p) for p in MIXED_PROMPTS]
    for n in range(4):
        step(list(enumerate(seqs)))
        assert step.take() == ([[0, 1, 2]] if n == 0 else [])
        assert calls.take() == ([(1, 7), (1, 2), (1, 4)] if n == 0 else [(1, 1)] * 3)
        seqs = [s + [n + 2] for s in seqs]
    seqs[1] = seqs[1][:2] + [60]  # a rollback to a shorter length: read back, cropped, refed
    step(list(enumerate(seqs)))
    assert step.take() == [[1]]


def test_step_rejects_bad_input():
    pool = AmateurPool(tiny_llama())
    fed = torch.tensor([3, 4])
    with pytest.raises(ValueError, match=r"AmateurPool.step got a key twice in one call"):
        pool.step(["a", "a"], [2, 2], fed, lambda idx: [])
    with pytest.raises(ValueError, match=r"AmateurPool.step got 2 keys, 1 lengths, 2 tokens"):
        pool.step(["a", "b"], [2], fed, lambda idx: [])
    with pytest.raises(ValueError, match=r"request 'b' has no tokens"):
        pool.step(["a", "b"], [2, 0], fed, lambda idx: [])
