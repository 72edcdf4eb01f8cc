"""A pool of demonstrations: the records, the text embedded for each, its label, and the embeddings.

Example:
    >>> pool = DemoPool.from_records(
    ...     [{"input": "2+2", "output": "4"}, {"input": "3+3", "output": "6"}],
    ...     text_keys=("input",), embeddings=[[1.0, 0.0], [0.0, 1.0]])
    >>> len(pool), pool.dim
    (2, 2)
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from counterpoint.io import iter_jsonl_lines
from counterpoint.selection.embedders import Embedder, as_embedder
from counterpoint.selection.search import (
    FaissIndexConfig,
    IndexRecall,
    build_tuned_index,
    exact_search,
    faiss_search,
    import_faiss,
    set_search_parameter,
)

__all__ = ["DemoPool", "join_text"]

_FORMAT_VERSION = 2  # 2: pool.json holds the index's measured recall ("index_recall")
_READABLE_VERSIONS = (1, 2)
_LABEL_TYPES = (str, int, float, bool)


def join_text(record: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The text embedded for a record: its ``keys``' values, joined by newlines in the given order."""
    return "\n".join(str(record[key]) for key in keys)


def _normalize_keys(text_keys: str | Sequence[str], name: str = "text_keys") -> tuple[str, ...]:
    keys = (text_keys,) if isinstance(text_keys, str) else tuple(text_keys)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError(f"{name} must be a non-empty string or sequence of strings, got {text_keys!r}")
    return keys


def _where(position: int, line_numbers: Sequence[int] | None, source: str | None) -> str:
    if line_numbers is not None:
        return f"{source}: line {line_numbers[position]}"
    return f"record {position}"


def _check_records(
    records: Sequence[Any],
    text_keys: tuple[str, ...],
    label_key: str | None,
    *,
    line_numbers: Sequence[int] | None = None,
    source: str | None = None,
) -> None:
    """Raise on the first record that is not a dict, lacks a key, or holds a value of the wrong type."""
    for pos, record in enumerate(records):
        where = _where(pos, line_numbers, source)
        if not isinstance(record, Mapping):
            raise ValueError(
                f"{where}: each example must be a JSON object (dict), got {type(record).__name__}"
            )
        for key in text_keys:
            if key not in record:
                raise ValueError(
                    f"{where}: missing text key {key!r} (text_keys={list(text_keys)}); "
                    f"the example has keys {sorted(record)}"
                )
            if not isinstance(record[key], str):
                raise ValueError(
                    f"{where}: text key {key!r} must hold a string, got {type(record[key]).__name__}"
                )
        if label_key is not None:
            if label_key not in record:
                raise ValueError(
                    f"{where}: missing label key {label_key!r}; the example has keys {sorted(record)}"
                )
            if not isinstance(record[label_key], _LABEL_TYPES):
                raise ValueError(
                    f"{where}: label key {label_key!r} must hold a string, number or bool, "
                    f"got {type(record[label_key]).__name__}"
                )


def _read_rows(path: str | os.PathLike[str]) -> tuple[list[Any], list[int]]:
    numbered = list(iter_jsonl_lines(path, what="pool"))
    return [row for _, row in numbered], [lineno for lineno, _ in numbered]


def check_finite(matrix: np.ndarray, source: str, names: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` naming the rows of ``matrix`` that hold NaN or inf.

    Args:
        matrix: ``(N, D)`` embeddings.
        source: what they come from, for the message (``"embeddings="``, ``"the embedder"``).
        names: how to name row ``i`` (``"record 3"``, ``"line 4"``); default ``"row i"``.
    """
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        shown = [names[i] if names is not None else f"row {i}" for i in bad[:10].tolist()]
        more = f" and {bad.size - 10} more" if bad.size > 10 else ""
        raise ValueError(
            f"{source} gave NaN or inf in {bad.size} of {matrix.shape[0]} rows: {', '.join(shown)}{more}; "
            "every similarity with them would be NaN. Fix or drop those rows (or the embedder)"
        )


class DemoPool:
    """Demonstrations with their embeddings; build with :meth:`from_records` or :meth:`from_jsonl`.

    Attributes:
        records: the examples, as given (each a dict).
        texts: the text embedded for each example (``text_keys`` joined by newlines).
        embeddings: ``(N, D)`` float32 CPU tensor of unit rows.
        text_keys: the keys embedded (the input, not the answer, unless asked).
        label_key: the key holding the label, or ``None``.
        id_key: the key holding an example's id (used for self-exclusion), or ``None``.
        embedder: embeds texts added later and the queries.
        index_config: the faiss index's configuration, or ``None`` for exact search.
        index_recall: an approximate index's recall against exact search, measured when it was
            built (:class:`~counterpoint.selection.search.IndexRecall`); ``None`` for exact search
            and a flat index.
    """

    def __init__(
        self,
        records: list[dict[str, Any]],
        embeddings: torch.Tensor,
        *,
        text_keys: tuple[str, ...],
        label_key: str | None,
        id_key: str | None,
        embedder: Embedder,
    ) -> None:
        self.records = records
        self.embeddings = embeddings
        self.text_keys = text_keys
        self.label_key = label_key
        self.id_key = id_key
        self.embedder = embedder
        self.texts = [join_text(r, text_keys) for r in records]
        self.index: Any = None
        self.index_config: FaissIndexConfig | None = None
        self.index_recall: IndexRecall | None = None
        self._index_ids: np.ndarray | None = None  # row number of each faiss id (None: the same)
        self._invalidate()

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        text_keys: str | Sequence[str] = ("input",),
        label_key: str | None = None,
        embedder: Any = None,
        *,
        id_key: str | None = "id",
        embeddings: Any = None,
        show_progress_bar: bool | None = None,
        _line_numbers: Sequence[int] | None = None,
        _source: str | None = None,
    ) -> DemoPool:
        """Build a pool from a list of dicts, embedding ``text_keys`` once, in batches.

        Args:
            records: the examples.
            text_keys: the key(s) whose values are embedded (joined by newlines).
            label_key: the key holding the label (needed for ``balance_labels``), or ``None``.
            embedder: ``None`` (all-MiniLM-L6-v2), a model name, a SentenceTransformer, a callable
                from a list of strings to a matrix, or an :class:`Embedder`.
            id_key: records and queries sharing a value under this key are the same example (a query
                never gets it back). ``None`` turns this off; records without the key are fine.
            embeddings: precomputed ``(N, D)`` embeddings instead of running the embedder (rows are
                normalised to unit length).
            show_progress_bar: ``None`` shows one for long pools only.
        """
        text_keys = _normalize_keys(text_keys)
        if label_key is not None and not isinstance(label_key, str):
            raise ValueError(f"label_key must be a string or None, got {label_key!r}")
        records = list(records)
        if not records:
            where = f"{_source} holds no examples" if _source else "records is empty"
            raise ValueError(f"the pool is empty: {where}; a pool needs at least one example")
        _check_records(records, text_keys, label_key, line_numbers=_line_numbers, source=_source)
        emb = as_embedder(embedder)
        texts = [join_text(r, text_keys) for r in records]
        names = (
            [f"{_source}: line {n}" for n in _line_numbers]
            if _line_numbers is not None
            else [f"record {i}" for i in range(len(records))]
        )
        if embeddings is not None:
            matrix = cls._to_matrix(embeddings, len(records), names)
        else:
            matrix = emb.encode(texts, show_progress_bar=show_progress_bar)
            check_finite(matrix, f"the embedder ({emb.name})", names)
        return cls(
            [dict(r) for r in records],
            torch.from_numpy(matrix),
            text_keys=text_keys,
            label_key=label_key,
            id_key=id_key,
            embedder=emb,
        )

    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike[str],
        text_keys: str | Sequence[str] = ("input",),
        label_key: str | None = None,
        embedder: Any = None,
        **kwargs: Any,
    ) -> DemoPool:
        """Build a pool from a JSONL file (one JSON object a line); errors name the line.

        Takes the same arguments as :meth:`from_records`.
        """
        rows, lines = _read_rows(path)
        return cls.from_records(
            rows, text_keys, label_key, embedder, _line_numbers=lines, _source=str(path), **kwargs
        )

    @staticmethod
    def _to_matrix(embeddings: Any, n: int, names: Sequence[str] | None = None) -> np.ndarray:
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().float().cpu().numpy()
        matrix = np.asarray(embeddings, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != n:
            raise ValueError(
                f"embeddings must have shape ({n}, D) for {n} records, got {tuple(matrix.shape)}"
            )
        check_finite(matrix, "embeddings=", names)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)

    # ---------------------------------------------------------------- basic facts

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        index = self.index_config.kind if self.index_config else "exact"
        return (
            f"DemoPool(size={len(self)}, dim={self.dim}, text_keys={list(self.text_keys)}, "
            f"label_key={self.label_key!r}, search={index!r})"
        )

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.embeddings.shape[1])

    @property
    def labels(self) -> list[Any] | None:
        """Each example's label, or ``None`` when the pool has no ``label_key``."""
        if self.label_key is None:
            return None
        return [r[self.label_key] for r in self.records]

    def _invalidate(self) -> None:
        self._by_text: dict[str, list[int]] | None = None
        self._by_id: dict[Any, list[int]] | None = None
        self._device_embeddings: torch.Tensor | None = None
        self.cache: dict[Any, Any] = {}  # selectors keep per-pool state here (BM25 index, vote-k order)

    def indices_with_text(self, text: str) -> list[int]:
        """Indices of examples whose embedded text is exactly ``text``."""
        if self._by_text is None:
            self._by_text = {}
            for i, t in enumerate(self.texts):
                self._by_text.setdefault(t, []).append(i)
        return self._by_text.get(text, [])

    def indices_with_id(self, value: Any) -> list[int]:
        """Indices of examples whose ``id_key`` holds ``value``."""
        if self.id_key is None:
            return []
        if self._by_id is None:
            self._by_id = {}
            for i, r in enumerate(self.records):
                if self.id_key in r:
                    self._by_id.setdefault(_hashable(r[self.id_key]), []).append(i)
        return self._by_id.get(_hashable(value), [])

    # ---------------------------------------------------------------- growth

    def add(self, records: Iterable[Mapping[str, Any]], *, embeddings: Any = None) -> list[int]:
        """Append examples (embedded now, and added to the faiss index if there is one).

        An approximate index keeps the search parameter chosen at build time (and its
        :attr:`index_recall`, measured then); rebuild it after large additions to re-tune.

        Returns:
            The new examples' indices.
        """
        records = list(records)
        if not records:
            return []
        _check_records(records, self.text_keys, self.label_key)
        texts = [join_text(r, self.text_keys) for r in records]
        names = [f"new record {i}" for i in range(len(records))]
        if embeddings is not None:
            matrix = self._to_matrix(embeddings, len(records), names)
        else:
            matrix = self.embedder.encode(texts)
            check_finite(matrix, f"the embedder ({self.embedder.name})", names)
        if matrix.shape[1] != self.dim:
            raise ValueError(
                f"the new examples' embeddings have dimension {matrix.shape[1]} but the pool's have "
                f"{self.dim}; embed them with the embedder that built the pool"
            )
        start = len(self)
        self.records.extend(dict(r) for r in records)
        self.texts.extend(texts)
        self.embeddings = torch.cat([self.embeddings, torch.from_numpy(matrix)])
        if self.index is not None:
            self.index.add(np.ascontiguousarray(matrix))
            if self._index_ids is not None:
                self._index_ids = np.concatenate([self._index_ids, np.arange(start, len(self))])
        self._invalidate()
        return list(range(start, len(self)))

    # ---------------------------------------------------------------- search

    def build_index(self, kind: str = "flat", **params: Any) -> DemoPool:
        """Search through a faiss index from now on (``kind`` in ``"flat"``, ``"hnsw"``, ``"ivf"``).

        An approximate index (hnsw, ivf) measures its recall against exact search on a sample of the
        pool's rows and picks the fastest search parameter reaching ``target_recall`` (0.95 by
        default); :attr:`index_recall` holds the result, and a warning says when the target cannot
        be reached. ``params`` are :class:`~counterpoint.selection.search.FaissIndexConfig` fields:
        ``target_recall=0.8`` trades recall for speed, ``ef_search=`` / ``nprobe=`` fix the
        parameter (still measured). Needs ``pip install counterpoint[faiss]``. Returns the pool.

        Example:
            >>> pool.build_index("hnsw", target_recall=0.9)          # doctest: +SKIP
            >>> pool.index_recall.recall, pool.index_recall.value    # doctest: +SKIP
            (0.93, 48)
        """
        config = FaissIndexConfig(kind=kind, **params)
        index, ids, recall = build_tuned_index(self.embeddings.numpy(), config)
        self.index, self.index_config, self.index_recall, self._index_ids = index, config, recall, ids
        self._deep_search_warned = False
        return self

    def drop_index(self) -> DemoPool:
        """Go back to exact torch search."""
        self.index, self.index_config, self.index_recall, self._index_ids = None, None, None, None
        return self

    def embed_queries(self, texts: Sequence[str], *, batch_size: int | None = None) -> torch.Tensor:
        """Embed query texts with the pool's embedder: ``(Q, D)`` float32."""
        raw = self.embedder.encode(list(texts), batch_size=batch_size)
        return self.check_query_embeddings(raw, argument=f"the embedder ({self.embedder.name})")

    def check_query_embeddings(self, embeddings: Any, *, argument: str = "queries") -> torch.Tensor:
        """Turn query embeddings into a ``(Q, D)`` float32 tensor of unit rows, checking ``D``.

        Raises:
            ValueError: a wrong dimension, or rows holding NaN or inf (named, with ``argument``,
                what they came from).
        """
        if not isinstance(embeddings, torch.Tensor):
            embeddings = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
        embeddings = embeddings.detach().float().cpu()
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"query embeddings have shape {tuple(embeddings.shape)} but the pool's embeddings have "
                f"dimension {self.dim}; embed queries with the embedder that built the pool"
            )
        check_finite(embeddings.numpy(), argument, [f"query {i}" for i in range(embeddings.shape[0])])
        return torch.nn.functional.normalize(embeddings, dim=1)

    def search(
        self,
        queries: torch.Tensor,
        k: int,
        *,
        exclude: Sequence[Sequence[int]] | None = None,
        subset: Sequence[int] | None = None,
        query_chunk_size: int = 1024,
        corpus_chunk_size: int = 32768,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k pool entries for each query: faiss when the pool has an index, else exact.

        Args:
            queries: ``(Q, D)`` unit rows.
            k: neighbours per query.
            exclude: per query, pool indices it must not get back.
            subset: search only these pool indices (always exact; used for per-label search).
            query_chunk_size, corpus_chunk_size: block sizes of the exact search.

        Returns:
            ``(scores, indices)`` ``(Q, k)`` with pool indices; where fewer than ``k`` entries are
            allowed the tail has score ``-inf``.
        """
        queries = self.check_query_embeddings(queries)
        if subset is not None:
            sub = torch.as_tensor(list(subset), dtype=torch.long)
            pos = {int(p): j for j, p in enumerate(sub.tolist())}
            sub_excl = None
            if exclude is not None:
                sub_excl = [[pos[i] for i in e if i in pos] for e in exclude]
            kk = min(k, len(sub))
            s, i = exact_search(
                queries,
                self._on_device()[sub.to(self._on_device().device)],
                kk,
                exclude=sub_excl,
                query_chunk_size=query_chunk_size,
                corpus_chunk_size=corpus_chunk_size,
            )
            return s, sub[i]
        if self.index is not None:
            self._warn_if_deeper_than_measured(k)
            return faiss_search(
                self.index, queries.numpy(), min(k, len(self)), exclude=exclude, ids=self._index_ids
            )
        return exact_search(
            queries,
            self._on_device(),
            min(k, len(self)),
            exclude=exclude,
            query_chunk_size=query_chunk_size,
            corpus_chunk_size=corpus_chunk_size,
        )

    def _warn_if_deeper_than_measured(self, k: int) -> None:
        report = self.index_recall
        if report is None or k <= report.k or getattr(self, "_deep_search_warned", False):
            return
        self._deep_search_warned = True
        warnings.warn(
            f"this search asks the faiss {self.index_config.kind} index for {k} neighbours, but its "
            f"recall was measured at k={report.k} ({report.recall:.3f}) and may be lower this deep; "
            f"build_index(..., recall_k={k}) tunes it for {k}",
            UserWarning,
            stacklevel=4,
        )

    def _on_device(self) -> torch.Tensor:
        # Keep one copy of the embeddings on the search device (the GPU when there is one).
        if self._device_embeddings is None:
            dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            self._device_embeddings = self.embeddings.to(dev)
        return self._device_embeddings

    # ---------------------------------------------------------------- persistence

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``pool.json``, ``records.jsonl``, ``embeddings.npy`` (and ``index.faiss``, with
        ``index_ids.npy`` when the index holds the rows in another order) to ``directory``.

        ``pool.json`` keeps the index's configuration and measured recall, so :meth:`load` gives
        back the same search parameter without measuring again.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": _FORMAT_VERSION,
            "size": len(self),
            "dim": self.dim,
            "text_keys": list(self.text_keys),
            "label_key": self.label_key,
            "id_key": self.id_key,
            "embedder": self.embedder.name,
            "index": None if self.index_config is None else vars(self.index_config),
            "index_recall": None if self.index_recall is None else self.index_recall.to_dict(),
        }
        with open(out / "records.jsonl", "w", encoding="utf-8") as f:
            for r in self.records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        np.save(out / "embeddings.npy", self.embeddings.numpy())
        for stale in ("index.faiss", "index_ids.npy"):
            if (out / stale).exists():
                (out / stale).unlink()
        if self.index is not None:
            import_faiss().write_index(self.index, str(out / "index.faiss"))
            if self._index_ids is not None:
                np.save(out / "index_ids.npy", self._index_ids)
        (out / "pool.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], embedder: Any = None) -> DemoPool:
        """Load a pool written by :meth:`save`.

        Args:
            directory: the folder :meth:`save` wrote.
            embedder: the embedder for queries and later additions; pass the one that built the pool
                (its name is in ``pool.json``). ``None`` uses all-MiniLM-L6-v2.
        """
        src = Path(directory)
        if not (src / "pool.json").is_file():
            raise FileNotFoundError(f"{src} holds no pool.json; is it a folder written by DemoPool.save?")
        meta = json.loads((src / "pool.json").read_text(encoding="utf-8"))
        if meta.get("format_version") not in _READABLE_VERSIONS:
            raise ValueError(
                f"{src}/pool.json has format_version {meta.get('format_version')!r}; "
                f"this version reads {' and '.join(map(str, _READABLE_VERSIONS))}"
            )
        records, _ = _read_rows(src / "records.jsonl")
        matrix = np.load(src / "embeddings.npy")
        check_finite(matrix, f"{src}/embeddings.npy", [f"row {i}" for i in range(matrix.shape[0])])
        if matrix.shape != (meta["size"], meta["dim"]) or len(records) != meta["size"]:
            raise ValueError(
                f"{src} is inconsistent: pool.json says {meta['size']} x {meta['dim']}, found "
                f"{len(records)} records and embeddings {matrix.shape}"
            )
        pool = cls(
            records,
            torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)),
            text_keys=tuple(meta["text_keys"]),
            label_key=meta["label_key"],
            id_key=meta["id_key"],
            embedder=as_embedder(embedder),
        )
        if meta["index"] is not None:
            pool.index = import_faiss().read_index(str(src / "index.faiss"))
            if (src / "index_ids.npy").is_file():
                pool._index_ids = np.load(src / "index_ids.npy")
            pool.index_config = config = FaissIndexConfig(**meta["index"])
            if meta.get("index_recall") is not None:
                pool.index_recall = IndexRecall.from_dict(meta["index_recall"])
            # The search knob, set again in case the index file did not keep it: the value chosen
            # at build time, else (format 1) the configured one.
            param = config.search_parameter
            value = pool.index_recall.value if pool.index_recall is not None else None
            if param is not None and (value or getattr(config, param)):
                set_search_parameter(pool.index, config.kind, value or getattr(config, param))
        return pool


def __getattr__(name: str) -> Any:
    # Deprecated names, kept one release.
    if name == "read_jsonl":
        warnings.warn(
            "counterpoint.selection.pool.read_jsonl is deprecated and will be removed in the next "
            "release; use counterpoint.io.iter_jsonl_lines (line numbers and rows) or counterpoint.io.read_jsonl",
            DeprecationWarning,
            stacklevel=2,
        )
        return _read_rows
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True)
    return value
