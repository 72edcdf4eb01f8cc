"""tests/ref_driver.py, plus what transformers 4.55.4's DoLa chose at every step (run under .venv-ref).

Runs the same jobs as tests/ref_driver.py (see its docstring for IN.json and OUT.pt) with two additions:

* a generate job may hold ``"seed"``: ``torch.manual_seed(seed)`` runs just before its ``generate()``;
* OUT.pt gains ``"dola": {job id: {"candidates": [int], "chosen": [int, one per step]}}``: the candidate
  premature layers 4.55 built from ``dola_layers`` and the layer it contrasted at each step, recorded by
  wrapping ``transformers.generation.utils._dola_select_contrast`` and ``_relative_top_filter`` (the
  latter receives the chosen layer's logits, which are matched to their layer by identity).

Usage: python dola_ref_driver.py IN.json OUT.pt
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for ref_driver

import ref_driver  # noqa: E402


def main() -> None:
    import torch
    from transformers.generation import utils  # noqa: TID251 (this runs transformers 4.55 itself, in .venv-ref)

    records: dict[str, dict] = {}
    current: dict = {}
    select, top_filter = utils._dola_select_contrast, utils._relative_top_filter

    def recording_select(candidates, logits_by_layer, final_logits):
        record = records[current["id"]]
        record["candidates"] = list(candidates)
        current["layers"] = logits_by_layer
        return select(candidates, logits_by_layer, final_logits)

    def recording_filter(scores, baseline_scores, *args, **kwargs):
        chosen = [k for k, v in current["layers"].items() if v is baseline_scores]
        records[current["id"]]["chosen"].append(chosen[0])
        return top_filter(scores, baseline_scores, *args, **kwargs)

    utils._dola_select_contrast = recording_select
    utils._relative_top_filter = recording_filter
    run = ref_driver.run

    def run_job(model, job):
        current["id"] = job["id"]
        records[job["id"]] = {"candidates": None, "chosen": []}
        if job.get("seed") is not None:
            torch.manual_seed(job["seed"])
        return run(model, job)

    ref_driver.run = run_job
    ref_driver.main()
    out = torch.load(sys.argv[2], weights_only=True)
    out["dola"] = {k: v for k, v in records.items() if v["candidates"] is not None}
    torch.save(out, sys.argv[2])


if __name__ == "__main__":
    main()
