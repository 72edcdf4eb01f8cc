"""The method registry: what select() and a command line read, and adding a method as one file."""

from __future__ import annotations

import sys
import textwrap

import pytest

import counterpoint.selection as selection
from counterpoint.selection import methods, registry, select
from counterpoint.selection.spec import MethodKwarg, MethodSpec

from .conftest import make_pool


def test_registry_lists_every_method_in_order_with_what_a_cli_needs():
    assert list(registry.METHODS) == ["knn", "mmr", "dpp", "bm25", "random", "vote-k", "lm", "se2"]
    assert tuple(registry.METHODS) == selection.METHODS
    for name, spec in registry.METHODS.items():
        assert spec.name == name and spec.summary and "\n" not in spec.summary
        assert all(kw.help and kw.type in (int, float, str) for kw in spec.kwargs)
    assert {n for n, s in registry.METHODS.items() if not s.needs_embedder} == {"bm25", "random"}
    assert registry.get_method("mmr").defaults == {"fetch_k": 20, "lambda_mult": 0.5}
    assert registry.get_method("dpp").defaults == {"candidates": 100, "scale": 0.1}
    assert registry.get_method("bm25").defaults == {"k1": 1.5, "b": 0.75, "stopwords": "en"}
    assert registry.get_method("vote-k").defaults == {"graph_k": 150, "rho": 10.0}
    assert registry.get_method("lm").defaults == {"candidates": 16, "target": "prediction", "answers_key": ""}
    assert registry.get_method("se2").defaults == {
        "candidates": 8,
        "target": "prediction",
        "answers_key": "",
        "beam_size": 3,
    }
    assert {n for n, s in registry.METHODS.items() if s.needs_scorer} == {"lm", "se2"}
    assert {n for n, s in registry.METHODS.items() if s.budget_aware} == {"se2"}


def test_get_method_unknown_lists_the_valid_names():
    with pytest.raises(
        ValueError,
        match=r"method must be one of \['knn', 'mmr', 'dpp', 'bm25', 'random', 'vote-k', 'lm', 'se2'\], got 'knn2'",
    ):
        registry.get_method("knn2")


def test_old_import_paths_still_work():
    from counterpoint.selection.methods import (  # noqa: F401
        DPP_EPSILON,
        VoteK,
        bm25_full_scores,
        bm25_rankings,
        dpp_greedy,
        dpp_kernel,
        mmr_greedy,
        random_rankings,
    )
    from counterpoint.selection.selectors import METHODS, ORDERS, default_render  # noqa: F401

    assert METHODS == selection.METHODS


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("knn", {"batch_size": 0}, "batch_size=0 must be a positive int"),
        ("mmr", {"fetch_k": 0}, "fetch_k=0 must be a positive int"),
        ("mmr", {"fetch_k": 3}, "fetch_k=3 must be at least k=4"),
        ("mmr", {"lambda_mult": -0.1}, r"lambda_mult=-0.1 must be in \[0, 1\]"),
        ("dpp", {"candidates": 2}, "candidates=2 must be at least k=4"),
        ("dpp", {"scale": 0}, "scale=0 must be positive"),
        ("bm25", {"k1": -1}, r"k1=-1 must be >= 0"),
        ("bm25", {"b": 1.5}, r"b=1.5 must be in \[0, 1\]"),
        ("vote-k", {"graph_k": True}, "graph_k=True must be a positive int"),
        ("vote-k", {"rho": 1}, "rho=1 must be greater than 1"),
        ("random", {"fetch_k": 20}, r"method='random' takes no argument\(s\) \['fetch_k'\]; valid: "),
    ],
)
def test_each_method_checks_its_own_arguments(method, kwargs, message):
    pool, qtexts, _, _ = make_pool(n=10)
    with pytest.raises(ValueError, match=message):
        select(pool, qtexts[:1], k=4, method=method, **kwargs)


def test_methods_without_embedder_never_embed_the_queries():
    pool, qtexts, _, _ = make_pool(n=20)

    def refuse(texts):
        raise AssertionError("queries were embedded")

    pool.embedder = type(pool.embedder)(refuse)
    for method in ("bm25", "random"):
        assert len(select(pool, ["p1 words", "anything"], k=3, method=method)[0]) == 3


def test_a_new_method_is_one_module(tmp_path, monkeypatch):
    # Drop one file into the methods package: the registry finds it and select() runs it,
    # with its keyword argument's default and its check.
    (tmp_path / "lowest_index.py").write_text(
        textwrap.dedent(
            """
            from counterpoint.selection.spec import MethodKwarg, MethodSpec

            def rank(pool, req):
                start = req.kwargs["start"]
                return [[(i, 0.0) for i in range(start, len(pool))] for _ in req.queries]

            def check(options, k):
                if options["start"] < 0:
                    raise ValueError(f"start must be >= 0, got {options['start']!r}")

            SPEC = MethodSpec(
                name="lowest-index",
                summary="the first examples of the pool",
                rank=rank,
                needs_embedder=False,
                kwargs=(MethodKwarg("start", 0, "first pool index taken", int),),
                check=check,
            )
            """
        )
    )
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    found = registry._discover()
    monkeypatch.setattr(registry, "METHODS", found)
    assert list(found)[-1] == "lowest-index" and list(found)[:-1] == list(selection.METHODS)
    pool, _, _, _ = make_pool(n=12)
    got = select(pool, ["x"], k=3, method="lowest-index", start=4, order="most_similar_first")
    assert [d["index"] for d in got[0]] == [4, 5, 6]
    with pytest.raises(ValueError, match="start must be >= 0, got -1"):
        select(pool, ["x"], k=3, method="lowest-index", start=-1)
    sys.modules.pop("counterpoint.selection.methods.lowest_index", None)


def test_spec_validation():
    with pytest.raises(ValueError, match="declares a keyword twice"):
        MethodSpec(
            "x", "x", rank=lambda p, r: [], needs_embedder=False, kwargs=(MethodKwarg("a", 1, "h", int),) * 2
        )
    with pytest.raises(ValueError, match="must be a Python identifier, got 'fetch-k'"):
        MethodKwarg("fetch-k", 1, "h", int)
