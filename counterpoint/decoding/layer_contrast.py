"""Layer contrast: the expert against its own earlier layer(s), read from the same forward pass.

Four modes (see :class:`LayerContrast`):

* ``"dola"``: DoLa (Chuang et al. 2023, "DoLa: Decoding by Contrasting Layers Improves Factuality in
  Large Language Models") exactly as transformers 4.55.4 runs ``generate(dola_layers=...)``: its
  ``"low"``/``"high"`` buckets, the premature layer's raw hidden state through the lm_head (no final
  norm), its divergence, one layer for the whole batch, ``relative_top`` 0.1.
* ``"jsd"``: counterpoint's normed variant: the premature layers go through the final norm before the
  lm_head, and each row picks its layer by the true Jensen-Shannon divergence. Not DoLa: other layers,
  other tokens (and, on SmolLM2, fluent text where exact DoLa degenerates).
* ``"fixed"``: one layer; ``"fusion"``: the mean of several layers' log-probabilities (after the
  multi-layer fusion of "Lower Layer Matters", Chen et al. 2024).

The premature layer's hidden state is captured by a forward pre-hook on the expert's own forward pass,
so the amateur costs lm_head products only: one full product per candidate layer (``jsd``, ``dola``), or,
under greedy and sampling, only the lm_head rows of the expert's plausible head (``fixed``, ``fusion``).
A :class:`~transformers.LogitsProcessor` (:class:`LayerContrast`) and a ``generate(custom_generate=...)``
strategy (:func:`layer_contrast`); vLLM does not expose intermediate hidden states, so there is no vLLM
path.

Example:
    >>> out = model.generate(**batch, custom_generate=layer_contrast, amateur_layers="high", layer_mode="dola")
    >>> out = model.generate(**batch, custom_generate=layer_contrast, amateur_layers=[0, 2, 4, 6],
    ...                      layer_mode="jsd", contrast=ContrastConfig(form="difference"), num_beams=4)
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import replace
from typing import Any, Literal

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

from counterpoint import _hf
from counterpoint.decoding.engine import ContrastLogitsProcessor, run_contrast, strategy
from counterpoint.decoding.scores import CONTRAST_OPTIONS, ContrastConfig, contrast_scores, plausible_head
from counterpoint.decoding.spec import Option, StrategySpec
from counterpoint.decoding.standard import SEARCH_OPTIONS, check_sampling, search_kwargs
from counterpoint.errors import OptionError

__all__ = [
    "DOLA",
    "DOLA_BUCKETS",
    "HEAD_ONLY_MAX_FRACTION",
    "LAYER_MODES",
    "SPEC",
    "LayerContrast",
    "dola_bucket",
    "layer_contrast",
]

LayerMode = Literal["fixed", "jsd", "fusion", "dola"]
LAYER_MODES = ("fixed", "jsd", "fusion", "dola")
DOLA_BUCKETS = ("low", "high")

# DoLa's own scoring rule (transformers 4.55 ``_relative_top_filter`` with ``relative_top=0.1``, then
# ``final - premature`` on log-probabilities): the difference form at gamma 1, amateur temperature 1,
# plausibility threshold 0.1. ``layer_mode="dola"`` uses it unless ``contrast`` is given.
DOLA = ContrastConfig(form="difference", gamma=1.0, alpha=0.1, tau=1.0)

# LayerContrast(head_only=True) gathers the lm_head rows of the union of the batch's plausible heads only
# while that union holds at most this share of the vocabulary; above it, it runs the full lm_head. The
# gathered path copies the chosen rows (index_select) and then multiplies them, so it touches each
# gathered row twice where the full product reads every row once: it stops paying well before half the
# vocabulary. A quarter leaves room for the union, the scatter and the extra log-softmax it adds. Typical
# heads (alpha = 0.1 on a trained model) are a handful of tokens, far below it.
HEAD_ONLY_MAX_FRACTION = 0.25


def dola_bucket(bucket: str, num_layers: int, tie_word_embeddings: bool) -> list[int]:
    """DoLa's candidate premature layers for ``dola_layers="low"`` or ``"high"``, as transformers 4.55.4
    chooses them (``GenerationMixin._dola_decoding``).

    With tied word embeddings the embedding output (layer 0) would only echo the input token, so the
    buckets start at layer 2 (layer 1 for a 2-layer model, 0 for a 1-layer one). For ``N <= 40`` layers,
    ``"low"`` is ``range(start, N // 2, 2)`` (``[start]`` when ``start == N // 2``) and ``"high"`` is
    ``range(N // 2, N, 2)``; deeper models use ``range(start, 20, 2)`` and ``range(N - 20, N, 2)``.

    Args:
        bucket: ``"low"`` or ``"high"``.
        num_layers: the model's decoder layers ``N``.
        tie_word_embeddings: the model config's ``tie_word_embeddings``.

    Returns:
        The layer indices (hidden-state indices: 0 is the embedding output). Empty in one case, which
        transformers 4.55 does not handle either: ``"low"`` for a 3-layer model with tied embeddings.

    Example:
        >>> dola_bucket("low", 30, True), dola_bucket("high", 30, True)
        ([2, 4, 6, 8, 10, 12, 14], [15, 17, 19, 21, 23, 25, 27, 29])
    """
    if bucket not in DOLA_BUCKETS:
        raise ValueError(f"bucket={bucket!r} is not one of DoLa's buckets: 'low', 'high'")
    if not tie_word_embeddings:
        start = 0
    elif num_layers > 2:
        start = 2
    elif num_layers == 2:
        start = 1
    else:
        start = 0
    if bucket == "low":
        if start == num_layers // 2:
            return [start]
        return list(range(start, num_layers // 2 if num_layers <= 40 else 20, 2))
    return list(range(num_layers // 2 if num_layers <= 40 else num_layers - 20, num_layers, 2))


def _tied(model: PreTrainedModel) -> bool:
    """The config's ``tie_word_embeddings`` as transformers 4.55 reads it (its base config defaulted to
    True; 5.x keeps the field on the model configs only)."""
    for config in (model.config, model.config.get_text_config()):
        tied = getattr(config, "tie_word_embeddings", None)
        if tied is not None:
            return bool(tied)
    return True


class LayerContrast(ContrastLogitsProcessor):
    """The amateur is an earlier layer of the expert, read from the expert's own forward pass.

    ``amateur_layers`` index the hidden states the way ``output_hidden_states`` does (and DoLa's
    ``dola_layers``): ``k`` is the input of decoder layer ``k`` (0 is the embedding output, ``L - 1`` the
    input of the last layer), valid in ``[0, L - 1]``. A forward pre-hook on each chosen layer keeps the
    last position's hidden state. For ``"dola"``, ``amateur_layers`` may also be DoLa's bucket ``"low"``
    or ``"high"`` (:func:`dola_bucket`); ``"jsd"`` and ``"fusion"`` take the buckets too, as the same lists.

    Modes:
        * ``"dola"``: transformers 4.55.4's ``generate(dola_layers=...)``, token for token in fp32 (greedy
          and sampling, any batch). Per step: each candidate's *raw* hidden state (no final norm; 4.55
          never projects the last, normed entry of ``hidden_states``) through the lm_head; with several
          candidates, the one with the largest ``0.5 * (KL(M || P) + KL(M || Q_k))`` averaged over the
          vocabulary and then over the batch's rows (``F.kl_div(log p, M)`` on both sides, ``M`` the mean
          of the two distributions): ONE layer for the whole batch, so a row's tokens depend on the rows
          batched with it, as in 4.55 (at batch 1 this is the original DoLa code's per-example choice).
          Scores: ``log p_final - log p_premature`` on the tokens within ``relative_top`` 0.1 of the
          final layer's most likely one, ``-inf`` elsewhere (:data:`DOLA`, used unless ``contrast`` is
          given). Like 4.55 it applies no repetition penalty of its own: 4.55 only warns that 1.2 is
          recommended; pass ``repetition_penalty=1.2`` to ``generate`` for that. The final layer's index
          ``L`` in a list (DoLa's original scripts list the mature layer last) is dropped with a warning,
          as 4.55 drops it; indices past it are refused (4.55 drops them silently). Differences from
          4.55: the lm_head product and the divergence are computed in another order, faster (equal up
          to float rounding: two candidates whose divergences tie to the last bits could be told apart
          the other way, as two BLAS builds could); 4.55 reads the chosen index back to the host, this
          does not; in half precision 4.55 takes the premature layers' softmax in the model's dtype,
          this in fp32; and under beam search 4.55 ignores ``dola_layers`` (plain beam search) where this
          runs beam search over DoLa's scores.
        * ``"jsd"``: counterpoint's normed variant, not DoLa: each premature hidden state goes through the
          expert's final norm before the lm_head, and each row (not the batch) picks the candidate whose
          next-token distribution is furthest from the final layer's in true Jensen-Shannon divergence,
          ``0.5 * (KL(P || M) + KL(Q || M))``.
        * ``"fixed"``: one layer (final norm, then lm_head).
        * ``"fusion"``: the mean of the chosen layers' log-probabilities (each normed), i.e. their
          normalized geometric mean, as one amateur (after the multi-layer fusion of "Lower Layer
          Matters", Chen et al. 2024; the rule here is ours: an unweighted log-linear pool).

    Models that scale or soft-cap their logits after the lm_head (Gemma 2, Cohere, Granite) are not
    corrected for on the premature layers, in any mode (4.55's DoLa does not either).

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
    users who need the formula's values; ``"jsd"`` and ``"dola"`` need the full distributions and refuse
    it. When the union of the heads exceeds :data:`HEAD_ONLY_MAX_FRACTION` of the vocabulary, or the
    lm_head is not a plain ``nn.Linear``, that step runs the full, exact path. The gathered path reads the
    union's size back to the host once per step (a device synchronisation on a GPU), so the
    ``layer_contrast`` custom_generate function turns it on by itself only for an lm_head on the CPU, and
    only when all of the above is known to hold. Without it, a step reads nothing back to the host.

    Stateful: hooks stay on the model until :meth:`close` (or leaving a ``with`` block); call
    :meth:`reset` between generations. Must be the first processor (it reads the raw expert logits).

    Args:
        model: the expert.
        amateur_layers: one index, a list of indices, or (``"dola"``, ``"jsd"``, ``"fusion"``) DoLa's
            bucket ``"low"`` or ``"high"``.
        layer_mode: ``"fixed"``, ``"jsd"``, ``"fusion"`` or ``"dola"``; default ``"fixed"`` for one index,
            ``"jsd"`` for a list, ``"dola"`` for a bucket.
        contrast: how scores combine. Default :data:`DOLA` (DoLa's rule) under ``"dola"``, else
            ``ContrastConfig()``.
        head_only: compute the amateur on the expert's plausible head only (see above). Default False:
            the exact scores, valid under every search.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        amateur_layers: int | list[int] | str,
        layer_mode: LayerMode | None = None,
        contrast: ContrastConfig | None = None,
        head_only: bool = False,
    ) -> None:
        layers, self._norm, self._head = _hf.decoder_parts(model)
        chosen, layer_mode = _resolve_layers(model, len(layers), amateur_layers, layer_mode)
        if contrast is None and layer_mode == "dola":
            contrast = DOLA
        super().__init__(contrast)
        if not isinstance(head_only, bool):
            raise TypeError(f"head_only={head_only!r} must be True or False")
        if head_only and layer_mode in ("jsd", "dola"):
            raise ValueError(
                f"head_only=True needs layer_mode 'fixed' or 'fusion': layer_mode={layer_mode!r} chooses the "
                "premature layer by a divergence over the whole vocabulary, which needs the full distributions"
            )
        self.model = model
        self.amateur_layers = chosen
        self.layer_mode: LayerMode = layer_mode
        self.head_only = head_only
        # jsd / dola: skip the rows whose plausible head is one token (see _choose_where_it_matters); only
        # valid where head_only would be, and set by layer_contrast() under the same conditions.
        self.skip_one_token_heads = False
        self._layers = layers
        self._captured: dict[int, torch.Tensor] = {}
        self._hooks: list[Any] = []
        self._workspace = _Workspace()  # jsd / dola: the divergence's buffers, kept from step to step
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
        self._workspace = _Workspace()
        self._prev_ids = None

    def _follow(self, input_ids: torch.Tensor, contents: bool = True) -> tuple[bool, torch.Tensor | None]:
        # Nothing here is kept per row, so rows may move (beam search) freely, except on the head-only path,
        # which must refuse them: only it compares tokens (a host-device synchronisation); the others
        # check shapes only.
        return super()._follow(input_ids, contents=contents and self.head_only)

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Contrast scores for the next token (see :meth:`ContrastLogitsProcessor.__call__`); on the head-only
        path, off from :func:`contrast_scores` by a constant per row on the head (see the class docs)."""
        if not self.head_only:
            return super().__call__(input_ids, scores)
        _, beam_idx = self._follow(input_ids)
        if beam_idx is not None:
            raise RuntimeError(
                "LayerContrast(head_only=True) saw rows reordered (beam search): its scores are shifted "
                "by a per-row constant, which beam search would accumulate; use head_only=False"
            )
        hidden = self._hidden(scores)
        out = self._head_scores(hidden, scores)
        if out is None:  # a large head, or an lm_head that is not a plain nn.Linear: the exact path
            out = contrast_scores(scores, self._choose(hidden, scores), self.contrast)
        self._prev_ids = input_ids.detach().clone()
        return out

    def _hidden(self, scores: torch.Tensor) -> torch.Tensor:
        """``(C, N, H)``: the chosen layers' last hidden states of this step's forward pass."""
        if not self._hooks:
            raise RuntimeError("LayerContrast was closed (its hooks removed); call reset() to reattach them")
        captured = [self._captured.pop(k, None) for k in self.amateur_layers]
        if any(h is None or h.shape[0] != scores.shape[0] for h in captured):
            raise RuntimeError(
                "LayerContrast found no hidden state of this step's forward pass: it must be used in "
                "generate() of the model it was built on"
            )
        return torch.stack(captured)

    @torch.no_grad()
    def _amateur_logits(
        self, input_ids: torch.Tensor, scores: torch.Tensor, first: bool, beam_idx: torch.Tensor | None
    ) -> torch.Tensor:
        hidden = self._hidden(scores)  # (C, N, H)
        if self.layer_mode in ("jsd", "dola") and self.skip_one_token_heads:
            return self._choose_where_it_matters(hidden, scores)
        return self._choose(hidden, scores)

    def _choose(self, hidden: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The amateur of every row, from the whole lm_head: ``(C, N, H)`` states -> ``(N, V)``."""
        if self.layer_mode == "dola":
            if hidden.shape[0] == 1:
                return self._project(hidden)[0].to(scores.device)  # (N, V) raw states, no final norm
            logits = self._project(hidden, keep=True).to(scores.device)  # (C, N, V); copied out below
            final = self._expert_step(scores).logprobs  # (N, V), computed once for this and the scores
            pick = _dola_layer(
                final, logits, self._workspace, normalised=True
            )  # (1,) one layer for the batch
            return logits.index_select(0, pick)[0]  # (N, V)
        jsd = self.layer_mode == "jsd"  # copies out the rows it returns: the projection may use kept buffers
        logits = self._project(self._norm(hidden), keep=jsd).float().to(scores.device)  # (C, N, V)
        if self.layer_mode == "fixed":
            return logits[0]
        if self.layer_mode == "fusion":
            return torch.log_softmax(logits, dim=-1).mean(dim=0)  # (N, V): log of the geometric mean
        # jsd: per row, the layer furthest from the final distribution.
        final = self._expert_step(scores).logprobs  # (N, V)
        pick = _jsd(final, logits, self._workspace, normalised=True).argmax(dim=0)  # (N,)
        return logits.gather(0, pick[None, :, None].expand(1, *logits.shape[1:]))[0]  # (N, V)

    def _choose_where_it_matters(self, hidden: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """:meth:`_choose` for the rows whose plausible head holds more than one token (jsd: row by row;
        dola, whose one layer comes from every row: all rows, unless none needs it). A one-token head leaves
        one finite score whatever the amateur, so the token is forced; those rows get a uniform amateur
        (zeros) and cost no lm_head product. Reads the rows back to the host (a sync): CPU only."""
        head = self._expert_step(scores).head  # as contrast_scores
        rows = (head.sum(dim=-1) > 1).nonzero()[:, 0]  # (R,)
        n = scores.shape[0]
        if rows.numel() == n:
            return self._choose(hidden, scores)
        out = torch.zeros(scores.shape, dtype=torch.float32, device=scores.device)  # (N, V)
        if rows.numel() == 0:
            return out
        if self.layer_mode == "dola":  # its one layer is chosen from all the rows' divergences
            return self._choose(hidden, scores)
        out[rows] = self._choose(hidden[:, rows.to(hidden.device)], scores[rows]).float()
        return out

    def _project(self, hidden: torch.Tensor, keep: bool = False) -> torch.Tensor:
        """``(C, N, H)`` hidden states through the lm_head: ``(C, N, V)``, in the lm_head's dtype.

        ``keep``: write into the processor's kept buffers (an fp32 head), valid until the next call: for
        callers that copy out what they return (jsd, dola).

        A plain ``nn.Linear`` head is applied as one ``W @ X^T`` over the ``C x N`` columns: on a CPU, for
        the few rows of a decoding step, that streams the weight once where ``F.linear`` (``X @ W^T``) is
        up to twice slower; the values are the same products, summed in another order (float rounding).
        """
        weight = getattr(self._head, "weight", None)
        if type(self._head) is not torch.nn.Linear or weight is None or weight.dim() != 2:
            return self._head(hidden)
        c, n, h = hidden.shape
        columns = hidden.reshape(c * n, h).to(weight.dtype).T  # (H, C*N)
        bias = self._head.bias
        if not keep or weight.dtype != torch.float32:
            out = (
                torch.mm(weight, columns) if bias is None else torch.addmm(bias[:, None], weight, columns)
            )  # (V, C*N)
            return out.T.reshape(c, n, -1).contiguous()
        ws, v = self._workspace, weight.shape[0]
        with torch.no_grad():  # out= takes no gradient; the processor needs none
            out = ws.get("mm", (v, c * n), weight.device)  # (V, C*N)
            if bias is None:
                torch.mm(weight, columns, out=out)
            else:
                torch.addmm(bias[:, None], weight, columns, out=out)
            return ws.get("logits", (c, n, v), weight.device).copy_(out.T.view(c, n, v))

    def _head_scores(self, hidden: torch.Tensor, scores: torch.Tensor) -> torch.Tensor | None:
        """The contrast scores with the amateur computed on the union of the rows' plausible heads only.

        Args:
            hidden: ``(C, N, H)`` captured hidden states of the chosen layers.
            scores: ``(N, V)`` the expert's logits.

        Returns:
            ``(N, V)`` fp32: :func:`contrast_scores` less a constant per row on each row's head (the
            amateur's log-normalizer, which needs every token), ``-inf`` elsewhere. The amateur enters as
            ``l_a / tau`` on the head: for fusion the mean of the layers' logits, whose log-softmaxes differ
            from them by a constant per row and layer. None when the full lm_head should run instead.
        """
        weight = getattr(self._head, "weight", None)
        if type(self._head) is not torch.nn.Linear or weight is None or weight.dim() != 2:
            return None
        config = self.contrast
        z_e = torch.log_softmax(scores.float(), dim=-1)  # (N, V)
        head = plausible_head(z_e, config.alpha)  # (N, V), exactly as contrast_scores
        cols = head.any(dim=0).nonzero()[:, 0]  # (U,) union of the rows' heads (reads U back: a sync)
        if cols.numel() > HEAD_ONLY_MAX_FRACTION * scores.shape[-1]:
            return None
        idx = cols.to(weight.device)
        bias = self._head.bias.index_select(0, idx) if self._head.bias is not None else None
        rows = weight.index_select(0, idx)  # (U, H)
        amateur = (
            torch.nn.functional.linear(self._norm(hidden), rows, bias).float().to(scores.device)
        )  # (C, N, U)
        amateur = amateur.mean(dim=0) / config.tau  # (N, U)
        expert = z_e[:, cols]  # (N, U)
        if config.form == "difference":
            part = expert - config.gamma * amateur
        else:
            part = (1.0 + config.beta) * expert - config.beta * amateur
        out = torch.full_like(z_e, float("-inf"))
        out[:, cols] = part.masked_fill_(~head[:, cols], float("-inf"))
        return out


def _resolve_layers(
    model: PreTrainedModel, n_layers: int, amateur_layers: Any, layer_mode: Any
) -> tuple[list[int], LayerMode]:
    """``(layer indices, mode)`` from what the caller gave, checked against the model's depth."""
    if layer_mode is not None and layer_mode not in LAYER_MODES:
        raise ValueError(f"layer_mode={layer_mode!r} is not a mode; use 'fixed', 'jsd', 'fusion' or 'dola'")
    name = type(model).__name__
    if isinstance(amateur_layers, str):
        if amateur_layers not in DOLA_BUCKETS:
            raise ValueError(
                f"amateur_layers={amateur_layers!r} is not a layer bucket; use 'low' or 'high' (DoLa's), an int "
                "or a list of ints"
            )
        layer_mode = layer_mode or "dola"
        if layer_mode == "fixed":
            raise ValueError(
                f"amateur_layers={amateur_layers!r} is a bucket of layers but layer_mode='fixed' takes one "
                "layer; use 'dola', 'jsd' or 'fusion'"
            )
        chosen = dola_bucket(amateur_layers, n_layers, _tied(model))
        if not chosen:
            raise ValueError(
                f"amateur_layers={amateur_layers!r} is empty for {name}: with {n_layers} decoder layers and tied "
                "embeddings DoLa's bucket runs from layer 2 to below layer "
                f"{n_layers // 2} (transformers 4.55 fails on it too); list the layers instead"
            )
        return chosen, layer_mode
    chosen = [amateur_layers] if isinstance(amateur_layers, int) else list(amateur_layers)
    if not chosen or not all(isinstance(k, int) and not isinstance(k, bool) for k in chosen):
        raise ValueError(
            f"amateur_layers={amateur_layers!r} must be an int or a non-empty list of ints (or DoLa's bucket "
            "'low' / 'high')"
        )
    if layer_mode is None:
        layer_mode = "fixed" if len(chosen) == 1 else "jsd"
    if layer_mode == "dola" and n_layers in chosen:
        # DoLa's original scripts list the mature (final) layer last; 4.55 keeps only indices below it.
        warnings.warn(
            f"amateur_layers={amateur_layers!r}: layer {n_layers} is {name}'s final layer (the expert itself), "
            "not a premature layer; dropped, as transformers 4.55's DoLa drops it",
            UserWarning,
            stacklevel=3,
        )
        chosen = [k for k in chosen if k != n_layers]
        if not chosen:
            raise ValueError(
                f"amateur_layers={amateur_layers!r} holds no premature layer: {n_layers} is {name}'s final "
                f"layer; give indices in 0..{n_layers - 1}"
            )
    bad = [k for k in chosen if not 0 <= k < n_layers]
    if bad:
        last = (
            f"{n_layers}, the final layer, is dropped under layer_mode='dola'"
            if layer_mode == "dola"
            else f"{n_layers} would be the expert's own final layer"
        )
        raise ValueError(
            f"amateur_layers={amateur_layers!r}: layer index {bad[0]} is out of range; {name} has {n_layers} "
            f"decoder layers, so valid indices are 0..{n_layers - 1} (0 = embeddings; {last})"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"amateur_layers={amateur_layers!r} repeats a layer")
    if layer_mode == "fixed" and len(chosen) != 1:
        raise ValueError(
            f"layer_mode='fixed' takes one layer but amateur_layers={amateur_layers!r}; use 'jsd', 'fusion' or "
            "'dola'"
        )
    return chosen, layer_mode


def _remove_hooks(handles: list[Any]) -> None:
    for h in handles:
        h.remove()  # removing twice is harmless


# exp() of a float32 below about -87 gives a subnormal or 0, and a product or quotient that lands there is
# computed far slower by the CPU (a raw premature layer's log-probabilities reach -1000 on SmolLM2).
# Probabilities are floored at exp(-60) ~ 8.8e-27 before normalising, so that they, and the mixtures made
# from them, stay normal floats for any vocabulary below 2**38 tokens: a sum over a vocabulary cannot see
# the difference in float32 (V * 8.8e-27 * |log| is far below one ulp of the sums it enters).
_EXP_FLOOR = -60.0


def _log_softmax_and_softmax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_softmax(x), softmax(x))`` over the last dim, in fp32, with one exponential per element, no
    subnormals (see ``_EXP_FLOOR``) and every probability > 0."""
    shifted = x.float() - x.float().amax(dim=-1, keepdim=True)
    probs = torch.clamp_min(shifted, _EXP_FLOOR).exp_()
    total = probs.sum(dim=-1, keepdim=True)
    return shifted.sub_(total.log()), probs.div_(total)


class _Workspace:
    """fp32 buffers kept from step to step, by name, each reallocated only when its shape changes.

    A decoding step's ``(C, N, V)`` temporaries are megabytes each; freshly allocated at every step, the
    allocator hands them back to the system and takes them again, and the page faults cost more than the
    arithmetic (on SmolLM2 at batch 8, twice the divergence itself)."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...] | torch.Size, device: torch.device) -> torch.Tensor:
        b = self._buffers.get(name)
        if b is None or b.shape != shape or b.device != device:
            b = self._buffers[name] = torch.empty(shape, dtype=torch.float32, device=device)
        return b

    def three(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The divergence's three buffers, shaped like ``like``."""
        return tuple(self.get(k, like.shape, like.device) for k in ("s", "e", "t"))  # type: ignore[return-value]


def _divergences(
    final: torch.Tensor,
    premature: torch.Tensor,
    kind: Literal["jsd", "dola"],
    workspace: _Workspace | None = None,
    normalised: bool = False,
) -> torch.Tensor:
    """``(C, N)`` fp32: each candidate's divergence from the final layer, row by row, summed over the vocabulary.

    For ``P`` the final layer's distribution, ``Q`` a candidate's and ``M = (P + Q) / 2``:

    * ``"jsd"``: the Jensen-Shannon divergence ``0.5 * (KL(P || M) + KL(Q || M))``
      ``= 0.5 * (sum P log P + sum Q log Q) - sum M log M``;
    * ``"dola"``: transformers 4.55.4's ``0.5 * (KL(M || P) + KL(M || Q))``
      ``= sum M (log M - (log P + log Q) / 2)``.

    Args:
        final: ``(N, V)`` the final layer's logits (or log-probabilities: the same distributions).
        premature: ``(C, N, V)`` the candidates' logits.
        kind: ``"jsd"`` or ``"dola"``.
        workspace: three ``(C, N, V)`` buffers kept between calls (new ones if None).
        normalised: ``final`` holds log-probabilities already (the processor's, computed once a step).

    One exponential and one logarithm per element, and no ``(C, N, V)`` allocation: ``log Q`` and ``Q`` are
    kept unnormalised (the shifted logits ``S = log Q + log Z`` and ``E = Z Q``) and the normaliser ``Z``
    enters each sum as a constant per row; ``M`` then overwrites ``S`` and ``log M`` ``E``. The sums are
    those of the formulas above, grouped otherwise: equal up to float rounding.
    """
    if normalised:
        log_p = final.float()
        p = torch.clamp_min(log_p, _EXP_FLOOR).exp_()  # a new tensor: log_p is the caller's
    else:
        log_p, p = _log_softmax_and_softmax(final)  # (N, V)
    x = premature.float()
    s, e, t = (workspace or _Workspace()).three(x)
    torch.sub(x, x.amax(dim=-1, keepdim=True), out=s)  # log Q + log Z
    torch.clamp_min(s, _EXP_FLOOR, out=e).exp_()  # Z Q
    z = e.sum(dim=-1)  # (C, N)
    log_z = z.log()
    if kind == "dola":
        torch.add(s, log_p, out=t)  # log P + log Q + log Z
    else:
        q_logq = torch.mul(e, s, out=t).sum(dim=-1) / z - log_z  # sum Q log Q
    m = torch.addcdiv(p.mul(0.5), e, (2.0 * z)[..., None], out=s)  # (P + Q) / 2, >= exp(-61) / V
    log_m = torch.log(m, out=e)
    if kind == "dola":
        # sum M (log M - (log P + log Q) / 2) = sum M (log M - t / 2) + (log Z / 2) sum M
        # (sum M = (sum P + 1) / 2: Q's normaliser is this z)
        torch.add(log_m, t, alpha=-0.5, out=t)
        return torch.mul(m, t, out=t).sum(dim=-1) + 0.25 * log_z * (p.sum(dim=-1) + 1.0)
    m_logm = torch.mul(m, log_m, out=t).sum(dim=-1)
    return 0.5 * (torch.linalg.vecdot(p, log_p) + q_logq) - m_logm


def _jsd(
    final: torch.Tensor,
    premature: torch.Tensor,
    workspace: _Workspace | None = None,
    normalised: bool = False,
) -> torch.Tensor:
    """``(C, N)``: the Jensen-Shannon divergence (natural log) of each candidate's distribution from the final
    layer's, row by row (see :func:`_divergences`)."""
    return _divergences(final, premature, "jsd", workspace, normalised)


def _dola_divergence(
    final: torch.Tensor,
    premature: torch.Tensor,
    workspace: _Workspace | None = None,
    normalised: bool = False,
) -> torch.Tensor:
    """transformers 4.55.4's divergence of each candidate from the final layer (``_dola_select_contrast``).

    Args:
        final: ``(N, V)`` the final layer's logits.
        premature: ``(C, N, V)`` the candidates' logits.
        workspace: buffers kept between calls (a decoding step calls this once per token).
        normalised: ``final`` holds log-probabilities already.

    Returns:
        ``(C,)`` fp32: ``0.5 * (KL(M || P) + KL(M || Q_k))`` averaged over the vocabulary, then over the rows
        (4.55 computes ``F.kl_div(log p, M)`` and ``F.kl_div(log q_k, M)``, ``M = (P + Q_k) / 2``, term by
        term), equal up to float rounding (see :func:`_divergences`).
    """
    return _divergences(final, premature, "dola", workspace, normalised).mean(-1) / final.shape[-1]


def _dola_layer(
    final: torch.Tensor,
    premature: torch.Tensor,
    workspace: _Workspace | None = None,
    normalised: bool = False,
) -> torch.Tensor:
    """``(1,)`` long: the candidate 4.55 contrasts, the largest :func:`_dola_divergence` (first on ties), left
    on the device (4.55 reads it back with ``.item()``)."""
    return _dola_divergence(final, premature, workspace, normalised).argmax().view(1)


@strategy
def layer_contrast(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    streamer: Any = None,
    amateur_layers: int | list[int] | str | None = None,
    layer_mode: LayerMode | None = None,
    contrast: ContrastConfig | None = None,
    head_only: bool | None = None,
    **model_kwargs: Any,
) -> Any:
    """Contrast the expert with its own earlier layer(s), read from the same forward pass.

    Use as ``model.generate(..., custom_generate=layer_contrast, amateur_layers="low", layer_mode="dola")``
    (DoLa exactly as transformers 4.55.4's ``generate(dola_layers="low")``) or ``amateur_layers=[0, 2, 4],
    layer_mode="jsd", contrast=ContrastConfig(...)``. See :class:`LayerContrast` for the layer indexing and
    the four modes.

    Args:
        amateur_layers: an index, a list of indices (0 = embedding output), or DoLa's ``"low"`` / ``"high"``.
        layer_mode: ``"dola"``, ``"jsd"``, ``"fixed"`` or ``"fusion"`` (default: from ``amateur_layers``).
        contrast: the scoring rule; default DoLa's (:data:`DOLA`) under ``"dola"``, else ``ContrastConfig()``.
        head_only: save work with the expert's plausible head (see :class:`LayerContrast`). None
            (default) does so exactly when the tokens cannot change and it pays: greedy or sampling (not
            beam search), ``output_scores`` off (so returned scores are always the formula's), every other
            logits processor shift invariant (a repetition penalty or a processor of your own keeps the
            full path), and the lm_head on the CPU (on a GPU the full product costs less than the device
            synchronisation the head's size needs). Then ``"fixed"`` and ``"fusion"`` multiply only the
            head's lm_head rows, and ``"jsd"`` and ``"dola"`` skip the rows whose head is a single token
            (that token is forced whatever the amateur; ``"dola"``, which picks one layer from every row,
            only when all rows' heads are). True forces the head-only product where the search allows it
            (``"fixed"`` and ``"fusion"``; ``output_scores`` then come shifted by a per-row constant); False
            never uses the head.
    """
    if amateur_layers is None:
        raise ValueError(
            "layer_contrast needs amateur_layers=<int, list of ints, or 'low' / 'high'> (0 = embedding output)"
        )
    if head_only not in (None, True, False):
        raise TypeError(f"head_only={head_only!r} must be None (automatic), True or False")
    beams = (generation_config.num_beams or 1) > 1
    if head_only and beams:
        raise ValueError(
            f"head_only=True works under greedy and sampling, not beam search (num_beams="
            f"{generation_config.num_beams}): beam search adds scores across steps and compares them across "
            "rows, where the per-row constant it drops matters; use head_only=None or False"
        )
    processor = LayerContrast(model, amateur_layers, layer_mode, contrast, head_only=bool(head_only))
    if head_only is None:
        weight = getattr(processor._head, "weight", None)
        safe = (
            not beams
            and not generation_config.output_scores
            and all(isinstance(p, _hf.ROW_SHIFT_SAFE_PROCESSORS) for p in logits_processor or [])
            and weight is not None
            and weight.device.type == "cpu"
        )
        processor.head_only = safe and processor.layer_mode in ("fixed", "fusion")
        # The same conditions let a one-token plausible head force its token under jsd and dola: those rows
        # skip the lm_head products and the divergence (see LayerContrast._choose_where_it_matters).
        processor.skip_one_token_heads = safe and processor.layer_mode in ("jsd", "dola")
    return run_contrast(
        model, processor, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, streamer,
        model_kwargs,
    )  # fmt: skip


def _check(values: dict[str, Any]) -> None:
    check_sampling(values)
    layers = values["layers"]
    mode = values["layer_mode"]
    if mode == "fixed" and isinstance(layers, str):
        raise OptionError(
            "layers", layers, "is a bucket of layers (DoLa's) but layer_mode 'fixed' takes one; use layer_mode "
            "'dola', 'jsd' or 'fusion'",
        )  # fmt: skip
    if mode == "fixed" and not isinstance(layers, int) and len(layers) != 1:
        raise OptionError(
            "layers",
            layers,
            "holds several layers but layer_mode 'fixed' takes one; use layer_mode 'dola', 'jsd' or 'fusion'",
        )


def _check_model(values: dict[str, Any], facts: Any) -> None:
    layers = values["layers"]
    if isinstance(layers, str):
        return  # a bucket is made from the model's own depth (an empty one is refused when it loads)
    chosen = (layers,) if isinstance(layers, int) else layers
    n = facts.num_layers
    dola = values["layer_mode"] == "dola"
    if n is not None and any(k > n or (k == n and not dola) for k in chosen):
        last = (
            f"{n}, the final layer, is dropped under layer_mode 'dola'"
            if dola
            else f"{n} would be the final layer itself"
        )
        raise OptionError(
            "layers", layers,
            f"is out of range: the model has {n} decoder layers, so valid indices are 0..{n - 1} (0 = embeddings; {last})",
        )  # fmt: skip


def _contrast(values: dict[str, Any]) -> ContrastConfig:
    """The contrast options given, over DoLa's rule under layer_mode 'dola' and the defaults elsewhere."""
    base = DOLA if values["layer_mode"] == "dola" else ContrastConfig()
    return replace(
        base, **{o.name: values[o.name] for o in CONTRAST_OPTIONS if values.get(o.name) is not None}
    )


# The contrast options, with ``form`` left unset by default: unset, it is DoLa's ``"difference"`` under
# layer_mode 'dola' and ContrastConfig's ``"beta"`` elsewhere (see _contrast). The other defaults are DoLa's
# values already (alpha = relative_top 0.1, gamma 1, tau 1; a test pins that).
_LAYER_CONTRAST_OPTIONS = tuple(
    replace(
        o, default=None, help=f"{o.help}; default 'difference' under layer_mode dola (DoLa's), else 'beta'"
    )
    if o.name == "form"
    else o
    for o in CONTRAST_OPTIONS
)


def _layers_ok(v: Any) -> bool:
    return (
        v in DOLA_BUCKETS if isinstance(v, str) else all(i >= 0 for i in ((v,) if isinstance(v, int) else v))
    )


SPEC = StrategySpec(
    position=30,
    name="layer-contrast",
    summary="final layer vs early layers of the same model (DoLa exactly as transformers 4.55, Chuang et al. "
            "2023, or counterpoint's normed variants)",
    options=(
        Option(
            "layers",
            "layers",
            "amateur layer index or indices (0 = embeddings), or DoLa's bucket 'low' or 'high'",
            required=True,
            check=_layers_ok,
            valid="must hold layer indices >= 0 (0 = the embedding output), or be 'low' or 'high'",
        ),
        Option(
            "layer_mode", "str",
            "dola (transformers 4.55's DoLa: raw layers, one layer per batch), jsd (normed layers, per-row "
            "Jensen-Shannon choice), fixed (one layer) or fusion (mean of the layers' log-probabilities)",
            default="fixed", choices=LAYER_MODES,
        ),
        *_LAYER_CONTRAST_OPTIONS,
        *SEARCH_OPTIONS,
    ),
    build=lambda values: {
        "custom_generate": layer_contrast,
        "amateur_layers": values["layers"] if isinstance(values["layers"], int | str) else list(values["layers"]),
        "layer_mode": values["layer_mode"],
        "contrast": _contrast(values),
        **search_kwargs(values),
    },
    no_vllm="it needs the hidden states of intermediate layers at every step, which vLLM does not expose",
    check=_check,
    check_model=_check_model,
    streams=lambda values: values["num_beams"] == 1,
    aliases=("layer_contrast",),
)  # fmt: skip
