"""Drives ContrastiveLogitsProcessor's Model Runner V2 interface step by step, for test_vllm_v2.py.

Runs under .venv-vllm/bin/python (it imports vLLM); the V2 runner itself needs Triton on a GPU, so the engine
is played here: request slots, a token table like ``req_states.all_token_ids``, a ``LogitsContext`` per
step (rows reordered every step, chunked prefill, a plain request, a join, a finish and a slot reused), and
the expert's logits from a full recompute. Every step compares the processor's output with the contrast of
full recomputes and counts host reads inside ``apply`` (tests/host_reads.py).

Usage: python vllm_v2_driver.py OUT.json
OUT.json: {"steps": [{"max_diff": float, "plain_untouched": bool, "reads": int, "quiet": bool}]}
"""

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import numpy as np
    import torch
    from vllm import SamplingParams

    from counterpoint.decoding.scores import ContrastConfig, contrast_scores
    from counterpoint.decoding.vllm import contrast_extra_args
    from counterpoint.decoding.vllm.pool import AmateurPool
    from counterpoint.decoding.vllm.processor import ContrastiveLogitsProcessor
    from tests.host_reads import host_reads
    from tests.tiny_models import tiny_llama

    torch.set_num_threads(1)
    expert, amateur = tiny_llama(seed=0, n_layer=2), tiny_llama(seed=1, n_layer=1)
    beta = ContrastConfig(form="beta", beta=0.5, alpha=0.1)
    diff = ContrastConfig(form="difference", gamma=1.0, tau=0.5, alpha=0.1)

    table = torch.zeros(6, 64, dtype=torch.int32)  # all_token_ids: (max_num_reqs, max_model_len)
    proc = object.__new__(ContrastiveLogitsProcessor)  # __init__ would load the amateur from vllm_config
    proc._pool, proc._configs, proc._v1_tokens = AmateurPool(amateur), {}, {}
    proc._req_states = SimpleNamespace(all_token_ids=SimpleNamespace(gpu=table), device=torch.device("cpu"))

    live: dict[int, dict] = {}  # slot -> {"tokens", "done" (tokens computed), "chunk", "config"}

    def join(slot, prompt, config, chunk=64):
        extra = contrast_extra_args(config) if config is not None else None
        proc.add_request(slot, SamplingParams(max_tokens=16, extra_args=extra))
        live[slot] = {
            "tokens": list(prompt),
            "prompt": len(prompt),
            "done": 0,
            "chunk": chunk,
            "config": config,
        }

    def full(model, tokens):
        with torch.no_grad():
            return model(torch.tensor([tokens])).logits[0, -1].float()

    events = {
        0: lambda: (
            join(0, [5, 17, 33, 8, 61], beta),
            join(1, [22, 9, 40], diff),
            join(2, [70, 3, 44, 91], None),
        ),
        3: lambda: join(3, [30, 31, 32, 33, 34, 35, 36, 37, 38], beta, chunk=4),  # prefilled over 3 steps
        8: lambda: live.pop(0),  # request 0 finishes ...
        9: lambda: join(0, [12, 13], diff),  # ... and its slot is reused
    }
    steps, seen = [], []  # seen: (contrast slots, whether one of them prefilled) per step
    for step in range(14):
        if step in events:
            events[step]()
        slots = sorted(live, reverse=step % 2 == 1)  # rows reordered every other step
        fed, lengths, sample, prefilling = [], [], [], set()
        for slot in slots:
            req = live[slot]
            if req["done"] < req["prompt"]:  # (chunked) prefill
                req["done"] = min(req["prompt"], req["done"] + req["chunk"])
                prefilling.add(slot)
            else:  # decode: the token sampled last step is fed
                req["done"] += 1
            n = req["done"]
            fed.append(req["tokens"][n - 1])
            lengths.append(n)
            sample.append(n == len(req["tokens"]))
            table[slot, : len(req["tokens"])] = torch.tensor(req["tokens"], dtype=torch.int32)
        logits = torch.stack(
            [full(expert, live[s]["tokens"][:n]) for s, n in zip(slots, lengths, strict=True)]
        )
        ctx = SimpleNamespace(
            idx_mapping_np=np.array(slots, dtype=np.int32),
            input_ids=torch.tensor(fed, dtype=torch.int32),
            pos=torch.tensor(lengths, dtype=torch.int64) - 1,
            seq_lens_upper_bound_np=np.array(lengths, dtype=np.int32),
        )
        with host_reads() as reads:
            out = proc.apply(logits.clone(), ctx)
        max_diff, plain_untouched = 0.0, True
        for r, slot in enumerate(slots):
            config = live[slot]["config"]
            if config is None:
                plain_untouched &= torch.equal(out[r], logits[r])
                continue
            want = contrast_scores(
                logits[r : r + 1], full(amateur, live[slot]["tokens"][: lengths[r]])[None], config
            )
            finite = torch.isfinite(want)
            assert torch.equal(finite, torch.isfinite(out[r : r + 1])), f"step {step} row {r}: head differs"
            max_diff = max(max_diff, float((out[r : r + 1][finite] - want[finite]).abs().max()))
        # Quiet: the same contrast requests for three steps, none prefilling in the last two (the pool's
        # batch was built the step before): nothing may be read back.
        contrast = {s for s in slots if live[s]["config"] is not None}
        seen.append((contrast, bool(prefilling & contrast)))
        quiet = (
            len(seen) >= 3 and all(c == contrast for c, _ in seen[-3:]) and not any(p for _, p in seen[-2:])
        )
        steps.append({"max_diff": max_diff, "plain_untouched": plain_untouched, "reads": sum(reads.values()),
                      "sites": dict(reads), "quiet": bool(quiet)})  # fmt: skip
        for r, slot in enumerate(slots):  # greedy on what the processor returned
            if sample[r]:
                live[slot]["tokens"].append(int(out[r].argmax()))
    Path(sys.argv[1]).write_text(json.dumps({"steps": steps}))


if __name__ == "__main__":
    main()
