"""The strategy registry: every decoding strategy's spec, by name.

Each method module exports its :class:`~counterpoint.decoding.spec.StrategySpec` (``SPEC``, or ``SPECS``
for several); this module collects them. The command line, the pipeline, the backends and the evaluation
scripts read strategies from here, and nowhere else writes a strategy's name, options or defaults down.

Example:
    >>> names()
    ('greedy', 'sample', 'beam', 'contrastive-search', 'contrastive-decoding', 'layer-contrast', 'input-contrast')
    >>> get_strategy("contrastive-search").option("top_k").default
    4
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import warnings

import counterpoint.decoding as _decoding_package
from counterpoint.decoding.spec import Option, StrategySpec
from counterpoint.errors import OptionError

__all__ = ["STRATEGIES", "get_strategy", "names", "option_names", "options_by_name"]

# Modules of counterpoint.decoding that hold machinery, not strategies (and import this registry).
_NOT_METHODS = {"backend", "engine", "registry", "scores", "spec", "transformers_backend", "scoring"}


def _collect() -> dict[str, StrategySpec]:
    """Every ``SPEC`` (or ``SPECS``) of a module of counterpoint.decoding: a new strategy is one new file."""
    specs: list[StrategySpec] = []
    for info in pkgutil.iter_modules(_decoding_package.__path__):
        if info.ispkg or info.name.startswith("_") or info.name in _NOT_METHODS:
            continue
        module = importlib.import_module(f"{_decoding_package.__name__}.{info.name}")
        found = vars(module).get("SPECS") or ((vars(module)["SPEC"],) if "SPEC" in vars(module) else ())
        for spec in found:
            if not isinstance(spec, StrategySpec):
                raise TypeError(f"{module.__name__}: SPEC must be a StrategySpec, got {type(spec).__name__}")
            specs.append(spec)
    by_name: dict[str, StrategySpec] = {}
    for spec in sorted(specs, key=lambda s: (s.position, s.name)):
        if spec.name in by_name:
            raise RuntimeError(f"strategy {spec.name!r} is declared twice")
        by_name[spec.name] = spec
    return by_name


STRATEGIES: dict[str, StrategySpec] = _collect()
_ALIASES = {alias: spec.name for spec in STRATEGIES.values() for alias in spec.aliases}


def names() -> tuple[str, ...]:
    """The strategies' names, in registry order."""
    return tuple(STRATEGIES)


def get_strategy(name: str | StrategySpec) -> StrategySpec:
    """The strategy called ``name`` (a spec is returned as is).

    Older spellings (``"sampling"``, ``"contrastive_decoding"``) still resolve, with a DeprecationWarning.

    Raises:
        OptionError: no strategy has that name; the message lists the valid names.
    """
    if isinstance(name, StrategySpec):
        return name
    if isinstance(name, str) and name in STRATEGIES:
        return STRATEGIES[name]
    if isinstance(name, str) and name in _ALIASES:
        warnings.warn(
            f"strategy name {name!r} is deprecated; use {_ALIASES[name]!r}", DeprecationWarning, stacklevel=2
        )
        return STRATEGIES[_ALIASES[name]]
    raise OptionError("strategy", name, f"is unknown; use one of: {', '.join(STRATEGIES)}")


@functools.cache
def options_by_name() -> dict[str, list[tuple[str, Option]]]:
    """Every option name with the ``(strategy, Option)`` pairs that take it, in registry order.

    Options of one name must share their type: the command line has one flag per name.
    """
    table: dict[str, list[tuple[str, Option]]] = {}
    for spec in STRATEGIES.values():
        for option in spec.options:
            table.setdefault(option.name, []).append((spec.name, option))
    for name, uses in table.items():
        types = {option.type for _, option in uses}
        if len(types) > 1:
            raise RuntimeError(f"option {name!r} has different types across strategies: {sorted(types)}")
    return table


def option_names() -> frozenset[str]:
    """Every option any strategy takes."""
    return frozenset(options_by_name())
