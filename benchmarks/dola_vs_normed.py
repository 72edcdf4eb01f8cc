"""Exact DoLa against counterpoint's normed variant on SmolLM2: short continuations side by side.

The embedded SmolLM2-135M-Instruct (30 layers, tied embeddings), fp32, greedy, batch 1 (the original DoLa
code's setting; ``layer_mode="dola"`` picks one layer per batch, as transformers 4.55 does). The first
``--prompts`` XSum articles, cut to 32-token prompts as in the open-ended report, ``--new-tokens`` tokens.

Rows, all with DoLa's scoring rule (difference form, gamma 1, relative_top / alpha 0.1):

* greedy;
* dola "low" / "high": ``layer_mode="dola", amateur_layers="low" | "high"`` (transformers 4.55.4's DoLa,
  token for token: raw premature layers, its divergence);
* jsd "low" / "high": ``layer_mode="jsd"`` on the same candidate layers (each premature layer through
  the final norm, the true Jensen-Shannon divergence, per row);
* the dola and jsd "low" rows again with ``repetition_penalty=1.2``, the value 4.55 recommends for DoLa
  (it only warns; ``generate(dola_layers=...)`` applies no penalty by default).

Prints each continuation and rep-2 / rep-4 over the whitespace words of all of them (SimCTG's measure as
``counterpoint.eval.rep_n`` computes it), and the share of steps where each row's token differs from
greedy's first. Writes benchmarks/results/dola_vs_normed.md.

Run:  PYTHONPATH=. python benchmarks/dola_vs_normed.py [--prompts 8] [--new-tokens 48]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from counterpoint.decoding import layer_contrast
from counterpoint.decoding.layer_contrast import DOLA
from counterpoint.eval import load_xsum_documents, open_ended_examples, rep_n
from counterpoint.models import load_language_model

ROWS = {
    "greedy": {},
    'dola "low"': {"custom_generate": layer_contrast, "amateur_layers": "low", "layer_mode": "dola"},
    'dola "high"': {"custom_generate": layer_contrast, "amateur_layers": "high", "layer_mode": "dola"},
    'jsd "low" (normed)': {"custom_generate": layer_contrast, "amateur_layers": "low", "layer_mode": "jsd",
                           "contrast": DOLA},
    'jsd "high" (normed)': {"custom_generate": layer_contrast, "amateur_layers": "high", "layer_mode": "jsd",
                            "contrast": DOLA},
    'dola "low", repetition_penalty 1.2': {"custom_generate": layer_contrast, "amateur_layers": "low",
                                           "layer_mode": "dola", "repetition_penalty": 1.2},
    'jsd "low" (normed), repetition_penalty 1.2': {"custom_generate": layer_contrast, "amateur_layers": "low",
                                                   "layer_mode": "jsd", "contrast": DOLA,
                                                   "repetition_penalty": 1.2},
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dola_vs_normed.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tok = load_language_model()
    docs = load_xsum_documents()
    examples = open_ended_examples(
        [d["document"] for d in docs[: 4 * args.prompts]], tokenizer=tok, prompt_tokens=32,
        continuation_tokens=args.new_tokens,
    )[: args.prompts]  # fmt: skip
    texts: dict[str, list[str]] = {name: [] for name in ROWS}
    ids: dict[str, list[list[int]]] = {name: [] for name in ROWS}
    start = time.perf_counter()
    for ex in examples:
        batch = tok([ex.prompt], return_tensors="pt")
        width = batch["input_ids"].shape[1]
        for name, kwargs in ROWS.items():
            out = model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=args.new_tokens,
                pad_token_id=tok.pad_token_id,
                **kwargs,
            )
            ids[name].append(out[0, width:].tolist())
            texts[name].append(tok.decode(out[0, width:], skip_special_tokens=True))
    minutes = (time.perf_counter() - start) / 60

    def first_difference(a: list[int], b: list[int]) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))

    lines = [
        "# Exact DoLa vs the normed variant (SmolLM2-135M-Instruct, fp32, greedy, batch 1)",
        "",
        f"{len(examples)} XSum prompts of 32 tokens, {args.new_tokens} new tokens; DoLa's rule (difference, "
        f"gamma 1, alpha 0.1) in every layer row; {minutes:.1f} min. rep-n over whitespace words, pooled.",
        "",
        "| row | rep-2 | rep-4 | mean first token differing from greedy |",
        "|---|---:|---:|---:|",
    ]
    for name in ROWS:
        firsts = [first_difference(a, g) for a, g in zip(ids[name], ids["greedy"], strict=True)]
        lines.append(
            f"| {name} | {rep_n(texts[name], 2):.3f} | {rep_n(texts[name], 4):.3f} | "
            f"{sum(firsts) / len(firsts):.1f} |"
        )
    lines += ["", "## Continuations", ""]
    for i, ex in enumerate(examples):
        lines += [f"### Prompt {i}: {ex.prompt!r}", ""]
        lines += [f"- **{name}**: {texts[name][i]!r}" for name in ROWS]
        lines.append("")
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
