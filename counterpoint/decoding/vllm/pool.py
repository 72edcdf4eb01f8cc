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

Decode steps are batched. The requests that grew by exactly one token since their last step (the
steady state of serving) go through ONE amateur forward of ``(R, 1)`` tokens over a persistent
batched cache: each request is a row, left-padded to the longest, with a 2-D attention mask that
hides the padding and per-row position ids equal to that request's own length. The batch is only
rebuilt when the set of such requests changes (one joins, finishes, diverges or skips a step); in
the steady state nothing is copied beyond the cache's own append. Prefill of joining requests,
growth by several tokens and recomputation after a rollback run per request, as do all requests
when the model's cache has layers other than plain full attention (sliding window, recurrent).
Padding never changes a result: padded keys get zero attention weight, and every real key keeps
the rotary/learned position it was computed at.

Host-device synchronisation: a steady decode step reads nothing back from the device. With token
lists (:meth:`AmateurPool.logits`, vLLM's V1 runner, whose tokens are on the host anyway) the new
tokens go to the device in one non-blocking copy. With the tokens on the device (:meth:`AmateurPool.step`,
Model Runner V2, which keeps them there), the requests that grew by one token (told by their lengths,
which the host knows) are fed the device tokens as they are; the pool learns their values only when it
needs them (a request that did not grow by one token, or the batch changing), in one copy for all.
This module has no vLLM import, so it is tested in the main environment against a full recompute. The
caches are :class:`~counterpoint.decoding.engine.AmateurCache` objects, the same mechanism the
transformers path uses.

Example:
    >>> pool = AmateurPool(amateur_model)
    >>> logits = pool.logits([("req-a", [1, 5, 7]), ("req-b", [1, 9])])   # (2, V)
    >>> logits = pool.logits([("req-a", [1, 5, 7, 3])])                   # feeds one token
    >>> pool.drop("req-b")
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch

from counterpoint import _hf
from counterpoint.decoding.engine import AmateurCache

__all__ = ["AmateurPool"]


@dataclass
class _Seq:
    """What the amateur holds for one request."""

    tokens: list[int] = field(default_factory=list)  # token ids the cache covers, in order (see pending)
    # (1,) device tokens fed by step() outside the batch and not read back yet; they follow `tokens`. A
    # batch member's later ones are in its batch's `pending`.
    pending: list[torch.Tensor] = field(default_factory=list)
    own: AmateurCache | None = None  # its own single-row cache over `tokens` (None while batched)
    row: int | None = None  # its row in the pool's batched cache instead, while it is a member
    last: torch.Tensor | None = None  # (V,) logits after the last token of `tokens`
    idle: int = 0  # steps since this request was last asked for


@dataclass
class _Batch:
    """The decoding requests' caches stacked into one left-padded cache; row ``r`` is ``seqs[r]``.

    A member dropped from the pool stays here until the next rebuild (its row is then discarded).
    """

    seqs: list[_Seq]  # one per row
    amateur: AmateurCache
    # (R,) device tokens fed by step() and not read back yet, one per step; every member's `unread`.
    pending: list[torch.Tensor] = field(default_factory=list)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):  # the usual case: one extends the other
        return n
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class AmateurPool:
    """Per-request caches of one amateur causal LM, decode steps batched across requests.

    Args:
        model: a transformers causal LM (eval mode, on the device the logits are wanted on).
        max_idle_steps: a request not asked for in this many consecutive :meth:`logits` calls has
            its cache freed (the engine has no "request finished" signal in every interface). If it
            comes back, it is recomputed from its tokens, so this bounds memory, not correctness.
        batch_decode: run the requests that each need one new token through one batched forward
            (the default). ``False`` runs one forward per request, as a reference or a fallback. It
            has no effect for models whose cache is not plain full attention (always per request).
    """

    def __init__(
        self, model: torch.nn.Module, *, max_idle_steps: int = 64, batch_decode: bool = True
    ) -> None:
        if max_idle_steps < 1:
            raise ValueError(f"max_idle_steps={max_idle_steps!r} must be >= 1")
        self.model = model
        self.max_idle_steps = max_idle_steps
        self._seqs: dict[Hashable, _Seq] = {}
        self._batch: _Batch | None = None
        # Rows can be padded and stacked only when every cache layer keeps all keys of full attention.
        self.batch_decode = batch_decode and _hf.is_plain_cache(model)

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
        self._batch = None

    @torch.inference_mode()
    def logits(self, rows: Sequence[tuple[Hashable, Sequence[int]]]) -> torch.Tensor:
        """The amateur's next-token logits for each row, after that row's tokens.

        Args:
            rows: ``(key, tokens)`` per row; ``tokens`` is the request's whole sequence so far
                (prompt and output), at least one token. Keys must be distinct.

        Returns:
            ``(len(rows), V_a)`` logits in the model's dtype, on the model's device. Rows that grew
            by one token since their last call share one forward; the others run one each.
        """
        keys = [key for key, _ in rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"AmateurPool.logits got a key twice in one call: {keys}")
        self._settle()  # token lists are compared below: read back what step() left on the device
        seqs, wanted = [], []
        for key, tokens in rows:
            if len(tokens) == 0:
                raise ValueError(f"request {key!r} has no tokens; the amateur needs at least one")
            seq = self._seqs.setdefault(key, _Seq())
            seq.idle = 0
            seqs.append(seq)
            wanted.append(list(tokens))
        out: list[torch.Tensor | None] = [None] * len(rows)
        # Requests that grew by exactly one token since their last step: one batched forward.
        steady = [i for i in range(len(rows)) if self._one_more(seqs[i], wanted[i])]
        if self.batch_decode and len(steady) >= 2:
            members = {id(seqs[i]): wanted[i] for i in steady}
            if self._batch is None or {id(s) for s in self._batch.seqs} != members.keys():
                self._rebatch([seqs[i] for i in steady])
            last = self._batch_step(members)  # (R, V_a), in the batch's row order
            for i in steady:
                out[i] = last[seqs[i].row]
        else:
            self._unbatch()
        # Everything else (joins, multi-token growth, rollbacks, repeats): one forward per request.
        for i in range(len(rows)):
            if out[i] is None:
                out[i] = self._advance(seqs[i], wanted[i])
        return self._finish(keys, out)

    @torch.inference_mode()
    def step(
        self,
        keys: Sequence[Hashable],
        lengths: Sequence[int],
        fed: torch.Tensor,
        history: Callable[[list[int]], Sequence[Sequence[int]]],
    ) -> torch.Tensor:
        """:meth:`logits` for an engine that keeps the tokens on the device (vLLM's Model Runner V2).

        A request whose length grew by exactly one since its last step is fed its token from ``fed`` as
        it is, on the device (batched as in :meth:`logits`); its value is read back only when the pool
        needs it. Every other request (joining, grown by several tokens, rolled back, asked twice) is
        brought up to date from ``history``, compared with what it caches, as :meth:`logits` would.

        Length alone decides "grew by one": a request whose earlier tokens changed while its length grew by
        exactly one would be taken for a steady one. vLLM's V2 runner never does that to a live request (a
        slot changing hands goes through ``add_request``, where the processor drops the key; speculative
        decoding, which rolls drafts back, is refused).

        Args:
            keys: one distinct key per row.
            lengths: each row's token count, this step's token included (the host knows it).
            fed: ``(R,)`` this step's token of each row, the last of its tokens, on the device.
            history: ``history(indices)`` gives those rows' whole token lists (it reads the device);
                called at most once per step, only for the rows that did not grow by exactly one.

        Returns:
            ``(R, V_a)`` logits after each row's tokens.
        """
        if len(set(keys)) != len(keys):
            raise ValueError(f"AmateurPool.step got a key twice in one call: {list(keys)}")
        if len(lengths) != len(keys) or fed.shape[0] != len(keys):
            raise ValueError(
                f"AmateurPool.step got {len(keys)} keys, {len(lengths)} lengths, {fed.shape[0]} tokens"
            )
        for key, length in zip(keys, lengths, strict=True):
            if length < 1:
                raise ValueError(f"request {key!r} has no tokens; the amateur needs at least one")
        seqs = [self._seqs.setdefault(key, _Seq()) for key in keys]
        for seq in seqs:
            seq.idle = 0
        out: list[torch.Tensor | None] = [None] * len(keys)
        steady = [i for i in range(len(keys)) if self._grew_by_one(seqs[i], lengths[i])]
        if self.batch_decode and len(steady) >= 2:
            if self._batch is None or {id(s) for s in self._batch.seqs} != {id(seqs[i]) for i in steady}:
                self._rebatch([seqs[i] for i in steady])
            batch = self._batch
            where = {id(seqs[i]): i for i in steady}
            order = [where[id(seq)] for seq in batch.seqs]  # batch row r holds row order[r] of this call
            tokens = fed if order == list(range(len(keys))) else fed[_index(order, fed.device)]  # (R_b,)
            last = batch.amateur.feed(tokens[:, None])  # (R_b, V_a)
            batch.pending.append(tokens)
            for r, seq in enumerate(batch.seqs):
                seq.last = last[r]
            for i in steady:
                out[i] = last[seqs[i].row]
        else:
            self._unbatch()
            for i in steady:  # alone: its own cache, fed on the device all the same
                seq = seqs[i]
                token = fed[i : i + 1]  # (1,)
                seq.last = seq.own.feed(token[:, None])[0]
                seq.pending.append(token)
                out[i] = seq.last
        rest = [i for i in range(len(keys)) if out[i] is None]
        if rest:
            for i, tokens in zip(rest, history(rest), strict=True):
                out[i] = self._advance(seqs[i], list(tokens))
        return self._finish(list(keys), out)

    def _finish(self, keys: list[Hashable], out: list[torch.Tensor | None]) -> torch.Tensor:
        # Free requests that have not come back for a while (finished ones, in interfaces that
        # never say so). Their tokens would rebuild them, so this is about memory only. A freed
        # batch member leaves the batch at its next rebuild.
        asked = set(keys)
        for key in [k for k in self._seqs if k not in asked]:
            self._seqs[key].idle += 1
            if self._seqs[key].idle >= self.max_idle_steps:
                del self._seqs[key]
        if not out:
            vocab = self.model.get_output_embeddings().weight.shape[0]
            return torch.empty(0, vocab, device=self._device())
        return torch.stack(out)  # (N, V_a)

    def _length(self, seq: _Seq) -> int:
        """Tokens ``seq``'s cache covers, read back or not."""
        batched = len(self._batch.pending) if seq.row is not None and self._batch is not None else 0
        return len(seq.tokens) + len(seq.pending) + batched

    def _grew_by_one(self, seq: _Seq, length: int) -> bool:
        """Whether a request of ``length`` tokens is what ``seq`` caches plus one (judged by length)."""
        has_cache = seq.own is not None or seq.row is not None
        return has_cache and seq.last is not None and length == self._length(seq) + 1

    def _settle(self, seq: _Seq | None = None) -> None:
        """Read back the device tokens step() fed (one copy): of the batch and of ``seq`` (None: of all)."""
        if self._batch is not None and self._batch.pending and (seq is None or seq.row is not None):
            batch = self._batch
            own = [m for m in batch.seqs if m.pending]
            for member in own:  # older than the batch's: a member fed alone before it joined
                self._settle(member)
            columns = torch.stack(batch.pending, dim=1).tolist()  # (R_b, P): the one host read
            for member, column in zip(batch.seqs, columns, strict=True):
                member.tokens = member.tokens + column
            batch.pending = []
        for s in [seq] if seq is not None else list(self._seqs.values()):
            if s.pending:
                s.tokens = s.tokens + torch.cat(s.pending).tolist()
                s.pending = []

    @staticmethod
    def _one_more(seq: _Seq, tokens: list[int]) -> bool:
        """Whether ``tokens`` is exactly what ``seq`` caches plus one new token."""
        has_cache = seq.own is not None or seq.row is not None
        return (
            has_cache
            and seq.last is not None
            and len(tokens) == len(seq.tokens) + 1
            and tokens[:-1] == seq.tokens
        )

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- the batched decode step ---------------------------------------------------------------------
    def _where(self, seq: _Seq) -> tuple[AmateurCache, int]:
        """``(cache, row)`` holding ``seq``'s states."""
        return (self._batch.amateur, seq.row) if seq.row is not None else (seq.own, 0)

    def _rebatch(self, members: list[_Seq]) -> None:
        """Stack ``members``' caches into a new left-padded batch; give other live rows their own cache.

        One copy of each cache involved; runs only when the set of decoding requests changes.
        """
        self._settle()  # row indices change below: read back the tokens fed on the device first
        stacked = AmateurCache.stack(self.model, [self._where(seq) for seq in members])
        self._unbatch(keep={id(seq) for seq in members})  # rows not staying (and still live) get their own
        self._batch = _Batch(list(members), stacked)
        for r, seq in enumerate(members):
            seq.own, seq.row = None, r

    def _unbatch(self, keep: frozenset[int] | set[int] = frozenset()) -> None:
        """Dissolve the batch: live members not in ``keep`` (ids) get their own single-row cache back."""
        if self._batch is None:
            return
        self._settle()
        live = {id(seq) for seq in self._seqs.values()}
        for seq in self._batch.seqs:
            if id(seq) in live and id(seq) not in keep:
                seq.own = self._batch.amateur.single(seq.row)
            seq.row = None
        self._batch = None

    def _batch_step(self, members: dict[int, list[int]]) -> torch.Tensor:
        """Feed each batch row its one new token (``members``: id(seq) -> tokens); ``(R, V_a)`` logits."""
        batch = self._batch
        # (R, 1) on the host; feed() moves it to the device without waiting for the device.
        new = torch.tensor([[members[id(seq)][-1]] for seq in batch.seqs])
        last = batch.amateur.feed(new)  # (R, V_a): each row at its own next position, padding masked
        for r, seq in enumerate(batch.seqs):
            seq.tokens = members[id(seq)]
            seq.last = last[r]
        return last

    # -- one request at a time -------------------------------------------------------------------
    def _advance(self, seq: _Seq, tokens: list[int]) -> torch.Tensor:
        """Bring ``seq`` to ``tokens`` with the fewest amateur tokens fed; return its last logits."""
        if seq.row is not None:  # a batch member asked for something else than one more token
            self._unbatch()
        self._settle(seq)
        common = _common_prefix(seq.tokens, tokens)
        if common == len(tokens) == len(seq.tokens) and seq.last is not None:
            return seq.last  # nothing new (e.g. a chunked prefill's logits asked for twice)
        # Keep at most len(tokens) - 1 cached tokens: the last one must be fed to get its logits.
        keep = min(common, len(tokens) - 1)
        if seq.own is not None and 0 < keep < len(seq.tokens):
            try:
                seq.own.crop(keep)
            except (RuntimeError, ValueError):  # e.g. a sliding-window layer past its window
                seq.own = None
        if seq.own is None or keep == 0:
            seq.own = AmateurCache(self.model)
            keep = 0
        seq.last = seq.own.feed(torch.tensor([tokens[keep:]], dtype=torch.long))[0]  # (V_a,)
        seq.tokens = tokens
        return seq.last


def _index(rows: list[int], device: torch.device) -> torch.Tensor:
    """``rows`` as a long tensor on ``device``, copied without waiting for the device."""
    return torch.tensor(rows, dtype=torch.long).to(device, non_blocking=True)
