"""The LM-scored methods (``lm``, ``se2``) and their scorer, against naive unbatched references.

A tiny random Llama over SmolLM2's real tokenizer (so prompts are tokenized as the pipeline tokenizes them)
scores the prompts. The references (``lm_reference.py``) score every prompt with a plain forward of its
own; ``select`` scores them batched across queries and beams with shared prefixes. The chosen
demonstrations must be the same, in the same order, and the scores equal in fp32.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from counterpoint.eval import verbalizer_scores
from counterpoint.prompting import FewShotTemplate
from counterpoint.selection import DemoPool, LMScorer, select
from counterpoint.selection.lm_scorer import template_answer
from tests.tiny_models import tiny_llama

from .conftest import unit_rows
from .lm_reference import NaiveJudge, naive_lm, naive_logprob, naive_se2, nearest

torch.set_num_threads(1)

WORDS = ["apple", "grass", "sky", "cherry", "lime", "ocean", "ruby", "moss", "cloud", "brick", "leaf", "sea"]
COLOURS = ["red", "green", "blue"]
TEMPLATE = FewShotTemplate(
    instruction="Name the colour.",
    demo_format="Item: {input}\nColour: {label}",
    query_format="Item: {input}\nColour:",
)
N, D = 14, 8


@pytest.fixture(scope="module")
def model(smol_tokenizer):
    m = tiny_llama(seed=3, n_layer=2, vocab_size=len(smol_tokenizer))
    with torch.no_grad():
        m.get_output_embeddings().weight.mul_(6.0)  # peaked: scores far apart
    return m


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    records = [
        {"id": i, "input": " ".join(rng.choice(WORDS, 3)), "label": COLOURS[i % 3], "answer": COLOURS[i % 3]}
        for i in range(N)
    ]
    emb = unit_rows(N + 4, D, seed=1)
    queries = [
        {"input": "apple sky moss"},
        {"input": "ocean ruby"},
        dict(records[5]),
        {"input": "lime lime leaf"},
    ]
    return records, emb[:N], emb[N:], queries


def make_pool(records, pool_emb, label=True):
    return DemoPool.from_records(
        records, label_key="label" if label else None, embeddings=pool_emb, embedder=lambda t: None
    )


def banned_of(pool, queries):
    out = []
    for q in queries:
        b = set(pool.indices_with_text(q["input"]))
        if "id" in q:
            b |= set(pool.indices_with_id(q["id"]))
        out.append(b)
    return out


def check_gaps(scores):
    """The references' scores must be far enough apart for exact rankings to be meaningful in fp32."""
    vals = sorted(scores)
    gaps = [b - a for a, b in itertools.pairwise(vals) if b != a]
    assert not gaps or min(gaps) > 1e-4, "the tiny model gives near-ties; pick another seed"


# -- the scorer ----------------------------------------------------------------------------------------


def test_template_answer_is_what_the_template_writes_after_the_query():
    answer = template_answer(TEMPLATE)
    assert answer({"input": "x"}, "blue") == " blue"
    chat = FewShotTemplate(chat_user_format="Q: {input}", chat_assistant_format="{output}")
    assert template_answer(type("Chat", (), {"template": chat})())({"input": "x"}, "4") == "4"
    with pytest.raises(ValueError, match="must name exactly one field that query_format="):
        template_answer(FewShotTemplate(demo_format="{input} {a} {b}", query_format="{input}"))
    with pytest.raises(ValueError, match="does not begin with query_format="):
        template_answer(FewShotTemplate(demo_format="{output}: {input}", query_format="{input} ->"))(
            {"input": "x"}, "y"
        )


def test_scorer_matches_a_plain_forward_per_prompt(model, smol_tokenizer, data):
    records, *_ = data
    scorer = LMScorer.from_template(model, smol_tokenizer, TEMPLATE, batch_size=4)
    prompts = [
        ([records[i], records[j]], {"input": q})
        for i, j, q in [(0, 1, "sky"), (0, 2, "sea"), (3, 1, "sky"), (0, 1, "moss moss")]
    ]
    prompts += [([], {"input": "sky"}), ([records[7]], {"input": "brick"})]
    values = [COLOURS, ["red"], COLOURS[::-1], ["green", "blue"], COLOURS, ["blue"]]
    for share in (None, [0, 0, 3, 0, None, 7], list(range(6))):
        got = scorer.score(prompts, values, share=share)
        for (demos, q), vals, g in zip(prompts, values, got, strict=True):
            want = [
                naive_logprob(model, smol_tokenizer, TEMPLATE.render_text(demos, q), " " + v) for v in vals
            ]
            torch.testing.assert_close(g, torch.tensor(want), rtol=1e-5, atol=1e-5)


def test_verbalizer_classification_scores_as_the_selection_scorer(model, smol_tokenizer, data):
    # counterpoint.eval's verbalizer scores and the LM scorer go through the same scorer: same numbers.
    records, *_ = data
    prompts = [([records[i]], {"input": q}) for i, q in [(0, "sky"), (4, "sea"), (9, "moss")]]
    texts = [TEMPLATE.render_text(d, q) for d, q in prompts]
    scorer = LMScorer.from_template(model, smol_tokenizer, TEMPLATE)
    ours = torch.stack(scorer.score(prompts, [COLOURS] * 3, share=[0, 4, 9]))
    theirs = verbalizer_scores(model, smol_tokenizer, texts, [" " + c for c in COLOURS])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


# -- lm --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["prediction", "labels"])
@pytest.mark.parametrize("quotas", [False, True])
def test_lm_matches_the_naive_reference(model, smol_tokenizer, data, target, quotas):
    records, pool_emb, q_emb, queries = data
    pool = make_pool(records, pool_emb)
    k, m = 3, 6
    scorer = LMScorer.from_template(model, smol_tokenizer, TEMPLATE, batch_size=5)
    got = select(
        pool, queries, k=k, method="lm", scorer=scorer, candidates=m, target=target, balance_labels=quotas,
        query_embeddings=q_emb,
    )  # fmt: skip
    judge = NaiveJudge(model, smol_tokenizer, TEMPLATE, target)
    labels = pool.labels if quotas else None
    want = naive_lm(
        judge, records, pool.embeddings.numpy(), q_emb, queries, [COLOURS] * 4, k, m, banned_of(pool, queries),
        labels, math.ceil(k / 3) if quotas else None,
    )  # fmt: skip
    check_gaps([s for row in want for _, s in row])
    assert [[d["index"] for d in row] for row in got] == [[i for i, _ in row] for row in want]
    np.testing.assert_allclose(
        [[d["score"] for d in r] for r in got], [[s for _, s in r] for r in want], rtol=1e-5, atol=1e-5
    )
    assert all(
        5 not in [d["index"] for d in row] for row in got[2:3]
    )  # query 2 is pool record 5: never itself


def test_lm_scores_a_multiple_choice_query_on_its_own_options(model, smol_tokenizer, data):
    records, pool_emb, q_emb, queries = data
    template = FewShotTemplate(demo_format="Q: {input}\nA: {answer}", query_format="Q: {input}\nA:")
    options = [
        ["moss", "sea", "ruby"],
        ["leaf", "brick"],
        ["sky", "lime", "cloud", "apple"],
        ["grass", "ocean"],
    ]
    mc = [{**q, "options": o} for q, o in zip(queries, options, strict=True)]
    scorer = LMScorer.from_template(model, smol_tokenizer, template, batch_size=7)
    pool = make_pool(records, pool_emb, label=False)
    got = select(
        pool, mc, k=2, method="lm", scorer=scorer, candidates=5, answers_key="options", query_embeddings=q_emb
    )
    judge = NaiveJudge(model, smol_tokenizer, template)
    want = naive_lm(judge, records, pool.embeddings.numpy(), q_emb, mc, options, 2, 5, banned_of(pool, mc))
    assert [[d["index"] for d in row] for row in got] == [[i for i, _ in row] for row in want]


# -- se2 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "quotas", "budget"),
    [
        ("prediction", False, None),
        ("labels", False, None),
        ("prediction", True, None),
        ("prediction", False, 40),
    ],
)
def test_se2_matches_the_naive_reference(model, smol_tokenizer, data, target, quotas, budget):
    records, pool_emb, q_emb, queries = data
    pool = make_pool(records, pool_emb)
    k, m, width = 3, 5, 2
    scorer = LMScorer.from_template(model, smol_tokenizer, TEMPLATE, batch_size=6)
    extra = (
        {"max_tokens": budget, "tokenizer": smol_tokenizer, "render": TEMPLATE.render_text} if budget else {}
    )
    got = select(
        pool, queries, k=k, method="se2", scorer=scorer, candidates=m, beam_size=width, target=target,
        balance_labels=quotas, query_embeddings=q_emb, **extra,
    )  # fmt: skip

    def fits(demos, query):
        return len(smol_tokenizer.encode(TEMPLATE.render_text(demos, query))) <= budget

    judge = NaiveJudge(model, smol_tokenizer, TEMPLATE, target)
    want = naive_se2(
        judge, records, pool.embeddings.numpy(), q_emb, queries, [COLOURS] * 4, k, m, width, banned_of(pool, queries),
        pool.labels if quotas else None, math.ceil(k / 3) if quotas else None, fits if budget else None,
    )  # fmt: skip
    check_gaps([s for row in want for _, s in row])
    assert [[d["index"] for d in row] for row in got] == [[i for i, _ in row] for row in want]
    np.testing.assert_allclose(
        [[d["score"] for d in r] for r in got], [[s for _, s in r] for r in want], rtol=1e-5, atol=1e-5
    )
    if budget:
        assert all(
            len(smol_tokenizer.encode(TEMPLATE.render_text([d["example"] for d in r], q))) <= budget
            for r, q in zip(got, queries, strict=True)
        )
        assert min(len(r) for r in got) < k  # the budget stopped some sequence short of k
    if quotas:
        assert all(
            max(np.unique([d["example"]["label"] for d in r], return_counts=True)[1]) <= 1 for r in got
        )


def test_se2_with_a_beam_as_wide_as_the_candidates_is_exhaustive(model, smol_tokenizer, data):
    # k = 2 and every extension kept: the result is the best ordered pair by Se²'s sum of step scores,
    # s(e1, query) + s(e2 e1, query), found here by brute force over all pairs.
    records, pool_emb, q_emb, queries = data
    pool = make_pool(records, pool_emb)
    m = 4
    scorer = LMScorer.from_template(model, smol_tokenizer, TEMPLATE, batch_size=16)
    got = select(
        pool, queries, k=2, method="se2", scorer=scorer, candidates=m, beam_size=m * m, query_embeddings=q_emb
    )
    judge = NaiveJudge(model, smol_tokenizer, TEMPLATE)
    for qi, q in enumerate(queries):
        cands = nearest(pool.embeddings.numpy(), q_emb[qi], m, banned_of(pool, [q])[0])
        asked = judge.asked(q, COLOURS)
        best = max(
            itertools.permutations(cands, 2),
            key=lambda p: (
                judge.score([records[p[0]]], q, asked) + judge.score([records[p[1]], records[p[0]]], q, asked)
            ),
        )
        assert [d["index"] for d in got[qi]] == [best[1], best[0]]  # prompt order: the second choice first


def test_se2_forwards_are_batched_across_queries_and_beams(model, smol_tokenizer, data):
    records, pool_emb, q_emb, queries = data
    pool = make_pool(records, pool_emb)
    assert all(len(smol_tokenizer(" " + c, add_special_tokens=False)["input_ids"]) == 1 for c in COLOURS)
    k, m, width = 3, 4, 2
    per_query = [len(COLOURS), m, width * (m - 1), width * (m - 2)]  # pairs: zero-shot round, then each step

    def forwards(n_queries, batch_size):
        scorer = LMScorer.from_template(model, smol_tokenizer, TEMPLATE, batch_size=batch_size)
        select(
            pool,
            queries[:n_queries],
            k=k,
            method="se2",
            scorer=scorer,
            candidates=m,
            beam_size=width,
            query_embeddings=q_emb[:n_queries],
        )
        return scorer.stats

    # One-token answers: every batch is two forwards (the shared prefixes, then the rest of the prompts).
    for n_queries, batch_size in [(1, 100), (4, 100), (4, 5), (3, 7)]:
        stats = forwards(n_queries, batch_size)
        assert stats.calls == 1 + k
        assert stats.forwards == sum(2 * math.ceil(n_queries * p / batch_size) for p in per_query)
    # Four queries cost the forwards of one when a batch holds them all: 2 per round.
    assert forwards(4, 100).forwards == forwards(1, 100).forwards == 2 * (1 + k)


# -- guarantees and errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lm", "se2"])
def test_orders_keep_the_method_s_preference(model, smol_tokenizer, data, method):
    records, pool_emb, q_emb, queries = data
    pool = make_pool(records, pool_emb)
    scorer = LMScorer.from_template(model, smol_tokenizer, TEMPLATE)
    kw = {"k": 3, "method": method, "scorer": scorer, "candidates": 5, "query_embeddings": q_emb}
    last = select(pool, queries, **kw)
    first = select(pool, queries, order="most_similar_first", **kw)
    shuffled = select(pool, queries, order="random", seed=3, **kw)
    for a, b, c in zip(last, first, shuffled, strict=True):
        assert [d["index"] for d in a] == [d["index"] for d in reversed(b)]
        assert sorted(d["index"] for d in a) == sorted(d["index"] for d in c)
        assert [d["score"] for d in b] == sorted((d["score"] for d in b), reverse=True)


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        (
            "lm",
            {},
            r"method='lm' scores demonstrations with the target model: pass scorer=LMScorer.from_template",
        ),
        ("knn", {"scorer": "x"}, r"method='knn' takes no scorer \(only the LM-scored methods do\)"),
        ("lm", {"scorer": "x"}, "scorer='str' must be a counterpoint.selection.LMScorer"),
        ("lm", {"candidates": 2}, "candidates=2 must be at least k=3"),
        ("se2", {"target": "gold"}, "target='gold' is not one of: prediction, labels"),
        ("se2", {"beam_size": 0}, "beam_size=0 must be a positive int"),
    ],
)
def test_bad_arguments_are_refused_before_any_scoring(model, smol_tokenizer, data, method, kwargs, message):
    records, pool_emb, q_emb, queries = data
    scorer = LMScorer.from_template(model, smol_tokenizer, TEMPLATE)
    kwargs = {"scorer": scorer, **kwargs} if method != "knn" and "scorer" not in kwargs and kwargs else kwargs
    with pytest.raises(ValueError, match=message):
        select(make_pool(records, pool_emb), queries, k=3, method=method, query_embeddings=q_emb, **kwargs)
    assert scorer.stats.forwards == 0


def test_answers_must_be_known(model, smol_tokenizer, data):
    records, pool_emb, q_emb, queries = data
    scorer = LMScorer.from_template(model, smol_tokenizer, TEMPLATE)
    with pytest.raises(ValueError, match="build the pool with label_key= .* or pass answers_key="):
        select(
            make_pool(records, pool_emb, label=False),
            queries,
            k=2,
            method="lm",
            scorer=scorer,
            query_embeddings=q_emb,
        )
    with pytest.raises(
        ValueError, match=r"query 0: answers_key='options' must name a field holding a non-empty list"
    ):
        select(
            make_pool(records, pool_emb),
            queries,
            k=2,
            method="se2",
            scorer=scorer,
            answers_key="options",
            query_embeddings=q_emb,
        )
