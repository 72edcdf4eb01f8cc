import pytest

from counterpoint.decoding.scores import ContrastConfig
from counterpoint.prompting import STRATEGIES, GenerationOptions, generate_kwargs
from counterpoint.prompting import strategies as strategies_module


def test_registry_names_match_the_command_line():
    assert list(STRATEGIES) == [
        "greedy",
        "sample",
        "beam",
        "contrastive-search",
        "contrastive-decoding",
        "layer-contrast",
        "input-contrast",
    ]


def test_builtin_strategies():
    assert generate_kwargs("greedy") == {"do_sample": False, "num_beams": 1}
    assert generate_kwargs("sample", GenerationOptions(top_k=5, top_p=0.5)) == {
        "do_sample": True,
        "num_beams": 1,
        "top_k": 5,
        "top_p": 0.5,
    }
    assert generate_kwargs("beam") == {"do_sample": False, "num_beams": 4}
    assert generate_kwargs("beam", GenerationOptions(num_beams=2))["num_beams"] == 2


def test_contrast_strategies_build_their_contract_kwargs(monkeypatch):
    calls = []
    monkeypatch.setattr(strategies_module, "_decoding", lambda attr, strategy: calls.append(attr) or attr)
    amateur = object()
    kw = generate_kwargs("contrastive-search", GenerationOptions(alpha=0.4))
    assert kw == {"custom_generate": "contrastive_search", "penalty_alpha": 0.4, "top_k": 4}
    kw = generate_kwargs("contrastive-decoding", GenerationOptions(amateur=amateur, beta=1.0, num_beams=2))
    assert kw == {
        "custom_generate": "contrastive_decoding",
        "amateur_model": amateur,
        "contrast": ContrastConfig(beta=1.0),
        "do_sample": False,
        "num_beams": 2,
    }
    kw = generate_kwargs(
        "layer-contrast", GenerationOptions(layers=(0, 1), layer_mode="jsd", form="difference")
    )
    assert kw["amateur_layers"] == [0, 1] and kw["layer_mode"] == "jsd"
    assert kw["contrast"] == ContrastConfig(form="difference")
    kw = generate_kwargs("input-contrast", GenerationOptions(alpha=0.2, do_sample=True, temperature=0.7))
    assert kw == {
        "custom_generate": "input_contrast",
        "contrast": ContrastConfig(alpha=0.2),
        "do_sample": True,
        "num_beams": 1,
        "temperature": 0.7,
    }
    assert calls == ["contrastive_search", "contrastive_decoding", "layer_contrast", "input_contrast"]


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "nope",
            GenerationOptions(),
            r"strategy='nope' is unknown; use one of: greedy, sample, beam, contrastive-search",
        ),
        (
            "contrastive-search",
            GenerationOptions(beta=0.5),
            r"beta does not apply to strategy 'contrastive-search'; it takes: alpha, top_k",
        ),
        ("sample", GenerationOptions(beta=0.5, layers=2), r"beta, layers do not apply to strategy 'sample'"),
        ("contrastive-decoding", GenerationOptions(), r"strategy 'contrastive-decoding' needs amateur"),
        ("layer-contrast", GenerationOptions(), r"strategy 'layer-contrast' needs layers"),
    ],
)
def test_strategy_errors(name, options, message):
    with pytest.raises(ValueError, match=message):
        generate_kwargs(name, options)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, r"top_k=0 is not valid; top_k must be an int >= 1"),
        ({"top_p": 1.5}, r"top_p=1.5 is not valid; top_p must be in \(0, 1\]"),
        ({"temperature": 0}, r"temperature=0 is not valid; temperature must be > 0"),
        (
            {"layer_mode": "avg"},
            r"layer_mode='avg' is not valid; layer_mode must be one of \('fixed', 'jsd', 'fusion'\)",
        ),
        ({"layers": ()}, r"layers=\(\) is not valid"),
        ({"variant": "empty"}, r"variant='empty' is not valid; variant must be one of \('no-demos'"),
    ],
)
def test_options_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationOptions(**kwargs)


def test_contrast_config_validation_passes_through(monkeypatch):
    monkeypatch.setattr(strategies_module, "_decoding", lambda attr, strategy: attr)
    with pytest.raises(ValueError, match=r"alpha=2.0 must be in \(0, 1\]"):
        generate_kwargs("input-contrast", GenerationOptions(alpha=2.0))
