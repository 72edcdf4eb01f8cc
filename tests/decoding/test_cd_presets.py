"""Contrastive-decoding presets against a transcription of Li et al.'s reference code (and the registry).

The reference functions below are written from XiangLi1999/ContrastiveDecoding (commit 170e914), not from
counterpoint: ``transformers/src/transformers/generation_utils.py`` (``greedy_search`` and ``sample``
with ``teacher_student=True``), ``generation_logits_process.py`` (``EntrPLogitsWarper``: the
plausibility mask) and ``text-generation/run_generation.py``
(``ignore_prefix_prepare_inputs_for_generation``: the amateur reads the prompt's last token at position
0, then the continuation). Every step recomputes both models from scratch, one prompt at a time, with
the models' default position ids, as their code ran them.
"""

from __future__ import annotations

import math

import pytest
import torch

from counterpoint.decoding import CD_PRESETS, GenerationOptions, contrastive_decoding, get_strategy
from tests.tiny_models import EOS_ID, MIXED_PROMPTS, left_padded_batch, tiny_gpt2, tiny_llama

NEW = 10


def _pair(family: str, sharpness: float):
    build = tiny_gpt2 if family == "gpt2" else tiny_llama
    expert, amateur = build(seed=0, n_layer=3), build(seed=1, n_layer=1)
    with torch.no_grad():  # scaled output rows: peaked distributions, where a plausibility mask bites
        for model in (expert, amateur):
            model.get_output_embeddings().weight.mul_(sharpness)
    return expert, amateur


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request):
    """(expert, amateur): GPT-2 as in Li et al.'s runs, and Llama for the rotary-position layout."""
    return _pair(request.param, 8.0)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def flat_pair(request):
    """Random-initialized output rows: flat distributions, so the plausible head often holds > 50 tokens."""
    return _pair(request.param, 1.0)


def _last_logits(model, ids: list[int]) -> torch.Tensor:
    """One prompt, no padding, no cache, the model's own default positions (0, 1, ...)."""
    return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def _entrp_mask(scores: torch.Tensor, relative_top: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """EntrPLogitsWarper (generation_logits_process.py lines 235-246): log-softmax, -inf below the
    threshold min(k-th largest, max + log(relative_top))."""
    normalized = scores.log_softmax(-1)
    sorted_logits = normalized.sort(descending=True).values
    thresh = torch.minimum(sorted_logits[min_tokens_to_keep - 1], normalized.max() + math.log(relative_top))
    return normalized.masked_fill(normalized < thresh, float("-inf"))


def _li_scores(expert, amateur, ids, prompt_len, st_coef, student_temperature, relative_top):
    """Their next-token scores for one row: the expert on the whole sequence, the amateur on the prompt's
    last token and the continuation (ignore_prefix), amateur logits divided by student_temperature."""
    teacher = _last_logits(expert, ids)
    teacher[EOS_ID] = float("-inf")  # MinLengthLogitsProcessor: their runs set min_length = max_length
    if relative_top is not None:  # sample(): relative_top 0.1; greedy_search(): None (no mask)
        teacher = _entrp_mask(teacher, relative_top)
    student = _last_logits(amateur, ids[prompt_len - 1 :]) / student_temperature  # TemperatureLogitsWarper
    return teacher - st_coef * student


@torch.no_grad()
def li_greedy(expert, amateur, prompt, st_coef=1.0, student_temperature=0.5, steps=NEW):
    """greedy_search with teacher_student (generation_utils.py lines 1927-1964)."""
    ids = list(prompt)
    for _ in range(steps):
        ids.append(
            int(_li_scores(expert, amateur, ids, len(prompt), st_coef, student_temperature, None).argmax())
        )
    return ids[len(prompt) :]


def _ours(expert, amateur, prompts, options, **gen):
    batch = left_padded_batch(prompts)
    kwargs = get_strategy("contrastive-decoding").generate_kwargs(
        GenerationOptions(amateur=amateur, **options)
    )
    out = expert.generate(**batch, max_new_tokens=NEW, min_new_tokens=NEW, **kwargs, **gen)
    return batch, out


def test_li2022_greedy_matches_their_code_token_for_token(pair):
    expert, amateur = pair
    _, out = _ours(expert, amateur, MIXED_PROMPTS, {"preset": "li2022-greedy"})
    got = out[:, -NEW:].tolist()
    want = [li_greedy(expert, amateur, p) for p in MIXED_PROMPTS]
    assert got == want
    # The comparison can fail: the amateur's view and the missing mask both change these tokens.
    full_view = [li_greedy_full_prefix(expert, amateur, p) for p in MIXED_PROMPTS]
    assert full_view != want
    _, masked = _ours(expert, amateur, MIXED_PROMPTS, {"preset": "li2022-greedy", "alpha": 0.1})
    assert masked[:, -NEW:].tolist() != want


@torch.no_grad()
def li_greedy_full_prefix(expert, amateur, prompt, st_coef=1.0, student_temperature=0.5):
    """The same rule with ignore_prefix off (their --ignore_prefix no): the amateur reads everything."""
    ids = list(prompt)
    for _ in range(NEW):
        teacher = _last_logits(expert, ids)
        teacher[EOS_ID] = float("-inf")
        student = _last_logits(amateur, ids) / student_temperature
        ids.append(int((teacher - st_coef * student).argmax()))
    return ids[len(prompt) :]


def test_li2022_greedy_with_st_coef_0_8(pair):
    """Their other greedy setting (submit_decoding.py line 18) is the preset with gamma overridden."""
    expert, amateur = pair
    _, out = _ours(expert, amateur, MIXED_PROMPTS, {"preset": "li2022-greedy", "gamma": 0.8})
    assert out[:, -NEW:].tolist() == [li_greedy(expert, amateur, p, st_coef=0.8) for p in MIXED_PROMPTS]


@torch.no_grad()
def test_li2022_sample_draws_from_their_distribution(flat_pair):
    """At every step of a sampled run, the distribution generate() samples from is theirs (sample(),
    generation_utils.py lines 2207-2247: masked expert log-probs minus st_coef x amateur logits / tau,
    softmax, no top-k or top-p)."""
    expert, amateur = flat_pair
    torch.manual_seed(0)
    _, out = _ours(
        expert,
        amateur,
        MIXED_PROMPTS,
        {"preset": "li2022-sample"},
        output_scores=True,
        return_dict_in_generate=True,
    )
    preset = CD_PRESETS["li2022-sample"].options
    widest = 0
    for r, prompt in enumerate(MIXED_PROMPTS):
        continuation = out.sequences[r, -NEW:].tolist()
        for t in range(NEW):
            ids = list(prompt) + continuation[:t]
            theirs = _li_scores(
                expert, amateur, ids, len(prompt), preset["gamma"], preset["tau"], preset["alpha"]
            )
            ours = out.scores[t][r].float()
            assert torch.allclose(torch.softmax(ours, -1), torch.softmax(theirs, -1), atol=1e-6)
            widest = max(widest, int(torch.isfinite(theirs).sum()))
    # Some step keeps more than generate()'s default top-k of 50: the preset's top_k 0 is what keeps them.
    assert widest > 50


def test_presets_via_the_api_equal_the_registry(pair):
    expert, amateur = pair
    batch = left_padded_batch(MIXED_PROMPTS)
    for name, preset in CD_PRESETS.items():
        if preset.options["do_sample"]:
            continue
        direct = expert.generate(
            **batch, custom_generate=contrastive_decoding, amateur_model=amateur, max_new_tokens=NEW, min_new_tokens=NEW,
            **preset.generate_kwargs(),
        )  # fmt: skip
        _, via_registry = _ours(expert, amateur, MIXED_PROMPTS, {"preset": name})
        assert direct[:, -NEW:].tolist() == via_registry[:, -NEW:].tolist(), name


def test_every_preset_names_its_source():
    assert set(CD_PRESETS) == {"li2022-greedy", "li2022-sample", "obrien2023"}
    for preset in CD_PRESETS.values():
        assert "line" in preset.source or "sec." in preset.source, preset.name


def test_explicit_options_override_the_preset():
    spec = get_strategy("contrastive-decoding")
    values = spec.resolve(
        GenerationOptions(amateur="m", preset="li2022-greedy", tau=1.0, amateur_view="full")
    )
    assert (values["form"], values["alpha"], values["gamma"]) == ("difference", 0.0, 1.0)  # from the preset
    assert (values["tau"], values["amateur_view"]) == (1.0, "full")  # given
    values = spec.resolve(GenerationOptions(amateur="m", preset="obrien2023"))
    assert (values["form"], values["beta"], values["alpha"], values["tau"]) == ("beta", 0.5, 0.1, 1.0)
    # Without a preset the defaults stay counterpoint's own.
    values = spec.resolve(GenerationOptions(amateur="m"))
    assert (values["form"], values["amateur_view"], values["alpha"]) == ("beta", "full", 0.1)


def test_unknown_preset_is_refused():
    from counterpoint.errors import OptionError

    with pytest.raises(
        OptionError, match=r"preset='li2023' is not one of: li2022-greedy, li2022-sample, obrien2023"
    ):
        get_strategy("contrastive-decoding").resolve(GenerationOptions(amateur="m", preset="li2023"))


def test_alpha_zero_masks_nothing():
    from counterpoint.decoding import ContrastConfig, contrast_scores, plausible_head

    expert = torch.tensor([[9.0, 0.0, -30.0, 2.0]])
    amateur = torch.tensor([[1.0, 3.0, -2.0, 0.0]])
    assert plausible_head(expert.log_softmax(-1), 0.0).all()
    scores = contrast_scores(expert, amateur, ContrastConfig(form="difference", alpha=0.0))
    assert torch.isfinite(scores).all()
    assert torch.allclose(scores, expert.log_softmax(-1) - amateur.log_softmax(-1))
    # The smallest positive alpha still masks the -30 logit's token: 0 is no mask, not a small threshold.
    assert not plausible_head(expert.log_softmax(-1), 1e-12)[0, 2]
