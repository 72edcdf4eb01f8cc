"""Selectors as a prompt pipeline uses them: the :class:`Selector` protocol and :class:`PoolSelector`.

A selector turns a batch of queries into, per query and in query order, the demonstrations to show:
selection results ``{"index", "score", "example"}`` (what :func:`counterpoint.selection.select`
returns) or plain example dicts. :class:`PoolSelector` is :func:`~counterpoint.selection.select`
over a :class:`~counterpoint.selection.DemoPool` with its arguments fixed; the LangChain adapter
(:mod:`counterpoint.selection.langchain`) is the same for LangChain's prompt templates.

Example:
    >>> selector = PoolSelector(pool, k=4, method="mmr")                # doctest: +SKIP
    >>> demos = selector.select([{"input": "a new question"}])[0]       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["PoolSelector", "Selector"]


@runtime_checkable
class Selector(Protocol):
    """Anything with ``select(queries) -> list[list[dict]]`` (one list of demonstrations per query)."""

    def select(self, queries: list[Any]) -> list[list[dict[str, Any]]]: ...


@dataclass
class PoolSelector:
    """A :class:`Selector` over a :class:`counterpoint.selection.DemoPool` via ``selection.select``.

    Every field but ``pool`` is passed to ``select`` as is. For a token budget (``max_tokens``) pass
    the pipeline's template as ``render=template.render_text`` and its ``tokenizer``, so the budget
    counts tokens the way the prompt will be built.
    """

    pool: Any  # a counterpoint.selection.DemoPool
    k: int = 4  # demonstrations per query; 0: none (zero-shot)
    method: str = "knn"  # a name in counterpoint.selection.registry.METHODS
    query_key: str = "input"  # the query field to match against the pool
    balance_labels: bool = False  # as many demonstrations of each label as possible
    max_tokens: int | None = None  # prompt budget; None: no budget
    tokenizer: Any = None  # counts tokens for max_tokens
    render: Callable[[list[dict[str, Any]], Any], str] | None = None  # formats a prompt for max_tokens
    order: str = "most_similar_last"  # where the best demonstration sits in the prompt
    seed: int = 0  # for random and sampling methods
    method_kwargs: dict[str, Any] = field(default_factory=dict)  # extra knobs of the method

    def __post_init__(self) -> None:
        if not (isinstance(self.k, int) and self.k >= 0):
            raise ValueError(f"k={self.k!r} must be an int >= 0")
        if self.max_tokens is not None and (self.tokenizer is None or self.render is None):
            raise ValueError(
                f"max_tokens={self.max_tokens} needs tokenizer and render (e.g. render=template.render_text)"
            )

    def select(self, queries: list[Any]) -> list[list[dict[str, Any]]]:
        """Per query, its demonstrations in prompt order (none for any query when ``k == 0``)."""
        from counterpoint.selection.selectors import select

        if self.k == 0:
            return [[] for _ in queries]
        return select(
            self.pool,
            queries,
            k=self.k,
            method=self.method,
            query_key=self.query_key,
            balance_labels=self.balance_labels,
            max_tokens=self.max_tokens,
            tokenizer=self.tokenizer,
            render=self.render,
            order=self.order,
            seed=self.seed,
            **self.method_kwargs,
        )
