"""The contrast engine: the stateful processor base, the one amateur-cache mechanism, and the hand-over to
transformers' own search loops. Every expert-vs-amateur method (``contrastive_decoding``,
``layer_contrast``, ``input_contrast``) is built from these pieces; the methods themselves live one per
file beside this one.

* :class:`ContrastLogitsProcessor`: the ``LogitsProcessor`` base. It holds the :class:`ContrastConfig`,
  follows the sequences from call to call (so it can tell beam search's reordering and refuse reuse
  without :meth:`~ContrastLogitsProcessor.reset`), and turns the expert's logits and the amateur's into
  :func:`~counterpoint.decoding.scores.contrast_scores`.
* :class:`AmateurCache`: an amateur model's KV cache over a left-padded batch of rows (feed tokens, follow
  a reordering, crop, split into rows, stack rows). The transformers path (:class:`CachedAmateurContrast`)
  and the vLLM path (:class:`counterpoint.decoding.vllm.pool.AmateurPool`) both use it, so positions,
  masks and cache handling are written once.
* An amateur is a model read through an *input view*: :class:`FullPrompt` (the expert's own prompt),
  :class:`LastToken` (Li et al.'s ``ignore_prefix``: the last prompt token only, positions from 0) or
  :class:`AlteredPrompt` (another prompt per row). :class:`CachedAmateurContrast` composes any model with
  any view: a second model on the full prompt is contrastive decoding, the expert on an altered prompt is
  input contrast, a second model on an altered prompt needs nothing new.
* :func:`run_contrast`: puts the processor first (so it sees raw expert logits, before any warper) and
  runs transformers' greedy/sampling or beam loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel

from counterpoint import _hf
from counterpoint.batching import expand_rows, positions_from_mask
from counterpoint.decoding.scores import ContrastConfig, contrast_scores

__all__ = [
    "AlteredPrompt",
    "AmateurCache",
    "CachedAmateurContrast",
    "ContrastLogitsProcessor",
    "FullPrompt",
    "LastToken",
    "check_vocabularies",
    "lm_rows",
    "run_contrast",
]


class ContrastLogitsProcessor(LogitsProcessor):
    """Base of every amateur source: holds the :class:`ContrastConfig` and follows the sequences.

    Subclasses implement :meth:`_amateur_logits`. The base keeps the previous call's ``input_ids`` so
    that it can (a) detect reuse without :meth:`reset`, and (b) tell subclasses how rows were reordered
    by beam search: each new row's ``input_ids[:, :-1]`` is matched against the previous step's rows of
    the same group (``group_size`` consecutive rows share a prompt: the beams or returned sequences of
    one prompt).

    Stateful: call :meth:`reset` before each generation (the ``custom_generate`` functions do).
    """

    def __init__(self, contrast: ContrastConfig | None = None) -> None:
        if contrast is None:
            contrast = ContrastConfig()
        if not isinstance(contrast, ContrastConfig):
            raise TypeError(f"contrast={contrast!r} must be a ContrastConfig (or None for the defaults)")
        self.contrast = contrast
        # Rows per prompt (beams / returned sequences). None: reordering may come from any row.
        self.group_size: int | None = None
        self._prev_ids: torch.Tensor | None = None  # (N, L) input_ids of the previous call
        # Columns the expert has and the amateur lacks are allowed only up to this size (confirmed by a
        # tokenizer when one lm_head is padded past it); None means widths must agree.
        self._real_vocab: int | None = None

    # -- state ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything held from the previous generation (amateur cache, followed sequences)."""
        self._prev_ids = None
        self._reset_state()

    def _reset_state(self) -> None:  # subclasses drop their caches here
        pass

    def close(self) -> None:
        """Release resources the processor holds (hooks, caches). Safe to call twice."""
        self.reset()

    def __enter__(self) -> ContrastLogitsProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow(self, input_ids: torch.Tensor, contents: bool = True) -> tuple[bool, torch.Tensor | None]:
        """Relate ``input_ids`` to the previous call.

        Args:
            input_ids: ``(N, L)`` this call's sequences.
            contents: compare the tokens too (to find beam search's reordering, and reuse without
                ``reset()`` where the shapes happen to fit). False checks the shapes only, which reads no
                tensor value (no host-device synchronisation); then ``beam_idx`` is always None, for
                subclasses that hold nothing per row.

        Returns:
            ``(first, beam_idx)``: ``first`` is True on the first call of a generation; ``beam_idx`` is
            ``(N,)`` long, the previous row each new row continues, or None when rows kept their order.

        Raises:
            RuntimeError: the rows do not continue the previous call's (reuse without ``reset()``).
        """
        prev = self._prev_ids
        if prev is None:
            return True, None
        name = type(self).__name__
        hint = (
            f"{name} is stateful and was handed input_ids that do not continue the sequences it holds "
            f"from the previous step; call {name}.reset() before reusing it for another generation"
        )
        if input_ids.shape[0] != prev.shape[0] or input_ids.shape[1] != prev.shape[1] + 1:
            raise RuntimeError(
                f"{hint} (previous input_ids {tuple(prev.shape)}, now {tuple(input_ids.shape)})"
            )
        if not contents:
            return False, None
        prefix = input_ids[:, :-1].to(prev.device)
        same = (prefix == prev).all(dim=-1)  # (N,)
        if bool(same.all()):
            return False, None  # greedy/sampling: rows never move
        n = prev.shape[0]
        matches = (prefix[:, None, :] == prev[None, :, :]).all(dim=-1)  # (N, N): new row i continues old j
        group = self.group_size or n
        rows = torch.arange(n, device=prev.device)
        matches &= (rows[:, None] // group) == (rows[None, :] // group)
        if not bool(matches.any(dim=-1).all()):
            raise RuntimeError(hint)
        # Keep a row in place when it can; otherwise the first matching row (identical rows hold
        # identical amateur states, so which one does not matter).
        beam_idx = torch.where(same, rows, matches.int().argmax(dim=-1))
        return False, beam_idx

    # -- the processor contract ----------------------------------------------------------------------
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Contrast scores for the next token.

        Args:
            input_ids: ``(N, L)`` the sequences so far (prompt and generated tokens).
            scores: ``(N, V)`` the expert's raw logits or log-probabilities (this processor must come first).

        Returns:
            ``(N, V)`` fp32 contrast scores, ``-inf`` outside the expert's plausible head; a new tensor.
        """
        first, beam_idx = self._follow(input_ids)
        amateur = self._amateur_logits(input_ids, scores, first, beam_idx)  # (N, V')
        self._prev_ids = input_ids.detach().clone()
        vocab = scores.shape[-1]
        width = amateur.shape[-1]
        if width < vocab:
            if self._real_vocab is None or self._real_vocab > width:
                raise ValueError(
                    f"the amateur gives {width} logits per token but the expert gives {vocab}: their "
                    "vocabularies differ. If the expert's lm_head is only padded past a shared tokenizer, "
                    "pass expert_tokenizer= (or amateur_tokenizer=) so the padding can be checked"
                )
            # The expert's padded columns are no tokens: score them -inf, pad the amateur with zeros.
            amateur = torch.nn.functional.pad(amateur, (0, vocab - width))
            out = contrast_scores(scores, amateur, self.contrast)
            out[:, width:] = float("-inf")
            return out
        if width > vocab and (self._real_vocab is None or self._real_vocab > vocab) and first:
            raise ValueError(
                f"the amateur gives {width} logits per token but the expert gives {vocab}: their "
                "vocabularies differ. If the amateur's lm_head is only padded past a shared tokenizer, pass "
                "amateur_tokenizer= (or expert_tokenizer=) so the padding can be checked"
            )
        return contrast_scores(scores, amateur, self.contrast)

    def _amateur_logits(
        self, input_ids: torch.Tensor, scores: torch.Tensor, first: bool, beam_idx: torch.Tensor | None
    ) -> torch.Tensor:
        """``(N, V')`` amateur logits (or log-probabilities) for the next token."""
        raise NotImplementedError


def check_vocabularies(
    expert_rows: int | None,
    amateur_rows: int,
    expert_tokenizer: Any = None,
    amateur_tokenizer: Any = None,
) -> int | None:
    """Refuse an amateur whose vocabulary is not the expert's.

    Args:
        expert_rows: rows of the expert's lm_head (None: unknown yet, checked on the first step).
        amateur_rows: rows of the amateur's lm_head.
        expert_tokenizer, amateur_tokenizer: optional tokenizers; when both are given their vocabularies
            must be identical. Either one's length is the real vocabulary size, which lets lm_heads padded
            past it (to a multiple of 64, say) differ in rows.

    Returns:
        The real vocabulary size when a tokenizer was given, else None.
    """
    if expert_tokenizer is not None and amateur_tokenizer is not None:
        ve, va = expert_tokenizer.get_vocab(), amateur_tokenizer.get_vocab()
        if ve != va:
            only_e = len(set(ve.items()) - set(va.items()))
            raise ValueError(
                f"expert_tokenizer and amateur_tokenizer have different vocabularies ({len(ve)} vs {len(va)} "
                f"tokens, {only_e} (token, id) pairs differ): contrastive decoding needs a shared tokenizer"
            )
    tokenizer = expert_tokenizer if expert_tokenizer is not None else amateur_tokenizer
    real = len(tokenizer) if tokenizer is not None else None
    if expert_rows is None or expert_rows == amateur_rows:
        return real
    if real is None or real > min(expert_rows, amateur_rows):
        raise ValueError(
            f"amateur_model has {amateur_rows} vocabulary rows but the expert has {expert_rows}: the "
            "vocabularies differ. If one lm_head is only padded past a shared tokenizer, pass that tokenizer "
            f"as expert_tokenizer= (its length must be <= {min(expert_rows, amateur_rows)})"
            + (f"; got a tokenizer of length {real}" if real is not None else "")
        )
    return real


def lm_rows(model: PreTrainedModel) -> int:
    """Rows of the model's lm_head (its vocabulary as the model sees it, padding included)."""
    head = model.get_output_embeddings()
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def model_device(model: torch.nn.Module) -> torch.device:
    return getattr(model, "device", None) or next(model.parameters()).device


# -- the one amateur-cache mechanism ---------------------------------------------------------------------


class AmateurCache:
    """An amateur model's KV cache over a batch of left-padded rows.

    Rows are fed tokens column by column (:meth:`feed`); each row's positions count its real tokens only,
    so a row reads exactly what it would read alone. Padding columns are hidden by the attention mask
    (kept only while some row has padding). Every amateur in counterpoint runs through this class.

    Args:
        model: a causal LM (eval mode); its logits come back on its own device.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # (R, L) 1 = real token; None while no row has padding
        self.lengths: torch.Tensor | None = None  # (R, 1) real tokens per row (= the next position)
        self._keep = {"logits_to_keep": 1} if _hf.supports_logits_to_keep(model) else {}

    @property
    def rows(self) -> int:
        return 0 if self.lengths is None else int(self.lengths.shape[0])

    @property
    def width(self) -> int:
        """Columns the cache holds, padding included."""
        return 0 if self.cache is None else _hf.cache_length(self.cache)

    def feed(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Append ``ids`` to every row and return each row's next-token logits.

        Args:
            ids: ``(R, T)`` new columns (the first call sets R).
            mask: ``(R, T)`` 1 for real tokens; zeros may only lead a row on its first feed (left padding).
                None: all real.

        Returns:
            ``(R, V)`` logits after each row's last token, on the model's device.
        """
        device = model_device(self.model)
        ids = ids.to(device)
        start = (
            torch.zeros(ids.shape[0], 1, dtype=torch.long, device=device)
            if self.lengths is None
            else self.lengths
        )
        if mask is None:
            new_mask = None
            positions = start + torch.arange(ids.shape[1], device=device)  # (R, T)
            added = ids.shape[1]
        else:
            new_mask = mask.to(device).long()
            positions = positions_from_mask(new_mask, start)
            added = new_mask.sum(-1, keepdim=True)
        if new_mask is not None and not bool(new_mask.all()):
            old = (
                self.mask
                if self.mask is not None
                else torch.ones(ids.shape[0], self.width, dtype=torch.long, device=device)
            )
            self.mask = torch.cat([old, new_mask], dim=-1)
        elif self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones(ids.shape[0], ids.shape[1])], dim=-1)
        out = _hf.forward(
            self.model, ids, attention_mask=self.mask, position_ids=positions, cache=self.cache, **self._keep
        )
        self.cache = _hf.output_cache(out)
        self.lengths = start + added
        return out.logits[:, -1]  # (R, V)

    def reorder(self, rows: torch.Tensor) -> None:
        """Row ``i`` becomes old row ``rows[i]`` (beam search)."""
        _hf.reorder_cache(self.cache, rows)
        self.lengths = self.lengths[rows.to(self.lengths.device)]
        if self.mask is not None:
            self.mask = self.mask[rows.to(self.mask.device)]

    def crop(self, length: int) -> None:
        """Keep the first ``length`` tokens of a single unpadded row."""
        if self.rows != 1 or self.mask is not None:
            raise RuntimeError("AmateurCache.crop works on one unpadded row")
        _hf.crop_cache(self.cache, length)
        self.lengths = self.lengths.new_full((1, 1), length)

    def row(self, r: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Row ``r``'s keys and values per layer, padding dropped, each ``(H_kv, length, D)`` (views)."""
        return _hf.cache_rows(self.cache, r, int(self._pads()[r]))

    def single(self, r: int) -> AmateurCache:
        """A copy of row ``r`` as its own single-row, unpadded cache."""
        return AmateurCache.stack(self.model, [(self, r)])

    @classmethod
    def stack(cls, model: PreTrainedModel, parts: list[tuple[AmateurCache, int]]) -> AmateurCache:
        """A new batched cache (copies) of the given ``(cache, row)`` pairs, left-padded to the longest."""
        new = cls(model)
        new.cache, pads = _hf.cache_from_rows(model, [cache.row(r) for cache, r in parts])
        device = pads.device
        new.lengths = torch.tensor([int(cache.lengths[r]) for cache, r in parts], device=device)[:, None]
        if bool((pads > 0).any()):
            width = _hf.cache_length(new.cache)
            new.mask = (torch.arange(width, device=device)[None, :] >= pads[:, None]).long()
        return new

    def _pads(self) -> torch.Tensor:
        """``(R,)`` left-padding columns of each row."""
        if self.mask is None:
            return torch.zeros(self.rows, dtype=torch.long)
        return (self.mask == 0).sum(-1)


# -- input views: what the amateur reads ------------------------------------------------------------------


@dataclass
class FullPrompt:
    """The amateur reads the expert's own prompt.

    Args:
        attention_mask: ``(B, T)`` the prompt's mask as passed to ``generate`` (left padded); rows are
            repeated for beams. None: leading ``pad_token_id`` tokens count as padding (or none, when
            ``pad_token_id`` is None too).
        pad_token_id: see above.
    """

    attention_mask: torch.Tensor | None = None
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.attention_mask is not None and self.attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be (B, T), got shape {tuple(self.attention_mask.shape)}")

    def rows(self) -> int | None:
        return None if self.attention_mask is None else int(self.attention_mask.shape[0])

    def prompt(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t = input_ids.shape
        if self.attention_mask is not None:
            if self.attention_mask.shape[-1] != t:
                raise ValueError(
                    f"attention_mask has {self.attention_mask.shape[-1]} columns but the prompt has {t} tokens"
                )
            return input_ids, expand_rows(self.attention_mask, n, "attention_mask").to(input_ids.device)
        if self.pad_token_id is not None:
            return input_ids, ((input_ids != self.pad_token_id).long().cumsum(-1) > 0).long()  # leading pads
        return input_ids, torch.ones_like(input_ids)


@dataclass
class LastToken:
    """The amateur reads only the prompt's last token, at position 0, then the continuation.

    Li et al.'s reference code (XiangLi1999/ContrastiveDecoding, ``ignore_prefix=True``, on by default in
    their runs) feeds the amateur this way. With left padding the last column is every row's last token.
    """

    def rows(self) -> int | None:
        return None

    def prompt(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last = input_ids[:, -1:]
        return last, torch.ones_like(last)


@dataclass
class AlteredPrompt:
    """The amateur reads another prompt per row (a noisy instruction, no context, no demonstrations, ...).

    Args:
        input_ids: ``(B, T')`` altered prompts, left padded, one per prompt of the batch.
        attention_mask: ``(B, T')``; default all ones.
        vocab_size: when given, ids outside ``[0, vocab_size)`` are refused.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        ids = self.input_ids
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise ValueError(
                f"amateur_input_ids must be a (B, T') tensor of token ids, got {getattr(ids, 'shape', type(ids).__name__)}"
            )
        if ids.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
            raise ValueError(f"amateur_input_ids must hold integer token ids, got dtype {ids.dtype}")
        mask = self.attention_mask if self.attention_mask is not None else torch.ones_like(ids)
        if mask.shape != ids.shape:
            raise ValueError(
                f"amateur_attention_mask shape {tuple(mask.shape)} does not match amateur_input_ids {tuple(ids.shape)}"
            )
        if not bool(mask[:, -1].all()):
            raise ValueError("amateur_attention_mask must be left padded: every row's last column must be 1")
        if (
            self.vocab_size is not None
            and ids.numel()
            and (int(ids.max()) >= self.vocab_size or int(ids.min()) < 0)
        ):
            raise ValueError(
                f"amateur_input_ids holds ids outside the model's vocabulary [0, {self.vocab_size})"
            )
        self.input_ids = ids.long()
        self.attention_mask = mask.long().to(ids.device)

    def rows(self) -> int | None:
        return int(self.input_ids.shape[0])

    def prompt(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = input_ids.shape[0]
        return (
            expand_rows(self.input_ids, n, "amateur_input_ids").to(input_ids.device),
            expand_rows(self.attention_mask, n, "amateur_attention_mask").to(input_ids.device),
        )


InputView = FullPrompt | LastToken | AlteredPrompt


class CachedAmateurContrast(ContrastLogitsProcessor):
    """A model read through an input view, with its own KV cache, following the expert's rows.

    On the first step the amateur reads ``view.prompt(...)``; after that, every step feeds it the token the
    expert just chose (``input_ids[:, -1]``), after reordering its cache to follow beam search. Finished
    rows keep being fed (pad tokens); their scores are never used.

    Stateful: holds the amateur's cache for the current generation; call :meth:`reset` between generations.

    Args:
        model: the amateur (a second model, or the expert itself for an altered prompt).
        view: what it reads (:class:`FullPrompt`, :class:`LastToken` or :class:`AlteredPrompt`).
        contrast: how scores combine (default ``ContrastConfig()``).
    """

    def __init__(
        self, model: PreTrainedModel, view: InputView, contrast: ContrastConfig | None = None
    ) -> None:
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"the amateur must be a transformers PreTrainedModel, got {type(model).__name__}")
        super().__init__(contrast)
        self.model = model
        self.view = view
        self._reset_state()

    def _reset_state(self) -> None:
        self._amateur = AmateurCache(self.model)

    @torch.no_grad()
    def _amateur_logits(
        self, input_ids: torch.Tensor, scores: torch.Tensor, first: bool, beam_idx: torch.Tensor | None
    ) -> torch.Tensor:
        if first:
            rows = self.view.rows()
            if self.group_size is None and rows and input_ids.shape[0] % rows == 0:
                self.group_size = input_ids.shape[0] // rows
            ids, mask = self.view.prompt(input_ids)  # (N, T_a)
            return self._amateur.feed(ids, mask)
        if beam_idx is not None:  # follow beam search: row i now continues old row beam_idx[i]
            self._amateur.reorder(beam_idx)
        return self._amateur.feed(input_ids[:, -1:])


# -- running a contrast strategy --------------------------------------------------------------------------


def run_contrast(
    model: PreTrainedModel,
    processor: ContrastLogitsProcessor,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList | None,
    stopping_criteria: Any,
    generation_config: Any,
    synced_gpus: bool,
    streamer: Any,
    model_kwargs: dict[str, Any],
) -> Any:
    """Run transformers' own loop with ``processor`` first in the list; always release it after."""
    if getattr(generation_config, "num_beam_groups", 1) not in (None, 1):
        raise ValueError(
            "contrast strategies support greedy, sampling and beam search, not group beam search"
        )
    processor.reset()
    # Rows per prompt: generate expanded each prompt to num_beams / num_return_sequences adjacent rows.
    processor.group_size = max(generation_config.num_beams or 1, generation_config.num_return_sequences or 1)
    processors = LogitsProcessorList([processor, *(logits_processor or [])])
    try:
        if (generation_config.num_beams or 1) > 1:
            return _hf.run_beam_loop(
                model, input_ids, processors, stopping_criteria, generation_config, synced_gpus, model_kwargs
            )
        return _hf.run_sample_loop(
            model,
            input_ids,
            processors,
            stopping_criteria,
            generation_config,
            synced_gpus,
            streamer,
            model_kwargs,
        )
    finally:
        processor.close()


def strategy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a ``custom_generate`` function as ours, so that generate() hands it its streamer, tokenizer and
    synced_gpus like a built-in strategy (see :func:`counterpoint._hf.ensure_strategy_kwargs`).

    The fix is installed here, when a counterpoint strategy is defined: generate() extracts those arguments
    before it calls the strategy, so the strategy's own first call would be too late. It changes nothing
    for any other callable or for the built-in strategies.
    """
    _hf.ensure_strategy_kwargs()
    return _hf.mark_strategy(fn)
