"""The token budget, counted with the real SmolLM2 tokenizer: never exceeded, never underfilled."""

from __future__ import annotations

import numpy as np
import pytest

from counterpoint.selection import DemoPool, default_render, select

from .conftest import LookupEmbedder, unit_rows

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
]


def wordy_pool(n=40, d=16, n_queries=6):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 30))) + f" #{i}" for i in range(n)]
    qtexts = [f"question {j}: " + " ".join(rng.choice(WORDS, size=5)) for j in range(n_queries)]
    mat = unit_rows(n + n_queries, d, seed=1)
    table = dict(zip(texts + qtexts, mat, strict=True))
    records = [{"input": t, "label": WORDS[i % 4]} for i, t in enumerate(texts)]
    return DemoPool.from_records(records, label_key="label", embedder=LookupEmbedder(table)), qtexts


def template(demos, query):
    """A prompt format unlike the default one, as a FewShotTemplate.render_text would give."""
    shots = "".join(
        f"<|im_start|>user\n{d['input']}<|im_end|>\n<|im_start|>assistant\n{d['label']}<|im_end|>\n"
        for d in demos
    )
    return shots + f"<|im_start|>user\n{query['input']}<|im_end|>\n<|im_start|>assistant\n"


def n_tokens(tok, text):
    return len(tok.encode(text))


@pytest.mark.parametrize("render", [None, template])
@pytest.mark.parametrize("order", ["most_similar_last", "most_similar_first", "random"])
@pytest.mark.parametrize("method", ["knn", "mmr", "bm25"])
def test_budget_never_exceeded_never_underfilled(smol_tokenizer, render, order, method):
    pool, qtexts = wordy_pool()
    queries = [{"input": t} for t in qtexts]
    k = 8
    full = select(pool, queries, k=k, method=method, order="most_similar_first")
    fmt = render or (
        lambda demos, q: default_render(
            demos, q, text_keys=("input",), query_keys=("input",), label_key="label"
        )
    )
    for max_tokens in (40, 90, 160, 400):
        got = select(
            pool,
            queries,
            k=k,
            method=method,
            max_tokens=max_tokens,
            tokenizer=smol_tokenizer,
            render=render,
            order=order,
        )
        for row, ranked, q in zip(got, full, queries, strict=True):
            m = len(row)
            # The kept demos are the m most relevant of the unconstrained choice...
            assert sorted(d["index"] for d in row) == sorted(d["index"] for d in ranked[:m])
            # ...they fit...
            assert n_tokens(smol_tokenizer, fmt([d["example"] for d in row], q)) <= max_tokens
            # ...and one more (the next most relevant) would not.
            if m < k:
                more = [d["example"] for d in ranked[: m + 1]]
                assert n_tokens(smol_tokenizer, fmt(more, q)) > max_tokens
    # A roomy budget changes nothing.
    assert select(
        pool, queries, k=k, method=method, max_tokens=10_000, tokenizer=smol_tokenizer, render=render
    ) == select(pool, queries, k=k, method=method, render=render)


def test_budget_bites_somewhere(smol_tokenizer):
    pool, qtexts = wordy_pool()
    sizes = {len(r) for r in select(pool, qtexts, k=8, max_tokens=120, tokenizer=smol_tokenizer)}
    assert max(sizes) < 8 and min(sizes) >= 1


def test_default_render_format():
    text = default_render(
        [{"input": "2+2", "output": "4"}],
        {"input": "3+3"},
        text_keys=("input",),
        query_keys=("input",),
        label_key="output",
    )
    assert text == "input: 2+2\noutput: 4\n\ninput: 3+3\noutput:"


def test_query_alone_over_budget_is_an_error(smol_tokenizer):
    pool, qtexts = wordy_pool()
    with pytest.raises(
        ValueError, match=r"max_tokens=3 is too small for query 0: the query alone takes \d+ tokens"
    ):
        select(pool, qtexts, k=2, max_tokens=3, tokenizer=smol_tokenizer)
    with pytest.raises(ValueError, match="max_tokens must be a positive int or None, got -1"):
        select(pool, qtexts, k=2, max_tokens=-1, tokenizer=smol_tokenizer)
