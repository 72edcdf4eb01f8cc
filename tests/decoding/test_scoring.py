"""score_continuations against a naive per-position loop with the existing processors.

The reference scores token j of a pair from scratch: a fresh processor replays a generation over the
prompt and the continuation's first j tokens (the expert recomputed without a cache at every step), and
its output at the last step is the contrast score of token j. The scorer instead reads every position
from two batched forwards per model, shares identical prompts, and pads; the tokens' scores must agree in
fp32.
"""

from __future__ import annotations

import pytest
import torch

from counterpoint.decoding import (
    CD_PRESETS,
    ContrastConfig,
    GenerationOptions,
    InputContrast,
    LayerContrast,
    ModelContrast,
)
from counterpoint.decoding.scoring import (
    DOLA_MC,
    AlteredInput,
    EarlierLayers,
    Scorer,
    SecondModel,
    score_continuations,
)
from counterpoint.errors import OptionError
from tests.tiny_models import PAD_ID, tiny_gpt2, tiny_llama

# Pairs: uneven prompt and continuation lengths, a repeated prompt (shared forward), one-token rows.
PROMPTS = [[5, 17, 33, 8, 61, 12, 40], [22, 9], [70, 3, 44, 91], [22, 9], [9], [5, 17, 33, 8, 61, 12, 40]]
CONTS = [[7], [30, 31, 32], [88, 2, 5, 60], [12, 13], [40, 41, 42, 43, 44], [64, 65]]
ALTERED = [[5, 61, 12, 40], [22, 9, 30, 31], [44], [9, 22], [3, 4, 5], [61, 12]]
CONFIGS = {
    "difference": ContrastConfig(form="difference", gamma=0.8, tau=0.5, alpha=0.1),
    "beta": ContrastConfig(form="beta", beta=0.5, alpha=0.1),
    "tight": ContrastConfig(
        form="difference", gamma=1.0, tau=1.0, alpha=0.25
    ),  # some tokens outside the head
}
SOURCES = ["plain", "model-full", "model-last", "layer-fixed", "layer-jsd", "layer-fusion", "input"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def models(request):
    build = tiny_llama if request.param == "llama" else tiny_gpt2
    expert, amateur = build(seed=0, n_layer=3), build(seed=1, n_layer=1)
    with torch.no_grad():  # peaked distributions, so plausible heads are small
        for m in (expert, amateur):
            m.get_output_embeddings().weight.mul_(4.0)
    return expert, amateur


def make_scorer(source, expert, amateur, config, rule="distribution", outside_head=float("-inf")):
    """(Scorer, factory of the equivalent fresh processor for one pair, or None for plain)."""
    kw = {"rule": rule, "outside_head": outside_head}
    if source == "plain":
        return Scorer(None, **kw), None
    if source.startswith("model"):
        view = "full" if source == "model-full" else "last-token"

        def proc(i):
            mask = torch.ones(1, len(PROMPTS[i]), dtype=torch.long)
            return ModelContrast(amateur, config, attention_mask=mask, amateur_view=view)

        return Scorer(SecondModel(amateur, view), config, **kw), proc
    if source == "input":
        return Scorer(AlteredInput(), config, **kw), lambda i: InputContrast(
            expert, torch.tensor([ALTERED[i]]), None, config
        )
    layers, mode = {
        "layer-fixed": (1, "fixed"),
        "layer-jsd": ((0, 1, 2), "jsd"),
        "layer-fusion": ((0, 2), "fusion"),
    }[source]
    as_arg = layers if isinstance(layers, int) else list(layers)
    return Scorer(EarlierLayers(layers, mode), config, **kw), lambda i: LayerContrast(
        expert, as_arg, mode, config
    )


@torch.no_grad()
def naive(expert, factory, rule="distribution", outside_head=float("-inf")):
    """Per pair, per token j: a fresh processor replays the prompt and c_<j, the expert recomputed from
    scratch at every step; token j's score is read off the last step's output."""
    out = []
    for i, (prompt, cont) in enumerate(zip(PROMPTS, CONTS, strict=True)):
        row = []
        for j, token in enumerate(cont):
            proc = factory(i) if factory else None
            for t in range(j + 1):
                ids = torch.tensor([prompt + cont[:t]])
                logits = expert(input_ids=ids).logits[:, -1].float()  # LayerContrast's hooks read this pass
                scores = proc(ids, logits) if proc else torch.log_softmax(logits, -1)
            if proc:
                proc.close()
            if proc and rule == "distribution":
                scores = torch.log_softmax(scores, -1)
            value = float(scores[0, token])
            row.append(outside_head if value == float("-inf") else value)
        out.append(torch.tensor(row))
    return out


def _assert_rows_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("config", ["difference", "beta"])
def test_matches_naive_per_position_loop(models, source, config):
    expert, amateur = models
    scorer, factory = make_scorer(source, expert, amateur, CONFIGS[config])
    alt = ALTERED if source == "input" else None
    got = score_continuations(
        expert, PROMPTS, CONTS, scorer, amateur_prompt_ids=alt, batch_size=4, per_token=True
    )
    _assert_rows_equal(got, naive(expert, factory))


@pytest.mark.parametrize("source", ["model-last", "layer-jsd", "input"])
@pytest.mark.parametrize(("rule", "outside_head"), [("distribution", float("-inf")), ("raw", -1000.0)])
def test_outside_the_head_and_raw_scores_match_naive(models, source, rule, outside_head):
    expert, amateur = models
    scorer, factory = make_scorer(source, expert, amateur, CONFIGS["tight"], rule, outside_head)
    alt = ALTERED if source == "input" else None
    got = score_continuations(expert, PROMPTS, CONTS, scorer, amateur_prompt_ids=alt, per_token=True)
    want = naive(expert, factory, rule, outside_head)
    _assert_rows_equal(got, want)
    # The case is exercised: some tokens fall outside the head, others inside.
    flat = torch.cat(want)
    assert (flat == outside_head).any() and (flat != outside_head).any()


@pytest.mark.parametrize("batch_size", [1, 2, 5, 64])
def test_batch_size_and_prompt_sharing_do_not_change_scores(models, batch_size):
    expert, amateur = models
    scorers = {
        "plain": None,
        "cd": Scorer(SecondModel(amateur, "last-token"), CD_PRESETS["li2022-greedy"].contrast),
        "dola-mc": Scorer(EarlierLayers((0, 1, 2), "jsd"), **DOLA_MC),
    }
    got = score_continuations(expert, PROMPTS, CONTS, scorers, batch_size=batch_size)
    alone = {
        name: torch.cat(
            [score_continuations(expert, [p], [c], s) for p, c in zip(PROMPTS, CONTS, strict=True)]
        )
        for name, s in scorers.items()
    }
    for name in scorers:
        torch.testing.assert_close(got[name], alone[name], rtol=1e-5, atol=1e-5)


def test_several_scorers_equal_each_alone(models):
    expert, amateur = models
    scorers = {source: make_scorer(source, expert, amateur, CONFIGS["beta"])[0] for source in SOURCES}
    together = score_continuations(expert, PROMPTS, CONTS, scorers, amateur_prompt_ids=ALTERED)
    for name, s in scorers.items():
        alt = ALTERED if name == "input" else None
        torch.testing.assert_close(
            together[name], score_continuations(expert, PROMPTS, CONTS, s, amateur_prompt_ids=alt)
        )
    # Sums of the per-token scores; plain scores are log-probabilities (negative).
    assert (together["plain"] < 0).all()


def test_from_strategy_uses_the_generation_options(models):
    expert, amateur = models
    li = Scorer.from_strategy(
        "contrastive-decoding", GenerationOptions(amateur=amateur, preset="li2022-greedy", tau=1.0)
    )
    assert isinstance(li.amateur, SecondModel) and li.amateur.view == "last-token"
    assert li.contrast == ContrastConfig(form="difference", alpha=0.0, gamma=1.0, tau=1.0)
    layer = Scorer.from_strategy("layer-contrast", {"layers": (0, 2), "layer_mode": "fusion"}, rule="raw")
    assert (layer.amateur.layers, layer.amateur.mode, layer.rule) == ((0, 2), "fusion", "raw")
    assert Scorer.from_strategy("greedy").amateur is None
    assert isinstance(Scorer.from_strategy("input-contrast", {"beta": 0.3}).amateur, AlteredInput)
    with pytest.raises(
        OptionError, match="strategy='contrastive-search' has no next-token distribution to score"
    ):
        Scorer.from_strategy("contrastive-search")
    with pytest.raises(OptionError, match=r"amateur='str' must be a loaded model"):
        Scorer.from_strategy("contrastive-decoding", {"amateur": "some/name"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_ids": [[1], []]}, r"prompt_ids\[1\]=\[\] is empty"),
        ({"continuation_ids": [[1]]}, r"continuation_ids='<1 rows>' must hold one row per pair \(2\)"),
        ({"continuation_ids": [[1], [2.5]]}, r"continuation_ids\[1\]=\[2.5\] must hold integer token ids"),
        ({"prompt_ids": torch.ones(2, 3)}, r"prompt_ids='Tensor' must be a list of token-id lists"),
        ({"batch_size": 0}, r"batch_size=0 must be an int >= 1"),
        (
            {"amateur_prompt_ids": [[1], [2]]},
            r"amateur_prompt_ids='<given>' applies to AlteredInput scorers only",
        ),
        ({"scorer": Scorer(AlteredInput())}, r"amateur_prompt_ids is needed by an AlteredInput scorer"),
        ({"scorer": {"x": "plain"}}, r"scorer\['x'\]='str' must be a Scorer or None"),
    ],
)
def test_bad_input_is_refused_before_any_forward(kwargs, message):
    class Untouchable(torch.nn.Module):
        def forward(self, *args, **kw):
            raise AssertionError("a forward ran before the input was checked")

    args = {"prompt_ids": [[1, 2], [3]], "continuation_ids": [[4], [5, 6]], **kwargs}
    with pytest.raises(OptionError, match=message):
        score_continuations(Untouchable(), **args)


def test_bad_scorer_fields():
    with pytest.raises(OptionError, match=r"rule='sum' is not one of: distribution, raw"):
        Scorer(rule="sum")
    with pytest.raises(
        OptionError, match=r"amateur='int' must be SecondModel, EarlierLayers, AlteredInput or None"
    ):
        Scorer(3)
    with pytest.raises(OptionError, match=r"amateur_view='prefix' is not one of: full, last-token"):
        SecondModel(tiny_llama(), "prefix")


def test_layer_hooks_are_removed(models):
    expert, _ = models
    score_continuations(expert, PROMPTS, CONTS, Scorer(EarlierLayers((0, 1), "jsd")))
    assert (
        all(not layer._forward_pre_hooks for layer in expert.base_model.layers)
        if hasattr(expert.base_model, "layers")
        else all(not block._forward_pre_hooks for block in expert.base_model.h)
    )


def test_pad_token_is_masked(models):
    expert, _ = models
    a = score_continuations(expert, PROMPTS, CONTS, pad_token_id=PAD_ID)
    b = score_continuations(expert, PROMPTS, CONTS, pad_token_id=93)
    torch.testing.assert_close(a, b)
