"""The benchmark scripts' verdict logic and their few-shot path, with stand-ins for modules built elsewhere."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

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
    args = selection.parse_args([])
    rows = selection.methods(args)
    cell = selection.Cell
    cells = {  # accuracy per split; one query of 24 is 4.2 points
        "zero-shot": cell(accuracies=[0.75, 0.70, 0.80]),
        "random": cell(accuracies=[0.60, 0.64, 0.62]),
        "knn": cell(accuracies=[0.66, 0.64, 0.68]),  # +4.0 over random: not by more than one query
        "mmr": cell(accuracies=[0.66, 0.67, 0.68]),  # +5.0: beyond random's spread and one query
        "lm": cell(accuracies=[0.75, 0.71, 0.80]),  # zero-shot's, split by split, on average
        "lm-labels": cell(accuracies=[0.74, 0.69, 0.78]),  # below zero-shot, above MMR by [8, 2, 10]
        "se2": cell(accuracies=[0.66, 0.60, 0.70]),  # below both
    }
    lines = selection.verdicts(selection.TASKS["imdb"], rows, cells, 24, args)
    text = "\n".join(lines)
    assert (
        "- **kNN**: not as the papers claim: 66.0 ± 2.0% against random's 62.0 ± 2.0% (+4.0 points; one query "
        "is 4.2 points)." in text
    )
    assert "- **MMR**: as the papers claim: 67.0 ± 1.0% against random's 62.0 ± 2.0% (+5.0 points" in text
    label = {name: rows[name].label for name in ("lm", "lm-labels", "se2")}
    assert (
        f"- **{label['lm']}**: closes the gap to zero-shot: 75.3 ± 4.5% against zero-shot's 75.0 ± 5.0% "
        "(paired difference +0.3 ± 0.6 points); against MMR" in text
    )
    assert f"- **{label['lm-labels']}**: narrows the gap but does not close it:" in text
    assert f"- **{label['se2']}**: does not close the gap:" in text
    assert "here, training-free on a 135M model: +5% relative (65.3 ± 5.0% against 62.0 ± 2.0%)" in text


@pytest.mark.slow
def test_selection_script_runs_every_row_end_to_end(selection, tmp_path):
    """The report on the embedded models, two queries per split: every row runs and lands in the tables."""
    out = tmp_path / "selection.md"
    selection.main(
        ["--tasks", "imdb,csqa", "--splits", "2", "--limit", "2", "--k", "2", "--lm-candidates", "3",
         "--se2-candidates", "3", "--beam-size", "2", "--out", str(out)]
    )  # fmt: skip
    report = out.read_text()
    assert "failed" not in report
    tables = [line for line in report.splitlines() if line.startswith("| ")]
    assert tables[0].startswith(
        "| demonstrations | accuracy, k = 2 (mean ± sd over 2 splits) | demo label match"
    )
    args = selection.parse_args(["--lm-candidates", "3", "--se2-candidates", "3", "--beam-size", "2"])
    rows = selection.methods(args)
    for name in args.methods:  # every default row (lm-labels runs on request)
        row = rows[name]
        got = [line for line in tables if line.startswith(f"| {row.label} | ")]
        assert len(got) == 2, (name, got)  # IMDb and CommonsenseQA
    assert "## In short" in report and "CommonsenseQA" in report


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
