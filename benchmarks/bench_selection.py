"""Throughput of batched demonstration selection against LangChain's SemanticSimilarityExampleSelector.

1,000 queries against a 100,000-example pool of random unit vectors (384-dim, like all-MiniLM-L6-v2),
k = 8, on one CPU thread. Every row goes through the public entry point, ``select(pool, queries, k=8)``,
with query "embedding" a table lookup, and LangChain gets the same vectors through an ``Embeddings``
class that looks them up, over an ``InMemoryVectorStore``. LangChain selects one query at a time and
is slow, so it is timed on a subset of the queries (``--langchain-queries``) and its throughput is
extrapolated per query; the script says so in its output.

Run: ``PYTHONPATH=. python benchmarks/bench_selection.py`` (a few minutes). Writes
``benchmarks/results/bench_selection.md``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from counterpoint.selection import DemoPool, select

torch.set_num_threads(1)
try:  # faiss runs OpenMP threads of its own: one, like torch
    import faiss

    faiss.omp_set_num_threads(1)
except ImportError:  # pragma: no cover - the faiss rows then fail with the extra's name
    pass


def unit_rows(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def overlap(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean fraction of shared entries between two top-k lists, over the queries both have."""
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=False)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--langchain-queries", type=int, default=20, help="queries LangChain is timed on")
    ap.add_argument(
        "--indexes", default="flat,hnsw,ivf", help="faiss indexes to time (hnsw takes minutes to build)"
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_selection.md"))
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    pool_mat, q_mat = unit_rows(args.pool, args.dim, rng), unit_rows(args.queries, args.dim, rng)
    texts = [f"d{i}" for i in range(args.pool)]
    qtexts = [f"q{j}" for j in range(args.queries)]
    qrow = {t: j for j, t in enumerate(qtexts)}
    prow = {t: i for i, t in enumerate(texts)}
    records = [{"input": t} for t in texts]
    queries = [{"input": t} for t in qtexts]

    def lookup(batch: list[str]) -> np.ndarray:  # the "embedder": precomputed vectors
        return q_mat[[qrow[t] for t in batch]]

    pool = DemoPool.from_records(records, embeddings=pool_mat, embedder=lookup)
    rows = []

    def run_ours(name: str, build_s: float) -> list[list[int]]:
        select(pool, queries[:8], k=args.k)  # warm up
        t0 = time.perf_counter()
        res = select(pool, queries, k=args.k, order="most_similar_first")
        dt = time.perf_counter() - t0
        idx = [[d["index"] for d in r] for r in res]
        rows.append({"name": name, "build": build_s, "n": args.queries, "qps": args.queries / dt, "idx": idx})
        print(f"{name:<40} {args.queries / dt:10.1f} queries/s", flush=True)
        return idx

    exact = run_ours("counterpoint exact (torch, batched)", 0.0)
    for kind in [x for x in args.indexes.split(",") if x]:
        t0 = time.perf_counter()
        pool.build_index(kind)
        run_ours(f"counterpoint faiss {kind}", time.perf_counter() - t0)
    pool.drop_index()

    # LangChain, one query at a time, over the same vectors.
    from langchain_core.embeddings import Embeddings
    from langchain_core.example_selectors import SemanticSimilarityExampleSelector
    from langchain_core.vectorstores import InMemoryVectorStore

    class Precomputed(Embeddings):
        """The benchmark's vectors, as lists of floats (the ``Embeddings`` interface's return type)."""

        def embed_documents(self, batch: list[str]) -> list[list[float]]:
            return pool_mat[[prow[t] for t in batch]].tolist()

        def embed_query(self, text: str) -> list[float]:
            return q_mat[qrow[text]].tolist()

    t0 = time.perf_counter()
    lc = SemanticSimilarityExampleSelector.from_examples(
        records, Precomputed(), InMemoryVectorStore, k=args.k, input_keys=["input"]
    )
    lc_build = time.perf_counter() - t0
    n_lc = min(args.langchain_queries, args.queries)
    lc.select_examples(queries[0])  # warm up
    t0 = time.perf_counter()
    lc_idx = [[prow[e["input"]] for e in lc.select_examples(q)] for q in queries[:n_lc]]
    lc_dt = time.perf_counter() - t0
    lc_qps = n_lc / lc_dt
    print(f"{'LangChain SemanticSimilarityExampleSelector':<40} {lc_qps:10.2f} queries/s ({n_lc} queries)")

    header = (
        f"Pool {args.pool:,} x {args.dim} random unit vectors, {args.queries:,} queries, k = {args.k}, "
        f"1 CPU thread ({platform.processor() or platform.machine()}), torch {torch.__version__}. "
        f"LangChain (InMemoryVectorStore, one query at a time) was timed on the first {n_lc} queries "
        "and its queries/s extrapolated per query; top-k overlap is measured on those queries."
    )
    lines = [
        header,
        "",
        "| selector | index build (s) | queries timed | queries/s | x LangChain | top-k overlap with exact | top-k overlap with LangChain |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['build']:.1f} | {r['n']:,} | {r['qps']:,.1f} | {r['qps'] / lc_qps:,.0f}x | "
            f"{overlap(r['idx'], exact):.3f} | {overlap(r['idx'][:n_lc], lc_idx):.3f} |"
        )
    lines.append(
        f"| LangChain SemanticSimilarityExampleSelector | {lc_build:.1f} | {n_lc:,} | {lc_qps:,.2f} | 1x | "
        f"{overlap(lc_idx, exact[:n_lc]):.3f} | 1.000 |"
    )
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
