"""Evaluation: the metrics the contrastive-decoding and demonstration-selection papers report.

* :mod:`counterpoint.eval.metrics`: rep-n, diversity, coherence, MAUVE (``eval`` extra).
* :mod:`counterpoint.eval.classify`: few-shot accuracy by verbalizer scoring or exact match.
* :mod:`counterpoint.eval.data`: evaluation sets read from an installed wheel (no download).
"""

from counterpoint.eval.classify import (
    accuracy,
    continuation_logprobs,
    exact_match,
    generate_labels,
    normalize_label,
    verbalizer_predict,
    verbalizer_scores,
)
from counterpoint.eval.data import (
    DataNotInstalledError,
    OpenEndedExample,
    TruthfulQAQuestion,
    commonsense_qa_split,
    imdb_split,
    load_commonsense_qa,
    load_imdb,
    load_truthfulqa,
    load_truthfulqa_mc,
    load_xsum_documents,
    open_ended_examples,
)
from counterpoint.eval.metrics import (
    MauveResult,
    coherence,
    coherence_scores,
    diversity,
    mauve_score,
    rep_n,
    repetition,
)

__all__ = [
    "DataNotInstalledError",
    "MauveResult",
    "OpenEndedExample",
    "TruthfulQAQuestion",
    "accuracy",
    "coherence",
    "coherence_scores",
    "commonsense_qa_split",
    "continuation_logprobs",
    "diversity",
    "exact_match",
    "generate_labels",
    "imdb_split",
    "load_commonsense_qa",
    "load_imdb",
    "load_truthfulqa",
    "load_truthfulqa_mc",
    "load_xsum_documents",
    "mauve_score",
    "normalize_label",
    "open_ended_examples",
    "rep_n",
    "repetition",
    "verbalizer_predict",
    "verbalizer_scores",
]
