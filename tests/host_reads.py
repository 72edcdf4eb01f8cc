"""Count, on the CPU, the calls that would make the host wait for a GPU.

On a GPU, reading a tensor's value on the host (``.item()``, ``.tolist()``, ``.cpu()``, ``bool(t)``,
``int(t)``, data-dependent shapes such as ``.nonzero()``) blocks until the device has caught up: a
host-device synchronisation. On the CPU the same calls cost nothing, but they are the same Python calls,
so counting them here catches a sync added to a step loop without a GPU. ``torch.cuda``'s own sync debug
mode (``benchmarks/gpu/bench_gpu.py``) is the check on a real device; it also sees blocking host-to-device
copies, which this cannot (on the CPU there is no copy).

Example:
    >>> with host_reads() as reads:
    ...     model.generate(**batch, max_new_tokens=4)
    >>> sum(reads.values())        # reads by "method file:line" of the caller
"""

from __future__ import annotations

import collections
import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch

# Tensor methods whose call reads a value (or a data-dependent shape) back to the host.
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero")


@contextlib.contextmanager
def host_reads() -> Iterator[collections.Counter[str]]:
    """Count every call of :data:`READS` on any tensor inside the block, by ``"name file:line"``."""
    counts: collections.Counter[str] = collections.Counter()
    saved = {}
    for name in READS:
        original = getattr(torch.Tensor, name)
        saved[name] = (name in torch.Tensor.__dict__, original)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            frame = sys._getframe(1)
            counts[f"{_name} {frame.f_code.co_filename}:{frame.f_lineno}"] += 1
            return _original(self, *args, **kwargs)

        setattr(torch.Tensor, name, counted)
    try:
        yield counts
    finally:
        for name, (own, original) in saved.items():
            if own:
                setattr(torch.Tensor, name, original)
            else:
                delattr(torch.Tensor, name)


def reads_per_step(run: Callable[[int], Any], short: int = 4, long: int = 12) -> dict[str, float]:
    """Host reads per decoding step: ``run(n)`` makes exactly ``n`` new tokens; the counts of a ``short``
    and a ``long`` call are differenced, so the prefill and setup cancel. Returns ``{site: per step}``
    for the sites whose count grows with the steps."""
    counts = []
    for n in (short, long):
        with host_reads() as reads:
            run(n)
        counts.append(reads)
    steps = long - short
    sites = set(counts[0]) | set(counts[1])
    return {s: (counts[1][s] - counts[0][s]) / steps for s in sites if counts[1][s] != counts[0][s]}
