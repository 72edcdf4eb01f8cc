"""The selection methods by name: every module of :mod:`counterpoint.selection.methods` that defines
``SPEC`` (a :class:`~counterpoint.selection.spec.MethodSpec`), found when this module is imported.

``select()`` looks methods up here, and a command line builds its ``--method`` choices, each method's
options (name, default, type, help) and its help text from :data:`METHODS`.

Example:
    >>> list(METHODS)
    ['knn', 'mmr', 'dpp', 'bm25', 'random', 'vote-k', 'lm', 'se2']
    >>> get_method("bm25").needs_embedder
    False
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from types import MappingProxyType

from counterpoint.selection import methods as _methods_package
from counterpoint.selection.spec import MethodKwarg, MethodSpec

__all__ = ["METHODS", "MethodKwarg", "MethodSpec", "get_method"]


def _discover() -> dict[str, MethodSpec]:
    specs: list[MethodSpec] = []
    for info in pkgutil.iter_modules(_methods_package.__path__):
        module = importlib.import_module(f"{_methods_package.__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if spec is None:
            continue  # a helper module, not a method
        if not isinstance(spec, MethodSpec):
            raise TypeError(f"{module.__name__}.SPEC must be a MethodSpec, got {type(spec).__name__}")
        specs.append(spec)
    by_name: dict[str, MethodSpec] = {}
    for spec in sorted(specs, key=lambda s: (s.position, s.name)):
        if spec.name in by_name:
            raise ValueError(f"two selection methods are named {spec.name!r}")
        by_name[spec.name] = spec
    return by_name


METHODS: Mapping[str, MethodSpec] = MappingProxyType(_discover())
"""Every selection method, by name, in listing order (read-only)."""


def get_method(name: str) -> MethodSpec:
    """The spec of the method called ``name``.

    Raises:
        ValueError: no such method; the message lists the valid names.
    """
    spec = METHODS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"method must be one of {list(METHODS)}, got {name!r}")
    return spec
