"""Nearest-neighbour search over a pool's embeddings: exact (torch) or through a faiss index.

Exact search scores a whole batch of queries at once: a chunked matrix product ``(Q, D) @ (D, C)``
per block of the pool and a running top-k merged across blocks, as sentence-transformers'
``semantic_search`` does. It runs on the GPU when there is one. Pool entries a query must not get
back (itself, by id or by identical text) are masked to ``-inf`` inside the blocks, so the result is
exactly the top-k of the allowed entries.

The faiss backend (``pip install counterpoint[faiss]``) keeps an index next to the pool: ``"flat"``
(exact inner product, returns what exact search returns), ``"hnsw"`` and ``"ivf"`` (approximate).

Example:
    >>> q, c = torch.eye(3)[:2], torch.eye(3)
    >>> scores, idx = exact_search(q, c, k=1)
    >>> idx.tolist()
    [[0], [1]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["FaissIndexConfig", "build_faiss_index", "exact_search", "faiss_search", "import_faiss"]

INDEX_KINDS = ("flat", "hnsw", "ivf")


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
        ``(scores, indices)``, both ``(Q, k)`` on the CPU, sorted by decreasing score. A query left
        with fewer than ``k`` allowed entries gets ``-inf`` scores (and arbitrary indices) at the end.
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
    all_scores, all_idx = [], []
    for qs in range(0, queries.shape[0], query_chunk_size):
        q = queries[qs : qs + query_chunk_size].to(dev, torch.float32)  # (Qc, D)
        if pairs is not None:
            in_q = (pairs[0] >= qs) & (pairs[0] < qs + q.shape[0])
            q_rows, q_cols = pairs[0][in_q] - qs, pairs[1][in_q]
        best_s = torch.full((q.shape[0], 0), float("-inf"), device=dev)
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long, device=dev)
        for cs in range(0, n, corpus_chunk_size):
            block = q @ corpus[cs : cs + corpus_chunk_size].T  # (Qc, C)
            if pairs is not None:
                in_c = (q_cols >= cs) & (q_cols < cs + block.shape[1])
                block[q_rows[in_c], q_cols[in_c] - cs] = float("-inf")
            s, i = block.topk(min(k, block.shape[1]), dim=1)  # (Qc, <=k)
            # Merge this block's best with the running best and keep the top k of both.
            cat_s = torch.cat([best_s, s], dim=1)
            cat_i = torch.cat([best_i, i + cs], dim=1)
            best_s, pos = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
            best_i = cat_i.gather(1, pos)
        all_scores.append(best_s.cpu())
        all_idx.append(best_i.cpu())
    return torch.cat(all_scores), torch.cat(all_idx)


@dataclass
class FaissIndexConfig:
    """Which faiss index a pool keeps, and its knobs.

    Attributes:
        kind: ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"`` (approximate).
        hnsw_m: HNSW graph degree (faiss' ``M``); more is slower to build, more accurate.
        ef_construction: HNSW build-time beam width.
        ef_search: HNSW search-time beam width; must be at least the ``k`` searched for to be useful.
        nlist: IVF cells; ``None`` picks ``4 * sqrt(N)`` capped so every cell gets 39 training points.
        nprobe: IVF cells visited per query.
    """

    kind: str = "flat"
    hnsw_m: int = 32  # faiss' common default for 384-dim text embeddings
    ef_construction: int = 80
    ef_search: int = 64
    nlist: int | None = None
    nprobe: int = 16

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {list(INDEX_KINDS)}, got {self.kind!r}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.nlist is not None and (not isinstance(self.nlist, int) or self.nlist < 1):
            raise ValueError(f"nlist must be a positive int or None, got {self.nlist!r}")


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
    """Build an inner-product faiss index over ``embeddings`` ``(N, D)`` float32."""
    faiss = import_faiss()
    n, d = embeddings.shape
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if config.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
    else:
        nlist = config.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        if nlist > n:
            raise ValueError(f"nlist={nlist} is larger than the pool ({n} examples); pass a smaller nlist")
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.nprobe = min(config.nprobe, nlist)
    index.add(x)
    return index


def faiss_search(
    index: Any, queries: np.ndarray, k: int, *, exclude: Sequence[Sequence[int]] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k through a faiss index, dropping excluded entries (fetches ``k + len(excluded)``).

    Returns:
        ``(scores, indices)``, both ``(Q, k)``; missing neighbours (an approximate index may return
        fewer) get score ``-inf`` and index ``-1``.
    """
    extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
    fetch = min(k + extra, index.ntotal)
    x = np.ascontiguousarray(queries, dtype=np.float32)
    scores, idx = index.search(x, fetch)  # (Q, fetch) each
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
