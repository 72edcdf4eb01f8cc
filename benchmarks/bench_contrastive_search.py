"""Per-token time and peak memory of contrastive search against greedy decoding, side by side.

For each batch size (1 and 8 by default) and each k (4 and 8), on the embedded SmolLM2-135M:

* greedy and contrastive search per-token time, measured as (t(N tokens) - t(1 token)) / (N - 1), so
  the prompt's prefill cancels out; the strategies run in turns, --repeats times, and every ratio is
  taken within one repeat (each strategy over the greedy run of the same repeat), then summarised as the
  median with the lowest and highest repeat, so that one lucky or unlucky run cannot decide a target;
* the floor: one cached forward of k new tokens (logits for one position per row, which is all the
  step needs) against one cached forward of a single token. Contrastive search cannot cost less than
  this, and the target is within 1.1x of it;
* peak memory: on CUDA, torch's peak allocation; on the CPU, the peak resident size of a child
  process that loads the model and runs only that strategy, sampled every millisecond during
  generate(), beside its size just before.

Run: ``python benchmarks/bench_contrastive_search.py`` (writes benchmarks/results/contrastive_search.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from counterpoint.decoding import contrastive_search  # noqa: E402
from counterpoint.models import load_language_model  # noqa: E402

PROMPTS = [
    "The history of the printing press begins",
    "In a small village at the edge of the forest, there lived",
    "The most important thing to know about machine learning is",
    "Yesterday the city council voted on",
    "My grandmother's recipe for apple pie",
    "The spacecraft drifted silently past",
    "Scientists have discovered a new species of",
    "The best way to learn a new language is",
]
RESULTS = Path(__file__).parent / "results"


def generate(model, batch, strategy: str, k: int, new_tokens: int):
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    if strategy == "greedy":
        return model.generate(**batch, **kwargs)
    return model.generate(**batch, custom_generate=contrastive_search, penalty_alpha=0.6, top_k=k, **kwargs)


def per_token_time(model, batch, strategy: str, k: int, new_tokens: int) -> float:
    start = time.perf_counter()
    generate(model, batch, strategy, k, 1)
    one = time.perf_counter() - start
    start = time.perf_counter()
    generate(model, batch, strategy, k, new_tokens)
    full = time.perf_counter() - start
    return (full - one) / (new_tokens - 1)


@torch.no_grad()
def floor_ratio(model, batch, k: int, context_tokens: int, repeats: int) -> float:
    """Time of a cached forward of k new tokens over that of one new token, same cache, same rows."""
    from counterpoint import _hf

    ids = generate(model, batch, "greedy", k, context_tokens)
    mask = torch.ones_like(ids)
    mask[:, : batch["attention_mask"].shape[1]] = batch["attention_mask"]
    cache = _hf.output_cache(_hf.forward(model, ids, attention_mask=mask, logits_to_keep=1))
    rows = ids.shape[0]

    def step(width: int) -> float:
        new = ids[:, -width:]
        m = torch.cat([mask, mask.new_ones(rows, width)], dim=-1)
        start = time.perf_counter()
        _hf.forward(model, new, attention_mask=m, cache=cache, logits_to_keep=1)
        elapsed = time.perf_counter() - start
        _hf.crop_cache(cache, _hf.cache_length(cache) - width)
        return elapsed

    step(1), step(k)  # warm up
    singles, multis = [], []
    for _ in range(repeats):
        singles.append(step(1))
        multis.append(step(k))
    return statistics.median(m / s for m, s in zip(multis, singles, strict=True))


def child_peak_memory(strategy: str, k: int, batch_size: int, new_tokens: int) -> list[float]:
    """[resident MiB after loading and warm-up, peak resident MiB], in a fresh process running only this strategy."""
    probe = f"{strategy},{k},{batch_size},{new_tokens}"
    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", probe], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _memory_probe(strategy: str, k: int, batch_size: int, new_tokens: int) -> list[float]:
    """Resident size before generate() and its peak during it, sampled every millisecond.

    ru_maxrss cannot serve here: loading the model peaks higher than generating does.
    """
    model, tokenizer = load_language_model()
    batch = tokenizer(PROMPTS[:batch_size], return_tensors="pt", padding=True)
    generate(model, batch, "greedy", k, 2)  # allocator warm-up common to every strategy
    base = _rss_mib()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    generate(model, batch, strategy, k, new_tokens)
    done.set()
    sampler.join()
    return [base, max(peak[0], _rss_mib())]


def cuda_peak_memory(model, batch, strategy: str, k: int, new_tokens: int) -> list[float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    generate(model, batch, strategy, k, new_tokens)
    torch.cuda.synchronize()
    return [base / 2**20, torch.cuda.max_memory_allocated() / 2**20]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--ks", default="4,8")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--out", default=str(RESULTS / "contrastive_search.md"))
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # internal: strategy,k,batch,tokens
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    if args.memory_probe:
        strategy, k, bs, n = args.memory_probe.split(",")
        print(json.dumps(_memory_probe(strategy, int(k), int(bs), int(n))))
        return
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    ks = [int(k) for k in args.ks.split(",")]

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_language_model(device=device)
    dev_name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU ({platform.processor() or 'x86_64'}), 1 thread"
    )
    rows = []
    for bs in batch_sizes:
        batch = tokenizer(PROMPTS[:bs], return_tensors="pt", padding=True).to(device)
        strategies = [("greedy", 1)] + [("contrastive", k) for k in ks]
        for s, k in strategies:  # warm up
            generate(model, batch, s, k, 4)
        times: dict[tuple[str, int], list[float]] = {key: [] for key in strategies}
        for _ in range(args.repeats):
            for s, k in strategies:
                times[(s, k)].append(per_token_time(model, batch, s, k, args.new_tokens))
        greedy = times[("greedy", 1)]
        mem: dict[tuple[str, int], list[float]] = {}
        if not args.no_memory:
            for s, k in strategies:
                mem[(s, k)] = (
                    cuda_peak_memory(model, batch, s, k, args.new_tokens)
                    if device == "cuda"
                    else child_peak_memory(s, k, bs, args.new_tokens)
                )
        for s, k in strategies:
            ratios = [t / g for t, g in zip(times[(s, k)], greedy, strict=True)]  # per repeat
            floor = 1.0 if s == "greedy" else floor_ratio(model, batch, k, 32, 20)
            rows.append(
                {
                    "batch": bs,
                    "strategy": "greedy" if s == "greedy" else f"contrastive search, k={k}",
                    "ms_per_token": 1000 * statistics.median(times[(s, k)]),
                    "x_greedy": statistics.median(ratios),
                    "floor": floor,
                    "x_floor": statistics.median(ratios) / floor,
                    "x_floor_range": (min(ratios) / floor, max(ratios) / floor),
                    "peak_mib": mem[(s, k)][1] if mem else None,
                    "extra_mib": mem[(s, k)][1] - mem[(s, k)][0] if mem else None,
                    "peak_x_greedy": mem[(s, k)][1] / mem[("greedy", 1)][1] if mem else None,
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    lines = [
        f"Device: {dev_name}; model: SmolLM2-135M-Instruct fp32; {args.new_tokens} new tokens; "
        f"median of {args.repeats} interleaved repeats (x floor: median [lowest-highest repeat]); load average "
        f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; torch {torch.__version__}.",
        "",
        "| batch | strategy | ms/token | x greedy | floor (k-token forward / 1-token) | x floor, median [min-max] "
        "| peak MiB | peak x greedy | peak above loaded model, MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        peak_x = "" if r["peak_x_greedy"] is None else f"{r['peak_x_greedy']:.3f}"
        extra = "" if r["extra_mib"] is None else f"{r['extra_mib']:.1f}"
        lines.append(
            f"| {r['batch']} | {r['strategy']} | {r['ms_per_token']:.1f} | {r['x_greedy']:.2f} | "
            f"{r['floor']:.2f} | {r['x_floor']:.2f} [{r['x_floor_range'][0]:.2f}-{r['x_floor_range'][1]:.2f}] | "
            f"{peak} | {peak_x} | {extra} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
