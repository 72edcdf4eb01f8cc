import math
from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache

from counterpoint.eval.classify import (
    accuracy,
    continuation_logprobs,
    exact_match,
    generate_labels,
    normalize_label,
    verbalizer_predict,
    verbalizer_scores,
)
from tests.tiny_models import MIXED_PROMPTS, PAD_ID, tiny_gpt2, tiny_llama


class Bigram(torch.nn.Module):
    """A 'language model' whose next-token distribution depends only on the last token: ``probs[last]``."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.logits = probs.log()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None
    ):
        return SimpleNamespace(logits=self.logits[input_ids], past_key_values=DynamicCache())


def _bigram():
    # vocab 0..5. After 2 the model prefers 4; after 3 it prefers 5; after 4 or 5 it says 1 or 0.
    probs = torch.full((6, 6), 0.025)
    probs[2, 4], probs[2, 5], probs[2, 1], probs[2, 3] = 0.7, 0.2, 0.025, 0.025
    probs[3, 5], probs[3, 4], probs[3, 1], probs[3, 2] = 0.6, 0.3, 0.025, 0.025
    probs[4, 1], probs[4, 0], probs[4, 2], probs[4, 3] = 0.5, 0.4, 0.025, 0.025
    probs[5, 1], probs[5, 0], probs[5, 2], probs[5, 3] = 0.1, 0.8, 0.025, 0.025
    probs[1] = probs[0] = torch.full((6,), 1 / 6)
    assert torch.allclose(probs.sum(-1), torch.ones(6))
    return Bigram(probs)


def test_toy_set_known_scores_and_accuracy():
    model = _bigram()
    prompts = [[1, 2], [3], [1, 1, 2], [2, 3], [2, 1]]
    labels = [[4, 1], [5, 0]]  # two-token verbalizers: the second token goes through the cache path
    scores = continuation_logprobs(model, prompts, labels, batch_size=3)
    a, b = math.log(0.7 * 0.5), math.log(0.2 * 0.8)  # prompt ends in 2
    c, d = math.log(0.3 * 0.5), math.log(0.6 * 0.8)  # prompt ends in 3
    e, f = math.log(0.5 / 6), math.log(0.8 / 6)  # prompt ends in 1: the first tokens tie, the second decides
    torch.testing.assert_close(scores, torch.tensor([[a, b], [c, d], [a, b], [c, d], [e, f]]))
    predictions = scores.argmax(-1).tolist()
    assert predictions == [0, 1, 0, 1, 1]
    assert accuracy(predictions, [0, 1, 0, 1, 0]) == 0.8


def test_single_token_labels_skip_the_cache_pass():
    scores = continuation_logprobs(_bigram(), [[2], [3]], [[4], [5]])
    torch.testing.assert_close(scores, torch.tensor([[0.7, 0.2], [0.3, 0.6]]).log())


def _naive(model, prompts, conts):
    """Each (prompt, continuation) pair on its own, no padding, no cache: full forward and sum."""
    out = torch.empty(len(prompts), len(conts))
    for i, p in enumerate(prompts):
        for j, c in enumerate(conts):
            ids = torch.tensor([p + c])
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
            out[i, j] = sum(logp[len(p) - 1 + t, c[t]] for t in range(len(c)))
    return out


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_batched_cached_scores_match_naive_recompute(make, batch_size):
    model = make(seed=3)
    prompts = MIXED_PROMPTS + [[9], [50, 51, 52, 53, 54, 55, 56, 57, 58]]
    conts = [[7], [30, 31, 32], [88, 2], [12, 13, 14, 15]]  # uneven lengths: right padding in the cache pass
    with torch.no_grad():
        want = _naive(model, prompts, conts)
    got = continuation_logprobs(model, prompts, conts, pad_token_id=PAD_ID, batch_size=batch_size)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"continuation_ids": []}, "continuation_ids is empty"),
        ({"continuation_ids": [[1], []]}, r"continuation_ids\[1\] is empty"),
        ({"prompt_ids": [[1], []]}, r"prompt_ids\[1\] is empty"),
        ({"batch_size": 0}, "batch_size=0 must be a positive integer"),
    ],
)
def test_continuation_logprobs_errors(kwargs, match):
    args = {"prompt_ids": [[1, 2]], "continuation_ids": [[3]], **kwargs}
    with pytest.raises(ValueError, match=match):
        continuation_logprobs(_bigram(), **args)


def test_normalize_and_exact_match():
    assert normalize_label("  Positive.\nReview: more") == "positive"
    assert normalize_label("\n\n NEGATIVE!!") == "negative"
    assert (
        exact_match([" positive.", "negative review", "Negative"], ["positive", "negative", "negative"])
        == 2 / 3
    )
    with pytest.raises(ValueError, match="predictions has 1 items but gold has 2"):
        accuracy([1], [1, 2])


@pytest.mark.slow
def test_smollm2_text_scores_match_naive(smollm2):
    model, tok = smollm2
    prompts = ["Review: a wonderful, moving film.\nSentiment:", "Review: dull.\nSentiment:"]
    verbalizers = [" negative", " very positive indeed"]
    got = verbalizer_scores(model, tok, prompts, verbalizers, batch_size=2)
    p_ids = [tok(p)["input_ids"] for p in prompts]
    c_ids = [tok(v, add_special_tokens=False)["input_ids"] for v in verbalizers]
    with torch.no_grad():
        want = _naive(model, p_ids, c_ids)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert verbalizer_predict(model, tok, prompts, verbalizers) == want.argmax(-1).tolist()
    with pytest.raises(ValueError, match=r"verbalizers=\[' x'\] must be a list of at least two"):
        verbalizer_scores(model, tok, prompts, [" x"])


@pytest.mark.slow
def test_smollm2_generate_labels_match_unbatched_generate(smollm2):
    model, tok = smollm2
    prompts = ["The capital of France is", "Review: I loved every minute of it.\nSentiment:"]
    got = generate_labels(model, tok, prompts, max_new_tokens=3, batch_size=2)
    for prompt, text in zip(prompts, got, strict=True):
        ids = tok(prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
        assert text == tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
