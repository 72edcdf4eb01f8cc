"""Floors for layer contrast: the work it cannot avoid, timed on the same model in the same run.

Layer contrast reads its amateur from the expert's own forward pass, so its cost over greedy is only
what it does with the captured hidden states. Two floors:

* :func:`full_projections`: greedy plus, on every step, the full lm_head product of the last position's
  hidden state at each of ``C`` chosen layers (``jsd`` and ``dola`` need every layer's whole distribution
  to pick one; see ``counterpoint.decoding.layer_contrast``). The product is done the cheapest way
  counterpoint knows on a CPU, the way ``LayerContrast`` does it: one ``W @ H^T`` over the ``C x N``
  columns, which reads the lm_head once (an ``nn.Linear`` call per layer reads it ``C`` times).
* :func:`head_projections`: greedy plus the lm_head rows of the expert's plausible head (the union over
  the batch) for each chosen layer: what ``fixed`` and ``fusion`` need under greedy and sampling.

Both are context managers around an ordinary greedy ``generate()``: forward pre-hooks keep the chosen
layers' last hidden states, a forward hook on the lm_head does the extra product and throws it away.

Example:
    >>> with full_projections(model, [0, 4, 8, 12]):
    ...     seconds = timed_generate(model, batch, new_tokens=32)   # the jsd floor, per new token

:func:`timed_generate` returns wall and CPU seconds per new token (CPU time is this process's, which a
shared, loaded machine inflates less than wall time), and :func:`interleaved` runs several such calls
in turns and keeps every repeat, for medians and spreads.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from counterpoint import _hf

__all__ = ["full_projections", "head_projections", "interleaved", "summary", "timed_generate"]


@contextmanager
def _captured_layers(model: Any, layers: list[int]) -> Iterator[dict[int, torch.Tensor]]:
    decoder, _, _ = _hf.decoder_parts(model)
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for k in layers:

        def keep(module, args, kwargs, k=k):
            hidden = args[0] if args else kwargs["hidden_states"]
            captured[k] = hidden[:, -1]

        hooks.append(decoder[k].register_forward_pre_hook(keep, with_kwargs=True))
    try:
        yield captured
    finally:
        for h in hooks:
            h.remove()


@contextmanager
def full_projections(model: Any, layers: list[int], norm: bool = True) -> Iterator[None]:
    """Within the block, every forward of ``model`` also projects the last hidden state of each of
    ``layers`` through the whole lm_head (one ``(V, H) @ (H, C*N)`` product, result dropped).

    Args:
        model: a decoder-only causal LM with an ``nn.Linear`` lm_head.
        layers: the ``C`` layer indices (0 = embedding output), as ``layer_contrast`` takes them.
        norm: apply the final norm first (``jsd``); False for ``dola``, which projects raw states.
    """
    _, final_norm, head = _hf.decoder_parts(model)
    weight = head.weight

    with _captured_layers(model, layers) as captured:

        def project(module, args, output):
            hidden = torch.stack([captured.pop(k) for k in layers])  # (C, N, H)
            if norm:
                hidden = final_norm(hidden)
            torch.mm(weight, hidden.reshape(-1, hidden.shape[-1]).T)  # (V, C*N)

        hook = head.register_forward_hook(project)
        try:
            yield
        finally:
            hook.remove()


@contextmanager
def head_projections(model: Any, layers: list[int], alpha: float = 0.1) -> Iterator[None]:
    """Within the block, every forward of ``model`` also multiplies each of ``layers``' normed last hidden
    state by the lm_head rows of the union of the batch's plausible heads (``alpha``), result dropped."""
    _, final_norm, head = _hf.decoder_parts(model)
    weight = head.weight

    with _captured_layers(model, layers) as captured:

        def project(module, args, output):
            logits = output[:, -1].float()  # (N, V)
            cutoff = logits.max(-1, keepdim=True).values + math.log(alpha)
            cols = (logits >= cutoff).any(0).nonzero()[:, 0]  # (U,)
            hidden = final_norm(torch.stack([captured.pop(k) for k in layers]))  # (C, N, H)
            torch.nn.functional.linear(hidden, weight.index_select(0, cols))  # (C, N, U)

        hook = head.register_forward_hook(project)
        try:
            yield
        finally:
            hook.remove()


def timed_generate(
    model: Any, batch: dict[str, torch.Tensor], new_tokens: int, **kwargs: Any
) -> tuple[float, float]:
    """``(wall, cpu)`` seconds per new token of one greedy ``generate`` call making exactly ``new_tokens``."""
    width = batch["input_ids"].shape[1]
    wall, cpu = time.perf_counter(), time.process_time()
    out = model.generate(
        **batch, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs
    )  # fmt: skip
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    made = out.shape[1] - width
    return wall / made, cpu / made


def interleaved(
    runs: dict[str, Callable[[], tuple[float, float]]], repeats: int
) -> dict[str, list[tuple[float, float]]]:
    """Call every run once per repeat, in turns (the order rotates each repeat); every timing kept."""
    names = list(runs)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(runs[name]())
    return times


def summary(values: list[float]) -> tuple[float, float, float]:
    """``(median, low, high)`` of the repeats."""
    return statistics.median(values), min(values), max(values)
