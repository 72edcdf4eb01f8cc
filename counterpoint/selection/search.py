"""Nearest-neighbour search over a pool's embeddings: exact (torch) or through a faiss index.

Exact search scores a whole batch of queries at once: a chunked matrix product ``(Q, D) @ (D, C)``
per block of the pool and a running top-k merged across blocks, as sentence-transformers'
``semantic_search`` does. It runs on the GPU when there is one. Pool entries a query must not get
back (itself, by id or by identical text) are masked to ``-inf`` inside the blocks, so the result is
exactly the top-k of the allowed entries, equal scores going by index (lowest first), at the k-th
place too.

The faiss backend (``pip install counterpoint[faiss]``) keeps an index next to the pool: ``"flat"``
(exact inner product, returns what exact search returns), ``"hnsw"`` and ``"ivf"`` (approximate).
An approximate index chooses its search parameter (HNSW's ``efSearch``, IVF's ``nprobe``) when it is
built: the smallest value whose recall@k against exact search reaches ``target_recall`` (0.95 by
default), measured with a sample of the pool's rows as queries. The sample is held out while it is
measured and added afterwards, because a row the index already holds finds itself and its graph
neighbours far more easily than a new query (on random vectors an HNSW graph scored 0.95 on its own
rows and 0.4 on new queries). :func:`build_tuned_index` does it and returns an :class:`IndexRecall`;
a fixed ``ef_search`` / ``nprobe`` skips the search but is still measured.

Example:
    >>> q, c = torch.eye(3)[:2], torch.eye(3)
    >>> scores, idx = exact_search(q, c, k=1)
    >>> idx.tolist()
    [[0], [1]]
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_TARGET_RECALL",
    "FaissIndexConfig",
    "IndexRecall",
    "build_faiss_index",
    "build_tuned_index",
    "exact_search",
    "faiss_search",
    "import_faiss",
    "measure_recall",
    "tune_faiss_index",
]

logger = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "hnsw", "ivf")
DEFAULT_TARGET_RECALL = 0.95  # recall@k an approximate index is tuned to reach unless told otherwise


def _exclusion_pairs(exclude: Sequence[Sequence[int]] | None, device: torch.device):
    """Flatten per-query exclusion lists into (query_rows, pool_cols) long tensors."""
    if exclude is None:
        return None
    rows = [q for q, cols in enumerate(exclude) for _ in cols]
    cols = [c for cs in exclude for c in cs]
    if not cols:
        return None
    return (
        torch.tensor(rows, dtype=torch.long, device=device),
        torch.tensor(cols, dtype=torch.long, device=device),
    )


@torch.no_grad()
def exact_search(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    k: int,
    *,
    exclude: Sequence[Sequence[int]] | None = None,
    query_chunk_size: int = 1024,
    corpus_chunk_size: int = 32768,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by inner product (cosine similarity for unit rows), for a batch of queries.

    Args:
        queries: ``(Q, D)`` float tensor.
        corpus: ``(N, D)`` float tensor.
        k: neighbours per query, ``1 <= k <= N``.
        exclude: optional, one list of corpus indices per query that the query must not get back.
        query_chunk_size: queries per block.
        corpus_chunk_size: corpus rows per block; a block's scores take ``Q_chunk * C * 4`` bytes.
        device: where to compute (``None``: CUDA when available, else CPU).

    Returns:
        ``(scores, indices)``, both ``(Q, k)`` on the CPU, sorted by decreasing score, equal scores
        by increasing index (also deciding which of several equal scores make the k-th place). A
        query left with fewer than ``k`` allowed entries gets ``-inf`` scores (and arbitrary
        indices) at the end.
    """
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError(
            f"queries {tuple(queries.shape)} and corpus {tuple(corpus.shape)} must be (Q, D) and (N, D) "
            "with the same D"
        )
    n = corpus.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the corpus size {n}, got {k}")
    for name, size in (("query_chunk_size", query_chunk_size), ("corpus_chunk_size", corpus_chunk_size)):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{name} must be a positive int, got {size!r}")
    dev = torch.device(device) if device is not None else _auto_device()
    corpus = corpus.to(dev, torch.float32)
    pairs = _exclusion_pairs(exclude, dev)
    fetch = min(n, k + _TIE_MARGIN)  # a margin past k, so ties at the k-th place are all in view
    # Any float32 score of a pair is within err of the exact one: D * 2^-24 * |q| * |c|, doubled.
    err_per_norm = 2 * corpus.shape[1] * 2.0**-24 * float(corpus.norm(dim=1).max())
    all_scores, all_idx = [], []
    for qs in range(0, queries.shape[0], query_chunk_size):
        q = queries[qs : qs + query_chunk_size].to(dev, torch.float32)  # (Qc, D)
        q_rows = q_cols = None
        if pairs is not None:
            in_q = (pairs[0] >= qs) & (pairs[0] < qs + q.shape[0])
            q_rows, q_cols = pairs[0][in_q] - qs, pairs[1][in_q]
        best_s = torch.full((q.shape[0], 0), float("-inf"), device=dev)
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=dev)
        for cs in range(0, n, corpus_chunk_size):
            block = _masked_block(q, corpus, cs, corpus_chunk_size, q_rows, q_cols)  # (Qc, C)
            s, i = block.topk(min(fetch, block.shape[1]), dim=1)  # (Qc, <=fetch)
            # Merge this block's best with the running best and keep the top `fetch` of both.
            cat_s = torch.cat([best_s, s], dim=1)
            cat_i = torch.cat([best_i, i + cs], dim=1)
            best_s, pos = cat_s.topk(min(fetch, cat_s.shape[1]), dim=1)
            best_i = cat_i.gather(1, pos)
        # The matrix product rounds a pair's score differently by where the pair sits in the block,
        # so equal vectors may score a rounding apart. Rescore the kept candidates one pair at a
        # time (equal vectors then score exactly equal) and order them by the tie rule: score,
        # then index.
        score = _rescore(q, corpus, best_i, best_s)  # (Qc, fetch)
        score, best_i = _by_score_then_index(score, best_i)
        # An entry left out has a product score <= best_s[:, -1], so a rescore <= that + 2 err:
        # when that is below the k-th kept score, nothing left out can reach or tie it.
        kth = score[:, k - 1]
        floor = best_s[:, -1]
        err = err_per_norm * q.norm(dim=1)  # (Qc,)
        unsure = ((floor + 2 * err >= kth) & (floor > float("-inf"))).nonzero().flatten().tolist()
        for r in unsure:  # rare: more near-ties at the k-th place than the margin holds
            threshold = (kth[r] - 2 * err[r]).item()
            score[r, :k], best_i[r, :k] = _exact_row(q[r], corpus, threshold, r, q_rows, q_cols, k)
        all_scores.append(score[:, :k].cpu())
        all_idx.append(best_i[:, :k].cpu())
    return torch.cat(all_scores), torch.cat(all_idx)


_TIE_MARGIN = 16  # candidates kept past k in exact search, to see ties at the k-th place


def _masked_block(q, corpus, start, size, q_rows, q_cols) -> torch.Tensor:
    """Scores of the queries against ``corpus[start:start + size]``, excluded pairs at ``-inf``."""
    block = q @ corpus[start : start + size].T  # (Qc, C)
    if q_rows is not None:
        in_c = (q_cols >= start) & (q_cols < start + block.shape[1])
        block[q_rows[in_c], q_cols[in_c] - start] = float("-inf")
    return block


def _rescore(q: torch.Tensor, corpus: torch.Tensor, idx: torch.Tensor, approx: torch.Tensor) -> torch.Tensor:
    """``(Qc, F)`` scores of each query with its candidates, each pair reduced on its own, in the
    same order whatever its position (equal vectors score exactly equal); ``-inf`` where
    ``approx`` is (excluded or missing)."""
    step = max(1, 2**21 // max(1, idx.shape[1] * q.shape[1]))  # queries per slice: 8 MiB
    score = torch.cat(
        [
            (corpus[idx[s : s + step]] * q[s : s + step, None, :]).sum(dim=-1)
            for s in range(0, q.shape[0], step)
        ]
    )  # (Qc, F)
    return score.masked_fill(approx == float("-inf"), float("-inf"))


def _by_score_then_index(scores: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    idx, pos = idx.sort(dim=1, stable=True)
    scores, pos2 = scores.gather(1, pos).sort(dim=1, descending=True, stable=True)
    return scores, idx.gather(1, pos2)


def _exact_row(q, corpus, threshold, r, q_rows, q_cols, k) -> tuple[torch.Tensor, torch.Tensor]:
    """One query's exact top k by the tie rule: every entry whose float32 score reaches
    ``threshold`` rescored pair by pair (the rest cannot reach the k-th place)."""
    scores = q[None] @ corpus.T  # (1, N)
    if q_rows is not None:
        scores[0, q_cols[q_rows == r]] = float("-inf")
    cand = (scores[0] >= threshold).nonzero().flatten()[None]  # (1, M), M >= k
    exact = _rescore(q[None], corpus, cand, scores[:, cand[0]])
    exact, cand = _by_score_then_index(exact, cand)
    return exact[0, :k], cand[0, :k]


@dataclass
class FaissIndexConfig:
    """Which faiss index a pool keeps, and its knobs.

    Attributes:
        kind: ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"`` (approximate).
        hnsw_m: HNSW graph degree (faiss' ``M``); more is slower to build, more accurate.
        ef_construction: HNSW build-time beam width.
        ef_search: HNSW search-time beam width. ``None``: the smallest value reaching
            ``target_recall``, measured at build time; an int fixes it (no effect on other kinds).
        nlist: IVF cells; ``None`` picks ``4 * sqrt(N)`` capped so every cell gets 39 training points.
        nprobe: IVF cells visited per query. ``None``: the smallest value reaching
            ``target_recall``; an int fixes it (no effect on other kinds).
        target_recall: recall@``recall_k`` against exact search that ``ef_search`` / ``nprobe`` are
            chosen to reach; ``None`` means 0.95 when they are chosen. Lower trades recall for
            speed. Not to be combined with a fixed ``ef_search`` (hnsw) or ``nprobe`` (ivf).
        recall_k: the ``k`` of the recall measured; tune for the deepest search you run (MMR's
            ``fetch_k``, DPP's ``candidates``, vote-k's ``graph_k``).
        recall_sample: pool rows held out and searched to measure recall (at most a fifth of the
            pool).
        seed: picks the sample.
    """

    kind: str = "flat"
    hnsw_m: int = 32  # faiss' common default for 384-dim text embeddings
    ef_construction: int = 80
    ef_search: int | None = None  # None: tuned to target_recall at build time
    nlist: int | None = None
    nprobe: int | None = None  # None: tuned to target_recall at build time
    target_recall: float | None = None  # None: DEFAULT_TARGET_RECALL when tuning
    recall_k: int = 10  # recall@10, the usual measure; demonstrations are fewer
    recall_sample: int = 1000  # enough for +-0.01 on a recall near 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {list(INDEX_KINDS)}, got {self.kind!r}")
        for name in ("hnsw_m", "ef_construction", "recall_k", "recall_sample"):
            _positive_int(name, getattr(self, name))
        for name in ("ef_search", "nlist", "nprobe"):
            value = getattr(self, name)
            if value is not None:
                _positive_int(name, value)
        if self.target_recall is not None:
            t = self.target_recall
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t <= 1.0:
                raise ValueError(f"target_recall must be in (0, 1] or None, got {t!r}")
            fixed = {"hnsw": "ef_search", "ivf": "nprobe"}.get(self.kind)
            if fixed is not None and getattr(self, fixed) is not None:
                raise ValueError(
                    f"pass either target_recall={t!r} (the {self.kind} index picks {fixed} to reach it) "
                    f"or {fixed}={getattr(self, fixed)!r} (fixed), not both"
                )

    @property
    def search_parameter(self) -> str | None:
        """The knob tuned for recall: ``"ef_search"`` (hnsw), ``"nprobe"`` (ivf), ``None`` (flat)."""
        return {"hnsw": "ef_search", "ivf": "nprobe"}.get(self.kind)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class IndexRecall:
    """How well an approximate index finds the exact neighbours, measured when it was built.

    Attributes:
        recall: mean recall@``k`` against exact search over the sample (ties at the k-th score
            count as found).
        k: neighbours per query measured.
        sample_size: held-out pool rows searched for.
        parameter: ``"ef_search"`` or ``"nprobe"``.
        value: the value the index searches with.
        target: the recall asked for; ``None`` when ``value`` was fixed by the caller.
        reached: ``recall >= target`` (``True`` without a target).
        tried: ``(value, recall)`` of every setting measured, in order: the speed/recall trade-off.
    """

    recall: float
    k: int
    sample_size: int
    parameter: str
    value: int
    target: float | None
    reached: bool
    tried: tuple[tuple[int, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (saved in ``pool.json``)."""
        return {**vars(self), "tried": [list(t) for t in self.tried]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexRecall:
        return cls(**{**data, "tried": tuple((int(v), float(r)) for v, r in data.get("tried", ()))})

    def __str__(self) -> str:
        target = "fixed" if self.target is None else f"target {self.target:.2f}"
        return (
            f"recall@{self.k} {self.recall:.3f} with {self.parameter}={self.value} ({target}, "
            f"measured on {self.sample_size} held-out pool rows)"
        )


def import_faiss() -> Any:
    """Import faiss, or say which extra installs it."""
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss is installed in the dev environment
        raise ImportError(
            "the faiss backend needs faiss; install it with: pip install counterpoint[faiss]"
        ) from err
    return faiss


def build_faiss_index(embeddings: np.ndarray, config: FaissIndexConfig) -> Any:
    """Build an inner-product faiss index over ``embeddings`` ``(N, D)`` float32, row ``i`` as id ``i``.

    The search parameter is ``config``'s when fixed, else faiss' usual value (efSearch 64, nprobe
    16); :func:`build_tuned_index` measures and chooses instead.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = _empty_index(x, config)
    index.add(x)
    return index


def _empty_index(x: np.ndarray, config: FaissIndexConfig) -> Any:
    """The index, trained (IVF) but holding no rows yet."""
    faiss = import_faiss()
    n, d = x.shape
    if config.kind == "flat":
        return faiss.IndexFlatIP(d)
    if config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search or 64
        return index
    nlist = config.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
    if nlist > n:
        raise ValueError(f"nlist={nlist} is larger than the pool ({n} examples); pass a smaller nlist")
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.nprobe = min(config.nprobe or 16, nlist)
    return index


def build_tuned_index(
    embeddings: np.ndarray, config: FaissIndexConfig
) -> tuple[Any, np.ndarray | None, IndexRecall | None]:
    """Build the index, measuring an approximate one's recall and choosing its search parameter.

    A sample of the rows is held out: the index is built over the others, the sample searched as
    queries against exact search over the same rows (a row the index holds would find itself and its
    graph neighbours, and flatter the index), the parameter chosen (:func:`tune_faiss_index`), and
    only then the sample added. The index's ids are then not the row numbers:

    Returns:
        ``(index, ids, recall)``: ``ids[j]`` is the row number of faiss id ``j`` (``None``: the
        same), and the measurement (``None`` for a flat index or a pool too small to sample).
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = _empty_index(x, config)
    n = x.shape[0]
    size = min(config.recall_sample, n // 5)
    if config.search_parameter is None or size < 1 or n - size < 2:
        index.add(x)
        return index, None, None
    held = np.sort(np.random.default_rng(config.seed).choice(n, size=size, replace=False))
    rest = np.setdiff1d(np.arange(n), held)
    index.add(x[rest])
    report = tune_faiss_index(index, x[held], x[rest], config)
    index.add(x[held])
    return index, np.concatenate([rest, held]), report


def set_search_parameter(index: Any, kind: str, value: int) -> int:
    """Set an approximate index's search knob (HNSW ``efSearch``, IVF ``nprobe`` capped at ``nlist``);
    returns the value set."""
    if kind == "hnsw":
        index.hnsw.efSearch = int(value)
        return int(value)
    if kind == "ivf":
        index.nprobe = min(int(value), int(index.nlist))
        return int(index.nprobe)
    raise ValueError(f"a {kind!r} index has no search parameter")


def _ladder(kind: str, index: Any, n: int, k: int) -> list[int]:
    """The values tried when tuning, smallest (fastest) first; the last is the most thorough."""
    if kind == "hnsw":
        # efSearch below k + 1 (the neighbours asked for, self included) is raised to it by faiss.
        top = max(k + 1, min(n, 4096))
        steps = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
        return sorted({min(max(v, k + 1), top) for v in steps} | {k + 1, top})
    nlist = int(index.nlist)
    steps = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
    return sorted({v for v in steps if v < nlist} | {nlist})  # nlist cells: exhaustive, exact


def measure_recall(index: Any, queries: np.ndarray, kth: np.ndarray) -> float:
    """Recall@k of ``index`` against exact search over the same rows.

    Args:
        index: a faiss index.
        queries: ``(S, D)`` rows the index does not hold.
        kth: ``(S, k)`` each query's exact top-k scores over the index's rows, best first.

    Returns:
        The fraction of the exact top-k the index finds; a neighbour whose score ties the exact
        k-th best (to 1e-5) counts as found, so duplicate rows do not lower the recall.
    """
    k = kth.shape[1]
    kth = kth[:, -1]
    scores, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)  # (S, k)
    found = (idx >= 0) & (scores >= kth[:, None] - 1e-5)
    return float(found.sum() / (len(queries) * k))


def tune_faiss_index(
    index: Any, queries: np.ndarray, corpus: np.ndarray, config: FaissIndexConfig
) -> IndexRecall | None:
    """Measure an approximate index's recall and, unless ``config`` fixes it, choose its search
    parameter: the smallest tried whose recall@``recall_k`` reaches the target.

    Logs the outcome (``logging``, at INFO) and warns (``UserWarning``) when no value tried reaches
    the target; the index then keeps the best value tried.

    Args:
        index: an index over ``corpus`` (and nothing else).
        queries: ``(S, D)`` rows to search for, not in ``corpus`` (held-out pool rows).
        corpus: ``(M, D)`` the rows the index holds.
        config: the index's configuration.

    Returns:
        The measurement, also describing the chosen value; ``None`` for a flat (exact) index.
    """
    param = config.search_parameter
    k = min(config.recall_k, corpus.shape[0])
    if param is None:
        return None
    exact, _ = exact_search(torch.from_numpy(queries), torch.from_numpy(corpus), k)
    kth = exact.numpy()  # (S, k)

    fixed = getattr(config, param)
    if fixed is not None:
        value = set_search_parameter(index, config.kind, fixed)
        recall = measure_recall(index, queries, kth)
        report = IndexRecall(recall, k, len(queries), param, value, None, True, ((value, recall),))
        logger.info("faiss %s index: %s", config.kind, report)
        return report

    target = DEFAULT_TARGET_RECALL if config.target_recall is None else float(config.target_recall)
    tried: list[tuple[int, float]] = []
    for v in _ladder(config.kind, index, corpus.shape[0], k):
        value = set_search_parameter(index, config.kind, v)
        tried.append((value, measure_recall(index, queries, kth)))
        if tried[-1][1] >= target:
            break
    value, recall = max(tried, key=lambda t: (t[1], -t[0]))  # the target's first hit, or the best
    if tried[-1][1] >= target:
        value, recall = tried[-1]
    set_search_parameter(index, config.kind, value)
    report = IndexRecall(recall, k, len(queries), param, value, target, recall >= target, tuple(tried))
    if report.reached:
        logger.info("faiss %s index: %s", config.kind, report)
    else:
        message = (
            f"faiss {config.kind} index: recall@{k} reaches only {recall:.3f} (best of {param} up to "
            f"{tried[-1][0]}) against target_recall={target}; "
            + ("raise hnsw_m or ef_construction, " if config.kind == "hnsw" else "use fewer cells (nlist), ")
            + "lower target_recall, or search exactly (drop_index())"
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    return report


def faiss_search(
    index: Any,
    queries: np.ndarray,
    k: int,
    *,
    exclude: Sequence[Sequence[int]] | None = None,
    ids: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k through a faiss index, dropping excluded entries (fetches ``k + len(excluded)``).

    ``ids[j]`` is the row number of faiss id ``j`` (``None``: the same); results and ``exclude``
    are row numbers.

    Returns:
        ``(scores, indices)``, both ``(Q, k)``; missing neighbours (an approximate index may return
        fewer) get score ``-inf`` and index ``-1``.
    """
    extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
    fetch = min(k + extra, index.ntotal)
    x = np.ascontiguousarray(queries, dtype=np.float32)
    scores, idx = index.search(x, fetch)  # (Q, fetch) each
    if ids is not None:
        idx = np.where(idx >= 0, ids[np.maximum(idx, 0)], -1)
    if extra == 0:
        scores = np.where(idx >= 0, scores, -np.inf).astype(np.float32)
        return torch.from_numpy(scores[:, :k].copy()), torch.from_numpy(idx[:, :k].astype(np.int64))
    out_s = np.full((x.shape[0], k), -np.inf, dtype=np.float32)
    out_i = np.full((x.shape[0], k), -1, dtype=np.int64)
    for q in range(x.shape[0]):
        banned = set(exclude[q]) if exclude is not None else ()
        keep = [j for j in range(fetch) if idx[q, j] >= 0 and idx[q, j] not in banned][:k]
        out_s[q, : len(keep)] = scores[q, keep]
        out_i[q, : len(keep)] = idx[q, keep]
    return torch.from_numpy(out_s), torch.from_numpy(out_i)


def _auto_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
