"""The vLLM backend: greedy, sampling, beam search and two-model contrastive decoding on a vLLM engine.

No vLLM import at module level: :meth:`VllmBackend.check` refuses what vLLM cannot run before anything
loads, with or without vLLM installed, and says when vLLM itself is missing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from counterpoint.decoding.backend import Backend, Batch, Generated
from counterpoint.decoding.registry import get_strategy
from counterpoint.decoding.spec import GenerationOptions, StrategySpec
from counterpoint.decoding.vllm.args import require_vllm
from counterpoint.decoding.vllm.engine import build_llm, engine_amateur

__all__ = ["VllmBackend"]


class VllmBackend(Backend):
    """A ``vllm.LLM`` engine running one strategy; the engine batches and schedules the prompts itself.

    Args:
        model: a ``vllm.LLM`` (built with :func:`counterpoint.decoding.vllm.build_llm` when the strategy
            contrasts with an amateur: the engine holds it).
        tokenizer: the expert's tokenizer; prompts are tokenized here so that the engine reads exactly
            the ids the transformers backend would.
        strategy, options: as for every backend; ``options.amateur`` must name the engine's amateur.
    """

    name = "vllm"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        strategy: str | StrategySpec = "greedy",
        options: GenerationOptions | Mapping[str, Any] | None = None,
        *,
        generate_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if generate_kwargs:
            raise ValueError(
                f"generate_kwargs={dict(generate_kwargs)!r} apply to the transformers backend only"
            )
        super().__init__(model, tokenizer, strategy, options)  # the strategy first: it needs no model
        if not hasattr(model, "llm_engine"):
            raise ValueError(
                f"backend='vllm' needs model to be a vllm.LLM (see VllmBackend.load), not {type(model).__name__}"
            )
        self.request = self.spec.build_vllm(self.values)
        wanted = self.request.get("amateur")
        if wanted is not None:
            held = engine_amateur(model)
            if held is None:
                raise ValueError(
                    f"strategy {self.spec.name!r} on the vLLM backend needs an engine built with its amateur: "
                    "VllmBackend.load(...) or counterpoint.decoding.vllm.build_llm(model, amateur=...)"
                )
            if os.path.abspath(str(held)) != os.path.abspath(str(wanted)):
                raise ValueError(
                    f"amateur={str(wanted)!r} but the vLLM engine was built with amateur {held!r}: an engine has one "
                    "amateur; build another engine for another amateur"
                )

    @classmethod
    def request(
        cls, strategy: str | StrategySpec, options: GenerationOptions | Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The vLLM request settings of a strategy and its options (checked)."""
        spec = get_strategy(strategy)
        if spec.build_vllm is None:
            raise ValueError(
                f"strategy {spec.name!r} cannot run on the vLLM backend: {spec.no_vllm}; use the transformers "
                "backend (backend='transformers', on the command line --backend transformers)"
            )
        return spec.build_vllm(spec.resolve(options))

    @classmethod
    def check(
        cls, strategy: str | StrategySpec, options: GenerationOptions | Mapping[str, Any] | None = None
    ) -> StrategySpec:
        cls.request(strategy, options)
        require_vllm()
        return get_strategy(strategy)

    @classmethod
    def load_model(
        cls,
        model: str | os.PathLike[str] | None = None,
        options: GenerationOptions | None = None,
        *,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> tuple[Any, Any, GenerationOptions]:
        """A vLLM engine (fp32 unless ``dtype=`` says otherwise) for ``model``, with the amateur ``options`` name.

        GGUF models (the embedded default too) are converted to safetensors once, which vLLM needs.
        """
        from transformers import AutoTokenizer

        from counterpoint.models import resolve_language_model_path

        require_vllm()  # before any conversion or loading
        options = options or GenerationOptions()
        path = resolve_language_model_path(model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"  # as load_language_model sets it up
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        amateur = None
        if isinstance(options.amateur, str | os.PathLike):
            amateur = resolve_language_model_path(options.amateur, argument="amateur")
            options = options.replace(amateur=amateur)
        return build_llm(path, amateur=amateur, seed=seed, **engine_kwargs), tokenizer, options

    def context_length(self) -> int | None:
        config = getattr(getattr(self.model, "llm_engine", None), "model_config", None)
        value = getattr(config, "max_model_len", None)
        return value if isinstance(value, int) else None

    def generate(self, batch: Batch) -> list[Generated]:
        from counterpoint.decoding.vllm.engine import generate_vllm

        ids = self.prompt_ids(batch.prompts, batch.add_special_tokens)
        limit = self.context_length()
        if batch.truncate and limit is not None:
            keep = max(1, limit - batch.max_new_tokens)
            ids = [row[-keep:] for row in ids]
        outs = generate_vllm(
            None, ids, self.spec, self.options, max_new_tokens=batch.max_new_tokens,
            seed=0 if batch.seed is None else batch.seed, llm=self.model,
        )  # fmt: skip
        # vLLM stops at EOS itself (and keeps it), as the transformers backend's cut does.
        return [
            Generated(self.tokenizer.decode(o.token_ids, skip_special_tokens=True), list(o.token_ids))
            for o in outs
        ]
