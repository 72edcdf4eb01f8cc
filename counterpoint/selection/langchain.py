"""A LangChain ``BaseExampleSelector`` over a :class:`~counterpoint.selection.DemoPool`.

Needs ``langchain-core`` (``pip install counterpoint[langchain]``).

Example:
    >>> from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate  # doctest: +SKIP
    >>> selector = LangChainExampleSelector(pool, k=4, method="mmr")  # doctest: +SKIP
    >>> prompt = FewShotPromptTemplate(example_selector=selector, example_prompt=PromptTemplate.from_template(
    ...     "Q: {input}\\nA: {output}"), suffix="Q: {input}\\nA:", input_variables=["input"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

try:
    from langchain_core.example_selectors import BaseExampleSelector
except ImportError as err:  # pragma: no cover - langchain-core is installed in the dev environment
    raise ImportError(
        "LangChainExampleSelector needs langchain-core; install it with: pip install counterpoint[langchain]"
    ) from err

from counterpoint.selection.pool import DemoPool
from counterpoint.selection.selectors import select

__all__ = ["LangChainExampleSelector"]


class LangChainExampleSelector(BaseExampleSelector):
    """Drop-in ``example_selector`` for LangChain's ``FewShotPromptTemplate``.

    Args:
        pool: the demonstrations.
        k: demonstrations per prompt.
        method: any of :data:`counterpoint.selection.METHODS`.
        **select_kwargs: anything else :func:`counterpoint.selection.select` takes (``query_key``,
            ``max_tokens`` with ``tokenizer``, ``order``, method knobs, ...).
    """

    def __init__(self, pool: DemoPool, k: int = 4, method: str = "knn", **select_kwargs: Any) -> None:
        if not isinstance(pool, DemoPool):
            raise TypeError(f"pool must be a DemoPool, got {type(pool).__name__}")
        self.pool = pool
        self.k = k
        self.method = method
        self.select_kwargs = select_kwargs

    def select_examples(self, input_variables: dict[str, str]) -> list[dict[str, Any]]:
        """The chosen examples (the pool's records) for one prompt's input variables, in prompt order."""
        demos = select(self.pool, [input_variables], k=self.k, method=self.method, **self.select_kwargs)[0]
        return [d["example"] for d in demos]

    def add_example(self, example: dict[str, str]) -> int:
        """Add an example to the pool (embedded now); returns its index."""
        return self.pool.add([example])[0]
