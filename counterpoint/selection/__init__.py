"""Batched selection of in-context demonstrations from a pool.

Example:
    >>> from counterpoint.selection import DemoPool, select
    >>> pool = DemoPool.from_jsonl("train.jsonl", text_keys=("input",), label_key="label")  # doctest: +SKIP
    >>> demos = select(pool, [{"input": "a new question"}], k=4, method="mmr")  # doctest: +SKIP
    >>> [d["index"] for d in demos[0]]  # doctest: +SKIP

Methods live one per module in :mod:`counterpoint.selection.methods`; :mod:`counterpoint.selection.registry`
collects them (``METHODS`` here is their names). :class:`Selector` / :class:`PoolSelector` are what a
prompt pipeline takes. :class:`LMScorer` is the target model as the LM-scored methods (``lm``, ``se2``)
need it: ``select(..., method="lm", scorer=LMScorer.from_template(model, tokenizer, template))``.

``LangChainExampleSelector`` (a ``langchain_core`` ``BaseExampleSelector``) is imported on first use,
so langchain-core is needed only by those who use it (``pip install counterpoint[langchain]``).
"""

from typing import Any

from counterpoint.selection.embedders import Embedder, as_embedder
from counterpoint.selection.lm_scorer import LMScorer
from counterpoint.selection.pool import DemoPool
from counterpoint.selection.search import FaissIndexConfig, IndexRecall, exact_search
from counterpoint.selection.selector import PoolSelector, Selector
from counterpoint.selection.selectors import METHODS, ORDERS, default_render, select

__all__ = [
    "METHODS",
    "ORDERS",
    "DemoPool",
    "Embedder",
    "FaissIndexConfig",
    "IndexRecall",
    "LMScorer",
    "LangChainExampleSelector",
    "PoolSelector",
    "Selector",
    "as_embedder",
    "default_render",
    "exact_search",
    "select",
]


def __getattr__(name: str) -> Any:
    # Lazy: importing the adapter imports langchain_core.
    if name == "LangChainExampleSelector":
        from counterpoint.selection.langchain import LangChainExampleSelector

        return LangChainExampleSelector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
