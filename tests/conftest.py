import os

import pytest
import torch

# Two virtual cores that behave like one: with two threads small matmuls run many times slower.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: runs the embedded models; pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct, loaded once per session (fp32, CPU)."""
    from counterpoint.models import load_language_model

    return load_language_model()


@pytest.fixture(scope="session")
def minilm():
    """The embedded all-MiniLM-L6-v2, loaded once per session."""
    from counterpoint.models import load_embedder

    return load_embedder(device="cpu")


@pytest.fixture(scope="session")
def smol_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer alone (left padding, pad = <|im_end|>), loaded once."""
    from transformers import AutoTokenizer

    from counterpoint.models import resolve_language_model_path

    tok = AutoTokenizer.from_pretrained(resolve_language_model_path(None))
    tok.padding_side = "left"
    return tok
