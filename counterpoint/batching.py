"""Batching helpers shared by decoding, evaluation and the pipeline: left padding, positions, batch plans.

Everything in counterpoint pads on the left, so that every row's next token is appended in the same
column; positions count real tokens only, as transformers' ``generate()`` numbers them.

Example:
    >>> batch = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    >>> positions_from_mask(batch["attention_mask"]).tolist()
    [[0, 1, 2], [0, 0, 0]]
    >>> length_batches([3, 9, 5, 9], batch_size=2)
    [[1, 3], [2, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["expand_rows", "left_pad", "length_batches", "positions_from_mask"]


def left_pad(
    sequences: Sequence[Sequence[int]], pad_token_id: int, *, device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """Left-pad token-id lists into ``{"input_ids", "attention_mask"}``, both ``(B, T)`` long.

    Raises:
        ValueError: no sequences, or an empty one (a model needs at least one token to condition on).
    """
    if not sequences:
        raise ValueError("sequences is empty: give at least one token-id list")
    empty = [i for i, s in enumerate(sequences) if len(s) == 0]
    if empty:
        raise ValueError(f"sequences {empty} are empty: every sequence needs at least one token")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def positions_from_mask(mask: torch.Tensor, start: torch.Tensor | int = 0) -> torch.Tensor:
    """``(B, T)`` position ids of a left-padded mask: real tokens count from ``start``, padding gets 0.

    Args:
        mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        start: ``(B, 1)`` or an int: the position of each row's first real token here (the number of
            real tokens a cache already holds for that row).
    """
    mask = mask.long()
    return (mask.cumsum(-1) - 1 + start).masked_fill(mask == 0, 0)


def expand_rows(t: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """Repeat each of ``t``'s B rows ``n // B`` times, adjacent (beams / returned sequences sit together).

    Raises:
        ValueError: ``n`` is not a multiple of B (the message names ``name``).
    """
    b = t.shape[0]
    if n % b:
        raise ValueError(f"{name} has {b} rows but generation runs {n} rows: {n} is not a multiple of {b}")
    return t.repeat_interleave(n // b, dim=0) if n != b else t


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Group row indices into batches of similar length, longest first (ties keep input order).

    Longest first so that a batch that does not fit in memory fails at once, not at the end of a run.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
