"""layer_mode="dola" and the normed "jsd" variant without the reference environment: DoLa's divergence and
the true JSD against transcriptions written another way, what is refused or dropped, the command line, and
no host-device synchronisation in the step beyond greedy's own.

The token-for-token comparison with transformers 4.55.4 is in test_layer_dola_ref.py.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch.utils._python_dispatch import TorchDispatchMode

from counterpoint import cli
from counterpoint.decoding import (
    ContrastConfig,
    GenerationOptions,
    LayerContrast,
    get_strategy,
    layer_contrast,
)
from counterpoint.errors import OptionError
from tests.decoding import contrast_reference as ref
from tests.tiny_models import EOS_ID, MIXED_PROMPTS, PAD_ID, left_padded_batch, tiny_gpt2, tiny_llama

layer_module = importlib.import_module("counterpoint.decoding.layer_contrast")  # the module, not the function


def dola_select_contrast_4_55(candidates, logits_by_layer, final_logits):
    """The layer-choosing half of transformers 4.55.4's ``_dola_select_contrast``, as written there."""
    stacked = torch.stack([logits_by_layer[i] for i in candidates], dim=0)
    softmax_mature_layer = F.softmax(final_logits, dim=-1)
    softmax_premature_layers = F.softmax(stacked, dim=-1)
    avg_dist = 0.5 * (softmax_mature_layer[None, :, :] + softmax_premature_layers)
    log_softmax_mature_layer = F.log_softmax(final_logits, dim=-1)
    log_softmax_premature_layers = F.log_softmax(stacked, dim=-1)
    kl1 = F.kl_div(log_softmax_mature_layer[None, :, :], avg_dist, reduction="none").mean(-1)
    kl2 = F.kl_div(log_softmax_premature_layers, avg_dist, reduction="none").mean(-1)
    js_divs = 0.5 * (kl1 + kl2)
    js_divs = js_divs.mean(-1)
    return candidates[int(js_divs.argmax().item())], js_divs


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("c", "n", "v"), [(2, 1, 97), (4, 3, 1000), (7, 8, 4099)])
def test_dola_divergence_is_4_55s(seed, c, n, v):
    gen = torch.Generator().manual_seed(seed)
    final = torch.randn(n, v, generator=gen) * 3
    premature = torch.randn(c, n, v, generator=gen) * torch.rand(c, 1, 1, generator=gen) * 4
    premature[0, :, : v // 3] -= 200.0  # underflowing probabilities: xlogy's 0 log 0
    candidates = list(range(10, 10 + c))
    want_layer, want_js = dola_select_contrast_4_55(
        candidates, dict(zip(candidates, premature, strict=True)), final
    )
    torch.testing.assert_close(layer_module._dola_divergence(final, premature), want_js, rtol=1e-5, atol=1e-9)
    assert candidates[int(layer_module._dola_layer(final, premature))] == want_layer


@pytest.mark.parametrize("seed", range(4))
def test_jsd_is_the_jensen_shannon_divergence(seed):
    gen = torch.Generator().manual_seed(seed)
    final = torch.log_softmax(torch.randn(1, 3, 500, generator=gen) * 3, -1)
    layers = torch.log_softmax(
        torch.randn(5, 3, 500, generator=gen) * torch.rand(5, 1, 1, generator=gen) * 6, -1
    )
    layers[1, :, :200] = -200.0  # probabilities that underflow to 0 (0 log 0 = 0)
    layers = torch.log_softmax(layers, -1)
    want = torch.stack([ref._jsd_reference(final[0], layer) for layer in layers])  # (5, 3), F.kl_div
    got = layer_module._jsd(final, layers)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert torch.equal(got.argmax(0), want.argmax(0))
    assert torch.equal(
        layer_module._jsd(final, final.expand(2, -1, -1)).abs() < 1e-6, torch.ones(2, 3).bool()
    )


@pytest.mark.parametrize("kind", ["jsd", "dola"])
def test_divergences_from_log_probabilities_and_a_kept_workspace_are_the_same(kind):
    """The processor's path (the expert's log-probabilities computed once, buffers kept between steps whose
    shapes change) gives the values of the plain call, and the buffers are reused, not reallocated."""
    gen = torch.Generator().manual_seed(3)
    workspace = layer_module._Workspace()
    kept = None
    for c, n, v in [(3, 4, 700), (3, 4, 700), (2, 5, 300), (2, 5, 300)]:
        final = torch.randn(n, v, generator=gen) * 4
        premature = torch.randn(c, n, v, generator=gen) * 30  # log-probabilities down to about -100 and below
        want = layer_module._divergences(final, premature, kind)
        got = layer_module._divergences(
            torch.log_softmax(final, -1), premature, kind, workspace, normalised=True
        )
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert torch.equal(got.argmax(0), want.argmax(0))
        buffers = workspace.three(premature)
        assert all(b.shape == (c, n, v) for b in buffers)
        if kept is not None and kept[0].shape == (c, n, v):  # the same shape again: the same memory
            assert [b.data_ptr() for b in buffers] == [b.data_ptr() for b in kept]
        kept = buffers


def test_dola_divergence_survives_raw_layers_far_below_the_exp_floor():
    """A raw premature layer's logits spread over thousands (no final norm): the floored exponentials leave
    4.55's divergence and its pick unchanged."""
    gen = torch.Generator().manual_seed(0)
    final = torch.randn(4, 2000, generator=gen) * 5
    premature = torch.randn(3, 4, 2000, generator=gen) * torch.tensor([300.0, 30.0, 3.0])[:, None, None]
    candidates = [1, 2, 3]
    want_layer, want_js = dola_select_contrast_4_55(
        candidates, dict(zip(candidates, premature, strict=True)), final
    )
    torch.testing.assert_close(layer_module._dola_divergence(final, premature), want_js, rtol=1e-5, atol=1e-9)
    assert candidates[int(layer_module._dola_layer(final, premature))] == want_layer


def test_project_equals_the_lm_head():
    """The lm_head applied as one W @ X^T gives F.linear's values (float rounding aside), bias included."""
    model = tiny_llama(seed=0, n_layer=3)
    proc = LayerContrast(model, [0, 1], "dola")
    hidden = torch.randn(2, 5, 32)
    torch.testing.assert_close(proc._project(hidden), model.lm_head(hidden), rtol=1e-5, atol=1e-5)
    kept = proc._project(hidden, keep=True)  # into the processor's buffers: the same values, the same memory
    assert torch.equal(kept, proc._project(hidden))
    assert proc._project(hidden + 1, keep=True).data_ptr() == kept.data_ptr()
    model.lm_head = torch.nn.Linear(32, model.config.vocab_size, bias=True)
    proc._head = model.lm_head
    torch.testing.assert_close(proc._project(hidden), model.lm_head(hidden), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(proc._project(hidden, keep=True), model.lm_head(hidden), rtol=1e-5, atol=1e-5)
    proc.close()


def test_dola_defaults_and_buckets():
    model = tiny_llama(seed=0, n_layer=6)
    with LayerContrast(model, "high") as proc:
        assert proc.layer_mode == "dola" and proc.amateur_layers == [3, 5]
        assert proc.contrast == layer_module.DOLA == ContrastConfig(form="difference", gamma=1.0, alpha=0.1)
    with LayerContrast(model, "low", "jsd") as proc:  # the normed variant takes the same lists
        assert proc.amateur_layers == [0, 2] and proc.contrast == ContrastConfig()
    with LayerContrast(model, [1, 2], "dola", ContrastConfig(alpha=0.2)) as proc:
        assert proc.contrast == ContrastConfig(alpha=0.2)


@pytest.mark.parametrize(
    ("layers", "mode", "message"),
    [
        ("mid", "dola", r"amateur_layers='mid' is not a layer bucket; use 'low' or 'high'"),
        ("low", "fixed", r"amateur_layers='low' is a bucket of layers but layer_mode='fixed' takes one layer"),
        ([0, 7], "dola", r"layer index 7 is out of range; LlamaForCausalLM has 6 decoder layers, .*6, the final "
                         r"layer, is dropped under layer_mode='dola'"),
        ([0, -1], "dola", r"layer index -1 is out of range"),
        ([2, 2], "dola", r"repeats a layer"),
        ([6], "dola", r"amateur_layers=\[6\] holds no premature layer: 6 is LlamaForCausalLM's final layer"),
        ([1, 2], "fixed", r"layer_mode='fixed' takes one layer but amateur_layers=\[1, 2\]; use 'jsd', 'fusion' or"),
    ],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:.*is LlamaForCausalLM's final layer")
def test_bad_dola_layers(layers, mode, message):
    model = tiny_llama(seed=0, n_layer=6)
    batch = left_padded_batch(MIXED_PROMPTS)
    with pytest.raises(ValueError, match=message):
        model.generate(
            **batch, max_new_tokens=2, custom_generate=layer_contrast, amateur_layers=layers, layer_mode=mode
        )
    assert not any(layer._forward_pre_hooks for layer in model.model.layers)


def test_the_final_layer_is_dropped_with_a_warning():
    model = tiny_llama(seed=0, n_layer=6)
    batch = left_padded_batch(MIXED_PROMPTS)
    kwargs = {"max_new_tokens": 4, "custom_generate": layer_contrast, "layer_mode": "dola"}
    with pytest.warns(
        UserWarning, match=r"layer 6 is LlamaForCausalLM's final layer \(the expert itself\).*dropped"
    ):
        got = model.generate(**batch, amateur_layers=[0, 3, 6], **kwargs)
    assert got.tolist() == model.generate(**batch, amateur_layers=[0, 3], **kwargs).tolist()


def test_an_empty_bucket_is_refused():
    """'low' of a 3-layer model with tied embeddings: range(2, 1, 2) in transformers 4.55, which then fails."""
    model = tiny_gpt2(seed=0, n_layer=3)
    with pytest.raises(
        ValueError, match=r"amateur_layers='low' is empty for GPT2LMHeadModel: with 3 decoder"
    ):
        LayerContrast(model, "low")
    with LayerContrast(model, "high") as proc:
        assert proc.amateur_layers == [1]


def test_dola_refuses_head_only():
    model = tiny_llama(seed=0, n_layer=3)
    with pytest.raises(
        ValueError, match=r"head_only=True needs layer_mode 'fixed' or 'fusion': layer_mode='dola'"
    ):
        LayerContrast(model, [0, 1], "dola", head_only=True)


def test_dola_runs_under_beam_search_and_every_row_of_a_batch_shares_one_layer():
    """Beam search runs over DoLa's scores (4.55 would ignore dola_layers there); one layer per step for all
    rows: the per-step picks have one entry."""
    model = tiny_llama(seed=5, n_layer=6)
    batch = left_padded_batch(MIXED_PROMPTS)
    picks = []
    choose = layer_module._dola_layer
    layer_module._dola_layer = lambda *args, **kw: picks.append(choose(*args, **kw)) or picks[-1]
    try:
        out = model.generate(
            **batch, max_new_tokens=4, num_beams=2, custom_generate=layer_contrast, amateur_layers="low",
            layer_mode="dola",
        )  # fmt: skip
    finally:
        layer_module._dola_layer = choose
    assert out.shape == (3, batch["input_ids"].shape[1] + 4)
    assert picks and all(p.shape == (1,) for p in picks)


@pytest.mark.parametrize("mode", ["jsd", "dola"])
@pytest.mark.parametrize("rows", [(0,), (0, 1, 2)])
@pytest.mark.parametrize("gen", [{"do_sample": False}, {"do_sample": True, "top_p": 0.9}])
def test_one_token_heads_skip_the_premature_layers_and_change_no_token(mode, rows, gen):
    """A peaked model (many one-token plausible heads): the automatic path skips those rows (jsd) or steps
    (dola: when every row's head is one token) and gives the tokens of the full path."""
    model = tiny_llama(seed=5, n_layer=6)
    with torch.no_grad():
        model.lm_head.weight.mul_(60.0)
    batch = left_padded_batch([MIXED_PROMPTS[i] for i in rows])
    kw = {
        "custom_generate": layer_contrast,
        "amateur_layers": "low",
        "layer_mode": mode,
        "max_new_tokens": 10,
    }
    projected = []
    choose = layer_module.LayerContrast._choose

    def counting(self, hidden, scores):
        projected.append(hidden.shape[1])
        return choose(self, hidden, scores)

    layer_module.LayerContrast._choose = counting
    try:
        torch.manual_seed(0)
        auto = model.generate(**batch, **kw, **gen)
        auto_rows = sum(projected)
        projected.clear()
        torch.manual_seed(0)
        full = model.generate(**batch, **kw, **gen, head_only=False)
        full_rows = sum(projected)
    finally:
        layer_module.LayerContrast._choose = choose
    assert auto.tolist() == full.tolist()
    assert full_rows == 10 * auto.shape[0] and auto_rows < full_rows


# -- the strategy spec and the command line --------------------------------------------------------------------


def kwargs(**options):
    return get_strategy("layer-contrast").generate_kwargs(GenerationOptions(**options))


def test_spec_dola_takes_dolas_rule_unless_told():
    kw = kwargs(layers="low", layer_mode="dola")
    assert kw["amateur_layers"] == "low" and kw["contrast"] == layer_module.DOLA
    assert kwargs(layers=(0, 2), layer_mode="dola", form="beta")["contrast"] == ContrastConfig(form="beta")
    assert kwargs(layers=(0, 2), layer_mode="jsd")["contrast"] == ContrastConfig()
    assert kwargs(layers="high", layer_mode="fusion")["amateur_layers"] == "high"
    with pytest.raises(
        OptionError, match=r"^layers='low' is a bucket of layers \(DoLa's\) but layer_mode 'fixed'"
    ):
        kwargs(layers="low")
    with pytest.raises(
        OptionError,
        match=r"^layers='middle' must hold layer indices >= 0 \(0 = the embedding output\), or be 'low' or 'high'$",
    ):
        kwargs(layers="middle", layer_mode="dola")


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    """A saved 6-layer tiny Llama over SmolLM2's tokenizer."""
    from transformers import AutoTokenizer

    from counterpoint.models import load_language_model, resolve_language_model_path

    tok = AutoTokenizer.from_pretrained(resolve_language_model_path(None))
    model = tiny_llama(seed=5, n_layer=6, vocab_size=len(tok), hidden=16)
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id = (
            tok.pad_token_id,
            tok.eos_token_id,
            tok.bos_token_id,
        )
    path = tmp_path_factory.mktemp("tiny-6")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, load_language_model(path)


@pytest.mark.parametrize("layers", ["low", "high", "0,2,6"])
def test_cli_runs_dola_with_buckets_and_lists(cli_model, layers):
    path, (model, tok) = cli_model
    prompt = "The capital of France is"
    args = ["generate", "--model", str(path), "--strategy", "layer-contrast", "--layer-mode", "dola", "--layers",
            layers, "--max-new-tokens", "6", prompt]  # fmt: skip
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    chosen = layers if layers in ("low", "high") else [0, 2]  # 6 = the final layer, dropped
    ids = tok([prompt], return_tensors="pt")
    want = model.generate(
        **ids, max_new_tokens=6, custom_generate=layer_contrast, amateur_layers=chosen, layer_mode="dola"
    )
    assert result.stdout == tok.decode(want[0, ids["input_ids"].shape[1] :], skip_special_tokens=True) + "\n"


# -- no host-device synchronisation in the step beyond greedy's ----------------------------------------------


class CountSyncs(TorchDispatchMode):
    """Counts the operations that read a tensor's value back to the host (``.item()``, ``bool(t)``, and the
    data-dependent ``nonzero``): on a GPU each one waits for the device."""

    SYNCING = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.SYNCING:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    ("layers", "mode"), [([0, 1, 2], "jsd"), ("low", "dola"), (1, "fixed"), ([0, 2], "fusion")]
)
def test_no_sync_beyond_greedys(layers, mode):
    """On the path a GPU takes (head_only off: layer_contrast turns the head off for an lm_head off the CPU;
    the head-only product and the one-token-head skip read sizes back, which costs nothing on a CPU)."""
    model = tiny_llama(seed=5, n_layer=6)
    batch = left_padded_batch(MIXED_PROMPTS)
    gen = {"max_new_tokens": 6, "min_new_tokens": 6, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    model.generate(**batch, **gen)  # warm-up: first-call checks outside the loop
    with CountSyncs() as greedy:
        model.generate(**batch, **gen)
    kw = {"custom_generate": layer_contrast, "amateur_layers": layers, "layer_mode": mode, "head_only": False}
    model.generate(**batch, **gen, **kw)
    with CountSyncs() as ours:
        model.generate(**batch, **gen, **kw)
    assert greedy.count > 0 and ours.count == greedy.count
