"""Contrastive search against transformers 4.55.4's built-in one, token for token in fp32.

transformers 4.55 is the last release whose ``generate(penalty_alpha=a, top_k=k)`` runs contrastive
search itself. It lives in .venv-ref (scripts/setup_ref.sh); these tests save model folders, run it
there in a subprocess (tests/ref_env.py, tests/ref_driver.py) and compare its sequences with
``generate(custom_generate=contrastive_search, ...)`` here: batched, left padded, rows of different
lengths, EOS on, so that rows finish at different steps and are padded after.

The reference loads with ``attn_implementation="eager"``. With SDPA (its default) on torch 2.13,
transformers 4.55.4 leaves all-zero hidden states at left-padding positions; its degeneration penalty
divides them by their zero norm, every candidate of a padded row scores NaN, and argmax falls back to
the most probable token: padded rows decode greedily. Eager attention gives each row the tokens it
gets alone, as the naive reference in test_contrastive_search.py does.

Before any token is compared, one forward pass in each environment must give the same logits: a
config field renamed between releases (RoPE's ``rope_parameters`` in 5.x, ``rope_theta`` in 4.55)
would otherwise make the comparison meaningless. The tiny Llama uses rope_theta=500000 for that
reason: loaded with 4.55's default of 10000, its logits would differ.
"""

import pytest
import torch
from transformers import LlamaForCausalLM

from counterpoint.decoding import contrastive_search
from tests.ref_env import batch_job, run_reference
from tests.tiny_models import EOS_ID, MIXED_PROMPTS, PAD_ID, left_padded_batch, tiny_gpt2, tiny_llama

# Four prompts of four lengths, no EOS inside.
PROMPTS = [*MIXED_PROMPTS, [9, 14, 60, 2, 77]]
SETTINGS = [(0.6, 4), (0.4, 3)]  # (penalty_alpha, top_k)
MAX_NEW = 16
ROPE_THETA = 500000.0
REFERENCE_LOAD = {"attn_implementation": "eager"}


def tiny_llama_long_rope(seed: int):
    """tests.tiny_models.tiny_llama with rope_theta=500000 instead of the default 10000."""
    config = tiny_llama(seed=seed).config
    config.rope_parameters = {"rope_type": "default", "rope_theta": ROPE_THETA}
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    return model


# Seeds chosen so that, with EOS on, some rows end early and others run to MAX_NEW (checked below).
MODELS = {"gpt2": lambda: tiny_gpt2(seed=13), "llama": lambda: tiny_llama_long_rope(seed=12)}


def position_ids(batch):
    """Positions counted from each row's first real token (left padding), as generate() computes them."""
    return (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)


def end_steps(new_tokens: torch.Tensor, eos: int) -> list[int | None]:
    """Per row, the step at which it produced EOS (None: it ran to the end)."""
    return [row.index(eos) if eos in row else None for row in new_tokens.tolist()]


def ours(model, batch, alpha, k, max_new_tokens):
    return model.generate(
        **batch,
        custom_generate=contrastive_search,
        penalty_alpha=alpha,
        top_k=k,
        max_new_tokens=max_new_tokens,
    )


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """Both tiny models, saved and run once in .venv-ref; returns (models, driver output)."""
    work = tmp_path_factory.mktemp("ref")
    batch = left_padded_batch(PROMPTS)
    models, jobs = {}, []
    for arch, make in MODELS.items():
        models[arch] = make()
        folder = work / arch
        models[arch].save_pretrained(folder)
        forward = batch | {"position_ids": position_ids(batch)}
        jobs.append(batch_job(f"{arch}/forward", folder, "forward", forward, from_pretrained=REFERENCE_LOAD))
        for alpha, k in SETTINGS:
            kwargs = {
                "penalty_alpha": alpha,
                "top_k": k,
                "max_new_tokens": MAX_NEW,
                "eos_token_id": EOS_ID,
                "pad_token_id": PAD_ID,
            }
            job = batch_job(f"{arch}/{alpha}/{k}", folder, "generate", batch, kwargs=kwargs)
            jobs.append(job | {"from_pretrained": REFERENCE_LOAD})
    return models, run_reference(jobs, work / "run")


@pytest.mark.parametrize("arch", list(MODELS))
def test_saved_tiny_model_loads_identically_in_transformers_4_55(arch, tiny_reference):
    models, ref = tiny_reference
    batch = left_padded_batch(PROMPTS)
    with torch.no_grad():
        logits = models[arch](**batch, position_ids=position_ids(batch)).logits
    want = ref["results"][f"{arch}/forward"]["logits"]
    real = batch["attention_mask"].bool()  # padding positions' logits are never read
    torch.testing.assert_close(want[real], logits[real], rtol=1e-5, atol=1e-5)
    if arch == "llama":
        seen = next(c for folder, c in ref["configs"].items() if folder.endswith("llama"))
        assert seen["rope_theta"] == ROPE_THETA


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize(("alpha", "k"), SETTINGS)
def test_matches_transformers_4_55_contrastive_search(arch, alpha, k, tiny_reference):
    models, ref = tiny_reference
    batch = left_padded_batch(PROMPTS)
    got = ours(models[arch], batch, alpha, k, MAX_NEW)
    want = ref["results"][f"{arch}/{alpha}/{k}"]["sequences"]
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("arch", list(MODELS))
def test_reference_runs_finish_rows_at_different_steps(arch, tiny_reference):
    """The comparisons above cover EOS: in some run a row ends early while another runs to the end."""
    _, ref = tiny_reference
    width = left_padded_batch(PROMPTS)["input_ids"].shape[1]
    ends = []
    for alpha, k in SETTINGS:
        new = ref["results"][f"{arch}/{alpha}/{k}"]["sequences"][:, width:]
        ends += end_steps(new, EOS_ID)
        for row, end in zip(new.tolist(), end_steps(new, EOS_ID), strict=True):
            if end is not None:
                assert set(row[end + 1 :]) <= {PAD_ID}, "a finished row is padded"
    assert any(end is not None and end < MAX_NEW - 1 for end in ends) and None in ends


@pytest.mark.slow
def test_embedded_smollm2_matches_transformers_4_55(smollm2, tmp_path):
    from counterpoint.models import resolve_language_model_path

    model, tokenizer = smollm2
    folder = resolve_language_model_path(None)
    question = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France? Answer with one word."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    prompts = ["The history of the printing press", question, "My favourite recipe for soup is"]
    batch = dict(tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False))
    settings = [(0.6, 4), (0.5, 6)]
    max_new = 24
    eos = tokenizer.eos_token_id
    jobs = [
        batch_job("forward", folder, "forward", batch | {"position_ids": position_ids(batch)}),
        *(
            batch_job(
                f"{alpha}/{k}",
                folder,
                "generate",
                batch,
                kwargs={
                    "penalty_alpha": alpha,
                    "top_k": k,
                    "max_new_tokens": max_new,
                    "eos_token_id": eos,
                    "pad_token_id": model.generation_config.pad_token_id,
                },
            )
            for alpha, k in settings
        ),
    ]
    for job in jobs:
        job["from_pretrained"] = REFERENCE_LOAD
    ref = run_reference(jobs, tmp_path)

    # The 5.x config keeps rope_theta=100000 in rope_parameters; 4.55 must see it, and give our logits.
    assert ref["configs"][folder]["rope_theta"] == model.config.rope_parameters["rope_theta"] == 100000.0
    with torch.no_grad():
        logits = model(**batch, position_ids=position_ids(batch)).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ref["results"]["forward"]["logits"][real], logits[real], rtol=1e-4, atol=1e-4)

    width = batch["input_ids"].shape[1]
    for alpha, k in settings:
        got = ours(model, batch, alpha, k, max_new)
        want = ref["results"][f"{alpha}/{k}"]["sequences"]
        assert got.tolist() == want.tolist(), (alpha, k)
        # The short answer ends with EOS while other rows run on: EOS handling is covered.
        ends = end_steps(want[:, width:], eos)
        assert ends[1] is not None and any(end is None or end > ends[1] for end in ends), ends
