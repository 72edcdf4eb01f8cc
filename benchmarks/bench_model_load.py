"""Load time of the embedded SmolLM2-135M-Instruct: the first load (GGUF dequantized and cached as
safetensors) against the second (from the cache), each in a fresh process, with a fresh cache folder.

Run: ``python benchmarks/bench_model_load.py`` (writes benchmarks/results/model_load.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = (
    "import time, torch; torch.set_num_threads(1); t = time.perf_counter(); "
    "from counterpoint.models import load_language_model; load_language_model(); "
    "print(time.perf_counter() - t)"
)


def timed_load(cache: str) -> float:
    env = dict(os.environ, COUNTERPOINT_CACHE=cache, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        first = timed_load(cache)  # converts the GGUF and writes the cache
        second = timed_load(cache)  # reads the cached safetensors
    result = {
        "first_load_s": round(first, 2),
        "cached_load_s": round(second, 2),
        "ratio": round(first / second, 1),
    }
    print(json.dumps(result))
    text = (
        "Embedded SmolLM2-135M-Instruct, fresh process each, timed from importing counterpoint.models "
        "to a model ready on the CPU (torch and transformers import included).\n\n"
        "| load | seconds |\n|---|---:|\n"
        f"| first (GGUF dequantized to fp32, saved as safetensors) | {first:.1f} |\n"
        f"| second (from the cache) | {second:.1f} |\n"
    )
    out = Path(__file__).parent / "results" / "model_load.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
