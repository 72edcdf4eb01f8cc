"""Old import paths keep working for one release, each with a DeprecationWarning naming the new path."""

from __future__ import annotations

import importlib

import pytest

MOVED = {
    "counterpoint.decoding.processors": {
        "ModelContrast": "counterpoint.decoding.contrastive_decoding",
        "LayerContrast": "counterpoint.decoding.layer_contrast",
        "InputContrast": "counterpoint.decoding.input_contrast",
        "ContrastLogitsProcessor": "counterpoint.decoding.engine",
        "check_vocabularies": "counterpoint.decoding.engine",
        "HEAD_ONLY_MAX_FRACTION": "counterpoint.decoding.layer_contrast",
    },
    "counterpoint.decoding.contrast_generate": {
        "contrastive_decoding": "counterpoint.decoding.contrastive_decoding",
        "layer_contrast": "counterpoint.decoding.layer_contrast",
        "input_contrast": "counterpoint.decoding.input_contrast",
    },
    "counterpoint.decoding.altered": {
        "noisy_instruction": "counterpoint.decoding.input_contrast",
        "INSTRUCTIVE_DECODING": "counterpoint.decoding.input_contrast",
        "left_pad": "counterpoint.batching",
    },
    "counterpoint.decoding.amateur_pool": {"AmateurPool": "counterpoint.decoding.vllm.pool"},
    "counterpoint.decoding.vllm_backend": {
        "generate_vllm": "counterpoint.decoding.vllm.engine",
        "contrast_extra_args": "counterpoint.decoding.vllm.args",
        "parse_contrast_args": "counterpoint.decoding.vllm.args",
    },
    "counterpoint.prompting.strategies": {
        "GenerationOptions": "counterpoint.decoding.spec",
        "STRATEGIES": "counterpoint.decoding.registry",
        "get_strategy": "counterpoint.decoding.registry",
    },
}


@pytest.mark.parametrize(
    ("old", "name", "new"), [(o, n, m) for o, names in MOVED.items() for n, m in names.items()]
)
def test_old_path_warns_and_gives_the_new_object(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
        got = getattr(module, name)
    assert got is getattr(importlib.import_module(new), name)


def test_old_strategy_helpers_still_work():
    from counterpoint.prompting import strategies

    with pytest.warns(DeprecationWarning, match="generate_kwargs is deprecated"):
        assert strategies.generate_kwargs("beam") == {"do_sample": False, "num_beams": 4}
    with pytest.warns(DeprecationWarning, match="check_backend is deprecated"):
        assert strategies.check_backend("greedy").name == "greedy"


def test_public_names_keep_working():
    import counterpoint
    import counterpoint.decoding as decoding

    for name in ("ContrastConfig", "contrastive_search", "contrastive_decoding", "layer_contrast", "input_contrast",
                 "GenerationOptions", "Pipeline", "PoolSelector", "DemoPool", "select"):  # fmt: skip
        assert getattr(counterpoint, name) is not None
    for name in ("INSTRUCTIVE_DECODING", "OPPOSITE_INSTRUCTION", "ContrastLogitsProcessor", "InputContrast",
                 "LayerContrast", "ModelContrast", "contrast_scores", "left_pad", "noisy_instruction",
                 "perturb_token_ids", "plausible_head", "without_spans"):  # fmt: skip
        assert name in decoding.__all__ and getattr(decoding, name) is not None
