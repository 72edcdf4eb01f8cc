"""The selection methods, one module each; each module's ``SPEC`` is collected by
:mod:`counterpoint.selection.registry`.

=========  ======================================================================
module     method
=========  ======================================================================
knn        ``"knn"``: the k most similar by cosine similarity
mmr        ``"mmr"``: maximal marginal relevance (:func:`mmr_greedy`)
dpp        ``"dpp"``: greedy MAP for a DPP (:func:`dpp_kernel`, :func:`dpp_greedy`)
bm25       ``"bm25"``: BM25 through bm25s (:func:`bm25_rankings`)
random     ``"random"``: seeded uniform draws (:func:`random_rankings`)
vote_k     ``"vote-k"``: the query-independent vote-k order (:class:`VoteK`)
lm         ``"lm"``: the nearest candidates re-ranked by the target model's one-shot score
se2        ``"se2"``: Se²'s beam search over demonstration sequences, scored by the model
=========  ======================================================================

``_lm_feedback`` holds what the two LM-scored methods share (no ``SPEC``: not a method).

Adding a method is one new module here that defines ``SPEC`` (a
:class:`~counterpoint.selection.spec.MethodSpec`), plus its tests: ``select()``, the registry and the
command line find it.

The batched algorithms are re-exported here, where they lived when this was one module.
"""

from counterpoint.selection.methods.bm25 import bm25_full_scores, bm25_rankings
from counterpoint.selection.methods.dpp import DPP_EPSILON, dpp_greedy, dpp_kernel
from counterpoint.selection.methods.mmr import mmr_greedy
from counterpoint.selection.methods.random import random_rankings
from counterpoint.selection.methods.vote_k import VoteK

__all__ = [
    "DPP_EPSILON",
    "VoteK",
    "bm25_full_scores",
    "bm25_rankings",
    "dpp_greedy",
    "dpp_kernel",
    "mmr_greedy",
    "random_rankings",
]
