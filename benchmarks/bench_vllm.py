"""vLLM greedy vs vLLM contrastive decoding vs the transformers backend's contrastive decoding.

Same prompts, same expert (SmolLM2-135M-Instruct, fp32) and amateur (its first 4 layers), greedy,
a fixed number of new tokens per prompt (EOS ignored), side by side in one run. Prints a table of
requests/s and tokens/s with ratios to vLLM greedy and writes it to benchmarks/results/vllm.md.

Run it in the vLLM environment (it needs vLLM and transformers together):

    bash scripts/setup_vllm.sh
    .venv-vllm/bin/python benchmarks/bench_vllm.py [--prompts 16] [--new-tokens 32]

The transformers column uses ``counterpoint.decoding.contrastive_decoding`` (custom_generate) when
it exists; until then a clearly labelled stand-in: a batched HF loop with a KV cache per model.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import torch  # noqa: E402

from counterpoint.decoding.scores import ContrastConfig, contrast_scores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "vllm.md"
AMATEUR_LAYERS = 4
BASE_PROMPTS = [
    "The capital of France is",
    "Write a short story about a lighthouse keeper who",
    "Explain why the sky is blue in simple terms.",
    "List three uses of copper:",
    "Once upon a time",
    "The key difference between a list and a tuple in Python is",
    "Translate to French: I would like a cup of coffee.",
    "Summarize the plot of Hamlet in two sentences:",
]


def amateur_folder(expert_dir: str) -> str:
    """The expert's first layers saved as safetensors once, in counterpoint's cache folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from counterpoint.models import cache_root

    target = cache_root() / f"{Path(expert_dir).name}-first{AMATEUR_LAYERS}layers"
    if (target / "config.json").exists():
        return str(target)
    from counterpoint.decoding import truncated_amateur

    model = truncated_amateur(
        AutoModelForCausalLM.from_pretrained(expert_dir, dtype=torch.float32), AMATEUR_LAYERS
    )
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(expert_dir).save_pretrained(target)
    return str(target)


def hf_loop_contrastive(expert, amateur, batch, config: ContrastConfig, new_tokens: int) -> torch.Tensor:
    """STAND-IN for the transformers backend: batched greedy contrast with a KV cache per model."""
    from transformers import DynamicCache

    ids, mask = batch["input_ids"], batch["attention_mask"]
    caches = [DynamicCache(config=expert.config), DynamicCache(config=amateur.config)]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    step_ids, out = ids, []
    for _ in range(new_tokens):
        logits = [
            m(
                input_ids=step_ids, attention_mask=mask, position_ids=pos, past_key_values=c, use_cache=True
            ).logits[:, -1]
            for m, c in zip((expert, amateur), caches, strict=True)
        ]
        nxt = contrast_scores(logits[0], logits[1], config).argmax(-1, keepdim=True)  # (B, 1)
        out.append(nxt)
        step_ids = nxt
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=-1)
        pos = pos[:, -1:] + 1
    return torch.cat(out, dim=-1)


def transformers_contrastive(expert, amateur, tokenizer, prompts, config, new_tokens):
    """(label, callable) for the transformers column: the real decoder when it exists."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    try:
        from counterpoint.decoding import contrastive_decoding
    except ImportError:
        contrastive_decoding = None
    if contrastive_decoding is not None:

        def run():
            return expert.generate(
                **batch,
                custom_generate=contrastive_decoding,
                amateur_model=amateur,
                contrast=config,
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
            )

        return "transformers contrastive_decoding", run
    return "transformers stand-in (HF loop, KV cache)", lambda: hf_loop_contrastive(
        expert, amateur, batch, config, new_tokens
    )


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16, help="number of prompts (the 8 base ones cycled)")
    parser.add_argument("--new-tokens", type=int, default=32, help="new tokens per prompt (EOS ignored)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per column; the best is kept")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    from counterpoint.decoding.vllm import build_llm, contrast_extra_args
    from counterpoint.models import resolve_language_model_path

    expert_dir = resolve_language_model_path(None)
    amateur_dir = amateur_folder(expert_dir)
    prompts = [BASE_PROMPTS[i % len(BASE_PROMPTS)] for i in range(args.prompts)]
    config = ContrastConfig(form="beta", alpha=0.1, beta=0.5)

    llm = build_llm(expert_dir, amateur=amateur_dir, dtype="float32", max_model_len=512, enforce_eager=True)
    plain = SamplingParams(max_tokens=args.new_tokens, temperature=0.0, ignore_eos=True)
    contrast = SamplingParams(
        max_tokens=args.new_tokens, temperature=0.0, ignore_eos=True, extra_args=contrast_extra_args(config)
    )
    tokenizer = AutoTokenizer.from_pretrained(expert_dir)
    tokenizer.padding_side = "left"
    expert = AutoModelForCausalLM.from_pretrained(expert_dir, dtype=torch.float32).eval()
    amateur = AutoModelForCausalLM.from_pretrained(amateur_dir, dtype=torch.float32).eval()
    hf_label, hf_run = transformers_contrastive(expert, amateur, tokenizer, prompts, config, args.new_tokens)

    columns = [
        ("vLLM greedy", lambda: llm.generate(prompts, plain, use_tqdm=False)),
        ("vLLM contrastive decoding", lambda: llm.generate(prompts, contrast, use_tqdm=False)),
        (hf_label, lambda: torch.inference_mode()(hf_run)()),
    ]
    # Warm-up: two prompts, a few tokens, through every column's code path.
    llm.generate(prompts[:2], SamplingParams(max_tokens=4, temperature=0.0), use_tqdm=False)
    llm.generate(prompts[:2], SamplingParams(max_tokens=4, temperature=0.0, extra_args=contrast.extra_args))
    rows = []
    for label, fn in columns:
        seconds = timed(fn, args.repeats)
        rows.append((label, seconds, len(prompts) / seconds, len(prompts) * args.new_tokens / seconds))
    base_tps = rows[0][3]
    lines = [
        "# vLLM backend throughput",
        "",
        f"{len(prompts)} prompts, {args.new_tokens} new tokens each (greedy, EOS ignored), expert "
        f"SmolLM2-135M-Instruct fp32, amateur its first {AMATEUR_LAYERS} layers, contrast "
        f"{config}. CPU, torch threads 1, best of {args.repeats}. "
        "`benchmarks/bench_vllm.py` under `.venv-vllm`.",
        "",
        "| decoder | seconds | requests/s | tokens/s | tokens/s vs vLLM greedy |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, seconds, rps, tps in rows:
        lines.append(f"| {label} | {seconds:.2f} | {rps:.2f} | {tps:.1f} | {tps / base_tps:.2f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
