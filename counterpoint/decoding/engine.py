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
* :class:`SharedForward` / :class:`SharedForwardContrast`: when the amateur is the expert itself on
  another prompt (input contrast), the real and the altered rows run as ONE forward of twice the rows over
  one cache, inside transformers' own loop (hooks on the model's forward).
* :func:`run_contrast`: puts the processor first (so it sees raw expert logits, before any warper) and
  runs transformers' greedy/sampling or beam loop. It tells the processor how rows move (never under
  greedy and sampling; under beam search, by the loop's own reorder of the expert's cache), so no step
  reads a tensor back to the host beyond what the loop itself does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel

from counterpoint import _hf
from counterpoint.batching import expand_rows, positions_from_mask
from counterpoint.decoding.scores import ContrastConfig, ExpertStep, contrast_scores

__all__ = [
    "AlteredPrompt",
    "AmateurCache",
    "CachedAmateurContrast",
    "ContrastLogitsProcessor",
    "FullPrompt",
    "LastToken",
    "SharedForward",
    "SharedForwardContrast",
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
        # How rows move between calls (see _follow); run_contrast sets it for the loop it runs.
        self.rows_move: Literal["detect", "never", "told"] = "detect"
        self._told: torch.Tensor | None = None  # (N,) rows the beam loop chose since the last call
        # Columns the expert has and the amateur lacks are allowed only up to this size (confirmed by a
        # tokenizer when one lm_head is padded past it); None means widths must agree.
        self._real_vocab: int | None = None
        self._step: ExpertStep | None = None  # the expert's log-probabilities and head, during __call__

    # -- state ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything held from the previous generation (amateur cache, followed sequences)."""
        self._prev_ids = None
        self._told = None
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

        How rows are followed depends on who runs the loop (:attr:`rows_move`):

        * ``"never"`` (set by :func:`run_contrast` around greedy and sampling): rows keep their order; only
          the shape is checked, so no step reads a tensor's value on the host;
        * ``"told"`` (set by :func:`run_contrast` around beam search): the beam loop's own row choice,
          caught where it reorders the expert's cache (:meth:`_told_rows`), is used as is;
        * ``"detect"`` (a processor handed to ``generate()`` directly, which cannot see the loop): each new
          row's ``input_ids[:, :-1]`` is matched against the previous call's rows of the same group. This
          reads one flag on the host per step (two on steps where rows moved): the only host-device
          synchronisation the processor itself adds.

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
        if not contents or self.rows_move == "never":
            return False, None
        if self.rows_move == "told":
            rows, self._told = self._told, None
            return False, rows
        prefix = input_ids[:, :-1].to(prev.device)
        same = (prefix == prev).all(dim=-1)  # (N,)
        if bool(same.all()):  # the one host read per step of "detect"
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

    def _told_rows(self, beam_idx: torch.Tensor) -> torch.Tensor:
        """The beam loop reordered the expert's cache by ``beam_idx``: note it for the next call."""
        told = self._told
        # Two reorders between calls compose: new row i continues row told[beam_idx[i]].
        self._told = beam_idx if told is None else told[beam_idx.to(told.device)]
        return beam_idx

    def _enter_loop(
        self, model: PreTrainedModel, model_kwargs: dict[str, Any], beams: bool
    ) -> Callable[[], None] | None:
        """Called by :func:`run_contrast` just before transformers' loop starts; returns an undo (or None).

        Tells the processor how rows move (:meth:`_follow`): never under greedy and sampling; under beam
        search, as the loop reorders the expert's cache, when there is one to watch.
        """
        if not beams:
            self.rows_move = "never"
            return None
        cache = _hf.cache_in(model_kwargs)
        if cache is None or hasattr(model, "_reorder_cache"):  # no cache to watch, or a model's own reorder
            return None
        self.rows_move = "told"
        return _hf.intercept_reorder(cache, self._told_rows)

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
        # The expert's log-probabilities and head, computed once for the amateur (which may need them) and
        # the scores.
        step = self._step = ExpertStep(scores, self.contrast.alpha)
        try:
            amateur = self._amateur_logits(input_ids, scores, first, beam_idx)  # (N, V')
        finally:
            self._step = None
        # "detect" compares the next call's rows with these; the other modes only need the shape.
        self._prev_ids = input_ids.detach().clone() if self.rows_move == "detect" else input_ids
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
            out = contrast_scores(scores, amateur, self.contrast, step)
            out[:, width:] = float("-inf")
            return out
        if width > vocab and (self._real_vocab is None or self._real_vocab > vocab) and first:
            raise ValueError(
                f"the amateur gives {width} logits per token but the expert gives {vocab}: their "
                "vocabularies differ. If the amateur's lm_head is only padded past a shared tokenizer, pass "
                "amateur_tokenizer= (or expert_tokenizer=) so the padding can be checked"
            )
        return contrast_scores(scores, amateur, self.contrast, step)

    def _expert_step(self, scores: torch.Tensor) -> ExpertStep:
        """This call's :class:`ExpertStep` when ``scores`` are its expert logits, else a new one (an amateur
        asked for outside :meth:`__call__`, as :mod:`counterpoint.decoding.scoring` does)."""
        step = self._step
        if step is not None and step.of(scores, self.contrast.alpha):
            return step
        return ExpertStep(scores, self.contrast.alpha)

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
        # Host to device without waiting (a host source is staged at once); other moves as usual.
        ids = ids.to(device, non_blocking=ids.device.type == "cpu" and device.type != "cpu")
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
        attention = self.mask
        if attention is not None and ids.shape[1] == 1 and self.cache is not None:
            attention = _hf.step_mask(self.model, attention)  # no host read of the mask in the step
        out = _hf.forward(
            self.model, ids, attention_mask=attention, position_ids=positions, cache=self.cache, **self._keep
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


# -- the amateur inside the expert's own forward ------------------------------------------------------------

# What generate() may hand the model besides the cache: anything else in model_kwargs could be a per-row
# tensor the doubled batch would not double, so the shared forward declines it.
_SHARED_FORWARD_KWARGS = frozenset(
    {
        "attention_mask",
        "position_ids",
        "logits_to_keep",
        "use_cache",
        "output_attentions",
        "output_hidden_states",
    }
)


class SharedForward:
    """The expert reads its real rows and the altered prompts' rows in ONE forward over ONE cache.

    Input contrast's amateur is the expert itself on another prompt, so the two need not be two model calls:
    around transformers' own loop, a forward pre-hook on the model turns each of the loop's calls into a
    ``2N``-row call (rows ``[0, N)`` the real rows exactly as the loop sent them, rows ``[N, 2N)`` the
    altered prompts, then the same tokens the real rows chose), and a forward hook hands the loop back the
    real half and keeps the altered half's next-token logits for :class:`SharedForwardContrast`. The weights
    are read once per step for both halves.

    Everything the loop does stays its own and sees ``N`` rows: sampling's random draws, stopping criteria,
    the streamer, scores, finished rows' padding. The cache is the loop's own object holding ``2N`` rows;
    beam search's reorder of it is extended to both halves (beam search moves rows only within a prompt's
    group, whose altered prompt, mask and positions are the same, so those need no reordering). The real
    rows are left-padded to the wider of the two prompts (masked columns get zero attention weight, and
    every token keeps the position the loop gave it). On leaving, the cache is cut back to the real rows
    and their own columns, so a returned cache is what greedy would return.

    Args:
        model: the expert.
        view: the altered prompts (:class:`AlteredPrompt`, rows expanded for beams and returned sequences).
    """

    def __init__(self, model: PreTrainedModel, view: AlteredPrompt) -> None:
        self.model = model
        self.view = view
        self.cache: Any = None  # the loop's cache object: a call with it is the loop's
        self.rows: int | None = None  # N, the loop's rows (set by the prefill)
        self.shift = 0  # extra left-padding columns in front of the real rows (W - T)
        self.mask: torch.Tensor | None = None  # (2N, L) attention mask of both halves
        self.next_alt: torch.Tensor | None = None  # (N, 1) next position of each altered row
        self.logits: torch.Tensor | None = None  # (N, V) altered rows' next-token logits, latest forward
        self._ours = False  # the forward now running is the loop's (doubled)
        self._padded = True  # some row of either half has padding (read once, at the prefill)
        self._call_shift = 0  # columns to drop from this call's per-token outputs (the prefill's padding)
        self._undo: list[Callable[[], None]] = []

    @staticmethod
    def unsupported(
        model: PreTrainedModel, model_kwargs: dict[str, Any], generation_config: Any
    ) -> str | None:
        """Why the shared forward cannot run under this ``generate()`` call (None when it can)."""
        cache = _hf.cache_in(model_kwargs)
        if cache is None:
            return "there is no KV cache (use_cache=False)"
        if _hf.cache_length(cache) > 0:
            return "generate() was handed a cache that already holds tokens"
        if not _hf.is_plain_cache(cache):
            return "the model's cache is not plain full attention (sliding window, recurrent, static)"
        if model.config.is_encoder_decoder or hasattr(model, "_reorder_cache"):
            return f"{type(model).__name__} is not a plain decoder-only model"
        if model_kwargs.get("position_ids") is None:
            return f"{type(model).__name__} takes no position_ids"
        others = sorted(
            k
            for k, v in model_kwargs.items()
            if v is not None and v is not cache and k not in _SHARED_FORWARD_KWARGS
        )
        if others:
            return f"generate() passes {others} to the model"
        if getattr(generation_config, "prefill_chunk_size", None) is not None:
            return "prefill_chunk_size is set (chunked prefill)"
        return None

    def attach(self, model_kwargs: dict[str, Any]) -> Callable[[], None]:
        """Install the hooks around the loop that will run with ``model_kwargs``; returns the undo."""
        self.cache = _hf.cache_in(model_kwargs)
        self._undo = [
            self.model.register_forward_pre_hook(self._before, with_kwargs=True).remove,
            self.model.register_forward_hook(self._after, with_kwargs=True).remove,
            _hf.intercept_reorder(self.cache, self._both_halves),
        ]
        return self.detach

    def detach(self) -> None:
        """Remove the hooks; cut the cache back to the real rows and their own columns."""
        for undo in self._undo:
            undo()
        self._undo = []
        if self.rows is not None:
            _hf.keep_cache_block(self.cache, self.rows, self.shift)
        self.cache = self.mask = self.next_alt = self.logits = None
        self.rows, self.shift = None, 0

    def take(self) -> torch.Tensor:
        """``(N, V)`` the altered rows' logits from the latest forward (each forward's are taken once)."""
        logits, self.logits = self.logits, None
        if logits is None:
            raise RuntimeError(
                "SharedForwardContrast found no altered rows' logits from this step's forward: it runs only "
                "inside the input_contrast strategy, first in the processor list"
            )
        return logits

    def _both_halves(self, beam_idx: torch.Tensor) -> torch.Tensor:
        """Beam search's ``(N,)`` rows for the real half, applied to both: ``(2N,)``."""
        if self.rows is None or beam_idx.shape[0] != self.rows:
            return beam_idx
        return torch.cat([beam_idx, beam_idx + self.rows])

    def _before(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> Any:
        if args or self.cache is None or _hf.cache_in(kwargs) is not self.cache:
            return None  # not a call of the loop this object serves
        ids = kwargs["input_ids"]  # (N, t)
        n, t = ids.shape
        positions = kwargs["position_ids"].expand(n, t)  # (N, t); (1, t) when generate built no mask
        prefill = self.rows is None
        if prefill:  # the prefill: real prompts and altered prompts, padded to one width
            real_mask = kwargs.get("attention_mask")
            real_mask = torch.ones_like(ids) if real_mask is None else real_mask.long()
            alt_ids, alt_mask = self.view.prompt(ids)  # (N, T')
            width = max(t, alt_ids.shape[1])
            self.rows, self.shift = n, width - t

            def pad(x: torch.Tensor) -> torch.Tensor:
                return torch.nn.functional.pad(x, (width - x.shape[1], 0))

            new_ids = torch.cat([pad(ids), pad(alt_ids)])  # (2N, W)
            self.mask = torch.cat([pad(real_mask), pad(alt_mask)])
            new_positions = torch.cat([pad(positions), pad(positions_from_mask(alt_mask))])
            self.next_alt = alt_mask.sum(-1, keepdim=True)  # (N, 1)
            self._call_shift = self.shift
        else:  # a decoding step: the altered rows follow the tokens the real rows chose
            if n != self.rows:
                raise RuntimeError(f"the loop's rows changed from {self.rows} to {n} during generation")
            new_ids = torch.cat([ids, ids])  # (2N, t)
            self.mask = torch.cat([self.mask, self.mask.new_ones(2 * n, t)], dim=-1)
            alt_positions = self.next_alt + torch.arange(t, device=ids.device)  # (N, t)
            self.next_alt = self.next_alt + t
            new_positions = torch.cat([positions, alt_positions])
            self._call_shift = 0
        if prefill:  # one host read per generation: does any row have padding at all?
            self._padded = not bool(self.mask.all())
        # A one-token step gets a 4-D mask (transformers would read a 2-D one on the host every step), or
        # none when no row has padding (as generate() drops an all-ones mask).
        mask = self.mask
        if not prefill and t == 1:
            mask = _hf.step_mask(self.model, self.mask) if self._padded else None
        kwargs.update(input_ids=new_ids, attention_mask=mask, position_ids=new_positions)
        self._ours = True
        return args, kwargs

    def _after(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        if not self._ours:
            return None
        self._ours = False
        n, shift = self.rows, self._call_shift
        logits = output.logits  # (2N, t', V)
        self.logits = logits[n:, -1]  # (N, V)
        output.logits = logits[:n]
        # Per-token extras the user asked for: the real rows, without the prefill's extra padding.
        if getattr(output, "hidden_states", None) is not None:
            output.hidden_states = tuple(h[:n, shift:] for h in output.hidden_states)
        if getattr(output, "attentions", None) is not None:
            output.attentions = tuple(a[:n, :, shift:, self.shift :] for a in output.attentions)
        return output


class SharedForwardContrast(ContrastLogitsProcessor):
    """Input contrast whose altered rows run inside the expert's own forward (:class:`SharedForward`).

    Its amateur logits are the altered half of the forward that produced this step's expert logits, so it
    works only inside a strategy that installs the shared forward (``input_contrast`` does, through
    :func:`run_contrast`); as a processor handed to ``generate()`` use :class:`CachedAmateurContrast` with
    an :class:`AlteredPrompt` view (``InputContrast``), which runs the altered rows in their own forward.

    Args:
        model: the expert.
        view: the altered prompts.
        contrast: how scores combine.
    """

    def __init__(
        self, model: PreTrainedModel, view: AlteredPrompt, contrast: ContrastConfig | None = None
    ) -> None:
        super().__init__(contrast)
        self.shared = SharedForward(model, view)

    def _enter_loop(
        self, model: PreTrainedModel, model_kwargs: dict[str, Any], beams: bool
    ) -> Callable[[], None] | None:
        if model is not self.shared.model:
            raise ValueError("SharedForwardContrast must run in generate() of the model it was built with")
        # Rows move only by the cache's own reorder, which the shared forward extends to both halves.
        self.rows_move = "never"
        return self.shared.attach(model_kwargs)

    def _amateur_logits(
        self, input_ids: torch.Tensor, scores: torch.Tensor, first: bool, beam_idx: torch.Tensor | None
    ) -> torch.Tensor:
        return self.shared.take()  # (N, V)


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
    beams = (generation_config.num_beams or 1) > 1
    undo = None
    try:
        undo = processor._enter_loop(model, model_kwargs, beams)
        if beams:
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
        if undo is not None:
            undo()
        processor.close()
        processor.rows_move = "detect"


def strategy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a ``custom_generate`` function as ours, so that generate() hands it its streamer, tokenizer and
    synced_gpus like a built-in strategy (see :func:`counterpoint._hf.ensure_strategy_kwargs`).

    The fix is installed here, when a counterpoint strategy is defined: generate() extracts those arguments
    before it calls the strategy, so the strategy's own first call would be too late. It changes nothing
    for any other callable or for the built-in strategies.
    """
    _hf.ensure_strategy_kwargs()
    return _hf.mark_strategy(fn)
