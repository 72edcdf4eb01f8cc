"""Tiny random causal LMs built in code: fast, offline, and enough to check exactness in fp32."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

VOCAB = 97  # odd on purpose: catches code that assumes a round vocabulary
PAD_ID = 0
EOS_ID = 1


def tiny_gpt2(seed: int = 0, n_layer: int = 2, vocab_size: int = VOCAB) -> PreTrainedModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=256,
        n_embd=32,
        n_layer=n_layer,
        n_head=4,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    model = GPT2LMHeadModel(config).eval()
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    return model


def tiny_llama(seed: int = 0, n_layer: int = 2, vocab_size: int = VOCAB, hidden: int = 32) -> PreTrainedModel:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layer,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    return model


def left_padded_batch(prompts: list[list[int]], pad_id: int = PAD_ID) -> dict[str, torch.Tensor]:
    """Left-pad token-id lists into ``input_ids`` and ``attention_mask`` (B, T)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p) :] = torch.tensor(p)
        attention_mask[i, width - len(p) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# Three prompts of different lengths, no EOS inside, used across the decoding tests.
MIXED_PROMPTS = [[5, 17, 33, 8, 61, 12, 40], [22, 9], [70, 3, 44, 91]]
