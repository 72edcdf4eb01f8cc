"""``layer_contrast(layer_mode="dola")`` against transformers 4.55.4's built-in DoLa, token for token in fp32.

transformers 4.55 is the last release whose ``generate(dola_layers=...)`` runs DoLa itself. It lives in
.venv-ref (scripts/setup_ref.sh); these tests save model folders, run it there in a subprocess
(tests/ref_env.py; tests/decoding/dola_ref_driver.py, which also records the candidate layers 4.55 built
and the layer it contrasted at each step) and compare with counterpoint: the candidates and the chosen
layer step by step, the processed scores (``output_scores``) and the tokens.

Covered: DoLa's ``"low"`` and ``"high"`` buckets on models with tied embeddings (GPT-2: layers 0 and 1
skipped; a 2-layer Llama: one candidate, no divergence) and untied ones (Llama), a model deeper than 40
layers (the buckets' other rule), a list holding the final layer (dropped, with a warning here), batch 1
(the original DoLa code's setting) and a left-padded batch of three (4.55 picks one layer for the whole
batch), greedy, sampling and the recommended ``repetition_penalty=1.2``.

Before any token is compared, one forward pass in each environment must give the same logits.
"""

from __future__ import annotations

import copy
import importlib
import os
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from counterpoint.decoding import layer_contrast
from tests.ref_env import batch_job, require_ref_python
from tests.tiny_models import EOS_ID, MIXED_PROMPTS, PAD_ID, left_padded_batch, tiny_gpt2, tiny_llama

DRIVER = Path(__file__).with_name("dola_ref_driver.py")
layer_module = importlib.import_module("counterpoint.decoding.layer_contrast")  # the module, not the function
REFERENCE_LOAD = {"attn_implementation": "eager"}
NEW = 12


def run_dola_reference(jobs: list[dict], work: Path) -> dict:
    """The jobs run by tests/decoding/dola_ref_driver.py in .venv-ref (as tests/ref_env.run_reference)."""
    python = require_ref_python()
    work.mkdir(parents=True, exist_ok=True)
    (work / "in.json").write_text(__import__("json").dumps({"jobs": jobs}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # nothing from this checkout: the reference runs transformers 4.55.4 alone
    proc = subprocess.run(
        [str(python), str(DRIVER), str(work / "in.json"), str(work / "out.pt")],
        cwd=work, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"dola_ref_driver.py failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    out = torch.load(work / "out.pt", weights_only=True)
    if out["versions"]["transformers"] != "4.55.4":
        pytest.fail(f"{python} runs transformers {out['versions']['transformers']}, not 4.55.4: rebuild it")
    return out


def _peaked(model, scale: float):
    """Sharper distributions (random tiny models are near uniform): relative_top 0.1 then masks tokens."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(scale)
    return model


def tied_llama(n_layer: int):
    """A tiny Llama whose lm_head is its input embedding (tie_word_embeddings=True)."""
    config = tiny_llama(n_layer=n_layer).config
    config.tie_word_embeddings = True
    torch.manual_seed(4)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


# name -> (model factory, layer specs: DoLa's buckets and lists)
MODELS = {
    "gpt2": (lambda: _peaked(tiny_gpt2(seed=3, n_layer=10), 6.0), ["low", "high", [0, 3, 5]]),
    "llama": (lambda: _peaked(tiny_llama(seed=5, n_layer=6), 8.0), ["low", "high", [0, 1, 3, 6]]),
    "llama-deep": (lambda: _peaked(tiny_llama(seed=6, n_layer=42), 8.0), ["low", "high"]),
    "llama-tied-2": (lambda: _peaked(tied_llama(2), 3.0), ["low", "high"]),
}
SOLO = [MIXED_PROMPTS[0], MIXED_PROMPTS[2]]  # batch-1 prompts


def _key(layers) -> str:
    return layers if isinstance(layers, str) else ",".join(map(str, layers))


def _cases(arch):
    """(job id, batch, layers, generate kwargs, seed) for one model."""
    _, specs = MODELS[arch]
    out = []
    for p, prompt in enumerate(SOLO):
        for layers in specs:
            out.append((f"{arch}/p{p}/{_key(layers)}", left_padded_batch([prompt]), layers, {}, None))
    batch3 = left_padded_batch(MIXED_PROMPTS)
    out.append((f"{arch}/batch3/high", batch3, "high", {}, None))
    # At batch 1: under left padding 4.55's repetition penalty also penalises the pad token, 5.x's skips the
    # padding (prompt_ignore_length), a difference of the two releases' processor, not of DoLa.
    out.append((f"{arch}/p1/low/rep", left_padded_batch([SOLO[1]]), "low", {"repetition_penalty": 1.2}, None))
    sample = {"do_sample": True, "temperature": 0.8, "top_k": 10}
    out.append((f"{arch}/p0/high/sample", left_padded_batch([SOLO[0]]), "high", sample, 7))
    return out


def _gen_kwargs(layers, extra):
    return {
        "max_new_tokens": NEW, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID, "return_dict_in_generate": True,
        "output_scores": True, **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Every tiny model saved and run once in .venv-ref; returns (models, driver output)."""
    work = tmp_path_factory.mktemp("dola")
    models, jobs = {}, []
    for arch, (make, _) in MODELS.items():
        models[arch] = make()
        folder = work / arch
        models[arch].save_pretrained(folder)
        batch = left_padded_batch(MIXED_PROMPTS)
        forward = batch | {"position_ids": (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)}
        jobs.append(batch_job(f"{arch}/forward", folder, "forward", forward, from_pretrained=REFERENCE_LOAD))
        for job_id, batch, layers, extra, seed in _cases(arch):
            kwargs = {"dola_layers": layers, **_gen_kwargs(layers, extra)}
            job = batch_job(job_id, folder, "generate", batch, kwargs=kwargs, from_pretrained=REFERENCE_LOAD)
            jobs.append(job | {"seed": seed})
    return models, run_dola_reference(jobs, work / "run")


def ours(model, batch, layers, extra, seed):
    """counterpoint's DoLa, and the layer it picked at every step (None: a single candidate)."""
    picks = []
    choose = layer_module._dola_layer

    def recording(*args, **kwargs):
        pick = choose(*args, **kwargs)
        picks.append(pick)
        return pick

    layer_module._dola_layer = recording
    try:
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(
            **batch, custom_generate=layer_contrast, amateur_layers=layers, layer_mode="dola",
            **_gen_kwargs(layers, extra),
        )  # fmt: skip
    finally:
        layer_module._dola_layer = choose
    return out, [int(p) for p in picks]


@pytest.mark.parametrize("arch", list(MODELS))
def test_saved_tiny_model_loads_identically_in_transformers_4_55(arch, reference):
    models, ref = reference
    batch = left_padded_batch(MIXED_PROMPTS)
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = models[arch](**batch, position_ids=positions).logits
    want = ref["results"][f"{arch}/forward"]["logits"]
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(want[real], logits[real], rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*final layer \\(the expert itself\\)")
@pytest.mark.parametrize("arch", list(MODELS))
def test_matches_transformers_4_55_dola(arch, reference):
    models, ref = reference
    model = models[arch]
    n_layers = model.config.num_hidden_layers
    for job_id, batch, layers, extra, seed in _cases(arch):
        want = ref["results"][job_id]
        record = ref["dola"][job_id]
        if isinstance(layers, list) and n_layers in layers:
            with pytest.warns(UserWarning, match=rf"layer {n_layers} is \w+'s final layer .* dropped"):
                got, picks = ours(model, batch, layers, extra, seed)
        else:
            got, picks = ours(model, batch, layers, extra, seed)
        proc = layer_module.LayerContrast(model, layers, "dola") if not isinstance(layers, list) else None
        if proc is not None:  # the buckets, as 4.55 built them
            assert proc.amateur_layers == record["candidates"], job_id
            proc.close()
        chosen = (
            [record["candidates"][p] for p in picks]
            if picks
            else record["candidates"] * len(record["chosen"])
        )
        assert chosen == record["chosen"], job_id
        assert got.sequences.tolist() == want["sequences"].tolist(), job_id
        scores = torch.stack(got.scores)
        assert torch.equal(torch.isinf(scores), torch.isinf(want["scores"])), job_id
        finite = ~torch.isinf(scores)
        torch.testing.assert_close(scores[finite], want["scores"][finite], rtol=1e-4, atol=1e-4, msg=job_id)
        # Without output_scores the steps where every row's head is one token skip the premature layers.
        if seed is not None:
            torch.manual_seed(seed)
        plain = model.generate(
            **batch, custom_generate=layer_contrast, amateur_layers=layers, layer_mode="dola",
            **{k: v for k, v in _gen_kwargs(layers, extra).items() if k not in ("output_scores", "return_dict_in_generate")},
        )  # fmt: skip
        assert plain.tolist() == want["sequences"].tolist(), job_id


def test_the_comparisons_cover_what_they_claim(reference):
    """The cases tell the rules apart: the divergence picks different layers over the steps, relative_top
    masks tokens, the contrast changes tokens (on the Llamas: on the tied models the raw residual stream is
    dominated by the input token's own embedding, in the final and premature layers alike, and greedy's
    token survives; their scores, compared above, still carry the premature layer), and one layer per
    batch is not every row's own choice."""
    models, ref = reference
    assert any(len(set(r["chosen"])) > 1 for r in ref["dola"].values())
    assert ref["dola"]["llama-tied-2/p0/low"]["candidates"] == [1]
    assert ref["dola"]["gpt2/p0/low"]["candidates"] == [2, 4]  # tied: layers 0 and 1 skipped
    assert ref["dola"]["llama/p0/low"]["candidates"] == [0, 2]
    assert ref["dola"]["llama-deep/p0/high"]["candidates"] == list(range(22, 42, 2))
    assert ref["dola"]["llama/p0/0,1,3,6"]["candidates"] == [0, 1, 3]  # the final layer dropped
    for job_id in ref["dola"]:
        scores = ref["results"][job_id]["scores"]
        assert torch.isinf(scores).any() and torch.isfinite(scores).sum(-1).gt(1).any(), job_id
    for arch in ("llama", "llama-deep"):
        changed = []
        for job_id, batch, _, extra, seed in _cases(arch):
            if seed is None:
                greedy = models[arch].generate(
                    **batch, max_new_tokens=NEW, eos_token_id=EOS_ID, pad_token_id=PAD_ID, **extra
                )
                changed.append(greedy.tolist() != ref["results"][job_id]["sequences"].tolist())
        assert any(changed), arch
    # One layer per batch: in the batch of three, row 0 run alone picks another layer at the first step.
    _, alone = ours(models["gpt2"], left_padded_batch([MIXED_PROMPTS[0]]), "high", {}, None)
    batch3 = ref["dola"]["gpt2/batch3/high"]
    assert batch3["candidates"][alone[0]] != batch3["chosen"][0]


@pytest.mark.slow
def test_embedded_smollm2_matches_transformers_4_55_dola(smollm2, tmp_path):
    """SmolLM2-135M-Instruct (30 layers, tied embeddings): both buckets and a list, three prompts, batch 1."""
    from counterpoint.models import resolve_language_model_path

    model, tokenizer = smollm2
    folder = resolve_language_model_path(None)
    question = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer with one word."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    prompts = ["The history of the printing press", question, "My favourite recipe for soup is"]
    specs = ["low", "high", [0, 4, 8, 12]]
    max_new = 24
    gen = {
        "max_new_tokens": max_new, "eos_token_id": tokenizer.eos_token_id, "output_scores": True,
        "return_dict_in_generate": True, "pad_token_id": model.generation_config.pad_token_id,
    }  # fmt: skip
    batches = [dict(tokenizer([p], return_tensors="pt", add_special_tokens=False)) for p in prompts]
    jobs = [
        batch_job(f"{p}/{_key(layers)}", folder, "generate", batch, kwargs={"dola_layers": layers, **gen})
        for p, batch in enumerate(batches)
        for layers in specs
    ]
    forward = batches[0] | {"position_ids": torch.arange(batches[0]["input_ids"].shape[1])[None]}
    jobs.append(batch_job("forward", folder, "forward", forward))
    ref = run_dola_reference(jobs, tmp_path)
    with torch.no_grad():
        logits = model(**batches[0]).logits
    torch.testing.assert_close(ref["results"]["forward"]["logits"], logits, rtol=1e-4, atol=1e-4)
    assert ref["dola"]["0/low"]["candidates"] == list(range(2, 15, 2))
    assert ref["dola"]["0/high"]["candidates"] == list(range(15, 30, 2))
    for p, batch in enumerate(batches):
        for layers in specs:
            job_id = f"{p}/{_key(layers)}"
            want = ref["results"][job_id]["sequences"].tolist()
            kwargs = {"custom_generate": layer_contrast, "amateur_layers": layers, "layer_mode": "dola"}
            assert model.generate(**batch, **kwargs, **gen).sequences.tolist() == want, job_id
            # without output_scores, steps whose head is one token skip the premature layers
            plain = {k: v for k, v in gen.items() if k not in ("output_scores", "return_dict_in_generate")}
            assert model.generate(**batch, **kwargs, **plain).tolist() == want, job_id
