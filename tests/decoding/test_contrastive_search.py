"""Contrastive search against a naive reference that recomputes everything, without a cache, each step."""

import pytest
import torch
import torch.nn.functional as F
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TextIteratorStreamer

from counterpoint.decoding import contrastive_search
from tests.tiny_models import EOS_ID, MIXED_PROMPTS, PAD_ID, left_padded_batch, tiny_gpt2, tiny_llama

MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def naive_contrastive_search(model, prompt, alpha, k, max_new_tokens, eos_id=None, processor=None):
    """Su et al.'s rule for one unpadded row, recomputing the whole sequence with no cache at every step."""
    seq = list(prompt)
    for _ in range(max_new_tokens):
        ids = torch.tensor([seq])
        logits = model(ids).logits[0, -1]
        if processor is not None:
            logits = processor(ids, logits[None])[0]
        probs = logits.softmax(-1)
        top_p, top_v = probs.topk(k)
        context = F.normalize(model.base_model(ids).last_hidden_state[0], dim=-1)  # (T, H)
        best, best_score = None, None
        for p, v in zip(top_p.tolist(), top_v.tolist(), strict=True):
            h = model.base_model(torch.tensor([seq + [v]])).last_hidden_state[0, -1]
            penalty = (context @ F.normalize(h, dim=-1)).max().item()
            score = (1 - alpha) * p - alpha * penalty
            if best_score is None or score > best_score:
                best, best_score = v, score
        seq.append(best)
        if eos_id is not None and best == eos_id:
            break
    return seq[len(prompt) :]


def ours(model, prompts, alpha=0.6, k=4, max_new_tokens=12, **kwargs):
    batch = left_padded_batch(prompts)
    out = model.generate(
        **batch,
        custom_generate=contrastive_search,
        penalty_alpha=alpha,
        top_k=k,
        max_new_tokens=max_new_tokens,
        **kwargs,
    )
    width = batch["input_ids"].shape[1]
    return [row[width:].tolist() for row in out]


def strip_pad(tokens, eos_id=EOS_ID):
    """Cut a row after its EOS: what follows in a batch is padding."""
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize(("alpha", "k"), [(0.6, 4), (0.4, 3)])
def test_matches_naive_reference_token_for_token(arch, alpha, k):
    model = MODELS[arch](seed=1)
    model.generation_config.eos_token_id = None  # run the full length: more steps compared
    got = ours(model, MIXED_PROMPTS, alpha=alpha, k=k, max_new_tokens=12)
    for prompt, row in zip(MIXED_PROMPTS, got, strict=True):
        assert row == naive_contrastive_search(model, prompt, alpha, k, 12)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_batch_equals_each_row_alone_and_finished_rows_are_padded(arch):
    model = MODELS[arch](seed=2)
    # Make EOS likely early for some rows by boosting its bias, so finished rows occur mid-batch.
    with torch.no_grad():
        head = model.get_output_embeddings()
        head.weight[EOS_ID] += 0.05 * head.weight[5]
    batch_rows = ours(model, MIXED_PROMPTS, max_new_tokens=16)
    for prompt, row in zip(MIXED_PROMPTS, batch_rows, strict=True):
        alone = ours(model, [prompt], max_new_tokens=16)[0]
        assert strip_pad(row) == alone
        assert row[len(alone) :] == [PAD_ID] * (len(row) - len(alone))
        assert alone == naive_contrastive_search(model, prompt, 0.6, 4, 16, eos_id=EOS_ID)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize(("alpha", "k"), [(0.0, 4), (0.6, 1)])
def test_alpha_zero_or_k_one_is_greedy(arch, alpha, k):
    model = MODELS[arch](seed=3)
    batch = left_padded_batch(MIXED_PROMPTS)
    greedy = model.generate(**batch, do_sample=False, max_new_tokens=10)
    got = model.generate(
        **batch, custom_generate=contrastive_search, penalty_alpha=alpha, top_k=k, max_new_tokens=10
    )
    assert torch.equal(got, greedy)


def test_logits_processors_shape_the_candidates():
    model = tiny_llama(seed=4)
    model.generation_config.eos_token_id = None
    rep = RepetitionPenaltyLogitsProcessor(penalty=1.8)
    got = ours(model, MIXED_PROMPTS[:1], max_new_tokens=10, logits_processor=LogitsProcessorList([rep]))
    assert got[0] == naive_contrastive_search(model, MIXED_PROMPTS[0], 0.6, 4, 10, processor=rep)
    assert got != ours(model, MIXED_PROMPTS[:1], max_new_tokens=10)  # the processor changed something


def test_return_dict_scores_and_stop_rules():
    model = tiny_llama(seed=5)
    batch = left_padded_batch(MIXED_PROMPTS)
    out = model.generate(
        **batch,
        custom_generate=contrastive_search,
        penalty_alpha=0.6,
        top_k=4,
        max_new_tokens=7,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
        eos_token_id=None,
    )
    width = batch["input_ids"].shape[1]
    assert out.sequences.shape == (3, width + 7)
    assert len(out.scores) == 7 and out.scores[0].shape == (3, model.config.vocab_size)
    assert len(out.logits) == 7
    # Each chosen token is among the top-4 of that step's processed scores.
    for step, scores in enumerate(out.scores):
        chosen = out.sequences[:, width + step]
        assert (scores.topk(4).indices == chosen[:, None]).any(-1).all()


def test_direct_call_equals_generate():
    model = tiny_gpt2(seed=6)
    batch = left_padded_batch(MIXED_PROMPTS)
    via_generate = model.generate(
        **batch, custom_generate=contrastive_search, penalty_alpha=0.5, top_k=3, max_new_tokens=8
    )
    direct = contrastive_search(
        model,
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        penalty_alpha=0.5,
        top_k=3,
        max_new_tokens=8,
    )
    assert torch.equal(direct, via_generate)


def test_streaming_delivers_the_same_tokens():
    from transformers import AutoTokenizer  # noqa: F401  (the streamer needs a tokenizer-like object)

    class IdTokenizer:
        def decode(self, ids, **kwargs):
            return "".join(f"<{i}>" for i in ids)

    model = tiny_llama(seed=7)
    model.generation_config.eos_token_id = None
    streamer = TextIteratorStreamer(IdTokenizer(), skip_prompt=True)
    prompt = torch.tensor([MIXED_PROMPTS[0]])
    out = model.generate(
        prompt,
        custom_generate=contrastive_search,
        penalty_alpha=0.6,
        top_k=4,
        max_new_tokens=9,
        streamer=streamer,
    )
    streamed = "".join(streamer)  # the loop ran to completion before we read, so the queue is full
    assert streamed == "".join(f"<{i}>" for i in out[0, prompt.shape[1] :].tolist())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"penalty_alpha": 1.5}, r"penalty_alpha=1\.5 must be a number in \[0, 1\]"),
        ({"penalty_alpha": -0.1}, r"penalty_alpha=-0\.1 must be a number in \[0, 1\]"),
        ({"top_k": 0}, r"top_k=0 must be an integer >= 1"),
        ({"top_k": 2.5}, r"top_k=2\.5 must be an integer >= 1"),
        ({"do_sample": True}, r"do_sample=True does not apply"),
        ({"num_beams": 2}, r"num_beams=2 does not apply"),
        ({"output_hidden_states": True, "return_dict_in_generate": True}, r"output_hidden_states"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    model = tiny_llama()
    batch = left_padded_batch(MIXED_PROMPTS)
    args = {"penalty_alpha": 0.6, "top_k": 4, "max_new_tokens": 3} | kwargs
    with pytest.raises(ValueError, match=match):
        model.generate(**batch, custom_generate=contrastive_search, **args)


def test_a_model_without_hidden_states_is_refused():
    class NoHidden(torch.nn.Module):
        config = tiny_llama().config

        def get_output_embeddings(self):
            return None

    with pytest.raises(ValueError, match="cannot return hidden states"):
        contrastive_search(NoHidden(), torch.tensor([[1, 2]]), penalty_alpha=0.6, top_k=4)


@pytest.mark.slow
def test_embedded_smollm2_contrastive_search(smollm2):
    model, tokenizer = smollm2
    prompts = ["The history of the printing press", "My favourite recipe for soup is"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(
        **batch, custom_generate=contrastive_search, penalty_alpha=0.6, top_k=4, max_new_tokens=24
    )
    width = batch["input_ids"].shape[1]
    for i, prompt in enumerate(prompts):
        alone = tokenizer([prompt], return_tensors="pt")
        single = model.generate(
            **alone, custom_generate=contrastive_search, penalty_alpha=0.6, top_k=4, max_new_tokens=24
        )
        got = out[i, width:].tolist()
        want = single[0, alone["input_ids"].shape[1] :].tolist()
        assert strip_pad(got, tokenizer.eos_token_id) == want
        # First steps against the naive reference on the real model.
        assert want[:4] == naive_contrastive_search(model, alone["input_ids"][0].tolist(), 0.6, 4, 4)


def test_stop_strings_end_rows_like_generate_does():
    from transformers import AutoTokenizer

    from counterpoint.models import resolve_language_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_language_model_path(None))
    model = tiny_llama(seed=8, vocab_size=len(tokenizer), hidden=16)
    model.generation_config.eos_token_id = None
    prompt = torch.tensor([MIXED_PROMPTS[0]])
    free = model.generate(
        prompt, custom_generate=contrastive_search, penalty_alpha=0.6, top_k=4, max_new_tokens=12
    )
    text = tokenizer.decode(free[0, prompt.shape[1] :])
    # Stop on the text of the fifth generated token: generation must end right after it appears.
    stop = tokenizer.decode(free[0, prompt.shape[1] + 4])
    assert stop.strip(), "the chosen stop string must be non-empty"
    stopped = model.generate(
        prompt,
        custom_generate=contrastive_search,
        penalty_alpha=0.6,
        top_k=4,
        max_new_tokens=12,
        stop_strings=[stop],
        tokenizer=tokenizer,
    )
    new = tokenizer.decode(stopped[0, prompt.shape[1] :])
    assert stop in new and new.endswith(stop) and text.startswith(new)
    assert stopped.shape[1] < free.shape[1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_run_and_alpha_zero_is_still_greedy(dtype):
    model = tiny_llama(seed=9).to(dtype)
    batch = left_padded_batch(MIXED_PROMPTS)
    greedy = model.generate(**batch, do_sample=False, max_new_tokens=6)
    same = model.generate(
        **batch, custom_generate=contrastive_search, penalty_alpha=0.0, top_k=4, max_new_tokens=6
    )
    assert torch.equal(same, greedy)
    out = model.generate(
        **batch,
        custom_generate=contrastive_search,
        penalty_alpha=0.6,
        top_k=4,
        max_new_tokens=6,
        return_dict_in_generate=True,
        output_scores=True,
    )
    assert out.sequences.shape == (3, batch["input_ids"].shape[1] + 6)
    assert out.scores[0].dtype == torch.float32  # scores and the penalty are computed in fp32
