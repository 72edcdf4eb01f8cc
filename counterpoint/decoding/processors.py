"""Expert-vs-amateur contrast as ``transformers`` logits processors: one engine, three amateur sources.

Every source turns the expert's next-token logits ``(N, V)`` into contrast scores with
:func:`~counterpoint.decoding.scores.contrast_scores`; they differ only in where the amateur's logits come
from:

* :class:`ModelContrast` - a second, smaller model sharing the expert's tokenizer (Li et al. 2022;
  O'Brien and Lewis 2023). It keeps its own KV cache, advanced one token per step.
* :class:`LayerContrast` - an earlier layer of the expert (DoLa, Chuang et al. 2023; the multi-layer
  fusion of "Lower Layer Matters", Chen et al. 2024): the final norm and lm_head applied to an
  intermediate hidden state captured from the expert's own forward pass, so it costs one extra lm_head
  (or, under greedy and sampling, only the lm_head rows of the expert's plausible head: ``head_only``).
* :class:`InputContrast` - the expert on an altered prompt, one per row (Instructive Decoding, Kim et
  al. 2024; Contrastive Input Decoding, Yona et al. 2023; context-aware decoding, Shi et al. 2023), with
  its own KV cache.

The processors are stateful. They must be the FIRST processor in the list, so that they see the
expert's raw logits (under sampling) or log-probabilities (under beam search; the contrast score is the
same for both) before any temperature/top-k/top-p warper. Call :meth:`ContrastLogitsProcessor.reset`
between two generations: a processor handed ``input_ids`` that do not continue the sequences it holds
raises a ``RuntimeError`` instead of silently contrasting against a stale amateur. The ``custom_generate``
functions in :mod:`counterpoint.decoding.contrast_generate` do all of this for you.

Example:
    >>> proc = ModelContrast(amateur, ContrastConfig(form="beta", beta=0.5), attention_mask=batch["attention_mask"])
    >>> out = expert.generate(**batch, logits_processor=[proc], do_sample=False, max_new_tokens=20)
    >>> proc.reset()  # before the next generate() call with the same processor
"""

from __future__ import annotations

import weakref
from typing import Any, Literal

import torch
from transformers import LogitsProcessor, PreTrainedModel

from counterpoint.decoding.scores import ContrastConfig, contrast_scores, plausible_head

__all__ = [
    "HEAD_ONLY_MAX_FRACTION",
    "ContrastLogitsProcessor",
    "InputContrast",
    "LayerContrast",
    "ModelContrast",
    "check_vocabularies",
    "decoder_parts",
]

LayerMode = Literal["fixed", "jsd", "fusion"]

# LayerContrast(head_only=True) gathers the lm_head rows of the union of the batch's plausible heads only
# while that union holds at most this share of the vocabulary; above it, it runs the full lm_head. The
# gathered path copies the chosen rows (index_select) and then multiplies them, so it touches each
# gathered row twice where the full product reads every row once: it stops paying well before half the
# vocabulary. A quarter leaves room for the union, the scatter and the extra log-softmax it adds. Typical
# heads (alpha = 0.1 on a trained model) are a handful of tokens, far below it.
HEAD_ONLY_MAX_FRACTION = 0.25


class ContrastLogitsProcessor(LogitsProcessor):
    """Base of the three amateur sources: holds the :class:`ContrastConfig` and follows the sequences.

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

    def _follow(self, input_ids: torch.Tensor) -> tuple[bool, torch.Tensor | None]:
        """Relate ``input_ids`` to the previous call.

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


def _lm_rows(model: PreTrainedModel) -> int:
    head = model.get_output_embeddings()
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def _model_device(model: PreTrainedModel) -> torch.device:
    return getattr(model, "device", None) or next(model.parameters()).device


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """``(N, T)`` position ids from a left-padded mask, as transformers' generate builds them."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


class _CachedAmateur(ContrastLogitsProcessor):
    """An amateur forward with its own KV cache that follows the expert's rows token by token.

    Subclasses say which model runs and on which prompt (:meth:`_prompt`). After the prompt, every step
    feeds the token the expert just chose (``input_ids[:, -1]``) after reordering the cache to follow
    beam search. Finished rows keep being fed (pad tokens); their scores are never used.
    """

    def __init__(self, model: PreTrainedModel, contrast: ContrastConfig | None) -> None:
        super().__init__(contrast)
        self.model = model
        self._keep = model._supports_logits_to_keep() if hasattr(model, "_supports_logits_to_keep") else False
        self._reset_state()

    def _reset_state(self) -> None:
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # (N, L_a) amateur attention mask, None when unpadded
        self._pos: torch.Tensor | None = None  # (N, 1) position of the last token fed

    def _prompt(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)``, both ``(N, T_a)``: the amateur's prompt for the expert's rows ``input_ids``."""
        raise NotImplementedError

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor) -> torch.Tensor:
        device = _model_device(self.model)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keep else {}
        out = self.model(
            input_ids=ids.to(device),
            attention_mask=None if mask is None else mask.to(device),
            position_ids=pos.to(device),
            past_key_values=self._cache,
            use_cache=True,
            **kwargs,
        )
        self._cache = out.past_key_values
        return out.logits[:, -1]  # (N, V')

    @torch.no_grad()
    def _amateur_logits(
        self, input_ids: torch.Tensor, scores: torch.Tensor, first: bool, beam_idx: torch.Tensor | None
    ) -> torch.Tensor:
        if first:
            ids, mask = self._prompt(input_ids)  # (N, T_a)
            pos = _positions(mask)
            padded = not bool(mask.all())
            self._mask = mask if padded else None
            self._pos = pos[:, -1:]
            return self._forward(ids, self._mask, pos)
        if beam_idx is not None:  # follow beam search: row i now continues old row beam_idx[i]
            self._cache.reorder_cache(beam_idx)
            self._pos = self._pos[beam_idx.to(self._pos.device)]
            if self._mask is not None:
                self._mask = self._mask[beam_idx.to(self._mask.device)]
        self._pos = self._pos + 1
        if self._mask is not None:
            self._mask = torch.cat([self._mask, self._mask.new_ones(self._mask.shape[0], 1)], dim=-1)
        return self._forward(input_ids[:, -1:], self._mask, self._pos)


def _expand_rows(t: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """Repeat each of ``t``'s B rows ``n // B`` times (beams / returned sequences sit together)."""
    b = t.shape[0]
    if n % b:
        raise ValueError(f"{name} has {b} rows but generation runs {n} rows: {n} is not a multiple of {b}")
    return t.repeat_interleave(n // b, dim=0) if n != b else t


class ModelContrast(_CachedAmateur):
    """The amateur is a second, smaller model sharing the expert's tokenizer.

    Stateful: holds the amateur's KV cache for the current generation; call :meth:`reset` before reusing
    it (the ``contrastive_decoding`` custom_generate function does).

    Args:
        amateur_model: causal LM with the expert's vocabulary. It may sit on another device; its logits are
            moved to the expert's device. Its lm_head may be padded past the shared tokenizer.
        contrast: how scores combine (default ``ContrastConfig()``).
        attention_mask: ``(B, T)`` the prompt's attention mask as passed to ``generate`` (left padded).
            Needed for padded batches; rows are repeated for beams. When omitted, leading ``pad_token_id``
            tokens count as padding.
        pad_token_id: used only when ``attention_mask`` is None (default: the amateur's generation config).
        expert_model: lets the vocabularies be checked now rather than on the first step.
        expert_tokenizer, amateur_tokenizer: see :func:`check_vocabularies`.
    """

    def __init__(
        self,
        amateur_model: PreTrainedModel,
        contrast: ContrastConfig | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        pad_token_id: int | None = None,
        expert_model: PreTrainedModel | None = None,
        expert_tokenizer: Any = None,
        amateur_tokenizer: Any = None,
    ) -> None:
        if not isinstance(amateur_model, PreTrainedModel):
            raise TypeError(
                f"amateur_model must be a transformers PreTrainedModel, got {type(amateur_model).__name__}"
            )
        super().__init__(amateur_model, contrast)
        self._real_vocab = check_vocabularies(
            _lm_rows(expert_model) if expert_model is not None else None,
            _lm_rows(amateur_model),
            expert_tokenizer,
            amateur_tokenizer,
        )
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be (B, T), got shape {tuple(attention_mask.shape)}")
        self.attention_mask = attention_mask
        if pad_token_id is None:
            pad_token_id = amateur_model.generation_config.pad_token_id
        self.pad_token_id = pad_token_id

    def _prompt(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t = input_ids.shape
        if self.attention_mask is not None:
            if self.attention_mask.shape[-1] != t:
                raise ValueError(
                    f"attention_mask has {self.attention_mask.shape[-1]} columns but the prompt has {t} tokens"
                )
            mask = _expand_rows(self.attention_mask, n, "attention_mask").to(input_ids.device)
            if self.group_size is None:
                self.group_size = n // self.attention_mask.shape[0]
        elif self.pad_token_id is not None:
            mask = ((input_ids != self.pad_token_id).long().cumsum(-1) > 0).long()  # leading pads only
        else:
            mask = torch.ones_like(input_ids)
        return input_ids, mask


class InputContrast(_CachedAmateur):
    """The amateur is the expert itself on an altered prompt, one per row, with its own KV cache.

    The altered prompt (a noisy or opposite instruction, a perturbed input, the prompt without its context
    or without its demonstrations; see :mod:`counterpoint.decoding.altered`) is followed by the same
    generated tokens as the real row: the amateur scores ``p(y_t | x', y_<t)``.

    Stateful: holds the altered rows' KV cache; call :meth:`reset` before reusing it.

    Args:
        model: the expert (or any model sharing its vocabulary).
        amateur_input_ids: ``(B, T')`` altered prompts, left padded, one per prompt of the batch.
        amateur_attention_mask: ``(B, T')``; default: all ones (no padding).
        contrast: how scores combine. Instructive Decoding's reference code corresponds to
            ``ContrastConfig(form="difference", gamma=0.3)`` (their epsilon) with a small ``alpha``.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        amateur_input_ids: torch.Tensor,
        amateur_attention_mask: torch.Tensor | None = None,
        contrast: ContrastConfig | None = None,
    ) -> None:
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
        if not isinstance(amateur_input_ids, torch.Tensor) or amateur_input_ids.dim() != 2:
            raise ValueError(
                "amateur_input_ids must be a (B, T') tensor of token ids, got "
                f"{getattr(amateur_input_ids, 'shape', type(amateur_input_ids).__name__)}"
            )
        if amateur_input_ids.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
            raise ValueError(
                f"amateur_input_ids must hold integer token ids, got dtype {amateur_input_ids.dtype}"
            )
        if amateur_attention_mask is None:
            amateur_attention_mask = torch.ones_like(amateur_input_ids)
        if amateur_attention_mask.shape != amateur_input_ids.shape:
            raise ValueError(
                f"amateur_attention_mask shape {tuple(amateur_attention_mask.shape)} does not match "
                f"amateur_input_ids {tuple(amateur_input_ids.shape)}"
            )
        if not bool(amateur_attention_mask[:, -1].all()):
            raise ValueError("amateur_attention_mask must be left padded: every row's last column must be 1")
        vocab = _lm_rows(model)
        if amateur_input_ids.numel() and (
            int(amateur_input_ids.max()) >= vocab or int(amateur_input_ids.min()) < 0
        ):
            raise ValueError(f"amateur_input_ids holds ids outside the model's vocabulary [0, {vocab})")
        super().__init__(model, contrast)
        self.amateur_input_ids = amateur_input_ids.long()
        self.amateur_attention_mask = amateur_attention_mask.long()

    def _prompt(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = input_ids.shape[0]
        if self.group_size is None and n % self.amateur_input_ids.shape[0] == 0:
            self.group_size = n // self.amateur_input_ids.shape[0]
        ids = _expand_rows(self.amateur_input_ids, n, "amateur_input_ids")
        mask = _expand_rows(self.amateur_attention_mask, n, "amateur_attention_mask")
        return ids, mask


def decoder_parts(model: PreTrainedModel) -> tuple[torch.nn.ModuleList, torch.nn.Module, torch.nn.Module]:
    """``(layers, final_norm, lm_head)`` of a decoder-only causal LM (Llama/Qwen/Mistral/GPT-2 layouts).

    Raises:
        ValueError: the model's layout is not one of the known ones.
    """
    base = getattr(model, "base_model", None)
    layers = next(
        (
            getattr(base, name)
            for name in ("layers", "h", "blocks")
            if isinstance(getattr(base, name, None), torch.nn.ModuleList)
        ),
        None,
    )
    norm = next(
        (
            getattr(base, name)
            for name in ("norm", "ln_f", "final_layernorm", "final_layer_norm")
            if isinstance(getattr(base, name, None), torch.nn.Module)
        ),
        None,
    )
    head = model.get_output_embeddings()
    if layers is None or norm is None or head is None:
        raise ValueError(
            f"layer contrast cannot find the decoder layers, final norm and lm_head of {type(model).__name__}: "
            "supported layouts are base_model.{layers|h|blocks} with base_model.{norm|ln_f|final_layernorm}"
        )
    return layers, norm, head


class LayerContrast(ContrastLogitsProcessor):
    """The amateur is an earlier layer of the expert, read from the expert's own forward pass.

    ``amateur_layers`` index the hidden states the way ``output_hidden_states`` does: ``k`` is the input
    of decoder layer ``k`` (0 is the embedding output, ``L - 1`` the input of the last layer), valid in
    ``[0, L - 1]``. A forward pre-hook on each chosen layer keeps the last position's hidden state; the
    expert's final norm and lm_head turn it into logits (models that scale or soft-cap their logits after
    the lm_head are not corrected for).

    Modes:
        * ``"fixed"``: one layer.
        * ``"jsd"``: per row and per step, the candidate layer whose next-token distribution is furthest
          from the final layer's in Jensen-Shannon divergence (DoLa's dynamic premature layer; old
          transformers DoLa picked one layer for the whole batch, here every row picks its own).
        * ``"fusion"``: the mean of the chosen layers' log-probabilities, i.e. their normalized geometric
          mean, as one amateur (after the multi-layer fusion of "Lower Layer Matters", Chen et al. 2024;
          the rule here is ours: an unweighted log-linear pool).

    Head only (``head_only=True``, modes ``"fixed"`` and ``"fusion"``): inside the expert's plausible head
    the amateur enters the score only through ``z_a(v) = l_a(v) / tau - logsumexp(l_a / tau)`` (for
    fusion, the mean of such terms over the layers), and outside it the score is ``-inf``. The
    ``logsumexp`` is one constant per row, so it is dropped, and then only the head tokens' amateur logits
    are needed: the lm_head rows of the union of the rows' heads are gathered and multiplied (``O(|head| x
    H)`` instead of ``O(V x H)``). The scores then differ from :func:`contrast_scores` by a per-row
    constant, which changes neither the argmax (greedy) nor any softmax taken afterwards (sampling after
    temperature / top-k / top-p / min-p / typical warpers): the same tokens, up to float rounding in the
    last bits (a near-tie could break the other way). It is NOT valid where scores are compared across
    rows or accumulated (beam search: a processor that sees rows reordered raises ``RuntimeError``), nor
    with processors after it that are not shift invariant (repetition penalty), nor for ``output_scores``
    users who need the formula's values; ``"jsd"`` needs the full distributions and refuses it. When the
    union of the heads exceeds :data:`HEAD_ONLY_MAX_FRACTION` of the vocabulary, or the lm_head is not a
    plain ``nn.Linear``, that step runs the full, exact path. The ``layer_contrast`` custom_generate
    function turns it on by itself when all of this is known to hold.

    Stateful: hooks stay on the model until :meth:`close` (or leaving a ``with`` block); call
    :meth:`reset` between generations. Must be the first processor (it reads the raw expert logits).

    Args:
        model: the expert.
        amateur_layers: one index or a list of indices.
        layer_mode: ``"fixed"``, ``"jsd"`` or ``"fusion"``; default ``"fixed"`` for one index, ``"jsd"``
            for a list.
        contrast: how scores combine (DoLa itself is ``ContrastConfig(form="difference", gamma=1.0)``).
        head_only: compute the amateur on the expert's plausible head only (see above). Default False:
            the exact scores, valid under every search.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        amateur_layers: int | list[int],
        layer_mode: LayerMode | None = None,
        contrast: ContrastConfig | None = None,
        head_only: bool = False,
    ) -> None:
        super().__init__(contrast)
        layers, self._norm, self._head = decoder_parts(model)
        n_layers = len(layers)
        chosen = [amateur_layers] if isinstance(amateur_layers, int) else list(amateur_layers)
        if not chosen or not all(isinstance(k, int) and not isinstance(k, bool) for k in chosen):
            raise ValueError(f"amateur_layers={amateur_layers!r} must be an int or a non-empty list of ints")
        bad = [k for k in chosen if not 0 <= k < n_layers]
        if bad:
            raise ValueError(
                f"amateur_layers={amateur_layers!r}: layer index {bad[0]} is out of range; {type(model).__name__} "
                f"has {n_layers} decoder layers, so valid indices are 0..{n_layers - 1} (0 = embeddings; "
                f"{n_layers} would be the expert's own final layer)"
            )
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"amateur_layers={amateur_layers!r} repeats a layer")
        if layer_mode is None:
            layer_mode = "fixed" if len(chosen) == 1 else "jsd"
        if layer_mode not in ("fixed", "jsd", "fusion"):
            raise ValueError(f"layer_mode={layer_mode!r} is not a mode; use 'fixed', 'jsd' or 'fusion'")
        if layer_mode == "fixed" and len(chosen) != 1:
            raise ValueError(
                f"layer_mode='fixed' takes one layer but amateur_layers={amateur_layers!r}; use 'jsd' or 'fusion'"
            )
        if not isinstance(head_only, bool):
            raise TypeError(f"head_only={head_only!r} must be True or False")
        if head_only and layer_mode == "jsd":
            raise ValueError(
                "head_only=True needs layer_mode 'fixed' or 'fusion': layer_mode='jsd' chooses the premature "
                "layer by Jensen-Shannon divergence, which needs the full distributions"
            )
        self.model = model
        self.amateur_layers = chosen
        self.layer_mode: LayerMode = layer_mode
        self.head_only = head_only
        self._layers = layers
        self._captured: dict[int, torch.Tensor] = {}
        self._hooks: list[Any] = []
        self._attach()

    def _attach(self) -> None:
        if self._hooks:
            return
        # The hooks hold only a weak reference, and a finalizer removes them, so a processor dropped
        # without close() does not leave hooks on the model.
        this = weakref.ref(self)
        for k in self.amateur_layers:

            def hook(module: torch.nn.Module, args: tuple, kwargs: dict, k: int = k) -> None:
                owner = this()
                if owner is not None:
                    hidden = args[0] if args else kwargs["hidden_states"]  # (N, T, H)
                    owner._captured[k] = hidden[:, -1].detach().clone()  # (N, H)

            self._hooks.append(self._layers[k].register_forward_pre_hook(hook, with_kwargs=True))
        self._finalizer = weakref.finalize(self, _remove_hooks, list(self._hooks))

    def reset(self) -> None:
        """Forget the previous generation and (re)attach the hooks if :meth:`close` removed them."""
        super().reset()
        self._captured = {}
        self._attach()

    def close(self) -> None:
        """Remove the hooks from the model."""
        _remove_hooks(self._hooks)
        self._hooks = []
        self._captured = {}
        self._prev_ids = None

    @torch.no_grad()
    def _amateur_logits(
        self, input_ids: torch.Tensor, scores: torch.Tensor, first: bool, beam_idx: torch.Tensor | None
    ) -> torch.Tensor:
        if not self._hooks:
            raise RuntimeError("LayerContrast was closed (its hooks removed); call reset() to reattach them")
        captured = [self._captured.pop(k, None) for k in self.amateur_layers]
        if any(h is None or h.shape[0] != scores.shape[0] for h in captured):
            raise RuntimeError(
                "LayerContrast found no hidden state of this step's forward pass: it must be used in "
                "generate() of the model it was built on"
            )
        hidden = torch.stack(captured)  # (C, N, H)
        if self.head_only:
            if beam_idx is not None:
                raise RuntimeError(
                    "LayerContrast(head_only=True) saw rows reordered (beam search): its scores are shifted "
                    "by a per-row constant, which beam search would accumulate; use head_only=False"
                )
            fast = self._head_logits(hidden, scores)
            if fast is not None:
                return fast
        logits = self._head(self._norm(hidden)).float().to(scores.device)  # (C, N, V)
        if self.layer_mode == "fixed":
            return logits[0]
        logp = torch.log_softmax(logits, dim=-1)  # (C, N, V)
        if self.layer_mode == "fusion":
            return logp.mean(dim=0)  # (N, V): log of the geometric mean, renormalized downstream
        # jsd: per row, the layer furthest from the final distribution.
        final = torch.log_softmax(scores.float(), dim=-1)[None]  # (1, N, V)
        jsd = _jsd(final.expand_as(logp), logp)  # (C, N)
        pick = jsd.argmax(dim=0)  # (N,)
        return logp.gather(0, pick[None, :, None].expand(1, *logp.shape[1:]))[0]  # (N, V)

    def _head_logits(self, hidden: torch.Tensor, scores: torch.Tensor) -> torch.Tensor | None:
        """The amateur on the union of the rows' plausible heads only, ``-inf`` elsewhere.

        Args:
            hidden: ``(C, N, H)`` captured hidden states of the chosen layers.
            scores: ``(N, V)`` the expert's logits.

        Returns:
            ``(N, V)`` fp32: on the head tokens, amateur logits (fixed) or layer-averaged log-probabilities
            over the union (fusion), each row off from the exact amateur by a constant; ``-inf`` outside the
            union. ``contrast_scores`` then takes its log-softmax (another per-row constant) and masks
            everything outside each row's head. None when the full lm_head should run instead.
        """
        weight = getattr(self._head, "weight", None)
        if type(self._head) is not torch.nn.Linear or weight is None or weight.dim() != 2:
            return None
        n, vocab = scores.shape
        # The head exactly as contrast_scores will compute it, so every row's head lies in the union.
        head = plausible_head(torch.log_softmax(scores.float(), dim=-1), self.contrast.alpha)  # (N, V)
        cols = head.any(dim=0).nonzero()[:, 0]  # (U,) union of the rows' heads
        if cols.numel() > HEAD_ONLY_MAX_FRACTION * vocab:
            return None
        idx = cols.to(weight.device)
        bias = self._head.bias.index_select(0, idx) if self._head.bias is not None else None
        rows = weight.index_select(0, idx)  # (U, H)
        # (C, N, U) amateur logits on the union
        logits = torch.nn.functional.linear(self._norm(hidden), rows, bias).float().to(scores.device)
        # fusion: each layer normalized over the union instead of V, a per-row constant again.
        part = torch.log_softmax(logits, dim=-1).mean(dim=0) if self.layer_mode == "fusion" else logits[0]
        out = torch.full((n, vocab), float("-inf"), dtype=torch.float32, device=scores.device)
        out[:, cols] = part
        return out


def _remove_hooks(handles: list[Any]) -> None:
    for h in handles:
        h.remove()  # removing twice is harmless


def _jsd(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence over the last dim of two log-probability tensors (natural log)."""
    logm = torch.logaddexp(logp, logq) - torch.log(torch.tensor(2.0, device=logp.device))
    p, q = logp.exp(), logq.exp()
    kl_p = torch.where(p > 0, p * (logp - logm), 0.0).sum(-1)
    kl_q = torch.where(q > 0, q * (logq - logm), 0.0).sum(-1)
    return 0.5 * (kl_p + kl_q)
