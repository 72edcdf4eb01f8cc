"""The GPU benchmark's dry run: ``benchmarks/gpu/run.sh --device cpu --tiny``, end to end, on tiny models.

The GPU run happens rarely, on a machine lent for minutes; this keeps every path it takes (each strategy at
each batch size, the exactness checks against the suite's references, exact search on two devices, the
sync counting, the targets and both output files) running here, so the script cannot rot in between.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from benchmarks.gpu import bench_gpu

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "benchmarks" / "gpu" / "run.sh"

# counterpoint's own dependencies that the GPU machine lacks (its package list in the device notes, 2026-11:
# it has torch, transformers, accelerate, sentence-transformers, numpy, tqdm and click, not these). Only the
# transformers wheel travels, so the benchmark must import none of them.
NOT_ON_DEVICE = {"gguf", "bm25s", "faiss", "langchain", "langchain_core", "mauve", "vllm"}

ROWS = {
    "decode:smollm2": ["greedy", "cs4", "cs8", "layer-fixed", "layer-jsd", "input"],
    "decode:llama1b": ["greedy", "cs4", "cs8", "layer-fixed", "layer-jsd", "input"],
    "decode:llama8b": ["greedy", "amateur", "cd"],
}
EXACT_CASES = [
    "contrastive search, k=4",
    "contrastive search, k=8",
    *(
        f"{source} ({form})"
        for source in (
            "contrastive decoding",
            "layer contrast, fixed (1)",
            "layer contrast, jsd (0,1,2)",
            "layer contrast, fusion (0,2)",
            "input contrast",
        )
        for form in ("difference", "beta")
    ),
]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-dry-run")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(RUN_SH), "--no-install", "--out", str(out), "--device", "cpu", "--tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = None
    if (out / bench_gpu.JSON_NAME).is_file():
        report = json.loads((out / bench_gpu.JSON_NAME).read_text(encoding="utf-8"))
    return proc, out, report


def test_run_sh_exits_zero_and_writes_json_markdown_and_log(dry_run):
    proc, out, report = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_bench.json", "gpu_bench.md", "run.log"]
    assert report["finished"] is not None
    md = (out / bench_gpu.MD_NAME).read_text(encoding="utf-8")
    assert md.startswith("# GPU benchmark — DRY RUN on tiny models")
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "environment ready" in log and "done in" in log


def test_every_section_ran(dry_run):
    _, _, report = dry_run
    names = ["exactness", "selection", *ROWS]
    assert {n: report["sections"][n]["status"] for n in names} == dict.fromkeys(names, "ok")


@pytest.mark.parametrize(("section", "key"), [(s, k) for s, keys in ROWS.items() for k in keys])
def test_every_strategy_is_timed_at_every_batch_and_its_syncs_counted(dry_run, section, key):
    _, _, report = dry_run
    sec = report["sections"][section]
    assert list(sec["batches"]) == ["1", "3"]
    for entry in sec["batches"].values():
        row = entry["rows"][key]
        assert "error" not in row, row["error"]
        seconds, greedy = row["seconds"], entry["rows"]["greedy"]["seconds"]
        assert len(seconds) == len(greedy) == entry["repeats"] >= 2
        # The table's numbers are the medians of these very repeats, each ratio taken within its repeat.
        new = report["plan"]["new_tokens"]
        assert row["ms_per_token"]["median"] == pytest.approx(
            statistics.median(1000 * t / new for t in seconds)
        )
        ratios = [t / g for t, g in zip(seconds, greedy, strict=True)]
        assert row["x_greedy"]["median"] == pytest.approx(statistics.median(ratios))
        assert row["x_greedy"]["min"] == pytest.approx(min(ratios))
    syncs = sec["syncs"]["rows"][key]
    assert "error" not in syncs, syncs["error"]
    assert syncs["per_step"] is None  # no CUDA here: counted on the GPU only


@pytest.mark.parametrize(
    ("section", "key", "limit"),
    [
        ("decode:smollm2", "cs4", 1.15),
        ("decode:smollm2", "cs8", 1.15),
        ("decode:smollm2", "layer-fixed", 1.10),
        ("decode:llama1b", "cs4", 1.15),
        ("decode:llama1b", "layer-fixed", 1.10),
        ("decode:llama8b", "cd", None),
    ],
)
def test_targets_are_judged_beside_the_numbers(dry_run, section, key, limit):
    _, _, report = dry_run
    sec = report["sections"][section]
    for size, entry in sec["batches"].items():
        row = entry["rows"][key]
        want = limit
        if want is None:  # contrastive decoding: (1 + amateur / expert) x 1.1, both measured in the same run
            greedy, amateur = entry["rows"]["greedy"]["seconds"], entry["rows"]["amateur"]["seconds"]
            cost = statistics.median(a / g for a, g in zip(amateur, greedy, strict=True))
            assert row["amateur_over_expert"] == pytest.approx(cost)
            want = (1 + cost) * 1.1
        assert row["limit"] == pytest.approx(want)
        assert row["met"] == (row["x_greedy"]["median"] <= row["limit"])
        listed = [
            t
            for t in report["targets"]
            if (t["section"], t["batch"], t["what"]) == (sec["title"], int(size), row["label"])
        ]
        assert [(t["value"], t["met"]) for t in listed] == [(row["x_greedy"]["median"], row["met"])]


@pytest.mark.parametrize("case", EXACT_CASES)
def test_exactness_checks_each_strategy_against_the_suite_reference(dry_run, case):
    _, _, report = dry_run
    rows = [r for r in report["sections"]["exactness"]["rows"] if r["case"] == case]
    assert [r["prompts"] for r in rows] == ["3 mixed prompts"]
    assert rows[0]["equal"], rows[0]


def test_selection_times_both_devices_and_they_agree(dry_run):
    _, _, report = dry_run
    sel = report["sections"]["selection"]
    assert (sel["pool"], sel["dim"], sel["queries"], sel["k"]) == (20_000, 384, 300, 8)
    assert sel["device"]["queries_timed"] == 300 and sel["device"]["queries_per_s"] > 0
    assert 0 < sel["cpu"]["queries_timed"] <= 300 and sel["cpu"]["queries_per_s"] > 0
    assert sel["same_neighbour_list"] == 1.0 and sel["top_k_overlap"] == 1.0


def test_markdown_shows_every_row(dry_run):
    _, out, report = dry_run
    md = (out / bench_gpu.MD_NAME).read_text(encoding="utf-8")
    for section in ROWS:
        for entry in report["sections"][section]["batches"].values():
            for row in entry["rows"].values():
                assert f"| {row['label']} |" in md
    for case in EXACT_CASES:
        assert f"| {case} | 3 mixed prompts |" in md
    assert "## Exact search" in md and "**Targets:" in md


def test_benchmark_imports_nothing_the_device_lacks(dry_run):
    _, _, report = dry_run
    assert "transformers" in report["imported_modules"]
    assert set(report["imported_modules"]) & NOT_ON_DEVICE == set()


def test_run_sh_stops_at_once_without_wheels(tmp_path):
    empty = tmp_path / "wheels"
    empty.mkdir()
    proc = subprocess.run(
        ["bash", str(RUN_SH), "--wheels", str(empty), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert "run benchmarks/gpu/fetch_wheels.sh here first" in proc.stdout


@pytest.mark.parametrize("script", ["run.sh", "fetch_wheels.sh"])
def test_shell_scripts_parse(script):
    proc = subprocess.run(
        ["bash", "-n", str(ROOT / "benchmarks" / "gpu" / script)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def _sync_warning(path: str, line: int, message: str = "called a synchronizing CUDA operation"):
    return warnings.WarningMessage(UserWarning(message), UserWarning, str(ROOT / path), line)


def test_syncs_per_step_come_from_the_difference_of_two_calls():
    """Setup and prefill syncs cancel; each site's extra syncs are spread over the extra steps."""
    setup = [_sync_warning("counterpoint/decoding/a.py", 5)] * 3
    short = bench_gpu.sync_sites(
        [
            *setup,
            *[_sync_warning("transformers/generation/utils.py", 9)] * 2,
            _sync_warning("x.py", 1, "other"),
        ]
    )
    long = bench_gpu.sync_sites(
        [
            *setup,
            *[_sync_warning("transformers/generation/utils.py", 9)] * 6,
            *[_sync_warning("counterpoint/decoding/b.py", 7)] * 8,
        ]
    )
    assert short == {"counterpoint/decoding/a.py:5": 3, "transformers/generation/utils.py:9": 2}
    total, sites = bench_gpu.per_step(short, long, 4)
    assert total == 3.0
    assert sites == {"counterpoint/decoding/b.py:7": 2.0, "transformers/generation/utils.py:9": 1.0}


def test_site_names_are_relative_to_the_repository_or_site_packages():
    assert bench_gpu.short_site(str(ROOT / "counterpoint" / "decoding" / "scores.py"), 3) == (
        "counterpoint/decoding/scores.py:3"
    )
    assert (
        bench_gpu.short_site("/opt/venv/lib/python3.12/site-packages/torch/nn/x.py", 4) == "torch/nn/x.py:4"
    )


@pytest.mark.parametrize(
    ("name", "params"),
    # The published parameter counts of SmolLM2-135M, Llama-3.2-1B and Llama-3.1-8B.
    [("smollm2", 134_515_008), ("llama1b", 1_235_814_400), ("llama8b", 8_030_261_248)],
)
def test_real_shapes_have_the_published_parameter_counts(name, params):
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM._from_config(
            LlamaConfig(**bench_gpu.REAL[name].config()), dtype=torch.bfloat16
        )
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.slow
def test_smollm2_shape_is_the_embedded_models(smollm2):
    model, _ = smollm2
    ours = bench_gpu.SMOLLM2.config()
    real = model.config
    for key in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "tie_word_embeddings",
        "head_dim",
    ):
        assert ours[key] == getattr(real, key), key
    assert ours["rope_parameters"]["rope_theta"] == real.rope_parameters["rope_theta"]
