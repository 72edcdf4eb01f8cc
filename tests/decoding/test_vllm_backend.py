"""The vLLM backend against naive references computed here, in the main environment, in fp32.

vLLM lives in its own environment (.venv-vllm, built by scripts/setup_vllm.sh): the engine runs in
a subprocess under .venv-vllm/bin/python (tests/decoding/vllm_driver.py), once for this module, and
its token ids are compared with a no-cache expert-vs-amateur greedy loop (HF transformers here).

Expert: the embedded SmolLM2-135M-Instruct. Amateur: its first four layers, saved as safetensors.
Without .venv-vllm these tests fail naming the setup script, unless COUNTERPOINT_SKIP_VLLM=1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from counterpoint.decoding.scores import ContrastConfig, contrast_scores
from counterpoint.decoding.vllm import contrast_extra_args, generate_vllm, parse_contrast_args
from tests.vllm_env import ROOT, VLLM_PYTHON, require_vllm_python

DRIVER = Path(__file__).with_name("vllm_driver.py")
MAX_NEW = 10
AMATEUR_LAYERS = 4
PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea:",
    "Hi",
    "List three prime numbers greater than ten, separated by commas:",
]
BETA = {"form": "beta", "alpha": 0.1, "beta": 0.5}
DIFF = {"form": "difference", "alpha": 0.1, "gamma": 1.0, "tau": 0.5}


# -- the references -----------------------------------------------------------------------------
def naive_greedy(expert, prompt_ids, max_new, amateur=None, config=None):
    """Greedy decoding recomputing every logit from scratch each step (no cache), fp32.

    With ``amateur`` and ``config``: argmax of :func:`contrast_scores` (expert vs amateur); without:
    the expert's argmax. Swap this for the transformers backend's ``contrastive_decoding`` to
    compare the two backends directly.
    """
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(max_new):
            x = torch.tensor([ids])
            logits = expert(x).logits[:, -1].float()  # (1, V)
            if amateur is not None:
                logits = contrast_scores(logits, amateur(x).logits[:, -1].float(), config)
            ids.append(int(logits.argmax(-1)))
    return ids[len(prompt_ids) :]


REFERENCE = naive_greedy


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(expert folder, amateur folder, expert, amateur, tokenizer); amateur = first layers of SmolLM2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from counterpoint.models import resolve_language_model_path

    expert_dir = resolve_language_model_path(None)
    tokenizer = AutoTokenizer.from_pretrained(expert_dir)
    expert = AutoModelForCausalLM.from_pretrained(expert_dir, dtype=torch.float32).eval()
    amateur = AutoModelForCausalLM.from_pretrained(expert_dir, dtype=torch.float32).eval()
    amateur.model.layers = amateur.model.layers[:AMATEUR_LAYERS]
    amateur.config.num_hidden_layers = AMATEUR_LAYERS
    if getattr(amateur.config, "layer_types", None):
        amateur.config.layer_types = amateur.config.layer_types[:AMATEUR_LAYERS]
    amateur_dir = tmp_path_factory.mktemp("amateur")
    amateur.save_pretrained(amateur_dir)
    tokenizer.save_pretrained(amateur_dir)
    return expert_dir, str(amateur_dir), expert, amateur, tokenizer


def _prompt_ids(tokenizer):
    return [tokenizer(p)["input_ids"] for p in PROMPTS]


def _scenarios(prompt_ids):
    """Three scenarios run one after the other on one engine (see vllm_driver.py)."""
    contrast_only = [
        {
            "id": f"c{i}",
            "prompt_token_ids": p,
            "max_tokens": MAX_NEW,
            "contrast": BETA if i % 2 == 0 else DIFF,
        }
        for i, p in enumerate(prompt_ids)
    ]
    mixed = [
        {"id": "m0", "prompt_token_ids": prompt_ids[0], "max_tokens": MAX_NEW, "contrast": None},
        {"id": "m1", "prompt_token_ids": prompt_ids[1], "max_tokens": MAX_NEW, "contrast": BETA},
        {
            "id": "m2",
            "prompt_token_ids": prompt_ids[2],
            "max_tokens": MAX_NEW,
            "contrast": None,
            "join_step": 2,
        },
        {
            "id": "m3",
            "prompt_token_ids": prompt_ids[3],
            "max_tokens": MAX_NEW,
            "contrast": DIFF,
            "join_step": 4,
        },
    ]
    aborted = [
        {"id": "a0", "prompt_token_ids": prompt_ids[3], "max_tokens": MAX_NEW, "contrast": BETA},
        {
            "id": "a1",
            "prompt_token_ids": prompt_ids[0],
            "max_tokens": MAX_NEW,
            "contrast": BETA,
            "abort_step": 4,
        },
        {
            "id": "a2",
            "prompt_token_ids": prompt_ids[1],
            "max_tokens": MAX_NEW,
            "contrast": None,
            "abort_step": 3,
        },
        {
            "id": "a3",
            "prompt_token_ids": prompt_ids[2],
            "max_tokens": MAX_NEW,
            "contrast": DIFF,
            "join_step": 5,
        },
    ]
    return [contrast_only, mixed, aborted]


@pytest.fixture(scope="module")
def vllm_run(models, tmp_path_factory):
    """Run every scenario on one vLLM engine in .venv-vllm; returns (scenarios, results)."""
    require_vllm_python()
    expert_dir, amateur_dir, _, _, tokenizer = models
    scenarios = _scenarios(_prompt_ids(tokenizer))
    work = tmp_path_factory.mktemp("vllm")
    (work / "in.json").write_text(
        json.dumps({"expert": expert_dir, "amateur": amateur_dir, "scenarios": scenarios})
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(DRIVER), str(work / "in.json"), str(work / "out.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(f"vllm_driver.py failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    return scenarios, json.loads((work / "out.json").read_text())["scenarios"]


def _reference(models, request):
    _, _, expert, amateur, _ = models
    config = ContrastConfig(**request["contrast"]) if request.get("contrast") else None
    return REFERENCE(
        expert, request["prompt_token_ids"], request["max_tokens"], amateur if config else None, config
    )


# -- engine tests -------------------------------------------------------------------------------
def test_contrastive_batch_equals_naive_reference(models, vllm_run):
    scenarios, results = vllm_run
    for request in scenarios[0]:
        got = results[0][request["id"]]
        assert got["finished"]
        assert got["token_ids"] == _reference(models, request), request["id"]


def test_mixed_batch_plain_requests_untouched(models, vllm_run):
    scenarios, results = vllm_run
    for request in scenarios[1]:
        got = results[1][request["id"]]["token_ids"]
        assert got == _reference(models, request), request["id"]  # plain ones: the expert's greedy
    # The contrast did change something, or this test could not tell the two paths apart.
    _, _, expert, _, _ = models
    m1 = scenarios[1][1]
    assert results[1]["m1"]["token_ids"] != naive_greedy(expert, m1["prompt_token_ids"], MAX_NEW)


def test_aborted_request_leaves_the_others_correct(models, vllm_run):
    scenarios, results = vllm_run
    by_id = {r["id"]: r for r in scenarios[2]}
    for rid in ("a0", "a3"):
        assert results[2][rid]["finished"]
        assert results[2][rid]["token_ids"] == _reference(models, by_id[rid]), rid
    for rid in ("a1", "a2"):
        got = results[2][rid]
        assert not got["finished"]
        assert 0 < len(got["token_ids"]) < MAX_NEW
        # What it produced before the abort was right, too.
        assert got["token_ids"] == _reference(models, by_id[rid])[: len(got["token_ids"])]


# -- no engine needed ---------------------------------------------------------------------------
def test_extra_args_round_trip_and_errors():
    config = ContrastConfig(form="difference", alpha=0.2, gamma=0.7, tau=0.5)
    assert parse_contrast_args(contrast_extra_args(config)) == config
    assert parse_contrast_args({"counterpoint_contrast": '{"beta": 0.25}'}) == ContrastConfig(beta=0.25)
    with pytest.raises(ValueError, match=r"is not valid JSON"):
        parse_contrast_args({"counterpoint_contrast": "{beta"})
    assert parse_contrast_args(None) is None
    assert parse_contrast_args({"other": 1}) is None
    with pytest.raises(ValueError, match=r"unknown keys \['bta'\]; valid keys are \['form', 'alpha'"):
        parse_contrast_args({"counterpoint_contrast": {"bta": 0.5}})
    with pytest.raises(ValueError, match=r"must be a dict of ContrastConfig fields"):
        parse_contrast_args({"counterpoint_contrast": 0.5})
    with pytest.raises(ValueError, match=r"alpha=2.0 must be in \[0, 1\]"):
        parse_contrast_args({"counterpoint_contrast": {"alpha": 2.0}})


USE_TRANSFORMERS = (
    "use the transformers backend (backend='transformers', on the command line --backend transformers)"
)


@pytest.mark.parametrize(
    ("strategy", "options", "match"),
    [
        (
            "contrastive-search",
            {},
            r"^strategy 'contrastive-search' cannot run on the vLLM backend: it needs the model's hidden states "
            r"at every step, which vLLM does not expose; " + re.escape(USE_TRANSFORMERS) + "$",
        ),
        (
            "layer-contrast",
            {"layers": 1},
            r"^strategy 'layer-contrast' cannot run on the vLLM backend: .*; "
            + re.escape(USE_TRANSFORMERS)
            + "$",
        ),
        ("dola", {}, r"^strategy='dola' is unknown; use one of: greedy, sample, beam, contrastive-search"),
        ("contrastive-decoding", {}, r"^strategy 'contrastive-decoding' needs amateur= \(the amateur model"),
        (
            "greedy",
            {"amateur": "x"},
            r"^amateur='x' does not apply to strategy 'greedy'; it takes: no options$",
        ),
        ("sample", {"temperature": -1.0}, r"^temperature=-1.0 must be > 0 \(sampling temperature\)$"),
        ("beam", {"num_beams": 0}, r"^num_beams=0 must be an int >= 1$"),
        (
            "contrastive-decoding",
            {"amateur": "a", "temperature": 0.7},
            r"^temperature=0.7 needs do_sample \(it only shapes sampling\)$",
        ),
    ],
)
def test_generate_vllm_rejects_bad_input_before_any_work(strategy, options, match):
    with pytest.raises(ValueError, match=match):
        generate_vllm("/nonexistent", ["hi"], strategy, options)
    with pytest.raises(ValueError, match=r"^max_new_tokens=0 must be >= 1$"):
        generate_vllm("/nonexistent", ["hi"], "greedy", max_new_tokens=0)


def test_generate_vllm_legacy_keywords_still_work_with_a_warning():
    with (
        pytest.warns(DeprecationWarning, match=r"generate_vllm\(temperature=\) is deprecated"),
        pytest.raises(ValueError, match=r"^temperature=-1.0 must be > 0"),
    ):
        generate_vllm("/nonexistent", ["hi"], "sample", temperature=-1.0)


def test_missing_vllm_names_the_extra():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed in this environment")
    with pytest.raises(ImportError, match=r"pip install 'counterpoint\[vllm\]'"):
        generate_vllm("/nonexistent", ["hi"], "greedy")
    assert "counterpoint.decoding.vllm.processor" not in sys.modules
