"""Layer contrast against greedy and against its floors, side by side in one run.

Expert: the embedded SmolLM2-135M-Instruct (30 layers, fp32, CPU, one thread), the chat prompts of
``bench_contrast.py``, exactly ``--new-tokens`` new tokens per call (``min_new_tokens``), greedy search.
Rows (every layer row with DoLa's rule, ``ContrastConfig(form="difference", gamma=1, alpha=0.1)``):

* greedy: the expert alone;
* fixed (layer 8) and fusion (4, 8): the head-only path; target <= 1.10 x greedy. Their floor row,
  "greedy + head rows (4, 8)", is greedy plus the lm_head rows of the plausible head for both layers;
* jsd (0, 4, 8, 12), dola (0, 4, 8, 12) and dola "low" (layers 2, 4, ..., 14: C = 7): each divided by its
  floor, "greedy + C projections" (``benchmarks/_floors.py``): greedy plus C full lm_head products per
  step, the work no exact choice of the premature layer can skip. Target <= 1.10 x that floor.

Ratios are taken per repeat (each row over the greedy or floor call of the same repeat, the rows run in
turns, the order rotating) and summarised as the median with the lowest and highest repeat. Times are CPU
seconds of this process per new token (on a shared machine other processes inflate wall time far more);
wall-time ratios are printed too. The load average is printed before and after.

Run:  PYTHONPATH=. python benchmarks/bench_layer.py [--new-tokens 32] [--repeats 5] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
from functools import partial
from pathlib import Path

import torch

from benchmarks._floors import full_projections, head_projections, interleaved, summary, timed_generate
from counterpoint.decoding import ContrastConfig, layer_contrast
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
DOLA_RULE = ContrastConfig(form="difference", gamma=1.0, alpha=0.1)
LOW = list(range(2, 15, 2))  # DoLa's "low" bucket of a 30-layer model with tied embeddings


def chats(tokenizer, questions):
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]
    return dict(tokenizer(texts, return_tensors="pt", padding=True))


def layer(layers, mode):
    return {
        "custom_generate": layer_contrast,
        "amateur_layers": layers,
        "layer_mode": mode,
        "contrast": DOLA_RULE,
    }


# name -> (generate kwargs, floor context or None, the row it is divided by)
ROWS = {
    "greedy": ({}, None, None),
    "greedy + head rows (4, 8)": ({}, ("head", [4, 8]), "greedy"),
    "fixed (8)": (layer(8, "fixed"), None, "greedy"),
    "fusion (4, 8)": (layer([4, 8], "fusion"), None, "greedy"),
    "greedy + 4 projections": ({}, ("full", [0, 4, 8, 12]), "greedy"),
    "jsd (0, 4, 8, 12)": (layer([0, 4, 8, 12], "jsd"), None, "greedy + 4 projections"),
    "dola (0, 4, 8, 12)": (layer([0, 4, 8, 12], "dola"), None, "greedy + 4 projections"),
    "greedy + 7 projections": ({}, ("full-raw", LOW), "greedy"),
    'dola "low" (2..14)': (layer("low", "dola"), None, "greedy + 7 projections"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--only", nargs="+", default=None, help="keep rows whose name contains a word")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "layer.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tok = load_language_model()
    rows = dict(ROWS)
    if args.only:
        keep = {k for k in rows if any(w in k for w in args.only)}
        keep |= {rows[k][2] for k in keep if rows[k][2]} | {"greedy"}
        keep |= {rows[k][2] for k in keep if rows[k][2]}
        rows = {k: v for k, v in rows.items() if k in keep}

    def call(batch, kwargs, floor):
        run = partial(timed_generate, model, batch, args.new_tokens, pad_token_id=tok.pad_token_id, **kwargs)
        if floor is None:
            return run()
        kind, layers = floor
        if kind == "head":
            ctx = head_projections(model, layers, alpha=DOLA_RULE.alpha)
        else:
            ctx = full_projections(model, layers, norm=kind == "full")
        with ctx:
            return run()

    load_before = os.getloadavg()
    results = {}
    for b in args.batches:
        batch = chats(tok, (QUESTIONS * b)[:b])
        runs = {name: partial(call, batch, kwargs, floor) for name, (kwargs, floor, _) in rows.items()}
        for run in runs.values():  # warm-up
            run()
        results[b] = interleaved(runs, args.repeats)
        print(f"batch {b} done", flush=True)
    load_after = os.getloadavg()

    lines = [
        "# Layer contrast vs greedy and vs its floors (SmolLM2-135M-Instruct, fp32, CPU, 1 thread)",
        "",
        f"{args.new_tokens} new tokens per call (forced), greedy search, {args.repeats} interleaved repeats. "
        "ms/token: median CPU time of the process per new token (prefill included). Ratios: per repeat, the "
        "row over the row it is compared with in the same repeat; median [lowest, highest]. "
        f"Load average (1, 5, 15 min): before {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f}, "
        f"after {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f} on {os.cpu_count()} cores.",
        "",
        "| row | over | "
        + " | ".join(f"ms/token b={b} | ratio b={b} (CPU) | ratio b={b} (wall)" for b in args.batches)
        + " |",
        "|---|---|" + "---:|" * (3 * len(args.batches)),
    ]
    for name, (_, _, base) in rows.items():
        cells = []
        for b in args.batches:
            times = results[b]
            cpu = [c for _, c in times[name]]
            cells.append(f"{1000 * statistics.median(cpu):.1f}")
            if base is None:
                cells += ["", ""]
                continue
            for which in (1, 0):
                ratios = [t[which] / u[which] for t, u in zip(times[name], times[base], strict=True)]
                med, lo, hi = summary(ratios)
                cells.append(f"{med:.3f} [{lo:.2f}, {hi:.2f}]")
        lines.append(f"| {name} | {base or ''} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
