"""The LangChain adapter inside a FewShotPromptTemplate."""

from __future__ import annotations

import numpy as np

from counterpoint.selection import LangChainExampleSelector, select

from .conftest import make_pool


def test_adapter_in_few_shot_prompt_template():
    from langchain_core.example_selectors import BaseExampleSelector
    from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

    pool, qtexts, _, _ = make_pool(n=30)
    selector = LangChainExampleSelector(pool, k=3, method="mmr")
    assert isinstance(selector, BaseExampleSelector)
    want = [d["example"] for d in select(pool, [{"input": qtexts[0]}], k=3, method="mmr")[0]]
    assert selector.select_examples({"input": qtexts[0]}) == want
    prompt = FewShotPromptTemplate(
        example_selector=selector,
        example_prompt=PromptTemplate.from_template("Q: {input}\nA: {output}"),
        suffix="Q: {input}\nA:",
        input_variables=["input"],
    )
    shots = "\n\n".join(f"Q: {e['input']}\nA: {e['output']}" for e in want)
    assert prompt.format(input=qtexts[0]) == shots + f"\n\nQ: {qtexts[0]}\nA:"


def test_adapter_add_example_is_selectable():
    pool, qtexts, _, q_mat = make_pool(n=30)
    pool.embedder.model.table["new"] = q_mat[0]  # the new example is the query's exact vector
    selector = LangChainExampleSelector(pool, k=2, order="most_similar_first")
    assert selector.add_example({"input": "new", "output": "o", "id": "x"}) == 30
    assert selector.select_examples({"input": qtexts[0]})[0]["input"] == "new"
    assert np.allclose(pool.embeddings[30].numpy(), q_mat[0], atol=1e-6)
