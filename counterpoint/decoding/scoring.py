"""Scoring given continuations: the log-probability of each (prompt, continuation) pair, teacher-forced,
under plain decoding or under any contrast distribution the decoders use.

Ranking answer options (TruthfulQA's multiple choice, DoLa's factuality check), verbalizer
classification and LM-scored demonstration selection all need ``log p(continuation | prompt)``; with a
contrast, the distribution is the one generation samples from: at every continuation position,
``log_softmax(contrast_scores(expert, amateur, config))``, with the same :class:`ContrastConfig` and the
same amateur sources as the strategies:

* ``None``: plain decoding, the expert's own ``log_softmax``;
* :class:`SecondModel`: a second model reading the full prompt or, as Li et al.'s code does, only its last
  token (contrastive decoding);
* :class:`EarlierLayers`: earlier layers of the expert, in any :class:`LayerContrast` mode (layer contrast);
* :class:`AlteredInput`: the expert (or another model) reading another prompt per pair (input contrast).

How a pair is computed: the pairs are grouped into batches of ``batch_size`` pairs; pairs of one batch that
share a prompt run that prompt once. Each model runs one forward over the batch's left-padded prompts
(keeping the KV cache and only the last position's logits) and one forward over the continuations on that
cache, so every position is read from two forwards, never a token-by-token loop. Earlier layers are read
by forward pre-hooks during the expert's own two forwards.

Shared prefixes (``prefix_lengths=``): prompts that differ but begin alike (the same instruction and
demonstration before different queries, as LM-scored demonstration selection builds them) can run their
common beginning once. Pairs of one batch whose first ``prefix_lengths[i]`` tokens are identical run them
in a first forward, once; each distinct prompt then runs only its remainder on a copy of its prefix's KV
cache rows, and the continuations follow as above: three forwards per batch instead of two, and the prefix
tokens computed once per batch instead of once per prompt. Pairs are ordered by prefix, so a prefix's pairs
share batches.

Tokens outside the expert's plausible head have probability 0 under the contrast distribution: such a
continuation scores ``-inf`` by default (``Scorer(outside_head=...)`` puts a finite value instead). DoLa's
TruthfulQA multiple-choice evaluation (voidism/DoLa ``tfqa_mc_eval.py``) scores differently: no mask
(``relative_top`` 0) and the unnormalized difference of log-probabilities (``post_softmax=False``). That is
``Scorer(contrast=ContrastConfig(form="difference", alpha=0), rule="raw")``: :data:`DOLA_MC`.

Example:
    >>> scorer = Scorer(SecondModel(amateur, view="last-token"), CD_PRESETS["li2022-greedy"].contrast)
    >>> score_continuations(expert, [prompt_ids] * 2, [yes_ids, no_ids], {"plain": None, "cd": scorer})
    {'plain': tensor([-1.2, -3.4]), 'cd': tensor([-0.3, -5.1])}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

from counterpoint import _hf
from counterpoint.batching import left_pad, positions_from_mask
from counterpoint.decoding.scores import ContrastConfig, contrast_scores
from counterpoint.errors import MISSING, OptionError

__all__ = [
    "DOLA_MC",
    "SCORE_RULES",
    "AlteredInput",
    "EarlierLayers",
    "Scorer",
    "SecondModel",
    "score_continuations",
]

SCORE_RULES = ("distribution", "raw")
Rule = Literal["distribution", "raw"]


@dataclass(frozen=True, eq=False)
class SecondModel:
    """A second, smaller model sharing the expert's tokenizer, read through an input view.

    Attributes:
        model: the amateur (it may sit on another device).
        view: ``"full"`` (the whole prompt) or ``"last-token"`` (the prompt's last token at position 0,
            then the continuation: Li et al.'s ``ignore_prefix``).
    """

    model: PreTrainedModel
    view: Literal["full", "last-token"] = "full"

    def __post_init__(self) -> None:
        if not isinstance(self.model, torch.nn.Module):
            raise OptionError(
                "amateur",
                type(self.model).__name__,
                "must be a loaded model (load it first to score with it)",
            )
        if self.view not in ("full", "last-token"):
            raise OptionError("amateur_view", self.view, "is not one of: full, last-token")


@dataclass(frozen=True)
class EarlierLayers:
    """Earlier layers of the expert, as :class:`~counterpoint.decoding.layer_contrast.LayerContrast` reads them.

    Attributes:
        layers: one index or several (``output_hidden_states`` indexing: 0 = the embedding output).
        mode: a :class:`LayerContrast` layer mode (``"fixed"``, ``"jsd"``, ``"fusion"``); None: ``"fixed"``
            for one layer, ``"jsd"`` for several.
    """

    layers: int | tuple[int, ...]
    mode: str | None = None


@dataclass(frozen=True, eq=False)
class AlteredInput:
    """A model reading another prompt per pair (``amateur_prompt_ids=`` of :func:`score_continuations`).

    Attributes:
        model: the amateur; None: the expert itself (input contrast).
    """

    model: PreTrainedModel | None = None


Amateur = SecondModel | EarlierLayers | AlteredInput


@dataclass(frozen=True, eq=False)
class Scorer:
    """How a continuation's tokens are scored.

    Attributes:
        amateur: the amateur source; None scores plain decoding (``log_softmax`` of the expert).
        contrast: how expert and amateur combine (ignored for plain decoding).
        rule: ``"distribution"``: the log-probability under the contrast distribution,
            ``log_softmax(contrast_scores(...))`` (what sampling draws from, and what greedy takes the
            argmax of); ``"raw"``: the contrast score itself, unnormalized (DoLa's multiple-choice scoring).
        outside_head: what a token outside the expert's plausible head scores (default ``-inf``:
            probability 0 under the contrast distribution; DoLa used -1000 when it masked).
    """

    amateur: Amateur | None = None
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    rule: Rule = "distribution"
    outside_head: float = float("-inf")

    def __post_init__(self) -> None:
        if self.amateur is not None and not isinstance(
            self.amateur, SecondModel | EarlierLayers | AlteredInput
        ):
            raise OptionError(
                "amateur", type(self.amateur).__name__,
                "must be SecondModel, EarlierLayers, AlteredInput or None (plain decoding)",
            )  # fmt: skip
        if not isinstance(self.contrast, ContrastConfig):
            raise OptionError("contrast", self.contrast, "must be a ContrastConfig")
        if self.rule not in SCORE_RULES:
            raise OptionError("rule", self.rule, f"is not one of: {', '.join(SCORE_RULES)}")
        if not isinstance(self.outside_head, int | float) or math.isnan(self.outside_head):
            raise OptionError("outside_head", self.outside_head, "must be a number (or -inf)")

    @classmethod
    def from_strategy(cls, strategy: str, options: Mapping[str, Any] | None = None, **fields: Any) -> Scorer:
        """The scorer of a strategy's next-token distribution, from the same options as generation.

        ``greedy``, ``sample`` and ``beam`` score plain decoding; ``contrastive-decoding``,
        ``layer-contrast`` and ``input-contrast`` their contrast (presets included). The search options
        (``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``num_beams``) pick tokens from that
        distribution and do not change it; they are not applied. ``fields`` set ``rule`` and
        ``outside_head``.

        Raises:
            OptionError: contrastive search (its choice is no distribution over the next token), or an
                amateur given by name (load it first).
        """
        from counterpoint.decoding.registry import get_strategy

        spec = get_strategy(strategy)
        values = spec.resolve(options)
        if spec.name in ("greedy", "sample", "beam"):
            return cls(None, **fields)
        config = ContrastConfig.from_options(values)
        if spec.name == "contrastive-decoding":
            return cls(SecondModel(values["amateur"], values["amateur_view"]), config, **fields)
        if spec.name == "layer-contrast":
            return cls(EarlierLayers(values["layers"], values["layer_mode"]), config, **fields)
        if spec.name == "input-contrast":
            return cls(AlteredInput(), config, **fields)
        raise OptionError(
            "strategy", spec.name,
            "has no next-token distribution to score (it picks among candidates by their hidden states); "
            "score plain decoding or a contrast strategy",
        )  # fmt: skip


# DoLa's TruthfulQA multiple-choice scoring (tfqa_mc_eval.py: relative_top 0, post_softmax False): the sum
# over the answer's tokens of log p_final - log p_premature, no mask, no renormalization. Pair it with an
# EarlierLayers amateur (or any other: the rule is the same).
DOLA_MC = {"contrast": ContrastConfig(form="difference", alpha=0.0, gamma=1.0, tau=1.0), "rule": "raw"}


# -- the forward passes ------------------------------------------------------------------------------------


def _device(model: torch.nn.Module) -> torch.device:
    return getattr(model, "device", None) or next(model.parameters()).device


class _LayerCapture:
    """Forward pre-hooks keeping the input hidden states ``(N, T, H)`` of chosen decoder layers."""

    def __init__(self, model: PreTrainedModel, layers: Sequence[int]) -> None:
        self.states: dict[int, torch.Tensor] = {}
        self._handles = []
        if layers:
            blocks, _, _ = _hf.decoder_parts(model)
            for k in sorted(set(layers)):

                def hook(module: torch.nn.Module, args: tuple, kwargs: dict, k: int = k) -> None:
                    self.states[k] = args[0] if args else kwargs["hidden_states"]

                self._handles.append(blocks[k].register_forward_pre_hook(hook, with_kwargs=True))

    def take(self) -> dict[int, torch.Tensor]:
        states, self.states = self.states, {}
        return states

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@dataclass
class _Forced:
    """One model's view of a batch of pairs: for every pair, the rows predicting its continuation tokens.

    ``logits`` is ``(P, V)`` fp32 with ``P`` the batch's continuation tokens, pair by pair, position by
    position (the row that predicts token ``j`` of a pair reads its prompt and the tokens before ``j``);
    ``hidden`` holds the same rows of each captured layer's input, ``(P, H)``.
    """

    logits: torch.Tensor
    hidden: dict[int, torch.Tensor]


def _run_prefixes(
    model: torch.nn.Module,
    prompts: list[tuple[int, ...]],
    cuts: list[int],
    pad_token_id: int,
    device: torch.device,
    keep: dict[str, int],
) -> tuple[Any, torch.Tensor] | None:
    """The distinct prefixes ``prompts[u][:cuts[u]]`` in one forward, each once.

    Returns:
        ``(cache, mask)``: the KV cache with one row per prompt (rows of a shared prefix copied) and its
        ``(U, P)`` mask (an empty prefix is a row of padding); None when every prefix is empty.
    """
    heads: dict[tuple[int, ...], int] = {}
    head_of = [heads.setdefault(p[:c], len(heads)) for p, c in zip(prompts, cuts, strict=True)]
    width = max(len(h) for h in heads)
    if width == 0:
        return None
    ids = torch.full((len(heads), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(heads), width), dtype=torch.long)
    for r, head in enumerate(heads):
        if head:
            ids[r, width - len(head) :] = torch.as_tensor(head)
            mask[r, width - len(head) :] = 1
    ids, mask = ids.to(device), mask.to(device)  # (H, P)
    out = _hf.forward(model, ids, attention_mask=mask, position_ids=positions_from_mask(mask), **keep)
    cache = _hf.output_cache(out)
    rows = torch.tensor(head_of, device=device)  # (U,)
    _hf.reorder_cache(cache, rows)  # (H, ...) -> (U, ...)
    return cache, mask[rows]


def _teacher_force(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    pad_token_id: int,
    capture: _LayerCapture | None = None,
    prefix_lengths: Sequence[int] | None = None,
) -> _Forced:
    """Run ``model`` over pairs (one per continuation; identical prompts run once): two forwards in all.

    With ``prefix_lengths`` (one per pair), the distinct prompt beginnings ``prompt[:prefix_lengths[i]]`` (at
    most all but the prompt's last token) run first, once each, and every distinct prompt runs only the rest
    of its tokens on its prefix's cache: three forwards.
    """
    device = _device(model)
    if capture is not None:
        capture.take()  # drop states another model's forward (an altered prompt on the expert) left
    # 1. The distinct prompts, left padded, once each; keep the cache and the last position.
    distinct: dict[tuple[int, ...], int] = {}
    owner = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]  # pair -> distinct prompt
    keys = list(distinct)
    keep = {"logits_to_keep": 1} if _hf.supports_logits_to_keep(model) else {}
    prefix = None
    if prefix_lengths is not None:
        cuts = [-1] * len(keys)
        for r, n in zip(owner, prefix_lengths, strict=True):
            if cuts[r] < 0:  # a prompt's first pair decides its prefix
                cuts[r] = min(int(n), len(keys[r]) - 1)
        prefix = _run_prefixes(model, keys, cuts, pad_token_id, device, keep)
        if prefix is not None:
            keys = [k[c:] for k, c in zip(keys, cuts, strict=True)]  # the rest of each prompt
            if capture is not None:
                capture.take()  # the prefix positions predict no continuation token
    batch = left_pad(keys, pad_token_id, device=device)
    ids, mask = batch["input_ids"], batch["attention_mask"]  # (U, T)
    if prefix is None:
        out = _hf.forward(model, ids, attention_mask=mask, position_ids=positions_from_mask(mask), **keep)
    else:
        cache, head_mask = prefix  # (U, ...), (U, P)
        positions = positions_from_mask(mask, start=head_mask.sum(-1, keepdim=True))  # (U, T)
        mask = torch.cat([head_mask, mask], dim=-1)  # (U, P + T): from here on, the whole prompt
        out = _hf.forward(model, ids, attention_mask=mask, position_ids=positions, cache=cache, **keep)
    first_logits = out.logits[:, -1].float()  # (U, V): predicts each continuation's first token
    first_hidden = {k: h[:, -1] for k, h in (capture.take() if capture else {}).items()}  # (U, H)

    # 2. Every pair's continuation minus its last token, on its prompt's cache (right padded: causal
    #    attention keeps the padding after a row's last token from reaching it).
    rows = torch.tensor(owner, device=device)  # (R,)
    steps = max(len(c) for c in continuations) - 1
    rest_logits, rest_hidden = None, {}
    if steps > 0:
        cache = _hf.output_cache(out)
        _hf.reorder_cache(cache, rows)  # (U, ...) -> (R, ...)
        inputs = torch.full((len(continuations), steps), pad_token_id, dtype=torch.long)
        for r, c in enumerate(continuations):
            inputs[r, : len(c) - 1] = torch.as_tensor(list(c[:-1]))
        inputs = inputs.to(device)  # (R, S)
        full_mask = torch.cat([mask[rows], torch.ones_like(inputs)], dim=-1)  # (R, T + S)
        start = mask.sum(-1, keepdim=True)[rows]  # (R, 1) real prompt tokens = next position
        positions = start + torch.arange(steps, device=device)  # (R, S)
        res = _hf.forward(model, inputs, attention_mask=full_mask, position_ids=positions, cache=cache)
        rest_logits = res.logits.float()  # (R, S, V)
        rest_hidden = capture.take() if capture else {}  # each (R, S, H)

    # 3. Gather, pair by pair: row j predicts token j (j = 0 from the prompt pass).
    def gather(first: torch.Tensor, rest: torch.Tensor | None) -> torch.Tensor:
        parts = []
        for r, c in enumerate(continuations):
            parts.append(first[owner[r]][None])
            if len(c) > 1:
                parts.append(rest[r, : len(c) - 1])
        return torch.cat(parts)  # (P, ...)

    logits = gather(first_logits, rest_logits)
    hidden = {k: gather(first_hidden[k], rest_hidden.get(k)) for k in first_hidden}
    return _Forced(logits, hidden)


# -- the scores ------------------------------------------------------------------------------------------


def _layer_processor(model: PreTrainedModel, amateur: EarlierLayers, contrast: ContrastConfig) -> Any:
    from counterpoint.decoding.layer_contrast import LayerContrast

    layers = amateur.layers if isinstance(amateur.layers, int | str) else list(amateur.layers)
    return LayerContrast(model, layers, amateur.mode, contrast)


def _layer_amateur(processor: Any, forced: _Forced) -> torch.Tensor:
    """The processor's amateur logits for every row of ``forced``: its own rule (fixed / jsd / fusion)
    applied to the hidden states the scorer captured, each row as one step of a generation."""
    if getattr(processor, "layer_mode", None) == "dola":
        # DoLa picks one premature layer per step for the whole batch; scoring an answer, its code
        # (lm_score) picks one per position. So every position is its own batch of one here.
        return torch.cat([_layer_rows(processor, forced, slice(i, i + 1)) for i in range(len(forced.logits))])
    return _layer_rows(processor, forced, slice(None))


def _layer_rows(processor: Any, forced: _Forced, rows: slice) -> torch.Tensor:
    processor.reset()
    processor._captured = {k: forced.hidden[k][rows] for k in processor.amateur_layers}
    logits = forced.logits[rows]
    return processor._amateur_logits(torch.zeros(len(logits), 1, dtype=torch.long), logits, True, None)


def _pick(
    scorer: Scorer, expert: torch.Tensor, amateur: torch.Tensor | None, tokens: torch.Tensor
) -> torch.Tensor:
    """``(P,)`` each row's score of its token. ``expert``: ``(P, V)``, ``amateur``: ``(P, V')``."""
    if scorer.amateur is None:
        return torch.log_softmax(expert, dim=-1).gather(-1, tokens[:, None])[:, 0]
    vocab = expert.shape[-1]
    if amateur.shape[-1] < vocab:
        raise ValueError(
            f"the amateur gives {amateur.shape[-1]} logits per token but the expert gives {vocab}: their "
            "vocabularies differ"
        )
    scores = contrast_scores(expert, amateur, scorer.contrast)  # (P, V), -inf outside the head
    if scorer.rule == "distribution":
        scores = torch.log_softmax(scores, dim=-1)
    picked = scores.gather(-1, tokens[:, None].to(scores.device))[:, 0]
    return picked.masked_fill(picked == float("-inf"), scorer.outside_head)


def _check_ids(name: str, rows: Any, n: int | None = None) -> list[list[int]]:
    if isinstance(rows, torch.Tensor) or not isinstance(rows, Sequence) or isinstance(rows, str):
        raise OptionError(name, type(rows).__name__, "must be a list of token-id lists")
    rows = [list(r) for r in rows]
    if n is not None and len(rows) != n:
        raise OptionError(name, f"<{len(rows)} rows>", f"must hold one row per pair ({n})")
    for i, r in enumerate(rows):
        if not r:
            raise OptionError(f"{name}[{i}]", r, "is empty; every row needs at least one token")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in r):
            raise OptionError(f"{name}[{i}]", r, "must hold integer token ids")
    return rows


@torch.no_grad()
def score_continuations(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    continuation_ids: Sequence[Sequence[int]],
    scorer: Scorer | Mapping[str, Scorer | None] | None = None,
    *,
    amateur_prompt_ids: Sequence[Sequence[int]] | None = None,
    batch_size: int = 8,
    pad_token_id: int = 0,
    per_token: bool = False,
    prefix_lengths: Sequence[int] | None = None,
) -> Any:
    """Score every (prompt, continuation) pair: ``sum_j score(c_j | prompt, c_<j)``.

    Args:
        model: the expert, a causal LM.
        prompt_ids: N prompts as token-id lists (each non-empty).
        continuation_ids: N continuations, the i-th scored after the i-th prompt (each non-empty).
        scorer: a :class:`Scorer`, None (plain decoding), or a mapping of names to either: several
            scorers from the same expert forwards (each amateur model still runs once per batch).
        amateur_prompt_ids: N altered prompts, for :class:`AlteredInput` scorers.
        batch_size: pairs per forward; pairs of a batch with the same prompt share its forward.
        pad_token_id: any id (padding is masked).
        per_token: return each pair's per-token scores instead of their sum.
        prefix_lengths: per pair, how many of its prompt's first tokens it may share: pairs of a batch whose
            prompts begin with the same ``prefix_lengths[i]`` tokens run them once (see the module docstring;
            the scores are the same). 0: nothing shared but identical prompts. Applies to the expert and to a
            :class:`SecondModel` reading the full prompt. None: no prefix sharing.

    Returns:
        ``(N,)`` fp32 CPU tensor of summed scores (``per_token``: a list of N ``(len(c_i),)`` tensors); for
        a mapping of scorers, a dict of those by name.

    Raises:
        OptionError: empty or mismatched rows, a bad batch size, altered prompts missing or not needed.
    """
    prompts = _check_ids("prompt_ids", prompt_ids)
    conts = _check_ids("continuation_ids", continuation_ids, len(prompts))
    if not prompts:
        raise OptionError("prompt_ids", [], "is empty; give at least one (prompt, continuation) pair")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError("batch_size", batch_size, "must be an int >= 1")
    named = dict(scorer) if isinstance(scorer, Mapping) else {"": scorer}
    scorers = {name: s if s is not None else Scorer() for name, s in named.items()}
    for name, s in scorers.items():
        if not isinstance(s, Scorer):
            raise OptionError(
                f"scorer[{name!r}]" if name else "scorer", type(s).__name__, "must be a Scorer or None"
            )
    altered = any(isinstance(s.amateur, AlteredInput) for s in scorers.values())
    if altered and amateur_prompt_ids is None:
        raise OptionError("amateur_prompt_ids", MISSING, "is needed by an AlteredInput scorer (one per pair)")
    if not altered and amateur_prompt_ids is not None:
        raise OptionError("amateur_prompt_ids", "<given>", "applies to AlteredInput scorers only")
    alt = _check_ids("amateur_prompt_ids", amateur_prompt_ids, len(prompts)) if altered else None
    if prefix_lengths is not None:
        if isinstance(prefix_lengths, torch.Tensor | str) or not isinstance(prefix_lengths, Sequence):
            raise OptionError("prefix_lengths", type(prefix_lengths).__name__, "must be a list of ints")
        if len(prefix_lengths) != len(prompts):
            raise OptionError(
                "prefix_lengths",
                f"<{len(prefix_lengths)} values>",
                f"must hold one per pair ({len(prompts)})",
            )
        bad = [n for n in prefix_lengths if isinstance(n, bool) or not isinstance(n, int) or n < 0]
        if bad:
            raise OptionError("prefix_lengths", bad[0], "must hold ints >= 0")

    layer_procs = {
        name: _layer_processor(model, s.amateur, s.contrast)
        for name, s in scorers.items()
        if isinstance(s.amateur, EarlierLayers)
    }
    capture = _LayerCapture(model, [k for p in layer_procs.values() for k in p.amateur_layers])
    # Pairs sorted so that a batch holds prompts of similar length, and a prompt's pairs sit together; with
    # prefix sharing, a prefix's pairs first.
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), prompts[i], len(conts[i])))
    if prefix_lengths is not None:  # stable: by length within a prefix
        order = sorted(order, key=lambda i: prompts[i][: prefix_lengths[i]])
    results: dict[str, list[torch.Tensor | None]] = {name: [None] * len(prompts) for name in scorers}
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            b_conts = [conts[i] for i in rows]
            tokens = torch.tensor([t for c in b_conts for t in c])  # (P,)
            b_prefix = None if prefix_lengths is None else [prefix_lengths[i] for i in rows]
            expert = _teacher_force(
                model, [prompts[i] for i in rows], b_conts, pad_token_id, capture, b_prefix
            )
            amateurs: dict[int, torch.Tensor] = {}  # id(source) -> (P, V') for model sources
            for name, s in scorers.items():
                source = s.amateur
                if source is None:
                    amateur = None
                elif isinstance(source, EarlierLayers):
                    amateur = _layer_amateur(layer_procs[name], expert)
                else:
                    key = id(source)
                    if key not in amateurs:
                        shared = None
                        if isinstance(source, SecondModel):
                            other = source.model
                            views = [prompts[i] if source.view == "full" else prompts[i][-1:] for i in rows]
                            shared = b_prefix if source.view == "full" else None
                        else:
                            other = source.model if source.model is not None else model
                            views = [alt[i] for i in rows]
                        amateurs[key] = _teacher_force(
                            other, views, b_conts, pad_token_id, None, shared
                        ).logits
                    amateur = amateurs[key]
                picked = _pick(s, expert.logits, amateur, tokens.to(expert.logits.device)).cpu()
                for i, part in zip(rows, picked.split([len(c) for c in b_conts]), strict=True):
                    results[name][i] = part
    finally:
        capture.close()
        for proc in layer_procs.values():
            proc.close()

    def finish(parts: list[torch.Tensor]) -> Any:
        return parts if per_token else torch.stack([p.sum() for p in parts])

    out = {name: finish(parts) for name, parts in results.items()}
    return out if isinstance(scorer, Mapping) else out[""]
