"""Every decoding strategy against greedy on a GPU, exactness on that GPU, and exact search: one run.

What it measures (``benchmarks/gpu/README.md`` says how to run it on the lent H200 in one call):

1. **Exactness.** Tiny fp32 Llamas on the device with TF32 off give the same tokens as the suite's naive
   CPU references (imported from ``tests/``, so they cannot drift): contrastive search at k 4 and 8
   (``naive_contrastive_search``), and contrastive decoding, layer contrast (fixed, jsd, fusion) and
   input contrast in both score forms (``contrast_reference.naive_greedy``); on the suite's three mixed
   prompts and on an 8-row left-padded batch.
2. **Selection.** ``exact_search`` over a 1,000,000 x 384 pool of random unit vectors, 10,000 queries,
   k 8: queries/s on the device against the CPU in the same run, and whether the two return the same
   neighbours.
3. **Decoding speed.** Random-initialised bf16 models of real shapes, made directly on the device:
   SmolLM2-135M and a Llama-3.2-1B shape (greedy, contrastive search k 4 and 8, layer contrast fixed and
   jsd, input contrast), and a Llama-3.1-8B shape as the contrastive-decoding expert with the 1B as its
   amateur (greedy, the amateur alone, contrastive decoding). Batches 1, 8 and 32; every call makes
   exactly ``--new-tokens`` tokens (``min_new_tokens``: EOS cannot end a row). Time per new token is the
   wall time of a whole ``generate`` call (prefill included, device synchronised before and after) over
   the new tokens; strategies are interleaved within each repeat (the order rotates every repeat) and
   each ratio to greedy is taken within its repeat; the table shows the median and the min-max spread.
   Peak device memory is read on the first repeat. Host-device synchronisations per decoding step are
   counted with ``torch.cuda.set_sync_debug_mode("warn")`` (every blocking copy or stream sync warns,
   from the Python line that asked for it) over two calls of different lengths at one batch size:
   (syncs of the long call - syncs of the short one) / (difference in steps), so prefill and setup cancel.

Random weights: speed does not depend on their values, with one exception: layer contrast's head-only
path gathers the lm_head rows of the expert's plausible head, whose size depends on how peaked the
logits are. Default initialisation gives near-uniform logits (a plausible head of thousands of tokens);
the lm_head (the embedding when tied) is therefore re-drawn with std ``LOGIT_STD / sqrt(hidden)`` so
that logits have a standard deviation of about ``LOGIT_STD`` and the head holds a handful of tokens,
as with trained models. The measured head size is reported.

Targets (printed beside the numbers, met or missed): contrastive search <= 1.15x greedy at every batch;
contrastive decoding <= (1 + amateur time / expert time) x 1.1, both measured here; layer contrast
fixed <= 1.1x greedy; no more host-device syncs per step than greedy.

A time budget (``--budget-s``) bounds the run: each decoding section gets a share of what is left and
picks its number of repeats (between ``--min-repeats`` and ``--repeats``) from its warm-up times;
sections that no longer fit are skipped and say so. The JSON and Markdown files are rewritten after
every section, so a run cut short still leaves what it measured.

Run:  PYTHONPATH=. python benchmarks/gpu/bench_gpu.py [--out DIR] [--sections ...]   (on the GPU)
      PYTHONPATH=. python benchmarks/gpu/bench_gpu.py --device cpu --tiny --out /tmp/x    (dry run, seconds)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

JSON_NAME = "gpu_bench.json"
MD_NAME = "gpu_bench.md"
SECTIONS = ("exactness", "selection", "smollm2", "llama1b", "llama8b")

# Logit scale of the random models (see the module docstring): std of h . w for a unit-RMS hidden state.
LOGIT_STD = 3.0

CS_LIMIT = 1.15  # contrastive search, x greedy
FIXED_LIMIT = 1.10  # layer contrast fixed, x greedy
CD_SLACK = 1.10  # contrastive decoding, x (1 + amateur / expert)

_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """A Llama-family model shape; ``config()`` gives the ``LlamaConfig`` keyword arguments."""

    name: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tied: bool
    head_dim: int
    rope: dict[str, Any]
    max_positions: int = 8192
    fixed_layer: int = 0  # layer contrast, fixed: the amateur layer
    jsd_layers: tuple[int, ...] = ()  # layer contrast, jsd: the candidate layers

    def config(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab, "hidden_size": self.hidden, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
            "intermediate_size": self.intermediate, "tie_word_embeddings": self.tied, "head_dim": self.head_dim,
            "rope_parameters": dict(self.rope), "max_position_embeddings": self.max_positions,
            "rms_norm_eps": 1e-5, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        }  # fmt: skip


# Real shapes. SmolLM2-135M: the config of counterpoint's embedded SmolLM2-135M-Instruct (a test checks it);
# the Llamas: Llama-3.2-1B and Llama-3.1-8B as published.
SMOLLM2 = Shape("SmolLM2-135M", 49152, 576, 30, 9, 3, 1536, True, 64, {"rope_type": "default",
                "rope_theta": 100000.0}, 8192, fixed_layer=8, jsd_layers=(0, 4, 8, 12))  # fmt: skip
LLAMA_1B = Shape("Llama-3.2-1B", 128256, 2048, 16, 32, 8, 8192, True, 64, {**_LLAMA3_ROPE, "factor": 32.0},
                 131072, fixed_layer=4, jsd_layers=(0, 2, 4, 6))  # fmt: skip
LLAMA_8B = Shape("Llama-3.1-8B", 128256, 4096, 32, 32, 8, 14336, False, 128, {**_LLAMA3_ROPE, "factor": 8.0},
                 131072, fixed_layer=8, jsd_layers=(0, 8, 16, 24))  # fmt: skip

# Dry run: the same structure (tied and untied, grouped KV heads, both rope types), tiny.
TINY = {
    "smollm2": Shape("tiny SmolLM2-like", 512, 48, 6, 3, 1, 96, True, 16, dict(SMOLLM2.rope), 512, 2, (0, 1, 2, 3)),
    "llama1b": Shape("tiny 1B-like", 640, 64, 5, 4, 2, 128, True, 16, dict(LLAMA_1B.rope), 512, 1, (0, 1, 2, 3)),
    "llama8b": Shape("tiny 8B-like", 640, 96, 6, 4, 2, 192, False, 24, dict(LLAMA_8B.rope), 512, 2, (0, 2, 4)),
}  # fmt: skip
REAL = {"smollm2": SMOLLM2, "llama1b": LLAMA_1B, "llama8b": LLAMA_8B}


@dataclass
class Plan:
    """Sizes of one run: the GPU defaults, or the dry run's (``--tiny``)."""

    new_tokens: int = 48  # tokens per generate call, forced
    prompt_len: int = 64  # prompt tokens (rows i > 0 are left padded by i % 8)
    batches: tuple[int, ...] = (1, 8, 32)
    repeats: int = 7  # at most, per batch size
    min_repeats: int = 3  # at least, whatever the budget says
    sync_batch: int = 8  # batch size at which syncs per step are counted
    sync_tokens: tuple[int, int] = (4, 12)  # the two call lengths whose difference gives syncs per step
    exact_new_tokens: int = 12
    exact_wide: bool = True  # exactness on an 8-row batch too, beside the suite's three mixed prompts
    pool: int = 1_000_000
    dim: int = 384
    queries: int = 10_000
    k: int = 8
    search_repeats: int = 3
    cpu_search_seconds: float = 20.0  # the CPU times as many of the queries as fit in about this long
    budget_s: float = 420.0
    tiny: bool = False
    shapes: dict[str, Shape] = field(default_factory=lambda: dict(REAL))

    @classmethod
    def dry_run(cls) -> Plan:
        return cls(
            new_tokens=4, prompt_len=8, batches=(1, 3), repeats=2, min_repeats=2, sync_batch=3,
            sync_tokens=(2, 4), exact_new_tokens=4, exact_wide=False, pool=20_000, queries=300, search_repeats=2,
            cpu_search_seconds=2.0, budget_s=600.0, tiny=True, shapes=dict(TINY),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Small helpers


class Clock:
    """Elapsed time since the run started, and what is left of its budget."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.monotonic()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def log(clock: Clock, msg: str) -> None:
    print(f"[{clock.elapsed():6.1f}s] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def short_site(filename: str, lineno: int) -> str:
    """``file:line`` relative to the repository or to site-packages."""
    path = filename.replace("\\", "/")
    root = str(ROOT).replace("\\", "/") + "/"
    if path.startswith(root):
        path = path[len(root) :]
    elif "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return f"{path}:{lineno}"


SYNC_MESSAGE = "synchroniz"  # torch: "called a synchronizing CUDA operation"


def sync_sites(records: Iterable[warnings.WarningMessage]) -> Counter[str]:
    """Count the sync warnings in ``records`` by the Python line that caused them."""
    return Counter(
        short_site(w.filename, w.lineno) for w in records if SYNC_MESSAGE in str(w.message).lower()
    )


def per_step(short: Counter[str], long: Counter[str], steps: int) -> tuple[float, dict[str, float]]:
    """Syncs per decoding step from two calls ``steps`` tokens apart: total and by site (nonzero only)."""
    total = (sum(long.values()) - sum(short.values())) / steps
    sites = {s: (long[s] - short[s]) / steps for s in sorted(set(long) | set(short))}
    return total, {s: v for s, v in sites.items() if v}


def record_syncs(device: torch.device, fn: Callable[[], Any]) -> Counter[str] | None:
    """Run ``fn`` with CUDA sync debugging on and count the syncs by site; None where there is no CUDA."""
    if device.type != "cuda":
        fn()
        return None
    sync(device)
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sync(device)
    return sync_sites(records)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:400]


# ---------------------------------------------------------------------------------------------------------
# Models and batches


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype, seed: int) -> Any:
    """A random-initialised ``LlamaForCausalLM`` of ``shape``, made directly on ``device`` in ``dtype``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**shape.config())
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    model = model.to(device).eval()  # a no-op when the context put it there already
    with torch.no_grad():
        head = model.get_output_embeddings().weight  # the input embedding too when tied
        head.normal_(0.0, LOGIT_STD / math.sqrt(shape.hidden))
    model.generation_config.pad_token_id = 0
    model.generation_config.bos_token_id = 1
    model.generation_config.eos_token_id = 2
    return model


@torch.no_grad()
def head_probe(model: Any, batch: dict[str, torch.Tensor], alpha: float = 0.1) -> dict[str, Any]:
    """How many tokens the expert's plausible head holds at the prompt's last position (alpha 0.1)."""
    from counterpoint.decoding import plausible_head

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, -1].float()
    head = plausible_head(torch.log_softmax(logits, dim=-1), alpha)
    return {
        "alpha": alpha,
        "rows": int(logits.shape[0]),
        "mean_head_tokens": float(head.sum(-1).float().mean()),
        "union_head_tokens": int(head.any(0).sum()),
        "logit_std": float(logits.std(dim=-1).mean()),
        "finite": bool(torch.isfinite(logits).all()),
    }


def make_batch(
    size: int, prompt_len: int, vocab: int, device: torch.device, seed: int
) -> dict[str, torch.Tensor]:
    """Random prompts, row i left padded by ``i % 8`` tokens; and altered prompts for input contrast."""
    g = torch.Generator().manual_seed(seed)

    def padded(length: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(3, vocab, (size, length), generator=g)
        mask = torch.ones_like(ids)
        for i in range(size):
            pad = (i + shift) % 8 if size > 1 else 0
            pad = min(pad, length - 1)
            ids[i, :pad] = 0
            mask[i, :pad] = 0
        return ids.to(device), mask.to(device)

    ids, mask = padded(prompt_len, 0)
    alt_ids, alt_mask = padded(max(2, prompt_len * 3 // 4), 3)
    return {"input_ids": ids, "attention_mask": mask, "alt_ids": alt_ids, "alt_mask": alt_mask}


# ---------------------------------------------------------------------------------------------------------
# 1. Exactness


def section_exactness(device: torch.device, plan: Plan, clock: Clock) -> dict[str, Any]:
    """Tiny fp32 models on ``device`` against the suite's naive CPU references, token for token."""
    import copy

    from counterpoint.decoding import (
        ContrastConfig,
        contrastive_decoding,
        contrastive_search,
        input_contrast,
        layer_contrast,
    )
    from tests.decoding import contrast_reference as ref
    from tests.decoding.test_contrastive_search import naive_contrastive_search
    from tests.tiny_models import EOS_ID, MIXED_PROMPTS, PAD_ID, VOCAB, left_padded_batch, tiny_llama

    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    new = plan.exact_new_tokens
    g = torch.Generator().manual_seed(7)
    extra = [
        torch.randint(3, VOCAB, (int(n),), generator=g).tolist()
        for n in torch.randint(2, 12, (5,), generator=g)
    ]
    alt_extra = [
        torch.randint(3, VOCAB, (int(n),), generator=g).tolist()
        for n in torch.randint(2, 9, (8,), generator=g)
    ]
    # Altered prompts for input contrast, one per prompt, lengths unlike the prompts' (as in test_contrast.py).
    ALTERED = [[5, 17, 61, 12, 40], [22, 9, 30, 31, 32, 2], [44, 91]]  # noqa: N806
    prompt_sets = {"3 mixed prompts": MIXED_PROMPTS, "8 left-padded prompts": MIXED_PROMPTS + extra}
    if not plan.exact_wide:
        del prompt_sets["8 left-padded prompts"]
    forms = {
        "difference": ContrastConfig(form="difference", gamma=0.8, tau=0.5, alpha=0.1),
        "beta": ContrastConfig(form="beta", beta=0.5, alpha=0.1),
    }
    rows: list[dict[str, Any]] = []

    def on(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in batch.items()}

    def compare(name: str, prompts: str, got: list[list[int]], want: list[list[int]]) -> None:
        mismatch = next(
            ((r, next((i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b), min(len(x), len(y))))
             for r, (x, y) in enumerate(zip(got, want, strict=False)) if x != y),
            None,
        )  # fmt: skip
        rows.append({"case": name, "prompts": prompts, "rows": len(want), "new_tokens": new,
                     "equal": mismatch is None, "first_mismatch": mismatch})  # fmt: skip

    def attempt(name: str, prompts: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as err:  # a broken case must not hide the others
            rows.append({"case": name, "prompts": prompts, "equal": False, "error": error_text(err)})
            traceback.print_exc()

    try:
        # Contrastive search: the suite's per-row reference (no cache, no batch) against one batched call.
        cs_cpu = tiny_llama(seed=1)
        cs_cpu.generation_config.eos_token_id = None  # full length: more steps compared
        cs_dev = copy.deepcopy(cs_cpu).to(device)
        expert_cpu, amateur_cpu = tiny_llama(seed=0, n_layer=3), tiny_llama(seed=1, n_layer=1)
        expert_dev, amateur_dev = copy.deepcopy(expert_cpu).to(device), copy.deepcopy(amateur_cpu).to(device)
        norm, head = expert_cpu.model.norm, expert_cpu.lm_head
        for label, prompts in prompt_sets.items():
            batch = left_padded_batch(prompts)
            width = batch["input_ids"].shape[1]

            for k in (4, 8):

                def cs(
                    k: int = k,
                    batch: dict = batch,
                    prompts: list = prompts,
                    width: int = width,
                    label: str = label,
                ) -> None:
                    out = cs_dev.generate(**on(batch), custom_generate=contrastive_search, penalty_alpha=0.6,
                                          top_k=k, max_new_tokens=new)  # fmt: skip
                    got = [row[width:].tolist() for row in out.cpu()]
                    want = [naive_contrastive_search(cs_cpu, p, 0.6, k, new) for p in prompts]
                    compare(f"contrastive search, k={k}", label, got, want)

                attempt(f"contrastive search, k={k}", label, cs)

            alt = left_padded_batch((ALTERED + alt_extra)[: len(prompts)])
            sources = {
                "contrastive decoding": (
                    {"custom_generate": contrastive_decoding, "amateur_model": amateur_dev},
                    ref.model_amateur(amateur_cpu)),
                "layer contrast, fixed (1)": (
                    {"custom_generate": layer_contrast, "amateur_layers": [1], "layer_mode": "fixed"},
                    ref.layer_amateur(expert_cpu, [1], "fixed", norm, head)),
                "layer contrast, jsd (0,1,2)": (
                    {"custom_generate": layer_contrast, "amateur_layers": [0, 1, 2], "layer_mode": "jsd"},
                    ref.layer_amateur(expert_cpu, [0, 1, 2], "jsd", norm, head)),
                "layer contrast, fusion (0,2)": (
                    {"custom_generate": layer_contrast, "amateur_layers": [0, 2], "layer_mode": "fusion"},
                    ref.layer_amateur(expert_cpu, [0, 2], "fusion", norm, head)),
                "input contrast": (
                    {"custom_generate": input_contrast, "amateur_input_ids": alt["input_ids"].to(device),
                     "amateur_attention_mask": alt["attention_mask"].to(device)},
                    ref.input_amateur(expert_cpu, alt["input_ids"], alt["attention_mask"], width)),
            }  # fmt: skip
            for source, (kwargs, amateur_fn) in sources.items():
                for form, config in forms.items():
                    name = f"{source} ({form})"

                    def cd(
                        kwargs=kwargs,
                        amateur_fn=amateur_fn,
                        config=config,
                        batch=batch,
                        name=name,
                        label=label,
                    ) -> None:
                        want = ref.naive_greedy(expert_cpu, amateur_fn, batch["input_ids"], batch["attention_mask"],
                                                config, new, pad_id=PAD_ID, eos_id=EOS_ID)  # fmt: skip
                        out = expert_dev.generate(**on(batch), do_sample=False, max_new_tokens=new, contrast=config,
                                                  **kwargs)  # fmt: skip
                        compare(name, label, out.cpu().tolist(), want.tolist())

                    attempt(name, label, cd)
            log(clock, f"exactness: {label} done")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    free(device)
    return {"rows": rows, "all_equal": bool(rows) and all(r["equal"] for r in rows), "tf32": False}


# ---------------------------------------------------------------------------------------------------------
# 2. Selection


def section_selection(device: torch.device, plan: Plan, clock: Clock) -> dict[str, Any]:
    """Exact search on the device against the CPU: queries/s, and whether both find the same neighbours."""
    from counterpoint.selection.search import exact_search

    g = torch.Generator(device=device).manual_seed(0)
    corpus = torch.nn.functional.normalize(
        torch.randn(plan.pool, plan.dim, device=device, generator=g), dim=-1
    )
    queries = torch.nn.functional.normalize(
        torch.randn(plan.queries, plan.dim, device=device, generator=g), dim=-1
    )
    queries = queries.cpu()  # as an embedder on the host would hand them over
    k = plan.k

    def run(q: torch.Tensor, c: torch.Tensor, dev: torch.device) -> tuple[float, torch.Tensor]:
        sync(dev)
        t0 = time.perf_counter()
        _, idx = exact_search(q, c, k, device=dev)  # results come back on the CPU
        sync(dev)
        return time.perf_counter() - t0, idx

    run(queries[: min(1024, plan.queries)], corpus, device)  # warm-up: kernels, cuBLAS handles
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    dev_times, dev_idx = [], None
    for _ in range(plan.search_repeats):
        t, dev_idx = run(queries, corpus, device)
        dev_times.append(t)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    log(clock, f"selection: device {plan.queries} queries in {statistics.median(dev_times):.3f}s (median)")

    cpu = torch.device("cpu")
    corpus_cpu = corpus.cpu()
    del corpus
    free(device)
    probe = min(100, plan.queries)
    t_probe, _ = run(queries[:probe], corpus_cpu, cpu)  # warm-up, and the rate to size the CPU run
    n_cpu = max(
        min(plan.queries, 500), min(plan.queries, int(plan.cpu_search_seconds * probe / max(t_probe, 1e-9)))
    )
    t_cpu, cpu_idx = run(queries[:n_cpu], corpus_cpu, cpu)
    log(clock, f"selection: CPU {n_cpu} queries in {t_cpu:.3f}s ({torch.get_num_threads()} threads)")

    same_list = (cpu_idx == dev_idx[:n_cpu]).all(dim=1).float().mean().item()
    overlap = statistics.fmean(
        len(set(a) & set(b)) / k for a, b in zip(cpu_idx.tolist(), dev_idx[:n_cpu].tolist(), strict=True)
    )
    dev_qps = plan.queries / statistics.median(dev_times)
    cpu_qps = n_cpu / t_cpu
    return {
        "pool": plan.pool, "dim": plan.dim, "k": k, "queries": plan.queries,
        "device": {"device": str(device), "queries_timed": plan.queries, "seconds": spread(dev_times),
                   "queries_per_s": dev_qps, "peak_mib_above_pool": peak},
        "cpu": {"queries_timed": n_cpu, "seconds": t_cpu, "queries_per_s": cpu_qps,
                "threads": torch.get_num_threads()},
        "speedup": dev_qps / cpu_qps,
        "same_neighbour_list": same_list,  # share of queries whose top-k lists are identical on both
        "top_k_overlap": overlap,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# 3. Decoding speed


def _configs() -> dict[str, Any]:
    from counterpoint.decoding import INSTRUCTIVE_DECODING, ContrastConfig

    return {
        "dola": ContrastConfig(form="difference", gamma=1.0, alpha=0.1),  # DoLa's own setting
        "cd": ContrastConfig(form="beta", beta=0.5, alpha=0.1),  # O'Brien and Lewis
        "input": INSTRUCTIVE_DECODING,
    }


@dataclass
class Row:
    """One strategy of a decoding section: how to call it, what it is held to."""

    key: str
    label: str
    model: str  # "expert" or "amateur": whose generate() runs
    kwargs: Callable[[dict[str, torch.Tensor]], dict[str, Any]]  # batch -> generate keyword arguments
    target: str | None = None  # "cs", "fixed", "cd" or None


def single_model_rows(shape: Shape) -> list[Row]:
    from counterpoint.decoding import contrastive_search, input_contrast, layer_contrast

    cfg = _configs()
    jsd = ",".join(map(str, shape.jsd_layers))
    return [
        Row("greedy", "greedy", "expert", lambda b: {}),
        Row("cs4", "contrastive search, k=4", "expert",
            lambda b: {"custom_generate": contrastive_search, "penalty_alpha": 0.6, "top_k": 4}, "cs"),
        Row("cs8", "contrastive search, k=8", "expert",
            lambda b: {"custom_generate": contrastive_search, "penalty_alpha": 0.6, "top_k": 8}, "cs"),
        Row("layer-fixed", f"layer contrast, fixed (layer {shape.fixed_layer})", "expert",
            lambda b: {"custom_generate": layer_contrast, "amateur_layers": [shape.fixed_layer],
                       "layer_mode": "fixed", "contrast": cfg["dola"]}, "fixed"),
        Row("layer-jsd", f"layer contrast, jsd ({jsd})", "expert",
            lambda b: {"custom_generate": layer_contrast, "amateur_layers": list(shape.jsd_layers),
                       "layer_mode": "jsd", "contrast": cfg["dola"]}),
        Row("input", "input contrast (altered prompt)", "expert",
            lambda b: {"custom_generate": input_contrast, "amateur_input_ids": b["alt_ids"],
                       "amateur_attention_mask": b["alt_mask"], "contrast": cfg["input"]}),
    ]  # fmt: skip


def two_model_rows(expert: Shape, amateur: Shape, amateur_model: Any) -> list[Row]:
    from counterpoint.decoding import contrastive_decoding

    cfg = _configs()
    return [
        Row("greedy", f"greedy ({expert.name})", "expert", lambda b: {}),
        Row("amateur", f"amateur alone, greedy ({amateur.name})", "amateur", lambda b: {}),
        Row("cd", f"contrastive decoding ({expert.name} expert, {amateur.name} amateur)", "expert",
            lambda b: {"custom_generate": contrastive_decoding, "amateur_model": amateur_model,
                       "contrast": cfg["cd"]}, "cd"),
    ]  # fmt: skip


def generate(model: Any, batch: dict[str, torch.Tensor], kwargs: dict[str, Any], new: int) -> torch.Tensor:
    out = model.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=False,
        max_new_tokens=new, min_new_tokens=new, **kwargs,
    )  # fmt: skip
    made = out.shape[1] - batch["input_ids"].shape[1]
    if made != new:
        raise RuntimeError(f"made {made} new tokens, not {new}")
    return out


def timed(device: torch.device, fn: Callable[[], Any]) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def decode_section(
    title: str, device: torch.device, plan: Plan, clock: Clock, budget_s: float,
    models: dict[str, Any], rows: list[Row], vocab: int, shapes: dict[str, Shape],
) -> dict[str, Any]:  # fmt: skip
    """Time every row against greedy at each batch size, count its syncs, read its peak memory."""
    section_start = clock.elapsed()
    new = plan.new_tokens
    results: dict[str, Any] = {"title": title, "models": {}, "batches": {}, "syncs": {}}
    for role, model in models.items():
        results["models"][role] = {
            "shape": asdict(shapes[role]), "dtype": str(model.dtype),
            "params": sum(p.numel() for p in model.parameters()),
            "attn_implementation": model.config._attn_implementation,
        }  # fmt: skip
    loaded = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None
    results["loaded_mib"] = loaded
    probe_batch = make_batch(min(8, max(plan.batches)), plan.prompt_len, vocab, device, seed=11)
    results["head_probe"] = {role: head_probe(m, probe_batch) for role, m in models.items()}

    for bi, size in enumerate(plan.batches):
        batch = make_batch(size, plan.prompt_len, vocab, device, seed=100 + size)
        entry: dict[str, Any] = {"rows": {}, "repeats": 0}
        results["batches"][str(size)] = entry
        if clock.left() < 10:
            entry["error"] = "skipped: the run's time budget is spent"
            log(clock, f"{title}: batch {size}: skipped, out of time")
            continue
        calls = {r.key: (models[r.model], r.kwargs(batch)) for r in rows}
        errors: dict[str, str] = {}
        warm: dict[str, float] = {}
        for r in rows:  # warm-up: first-call costs out of the numbers, and the time of one round
            model, kwargs = calls[r.key]
            try:
                warm[r.key] = timed(
                    device,
                    lambda model=model, kwargs=kwargs, batch=batch: generate(model, batch, kwargs, new),
                )
            except Exception as err:
                errors[r.key] = error_text(err)
                traceback.print_exc()
        if "greedy" in errors:
            entry["error"] = f"greedy failed: {errors['greedy']}"
            continue
        left_batches = len(plan.batches) - bi
        share = (budget_s - (clock.elapsed() - section_start)) / left_batches
        round_s = sum(warm.values())
        repeats = max(plan.min_repeats, min(plan.repeats, int(share / max(round_s, 1e-9))))
        times: dict[str, list[float]] = {r.key: [] for r in rows if r.key not in errors}
        peaks: dict[str, float | None] = {}
        order = [r for r in rows if r.key not in errors]
        batch_end = clock.elapsed() + share  # this batch size's share of the section's budget
        for rep in range(repeats):
            # Past the share, stop once two repeats (a median and a spread) are in; past the whole
            # run's budget, once one is.
            over_share = rep >= 2 and clock.elapsed() + round_s > batch_end + 0.5 * round_s
            if over_share or (rep >= 1 and clock.left() < round_s * 1.5):
                log(clock, f"{title}: batch {size}: out of time after {rep} repeats")
                break
            shift = rep % len(order)
            for r in order[shift:] + order[:shift]:
                model, kwargs = calls[r.key]
                if r.key in errors:
                    continue
                if rep == 0 and device.type == "cuda":
                    sync(device)
                    torch.cuda.reset_peak_memory_stats(device)
                    before = torch.cuda.memory_allocated(device)
                try:
                    t = timed(
                        device,
                        lambda model=model, kwargs=kwargs, batch=batch: generate(model, batch, kwargs, new),
                    )
                except Exception as err:
                    errors[r.key] = error_text(err)
                    traceback.print_exc()
                    continue
                times[r.key].append(t)
                if rep == 0:
                    peaks[r.key] = (
                        torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
                    )
                    if device.type == "cuda":
                        peaks[r.key + ":above"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
            entry["repeats"] = rep + 1
        greedy = times["greedy"]
        amateur = times.get("amateur")
        for r in rows:
            row: dict[str, Any] = {"label": r.label, "target_kind": r.target}
            if r.key in errors:
                row["error"] = errors[r.key]
            t = times.get(r.key, [])
            n = min(len(t), len(greedy))
            ratios = [t[i] / greedy[i] for i in range(n)]
            row["ms_per_token"] = spread([1000 * x / new for x in t])
            row["x_greedy"] = spread(ratios)
            row["peak_mib"] = peaks.get(r.key)
            row["peak_above_mib"] = peaks.get(r.key + ":above")
            row["seconds"] = t
            if r.target == "cs":
                row["limit"] = CS_LIMIT
            elif r.target == "fixed":
                row["limit"] = FIXED_LIMIT
            elif r.target == "cd" and amateur:
                m = min(len(amateur), n)
                cost = statistics.median(amateur[i] / greedy[i] for i in range(m))
                row["amateur_over_expert"] = cost
                row["limit"] = (1 + cost) * CD_SLACK
            if "limit" in row and row["x_greedy"]["median"] is not None:
                row["met"] = row["x_greedy"]["median"] <= row["limit"]
            entry["rows"][r.key] = row
        log(clock, f"{title}: batch {size}: {entry['repeats']} repeats, " + ", ".join(
            f"{r.key} {entry['rows'][r.key]['x_greedy']['median']:.2f}x" if entry["rows"][r.key]["x_greedy"]["median"]
            else f"{r.key} failed" for r in rows))  # fmt: skip

    # Host-device syncs per decoding step, at one batch size (the count does not depend on the shape).
    size = plan.sync_batch
    batch = make_batch(size, plan.prompt_len, vocab, device, seed=100 + size)
    n1, n2 = plan.sync_tokens
    results["syncs"] = {"batch": size, "tokens": [n1, n2], "counted": device.type == "cuda", "rows": {}}
    for r in rows:
        model, kwargs = models[r.model], r.kwargs(batch)
        try:
            short = record_syncs(
                device, lambda model=model, kwargs=kwargs: generate(model, batch, kwargs, n1)
            )
            long = record_syncs(device, lambda model=model, kwargs=kwargs: generate(model, batch, kwargs, n2))
        except Exception as err:
            results["syncs"]["rows"][r.key] = {"error": error_text(err)}
            continue
        if short is None or long is None:
            results["syncs"]["rows"][r.key] = {"per_step": None, "sites": {}}
            continue
        total, sites = per_step(short, long, n2 - n1)
        results["syncs"]["rows"][r.key] = {"per_step": total, "sites": sites, "short_call": sum(short.values()),
                                           "long_call": sum(long.values())}  # fmt: skip
    greedy_syncs = results["syncs"]["rows"].get("greedy", {}).get("per_step")
    for s in results["syncs"]["rows"].values():
        if s.get("per_step") is not None and greedy_syncs is not None:
            s["extra_over_greedy"] = s["per_step"] - greedy_syncs
            s["met"] = s["per_step"] <= greedy_syncs + 1e-9
    results["seconds"] = clock.elapsed() - section_start
    return results


def section_decode(name: str, device: torch.device, plan: Plan, clock: Clock, budget_s: float,
                   cache: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    dtype = torch.bfloat16
    shapes = plan.shapes
    if name in ("smollm2", "llama1b"):
        shape = shapes[name]
        t0 = time.perf_counter()
        model = cache[name] if name in cache else build_model(shape, device, dtype, seed=1)
        log(clock, f"{name}: {shape.name} built in {time.perf_counter() - t0:.1f}s")
        if name == "llama1b":
            cache["llama1b"] = model  # the 8B section's amateur
        try:
            return decode_section(shape.name, device, plan, clock, budget_s, {"expert": model},
                                  single_model_rows(shape), shape.vocab, {"expert": shape})  # fmt: skip
        finally:
            del model
            free(device)
    expert_shape, amateur_shape = shapes["llama8b"], shapes["llama1b"]
    t0 = time.perf_counter()
    amateur = cache["llama1b"] if "llama1b" in cache else build_model(amateur_shape, device, dtype, seed=1)
    expert = build_model(expert_shape, device, dtype, seed=2)
    log(
        clock,
        f"llama8b: {expert_shape.name} (+ {amateur_shape.name}) built in {time.perf_counter() - t0:.1f}s",
    )
    try:
        return decode_section(
            f"{expert_shape.name} with {amateur_shape.name} as amateur",
            device,
            plan,
            clock,
            budget_s,
            {"expert": expert, "amateur": amateur},
            two_model_rows(expert_shape, amateur_shape, amateur),
            expert_shape.vocab,
            {"expert": expert_shape, "amateur": amateur_shape},
        )
    finally:
        del expert, amateur
        cache.pop("llama1b", None)
        free(device)


# ---------------------------------------------------------------------------------------------------------
# Environment, targets and the report


def environment(device: torch.device, plan: Plan) -> dict[str, Any]:
    import importlib.metadata as md

    import transformers

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    env: dict[str, Any] = {
        "python": platform.python_version(), "machine": platform.machine(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "transformers_path": str(Path(transformers.__file__).parent),
        "packages": {n: version(n) for n in ("numpy", "huggingface-hub", "tokenizers", "safetensors", "regex",
                                              "accelerate", "sentence-transformers")},
        "device": str(device), "threads": torch.get_num_threads(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "dry_run": plan.tiny,
    }  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = {"name": props.name, "memory_gib": props.total_memory / 2**30,
                      "multiprocessors": props.multi_processor_count, "capability": f"{props.major}.{props.minor}"}  # fmt: skip
        try:
            query = "name,driver_version,clocks.sm,clocks.mem,memory.used,temperature.gpu"
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20,
            ).stdout.strip()  # fmt: skip
        except Exception as err:
            env["nvidia_smi"] = error_text(err)
    try:
        env["git_commit"] = (
            subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except Exception:
        env["git_commit"] = None
    return env


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target the run could judge: what, the value, the limit, met or missed."""
    out = []
    for name, sec in report["sections"].items():
        if not name.startswith("decode:") or "batches" not in sec:
            continue
        for size, entry in sec["batches"].items():
            if "error" in entry:
                out.append({"section": sec["title"], "batch": int(size), "what": "every strategy", "unit": "",
                            "value": None, "limit": None, "met": False, "error": entry["error"]})  # fmt: skip
            for row in entry.get("rows", {}).values():
                if not row.get("target_kind"):
                    continue
                t = {"section": sec["title"], "batch": int(size), "what": row["label"], "unit": "x greedy",
                     "value": row["x_greedy"]["median"], "limit": row.get("limit"), "met": bool(row.get("met"))}  # fmt: skip
                if "error" in row:
                    t["error"] = row["error"]
                out.append(t)
        for key, s in sec.get("syncs", {}).get("rows", {}).items():
            if key == "greedy" or "met" not in s and "error" not in s:
                continue
            label = next(
                (e["rows"][key]["label"] for e in sec["batches"].values() if key in e.get("rows", {})), key
            )
            greedy = sec["syncs"]["rows"].get("greedy", {}).get("per_step")
            t = {"section": sec["title"], "batch": sec["syncs"]["batch"], "what": f"{label}: syncs/step",
                 "value": s.get("per_step"), "limit": greedy, "met": s.get("met", False),
                 "unit": "syncs/step (limit: greedy's)"}  # fmt: skip
            if "error" in s:
                t["error"] = s["error"]
            out.append(t)
    return out


def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _range(s: dict[str, float | None], digits: int = 2) -> str:
    return "—" if s.get("min") is None else f"{s['min']:.{digits}f}–{s['max']:.{digits}f}"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    env, plan = report["environment"], report["plan"]
    gpu = env.get("gpu", {}).get("name") or env["device"]
    head = "# GPU benchmark" + (
        " — DRY RUN on tiny models (code path check, not a measurement)" if plan["tiny"] else ""
    )
    lines = [
        head, "",
        f"Device: {gpu} ({env['device']}); torch {env['torch']} (CUDA {env['cuda']}), transformers "
        f"{env['transformers']}, Python {env['python']}; {env['threads']} CPU threads. "
        f"`benchmarks/gpu/run.sh`, {report['finished'] or 'unfinished'}, {report['wall_s']:.0f} s in all.",
        "",
        f"Decoding: random-initialised bf16 models of real shapes (lm_head re-drawn so logits have std about "
        f"{LOGIT_STD}; plausible heads below), prompts of {plan['prompt_len']} tokens (row i left padded by i mod 8), "
        f"exactly {plan['new_tokens']} new tokens per call (min_new_tokens), time per new token with prefill "
        f"included; strategies interleaved, order rotated each repeat; median and min–max of the repeats; ratios "
        f"to greedy taken within each repeat. Peak: max allocated during the call; 'above' = above the loaded "
        f"models. Syncs/step: host-device synchronisations per decoding step at batch {plan['sync_batch']} "
        f"(CUDA sync debug mode, calls of {plan['sync_tokens'][0]} and {plan['sync_tokens'][1]} tokens differenced).",
        "",
    ]  # fmt: skip
    table_rows = []
    for name, sec in report["sections"].items():
        if not name.startswith("decode:") or "batches" not in sec:
            continue
        syncs = sec.get("syncs", {}).get("rows", {})
        for size, entry in sec["batches"].items():
            if "error" in entry:
                table_rows.append([sec["title"], size, "all", entry["error"]] + [""] * 9)
                continue
            for key, row in entry["rows"].items():
                s = syncs.get(key, {})
                verdict = "" if "met" not in row else ("met" if row["met"] else "**missed**")
                target = "" if "limit" not in row else f"≤ {row['limit']:.2f}"
                if "amateur_over_expert" in row:
                    target += f" = (1 + {row['amateur_over_expert']:.2f}) × {CD_SLACK}"
                if "error" in row and row["ms_per_token"]["median"] is None:
                    table_rows.append([sec["title"], size, row["label"], f"error: {row['error']}"] + [""] * 9)
                    continue
                table_rows.append([
                    sec["title"], size, row["label"], _f(row["ms_per_token"]["median"]), _range(row["ms_per_token"]),
                    _f(row["x_greedy"]["median"]), _range(row["x_greedy"]), target, verdict,
                    _f(row["peak_mib"], 0), _f(row["peak_above_mib"], 0), _f(s.get("per_step")),
                    entry["repeats"],
                ])  # fmt: skip
    lines.append(_table(["model", "batch", "strategy", "ms/token", "ms/token min–max", "x greedy", "x greedy min–max",
                         "target", "met", "peak MiB", "peak above models MiB", "syncs/step", "repeats"], table_rows))  # fmt: skip

    verdicts = report.get("targets", [])
    if verdicts:
        met = sum(1 for t in verdicts if t["met"])
        lines += ["", f"**Targets: {met} of {len(verdicts)} met.** Missed:" if met < len(verdicts)
                  else f"**Targets: all {len(verdicts)} met.**"]  # fmt: skip
        for t in verdicts:
            if not t["met"]:
                value = t.get("error") or f"{_f(t['value'])} against {_f(t['limit'])} {t['unit']}"
                lines.append(f"- {t['section']}, batch {t['batch']}, {t['what']}: {value}")

    unmeasured = [
        f"{name} ({sec.get('status')})"
        for name, sec in report["sections"].items()
        if sec.get("status") != "ok"
    ]
    if unmeasured:
        lines += ["", "**Not measured:** " + ", ".join(unmeasured) + "."]

    sync_lines = []
    for sec in report["sections"].values():
        for key, s in sec.get("syncs", {}).get("rows", {}).items():
            if s.get("sites"):
                sites = ", ".join(f"`{site}` {v:g}" for site, v in s["sites"].items())
                sync_lines.append(f"- {sec['title']}, {key}: {_f(s['per_step'])}/step: {sites}")
    if sync_lines:
        lines += ["", "Where each step synchronises (file:line, syncs per step):", *sync_lines]

    probes = []
    for sec in report["sections"].values():
        for role, p in sec.get("head_probe", {}).items():
            probes.append(f"{sec['models'][role]['shape']['name']}: {p['mean_head_tokens']:.1f} tokens per row "
                          f"(union over {p['rows']} rows {p['union_head_tokens']}), "
                          f"logit std {p['logit_std']:.2f}{'' if p['finite'] else ', NON-FINITE logits'}")  # fmt: skip
    if probes:
        lines += [
            "",
            "Plausible head (alpha 0.1) of the random models at the prompt's end: " + "; ".join(probes) + ".",
        ]

    ex = report["sections"].get("exactness")
    if ex:
        lines += ["", "## Exactness on the device (tiny fp32 Llamas, TF32 off, against the suite's naive CPU "
                  "references)", ""]  # fmt: skip
        if "rows" in ex:
            lines.append(_table(["case", "prompts", "same tokens"], [
                [r["case"], r["prompts"], "yes" if r["equal"] else
                 f"**NO** ({r.get('error') or 'row {}, step {}'.format(*r['first_mismatch'])})"]
                for r in ex["rows"]]))  # fmt: skip
        else:
            lines.append(f"Section {ex.get('status')}: {ex.get('error', '')}")

    sel = report["sections"].get("selection")
    if sel:
        lines += ["", "## Exact search (counterpoint.selection.search.exact_search)", ""]
        if "device" in sel:
            d, c = sel["device"], sel["cpu"]
            lines += [
                f"Pool {sel['pool']:,} x {sel['dim']} random unit vectors, k = {sel['k']}; queries handed over from "
                f"the host, neighbours returned to it. Same top-{sel['k']} list on both: "
                f"{100 * sel['same_neighbour_list']:.1f}% of queries; top-k overlap {sel['top_k_overlap']:.4f}.",
                "",
                _table(["where", "queries timed", "seconds", "queries/s", "x CPU"], [
                    [f"{d['device']} (median of {plan['search_repeats']})", f"{d['queries_timed']:,}",
                     _f(d["seconds"]["median"], 3), f"{d['queries_per_s']:,.0f}", f"{sel['speedup']:.1f}"],
                    [f"CPU, {c['threads']} threads", f"{c['queries_timed']:,}", _f(c["seconds"], 3),
                     f"{c['queries_per_s']:,.0f}", "1.0"],
                ]),
            ]  # fmt: skip
        else:
            lines.append(f"Section {sel.get('status')}: {sel.get('error', '')}")

    lines += ["", "## Sections", ""]
    lines.append(_table(["section", "status", "seconds"], [
        [name, sec.get("status", "?"), _f(sec.get("seconds"), 1)] for name, sec in report["sections"].items()
    ]))  # fmt: skip
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path, clock: Clock) -> None:
    report["wall_s"] = clock.elapsed()
    report["targets"] = targets(report)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ((JSON_NAME, json.dumps(report, indent=1, default=str)), (MD_NAME, markdown(report))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)


# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument(
        "--tiny", action="store_true", help="dry run: tiny models and sizes, seconds on a CPU"
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default benchmarks/results/gpu; dry run: a temp)"
    )
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--budget-s", type=float, default=None, help="time budget of the whole run (default 420)"
    )
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="most repeats per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (dry run default: 1)")
    args = parser.parse_args(argv)

    plan = Plan.dry_run() if args.tiny else Plan()
    for name in ("budget_s", "new_tokens", "repeats"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    if args.batches:
        plan.batches = tuple(args.batches)
    plan.min_repeats = min(plan.min_repeats, plan.repeats)
    if args.threads or plan.tiny:
        torch.set_num_threads(args.threads or 1)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --tiny for the dry run", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (
        Path(os.environ.get("TMPDIR", "/tmp")) / "counterpoint-gpu-dry-run" if plan.tiny
        else ROOT / "benchmarks" / "results" / "gpu")  # fmt: skip
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    clock = Clock(plan.budget_s)
    report: dict[str, Any] = {
        "environment": environment(device, plan),
        "plan": asdict(plan),
        "targets_defined": {"contrastive_search_x_greedy": CS_LIMIT, "layer_fixed_x_greedy": FIXED_LIMIT,
                            "contrastive_decoding": f"(1 + amateur/expert) x {CD_SLACK}",
                            "syncs_per_step": "at most greedy's"},
        "sections": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "finished": None, "wall_s": 0.0,
    }  # fmt: skip
    log(clock, f"device {device}, torch {torch.__version__}, transformers {report['environment']['transformers']}, "
        f"budget {plan.budget_s:.0f}s, out {out}")  # fmt: skip
    write(report, out, clock)

    cache: dict[str, Any] = {}
    decode = [s for s in ("smollm2", "llama1b", "llama8b") if s in args.sections]
    weights = {"smollm2": 0.3, "llama1b": 0.3, "llama8b": 0.4}
    reserve = 15.0  # seconds kept for the sync counts and writing at the end of each section
    for name in [s for s in SECTIONS if s in args.sections]:
        key = name if name in ("exactness", "selection") else f"decode:{name}"
        if clock.left() < 10:
            report["sections"][key] = {"status": "skipped: out of time", "title": name}
            log(clock, f"{name}: skipped, out of time")
            continue
        log(clock, f"{name}: start")
        t0 = clock.elapsed()
        try:
            if name == "exactness":
                result = section_exactness(device, plan, clock)
            elif name == "selection":
                result = section_selection(device, plan, clock)
            else:
                remaining = [s for s in decode if f"decode:{s}" not in report["sections"]]
                budget = (clock.left() - reserve) * weights[name] / sum(weights[s] for s in remaining)
                result = section_decode(name, device, plan, clock, budget, cache)
            result["status"] = "ok"
        except Exception as err:
            traceback.print_exc()
            result = {"status": "error", "error": error_text(err), "title": name}
            free(device)
        result["seconds"] = clock.elapsed() - t0
        report["sections"][key] = result
        log(clock, f"{name}: {result['status']} in {result['seconds']:.1f}s")
        write(report, out, clock)

    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report["imported_modules"] = sorted({m.split(".")[0] for m in list(sys.modules)})
    write(report, out, clock)
    print(markdown(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
