"""Per-token time of each contrast source against greedy and against its own floor, side by side in one run.

Expert: the embedded SmolLM2-135M-Instruct (fp32, CPU, one thread). Every call makes exactly
``--new-tokens`` tokens (``min_new_tokens``); per-token time is the wall time of a whole ``generate`` call
(prefill included) over the new tokens. Each repeat runs every row once, interleaved, and measures the
floors in the same repeat; the table gives the median over ``--repeats`` repeats and, for the ratio to the
floor, the spread (min-max) over the repeats, so one noisy repeat cannot claim a target.

Rows and their floors (the least a source could cost, measured in the same repeat):

* greedy - the expert alone; every "x greedy" divides by it in the same repeat.
* amateur alone - the second model's amateur running greedy by itself (an input of a floor, no floor).
* layer contrast, fixed / fusion - floor: greedy + the lm_head rows of the plausible head for each chosen
  layer (final norm, gather of the union of the batch's head rows, their product; union size taken from
  the greedy run at the row's alpha). Under greedy these take the head-only path.
  The "full lm_head" row forces the exact path (``head_only=False``) to show what that saves; its floor
  is the jsd kind with one layer.
* layer contrast, jsd (and dola, when ``layer_contrast`` offers that mode) - floor: greedy + C full lm_head
  projections (final norm, none for dola, and lm_head on one hidden state per row, for each of the C
  candidate layers, as one product).
* second model - :func:`counterpoint.decoding.contrastive_decoding` with SmolLM2 cut to its first
  ``--amateur-layers`` decoder layers (no smaller same-tokenizer model ships on PyPI). Floor: greedy +
  the amateur alone.
* input contrast - :func:`counterpoint.decoding.input_contrast` against the same chat with the "opposite"
  system instruction of Instructive Decoding (``INSTRUCTIVE_DECODING``): the real and the altered rows in
  one 2B-row forward. Floor: greedy x (a 2B-row cached forward / a B-row one): the model alone, prefill and
  ``--new-tokens`` single-token steps over its cache, on the real and altered prompts padded together
  against the real prompts alone. The "two forwards" row is the reference path (``shared_forward=False``:
  the altered rows in their own forward and cache), same floor.

Target: every contrast row within 1.10x its floor (layer fixed / fusion also within 1.10x greedy).
Repetition rep-n = 1 - distinct n-grams / n-grams (``counterpoint.eval.rep_n`` on token ids, pooled over the
prompts as SimCTG does), from the largest batch's outputs.

Run:  PYTHONPATH=. python benchmarks/bench_contrast.py [--new-tokens 32] [--repeats 5] [--batches 1 8]
      [--only layer]  (rows whose name contains any of these words; greedy always runs)
Writes benchmarks/results/contrast.md (a run with --only writes benchmarks/results/contrast-partial.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from counterpoint import _hf
from counterpoint.batching import positions_from_mask
from counterpoint.decoding import (
    INSTRUCTIVE_DECODING,
    OPPOSITE_INSTRUCTION,
    ContrastConfig,
    contrastive_decoding,
    input_contrast,
    layer_contrast,
    truncated_amateur,
)
from counterpoint.decoding.layer_contrast import LAYER_MODES
from counterpoint.decoding.scores import plausible_head
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
TARGET = 1.10
LAYER_CONFIG = ContrastConfig(form="difference", gamma=1.0, alpha=0.1)  # DoLa's rule
MODEL_CONFIG = ContrastConfig(form="beta", beta=0.5, alpha=0.1)


@dataclass
class Row:
    """One benchmark row: who generates, with which generate() kwargs, and what its floor is.

    floor: "self" (greedy), None (no floor), "head" (greedy + the head's lm_head rows per layer), "full"
    (greedy + ``layers`` full lm_head projections), "amateur" (greedy + the amateur alone), "double"
    (greedy x a 2B-row cached forward over a B-row one).
    """

    name: str
    who: str  # "expert" or "amateur"
    kwargs: dict[str, Any] = field(default_factory=dict)
    floor: str | None = None
    layers: int = 0  # C, for the "head" and "full" floors
    alpha: float = 0.1  # the plausible head's alpha, for the "head" floor
    norm: bool = True  # the "full" floor applies the final norm first (dola projects raw hidden states)
    vs_greedy: bool = False  # also a target of <= TARGET x greedy


def layer_row(name: str, layers: list[int], mode: str, **extra: Any) -> Row:
    floor = "head" if mode in ("fixed", "fusion") and extra.get("head_only", True) else "full"
    return Row(
        name,
        "expert",
        {"custom_generate": layer_contrast, "amateur_layers": layers, "layer_mode": mode, "contrast": LAYER_CONFIG, **extra},
        floor=floor,
        layers=len(layers),
        alpha=LAYER_CONFIG.alpha,
        vs_greedy=floor == "head",
        norm=mode != "dola",
    )  # fmt: skip


def rows_for(amateur_layers: int) -> list[Row]:
    rows = [
        Row("greedy", "expert", floor="self"),
        Row("amateur alone (greedy)", "amateur"),
        layer_row("layer contrast, fixed (layer 8)", [8], "fixed"),
        layer_row("layer contrast, fixed (layer 8), full lm_head", [8], "fixed", head_only=False),
        layer_row("layer contrast, fusion (4,8)", [4, 8], "fusion"),
        layer_row("layer contrast, jsd (0,4,8,12)", [0, 4, 8, 12], "jsd"),
    ]
    if "dola" in LAYER_MODES:  # the exact DoLa mode, once layer_contrast offers it: same floor as jsd
        rows.append(layer_row("layer contrast, dola (0,4,8,12)", [0, 4, 8, 12], "dola"))
    rows += [
        Row(
            f"second model ({amateur_layers}-layer SmolLM2 copy)",
            "expert",
            {"custom_generate": contrastive_decoding, "contrast": MODEL_CONFIG},  # amateur_model added later
            floor="amateur",
        ),
        Row(
            "input contrast (opposite instruction)",
            "expert",
            {"custom_generate": input_contrast, "contrast": INSTRUCTIVE_DECODING},
            floor="double",
        ),
        Row(
            "input contrast, two forwards (reference)",
            "expert",
            {"custom_generate": input_contrast, "contrast": INSTRUCTIVE_DECODING, "shared_forward": False},
            floor="double",
        ),
    ]
    return rows


def chats(tokenizer, questions, system=None):
    texts = []
    for q in questions:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": q}
        ]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return tokenizer(texts, return_tensors="pt", padding=True)


def per_call(fn: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


# -- floors ---------------------------------------------------------------------------------------------


@torch.no_grad()
def cached_forward_s(model, ids: torch.Tensor, mask: torch.Tensor, steps: int) -> float:
    """Seconds per new token of the model alone: a prefill and ``steps`` single-token cached forwards."""
    start = time.perf_counter()
    positions = positions_from_mask(mask)
    out = _hf.forward(model, ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
    cache, nxt = _hf.output_cache(out), positions[:, -1:] + 1
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(steps - 1):
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        out = _hf.forward(model, token, attention_mask=mask, position_ids=nxt, cache=cache, logits_to_keep=1)
        cache, nxt = _hf.output_cache(out), nxt + 1
        token = out.logits[:, -1].argmax(-1, keepdim=True)
    return (time.perf_counter() - start) / steps


def padded_together(a: dict, b: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Two left-padded batches stacked into one, left-padded to the wider."""
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])

    def pad(x):
        return torch.nn.functional.pad(x, (width - x.shape[1], 0))

    ids = torch.cat([pad(a["input_ids"]), pad(b["input_ids"])])
    mask = torch.cat([pad(a["attention_mask"]), pad(b["attention_mask"])])
    return ids, mask


@torch.no_grad()
def head_union_size(model, real: dict, pad_id: int, new_tokens: int, alpha: float) -> int:
    """Median over steps of the union of the batch's plausible heads (greedy run, raw expert logits)."""
    out = model.generate(
        **real, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=pad_id,
        return_dict_in_generate=True, output_logits=True,
    )  # fmt: skip
    sizes = [int(plausible_head(torch.log_softmax(x.float(), -1), alpha).any(0).sum()) for x in out.logits]
    return int(statistics.median(sizes))


@torch.no_grad()
def head_rows_s(model, batch: int, layers: int, union: int, calls: int) -> float:
    """Seconds per step of the head-only amateur's least work: per layer, the final norm of one hidden state
    per row, a gather of ``union`` lm_head rows and their product."""
    norm, head = model.base_model.norm, model.get_output_embeddings()
    hidden = torch.randn(layers, batch, head.weight.shape[1])
    idx = torch.randperm(head.weight.shape[0])[:union]
    return per_call(lambda: torch.nn.functional.linear(norm(hidden), head.weight.index_select(0, idx)), calls)


@torch.no_grad()
def full_heads_s(model, batch: int, layers: int, calls: int, norm: bool = True) -> float:
    """Seconds per step of ``layers`` full lm_head projections (the final norm unless ``norm`` is False,
    and the lm_head, one hidden state per row: one ``(C * N, H) @ (H, V)`` product, the lm_head read once)."""
    final, head = model.base_model.norm, model.get_output_embeddings()
    hidden = torch.randn(layers, batch, head.weight.shape[1])
    return per_call(lambda: head(final(hidden) if norm else hidden), calls)


# -- the run --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
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
    load_start = os.getloadavg()

    model, tok = load_language_model()
    amateur = truncated_amateur(model, args.amateur_layers)
    n_layers = model.config.num_hidden_layers
    rows = rows_for(args.amateur_layers)
    for row in rows:
        if row.floor == "amateur":
            row.kwargs["amateur_model"] = amateur
    if args.only:
        rows = [r for r in rows if r.name == "greedy" or any(w in r.name for w in args.only)]
        if any(r.floor == "amateur" for r in rows) and not any(r.who == "amateur" for r in rows):
            rows.insert(1, Row("amateur alone (greedy)", "amateur"))  # the second model's floor needs it
    needs = {r.floor for r in rows}
    amateur_name = next((r.name for r in rows if r.who == "amateur"), None)

    # times[(row, batch)]: seconds per token, one per repeat; floors[(row, batch)]: floor in x greedy.
    times: dict[tuple[str, int], list[float]] = {}
    floors: dict[tuple[str, int], list[float]] = {}
    outputs: dict[str, list[list[int]]] = {}
    step_calls = 2 * args.new_tokens
    for batch_size in args.batches:
        qs = (QUESTIONS * ((batch_size + len(QUESTIONS) - 1) // len(QUESTIONS)))[:batch_size]
        real = chats(tok, qs)
        noisy = chats(tok, qs, system=OPPOSITE_INSTRUCTION)
        width = real["input_ids"].shape[1]
        unions = {
            r.alpha: head_union_size(model, real, tok.pad_token_id, args.new_tokens, r.alpha)
            for r in rows
            if r.floor == "head"
        }
        both_ids, both_mask = padded_together(real, noisy)
        for _ in range(args.repeats):
            for row in rows:
                kwargs = dict(row.kwargs)
                if kwargs.get("custom_generate") is input_contrast:
                    kwargs["amateur_input_ids"] = noisy["input_ids"]
                    kwargs["amateur_attention_mask"] = noisy["attention_mask"]
                runner = model if row.who == "expert" else amateur
                start = time.perf_counter()
                out = runner.generate(
                    **real, do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                    pad_token_id=tok.pad_token_id, **kwargs,
                )  # fmt: skip
                elapsed = time.perf_counter() - start
                new = out.shape[1] - width
                times.setdefault((row.name, batch_size), []).append(elapsed / new)
                if batch_size == max(args.batches):
                    outputs[row.name] = out[:, width:].tolist()
            # The floors of this repeat, in x greedy of this repeat.
            greedy = times[("greedy", batch_size)][-1]
            double = None
            if "double" in needs:
                double = cached_forward_s(model, both_ids, both_mask, args.new_tokens) / cached_forward_s(
                    model, real["input_ids"], real["attention_mask"], args.new_tokens
                )
            for row in rows:
                if row.floor == "self":
                    value = 1.0
                elif row.floor == "head":
                    value = (
                        1 + head_rows_s(model, batch_size, row.layers, unions[row.alpha], step_calls) / greedy
                    )
                elif row.floor == "full":
                    value = 1 + full_heads_s(model, batch_size, row.layers, step_calls, row.norm) / greedy
                elif row.floor == "amateur":
                    value = 1 + times[(amateur_name, batch_size)][-1] / greedy
                elif row.floor == "double":
                    value = double
                else:
                    continue
                floors.setdefault((row.name, batch_size), []).append(value)
            print(f"batch {batch_size}: repeat done (load {os.getloadavg()[0]:.1f})", flush=True)
    load_end = os.getloadavg()

    def x_greedy(name: str, b: int) -> list[float]:
        return [t / g for t, g in zip(times[(name, b)], times[("greedy", b)], strict=True)]

    table = [
        "| source | batch | ms/token | x greedy | floor (x greedy) | x floor, median [min-max] | target | met |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for b in args.batches:
        for row in rows:
            ms = 1000 * statistics.median(times[(row.name, b)])
            xg = x_greedy(row.name, b)
            cells = [row.name, str(b), f"{ms:.1f}", f"{statistics.median(xg):.2f}"]
            if (row.name, b) in floors and row.floor != "self":
                fl = floors[(row.name, b)]
                xf = [x / f for x, f in zip(xg, fl, strict=True)]
                med = statistics.median(xf)
                target = f"<= {TARGET:.2f} x floor" + (f", <= {TARGET:.2f} x greedy" if row.vs_greedy else "")
                met = med <= TARGET and (not row.vs_greedy or statistics.median(xg) <= TARGET)
                cells += [f"{statistics.median(fl):.2f}", f"{med:.2f} [{min(xf):.2f}-{max(xf):.2f}]", target,
                          "yes" if met else "no"]  # fmt: skip
            elif row.floor == "self":
                cells += ["1.00", "", "", ""]
            else:
                cells += ["", "", "", ""]
            table.append("| " + " | ".join(cells) + " |")
    reps = ["| source | rep-2 | rep-3 | rep-4 |", "|---|---:|---:|---:|"]
    for row in rows:
        values = [rep_n(outputs[row.name], n) for n in (2, 3, 4)]  # token ids, pooled over prompts (SimCTG)
        reps.append(f"| {row.name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")

    lines = [
        "# Contrast sources vs greedy and vs their floors (SmolLM2-135M-Instruct, fp32, CPU, 1 thread)",
        "",
        f"{args.new_tokens} new tokens per call (forced); time per new token, prefill included; median of "
        f"{args.repeats} interleaved repeats, the ratio to the floor with its spread over the repeats. Floors, "
        "measured in each repeat: layer fixed / fusion, greedy + the plausible head's lm_head rows per layer; "
        "jsd and full lm_head, greedy + one full lm_head projection per layer; second model (SmolLM2 cut to "
        f"its first {args.amateur_layers} of {n_layers} layers), greedy + the amateur alone; input contrast, "
        "greedy x a 2B-row cached forward over a B-row one. Load average "
        f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end (`bench_contrast.py`).",
        "",
        *table,
        "",
        f"Repetition of the batch-{max(args.batches)} continuations:",
        "",
        *reps,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
