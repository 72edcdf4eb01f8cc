"""Layer contrast: the expert against its own earlier layer(s), read from the same forward pass.

DoLa-style (Chuang et al. 2023, "DoLa: Decoding by Contrasting Layers Improves Factuality in Large Language
Models") and the multi-layer fusion of "Lower Layer Matters" (Chen et al. 2024). The premature layer's
hidden state is captured by a forward pre-hook on the expert's own forward pass and turned into logits
by the expert's final norm and lm_head, so the amateur costs one extra lm_head (or, under greedy and
sampling, only the lm_head rows of the expert's plausible head). A :class:`~transformers.LogitsProcessor`
(:class:`LayerContrast`) and a ``generate(custom_generate=...)`` strategy (:func:`layer_contrast`); vLLM
does not expose intermediate hidden states, so there is no vLLM path.

Example:
    >>> out = model.generate(**batch, custom_generate=layer_contrast, amateur_layers=[0, 2, 4, 6],
    ...                      layer_mode="jsd", contrast=ContrastConfig(form="difference"), num_beams=4)
"""

from __future__ import annotations

import weakref
from typing import Any, Literal

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

from counterpoint import _hf
from counterpoint.decoding.engine import ContrastLogitsProcessor, run_contrast, strategy
from counterpoint.decoding.scores import CONTRAST_OPTIONS, ContrastConfig, plausible_head
from counterpoint.decoding.spec import Option, StrategySpec
from counterpoint.decoding.standard import SEARCH_OPTIONS, check_sampling, search_kwargs
from counterpoint.errors import OptionError

__all__ = ["HEAD_ONLY_MAX_FRACTION", "LAYER_MODES", "SPEC", "LayerContrast", "layer_contrast"]

LayerMode = Literal["fixed", "jsd", "fusion"]
LAYER_MODES = ("fixed", "jsd", "fusion")

# LayerContrast(head_only=True) gathers the lm_head rows of the union of the batch's plausible heads only
# while that union holds at most this share of the vocabulary; above it, it runs the full lm_head. The
# gathered path copies the chosen rows (index_select) and then multiplies them, so it touches each
# gathered row twice where the full product reads every row once: it stops paying well before half the
# vocabulary. A quarter leaves room for the union, the scatter and the extra log-softmax it adds. Typical
# heads (alpha = 0.1 on a trained model) are a handful of tokens, far below it.
HEAD_ONLY_MAX_FRACTION = 0.25


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
        layers, self._norm, self._head = _hf.decoder_parts(model)
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


@strategy
def layer_contrast(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    streamer: Any = None,
    amateur_layers: int | list[int] | None = None,
    layer_mode: LayerMode | None = None,
    contrast: ContrastConfig | None = None,
    head_only: bool | None = None,
    **model_kwargs: Any,
) -> Any:
    """Contrast the expert with its own earlier layer(s), read from the same forward pass (DoLa-style).

    Use as ``model.generate(..., custom_generate=layer_contrast, amateur_layers=[0, 2, 4],
    layer_mode="jsd", contrast=ContrastConfig(...))``. See :class:`LayerContrast` for the layer indexing
    and the three modes.

    Args:
        head_only: compute the amateur on the expert's plausible head only (see :class:`LayerContrast`).
            None (default) turns it on exactly when the tokens cannot change: greedy or sampling (not beam
            search), layer_mode ``"fixed"`` or ``"fusion"``, ``output_scores`` off (so returned scores are
            always the formula's), and every other logits processor is shift invariant (a repetition
            penalty or a processor of your own keeps the full path). True forces it where the search
            allows it (``output_scores`` then come shifted by a per-row constant); False never uses it.
    """
    if amateur_layers is None:
        raise ValueError("layer_contrast needs amateur_layers=<int or list of ints> (0 = embedding output)")
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
        processor.head_only = (
            not beams
            and processor.layer_mode != "jsd"
            and not generation_config.output_scores
            and all(isinstance(p, _hf.ROW_SHIFT_SAFE_PROCESSORS) for p in logits_processor or [])
        )
    return run_contrast(
        model, processor, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, streamer,
        model_kwargs,
    )  # fmt: skip


def _check(values: dict[str, Any]) -> None:
    check_sampling(values)
    layers = values["layers"]
    count = 1 if isinstance(layers, int) else len(layers)
    mode = values["layer_mode"]
    if mode == "fixed" and count != 1:
        raise OptionError(
            "layers",
            layers,
            "holds several layers but layer_mode 'fixed' takes one; use layer_mode 'jsd' or 'fusion'",
        )


def _check_model(values: dict[str, Any], facts: Any) -> None:
    layers = values["layers"]
    chosen = (layers,) if isinstance(layers, int) else layers
    n = facts.num_layers
    if n is not None and any(k >= n for k in chosen):
        raise OptionError(
            "layers", layers,
            f"is out of range: the model has {n} decoder layers, so valid indices are 0..{n - 1} (0 = embeddings; "
            f"{n} would be the final layer itself)",
        )  # fmt: skip


SPEC = StrategySpec(
    position=30,
    name="layer-contrast",
    summary="final layer vs early layers of the same model (DoLa-style, Chuang et al. 2023)",
    options=(
        Option(
            "layers",
            "layers",
            "amateur layer index or indices (0 = embeddings)",
            required=True,
            check=lambda v: all(i >= 0 for i in ((v,) if isinstance(v, int) else v)),
            valid="must hold layer indices >= 0 (0 = the embedding output)",
        ),
        Option("layer_mode", "str", "how the layers are used", default="fixed", choices=LAYER_MODES),
        *CONTRAST_OPTIONS,
        *SEARCH_OPTIONS,
    ),  # fmt: skip
    build=lambda values: {
        "custom_generate": layer_contrast,
        "amateur_layers": values["layers"] if isinstance(values["layers"], int) else list(values["layers"]),
        "layer_mode": values["layer_mode"],
        "contrast": ContrastConfig.from_options(values),
        **search_kwargs(values),
    },
    no_vllm="it needs the hidden states of intermediate layers at every step, which vLLM does not expose",
    check=_check,
    check_model=_check_model,
    streams=lambda values: values["num_beams"] == 1,
    aliases=("layer_contrast",),
)
