"""The amateur model beside a serving engine: one KV cache per request, kept in step with its tokens.

A serving engine (vLLM) owns the expert and tells its logits processors only which request sits in
which batch row and which tokens that request holds so far. :class:`AmateurPool` turns that into the
amateur's next-token logits, one row per request, reusing each request's cache across steps:

* a request that grew by ``n`` tokens since its last step feeds exactly those ``n`` tokens;
* a request whose tokens are unchanged (a chunked prefill seen twice) reuses the logits it has;
* a request whose tokens no longer extend what the cache holds (preempted and resumed, a slot reused
  without notice, draft tokens rolled back) is cropped to the longest common prefix and recomputed
  from there, so the result never depends on the engine announcing every change.

Correctness therefore rests on the tokens alone: the pool compares them with what it has cached.
This module has no vLLM import, so it is tested in the main environment against a full recompute.

Example:
    >>> pool = AmateurPool(amateur_model)
    >>> logits = pool.logits([("req-a", [1, 5, 7]), ("req-b", [1, 9])])   # (2, V)
    >>> logits = pool.logits([("req-a", [1, 5, 7, 3])])                   # feeds one token
    >>> pool.drop("req-b")
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["AmateurPool"]


@dataclass
class _Seq:
    """What the amateur holds for one request."""

    tokens: list[int] = field(default_factory=list)  # token ids the cache covers, in order
    cache: object | None = None  # transformers DynamicCache over `tokens`
    last: torch.Tensor | None = None  # (V,) logits after the last token of `tokens`
    idle: int = 0  # steps since this request was last asked for


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):  # the usual case: one extends the other
        return n
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class AmateurPool:
    """Per-request caches of one amateur causal LM.

    Args:
        model: a transformers causal LM (eval mode, on the device the logits are wanted on).
        max_idle_steps: a request not asked for in this many consecutive :meth:`logits` calls has
            its cache freed (the engine has no "request finished" signal in every interface). If it
            comes back, it is recomputed from its tokens, so this bounds memory, not correctness.
    """

    def __init__(self, model: torch.nn.Module, *, max_idle_steps: int = 64) -> None:
        if max_idle_steps < 1:
            raise ValueError(f"max_idle_steps={max_idle_steps!r} must be >= 1")
        self.model = model
        self.max_idle_steps = max_idle_steps
        self._seqs: dict[Hashable, _Seq] = {}

    def __len__(self) -> int:
        return len(self._seqs)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._seqs

    def drop(self, key: Hashable) -> None:
        """Forget a request (finished, aborted, preempted, or its slot handed to another)."""
        self._seqs.pop(key, None)

    def move(self, src: Hashable, dst: Hashable) -> None:
        """Rename a request's state from ``src`` to ``dst``, replacing whatever ``dst`` held."""
        seq = self._seqs.pop(src, None)
        self._seqs.pop(dst, None)
        if seq is not None:
            self._seqs[dst] = seq

    def swap(self, a: Hashable, b: Hashable) -> None:
        """Exchange the states held under ``a`` and ``b``."""
        sa, sb = self._seqs.pop(a, None), self._seqs.pop(b, None)
        if sa is not None:
            self._seqs[b] = sa
        if sb is not None:
            self._seqs[a] = sb

    def reset(self) -> None:
        """Forget every request."""
        self._seqs.clear()

    @torch.inference_mode()
    def logits(self, rows: Sequence[tuple[Hashable, Sequence[int]]]) -> torch.Tensor:
        """The amateur's next-token logits for each row, after that row's tokens.

        Args:
            rows: ``(key, tokens)`` per row; ``tokens`` is the request's whole sequence so far
                (prompt and output), at least one token. Keys must be distinct.

        Returns:
            ``(len(rows), V_a)`` logits in the model's dtype, on the model's device.
        """
        keys = [key for key, _ in rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"AmateurPool.logits got a key twice in one call: {keys}")
        out = []
        for key, tokens in rows:
            if len(tokens) == 0:
                raise ValueError(f"request {key!r} has no tokens; the amateur needs at least one")
            seq = self._seqs.setdefault(key, _Seq())
            seq.idle = 0
            out.append(self._advance(seq, list(tokens)))
        # Free requests that have not come back for a while (finished ones, in interfaces that
        # never say so). Their tokens would rebuild them, so this is about memory only.
        asked = set(keys)
        for key in [k for k in self._seqs if k not in asked]:
            self._seqs[key].idle += 1
            if self._seqs[key].idle >= self.max_idle_steps:
                del self._seqs[key]
        if not out:
            vocab = self.model.get_output_embeddings().weight.shape[0]
            return torch.empty(0, vocab, device=self._device())
        return torch.stack(out)  # (N, V_a)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _advance(self, seq: _Seq, tokens: list[int]) -> torch.Tensor:
        """Bring ``seq`` to ``tokens`` with the fewest amateur tokens fed; return its last logits."""
        from transformers import DynamicCache

        common = _common_prefix(seq.tokens, tokens)
        if common == len(tokens) == len(seq.tokens) and seq.last is not None:
            return seq.last  # nothing new (e.g. a chunked prefill's logits asked for twice)
        # Keep at most len(tokens) - 1 cached tokens: the last one must be fed to get its logits.
        keep = min(common, len(tokens) - 1)
        if seq.cache is not None and 0 < keep < len(seq.tokens):
            try:
                seq.cache.crop(keep - len(seq.tokens))  # a negative count: drop that many tokens
            except (RuntimeError, ValueError):  # e.g. a sliding-window layer past its window
                seq.cache = None
        if seq.cache is None or keep == 0:
            seq.cache = DynamicCache(config=self.model.config)
            keep = 0
        new = torch.tensor([tokens[keep:]], dtype=torch.long, device=self._device())  # (1, n)
        # No attention mask or positions: the cache holds exactly `keep` tokens of this one
        # sequence, so transformers numbers the new ones keep, keep+1, ... itself.
        out = self.model(input_ids=new, past_key_values=seq.cache, use_cache=True)
        seq.cache = out.past_key_values
        seq.tokens = tokens
        seq.last = out.logits[0, -1]  # (V_a,)
        return seq.last
