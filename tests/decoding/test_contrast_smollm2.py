"""Layer contrast and input contrast on the embedded SmolLM2-135M (opt in with --runslow)."""

import pytest

from counterpoint.decoding import OPPOSITE_INSTRUCTION, ContrastConfig, input_contrast, layer_contrast
from tests.decoding import contrast_reference as ref

NEW = 6


def _chats(tok, questions, system=None):
    texts = [
        tok.apply_chat_template(
            ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for q in questions
    ]
    return tok(texts, return_tensors="pt", padding=True)


@pytest.mark.slow
def test_smollm2_layer_and_input_contrast_match_the_naive_reference(smollm2):
    model, tok = smollm2
    batch = _chats(tok, ["What is the capital of France?", "Name a colour."])
    noisy = _chats(tok, ["What is the capital of France?", "Name a colour."], system=OPPOSITE_INSTRUCTION)
    config = ContrastConfig(form="difference", gamma=1.0, alpha=0.1)
    gen = {"do_sample": False, "max_new_tokens": NEW, "pad_token_id": tok.pad_token_id}
    norm, head = model.model.norm, model.lm_head
    cases = [
        ({"custom_generate": layer_contrast, "amateur_layers": [0, 8, 16], "layer_mode": "jsd"},
         ref.layer_amateur(model, [0, 8, 16], "jsd", norm, head)),
        ({"custom_generate": input_contrast, "amateur_input_ids": noisy["input_ids"],
          "amateur_attention_mask": noisy["attention_mask"]},
         ref.input_amateur(model, noisy["input_ids"], noisy["attention_mask"], batch["input_ids"].shape[1])),
    ]  # fmt: skip
    for kwargs, amateur_fn in cases:
        got = model.generate(**batch, contrast=config, **kwargs, **gen)
        want = ref.naive_greedy(
            model, amateur_fn, batch["input_ids"], batch["attention_mask"], config, NEW, pad_id=tok.pad_token_id,
            eos_id=tok.eos_token_id,
        )  # fmt: skip
        assert got.tolist() == want.tolist()
