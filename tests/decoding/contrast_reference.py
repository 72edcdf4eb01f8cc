"""Naive references for the contrast tests: every step recomputes expert and amateur from scratch.

No KV cache, no hooks, no row following: the amateur's logits come from a full forward over the whole
sequence so far, so a bug in the cached engine (cache reordering, positions, padding, hooks) shows up
as a token difference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import LogitsProcessor, PreTrainedModel

from counterpoint.decoding.scores import ContrastConfig, contrast_scores

# amateur(ids (N, L), mask (N, L), expert_output) -> (N, V') amateur logits or log-probs
AmateurFn = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def full_forward(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, hidden: bool = False):
    return model(
        input_ids=ids, attention_mask=mask, position_ids=positions(mask), output_hidden_states=hidden
    )


def model_amateur(amateur: PreTrainedModel) -> AmateurFn:
    def fn(ids, mask, expert_out):
        return full_forward(amateur, ids, mask).logits[:, -1]

    return fn


def input_amateur(
    model: PreTrainedModel, alt_ids: torch.Tensor, alt_mask: torch.Tensor, prompt_len: int
) -> AmateurFn:
    """The same model on altered prompts (rows already expanded to N) followed by the generated tokens."""

    def fn(ids, mask, expert_out):
        n = ids.shape[0]
        reps = n // alt_ids.shape[0]
        a_ids = torch.cat([alt_ids.repeat_interleave(reps, 0), ids[:, prompt_len:]], dim=-1)
        a_mask = torch.cat([alt_mask.repeat_interleave(reps, 0), mask[:, prompt_len:]], dim=-1)
        return full_forward(model, a_ids, a_mask).logits[:, -1]

    return fn


def _jsd_reference(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    # Written with F.kl_div on purpose (the engine uses its own formula).
    m = 0.5 * (p_log.exp() + q_log.exp())
    kl = torch.nn.functional.kl_div
    return 0.5 * (kl(m.log(), p_log, reduction="none", log_target=True).sum(-1)) + 0.5 * (
        kl(m.log(), q_log, reduction="none", log_target=True).sum(-1)
    )


def layer_amateur(model: PreTrainedModel, layers: list[int], mode: str, norm, head) -> AmateurFn:
    """Premature logits from ``output_hidden_states`` (hidden_states[k] is the input of layer k)."""

    def fn(ids, mask, expert_out):
        logps = []
        for k in layers:
            h = expert_out.hidden_states[k][:, -1]
            logps.append(torch.log_softmax(head(norm(h)).float(), -1))
        if mode == "fixed":
            return head(norm(expert_out.hidden_states[layers[0]][:, -1]))
        if mode == "fusion":
            return sum(logps) / len(logps)
        final = torch.log_softmax(expert_out.logits[:, -1].float(), -1)
        if mode == "jsd-batch":  # old transformers DoLa: one layer for the whole batch (rows averaged)
            divs = [float(_jsd_reference(final, lp).mean()) for lp in logps]
            return logps[max(range(len(divs)), key=divs.__getitem__)]
        rows = []
        for i in range(ids.shape[0]):  # per row, one at a time
            divs = [float(_jsd_reference(final[i], lp[i])) for lp in logps]
            rows.append(logps[max(range(len(divs)), key=divs.__getitem__)][i])
        return torch.stack(rows)

    return fn


@torch.no_grad()
def naive_greedy(
    expert: PreTrainedModel,
    amateur: AmateurFn,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: ContrastConfig,
    max_new_tokens: int,
    pad_id: int = 0,
    eos_id: int = 1,
) -> torch.Tensor:
    """Greedy contrastive decoding, full recompute every step; stops like generate (all rows hit EOS)."""
    ids, mask = input_ids.clone(), attention_mask.clone()
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        out = full_forward(expert, ids, mask, hidden=True)
        scores = contrast_scores(out.logits[:, -1], amateur(ids, mask, out), config)
        nxt = torch.where(done, pad_id, scores.argmax(-1))
        ids = torch.cat([ids, nxt[:, None]], -1)
        mask = torch.cat([mask, torch.ones_like(nxt[:, None])], -1)
        done |= nxt == eos_id
        if done.all():
            break
    return ids


class NaiveProcessor(LogitsProcessor):
    """Recomputes expert (for hidden states) and amateur from scratch on every call; no cache, no state."""

    def __init__(self, expert, amateur: AmateurFn, prompt_mask: torch.Tensor, config: ContrastConfig):
        self.expert, self.amateur, self.prompt_mask, self.config = expert, amateur, prompt_mask, config

    @torch.no_grad()
    def __call__(self, input_ids, scores):
        n, length = input_ids.shape
        pm = self.prompt_mask.repeat_interleave(n // self.prompt_mask.shape[0], 0)
        mask = torch.cat([pm, pm.new_ones(n, length - pm.shape[1])], -1)
        out = full_forward(self.expert, input_ids, mask, hidden=True)
        return contrast_scores(scores, self.amateur(input_ids, mask, out), self.config)


def naive_beam(expert, amateur: AmateurFn, batch: dict, config: ContrastConfig, **gen) -> torch.Tensor:
    """transformers' beam search with caching off and a processor that recomputes everything."""
    proc = NaiveProcessor(expert, amateur, batch["attention_mask"], config)
    return expert.generate(**batch, logits_processor=[proc], use_cache=False, **gen)
