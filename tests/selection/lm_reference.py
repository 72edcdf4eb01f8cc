"""Naive, unbatched references for the LM-scored methods: every prompt scored with a plain forward of its
own (prompt and answer tokens in one row, no KV cache, no padding, no prefix sharing), and the methods'
rules written out one query at a time.

The library scores the same prompts batched, with shared prefixes and cache copies; the tests compare the
chosen demonstrations exactly and the scores in fp32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


@torch.no_grad()
def naive_logprob(
    model: Any, tokenizer: Any, prompt: str, answer: str, add_special_tokens: bool = True
) -> float:
    """``log p(answer | prompt)``: the prompt tokenized as the pipeline does, the answer without special
    tokens, one forward over both."""
    p = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    logits = model(torch.tensor([p + a])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[len(p) - 1 + j, t] for j, t in enumerate(a)))


class NaiveJudge:
    """The target score of a prompt, computed naively (see ``_lm_feedback``)."""

    def __init__(self, model, tokenizer, template, target: str = "prediction") -> None:
        self.model, self.tokenizer, self.template, self.target = model, tokenizer, template, target
        self.forwards = 0

    def answers(self, query: dict, values: list) -> list[str]:
        head = self.template.render_query(query)
        out = []
        for v in values:
            field = next(iter(_answer_field(self.template)))
            out.append(self.template.render_demo({**query, field: v})[len(head) :])
        return out

    def logprobs(self, demos: list[dict], query: dict, values: list) -> list[float]:
        prompt = self.template.render_text(demos, query)
        self.forwards += len(values)
        return [naive_logprob(self.model, self.tokenizer, prompt, a) for a in self.answers(query, values)]

    def asked(self, query: dict, values: list) -> list:
        if self.target == "labels":
            return values
        zero = self.logprobs([], query, values)
        return [values[int(np.argmax(zero))]]  # argmax: the first of equal maxima, as torch.argmax

    def score(self, demos: list[dict], query: dict, asked: list) -> float:
        return float(np.mean(self.logprobs(demos, query, asked)))


def _answer_field(template) -> set[str]:
    import string

    def fields(fmt):
        return {n for _, n, _, _ in string.Formatter().parse(fmt) if n}

    return fields(template.demo_format) - fields(template.query_format)


def nearest(
    pool_emb: np.ndarray, q_emb: np.ndarray, m: int, banned: set[int], labels=None, cap=None
) -> list[int]:
    """Brute-force candidates: cosine similarity, ties by index; with quotas each label's own best."""
    sims = pool_emb @ q_emb
    order = sorted((i for i in range(len(sims)) if i not in banned), key=lambda i: (-sims[i], i))
    if labels is None:
        return order[:m]
    n_labels = len(set(labels))
    per = max(cap, math.ceil(m / n_labels))
    keep = []
    for lab in dict.fromkeys(labels):
        keep += [i for i in order if labels[i] == lab][:per]
    return sorted(keep, key=lambda i: (-sims[i], i))


def naive_lm(judge, records, pool_emb, q_emb, queries, values, k, m, banned, labels=None, cap=None):
    """Per query, the ``k`` demonstrations of method ``lm`` (prompt order, most relevant last) and their scores."""
    out = []
    for qi, query in enumerate(queries):
        cands = nearest(pool_emb, q_emb[qi], m, banned[qi], labels, cap)
        asked = judge.asked(query, values[qi])
        scored = sorted(
            ((judge.score([records[i]], query, asked), i) for i in cands), key=lambda t: (-t[0], t[1])
        )
        picks, counts = [], {}
        for s, i in scored:
            if len(picks) == k:
                break
            if labels is not None:
                if counts.get(labels[i], 0) >= cap:
                    continue
                counts[labels[i]] = counts.get(labels[i], 0) + 1
            picks.append((i, s))
        out.append(list(reversed(picks)))
    return out


def naive_se2(
    judge, records, pool_emb, q_emb, queries, values, k, m, width, banned, labels=None, cap=None, fits=None
):
    """Per query, Se²'s best sequence (prompt order: the last choice first) and the running scores."""
    out = []
    for qi, query in enumerate(queries):
        cands = nearest(pool_emb, q_emb[qi], m, banned[qi], labels, cap)
        asked = judge.asked(query, values[qi])
        beams, stopped = [((), ())], []
        for _ in range(k):
            grown = []
            for b, (picks, sums) in enumerate(beams):
                for i in cands:
                    if i in picks:
                        continue
                    if labels is not None and sum(labels[j] == labels[i] for j in picks) >= cap:
                        continue
                    demos = [records[j] for j in (i, *reversed(picks))]
                    if fits is not None and not fits(demos, query):
                        continue
                    s = judge.score(demos, query, asked)
                    grown.append(((sums[-1] if sums else 0.0) + s, i, b))
            parents = {b for _, _, b in grown}
            stopped += [beam for b, beam in enumerate(beams) if b not in parents]
            grown.sort(key=lambda t: (-t[0], t[1], t[2]))
            beams = [(beams[b][0] + (i,), beams[b][1] + (total,)) for total, i, b in grown[:width]]
            if not beams:
                break
        best = min(beams + stopped, key=lambda t: (-len(t[0]), -(t[1][-1] if t[1] else 0.0), t[0]))
        out.append(list(reversed(list(zip(best[0], best[1], strict=True)))))
    return out
