import pytest

from tests.tiny_models import tiny_llama


@pytest.fixture(scope="module")
def expert():
    """Three-layer tiny Llama (vocab 97): the expert, and the model whose layers layer contrast reads."""
    return tiny_llama(seed=0, n_layer=3)


@pytest.fixture(scope="module")
def amateur():
    """One-layer tiny Llama with the expert's vocabulary and different weights."""
    return tiny_llama(seed=1, n_layer=1)
