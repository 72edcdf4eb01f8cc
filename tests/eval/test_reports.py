"""The benchmark scripts' verdict logic and their few-shot path, with stand-ins for modules built elsewhere."""

import importlib.util
import math
import random
import sys
from pathlib import Path

import pytest

import counterpoint.selection

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def open_ended():
    return _load("eval_open_ended")


@pytest.fixture(scope="module")
def selection():
    return _load("eval_selection")


def _row(oe, name, rep4, coh):
    return oe.Row(oe.STRATEGIES[name], rep={2: rep4, 3: rep4, 4: rep4}, coherence=coh)


def test_open_ended_verdicts_follow_the_numbers(open_ended):
    rows = {
        "greedy": _row(open_ended, "greedy", 0.40, 0.50),
        "beam": _row(open_ended, "beam", 0.30, 0.52),
        "contrastive_search": _row(open_ended, "contrastive_search", 0.10, 0.47),  # far less, coherent
        "dola_normed": _row(open_ended, "dola_normed", 0.20, 0.30),  # 0.20 > 0.5 * 0.30; incoherent
        "cd_li2022": open_ended.Row(open_ended.STRATEGIES["cd_li2022"], open_ended.NO_AMATEUR),
    }
    lines = open_ended.verdicts(rows, "a 135M model")
    assert lines[0].startswith(
        "- **contrastive search (alpha 0.6, k 4)**: as the papers claim: rep-4 0.100 against 0.300"
    )
    assert "not as the papers claim: repetition is not far lower" in lines[1]
    assert "and coherence falls more than 0.05 below greedy's" in lines[1]
    assert "a 135M model is not OPT-13B" in lines[1] and "DoLa" in lines[1]
    assert lines[2] == f"- **contrastive decoding, li2022-greedy**: {open_ended.NO_AMATEUR}."


def test_open_ended_rows_come_from_the_registry(open_ended):
    from counterpoint.decoding import get_strategy

    for row in open_ended.ROWS.values():
        spec = get_strategy(row.strategy)  # every row names a registry strategy
        assert set(row.options) <= {o.name for o in spec.options}, row.name
    assert open_ended.ROWS["cd_li2022"].options == {"preset": "li2022-greedy"}
    assert open_ended.ROWS["cd_obrien2023"].options == {"preset": "obrien2023"}


def test_open_ended_rejects_unknown_strategy(open_ended, capsys):
    with pytest.raises(SystemExit):
        open_ended.parse_args(["--strategies", "greedy,warp"])
    assert "unknown ['warp']" in capsys.readouterr().err


def test_selection_verdicts_follow_the_numbers(selection):
    cells = {
        ("random", 4): selection.Cell(
            accuracies=[0.60, 0.64, 0.62], positive_share=[0.5] * 3, label_match=[0.5] * 3
        ),
        ("knn", 4): selection.Cell(accuracies=[0.70], positive_share=[0.5], label_match=[0.8]),
        ("mmr", 4): selection.Cell(accuracies=[0.63], positive_share=[0.95], label_match=[0.7]),
    }
    lines = selection.verdicts(cells, [4], n_test=100, max_words=64)
    assert lines[0].startswith(
        "- **kNN, k = 4**: as the papers claim: 70.0% against random's 62.0% ± 2.0 (+8.0 points"
    )
    assert lines[1].startswith("- **MMR, k = 4**: not as the papers claim: 63.0%")
    assert "within random's spread" in lines[1] and "answers 'positive' for 95% of reviews" in lines[1]
    assert "(70% against 50%)" in lines[1]


class _FakePool:
    def __init__(self, records):
        self.records = records

    @classmethod
    def from_records(cls, records, text_keys=("input",), label_key=None, embedder=None):
        return cls(records)


def _fake_select(
    pool, queries, k=4, method="knn", *, query_key="input", balance_labels=False, seed=0, **kwargs
):
    """Random or word-overlap nearest neighbours: enough to drive the script, not the real selection."""
    out = []
    for q in queries:
        if method == "random":
            idx = random.Random(seed).sample(range(len(pool.records)), k)
        else:
            words = set(q[query_key].lower().split())
            overlap = [len(words & set(r["input"].lower().split())) for r in pool.records]
            idx = sorted(range(len(pool.records)), key=lambda i: overlap[i])[-k:]
        out.append([{"index": i, "score": 0.0, "example": pool.records[i]} for i in idx])
    return out


@pytest.mark.slow
def test_selection_script_runs_few_shot_end_to_end(selection, monkeypatch, tmp_path):
    monkeypatch.setattr(counterpoint.selection, "DemoPool", _FakePool, raising=False)
    monkeypatch.setattr(counterpoint.selection, "select", _fake_select, raising=False)
    out = tmp_path / "selection.md"
    selection.main(["--limit", "3", "--ks", "2", "--methods", "zero-shot,random,knn", "--out", str(out)])
    report = out.read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0] == "| demonstrations | k = 2 | demo label match, k = 2 |"
    assert table[2].startswith("| random (mean ± sd over seeds [0, 1, 2]) | ") and " ± " in table[2]
    assert "- **kNN, k = 2**:" in report and "Quick run** (3 test reviews)" in report


def test_format_prompt(selection):
    demos = [{"index": 0, "score": 1.0, "example": {"input": "one two three", "label": "positive"}}]
    got = selection.format_prompt(demos, {"input": "a b c d"}, max_words=2)
    assert (
        got
        == f"{selection.INSTRUCTION}\n\nReview: one two ...\nSentiment: positive\n\nReview: a b ...\nSentiment:"
    )


@pytest.fixture(scope="module")
def factuality():
    return _load("eval_factuality")


def test_factuality_mc_scores_are_dolas(factuality):
    true, best = ("A.", "B.", "C."), "B."
    # MC1: the best answer (B) above every false one; MC3: share of true answers above every false one;
    # MC2: the true answers' share of exp(score).
    got = factuality.mc_scores([-1.0, -2.0, -9.0], [-3.0, -4.0], true, best)
    p_true, p_false = [math.exp(x) for x in (-1.0, -2.0, -9.0)], [math.exp(x) for x in (-3.0, -4.0)]
    assert got["MC1"] == 1.0 and got["MC3"] == pytest.approx(2 / 3)
    assert got["MC2"] == pytest.approx(sum(p_true) / (sum(p_true) + sum(p_false)))
    assert factuality.mc_scores([-5.0, -1.0, -1.0], [-1.0], true, best)["MC1"] == 0.0  # a tie is not above
    # DoLa halves each side's scores until its probabilities are not all zero: -2000 and -1000 both end at
    # -500, so the three true answers get 3/4 of the mass (its quirk, kept).
    halved = factuality.mc_scores([-2000.0, -2000.0, -2000.0], [-1000.0], true, best)
    assert halved["MC2"] == pytest.approx(0.75)


def test_factuality_splits_pairs_as_dola(factuality):
    class Words:  # a tokenizer whose joint and separate tokenizations differ at the boundary
        def __call__(self, text):
            return {"input_ids": [len(w) for w in text.replace(":", ": ").split()]}

    prompt, cont = factuality.dola_pair(Words(), "Q: why\nA:", " because so")
    assert prompt == [2, 3, 2] and cont == [7, 2]
