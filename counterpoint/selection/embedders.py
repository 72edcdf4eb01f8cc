"""Embedders: turn texts into unit-length vectors, the way sentence-transformers' ``encode()`` does.

Anything below plugs into a :class:`~counterpoint.selection.DemoPool`:

* ``None``: the embedded all-MiniLM-L6-v2, loaded on first use;
* a model name or folder (``str``): loaded with :func:`counterpoint.models.load_embedder`;
* a ``SentenceTransformer`` (anything with an ``encode`` method taking sentence-transformers' kwargs);
* any callable from a list of strings to a matrix ``(N, D)`` (numpy, torch or nested lists).

Example:
    >>> emb = Embedder(lambda texts: [[len(t), 1.0] for t in texts])
    >>> emb.encode(["ab", "abcd"]).shape
    (2, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Embedder", "as_embedder"]

# Show a progress bar when one call embeds at least this many texts.
_PROGRESS_THRESHOLD = 2048


class Embedder:
    """A uniform ``encode(texts) -> (N, D) float32`` over sentence-transformers models and callables.

    Args:
        model: see the module docstring for what is accepted.
        batch_size: texts per forward pass (sentence-transformers models) or per call (callables).
        device: ``None`` lets sentence-transformers pick (CUDA when there is one); ignored for callables.
        normalize_embeddings: scale every row to unit length, so dot products are cosine similarities.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        normalize_embeddings: bool = True,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if (
            model is not None
            and not isinstance(model, str)
            and not (callable(model) or hasattr(model, "encode"))
        ):
            raise TypeError(
                f"embedder must be None, a model name, a SentenceTransformer or a callable from a "
                f"list of strings to a matrix; got {type(model).__name__}"
            )
        self._model = model
        self.batch_size = batch_size
        self.device = device
        self.normalize_embeddings = normalize_embeddings

    @property
    def model(self) -> Any:
        """The wrapped model or callable (the default embedder is loaded here, on first use)."""
        if self._model is None or isinstance(self._model, str):
            from counterpoint.models import load_embedder

            self._model = load_embedder(self._model, device=self.device)
        return self._model

    @property
    def name(self) -> str:
        """A short description saved with a pool, so a reader knows which embedder built it."""
        if self._model is None:
            return "all-minilm-l6-v2"
        if isinstance(self._model, str):
            return self._model
        card = getattr(getattr(self._model, "model_card_data", None), "base_model", None)
        return str(card or type(self._model).__name__)

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Embed texts.

        Args:
            texts: one string (gives a vector ``(D,)``) or a list of ``N`` strings (gives ``(N, D)``).
            batch_size: overrides the embedder's ``batch_size`` for this call.
            show_progress_bar: ``None`` shows one for long inputs only.

        Returns:
            ``float32`` array ``(N, D)`` (or ``(D,)`` for one string), unit rows when
            ``normalize_embeddings``.
        """
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        if not batch:
            raise ValueError("texts is empty: nothing to embed")
        if show_progress_bar is None:
            show_progress_bar = len(batch) >= _PROGRESS_THRESHOLD
        batch_size = batch_size or self.batch_size
        model = self.model
        if hasattr(model, "encode") and not isinstance(model, Embedder):
            out = model.encode(
                batch,
                batch_size=batch_size,
                show_progress_bar=show_progress_bar,
                convert_to_numpy=True,
                normalize_embeddings=self.normalize_embeddings,
            )
            matrix = np.asarray(out, dtype=np.float32)
        else:
            matrix = self._call_in_batches(model, batch, batch_size, show_progress_bar)
        if matrix.ndim != 2 or matrix.shape[0] != len(batch):
            raise ValueError(
                f"the embedder returned shape {tuple(matrix.shape)} for {len(batch)} texts; "
                f"expected ({len(batch)}, D)"
            )
        if self.normalize_embeddings:
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.maximum(norms, 1e-12)
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        return matrix[0] if single else matrix

    def _call_in_batches(
        self, fn: Callable[[list[str]], Any], batch: list[str], batch_size: int, progress: bool
    ) -> np.ndarray:
        starts = range(0, len(batch), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Embedding")
        parts = []
        for s in starts:
            out = fn(batch[s : s + batch_size])
            if isinstance(out, torch.Tensor):
                out = out.detach().float().cpu().numpy()
            part = np.asarray(out, dtype=np.float32)
            n = len(batch[s : s + batch_size])
            if part.ndim != 2 or part.shape[0] != n:
                raise ValueError(
                    f"the embedder returned shape {tuple(part.shape)} for {n} texts; expected ({n}, D)"
                )
            parts.append(part)
        return np.concatenate(parts, axis=0)


def as_embedder(embedder: Any = None) -> Embedder:
    """Wrap ``embedder`` (see the module docstring) in an :class:`Embedder`; an ``Embedder`` is kept."""
    return embedder if isinstance(embedder, Embedder) else Embedder(embedder)
