"""read_model_config and model_facts: a model's config and limits, with no weights loaded.

Oracles: the GGUF header reader against the ``gguf`` package's own reader; the fast GGUF config
against transformers' ``AutoConfig.from_pretrained(..., gguf_file=...)``; the facts against the
modules of the model built from the config (layers counted, the LM head's width, the position table).
"""

import gguf
import pytest
import safetensors
import safetensors.torch
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MambaConfig,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.integrations.ggml import _gguf_parse_value

from counterpoint import models
from tests.test_models import _write_llama_gguf
from tests.tiny_models import tiny_llama


@pytest.fixture
def no_weights(monkeypatch):
    """Fail on any weight loading, GGUF dequantizing or GGUF conversion."""

    def forbidden(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", forbidden)
    monkeypatch.setattr(safetensors, "safe_open", forbidden)
    monkeypatch.setattr(safetensors.torch, "load_file", forbidden)
    monkeypatch.setattr(gguf, "dequantize", forbidden)
    monkeypatch.setattr(models, "_converted_gguf", forbidden)


@pytest.fixture
def tiny_gguf(tmp_path, monkeypatch):
    """A tiny Llama written as a GGUF file (fp32), with an empty conversion cache."""
    monkeypatch.setenv("COUNTERPOINT_CACHE", str(tmp_path / "cache"))
    model = tiny_llama(seed=1, n_layer=3)
    path = tmp_path / "gguf" / "tiny.gguf"
    path.parent.mkdir()
    _write_llama_gguf(gguf, model, path)
    return model, path


def _gguf_config_dict(metadata, tensor_names):
    from counterpoint import _hf

    return _hf.gguf_config_dict(metadata, tensor_names, string_list=models._StringArray)


def _reference_metadata(path):
    """The metadata as the gguf package reads it, string arrays reduced to their length."""
    reader = gguf.GGUFReader(path)
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        values = [_gguf_parse_value(field.parts[i], field.types) for i in field.data]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            out[key] = (
                models._StringArray(len(values)) if field.types[1] == gguf.GGUFValueType.STRING else values
            )
        else:
            (out[key],) = values
    return out, [t.name for t in reader.tensors]


def test_gguf_header_reader_matches_the_gguf_package(tiny_gguf):
    _, path = tiny_gguf
    assert models.read_gguf_metadata(path) == _reference_metadata(path)


def test_gguf_header_reader_refuses_what_is_no_gguf(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"a\.gguf does not start with the GGUF magic bytes$"):
        models.read_gguf_metadata(tmp_path / "a.gguf")
    (tmp_path / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 20)
    with pytest.raises(ValueError, match=r"cut\.gguf: the GGUF header is cut short"):
        models.read_gguf_metadata(tmp_path / "cut.gguf")
    (tmp_path / "v1.gguf").write_bytes(b"GGUF\x01\x00\x00\x00" + b"\x00" * 16)
    with pytest.raises(ValueError, match=r"v1\.gguf is GGUF version 1; versions 2 and 3 are read$"):
        models.read_gguf_metadata(tmp_path / "v1.gguf")


def test_gguf_config_equals_transformers_own_and_loads_no_weights(tiny_gguf, monkeypatch):
    model, path = tiny_gguf
    reference = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)

    monkeypatch.setattr(gguf, "GGUFReader", _forbidden)  # the fast path reads the header itself
    with monkeypatch.context() as m:
        for target, name in [(AutoModelForCausalLM, "from_pretrained"), (gguf, "dequantize")]:
            m.setattr(target, name, _forbidden)
        m.setattr(models, "_converted_gguf", _forbidden)
        config = models.read_model_config(path)
    assert config.to_dict() == reference.to_dict()
    assert not (models.cache_root()).exists()  # nothing converted
    facts = models.model_facts(config)
    assert facts == (len(model.model.layers), model.lm_head.out_features, 256)


def test_gguf_config_of_a_converted_file_is_the_converted_folders(tiny_gguf, monkeypatch):
    _, path = tiny_gguf
    before = models.read_model_config(path)
    folder = models.resolve_language_model_path(path)  # converts, into the test's cache
    assert folder.startswith(str(models.cache_root()))
    spy = []
    real = transformers.AutoConfig.from_pretrained.__func__

    def from_pretrained(cls, where, *args, **kwargs):
        spy.append(str(where))
        return real(cls, where, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", _forbidden)
    monkeypatch.setattr(safetensors, "safe_open", _forbidden)
    after = models.read_model_config(path)
    assert spy == [folder]
    assert models.model_facts(after) == models.model_facts(before)


def test_config_of_a_model_folder_loads_no_weights(tmp_path, no_weights):
    model = tiny_llama(seed=0, n_layer=2)
    model.save_pretrained(tmp_path / "m")
    config = models.read_model_config(tmp_path / "m")
    assert models.model_facts(config) == (2, model.lm_head.out_features, 256)


def test_a_special_cased_gguf_architecture_goes_to_transformers():
    assert _gguf_config_dict({"general.architecture": "stablelm"}, []) is None
    assert _gguf_config_dict({"general.architecture": "qwen2moe"}, []) is None
    assert _gguf_config_dict({"general.architecture": "llama", "general.name": "Mistral 7B"}, []) is None
    assert _gguf_config_dict({"general.architecture": "not-an-arch"}, []) is None


def _forbidden(*args, **kwargs):
    raise AssertionError("this must not be called")


# -- model_facts against the models built from each config ------------------------------------------


def _built(config, cls=AutoModelForCausalLM):
    with torch.device("meta"):  # structure only, no memory
        return cls.from_config(config) if cls is AutoModelForCausalLM else cls(config)


def test_facts_of_a_llama_config():
    config = LlamaConfig(vocab_size=97, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, max_position_embeddings=64)  # fmt: skip
    model = _built(config)
    assert models.model_facts(config) == (len(model.model.layers), model.lm_head.out_features, 64)


def test_facts_of_a_gpt2_config_read_through_its_own_names():
    config = GPT2Config(vocab_size=101, n_embd=16, n_layer=4, n_head=2, n_positions=48)
    model = _built(config)
    expected = (len(model.transformer.h), model.lm_head.out_features, model.transformer.wpe.num_embeddings)
    assert models.model_facts(config) == expected == (4, 101, 48)


def test_facts_of_an_encoder_decoder_count_the_decoder():
    config = T5Config(
        vocab_size=64, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=3, num_decoder_layers=2
    )
    model = _built(config, T5ForConditionalGeneration)
    assert models.model_facts(config).num_layers == len(model.decoder.block) == 2
    assert models.model_facts(config).vocab_size == model.lm_head.out_features


def test_facts_of_a_model_without_positions_have_no_context_limit():
    config = MambaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, state_size=4)
    model = _built(config)
    assert models.model_facts(config) == (len(model.backbone.layers), model.lm_head.out_features, None)


def test_facts_of_a_multimodal_config_are_its_text_decoders():
    text = LlamaConfig(vocab_size=77, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, max_position_embeddings=32)  # fmt: skip
    config = LlavaConfig(text_config=text.to_dict(), vision_config={"model_type": "clip_vision_model",
                         "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "image_size": 8, "patch_size": 4})  # fmt: skip
    model = _built(config, LlavaForConditionalGeneration)
    expected = (len(model.model.language_model.layers), model.lm_head.out_features, 32)
    assert models.model_facts(config) == expected


def test_facts_refuse_a_config_without_layers():
    config = transformers.PretrainedConfig(vocab_size=10)
    with pytest.raises(
        ValueError, match=r"^the PreTrainedConfig of '' gives no layer count \(num_hidden_layers\)$"
    ):
        models.model_facts(config)
    config = transformers.PretrainedConfig(num_hidden_layers=2)
    with pytest.raises(
        ValueError, match=r"^the PreTrainedConfig of '' gives no vocabulary size \(vocab_size\)$"
    ):
        models.model_facts(config)


@pytest.mark.slow
def test_smollm2_config_without_weights(smollm2, tmp_path, monkeypatch):
    """The embedded GGUF: fast config == transformers' own, == the converted folder's facts, == the model's."""
    model, _ = smollm2
    gguf_path = models._package_dir(models._SMOLLM2) / models._SMOLLM2["file"]
    assert models.read_gguf_metadata(gguf_path) == _reference_metadata(gguf_path)
    reference = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    cached = models.read_model_config()  # the conversion cache exists: the smollm2 fixture loaded it
    monkeypatch.setenv("COUNTERPOINT_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(gguf, "GGUFReader", _forbidden)
    monkeypatch.setattr(gguf, "dequantize", _forbidden)
    monkeypatch.setattr(models, "_converted_gguf", _forbidden)
    fresh = models.read_model_config()
    assert fresh.to_dict() == reference.to_dict()
    facts = (len(model.model.layers), model.lm_head.out_features, 8192)
    assert models.model_facts(fresh) == models.model_facts(cached) == facts == (30, 49152, 8192)
