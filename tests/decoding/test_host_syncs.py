"""No host-device synchronisation per decoding step beyond what the plain loop itself does.

Counted on the CPU (tests/host_reads.py): every call that would read a tensor's value back to the host on a
GPU, per step, by the differencing of a short and a long call. The GPU check (benchmarks/gpu) counts the
same thing with CUDA's sync debug mode.
"""

from __future__ import annotations

import os

import pytest
import torch
from transformers import LogitsProcessor

from counterpoint.decoding import (
    ContrastConfig,
    InputContrast,
    ModelContrast,
    contrastive_decoding,
    input_contrast,
)
from counterpoint.decoding.vllm.pool import AmateurPool
from tests.host_reads import host_reads, reads_per_step
from tests.tiny_models import MIXED_PROMPTS, left_padded_batch, tiny_llama

CONFIG = ContrastConfig(form="beta", beta=0.5, alpha=0.1)
ALTERED = [[5, 17, 61, 12, 40], [22, 9, 30, 31, 32, 2], [44, 91]]
SEARCHES = {
    "greedy": {"do_sample": False},
    "sampling": {"do_sample": True, "top_k": 5},
    "beams": {"num_beams": 2, "num_return_sequences": 2},
}
PACKAGE = os.sep + "counterpoint" + os.sep


@pytest.fixture(scope="module")
def expert():
    return tiny_llama(seed=0, n_layer=2)


@pytest.fixture(scope="module")
def amateur():
    return tiny_llama(seed=1, n_layer=1)


def strategies(amateur, rows):
    alt = left_padded_batch([ALTERED[i] for i in rows])
    altered = {"amateur_input_ids": alt["input_ids"], "amateur_attention_mask": alt["attention_mask"]}
    return {
        "input contrast, shared forward": {
            "custom_generate": input_contrast,
            **altered,
            "shared_forward": True,
        },
        "input contrast, two forwards": {
            "custom_generate": input_contrast,
            **altered,
            "shared_forward": False,
        },
        "contrastive decoding": {"custom_generate": contrastive_decoding, "amateur_model": amateur},
        "contrastive decoding, last token": {
            "custom_generate": contrastive_decoding,
            "amateur_model": amateur,
            "amateur_view": "last-token",
        },
    }


def per_step(model, batch, **kwargs):
    def run(n):
        torch.manual_seed(0)
        model.generate(**batch, max_new_tokens=n, min_new_tokens=n, **kwargs)

    return reads_per_step(run)


@pytest.mark.parametrize("rows", [(0, 1, 2), (1,)], ids=["padded batch of 3", "unpadded batch of 1"])
@pytest.mark.parametrize("search", list(SEARCHES))
@pytest.mark.parametrize("name", list(strategies(None, (0,))))
def test_strategies_read_no_more_per_step_than_the_plain_loop(expert, amateur, name, search, rows):
    batch = left_padded_batch([MIXED_PROMPTS[i] for i in rows])
    kwargs = {**strategies(amateur, rows)[name], "contrast": CONFIG}
    plain = per_step(expert, batch, **SEARCHES[search])
    ours = per_step(expert, batch, **SEARCHES[search], **kwargs)
    assert not [site for site in ours if PACKAGE in site], ours  # counterpoint itself reads nothing per step
    assert sum(ours.values()) <= sum(plain.values()), (ours, plain)


def test_the_shared_forward_reads_less_than_two_forwards(expert, amateur):
    """Padded prompts: transformers reads a 2-D padding mask on the host in every forward; the shared
    forward is one forward and hands the model a 4-D mask."""
    batch = left_padded_batch(MIXED_PROMPTS)
    both = strategies(amateur, (0, 1, 2))
    shared = per_step(
        expert, batch, do_sample=False, contrast=CONFIG, **both["input contrast, shared forward"]
    )
    plain = per_step(expert, batch, do_sample=False)
    assert sum(shared.values()) < sum(plain.values())


def test_a_processor_handed_to_generate_reads_one_flag_per_step(expert, amateur):
    """Outside the strategies the processor cannot see the loop, so it checks on the host whether rows
    moved: one read per step (two on beam steps where rows moved), and only in _follow."""
    batch = left_padded_batch(MIXED_PROMPTS)
    alt = left_padded_batch(ALTERED)
    makers = [
        lambda: ModelContrast(amateur, CONFIG, attention_mask=batch["attention_mask"]),
        lambda: InputContrast(expert, alt["input_ids"], alt["attention_mask"], CONFIG),
    ]
    for make in makers:
        for search, most in (("greedy", 1.0), ("beams", 2.0)):

            def run(n, make=make, search=search):
                with make() as proc:
                    expert.generate(
                        **batch,
                        max_new_tokens=n,
                        min_new_tokens=n,
                        logits_processor=[proc],
                        **SEARCHES[search],
                    )

            ours = {site: v for site, v in reads_per_step(run).items() if PACKAGE in site}
            assert ours and all("engine.py" in site for site in ours), ours
            assert 1.0 <= sum(ours.values()) <= most, ours


class _ReadsEachStep(LogitsProcessor):
    def __call__(self, input_ids, scores):
        self.last = scores.max().item()
        return scores


def test_the_counter_sees_a_read_added_to_the_loop(expert):
    batch = left_padded_batch(MIXED_PROMPTS)
    plain = per_step(expert, batch, do_sample=False)
    reads = per_step(expert, batch, do_sample=False, logits_processor=[_ReadsEachStep()])
    extra = {site: v for site, v in reads.items() if site not in plain}
    assert list(extra.values()) == [1.0] and "item " in next(iter(extra))


# -- the vLLM-side amateur pool (no vLLM needed) ----------------------------------------------------------


def test_pool_steady_steps_read_nothing_back():
    """Both interfaces: token lists (V1 runner) and device tokens told by length (Model Runner V2)."""
    model = tiny_llama(seed=3)
    seqs = {k: list(p) for k, p in zip("abc", MIXED_PROMPTS, strict=True)}
    pool = AmateurPool(model)
    pool.logits(list(seqs.items()))  # joins: prefill, not a steady step
    for step in range(3):
        for k in seqs:
            seqs[k].append(10 + step)
        with host_reads() as reads:
            pool.logits(list(seqs.items()))
        if step:  # the first grown step builds the batch (reads the rows' lengths once)
            assert sum(reads.values()) == 0, reads

    def no_history(idx):
        raise AssertionError(f"history asked for rows {idx} in a steady step")

    for step in range(3):
        for k in seqs:
            seqs[k].append(20 + step)
        fed = torch.tensor([seqs[k][-1] for k in seqs])
        with host_reads() as reads:
            pool.step(list(seqs), [len(v) for v in seqs.values()], fed, no_history)
        assert sum(reads.values()) == 0, reads
