"""Deprecated: strategies by name moved to :mod:`counterpoint.decoding.registry` (specs in each method's
module) and backends to :mod:`counterpoint.decoding.backend`. This path keeps working for one release."""

from __future__ import annotations

import warnings
from typing import Any

from counterpoint._deprecated import moved

_moved = moved(
    "counterpoint.prompting.strategies",
    {
        "GenerationOptions": "counterpoint.decoding.spec",
        "STRATEGIES": "counterpoint.decoding.registry",
        "get_strategy": "counterpoint.decoding.registry",
        "Strategy": "counterpoint.decoding.spec:StrategySpec",
        "BACKENDS": "counterpoint.decoding.backend:BACKEND_NAMES",
    },
)


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"counterpoint.prompting.strategies.{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3
    )


def check_options(name: str, options: Any = None) -> Any:
    """Deprecated: ``get_strategy(name).resolve(options)`` checks a strategy's options."""
    from counterpoint.decoding.registry import get_strategy

    _warn("check_options", "counterpoint.decoding.get_strategy(name).resolve(options)")
    spec = get_strategy(name)
    spec.resolve(options)
    return spec


def generate_kwargs(name: str, options: Any = None) -> dict[str, Any]:
    """Deprecated: ``get_strategy(name).generate_kwargs(options)``."""
    from counterpoint.decoding.registry import get_strategy

    _warn("generate_kwargs", "counterpoint.decoding.get_strategy(name).generate_kwargs(options)")
    return get_strategy(name).generate_kwargs(options)


def check_backend(name: str, options: Any = None, backend: str = "transformers") -> Any:
    """Deprecated: ``get_backend(backend).check(name, options)``."""
    from counterpoint.decoding.backend import get_backend

    _warn("check_backend", "counterpoint.decoding.get_backend(backend).check(name, options)")
    return get_backend(backend).check(name, options)


def __getattr__(name: str) -> Any:
    return _moved(name)
