"""Runs scenarios on a vLLM engine for tests/decoding/test_vllm_backend.py (under .venv-vllm/bin/python).

Usage: python vllm_driver.py IN.json OUT.json

IN.json: {"expert": folder, "amateur": folder, "max_model_len": int,
          "scenarios": [[{"id": str, "prompt_token_ids": [int], "max_tokens": int,
                          "contrast": {ContrastConfig fields} | null, "greedy": true,
                          "join_step": int (engine step at which it is added, default 0),
                          "abort_step": int | null (engine step at which it is aborted)}]]}
OUT.json: {"scenarios": [{id: {"token_ids": [int], "finished": bool}}]}, every scenario run on the
same engine one after the other, each stepping the engine until no request is left.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The engine core in this process: one process fewer to start (each costs a full vLLM import).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def run_scenario(engine, requests):
    from vllm import SamplingParams

    from counterpoint.decoding.scores import ContrastConfig
    from counterpoint.decoding.vllm import contrast_extra_args

    outputs = {r["id"]: {"token_ids": [], "finished": False} for r in requests}
    pending = sorted(requests, key=lambda r: r.get("join_step", 0))
    live: set[str] = set()
    step = 0
    while pending or live:
        while pending and pending[0].get("join_step", 0) <= step:
            r = pending.pop(0)
            extra = contrast_extra_args(ContrastConfig(**r["contrast"])) if r.get("contrast") else None
            params = SamplingParams(
                max_tokens=r["max_tokens"], temperature=0.0, ignore_eos=True, extra_args=extra
            )
            engine.add_request(r["id"], {"prompt_token_ids": r["prompt_token_ids"]}, params)
            live.add(r["id"])
        for r in requests:
            if r.get("abort_step") is not None and r["abort_step"] == step and r["id"] in live:
                engine.abort_request([r["id"]])
                live.discard(r["id"])
        if live:
            for out in engine.step():
                outputs[out.request_id]["token_ids"] = list(out.outputs[0].token_ids)
                if out.finished:
                    outputs[out.request_id]["finished"] = True
                    live.discard(out.request_id)
        step += 1
    return outputs


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    from counterpoint.decoding.vllm import build_llm

    llm = build_llm(
        spec["expert"],
        amateur=spec["amateur"],
        dtype="float32",
        max_model_len=spec.get("max_model_len", 256),
        max_num_seqs=spec.get("max_num_seqs", 8),
        enforce_eager=True,
    )
    engine = llm.llm_engine
    results = [run_scenario(engine, scenario) for scenario in spec["scenarios"]]
    Path(sys.argv[2]).write_text(json.dumps({"scenarios": results}))


if __name__ == "__main__":
    main()
