"""Contrastive search (Su et al. 2022) as a drop-in ``generate()`` strategy.

At each step, take the top-k tokens ``V(k)`` of ``p(v | x<t)``, run them forward, and pick

    argmax over v in V(k) of  (1 - alpha) * p(v | x<t)  -  alpha * max_j cos(h_v, h_j)

where ``h_v`` is the last hidden state at the new position when ``v`` is appended and ``h_j`` are the
last hidden states of the context (prompt and generated tokens; padding never counts).

How the step is computed. The built-in search of transformers 4.x copied the KV cache k times per
step. Here the k candidates go through ONE cached forward as k extra positions of each row: a 4-D
attention mask lets each candidate see the row's prefix and itself only, and all k share the position
id of the next token, so each candidate's hidden state is exactly what a forward of "prefix +
candidate" would give. The winner's key/value entry is then moved into the first new slot and the
other k - 1 are cropped. The candidates need only their hidden states; the language-model head runs
on the winner alone, to give the next step's distribution.

Example:
    >>> from counterpoint.decoding import contrastive_search
    >>> out = model.generate(**inputs, custom_generate=contrastive_search,
    ...                      penalty_alpha=0.6, top_k=4, max_new_tokens=64)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from counterpoint import _hf
from counterpoint.batching import positions_from_mask
from counterpoint.decoding.engine import lm_rows, strategy
from counterpoint.decoding.spec import Option, StrategySpec
from counterpoint.errors import OptionError

if TYPE_CHECKING:
    from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, StoppingCriteriaList

__all__ = ["DEFAULT_PENALTY_ALPHA", "DEFAULT_TOP_K", "SPEC", "contrastive_search"]

# Defaults from "Contrastive Search Is What You Need For Neural Text Generation" (Su and Collier 2022).
DEFAULT_PENALTY_ALPHA = 0.6
DEFAULT_TOP_K = 4

ALPHA = Option(
    "alpha", "float", "degeneration penalty in [0, 1]; 0 is greedy",
    default=DEFAULT_PENALTY_ALPHA, check=lambda v: 0.0 <= v <= 1.0, valid="must be a number in [0, 1] (0 is greedy decoding)",
)  # fmt: skip
TOP_K = Option(
    "top_k", "int", "candidates per step; 1 is greedy", default=DEFAULT_TOP_K,
    check=lambda v: v >= 1, valid="must be an integer >= 1 (the number of candidates; 1 is greedy)",
)  # fmt: skip

# model_kwargs that generate() prepares (besides its cache) and that this loop consumes or may ignore.
_HANDLED_MODEL_KWARGS = {"attention_mask", "position_ids", "use_cache", "logits_to_keep"}


@strategy
@torch.no_grad()
def contrastive_search(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    generation_config: GenerationConfig | None = None,
    synced_gpus: bool = False,
    streamer: Any = None,
    penalty_alpha: float | None = None,
    top_k: int | None = None,
    tokenizer: Any = None,
    **model_kwargs: Any,
) -> Any:
    """Generate with contrastive search; pass it to ``generate(custom_generate=...)`` or call it directly.

    Args:
        model: a decoder-only ``PreTrainedModel`` whose base model returns ``last_hidden_state``.
        input_ids: ``(B, T)`` prompt ids, left padded when rows differ in length.
        logits_processor, stopping_criteria, generation_config, synced_gpus, streamer: prepared by
            ``generate()``. Processors shape the distribution whose top-k is taken (so repetition
            penalties and bad-word lists apply); stopping criteria (max_new_tokens, EOS, stop strings)
            end rows, which are then padded with the pad token.
        penalty_alpha: the degeneration penalty's weight ``alpha`` in [0, 1] (default 0.6).
            ``alpha = 0`` is greedy decoding.
        top_k: the number of candidates ``k >= 1`` (default 4). ``k = 1`` is greedy decoding.
        tokenizer: only used by ``generate()`` to build ``stop_strings`` criteria.
        **model_kwargs: ``attention_mask`` (B, T) and what ``generate()`` prepared; when called
            directly, any ``generate()`` keyword (``max_new_tokens``, ``eos_token_id``, ...).

    Returns:
        What ``generate()`` returns: ``(B, T + new)`` token ids, or a ``GenerateDecoderOnlyOutput``
        with ``scores`` (the processed logits at each step, ``(B, V)``) and ``logits`` when
        ``return_dict_in_generate=True`` and ``output_scores`` / ``output_logits`` are set.
    """
    alpha = DEFAULT_PENALTY_ALPHA if penalty_alpha is None else penalty_alpha
    k = DEFAULT_TOP_K if top_k is None else top_k
    _validate(model, alpha, k)

    if generation_config is None:
        # Called directly: let generate() prepare processors, stopping criteria and the cache, and
        # come back here through custom_generate.
        return model.generate(
            input_ids,
            custom_generate=contrastive_search,
            penalty_alpha=alpha,
            top_k=k,
            logits_processor=logits_processor,
            stopping_criteria=stopping_criteria,
            streamer=streamer,
            tokenizer=tokenizer,
            **model_kwargs,
        )
    cache = _hf.take_cache(model_kwargs)
    if cache is None or _hf.cache_length(cache) != 0:
        raise ValueError("contrastive_search needs the empty dynamic cache that generate() prepares")
    _validate_generation_config(generation_config, synced_gpus, model_kwargs)
    return _contrastive_search_loop(
        model,
        input_ids,
        logits_processor,
        stopping_criteria,
        generation_config,
        streamer,
        alpha,
        k,
        cache,
        model_kwargs,
    )


def _validate(model: Any, alpha: Any, k: Any) -> None:
    ALPHA.validate(alpha, argument="penalty_alpha")
    TOP_K.validate(k, argument="top_k")
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"model={type(model).__name__} is not a decoder-only transformers model; contrastive_search "
            "needs a causal LM (e.g. AutoModelForCausalLM)"
        )
    base = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if base is None or base is model or head is None:
        raise ValueError(
            f"model={type(model).__name__} cannot return hidden states: contrastive_search needs a causal "
            "LM with a base model (returning last_hidden_state) and an output embedding (lm_head)"
        )
    vocab = lm_rows(model)
    if k > vocab:
        raise OptionError("top_k", k, f"is larger than the model's vocabulary ({vocab} tokens)")


def _validate_generation_config(config: GenerationConfig, synced_gpus: bool, model_kwargs: dict) -> None:
    if config.do_sample:
        raise ValueError("do_sample=True does not apply: contrastive search is deterministic; leave it False")
    if config.num_beams not in (None, 1):
        raise ValueError(
            f"num_beams={config.num_beams} does not apply to contrastive search; use num_beams=1"
        )
    if (config.num_return_sequences or 1) != 1:
        raise ValueError(
            f"num_return_sequences={config.num_return_sequences}: contrastive search returns one"
        )
    if config.output_attentions or config.output_hidden_states:
        raise ValueError(
            "output_attentions / output_hidden_states are not returned by contrastive_search; "
            "use output_scores or output_logits"
        )
    if synced_gpus:
        raise ValueError("synced_gpus=True is not supported by contrastive_search")
    if model_kwargs.get("use_cache") is False:
        raise ValueError("use_cache=False: contrastive_search is built on the KV cache; leave use_cache on")
    extra = sorted(set(model_kwargs) - _HANDLED_MODEL_KWARGS)
    if extra:
        raise ValueError(
            f"contrastive_search does not forward these model inputs: {extra}; it supports text-only "
            "decoder-only models (input_ids and attention_mask)"
        )


def _contrastive_search_loop(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    streamer: Any,
    alpha: float,
    k: int,
    cache: Any,
    model_kwargs: dict[str, Any],
) -> Any:
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    base, head = model.base_model, model.get_output_embeddings()
    attention_mask = model_kwargs.get("attention_mask")
    if attention_mask is None:  # generate() drops an all-ones mask
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device)
    position_ids = positions_from_mask(attention_mask)  # (B, T): left padding shifts positions
    pad_id = _hf.pad_token(generation_config)
    has_eos = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    if has_eos and pad_id is None:
        raise ValueError("an EOS stopping rule needs pad_token_id to pad finished rows; set it in generate()")

    return_dict = generation_config.return_dict_in_generate
    scores: tuple[torch.Tensor, ...] | None = () if return_dict and generation_config.output_scores else None
    raw_logits: tuple[torch.Tensor, ...] | None = (
        () if return_dict and generation_config.output_logits else None
    )

    # Prefill: hidden states of every prompt position (the context of the penalty) and the cache.
    out = _hf.forward(base, input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache)
    if not _hf.is_plain_cache(cache):
        raise ValueError(
            "contrastive_search supports a cache of full-attention layers only (no sliding window or "
            f"recurrent layers); {type(model).__name__} has other layers"
        )
    context = out.last_hidden_state  # (B, T, H)
    context_mask = attention_mask.bool()  # (B, T): padding never enters the max-cosine
    logits = _hf.lm_head_logits(model, context[:, -1], head)  # (B, V)
    next_position = position_ids[:, -1] + 1  # (B,)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    # Each candidate sees the prefix and itself only: (k, k) identity block after the prefix.
    self_block = torch.eye(k, dtype=torch.bool, device=device)  # (k, k)

    while True:
        # 1. The distribution after processors (repetition penalty, bad words, ...), and its top-k.
        raw = logits.float()
        processed = logits_processor(input_ids, raw)  # (B, V)
        if scores is not None:
            scores += (processed,)
        if raw_logits is not None:
            raw_logits += (raw,)
        probs = processed.softmax(dim=-1)
        top_probs, top_ids = probs.topk(k, dim=-1)  # (B, k)

        # 2. One cached forward of the k candidates as k extra positions of each row.
        cache_len = _hf.cache_length(cache)
        allowed = torch.cat(
            [attention_mask.bool()[:, None, :].expand(batch, k, cache_len), self_block.expand(batch, k, k)],
            dim=-1,
        )  # (B, k, L + k)
        mask4d = torch.zeros(allowed.shape, dtype=model.dtype, device=device)
        mask4d.masked_fill_(~allowed, torch.finfo(model.dtype).min)
        cand = _hf.forward(
            base,
            top_ids,
            attention_mask=mask4d[:, None],  # (B, 1, k, L + k)
            position_ids=next_position[:, None].expand(batch, k),
            cache=cache,
        ).last_hidden_state  # (B, k, H)

        # 3. Degeneration penalty: max cosine of each candidate against the context, in fp32.
        cosine = F.normalize(cand.float(), dim=-1) @ F.normalize(context.float(), dim=-1).transpose(1, 2)
        cosine = cosine.masked_fill(~context_mask[:, None, :], float("-inf"))  # (B, k, L)
        penalty = cosine.max(dim=-1).values  # (B, k)

        # 4. Choose, keep the winner's cache entry, and compute the next distribution for it alone.
        choice = ((1.0 - alpha) * top_probs - alpha * penalty).argmax(dim=-1)  # (B,)
        next_tokens = top_ids.gather(1, choice[:, None]).squeeze(1)  # (B,)
        _hf.keep_candidate(cache, cache_len, choice)
        winner = cand[torch.arange(batch, device=device), choice]  # (B, H)
        if has_eos:
            next_tokens = torch.where(unfinished, next_tokens, pad_id)

        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=-1)
        context = torch.cat([context, winner[:, None]], dim=1)
        context_mask = torch.cat([context_mask, context_mask.new_ones(batch, 1)], dim=1)
        next_position = next_position + 1
        if streamer is not None:
            streamer.put(next_tokens.cpu())

        unfinished = unfinished & ~stopping_criteria(input_ids, scores)
        if not unfinished.any():
            break
        logits = _hf.lm_head_logits(model, winner, head)

    if streamer is not None:
        streamer.end()
    if return_dict:
        return _hf.generate_output(input_ids, scores, raw_logits, cache)
    return input_ids


def _check_model(values: dict[str, Any], facts: Any) -> None:
    if facts.vocab_size is not None and values["top_k"] > facts.vocab_size:
        raise OptionError(
            "top_k", values["top_k"], f"is larger than the model's vocabulary ({facts.vocab_size} tokens)"
        )


SPEC = StrategySpec(
    position=10,
    name="contrastive-search",
    summary="contrastive search (Su et al. 2022): alpha penalises similarity to the context",
    options=(ALPHA, TOP_K),
    build=lambda values: {
        "custom_generate": contrastive_search,
        "penalty_alpha": values["alpha"],
        "top_k": values["top_k"],
    },
    no_vllm="it needs the model's hidden states at every step, which vLLM does not expose",
    check_model=_check_model,
    aliases=("contrastive_search",),
)
