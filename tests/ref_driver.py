"""Runs transformers 4.55.4 for the oracle tests, under .venv-ref/bin/python (tests/ref_env.py drives it).

transformers 4.55 is the last release with contrastive search and DoLa built into ``generate()``; the
tests save a model folder in the main environment, hand this script the jobs to run on it, and compare
its answers with counterpoint's token for token. counterpoint is not importable here.

Usage: python ref_driver.py IN.json OUT.pt

IN.json: {"jobs": [{"id": str,
                    "model": folder written by save_pretrained (transformers 5),
                    "from_pretrained": {keyword arguments for from_pretrained(), e.g.
                                        "attn_implementation": "eager"} (optional),
                    "kind": "forward" | "generate",
                    "input_ids": [[int]], "attention_mask": [[int]],
                    "position_ids": [[int]] (forward only, optional),
                    "kwargs": {keyword arguments for generate(), any (generate only)}}]}
OUT.pt (torch.save, load with weights_only=True):
    {"versions": {"transformers": str, "torch": str},
     "configs": {model folder: the config as this release sees it, a dict},
     "results": {id: forward: {"logits": (B, T, V) float32}
                     generate: {"sequences": (B, T + new) int64, and when generate returned them,
                                "scores" / "logits": (steps, B, V) float32}}}
Models load in fp32 on the CPU, in eval mode, one thread.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def config_for_this_release(folder: Path) -> dict:
    """config.json of a transformers 5 folder, with the fields 5.x renamed put back where 4.55 reads them.

    5.x writes RoPE settings as ``rope_parameters: {"rope_type", "rope_theta", ...}``; 4.55 reads
    ``rope_theta`` (silently defaulting to 10000 without it) and ``rope_scaling`` for the other types.
    """
    config = json.loads((folder / "config.json").read_text())
    rope = config.pop("rope_parameters", None)
    if rope is not None:
        rope = dict(rope)
        if "rope_theta" in rope:
            config["rope_theta"] = rope.pop("rope_theta")
        if "partial_rotary_factor" in rope:
            config["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
        if rope.get("rope_type", "default") != "default":
            config["rope_scaling"] = rope
    config.pop("dtype", None)  # 5.x's name for torch_dtype; the driver loads fp32 in any case
    return config


def load(folder: str, kwargs: dict):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = config_for_this_release(Path(folder))
    config = AutoConfig.for_model(**fields)
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, torch_dtype=torch.float32, **kwargs)
    return model.eval(), model.config.to_dict()


def run(model, job: dict) -> dict:
    import torch

    batch = {
        "input_ids": torch.tensor(job["input_ids"], dtype=torch.long),
        "attention_mask": torch.tensor(job["attention_mask"], dtype=torch.long),
    }
    with torch.no_grad():
        if job["kind"] == "forward":
            if job.get("position_ids") is not None:
                batch["position_ids"] = torch.tensor(job["position_ids"], dtype=torch.long)
            return {"logits": model(**batch).logits.float()}
        if job["kind"] != "generate":
            raise ValueError(f"job {job['id']!r}: kind={job['kind']!r} is not one of 'forward', 'generate'")
        out = model.generate(**batch, **job.get("kwargs", {}))
    if isinstance(out, torch.Tensor):
        return {"sequences": out}
    result = {"sequences": out.sequences}
    for name in ("scores", "logits"):
        steps = getattr(out, name, None)
        if steps is not None:
            result[name] = torch.stack([s.float() for s in steps])
    return result


def main() -> None:
    import torch
    import transformers

    torch.set_num_threads(1)
    spec = json.loads(Path(sys.argv[1]).read_text())
    models, configs, results = {}, {}, {}
    for job in spec["jobs"]:
        folder, kwargs = job["model"], job.get("from_pretrained", {})
        key = json.dumps([folder, kwargs], sort_keys=True)
        if key not in models:
            models[key], configs[folder] = load(folder, kwargs)
        results[job["id"]] = run(models[key], job)
    versions = {"transformers": transformers.__version__, "torch": str(torch.__version__)}
    # json round trip: configs hold only plain values, which weights_only loading accepts.
    configs = json.loads(json.dumps(configs, default=str))
    torch.save({"versions": versions, "configs": configs, "results": results}, sys.argv[2])


if __name__ == "__main__":
    main()
