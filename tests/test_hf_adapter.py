"""The transformers adapter: the only module that touches transformers' internals, and its one patch."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch
from transformers import GenerationMixin

import counterpoint
from counterpoint import _hf
from tests.tiny_models import MIXED_PROMPTS, left_padded_batch, tiny_gpt2, tiny_llama

PACKAGE = Path(counterpoint.__file__).parent
BANNED_MODULES = ("transformers.generation", "transformers.cache_utils")
# Internals whose names must not appear outside the adapter (as names, attributes or strings).
BANNED_NAMES = {
    "_sample",
    "_beam_search",
    "_pad_token_tensor",
    "_supports_logits_to_keep",
    "_extract_generation_mode_kwargs",
    "past_key_values",
    "ddp_cache_data",
    "get_seq_length",
    "reorder_cache",
    "batch_repeat_interleave",
    "DynamicCache",
    "DynamicLayer",
}


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(BANNED_MODULES):
            found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith(BANNED_MODULES)
            ]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in BANNED_NAMES
            and not (
                isinstance(node.value, ast.Name) and node.value.id == "_hf"
            )  # the adapter's own operations
        ):
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in BANNED_NAMES:
            found.append(f"line {node.lineno}: {node.id}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in BANNED_NAMES:
            found.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, ast.keyword) and node.arg in BANNED_NAMES:
            found.append(f"line {node.lineno}: {node.arg}=")
    return found


def test_only_the_adapter_touches_transformers_internals():
    offences = {
        str(path.relative_to(PACKAGE.parent)): _offences(path)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_hf.py"
    }
    assert {k: v for k, v in offences.items() if v} == {}


def test_the_scan_catches_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from transformers.generation.utils import GenerationMixin\nimport transformers.cache_utils\n"
        "x = model(past_key_values=c)\ny = cache.get_seq_length()\n"
    )
    assert len(_offences(bad)) == 4


def test_cache_argument_matches_this_install():
    from transformers import LlamaForCausalLM

    assert _hf.CACHE_ARG in inspect.signature(LlamaForCausalLM.forward).parameters


def test_the_custom_generate_patch_is_still_needed():
    """Fails the day transformers hands a callable custom_generate its streamer and tokenizer itself:
    then delete ensure_strategy_kwargs and mark_strategy from counterpoint/_hf.py."""
    assert _hf.upstream_drops_standard_kwargs(), (
        "transformers no longer drops streamer/tokenizer for callable custom_generate: remove the patch"
    )


def test_the_patch_leaves_other_callables_alone():
    _hf.ensure_strategy_kwargs()

    def plain(model, input_ids, logits_processor, stopping_criteria, generation_config, own=None, **kw):
        return None

    streamer = object()
    extract = GenerationMixin._extract_generation_mode_kwargs
    got = extract(None, plain, {"tokenizer": object(), "own": 1}, False, None, streamer)
    assert got == {"own": 1}  # upstream's behaviour, unchanged
    marked = _hf.mark_strategy(lambda model, input_ids, own=None, **kw: None)
    tok = object()
    got = extract(None, marked, {"tokenizer": tok, "own": 1}, False, None, streamer)
    assert got["streamer"] is streamer and got["tokenizer"] is tok and got["own"] == 1


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_cache_operations_against_full_forwards(make):
    """crop, reorder and repeat through the adapter give what a forward of the same rows gives."""
    model = make(seed=2)
    batch = left_padded_batch(MIXED_PROMPTS)
    out = _hf.forward(model, batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=None)
    cache = _hf.output_cache(out)
    width = batch["input_ids"].shape[1]
    assert _hf.cache_length(cache) == width
    _hf.crop_cache(cache, width - 2)
    assert _hf.cache_length(cache) == width - 2
    _hf.reorder_cache(cache, torch.tensor([2, 0, 1]))
    _hf.repeat_cache_rows(cache, 2)
    keys = cache.layers[0].keys
    assert keys.shape[0] == 6
    full = _hf.output_cache(
        _hf.forward(model, batch["input_ids"][:, :-2], attention_mask=batch["attention_mask"][:, :-2])
    )
    torch.testing.assert_close(keys[0], full.layers[0].keys[2])
    torch.testing.assert_close(keys[1], full.layers[0].keys[2])
    torch.testing.assert_close(keys[3], full.layers[0].keys[0])
