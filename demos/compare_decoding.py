"""Greedy decoding and contrastive search side by side on the embedded SmolLM2-135M-Instruct.

Run: ``python demos/compare_decoding.py [--max-new-tokens 64] [--alpha 0.6] [--top-k 4]``.
Prints each prompt's two continuations and their rep-4 (share of repeated 4-grams, lower is better).
"""

from __future__ import annotations

import argparse
import textwrap

import torch

from counterpoint.decoding import contrastive_search
from counterpoint.eval import rep_n
from counterpoint.models import load_language_model

PROMPTS = [
    "The history of the printing press begins",
    "In a small village at the edge of the forest, there lived",
    "The best way to learn a new language is",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.6, help="degeneration penalty (penalty_alpha)")
    parser.add_argument("--top-k", type=int, default=4, help="candidates per step")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, tokenizer = load_language_model()
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    width = batch["input_ids"].shape[1]
    greedy = model.generate(**batch, do_sample=False, max_new_tokens=args.max_new_tokens)
    contrastive = model.generate(
        **batch,
        custom_generate=contrastive_search,
        penalty_alpha=args.alpha,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
    )
    for i, prompt in enumerate(PROMPTS):
        print("=" * 100)
        print(f"PROMPT: {prompt}")
        for name, out in (
            ("greedy", greedy),
            (f"contrastive search (alpha={args.alpha}, k={args.top_k})", contrastive),
        ):
            text = tokenizer.decode(out[i, width:], skip_special_tokens=True)
            print(f"\n--- {name}   rep-4 = {rep_n([text], 4):.3f}")
            print(textwrap.fill(text.strip(), width=100))
    print("=" * 100)


if __name__ == "__main__":
    main()
