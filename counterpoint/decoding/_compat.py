"""Compatibility with transformers' ``generate(custom_generate=<callable>)``.

transformers 5.x (seen on 5.23) builds the keyword arguments of a callable ``custom_generate`` from
the callable's own extra parameters only, and drops what ``generate()`` would hand any built-in
strategy: ``streamer``, ``synced_gpus``, and ``tokenizer`` (so ``stop_strings`` fails with "could not
locate a tokenizer"). Our strategies must honour all of them, so for callables marked with
:func:`generate_strategy` (and only those) the extraction keeps the standard entries and adds the
callable's own. Other callables and built-in strategies see transformers' behaviour unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "_counterpoint_strategy"


def generate_strategy(fn: F) -> F:
    """Mark ``fn`` as a counterpoint ``custom_generate`` strategy and install the kwargs fix once."""
    setattr(fn, _MARK, True)
    _install()
    return fn


def _install() -> None:
    from transformers.generation.utils import GenerationMixin

    original = GenerationMixin._extract_generation_mode_kwargs
    if getattr(original, _MARK, False):
        return

    def extract(self, custom_generate, kwargs, synced_gpus, assistant_model, streamer):
        if not getattr(custom_generate, _MARK, False):
            return original(self, custom_generate, kwargs, synced_gpus, assistant_model, streamer)
        # The standard entries, as a built-in strategy would get them (this pops `tokenizer` and
        # `assistant_tokenizer` from kwargs), then the strategy's own parameters.
        standard = original(self, None, kwargs, synced_gpus, assistant_model, streamer)
        own = original(self, custom_generate, kwargs, synced_gpus, assistant_model, streamer)
        return {**standard, **own}

    setattr(extract, _MARK, True)
    GenerationMixin._extract_generation_mode_kwargs = extract
