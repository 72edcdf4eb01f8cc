import numpy as np
import pytest

from counterpoint.eval.metrics import (
    coherence,
    coherence_scores,
    diversity,
    mauve_score,
    ngram_counts,
    rep_n,
    repetition,
)


def test_rep_n_hand_computed():
    # "a b a b a": 2-grams ab ba ab ba -> 2 unique of 4; 3-grams aba bab aba -> 2 of 3; 4-grams abab baba -> 2 of 2.
    text = "a b a b a"
    assert rep_n(text, 2) == pytest.approx(0.5)
    assert rep_n(text, 3) == pytest.approx(1 - 2 / 3)
    assert rep_n(text, 4) == pytest.approx(0.0)
    assert diversity(text) == pytest.approx(0.5 * (2 / 3) * 1.0)


def test_rep_n_pools_counts_over_texts_and_ignores_cross_text_repeats():
    # Text 1 "x y x y": 2-grams xy yx xy -> 2 unique of 3. Text 2 "x y": xy -> 1 of 1 (a repeat of
    # text 1's n-gram, which does not count). Pooled: 1 - 3/4.
    assert rep_n(["x y x y", "x y"], 2) == pytest.approx(0.25)
    # A text too short for any 3-gram adds nothing.
    assert rep_n(["x y x y", "x y"], 3) == pytest.approx(0.0)


def test_no_repeats_gives_diversity_one():
    text = "the quick brown fox jumps over the lazy dog"  # "the" repeats, but no 2-gram does
    assert repetition(text) == {2: 0.0, 3: 0.0, 4: 0.0}
    assert diversity(text) == 1.0


def test_token_sequences_and_custom_tokenizer():
    assert rep_n([[5, 6, 5, 6, 5]], 2) == pytest.approx(0.5)
    assert rep_n([np.array([5, 6, 5, 6, 5])], 2) == pytest.approx(0.5)
    assert rep_n("ababa", 2, tokenize=list) == pytest.approx(0.5)  # characters as tokens


def test_whitespace_tokenization_is_the_default():
    # Newlines and runs of spaces are one separator, as with str.split in SimCTG's script.
    assert rep_n("a  b\na b", 2) == rep_n("a b a b", 2)


def test_ngram_counts():
    assert ngram_counts([1, 2, 3], 4) == (0, 0)
    assert ngram_counts([1, 1, 1, 1], 1) == (1, 4)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: rep_n("a b", 3), ValueError, "rep-3 is undefined: no text has 3 or more tokens"),
        (lambda: rep_n("a b c", 0), ValueError, r"n=0 must be a positive integer"),
        (lambda: rep_n([], 2), ValueError, "texts is empty"),
        (lambda: rep_n([1.5], 2), TypeError, r"texts\[0\] is a float"),
    ],
)
def test_rep_n_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


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
