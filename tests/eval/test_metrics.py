import numpy as np
import pytest

from counterpoint.errors import OptionError
from counterpoint.eval.metrics import (
    DEFAULT_NS,
    coherence,
    coherence_scores,
    diversity,
    mauve_score,
    ngram_counts,
    rep_n,
    repetition,
)


def test_rep_n_hand_computed():
    # "a b a b a" as SimCTG counts it (each text's last n-gram is skipped): 2-grams ab ba ab -> 2 unique
    # of 3; 3-grams aba bab -> 2 of 2; 4-grams abab -> 1 of 1.
    text = "a b a b a"
    assert rep_n(text, 2) == pytest.approx(1 / 3)
    assert rep_n(text, 3) == 0.0
    assert rep_n(text, 4) == 0.0
    assert diversity(text) == pytest.approx(2 / 3)
    # Every n-gram: 2-grams ab ba ab ba -> 2 of 4; 3-grams aba bab aba -> 2 of 3; 4-grams abab baba -> 2 of 2.
    assert rep_n(text, 2, count="all") == pytest.approx(0.5)
    assert rep_n(text, 3, count="all") == pytest.approx(1 - 2 / 3)
    assert rep_n(text, 4, count="all") == 0.0
    assert diversity(text, count="all") == pytest.approx(0.5 * (2 / 3) * 1.0)
    assert repetition(text, count="all") == {2: 0.5, 3: pytest.approx(1 / 3), 4: 0.0}


def test_rep_n_pools_counts_over_texts_and_ignores_cross_text_repeats():
    # SimCTG's count. Text 1 "x y x y x": 2-grams xy yx xy -> 2 unique of 3. Text 2 "x y z": xy -> 1 of 1
    # (xy repeats text 1's, which does not count). Pooled: 1 - 3/4.
    texts = ["x y x y x", "x y z"]
    assert rep_n(texts, 2) == pytest.approx(0.25)
    # 3-grams: xyx yxy -> 2 of 2, and "x y z" (exactly 3 tokens) has none: it adds nothing.
    assert rep_n(texts, 3) == 0.0
    # Every n-gram: xy yx xy yx -> 2 of 4, plus xy yz -> 2 of 2: 1 - 4/6.
    assert rep_n(texts, 2, count="all") == pytest.approx(1 / 3)


def test_no_repeats_gives_diversity_one():
    text = "the quick brown fox jumps over the lazy dog"  # "the" repeats, but no 2-gram does
    for count in ("simctg", "all"):
        assert repetition(text, count=count) == {2: 0.0, 3: 0.0, 4: 0.0}
        assert diversity(text, count=count) == 1.0


def test_token_sequences_and_custom_tokenizer():
    assert rep_n([[5, 6, 5, 6, 5]], 2) == pytest.approx(1 / 3)
    assert rep_n([np.array([5, 6, 5, 6, 5])], 2) == pytest.approx(1 / 3)
    assert rep_n("ababa", 2, tokenize=list) == pytest.approx(1 / 3)  # characters as tokens
    assert rep_n([[5, 6, 5, 6, 5]], 2, count="all") == pytest.approx(0.5)


def test_whitespace_tokenization_is_the_default():
    # Newlines and runs of spaces are one separator, as with str.split in SimCTG's script.
    assert rep_n("a  b\na b", 2) == rep_n("a b a b", 2)


def test_ngram_counts():
    assert ngram_counts([1, 2, 3], 4) == (0, 0)
    assert ngram_counts([1, 2, 3], 3) == (0, 0)  # SimCTG: a text of exactly n tokens has no n-gram
    assert ngram_counts([1, 2, 3], 3, count="all") == (1, 1)
    assert ngram_counts([1, 1, 1, 1], 1) == (1, 3)
    assert ngram_counts([1, 1, 1, 1], 1, count="all") == (1, 4)
    assert ngram_counts([], 2) == ngram_counts([], 2, count="all") == (0, 0)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: rep_n("a b", 3), ValueError, "rep-3 is undefined: no text has more than 3 tokens"),
        (lambda: rep_n("a b c", 3), ValueError, "rep-3 is undefined: no text has more than 3 tokens"),
        (
            lambda: rep_n("a b", 3, count="all"),
            ValueError,
            r"rep-3 is undefined: no text has 3 or more tokens, .*\(count='all'\)",
        ),
        (lambda: rep_n(["", "  \n "], 2), ValueError, "rep-2 is undefined"),
        (lambda: rep_n("a b c", 0), OptionError, r"n=0 must be a positive integer"),
        (lambda: rep_n("a b c", 2, count="full"), OptionError, r"count='full' is not a way to count n-grams"),
        (
            lambda: diversity("a b c", count=None),
            OptionError,
            r"count=None is not .* use 'simctg' .* or 'all'",
        ),
        (lambda: ngram_counts([1, 2], 1, count="SimCTG"), OptionError, r"count='SimCTG'"),
        (lambda: rep_n([], 2), ValueError, "texts is empty"),
        (lambda: rep_n([1.5], 2), TypeError, r"texts\[0\] is a float"),
    ],
)
def test_rep_n_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_rep_n_exactly_three_tokens_is_defined_with_all_count():
    assert rep_n("a b c", 3, count="all") == 0.0


# --- SimCTG's measure_repetition_and_diversity, as the oracle --------------------------------------------
# A re-statement of yxuansu/SimCTG simctg/evaluation.py (eval_text, eval_one_instance,
# measure_repetition_and_diversity): the same strip, split, n-gram loop, string n-grams and pooling. It
# also returns the raw pooled counts and unrounded values, which their function computes but rounds away.


def _simctg_eval_text(text, ngram):
    token_list = text.strip().split()
    start_idx, end_idx = 0, ngram
    total_num = 0
    ngram_set = set()
    while end_idx < len(token_list):  # never reaches the last n-gram
        one_ngram_list = token_list[start_idx:end_idx]
        assert len(one_ngram_list) == ngram
        ngram_set.add(" ".join(one_ngram_list))
        total_num += 1
        start_idx += 1
        end_idx += 1
    return len(ngram_set), total_num


def _simctg_measure(text_list, ngram_list=(2, 3, 4)):
    """Returns (pooled {n: (unique, total)}, unrounded {n: rep-n}, their returned tuple)."""
    pooled = {n: [0, 0] for n in ngram_list}
    for text in text_list:
        text = text.strip("\n").strip()
        for n in ngram_list:
            unique, total = _simctg_eval_text(text, n)
            pooled[n][0] += unique
            pooled[n][1] += total
    raw = {n: 1 - pooled[n][0] / pooled[n][1] for n in ngram_list}  # ZeroDivisionError when no n-gram
    rounded = {n: round(raw[n] * 100, 2) for n in ngram_list}
    div = 1.0
    for n in ngram_list:
        div *= 1 - rounded[n] / 100
    return {n: tuple(c) for n, c in pooled.items()}, raw, (*rounded.values(), div)


# Hand-made texts for the edge cases: empty, all whitespace, shorter than n, exactly n tokens, runs of
# mixed whitespace, leading and trailing newlines, non-ASCII whitespace (str.split splits on it too),
# punctuation glued to words, and repeats inside and across texts.
EDGE_TEXTS = [
    "",
    "   ",
    "\n\n",
    " \t\n \r\n ",
    "word",
    "two words",
    "a b c",
    "a b c d",
    "a b a b a",
    "a  b\n\na b\t\ta \n",
    "\n leading and trailing whitespace \n",
    "the the the the the the the",
    "x\u00a0y x\u2003y x\u3000y x",
    "Hello, world! Hello, world! Hello, world!",
    "line one\nline two\nline one\nline two\n",
    "a b c d a b c d a b c d e",
    "naïve café naïve café — naïve café",
]


@pytest.mark.parametrize("text", EDGE_TEXTS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_counts_equal_simctg_text_by_text(text, n):
    assert ngram_counts(text.split(), n) == _simctg_eval_text(text, n)
    unique, total = _simctg_eval_text(text, n)
    if total == 0:
        with pytest.raises(ValueError, match=f"rep-{n} is undefined"):
            rep_n(text, n)
    else:
        assert abs(rep_n(text, n) - (1 - unique / total)) <= 1e-12
        assert abs(rep_n([text], n) - (1 - unique / total)) <= 1e-12


CORPORA = {
    "all edge texts": EDGE_TEXTS,
    "with empty texts": ["", "a b a b a", "", "x y x y x y", "   "],
    "cross-text repeats only": ["p q r s", "p q r s", "p q r s t"],
    "one long repetitive text": ["the cat sat on the mat and the cat sat on the mat " * 5],
}


@pytest.mark.parametrize("corpus", list(CORPORA.values()), ids=list(CORPORA))
def test_pooled_rep_n_and_diversity_equal_simctg(corpus):
    pooled, raw, returned = _simctg_measure(corpus)
    ours = repetition(corpus)
    for n in DEFAULT_NS:
        assert abs(ours[n] - raw[n]) <= 1e-12
        assert abs(rep_n(corpus, n) - raw[n]) <= 1e-12
        # Their function's returned rep-n is ours in percent, rounded to 2 decimals.
        assert round(100 * ours[n], 2) == returned[DEFAULT_NS.index(n)]
    raw_div = (1 - raw[2]) * (1 - raw[3]) * (1 - raw[4])
    assert abs(diversity(corpus) - raw_div) <= 1e-12
    # Their diversity multiplies the rounded rep-n values: ours differs by that rounding only.
    assert abs(diversity(corpus) - returned[3]) <= 1.5e-4 + 1e-12


def test_random_corpora_equal_simctg():
    # Small vocabularies make repeats common; separators mix spaces, tabs, newlines and their runs.
    rng = np.random.default_rng(0)
    seps = [" ", "  ", "\t", "\n", " \n ", "\n\n", "\r\n"]
    for _ in range(200):
        corpus = []
        for _ in range(int(rng.integers(1, 6))):
            words = [str(w) for w in rng.choice(["a", "b", "c", "dd", "e."], size=int(rng.integers(0, 30)))]
            text = "".join(w + str(rng.choice(seps)) for w in words)
            corpus.append(str(rng.choice(["", " ", "\n"])) + text)
        for n in (1, 2, 3, 4, 5):
            u_ref = sum(_simctg_eval_text(t, n)[0] for t in corpus)
            t_ref = sum(_simctg_eval_text(t, n)[1] for t in corpus)
            assert tuple(map(sum, zip(*[ngram_counts(t.split(), n) for t in corpus], strict=True))) == (
                u_ref,
                t_ref,
            )
            if t_ref:
                assert abs(rep_n(corpus, n) - (1 - u_ref / t_ref)) <= 1e-12


def test_all_count_is_every_ngram_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(100):
        tokens = [int(t) for t in rng.integers(0, 4, size=int(rng.integers(0, 15)))]
        for n in (1, 2, 3, 4):
            grams = [tuple(tokens[i : i + n]) for i in range(len(tokens)) if i + n <= len(tokens)]
            assert ngram_counts(tokens, n, count="all") == (len(set(grams)), len(grams))
            assert ngram_counts(tokens, n) == (len(set(grams[:-1])), len(grams[:-1]))


def _fake_embedder(table):
    """A list[str] -> (N, D) callable that looks each text up in ``table``."""

    def encode(texts):
        return np.array([table[t] for t in texts], dtype=np.float32)

    return encode


def test_coherence_with_fake_embedder():
    emb = _fake_embedder(
        {"p1": [1, 0], "c1": [1, 1], "p2": [0, 2], "c2": [0, -3], "p3": [1, 0], "c3": [0, 0]}
    )
    scores = coherence_scores(["p1", "p2", "p3"], ["c1", "c2", "c3"], embedder=emb)
    # cos(45 deg), opposite directions, and a zero vector (no direction: 0 by definition).
    np.testing.assert_allclose(scores, [np.sqrt(0.5), -1.0, 0.0], rtol=1e-6)
    assert coherence(["p1", "p2", "p3"], ["c1", "c2", "c3"], embedder=emb) == pytest.approx(
        (np.sqrt(0.5) - 1) / 3
    )


def test_coherence_errors():
    emb = _fake_embedder({"a": [1.0]})
    with pytest.raises(ValueError, match="prompts has 1 items but continuations has 2"):
        coherence(["a"], ["a", "a"], embedder=emb)
    with pytest.raises(TypeError, match="has no encode\\(\\) and is not callable"):
        coherence(["a"], ["a"], embedder=3)
    with pytest.raises(ValueError, match=r"returned shape \(1,\) for 1 texts"):
        coherence(["a"], ["a"], embedder=lambda texts: np.zeros(len(texts)))


@pytest.mark.slow
def test_coherence_real_embedder_ranks_on_topic_above_off_topic(minilm):
    prompt = ["The football club announced the signing of a new striker on Friday."]
    on_topic = coherence(
        prompt, ["The forward joins on a three-year contract after scoring 20 goals."], embedder=minilm
    )
    off_topic = coherence(
        prompt, ["Preheat the oven and whisk the eggs with sugar until pale."], embedder=minilm
    )
    assert on_topic > off_topic + 0.2


def test_mauve_on_features_separates_identical_from_disjoint():
    pytest.importorskip("mauve")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 8)).astype(np.float32)
    b = rng.normal(size=(60, 8)).astype(np.float32)
    far = (rng.normal(size=(60, 8)) + 25.0).astype(np.float32)
    names = [f"a{i}" for i in range(60)] + [f"b{i}" for i in range(60)] + [f"f{i}" for i in range(60)]
    emb = _fake_embedder(dict(zip(names, np.concatenate([a, b, far]), strict=True)))
    same = mauve_score(names[:60], names[60:120], embedder=emb)
    apart = mauve_score(names[:60], names[120:], embedder=emb)
    assert same.mauve > 0.9 and apart.mauve < 0.1
    assert same.num_buckets == 6 and same.n_human == 60 and "(8-d)" in same.features


def test_mauve_error_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mauve(name, *args, **kwargs):
        if name == "mauve":
            raise ImportError("no module named mauve")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mauve)
    with pytest.raises(ImportError, match=r"pip install 'counterpoint\[eval\]'"):
        mauve_score(["a", "b"], ["a", "b"], embedder=_fake_embedder({"a": [1.0], "b": [2.0]}))
