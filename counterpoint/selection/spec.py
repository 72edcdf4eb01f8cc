"""What a selection method declares about itself: :class:`MethodSpec` and its :class:`MethodKwarg`.

Each method lives in one module of :mod:`counterpoint.selection.methods` and exports its spec as
``SPEC``; :mod:`counterpoint.selection.registry` collects them. A spec says everything ``select()``
and a command line need: the name, a one-line summary, whether the method compares embeddings, its
keyword arguments (default, type and help each), how to check them and how to rank the pool.

Example:
    >>> from counterpoint.selection.registry import get_method
    >>> spec = get_method("mmr")
    >>> [(kw.name, kw.default) for kw in spec.kwargs]
    [('fetch_k', 20), ('lambda_mult', 0.5)]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from counterpoint.errors import OptionError

if TYPE_CHECKING:
    from counterpoint.selection.pool import DemoPool
    from counterpoint.selection.ranking import Ranking, SelectionRequest

__all__ = ["MethodKwarg", "MethodSpec", "check_positive_int"]


@dataclass(frozen=True)
class MethodKwarg:
    """One keyword argument of a selection method.

    Attributes:
        name: the keyword as ``select()`` takes it (``fetch_k``); a command line spells it
            ``--fetch-k``.
        default: its value when not given.
        help: one line for ``--help``.
        type: what a command line parses the value as (``int``, ``float`` or ``str``).
    """

    name: str
    default: Any
    help: str
    type: type = str

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"a method keyword must be a Python identifier, got {self.name!r}")
        if self.type not in (int, float, str):
            raise ValueError(f"MethodKwarg {self.name!r}: type must be int, float or str, got {self.type!r}")


@dataclass(frozen=True)
class MethodSpec:
    """A selection method, as :func:`counterpoint.selection.select` and a command line see it.

    Attributes:
        name: what ``select(method=...)`` takes.
        summary: one line for ``--help`` and the docs.
        rank: ``rank(pool, request) -> rankings``: per query, pool indices in the method's order
            of preference with a score each (:data:`counterpoint.selection.ranking.Ranking`).
            With label quotas (``request.cap``) each ranking must hold enough of every label for
            :func:`~counterpoint.selection.ranking.take` to fill the quota, and no more than a small
            margin beyond it: memory stays ``queries x (k + labels)``, never ``queries x pool``.
        needs_embedder: the method compares embeddings (the pool's, and the queries' when it is
            query-dependent); ``False``: queries are never embedded.
        kwargs: its keyword arguments, in the order a help text lists them.
        check: ``check(options, k)`` raises ``ValueError`` naming a bad keyword argument; ``options``
            holds every keyword with its default filled in. ``None``: nothing to check.
        position: where the method comes in listings (``--method`` choices, error messages);
            equal positions list by name.
        needs_scorer: the method asks the target model (``select(..., scorer=LMScorer(...))``, a
            :class:`~counterpoint.selection.lm_scorer.LMScorer`); a command line builds one from the model
            and the prompt template.
        budget_aware: the method applies the token budget while it searches (``request.max_tokens``) and
            may return fewer than ``k`` when nothing more fits.
    """

    name: str
    summary: str
    rank: Callable[[DemoPool, SelectionRequest], list[Ranking]]
    needs_embedder: bool
    kwargs: tuple[MethodKwarg, ...] = ()
    check: Callable[[Mapping[str, Any], int], None] | None = None
    position: int = 100
    needs_scorer: bool = False
    budget_aware: bool = False
    defaults: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [kw.name for kw in self.kwargs]
        if len(set(names)) != len(names):
            raise ValueError(f"method {self.name!r} declares a keyword twice: {names}")
        object.__setattr__(self, "defaults", {kw.name: kw.default for kw in self.kwargs})


def check_positive_int(options: Mapping[str, Any], name: str) -> None:
    """Raise ``ValueError`` unless ``options[name]`` is an int >= 1 (a bool is not)."""
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(name, value, "must be a positive int")
