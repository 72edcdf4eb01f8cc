"""Selector protocol and PoolSelector (moved here from prompting), and the deprecated pool reader."""

from __future__ import annotations

import json

import pytest

from counterpoint.selection import PoolSelector, Selector, select

from .conftest import make_pool


def test_pool_selector_is_select_with_its_arguments_fixed():
    pool, qtexts, _, _ = make_pool(n=40, labels=2)
    sel = PoolSelector(
        pool, k=4, method="mmr", balance_labels=True, order="random", seed=3, method_kwargs={"fetch_k": 9}
    )
    assert isinstance(sel, Selector)
    want = select(pool, qtexts, k=4, method="mmr", balance_labels=True, order="random", seed=3, fetch_k=9)
    assert sel.select(qtexts) == want
    assert PoolSelector(pool, k=0).select(qtexts[:2]) == [[], []]  # zero-shot
    assert isinstance(lambda qs: [[] for _ in qs], Selector) is False


def test_pool_selector_bad_arguments():
    pool, _, _, _ = make_pool(n=5)
    with pytest.raises(ValueError, match="k=-1 must be an int >= 0"):
        PoolSelector(pool, k=-1)
    with pytest.raises(ValueError, match=r"max_tokens=50 needs tokenizer and render"):
        PoolSelector(pool, max_tokens=50)


def test_pool_read_jsonl_is_deprecated_but_works(tmp_path):
    import counterpoint.selection.pool as pool_module

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"input": "a"}) + "\n\n" + json.dumps({"input": "b"}) + "\n")
    with pytest.warns(DeprecationWarning, match=r"pool.read_jsonl is deprecated .* use counterpoint.io"):
        read_jsonl = pool_module.read_jsonl
    assert read_jsonl(path) == ([{"input": "a"}, {"input": "b"}], [1, 3])
