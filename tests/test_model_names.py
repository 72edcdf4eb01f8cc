"""Model and embedder names that are no model: one OptionError line each, before anything loads.

Every case runs in a folder of its own (``./file.jsonl`` and the like are relative to it), with
model loading, config reading and the network all made to fail if touched: the error must come
from the name alone.
"""

import socket

import huggingface_hub.constants
import pytest
import sentence_transformers
import transformers

from counterpoint import models
from counterpoint.errors import OptionError

OFFLINE = "Hub ids need network access, and HF_HUB_OFFLINE is set"
EXPECTED = "expected a model folder (with config.json), a .gguf file, or a Hugging Face Hub id (org/name)"

# (name given, message after "model=<name> "), for the language model; the Hub is off (conftest).
MODEL_CASES = [
    ("expertt", f"is not a local file or folder (no such path), and not a Hub id (org/name); {OFFLINE}"),
    (
        "org/expertt",
        f"is not a local file or folder (no such path), and not in the Hugging Face cache; {OFFLINE}",
    ),
    ("./no-such-folder", "is not an existing file or folder (no such path)"),
    ("./absent.gguf", "is not an existing file or folder (no such path)"),
    ("~/no-such-folder/model", "is not an existing file or folder (no such path)"),
    (
        "./file.jsonl",
        f"is a file but not a GGUF file (it does not start with the GGUF magic bytes); {EXPECTED}",
    ),
    (
        "./fake.gguf",
        f"is a file but not a GGUF file (it does not start with the GGUF magic bytes); {EXPECTED}",
    ),
    (
        "./empty",
        "is a folder but not a model: it holds no config.json and no .gguf file (expected a folder "
        "written by save_pretrained, or a folder with one .gguf file)",
    ),
    ("./two", "holds several GGUF files (a.gguf, b.gguf); pass the path of the one to load"),
]

EMBEDDER_CASES = [
    ("expertt", f"is not a local folder (no such path), and not a Hub id (org/name); {OFFLINE}"),
    ("org/expertt", f"is not a local folder (no such path), and not in the Hugging Face cache; {OFFLINE}"),
    ("./no-such-folder", "is not an existing file or folder (no such path)"),
    (
        "./file.jsonl",
        "is a file, not a model folder; expected a sentence-transformers folder (with modules.json) "
        "or a Hugging Face Hub id (org/name)",
    ),
    (
        "./empty",
        "is a folder but not a model: it holds no modules.json (sentence-transformers) and no "
        "config.json (transformers)",
    ),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder holding one of each kind of non-model, as the current directory; an empty HF cache."""
    (tmp_path / "file.jsonl").write_text('{"prompt": "hi"}\n')
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf file")
    (tmp_path / "empty").mkdir()
    (tmp_path / "two").mkdir()
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / "two" / name).write_bytes(b"GGUF")
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text('{"model_type": "llama"}')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("SENTENCE_TRANSFORMERS_HOME", raising=False)
    return tmp_path


@pytest.fixture
def nothing_loads(monkeypatch):
    """Any attempt to read a config, a tokenizer or weights, to convert a GGUF or to open a socket fails."""

    def forbidden(*args, **kwargs):
        raise AssertionError(f"tried to load or connect: {args!r}")

    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(cls, "from_pretrained", forbidden)
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", forbidden)
    monkeypatch.setattr(models, "_converted_gguf", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket, "getaddrinfo", forbidden)


@pytest.fixture
def online(monkeypatch):
    """The Hub allowed, as far as the environment says (the sockets stay blocked by nothing_loads)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def _message(argument, name, problem):
    return f"{argument}={name!r} {problem}"


@pytest.mark.parametrize(
    "load", [models.resolve_language_model_path, models.load_language_model, models.read_model_config]
)
@pytest.mark.parametrize(("name", "problem"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_a_model_name_that_is_no_model_is_one_clear_error(workdir, nothing_loads, load, name, problem):
    with pytest.raises(OptionError) as err:
        load(name)
    assert str(err.value) == _message("model", name, problem)
    assert (err.value.argument, err.value.value) == ("model", name)
    assert err.value.render("--model") == f"--model {name} {problem}"


@pytest.mark.parametrize("load", [models.resolve_embedder_path, models.load_embedder])
@pytest.mark.parametrize(("name", "problem"), EMBEDDER_CASES, ids=[c[0] for c in EMBEDDER_CASES])
def test_an_embedder_name_that_is_no_model_is_one_clear_error(workdir, nothing_loads, load, name, problem):
    with pytest.raises(OptionError) as err:
        load(name)
    assert str(err.value) == _message("embedder", name, problem)
    assert err.value.render("--embedder") == f"--embedder {name} {problem}"


def test_the_argument_name_is_the_callers(workdir, nothing_loads):
    with pytest.raises(OptionError) as err:
        models.load_language_model("./empty", argument="amateur")
    assert str(err.value).startswith("amateur='./empty' is a folder but not a model")


def test_a_folder_with_a_config_but_no_weights_is_refused_before_loading(workdir, nothing_loads):
    for load in (models.resolve_language_model_path, models.load_language_model):
        with pytest.raises(OptionError) as err:
            load("./config_only")
        assert str(err.value) == _message(
            "model",
            "./config_only",
            "is a model folder without weights: it holds a config.json but no *.safetensors or *.bin file",
        )


def test_transformers_offline_is_named_too(workdir, nothing_loads, online, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(OptionError, match=r"Hub ids need network access, and TRANSFORMERS_OFFLINE is set$"):
        models.load_language_model("org/expertt")


def test_online_a_bare_word_is_still_refused_without_touching_the_network(workdir, nothing_loads, online):
    """``expertt`` is no Hub id shape: no request is made (the sockets would raise), the reason is given."""
    with pytest.raises(OptionError) as err:
        models.load_language_model("expertt")
    assert str(err.value) == _message(
        "model",
        "expertt",
        "is not a local file or folder (no such path), nor a Hub id: a Hub id has the form org/name and "
        "needs network access",
    )
    with pytest.raises(
        OptionError, match=r"^embedder='expertt' is not a local folder \(no such path\), nor a Hub id"
    ):
        models.load_embedder("expertt")


def test_online_an_org_name_id_goes_to_the_hub_and_its_failure_is_one_line(workdir, online, monkeypatch):
    """Resolving needs no network; the Hub's "no such repository" (an OSError) becomes an OptionError."""
    assert models.resolve_language_model_path("org/expertt") == "org/expertt"
    seen = []

    def not_on_the_hub(name, *args, **kwargs):
        seen.append(name)
        raise OSError(
            f"{name} is not a local folder and is not a valid model identifier listed on "
            "'https://huggingface.co/models'\nIf this is a private repository, ..."
        )

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", not_on_the_hub)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", not_on_the_hub)
    for load in (models.load_language_model, models.read_model_config):
        with pytest.raises(OptionError) as err:
            load("org/expertt")
        assert str(err.value) == _message(
            "model",
            "org/expertt",
            "could not be loaded from the Hugging Face Hub: org/expertt is not a local folder and is not a "
            "valid model identifier listed on 'https://huggingface.co/models'",
        )
    assert seen == ["org/expertt", "org/expertt"]


def _cache_model(cache, repo_id, filename):
    """Lay out ``filename`` of ``repo_id`` the way huggingface_hub caches it."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    (folder / "snapshots" / "abc123" / filename).write_text("{}")


def test_a_hub_id_in_the_local_cache_resolves_offline(workdir):
    cache = workdir / "hf-cache"
    _cache_model(cache, "org/cached", "config.json")
    _cache_model(cache, "gpt2", "config.json")  # a legacy id with no org
    _cache_model(cache, "sentence-transformers/all-mpnet-base-v2", "modules.json")
    assert models.resolve_language_model_path("org/cached") == "org/cached"
    assert models.resolve_language_model_path("gpt2") == "gpt2"
    # sentence-transformers' shorthand: a bare name means sentence-transformers/<name>
    assert models.resolve_embedder_path("all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    with pytest.raises(OptionError, match="not in the Hugging Face cache"):
        models.resolve_language_model_path("org/other")


def test_local_models_and_defaults_still_resolve(workdir, nothing_loads):
    (workdir / "model").mkdir()
    (workdir / "model" / "config.json").write_text("{}")
    (workdir / "model" / "model.safetensors").write_bytes(b"")
    assert models.resolve_language_model_path("./model") == "model"
    (workdir / "st").mkdir()
    (workdir / "st" / "modules.json").write_text("[]")
    assert models.resolve_embedder_path("./st") == "st"
    assert models.resolve_embedder_path(None).endswith("model")
    assert models.resolve_embedder_path("All-MiniLM-L6-v2") == models.resolve_embedder_path(None)
