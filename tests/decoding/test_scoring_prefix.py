"""score_continuations with shared prefixes (``prefix_lengths=``) against a plain forward per pair.

The reference runs each (prompt + continuation) from scratch in one forward, no cache, no padding, and reads
the continuation tokens' log-probabilities; the scorer runs each batch's distinct prefixes once, every
prompt's remainder on a copy of its prefix's cache rows, then the continuations. Scores must agree in fp32
whatever the prefix lengths (0, past the prompt, mixed within a batch), and the contrast scorers must give
the same scores with and without sharing.
"""

from __future__ import annotations

import pytest
import torch

from counterpoint.decoding import ContrastConfig
from counterpoint.decoding.scoring import (
    AlteredInput,
    EarlierLayers,
    Scorer,
    SecondModel,
    score_continuations,
)
from counterpoint.errors import OptionError
from tests.tiny_models import tiny_gpt2, tiny_llama

torch.set_num_threads(1)

HEAD = [5, 17, 33, 8, 61]  # an "instruction" every prompt starts with
DEMO_A, DEMO_B = [12, 40, 41], [70, 3]
QUERIES = [[22, 9, 14], [9], [44, 91, 23, 2], [22, 9, 14]]
PROMPTS = [HEAD + d + q for d in (DEMO_A, DEMO_B) for q in QUERIES] + [[9], [5, 17]]
CONTS = [[7], [30, 31], [88, 2, 5], [12]] * 2 + [[40, 41], [6]]
ALTERED = [[3, 4, 5]] * len(PROMPTS)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request):
    build = tiny_llama if request.param == "llama" else tiny_gpt2
    m = build(seed=0, n_layer=3)
    with torch.no_grad():
        m.get_output_embeddings().weight.mul_(4.0)
    return m


@torch.no_grad()
def naive(model, prompt, cont):
    """Per-token log-probabilities of ``cont`` after ``prompt``: one forward of the whole row, no cache."""
    ids = torch.tensor([prompt + cont])
    logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return torch.stack([logp[len(prompt) - 1 + j, t] for j, t in enumerate(cont)])


PREFIXES = {
    "instruction + demonstration": [len(HEAD) + len(DEMO_A)] * 4 + [len(HEAD) + len(DEMO_B)] * 4 + [0, 1],
    "instruction only": [len(HEAD)] * len(PROMPTS),
    "mixed, some empty": [7, 0, 5, 99, 2, 8, 0, 6, 0, 3],
    "past every prompt": [99] * len(PROMPTS),
    "none": [0] * len(PROMPTS),
}


@pytest.mark.parametrize("batch_size", [3, 5, 64])
@pytest.mark.parametrize("prefix", list(PREFIXES))
def test_shared_prefixes_score_as_a_plain_forward_per_pair(model, prefix, batch_size):
    got = score_continuations(
        model, PROMPTS, CONTS, None, batch_size=batch_size, per_token=True, prefix_lengths=PREFIXES[prefix]
    )
    for p, c, g in zip(PROMPTS, CONTS, got, strict=True):
        torch.testing.assert_close(g, naive(model, p, c), rtol=1e-5, atol=1e-5)


def test_prefix_sharing_runs_a_prefix_once_per_batch(model):
    calls = []
    hook = model.register_forward_hook(
        lambda m, a, kw, out: calls.append(kw["input_ids"].shape), with_kwargs=True
    )
    try:
        score_continuations(
            model,
            PROMPTS[:8],
            CONTS[:8],
            None,
            batch_size=64,
            prefix_lengths=[len(HEAD) + 3] * 4 + [len(HEAD) + 2] * 4,
        )
    finally:
        hook.remove()
    # prefixes (2 distinct, one per demonstration), remainders (6 distinct prompts: a query repeats), continuations
    assert [tuple(s) for s in calls] == [(2, len(HEAD) + 3), (6, 4), (8, 2)]


@pytest.mark.parametrize(
    "make",
    [
        lambda expert, amateur: Scorer(
            SecondModel(amateur, "full"), ContrastConfig(form="difference", alpha=0.1)
        ),
        lambda expert, amateur: Scorer(
            SecondModel(amateur, "last-token"), ContrastConfig(beta=0.5, alpha=0.1)
        ),
        lambda expert, amateur: Scorer(EarlierLayers(1), ContrastConfig(form="difference", alpha=0.1)),
        lambda expert, amateur: Scorer(EarlierLayers((0, 1)), ContrastConfig(form="difference", alpha=0.1)),
        lambda expert, amateur: Scorer(AlteredInput(), ContrastConfig(form="difference", alpha=0.1)),
    ],
    ids=["second-model-full", "second-model-last", "layer-fixed", "layer-jsd", "altered-input"],
)
def test_contrast_scorers_give_the_same_scores_with_shared_prefixes(model, make):
    amateur = (tiny_llama if "Llama" in type(model).__name__ else tiny_gpt2)(seed=1, n_layer=1)
    scorer = make(model, amateur)
    alt = ALTERED if isinstance(scorer.amateur, AlteredInput) else None
    plain = score_continuations(
        model, PROMPTS, CONTS, scorer, batch_size=4, per_token=True, amateur_prompt_ids=alt
    )
    shared = score_continuations(
        model, PROMPTS, CONTS, scorer, batch_size=4, per_token=True, amateur_prompt_ids=alt,
        prefix_lengths=PREFIXES["instruction + demonstration"],
    )  # fmt: skip
    for a, b in zip(plain, shared, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 2], r"prefix_lengths='<2 values>' must hold one per pair \(10\)"),
        ([1] * 9 + [-1], "prefix_lengths=-1 must hold ints >= 0"),
        ([1] * 9 + [True], "prefix_lengths=True must hold ints >= 0"),
        (torch.ones(10, dtype=torch.long), "prefix_lengths='Tensor' must be a list of ints"),
    ],
)
def test_bad_prefix_lengths_are_refused(model, value, message):
    with pytest.raises(OptionError, match=message):
        score_continuations(model, PROMPTS, CONTS, None, prefix_lengths=value)
