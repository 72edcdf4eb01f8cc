"""Input contrast in one shared forward: the real and the altered rows as one 2N-row forward on one cache.

Oracles: the naive full recompute (tests/decoding/contrast_reference.py) and the two-forward path
(``shared_forward=False``: the altered rows in their own forward with their own cache), token for token,
with altered prompts longer and shorter than the real ones in the same batch, at batch 1 and 8, under
greedy, sampling and beam search.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor
from transformers.generation.streamers import BaseStreamer  # noqa: TID251 (a test's streamer)

from counterpoint._hf import output_cache
from counterpoint.decoding import ContrastConfig, input_contrast
from counterpoint.decoding import engine as engine_module
from counterpoint.decoding.engine import AlteredPrompt, SharedForwardContrast
from tests.decoding import contrast_reference as ref
from tests.tiny_models import EOS_ID, PAD_ID, VOCAB, left_padded_batch, tiny_gpt2, tiny_llama

NEW = 8
CONFIGS = {
    "difference": ContrastConfig(form="difference", gamma=1.0, tau=0.5, alpha=0.01),
    "beta": ContrastConfig(form="beta", beta=1.0, alpha=0.01),
}


def prompts(batch: int, seed: int, altered_longer: bool | None) -> tuple[list[list[int]], list[list[int]]]:
    """``batch`` real and altered prompts of mixed lengths, no pad or EOS id inside.

    ``altered_longer``: True / False makes every altered prompt longer / shorter than its real one; None
    mixes both in the batch (and one pair of equal length).
    """
    g = torch.Generator().manual_seed(seed)

    def draw(n: int) -> list[int]:
        return torch.randint(2, VOCAB, (n,), generator=g).tolist()

    real, altered = [], []
    for i in range(batch):
        n = int(torch.randint(2, 9, (1,), generator=g))
        longer = altered_longer if altered_longer is not None else i % 3 != 1
        m = n + int(torch.randint(1, 5, (1,), generator=g)) if longer else max(1, n - 1 - i % 3)
        if altered_longer is None and i == 2:
            m = n
        real.append(draw(n))
        altered.append(draw(m))
    return real, altered


def batches(real, altered):
    return left_padded_batch(real), left_padded_batch(altered)


def kwargs_for(alt, config, shared):
    return {
        "custom_generate": input_contrast,
        "amateur_input_ids": alt["input_ids"],
        "amateur_attention_mask": alt["attention_mask"],
        "contrast": config,
        "shared_forward": shared,
    }


CASES = [(1, True), (1, False), (8, None)]  # (batch, altered_longer)


@pytest.fixture(scope="module")
def expert():
    return tiny_llama(seed=0, n_layer=3)


@pytest.mark.parametrize("form", list(CONFIGS))
@pytest.mark.parametrize(("size", "altered_longer"), CASES)
def test_greedy_matches_naive_and_two_forwards(expert, size, altered_longer, form):
    config = CONFIGS[form]
    batch, alt = batches(*prompts(size, seed=size, altered_longer=altered_longer))
    want = ref.naive_greedy(
        expert,
        ref.input_amateur(expert, alt["input_ids"], alt["attention_mask"], batch["input_ids"].shape[1]),
        batch["input_ids"],
        batch["attention_mask"],
        config,
        NEW,
    )
    shared = expert.generate(**batch, max_new_tokens=NEW, do_sample=False, **kwargs_for(alt, config, True))
    two = expert.generate(**batch, max_new_tokens=NEW, do_sample=False, **kwargs_for(alt, config, False))
    assert shared.tolist() == want.tolist()
    assert two.tolist() == want.tolist()
    assert expert.generate(**batch, max_new_tokens=NEW, do_sample=False).tolist() != want.tolist()


@pytest.mark.parametrize(("size", "altered_longer"), CASES)
def test_sampling_draws_match_two_forwards(expert, size, altered_longer):
    """Same seed, same draws: the loop samples N rows, never the doubled batch."""
    config = CONFIGS["beta"]
    batch, alt = batches(*prompts(size, seed=10 + size, altered_longer=altered_longer))
    gen = {
        "max_new_tokens": NEW,
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 8,
        "num_return_sequences": 2,
    }
    torch.manual_seed(7)
    shared = expert.generate(**batch, **gen, **kwargs_for(alt, config, True))
    torch.manual_seed(7)
    two = expert.generate(**batch, **gen, **kwargs_for(alt, config, False))
    torch.manual_seed(7)
    plain = expert.generate(**batch, **gen)
    assert shared.shape[0] == 2 * size
    assert shared.tolist() == two.tolist()
    assert shared.tolist() != plain.tolist()


@pytest.mark.parametrize(("size", "altered_longer"), CASES)
def test_beam_search_matches_naive_and_two_forwards(expert, size, altered_longer):
    config = CONFIGS["difference"]
    batch, alt = batches(*prompts(size, seed=20 + size, altered_longer=altered_longer))
    gen = {"num_beams": 3, "num_return_sequences": 2, "do_sample": False, "max_new_tokens": NEW}
    amateur_fn = ref.input_amateur(
        expert, alt["input_ids"], alt["attention_mask"], batch["input_ids"].shape[1]
    )
    want = ref.naive_beam(expert, amateur_fn, batch, config, **gen)
    shared = expert.generate(**batch, **gen, **kwargs_for(alt, config, True))
    two = expert.generate(**batch, **gen, **kwargs_for(alt, config, False))
    assert shared.tolist() == want.tolist()
    assert two.tolist() == want.tolist()
    assert expert.generate(**batch, **gen).tolist() != want.tolist()


def test_learned_positions_gpt2_matches_naive():
    expert = tiny_gpt2(seed=0, n_layer=3)
    config = CONFIGS["difference"]
    batch, alt = batches(*prompts(4, seed=3, altered_longer=None))
    want = ref.naive_greedy(
        expert,
        ref.input_amateur(expert, alt["input_ids"], alt["attention_mask"], batch["input_ids"].shape[1]),
        batch["input_ids"],
        batch["attention_mask"],
        config,
        NEW,
    )
    got = expert.generate(**batch, max_new_tokens=NEW, do_sample=False, **kwargs_for(alt, config, True))
    assert got.tolist() == want.tolist()


def test_unpadded_batch_of_one_without_attention_mask(expert):
    """generate() drops an all-ones mask and builds (1, T) positions: the hook rebuilds both halves."""
    config = CONFIGS["beta"]
    real, altered = [[5, 17, 33, 8]], [[9, 30, 31, 32, 2, 44]]
    ids = torch.tensor(real)
    got = expert.generate(
        input_ids=ids,
        max_new_tokens=NEW,
        do_sample=False,
        **kwargs_for(left_padded_batch(altered), config, True),
    )
    want = ref.naive_greedy(
        expert,
        ref.input_amateur(expert, torch.tensor(altered), torch.ones(1, 6, dtype=torch.long), 4),
        ids,
        torch.ones_like(ids),
        config,
        NEW,
    )
    assert got.tolist() == want.tolist()


def test_no_padding_anywhere(expert):
    """Real and altered prompts of one length, unpadded: the steps run without any mask."""
    config = CONFIGS["difference"]
    real, altered = [[5, 17, 33, 8], [70, 3, 44, 91]], [[9, 30, 31, 32], [2, 44, 12, 13]]
    batch, alt = batches(real, altered)
    want = ref.naive_greedy(
        expert,
        ref.input_amateur(expert, alt["input_ids"], alt["attention_mask"], 4),
        batch["input_ids"],
        batch["attention_mask"],
        config,
        NEW,
    )
    got = expert.generate(**batch, max_new_tokens=NEW, do_sample=False, **kwargs_for(alt, config, True))
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_attention_implementations(attention):
    expert = tiny_llama(seed=0, n_layer=3)
    expert.config._attn_implementation = attention
    config = CONFIGS["difference"]
    batch, alt = batches(*prompts(3, seed=2, altered_longer=None))
    want = ref.naive_greedy(
        expert,
        ref.input_amateur(expert, alt["input_ids"], alt["attention_mask"], batch["input_ids"].shape[1]),
        batch["input_ids"],
        batch["attention_mask"],
        config,
        NEW,
    )
    got = expert.generate(**batch, max_new_tokens=NEW, do_sample=False, **kwargs_for(alt, config, True))
    assert got.tolist() == want.tolist()


def test_dict_output_is_what_the_two_forward_path_returns(expert):
    """Scores, raw logits, hidden states and the returned cache: N rows, the real rows' own columns."""
    config = CONFIGS["difference"]
    batch, alt = batches(*prompts(3, seed=5, altered_longer=None))
    gen = {
        "max_new_tokens": NEW,
        "do_sample": False,
        "return_dict_in_generate": True,
        "output_scores": True,
        "output_logits": True,
        "output_hidden_states": True,
    }
    shared = expert.generate(**batch, **gen, **kwargs_for(alt, config, True))
    two = expert.generate(**batch, **gen, **kwargs_for(alt, config, False))
    assert shared.sequences.tolist() == two.sequences.tolist()
    for a, b in zip(shared.scores + shared.logits, two.scores + two.logits, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for step_a, step_b in zip(shared.hidden_states, two.hidden_states, strict=True):
        for a, b in zip(step_a, step_b, strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for la, lb in zip(output_cache(shared).layers, output_cache(two).layers, strict=True):
        assert la.keys.shape == lb.keys.shape  # N rows, the real rows' own columns
        torch.testing.assert_close(la.keys, lb.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(la.values, lb.values, rtol=1e-5, atol=1e-5)


def test_attentions_are_the_real_rows_own(expert):
    """output_attentions (eager attention): N rows, the real rows' own query and key columns."""
    eager = tiny_llama(seed=0, n_layer=3)
    eager.config._attn_implementation = "eager"
    config = CONFIGS["difference"]
    batch, alt = batches(*prompts(3, seed=5, altered_longer=None))
    gen = {
        "max_new_tokens": 4,
        "do_sample": False,
        "return_dict_in_generate": True,
        "output_attentions": True,
    }
    shared = eager.generate(**batch, **gen, **kwargs_for(alt, config, True))
    two = eager.generate(**batch, **gen, **kwargs_for(alt, config, False))
    assert shared.sequences.tolist() == two.sequences.tolist()
    for step_a, step_b in zip(shared.attentions, two.attentions, strict=True):
        for a, b in zip(step_a, step_b, strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class _Recorder(BaseStreamer):
    def __init__(self):
        self.chunks = []

    def put(self, value):
        self.chunks.append(value.tolist())

    def end(self):
        self.chunks.append("end")


def test_streamer_sees_the_real_rows_only(expert):
    config = CONFIGS["beta"]
    batch, alt = batches(*prompts(1, seed=6, altered_longer=True))
    streams = []
    for shared in (True, False):
        rec = _Recorder()
        expert.generate(
            **batch, max_new_tokens=NEW, do_sample=False, streamer=rec, **kwargs_for(alt, config, shared)
        )
        streams.append(rec.chunks)
    assert streams[0] == streams[1]
    assert streams[0][-1] == "end" and len(streams[0]) == NEW + 2  # the prompt, each token, the end


class _Boom(LogitsProcessor):
    def __call__(self, input_ids, scores):
        raise KeyError("boom")


def test_hooks_and_cache_reorder_are_removed_even_after_an_error(expert):
    config = CONFIGS["beta"]
    batch, alt = batches(*prompts(2, seed=8, altered_longer=None))
    with pytest.raises(KeyError, match="boom"):
        expert.generate(
            **batch, max_new_tokens=NEW, logits_processor=[_Boom()], **kwargs_for(alt, config, True)
        )
    assert not expert._forward_pre_hooks and not expert._forward_hooks
    out = expert.generate(**batch, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    assert "reorder_cache" not in vars(output_cache(out))
    out = expert.generate(
        **batch, max_new_tokens=2, num_beams=2, return_dict_in_generate=True, **kwargs_for(alt, config, True)
    )
    assert "reorder_cache" not in vars(output_cache(out))
    assert output_cache(out).layers[0].keys.shape[0] == 4  # 2 prompts x 2 beams, the altered rows cut away


def test_one_forward_per_step(expert):
    """The point of it: the model is called once per step (plus the prefill), not twice."""
    config = CONFIGS["beta"]
    batch, alt = batches(*prompts(3, seed=9, altered_longer=None))
    calls = []
    handle = expert.register_forward_hook(lambda module, args, output: calls.append(output.logits.shape[0]))
    try:
        for shared in (True, False):
            calls.clear()
            expert.generate(
                **batch, max_new_tokens=NEW, min_new_tokens=NEW, **kwargs_for(alt, config, shared)
            )
            # Shared: one forward of 2 x 3 rows per step. Two forwards: the expert's 3 rows and the amateur's 3.
            assert calls == ([6] * NEW if shared else [3] * (2 * NEW))
    finally:
        handle.remove()


def test_shared_forward_true_says_why_it_cannot_run(expert):
    batch, alt = batches(*prompts(2, seed=1, altered_longer=None))
    with pytest.raises(ValueError, match=r"shared_forward=True cannot run here: there is no KV cache"):
        expert.generate(**batch, max_new_tokens=2, use_cache=False, **kwargs_for(alt, CONFIGS["beta"], True))
    with pytest.raises(TypeError, match=r"shared_forward='yes' must be None \(automatic\), True or False"):
        expert.generate(**batch, max_new_tokens=2, **kwargs_for(alt, CONFIGS["beta"], "yes"))
    # Automatic: without a cache it falls back to two forwards, same tokens as the naive reference.
    config = CONFIGS["beta"]
    got = expert.generate(
        **batch, max_new_tokens=4, use_cache=False, do_sample=False, **kwargs_for(alt, config, None)
    )
    want = ref.naive_greedy(
        expert,
        ref.input_amateur(expert, alt["input_ids"], alt["attention_mask"], batch["input_ids"].shape[1]),
        batch["input_ids"],
        batch["attention_mask"],
        config,
        4,
    )
    assert got.tolist() == want.tolist()


def test_shared_processor_outside_the_strategy_is_refused(expert):
    batch, alt = batches(*prompts(2, seed=1, altered_longer=None))
    proc = SharedForwardContrast(
        expert, AlteredPrompt(alt["input_ids"], alt["attention_mask"]), CONFIGS["beta"]
    )
    with pytest.raises(
        RuntimeError, match=r"found no altered rows' logits .* inside the input_contrast strategy"
    ):
        expert.generate(**batch, max_new_tokens=2, logits_processor=[proc])


class _EndRowEarly(LogitsProcessor):
    """Forces EOS on one row at one step (after the contrast), so that row finishes early."""

    def __init__(self, row: int, at_length: int):
        self.row, self.at_length = row, at_length

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.at_length:
            scores = scores.clone()
            scores[self.row] = float("-inf")
            scores[self.row, EOS_ID] = 0.0
        return scores


def test_pad_of_finished_rows_follows_the_real_rows(expert):
    """A row that finishes early gets pad tokens; its altered row is fed the same pads (as before)."""
    config = CONFIGS["beta"]
    batch, alt = batches(*prompts(8, seed=4, altered_longer=None))
    width = batch["input_ids"].shape[1]
    gen = {"max_new_tokens": 12, "do_sample": False, "logits_processor": [_EndRowEarly(3, width + 2)]}
    shared = expert.generate(**batch, **gen, **kwargs_for(alt, config, True))
    two = expert.generate(**batch, **gen, **kwargs_for(alt, config, False))
    assert shared.tolist() == two.tolist()
    assert shared[3, width + 2] == EOS_ID and (shared[3, width + 3 :] == PAD_ID).all()
    assert shared.shape[1] == width + 12  # the other rows ran on


def test_engine_exports_the_shared_forward():
    assert {"SharedForward", "SharedForwardContrast"} <= set(engine_module.__all__)


@pytest.mark.slow
@pytest.mark.parametrize("size", [1, 8])
def test_smollm2_shared_forward_is_token_identical_to_two_forwards(smollm2, size):
    """The real model in fp32: the 2N-row forward gives the same tokens as the altered rows' own forward."""
    from counterpoint.decoding import INSTRUCTIVE_DECODING, OPPOSITE_INSTRUCTION

    model, tok = smollm2
    questions = ["What is the capital of France?", "Name a colour.", "Why is the sky blue?", "Count to five."]
    questions = (questions * 2)[:size]

    def chats(system=None):
        texts = [
            tok.apply_chat_template(
                ([{"role": "system", "content": system}] if system else [])
                + [{"role": "user", "content": q}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for q in questions
        ]
        return tok(texts, return_tensors="pt", padding=True)

    real, noisy = chats(), chats(OPPOSITE_INSTRUCTION)
    gen = {"do_sample": False, "max_new_tokens": 16, "min_new_tokens": 16, "pad_token_id": tok.pad_token_id}
    outs = [
        model.generate(
            **real,
            **gen,
            custom_generate=input_contrast,
            amateur_input_ids=noisy["input_ids"],
            amateur_attention_mask=noisy["attention_mask"],
            contrast=INSTRUCTIVE_DECODING,
            shared_forward=shared,
        )  # fmt: skip
        for shared in (True, False)
    ]
    assert outs[0].tolist() == outs[1].tolist()
