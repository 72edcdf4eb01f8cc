"""The transformers backend: ``model.generate`` on a ``PreTrainedModel``, every strategy.

Example:
    >>> backend = TransformersBackend.load(None, "contrastive-search")     # the embedded SmolLM2
    >>> [out.text for _, out in run_batches(backend, ["Once upon a time"], max_new_tokens=16)]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from counterpoint.batching import left_pad
from counterpoint.decoding.backend import Backend, Batch, Generated, check_model
from counterpoint.decoding.registry import get_strategy
from counterpoint.decoding.spec import GenerationOptions, StrategySpec
from counterpoint.models import model_facts

__all__ = ["TransformersBackend"]


class TransformersBackend(Backend):
    """``model.generate`` with the strategy's keyword arguments, one call per batch.

    Args:
        model: a causal ``PreTrainedModel``.
        tokenizer: its tokenizer (needs a pad token); prompts are padded on the left.
        strategy, options: the strategy and its options; a named amateur must be loaded already
            (:meth:`load` loads it).
        generate_kwargs: more ``model.generate`` keyword arguments, over the strategy's.
    """

    name = "transformers"
    streaming = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        strategy: str | StrategySpec = "greedy",
        options: GenerationOptions | Mapping[str, Any] | None = None,
        *,
        generate_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if hasattr(model, "llm_engine"):
            raise ValueError(
                "model is a vLLM engine: pass backend='vllm' (on the command line --backend vllm)"
            )
        super().__init__(model, tokenizer, strategy, options, generate_kwargs=generate_kwargs)
        check_model(self.spec, self.options, model_facts(model.config))
        self.kwargs = {**self.spec.build(self.values), **self.generate_kwargs}
        eos = model.generation_config.eos_token_id
        self.eos = set() if eos is None else {eos} if isinstance(eos, int) else set(eos)

    @classmethod
    def check(
        cls, strategy: str | StrategySpec, options: GenerationOptions | Mapping[str, Any] | None = None
    ) -> StrategySpec:
        spec = get_strategy(strategy)
        spec.resolve(options)
        return spec

    @classmethod
    def load_model(
        cls,
        model: str | os.PathLike[str] | None = None,
        options: GenerationOptions | None = None,
        *,
        seed: int = 0,
        **load_kwargs: Any,
    ) -> tuple[Any, Any, GenerationOptions]:
        """Load ``model`` with :func:`counterpoint.models.load_language_model` (fp32), and a named amateur
        beside it on the same device. ``seed`` is unused here (generation seeds each batch)."""
        from counterpoint.models import load_language_model

        options = options or GenerationOptions()
        lm, tokenizer = load_language_model(model, **load_kwargs)
        if isinstance(options.amateur, str | os.PathLike):
            amateur, _ = load_language_model(options.amateur, device=lm.device, argument="amateur")
            options = options.replace(amateur=amateur)
        return lm, tokenizer, options

    def context_length(self) -> int | None:
        config = self.model.config.get_text_config()
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _encode(self, texts: list[str], batch: Batch) -> dict[str, torch.Tensor]:
        ids = self.prompt_ids(texts, batch.add_special_tokens)
        limit = self.context_length()
        if batch.truncate and limit is not None:
            keep = max(1, limit - batch.max_new_tokens)
            ids = [row[-keep:] for row in ids]
        return left_pad(ids, self.tokenizer.pad_token_id, device=self.model.device)

    def generate(self, batch: Batch) -> list[Generated]:
        enc = self._encode(batch.prompts, batch)
        call = dict(self.kwargs)
        if batch.amateur_prompts is not None:
            amateur = self._encode(batch.amateur_prompts, batch)
            call["amateur_input_ids"] = amateur["input_ids"]
            call["amateur_attention_mask"] = amateur["attention_mask"]
        if batch.streamer is not None:
            call["streamer"] = batch.streamer
        if batch.seed is not None:
            torch.manual_seed(batch.seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=batch.max_new_tokens, **call)
        results = []
        for ids in out[:, enc["input_ids"].shape[1] :].tolist():
            cut = next((j + 1 for j, t in enumerate(ids) if t in self.eos), len(ids))
            ids = ids[:cut]
            results.append(Generated(self.tokenizer.decode(ids, skip_special_tokens=True), ids))
        return results
