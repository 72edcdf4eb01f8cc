"""Contrastive decoding engine: every amateur source against a naive full-recompute reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from counterpoint.decoding import (
    ContrastConfig,
    InputContrast,
    LayerContrast,
    ModelContrast,
    contrastive_decoding,
    input_contrast,
    layer_contrast,
)
from counterpoint.decoding.scores import ExpertStep, contrast_scores, plausible_head
from tests.decoding import contrast_reference as ref
from tests.tiny_models import EOS_ID, MIXED_PROMPTS, PAD_ID, VOCAB, left_padded_batch, tiny_gpt2, tiny_llama

NEW = 8
# Altered prompts for input contrast, one per MIXED_PROMPTS row, different lengths again.
ALTERED = [[5, 17, 61, 12, 40], [22, 9, 30, 31, 32, 2], [44, 91]]
FORMS = {
    "difference": ContrastConfig(form="difference", gamma=0.8, tau=0.5, alpha=0.1),
    "beta": ContrastConfig(form="beta", beta=0.5, alpha=0.1),
}
SOURCES = ["model", "layer-fixed", "layer-jsd", "layer-fusion", "input"]
LAYER_SPEC = {
    "layer-fixed": ([1], "fixed"),
    "layer-jsd": ([0, 1, 2], "jsd"),
    "layer-fusion": ([0, 2], "fusion"),
}


def _norm_head(model):
    base = model.base_model
    return (base.norm if hasattr(base, "norm") else base.ln_f), model.lm_head


def setup(source, expert, amateur, batch, config):
    """(generate kwargs for custom_generate, processor factory, naive amateur fn) for one source."""
    prompt_len = batch["input_ids"].shape[1]
    if source == "model":
        kwargs = {"custom_generate": contrastive_decoding, "amateur_model": amateur, "contrast": config}
        proc = lambda: ModelContrast(amateur, config, attention_mask=batch["attention_mask"])  # noqa: E731
        return kwargs, proc, ref.model_amateur(amateur)
    if source == "input":
        alt = left_padded_batch([ALTERED[i] for i in batch["rows"]])
        kwargs = {
            "custom_generate": input_contrast,
            "amateur_input_ids": alt["input_ids"],
            "amateur_attention_mask": alt["attention_mask"],
            "contrast": config,
        }
        proc = lambda: InputContrast(expert, alt["input_ids"], alt["attention_mask"], config)  # noqa: E731
        return kwargs, proc, ref.input_amateur(expert, alt["input_ids"], alt["attention_mask"], prompt_len)
    layers, mode = LAYER_SPEC[source]
    kwargs = {
        "custom_generate": layer_contrast,
        "amateur_layers": layers,
        "layer_mode": mode,
        "contrast": config,
    }
    proc = lambda: LayerContrast(expert, layers, mode, config)  # noqa: E731
    return kwargs, proc, ref.layer_amateur(expert, layers, mode, *_norm_head(expert))


def make_batch(rows=(0, 1, 2)):
    batch = left_padded_batch([MIXED_PROMPTS[i] for i in rows])
    return batch, list(rows)


def _generate(model, batch, **kwargs):
    return model.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=NEW, **kwargs
    )


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("source", SOURCES)
def test_greedy_matches_naive_reference_both_forms(source, form, expert, amateur):
    batch, rows = make_batch()
    config = FORMS[form]
    kwargs, make_proc, amateur_fn = setup(source, expert, amateur, {**batch, "rows": rows}, config)
    want = ref.naive_greedy(expert, amateur_fn, batch["input_ids"], batch["attention_mask"], config, NEW)
    got_custom = _generate(expert, batch, do_sample=False, **kwargs)
    with make_proc() as proc:
        got_proc = _generate(expert, batch, do_sample=False, logits_processor=[proc])
    assert got_custom.tolist() == want.tolist()
    assert got_proc.tolist() == want.tolist()
    # The contrast changes something: otherwise these tests could not tell it from greedy.
    assert _generate(expert, batch, do_sample=False).tolist() != want.tolist()


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("source", SOURCES)
def test_beam_search_matches_naive_reference_both_forms(source, form, expert, amateur):
    batch, rows = make_batch()
    config = FORMS[form]
    kwargs, make_proc, amateur_fn = setup(source, expert, amateur, {**batch, "rows": rows}, config)
    gen = {"num_beams": 3, "num_return_sequences": 2, "do_sample": False, "max_new_tokens": NEW}
    want = ref.naive_beam(expert, amateur_fn, batch, config, **gen)
    got_custom = expert.generate(**batch, **gen, **kwargs)
    with make_proc() as proc:
        got_proc = expert.generate(**batch, **gen, logits_processor=[proc])
    assert got_custom.tolist() == want.tolist()
    assert got_proc.tolist() == want.tolist()
    assert expert.generate(**batch, **gen).tolist() != want.tolist()  # plain beam search differs


@pytest.mark.parametrize("source", SOURCES)
def test_each_row_equals_running_it_alone(source, expert, amateur):
    config = FORMS["difference"]
    batch, rows = make_batch()
    kwargs, _, _ = setup(source, expert, amateur, {**batch, "rows": rows}, config)
    together = _generate(expert, batch, do_sample=False, **kwargs)
    width = batch["input_ids"].shape[1]
    for i in rows:
        alone_batch, alone_rows = make_batch((i,))
        alone_kwargs, _, _ = setup(source, expert, amateur, {**alone_batch, "rows": alone_rows}, config)
        alone = _generate(expert, alone_batch, do_sample=False, **alone_kwargs)[0, len(MIXED_PROMPTS[i]) :]
        row = together[i, width:]
        assert row[: len(alone)].tolist() == alone.tolist()
        assert (row[len(alone) :] == PAD_ID).all()  # the batch ran on only after this row ended


@pytest.mark.parametrize("source", ["model", "layer-jsd", "input"])
def test_sampling_applies_contrast_before_the_warpers(source, expert, amateur):
    """Sampling with temperature and top-k: same draws as a naive loop that contrasts the raw logits."""
    config = FORMS["beta"]
    batch, rows = make_batch()
    kwargs, _, amateur_fn = setup(source, expert, amateur, {**batch, "rows": rows}, config)
    torch.manual_seed(123)
    got = _generate(expert, batch, do_sample=True, temperature=0.7, top_k=5, **kwargs)
    torch.manual_seed(123)
    ids, mask = batch["input_ids"].clone(), batch["attention_mask"].clone()
    done = torch.zeros(3, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(NEW):
            out = ref.full_forward(expert, ids, mask, hidden=True)
            s = ref.contrast_scores(out.logits[:, -1], amateur_fn(ids, mask, out), config) / 0.7
            kth = s.topk(5, dim=-1).values[:, -1:]
            s = s.masked_fill(s < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(s, -1), 1)[:, 0]
            nxt = torch.where(done, PAD_ID, nxt)
            ids, mask = (
                torch.cat([ids, nxt[:, None]], -1),
                torch.cat([mask, torch.ones_like(nxt[:, None])], -1),
            )
            done |= nxt == EOS_ID
            if done.all():
                break
    assert got.tolist() == ids.tolist()


def test_gpt2_layout_matches_reference():
    """Another architecture (GPT-2: blocks in .h, final norm ln_f, learned positions)."""
    expert, amateur = tiny_gpt2(seed=0, n_layer=3), tiny_gpt2(seed=2, n_layer=1)
    batch, rows = make_batch()
    config = FORMS["difference"]
    for source in ["model", "layer-jsd"]:
        kwargs, _, amateur_fn = setup(source, expert, amateur, {**batch, "rows": rows}, config)
        want = ref.naive_greedy(expert, amateur_fn, batch["input_ids"], batch["attention_mask"], config, NEW)
        assert _generate(expert, batch, do_sample=False, **kwargs).tolist() == want.tolist()


def test_jsd_chooses_the_premature_layer_per_row():
    """A 4-layer expert where rows disagree on the furthest layer: per-row choice, not a batch average."""
    expert = tiny_llama(seed=3, n_layer=4)
    batch, _ = make_batch()
    config = FORMS["difference"]
    norm, head = _norm_head(expert)
    per_row = ref.naive_greedy(
        expert, ref.layer_amateur(expert, [1, 2, 3], "jsd", norm, head), batch["input_ids"],
        batch["attention_mask"], config, NEW,
    )  # fmt: skip
    batch_avg = ref.naive_greedy(
        expert, ref.layer_amateur(expert, [1, 2, 3], "jsd-batch", norm, head), batch["input_ids"],
        batch["attention_mask"], config, NEW,
    )  # fmt: skip
    assert per_row.tolist() != batch_avg.tolist()  # the setup tells the two rules apart
    got = _generate(
        expert, batch, do_sample=False, custom_generate=layer_contrast, amateur_layers=[1, 2, 3],
        layer_mode="jsd", contrast=config,
    )  # fmt: skip
    assert got.tolist() == per_row.tolist()


def test_amateur_lm_head_padded_past_tokenizer(expert):
    """An amateur with 128 rows (97 real tokens + padding) works once a tokenizer confirms the size."""
    padded = tiny_llama(seed=1, n_layer=1, vocab_size=128)
    batch, _ = make_batch()
    config = FORMS["difference"]
    with pytest.raises(ValueError, match=r"amateur_model has 128 vocabulary rows but the expert has 97"):
        _generate(expert, batch, custom_generate=contrastive_decoding, amateur_model=padded, contrast=config)
    tok = _word_tokenizer(VOCAB)
    got = _generate(
        expert, batch, custom_generate=contrastive_decoding, amateur_model=padded, contrast=config,
        amateur_tokenizer=tok,
    )  # fmt: skip
    want = ref.naive_greedy(
        expert, ref.model_amateur(padded), batch["input_ids"], batch["attention_mask"], config, NEW
    )
    assert got.tolist() == want.tolist()


# -- edge cases with a known answer -----------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_beta_zero_is_greedy(source, expert, amateur):
    batch, rows = make_batch()
    kwargs, _, _ = setup(
        source, expert, amateur, {**batch, "rows": rows}, ContrastConfig(form="beta", beta=0.0)
    )
    assert _generate(expert, batch, **kwargs).tolist() == _generate(expert, batch, do_sample=False).tolist()


@pytest.mark.parametrize("source", SOURCES)
def test_alpha_one_leaves_only_the_argmax(source, expert, amateur):
    batch, rows = make_batch()
    config = ContrastConfig(form="beta", beta=5.0, alpha=1.0)  # a contrast strong enough to matter otherwise
    kwargs, _, _ = setup(source, expert, amateur, {**batch, "rows": rows}, config)
    assert _generate(expert, batch, **kwargs).tolist() == _generate(expert, batch, do_sample=False).tolist()


def test_identical_amateur_leaves_the_plausibility_mask_to_decide(expert):
    """Difference form, gamma 1, amateur == expert: every head token scores 0, so argmax takes the
    smallest token id in the head, computed here from the raw logits generate returns."""
    twin = copy.deepcopy(expert)
    batch, _ = make_batch()
    config = ContrastConfig(form="difference", gamma=1.0, tau=1.0, alpha=0.5)
    out = _generate(
        expert, batch, custom_generate=contrastive_decoding, amateur_model=twin, contrast=config,
        return_dict_in_generate=True, output_logits=True, output_scores=True,
    )  # fmt: skip
    width = batch["input_ids"].shape[1]
    for step, (logits, scores) in enumerate(zip(out.logits, out.scores, strict=True)):
        head = torch.log_softmax(logits, -1) >= torch.log_softmax(logits, -1).max(
            -1, keepdim=True
        ).values + torch.log(torch.tensor(0.5))
        assert torch.equal(scores[head], torch.zeros(int(head.sum())))  # every head token scores exactly 0
        first_in_head = head.int().argmax(-1)  # smallest id in the head
        assert out.sequences[:, width + step].tolist() == first_in_head.tolist()
    assert any(h.sum() > 1 for h in [torch.log_softmax(x, -1) > -10 for x in out.logits])


# -- bad inputs ---------------------------------------------------------------------------------------------


def _word_tokenizer(size: int, offset: int = 0):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i + offset}": i for i in range(size)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="w0")))


def test_mismatched_vocabulary_is_refused(expert):
    other = tiny_llama(seed=1, n_layer=1, vocab_size=101)
    batch, _ = make_batch()
    with pytest.raises(ValueError, match=r"amateur_model has 101 vocabulary rows but the expert has 97"):
        _generate(expert, batch, custom_generate=contrastive_decoding, amateur_model=other)
    proc = ModelContrast(other)  # no expert given: refused on the first step, before any token is chosen
    with pytest.raises(ValueError, match=r"the amateur gives 101 logits per token but the expert gives 97"):
        _generate(expert, batch, logits_processor=[proc])


def test_mismatched_tokenizers_are_refused(expert, amateur):
    batch, _ = make_batch()
    with pytest.raises(
        ValueError, match=r"expert_tokenizer and amateur_tokenizer have different vocabularies"
    ):
        _generate(
            expert, batch, custom_generate=contrastive_decoding, amateur_model=amateur,
            expert_tokenizer=_word_tokenizer(VOCAB), amateur_tokenizer=_word_tokenizer(VOCAB, offset=1),
        )  # fmt: skip


@pytest.mark.parametrize("form", ["difference", "beta"])
def test_contrast_scores_with_the_expert_step_computed_once(form):
    """Scores from a shared ExpertStep (the processor's path) are those computed from scratch; a step built
    from other logits or another alpha is refused."""
    gen = torch.Generator().manual_seed(0)
    expert, amateur = torch.randn(3, 50, generator=gen) * 3, torch.randn(3, 50, generator=gen) * 3
    config = ContrastConfig(form=form, alpha=0.2, tau=0.5)
    step = ExpertStep(expert, config.alpha)
    assert torch.equal(step.head, plausible_head(torch.log_softmax(expert, -1), 0.2))
    assert torch.equal(
        contrast_scores(expert, amateur, config, step), contrast_scores(expert, amateur, config)
    )
    z_e, z_a = torch.log_softmax(expert, -1), torch.log_softmax(amateur / 0.5, -1)
    want = z_e - z_a if form == "difference" else 1.5 * z_e - 0.5 * z_a
    want[z_e < z_e.max(-1, keepdim=True).values + math.log(0.2)] = float("-inf")
    torch.testing.assert_close(contrast_scores(expert, amateur, config, step), want)
    with pytest.raises(ValueError, match="other expert logits or another alpha"):
        contrast_scores(expert.clone(), amateur, config, step)
    with pytest.raises(ValueError, match="other expert logits or another alpha"):
        contrast_scores(expert, amateur, ContrastConfig(form=form, alpha=0.3), step)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"alpha": -0.1},
            r"alpha=-0.1 must be in \[0, 1\] \(the plausibility threshold; 0 keeps every token",
        ),
        ({"alpha": 1.5}, r"alpha=1.5 must be in \[0, 1\]"),
        ({"beta": -0.1}, r"beta=-0.1 must be >= 0"),
    ],
)
def test_bad_contrast_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ContrastConfig(**kwargs)


def test_contrast_must_be_a_config(expert, amateur):
    batch, _ = make_batch()
    with pytest.raises(TypeError, match=r"contrast=\{'beta': 0.5\} must be a ContrastConfig"):
        _generate(
            expert, batch, custom_generate=contrastive_decoding, amateur_model=amateur, contrast={"beta": 0.5}
        )


@pytest.mark.parametrize(
    ("layers", "mode", "message"),
    [
        (
            3,
            None,
            r"layer index 3 is out of range; LlamaForCausalLM has 3 decoder layers, so valid indices are 0..2",
        ),
        ([0, -1], "jsd", r"layer index -1 is out of range"),
        ([0, 1], "fixed", r"layer_mode='fixed' takes one layer"),
        (1, "avg", r"layer_mode='avg' is not a mode; use 'fixed', 'jsd', 'fusion' or 'dola'"),
        ([], None, r"must be an int or a non-empty list of ints"),
    ],
)
def test_bad_layers(expert, layers, mode, message):
    batch, _ = make_batch()
    with pytest.raises(ValueError, match=message):
        _generate(expert, batch, custom_generate=layer_contrast, amateur_layers=layers, layer_mode=mode)
    assert not any(layer._forward_pre_hooks for layer in expert.model.layers)  # nothing left behind


def test_missing_amateur_arguments(expert):
    batch, _ = make_batch()
    with pytest.raises(ValueError, match=r"contrastive_decoding needs amateur_model="):
        _generate(expert, batch, custom_generate=contrastive_decoding)
    with pytest.raises(ValueError, match=r"layer_contrast needs amateur_layers="):
        _generate(expert, batch, custom_generate=layer_contrast)
    with pytest.raises(ValueError, match=r"input_contrast needs amateur_input_ids="):
        _generate(expert, batch, custom_generate=input_contrast)
    with pytest.raises(ValueError, match=r"amateur_input_ids has 2 rows but the batch has 3 prompts"):
        _generate(
            expert,
            batch,
            custom_generate=input_contrast,
            amateur_input_ids=torch.ones(2, 4, dtype=torch.long),
        )
    with pytest.raises(ValueError, match=r"amateur_attention_mask must be left padded"):
        InputContrast(expert, torch.ones(3, 2, dtype=torch.long), torch.tensor([[1, 0]] * 3))


@pytest.mark.parametrize("source", SOURCES)
def test_reuse_without_reset_is_refused(source, expert, amateur):
    batch, rows = make_batch()
    _, make_proc, _ = setup(source, expert, amateur, {**batch, "rows": rows}, FORMS["beta"])
    with make_proc() as proc:
        first = _generate(expert, batch, do_sample=False, logits_processor=[proc])
        with pytest.raises(RuntimeError, match=r"is stateful .* call \w+\.reset\(\) before reusing it"):
            _generate(expert, batch, do_sample=False, logits_processor=[proc])
        proc.reset()
        assert _generate(expert, batch, do_sample=False, logits_processor=[proc]).tolist() == first.tolist()


def test_layer_hooks_are_removed_after_custom_generate(expert):
    batch, _ = make_batch()
    _generate(expert, batch, custom_generate=layer_contrast, amateur_layers=[0, 1], layer_mode="fusion")
    assert not any(layer._forward_pre_hooks for layer in expert.model.layers)
