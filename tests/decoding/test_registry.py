"""The strategy registry and specs: names, options, defaults, checks, and the generate kwargs they build."""

import pytest

from counterpoint.decoding import (
    STRATEGIES,
    ContrastConfig,
    GenerationOptions,
    contrastive_decoding,
    contrastive_search,
    get_strategy,
    input_contrast,
    layer_contrast,
)
from counterpoint.decoding.registry import options_by_name
from counterpoint.errors import OptionError


def kwargs(name, **options):
    return get_strategy(name).generate_kwargs(GenerationOptions(**options))


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


def test_old_names_resolve_with_a_warning():
    for old, new in [("sampling", "sample"), ("contrastive_decoding", "contrastive-decoding")]:
        with pytest.warns(DeprecationWarning, match=f"strategy name '{old}' is deprecated; use '{new}'"):
            assert get_strategy(old) is STRATEGIES[new]


def test_builtin_strategies():
    assert kwargs("greedy") == {"do_sample": False, "num_beams": 1}
    assert kwargs("sample", top_k=5, top_p=0.5) == {
        "do_sample": True,
        "num_beams": 1,
        "top_k": 5,
        "top_p": 0.5,
    }
    assert kwargs("beam") == {"do_sample": False, "num_beams": 4}
    assert kwargs("beam", num_beams=2)["num_beams"] == 2


def test_contrast_strategies_build_their_contract_kwargs():
    amateur = object()
    assert kwargs("contrastive-search", alpha=0.4) == {
        "custom_generate": contrastive_search,
        "penalty_alpha": 0.4,
        "top_k": 4,
    }
    assert kwargs("contrastive-decoding", amateur=amateur, beta=1.0, num_beams=2) == {
        "custom_generate": contrastive_decoding,
        "amateur_model": amateur,
        "contrast": ContrastConfig(beta=1.0),
        "amateur_view": "full",
        "do_sample": False,
        "num_beams": 2,
    }
    kw = kwargs("layer-contrast", layers=(0, 1), layer_mode="jsd", form="difference")
    assert kw["custom_generate"] is layer_contrast
    assert kw["amateur_layers"] == [0, 1] and kw["layer_mode"] == "jsd"
    assert kw["contrast"] == ContrastConfig(form="difference")
    assert kwargs("input-contrast", alpha=0.2, do_sample=True, temperature=0.7) == {
        "custom_generate": input_contrast,
        "contrast": ContrastConfig(alpha=0.2),
        "do_sample": True,
        "num_beams": 1,
        "temperature": 0.7,
    }


def test_zero_is_a_value_not_unset():
    """0 is never replaced by a default: it is used, or refused by the option's own check."""
    assert kwargs("contrastive-search", alpha=0)["penalty_alpha"] == 0
    assert kwargs("contrastive-decoding", amateur=object(), beta=0)["contrast"].beta == 0
    assert kwargs("layer-contrast", layers=0)["amateur_layers"] == 0
    assert kwargs("input-contrast", alpha=0)["contrast"].alpha == 0  # 0: no plausibility mask
    assert kwargs("contrastive-decoding", amateur=object(), do_sample=True, top_k=0)["top_k"] == 0  # no top-k
    for name, option, message in [
        ("contrastive-decoding", "tau", r"^tau=0 must be > 0 \(the amateur's temperature\)$"),
        ("sample", "temperature", r"^temperature=0 must be > 0 \(sampling temperature\)$"),
        ("sample", "top_p", r"^top_p=0 must be in \(0, 1\] \(nucleus mass\)$"),
        ("beam", "num_beams", r"^num_beams=0 must be an int >= 1$"),
        (
            "contrastive-search",
            "top_k",
            r"^top_k=0 must be an integer >= 1 \(the number of candidates; 1 is greedy\)$",
        ),
    ]:
        given = {option: 0, **({"amateur": object()} if name == "contrastive-decoding" else {})}
        with pytest.raises(OptionError, match=message):
            kwargs(name, **given)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nope", {}, r"^strategy='nope' is unknown; use one of: greedy, sample, beam, contrastive-search"),
        (
            "contrastive-search",
            {"beta": 0.5},
            r"^beta=0.5 does not apply to strategy 'contrastive-search'; it takes: alpha, top_k$",
        ),
        ("sample", {"beta": 0.5, "layers": 2}, r"^beta=0.5 does not apply to strategy 'sample'"),
        ("contrastive-decoding", {}, r"^strategy 'contrastive-decoding' needs amateur= \(the amateur model"),
        ("layer-contrast", {}, r"^strategy 'layer-contrast' needs layers= \(amateur layer index"),
        (
            "layer-contrast",
            {"layers": (0, 2)},
            r"^layers=\(0, 2\) holds several layers but layer_mode 'fixed'",
        ),
        ("layer-contrast", {"layers": (-1,)}, r"^layers=\(-1,\) must hold layer indices >= 0"),
        (
            "layer-contrast",
            {"layers": 1, "layer_mode": "avg"},
            r"^layer_mode='avg' is not one of: fixed, jsd, fusion$",
        ),
        (
            "input-contrast",
            {"variant": "empty"},
            r"^variant='empty' is not one of: no-demos, no-context, noisy-instruction$",
        ),
        ("input-contrast", {"top_k": 5}, r"^top_k=5 needs do_sample \(it only shapes sampling\)$"),
        ("contrastive-decoding", {"amateur": "a", "alpha": 2.0}, r"^alpha=2.0 must be in \[0, 1\]"),
        ("sample", {"top_k": 2.5}, r"^top_k=2.5 must be an int >= 1$"),
        ("beam", {"num_beams": True}, r"^num_beams=True must be an int >= 1$"),
    ],
)
def test_strategy_errors(name, options, message):
    with pytest.raises(ValueError, match=message):
        kwargs(name, **options)


def test_unknown_option_names_are_refused_with_the_list():
    with pytest.raises(
        OptionError, match=r"^bta=0.5 is not an option of any strategy; options are: alpha, amateur"
    ):
        GenerationOptions(bta=0.5)


def test_options_are_a_read_only_mapping():
    o = GenerationOptions(alpha=0.6, top_k=None)
    assert dict(o) == {"alpha": 0.6} and o.top_k is None and o.alpha == 0.6
    assert o.replace(alpha=None, beta=1.0) == GenerationOptions(beta=1.0)
    with pytest.raises(AttributeError, match="read-only"):
        o.alpha = 0.1


def test_options_of_one_name_share_their_type_across_strategies():
    table = options_by_name()
    assert {name for name in table} >= {"alpha", "top_k", "beta", "layers", "variant", "amateur"}
    assert [s for s, _ in table["alpha"]] == [
        "contrastive-search",
        "contrastive-decoding",
        "layer-contrast",
        "input-contrast",
    ]


class _IdsTokenizer:
    """Just enough of a tokenizer for a backend: every prompt is ids [5, 6, 7]."""

    pad_token_id = 0

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[5, 6, 7] for _ in texts]}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_a_new_strategy_is_one_module(tmp_path, monkeypatch):
    """One file dropped into counterpoint.decoding is a strategy: the registry lists it, its option becomes
    a command-line flag, and a backend runs it."""
    import sys
    import textwrap

    import counterpoint.decoding as decoding
    from counterpoint import cli
    from counterpoint.decoding import registry
    from counterpoint.decoding.backend import Batch
    from counterpoint.decoding.transformers_backend import TransformersBackend
    from tests.tiny_models import tiny_llama

    (tmp_path / "suppressed_greedy.py").write_text(
        textwrap.dedent(
            """
            from transformers import SuppressTokensLogitsProcessor

            from counterpoint.decoding.spec import Option, StrategySpec

            SPEC = StrategySpec(
                name="suppressed-greedy",
                summary="greedy that never picks one token",
                options=(Option("banned", "int", "the token never picked", required=True),),
                build=lambda values: {"do_sample": False, "suppress_tokens": [values["banned"]]},
                no_vllm="not needed for this test",
            )
            """
        )
    )
    monkeypatch.setattr(decoding, "__path__", [*decoding.__path__, str(tmp_path)])
    found = registry._collect()
    monkeypatch.setattr(registry, "STRATEGIES", found)
    registry.options_by_name.cache_clear()
    try:
        assert list(found)[-1] == "suppressed-greedy" and list(found)[:7] == list(STRATEGIES)
        flags = {
            p.opts[0] for f in cli._strategy_flags() for p in getattr(f(lambda: None), "__click_params__", [])
        }
        assert "--banned" in flags
        model = tiny_llama()
        tok = _IdsTokenizer()
        plain = (
            TransformersBackend(model, tok, "greedy").generate(Batch(["x"], max_new_tokens=3))[0].token_ids
        )
        banned = TransformersBackend(model, tok, "suppressed-greedy", {"banned": plain[0]})
        got = banned.generate(Batch(["x"], max_new_tokens=3))[0].token_ids
        assert got[0] != plain[0]
    finally:
        registry.options_by_name.cache_clear()
        sys.modules.pop("counterpoint.decoding.suppressed_greedy", None)
