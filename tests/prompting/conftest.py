"""Fixtures for the prompting, pipeline and CLI tests: SmolLM2's tokenizer and tiny models that use it."""

from __future__ import annotations

import pytest

from tests.tiny_models import tiny_llama


def make_tiny(tokenizer, seed: int = 0, n_layer: int = 2):
    """A random 2-layer llama over SmolLM2's vocabulary (49152), hidden 16: fast, and its special ids match."""
    model = tiny_llama(seed=seed, n_layer=n_layer, vocab_size=len(tokenizer), hidden=16)
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.bos_token_id = tokenizer.bos_token_id
    return model


@pytest.fixture(scope="session")
def tiny_model(smol_tokenizer):
    return make_tiny(smol_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer):
    """A saved tiny model folder with SmolLM2's tokenizer, for ``--model``."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny(smol_tokenizer).save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_amateur_dir(tmp_path_factory, smol_tokenizer):
    """A second, different tiny model folder (an amateur for contrastive decoding)."""
    path = tmp_path_factory.mktemp("tiny-amateur")
    make_tiny(smol_tokenizer, seed=1, n_layer=1).save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return path
