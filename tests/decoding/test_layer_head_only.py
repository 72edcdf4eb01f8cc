"""Layer contrast on the plausible head only: the same tokens as the exact path where it is used, and the
exact path kept wherever it would not be exact (beam search, jsd, output_scores, other processors)."""

from __future__ import annotations

import copy
import sys
from contextlib import contextmanager

import pytest
import torch

from counterpoint.decoding import ContrastConfig, LayerContrast, layer_contrast
from tests.decoding import contrast_reference as ref
from tests.tiny_models import MIXED_PROMPTS, left_padded_batch, tiny_gpt2, tiny_llama

NEW = 8
FORMS = {
    "difference": ContrastConfig(form="difference", gamma=0.8, tau=0.5, alpha=0.1),
    "beta": ContrastConfig(form="beta", beta=0.5, alpha=0.1),
}
MODES = {"fixed": [1], "fusion": [0, 2]}


def _peaked(model, scale: float = 24.0):
    """A copy whose lm_head is scaled up: random tiny models are nearly uniform, so every token is in the
    plausible head (nothing to skip); scaled, the heads hold a few to ~20 of the 97 tokens."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def peaked():
    return _peaked(tiny_llama(seed=0, n_layer=3))


@pytest.fixture(scope="module")
def batch():
    return left_padded_batch(MIXED_PROMPTS)


@contextmanager
def count_full_heads(model):
    """Counts forward passes and full lm_head products (calls of the lm_head module, and LayerContrast's
    own product over its weight, ``_project``); ``full_extra`` is the steps on which layer contrast ran the
    whole lm_head for its amateur (the model's own forward calls it once per pass)."""
    counts = {"forward": 0, "head": 0}

    def on_forward(*_):
        counts["forward"] += 1

    def on_head(*_):
        counts["head"] += 1

    project = LayerContrast._project

    def counted_project(self, hidden, keep=False):
        if self.model is model:
            on_head()
        return project(self, hidden, keep)

    hooks = [model.register_forward_hook(on_forward), model.lm_head.register_forward_hook(on_head)]
    LayerContrast._project = counted_project
    try:
        yield counts
    finally:
        LayerContrast._project = project
        for h in hooks:
            h.remove()
        counts["full_extra"] = counts["head"] - counts["forward"]
        counts["fast"] = counts["forward"] - counts["full_extra"]


def _layer(model, batch, mode, config, **kwargs):
    return model.generate(
        **batch, max_new_tokens=NEW, custom_generate=layer_contrast, amateur_layers=MODES[mode],
        layer_mode=mode, contrast=config, **kwargs,
    )  # fmt: skip


def _naive_layer(model, mode):
    base = model.base_model
    norm = base.norm if hasattr(base, "norm") else base.ln_f
    return ref.layer_amateur(model, MODES[mode], mode, norm, model.lm_head)


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("mode", list(MODES))
def test_greedy_head_only_equals_exact_and_naive(peaked, batch, mode, form):
    config = FORMS[form]
    want = ref.naive_greedy(
        peaked, _naive_layer(peaked, mode), batch["input_ids"], batch["attention_mask"], config, NEW
    )
    with count_full_heads(peaked) as auto:
        got_auto = _layer(peaked, batch, mode, config, do_sample=False)
    with count_full_heads(peaked) as exact:
        got_exact = _layer(peaked, batch, mode, config, do_sample=False, head_only=False)
    with LayerContrast(peaked, MODES[mode], mode, config, head_only=True) as proc:
        got_proc = peaked.generate(**batch, max_new_tokens=NEW, do_sample=False, logits_processor=[proc])
    assert got_auto.tolist() == got_exact.tolist() == got_proc.tolist() == want.tolist()
    assert auto["fast"] > 0  # the head-only path really ran (on every step whose heads were small)
    assert exact["fast"] == 0 and exact["full_extra"] == exact["forward"]
    assert peaked.generate(**batch, max_new_tokens=NEW, do_sample=False).tolist() != want.tolist()


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("warpers", [{"temperature": 0.7, "top_k": 5}, {"top_p": 0.9, "min_p": 0.05}])
def test_sampling_head_only_equals_exact(peaked, batch, mode, form, warpers):
    config = FORMS[form]
    gen = {"do_sample": True, "num_return_sequences": 2, **warpers}
    for seed in (0, 1):
        torch.manual_seed(seed)
        with count_full_heads(peaked) as auto:
            got_auto = _layer(peaked, batch, mode, config, **gen)
        torch.manual_seed(seed)
        got_exact = _layer(peaked, batch, mode, config, head_only=False, **gen)
        assert got_auto.tolist() == got_exact.tolist()
        assert auto["fast"] > 0


def test_gpt2_layout_and_lm_head_bias(batch):
    """GPT-2 (ln_f, tied head) and a Llama whose lm_head has a bias: gathered rows keep their bias."""
    gpt2 = _peaked(tiny_gpt2(seed=0, n_layer=3), scale=1.0)
    with torch.no_grad():
        gpt2.transformer.wte.weight.mul_(8.0)  # tied to lm_head: sharpen both
    biased = _peaked(tiny_llama(seed=0, n_layer=3))
    old = biased.lm_head
    biased.lm_head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        biased.lm_head.weight.copy_(old.weight)
        biased.lm_head.bias.copy_(torch.randn(old.out_features, generator=torch.Generator().manual_seed(5)))
    config = FORMS["difference"]
    for model in (gpt2, biased):
        want = ref.naive_greedy(
            model, _naive_layer(model, "fixed"), batch["input_ids"], batch["attention_mask"], config, NEW
        )
        with count_full_heads(model) as auto:
            got = _layer(model, batch, "fixed", config, do_sample=False)
        assert got.tolist() == want.tolist()
        assert auto["fast"] > 0


# -- where the exact path is kept ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_beam_search_keeps_the_exact_path(peaked, batch, mode):
    config = FORMS["beta"]
    gen = {"num_beams": 3, "num_return_sequences": 2, "do_sample": False, "max_new_tokens": NEW}
    want = ref.naive_beam(peaked, _naive_layer(peaked, mode), batch, config, **gen)
    with count_full_heads(peaked) as auto:
        got = peaked.generate(
            **batch, **gen, custom_generate=layer_contrast, amateur_layers=MODES[mode], layer_mode=mode,
            contrast=config,
        )  # fmt: skip
    assert got.tolist() == want.tolist()
    assert auto["fast"] == 0
    with pytest.raises(ValueError, match=r"head_only=True works under greedy and sampling, not beam search"):
        peaked.generate(
            **batch, **gen, custom_generate=layer_contrast, amateur_layers=MODES[mode], layer_mode=mode,
            contrast=config, head_only=True,
        )  # fmt: skip
    # The plain processor cannot see num_beams: it refuses as soon as beams reorder rows.
    proc = LayerContrast(peaked, MODES[mode], mode, config, head_only=True)
    with proc, pytest.raises(RuntimeError, match=r"head_only=True\) saw rows reordered \(beam search\)"):
        peaked.generate(**batch, **gen, logits_processor=[proc])


def test_jsd_keeps_the_exact_path(peaked, batch):
    config = FORMS["difference"]
    with count_full_heads(peaked) as auto:
        peaked.generate(
            **batch, max_new_tokens=NEW, custom_generate=layer_contrast, amateur_layers=[0, 1, 2],
            layer_mode="jsd", contrast=config,
        )  # fmt: skip
    assert auto["fast"] == 0
    message = r"head_only=True needs layer_mode 'fixed' or 'fusion': layer_mode='jsd'"
    with pytest.raises(ValueError, match=message):
        LayerContrast(peaked, [0, 1, 2], "jsd", config, head_only=True)
    with pytest.raises(ValueError, match=message):
        peaked.generate(
            **batch, max_new_tokens=NEW, custom_generate=layer_contrast, amateur_layers=[0, 1, 2],
            layer_mode="jsd", head_only=True,
        )  # fmt: skip
    assert not any(layer._forward_pre_hooks for layer in peaked.model.layers)  # nothing left behind


def test_output_scores_stay_exact_unless_forced(peaked, batch):
    config = FORMS["difference"]
    out = {"return_dict_in_generate": True, "output_scores": True, "do_sample": False}
    with count_full_heads(peaked) as auto:
        got_auto = _layer(peaked, batch, "fusion", config, **out)
    exact = _layer(peaked, batch, "fusion", config, head_only=False, **out)
    forced = _layer(peaked, batch, "fusion", config, head_only=True, **out)
    assert auto["fast"] == 0
    assert all(torch.equal(a, e) for a, e in zip(got_auto.scores, exact.scores, strict=True))
    # Forced: same tokens, scores off by one constant per row on the head, -inf at the same places.
    assert forced.sequences.tolist() == exact.sequences.tolist()
    for f, e in zip(forced.scores, exact.scores, strict=True):
        assert torch.equal(torch.isinf(f), torch.isinf(e))
        shift = torch.where(torch.isinf(e), float("nan"), e - f)  # (N, V)
        lo = torch.where(shift.isnan(), float("inf"), shift).min(-1).values
        hi = torch.where(shift.isnan(), float("-inf"), shift).max(-1).values
        torch.testing.assert_close(lo, hi, rtol=0, atol=1e-4)


def test_other_processors_keep_the_exact_path(peaked, batch):
    """A repetition penalty multiplies by the score's sign, so a shift would change it: exact path."""
    config = FORMS["beta"]
    with count_full_heads(peaked) as auto:
        got = _layer(peaked, batch, "fixed", config, do_sample=False, repetition_penalty=1.3)
    assert auto["fast"] == 0
    assert got.tolist() == _layer(peaked, batch, "fixed", config, do_sample=False, head_only=False,
                                  repetition_penalty=1.3).tolist()  # fmt: skip


def test_large_heads_fall_back_to_the_full_lm_head(batch, peaked, monkeypatch):
    config = FORMS["beta"]
    flat = tiny_llama(seed=0, n_layer=3)  # near-uniform: every head is the whole vocabulary
    with count_full_heads(flat) as auto:
        got = _layer(flat, batch, "fixed", config, do_sample=False, head_only=True)
    assert auto["fast"] == 0
    want = ref.naive_greedy(
        flat, _naive_layer(flat, "fixed"), batch["input_ids"], batch["attention_mask"], config, NEW
    )
    assert got.tolist() == want.tolist()
    # With no size limit the gathered path runs on every step, whatever the union's size, still exact.
    monkeypatch.setattr(sys.modules["counterpoint.decoding.layer_contrast"], "HEAD_ONLY_MAX_FRACTION", 1.0)
    for model in (flat, peaked):
        with count_full_heads(model) as forced:
            got = _layer(model, batch, "fusion", config, do_sample=False)
        assert forced["full_extra"] == 0
        exact = _layer(model, batch, "fusion", config, do_sample=False, head_only=False)
        assert got.tolist() == exact.tolist()


def test_head_only_must_be_a_bool(peaked, batch):
    with pytest.raises(TypeError, match=r"head_only='yes' must be True or False"):
        LayerContrast(peaked, 1, head_only="yes")
    with pytest.raises(TypeError, match=r"head_only='yes' must be None \(automatic\), True or False"):
        _layer(peaked, batch, "fixed", FORMS["beta"], head_only="yes")


@pytest.mark.slow
@pytest.mark.parametrize(("layers", "mode"), [(8, "fixed"), ([4, 8], "fusion")])
def test_smollm2_head_only_equals_exact(smollm2, layers, mode):
    """On the embedded SmolLM2-135M (heads of a few tokens out of 49152): the same tokens as the full
    lm_head, greedy and sampling, with the head-only path taken on every step."""
    model, tok = smollm2
    texts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in ["What is the capital of France?", "Name a colour.", "Write a haiku about rain."]
    ]
    batch = tok(texts, return_tensors="pt", padding=True)
    config = ContrastConfig(form="difference", gamma=1.0, alpha=0.1)
    for gen in ({"do_sample": False}, {"do_sample": True, "temperature": 0.8, "top_p": 0.95}):
        kwargs = {
            "custom_generate": layer_contrast, "amateur_layers": layers, "layer_mode": mode, "contrast": config,
            "max_new_tokens": 12, "pad_token_id": tok.pad_token_id, **gen,
        }  # fmt: skip
        torch.manual_seed(0)
        with count_full_heads(model) as auto:
            got = model.generate(**batch, **kwargs)
        torch.manual_seed(0)
        exact = model.generate(**batch, head_only=False, **kwargs)
        assert got.tolist() == exact.tolist()
        assert auto["full_extra"] == 0
