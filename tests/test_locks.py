"""The lock files agree with pyproject.toml, and scripts/lock.py compares sets the way setup relies on."""

import importlib.util
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
MAIN_EXTRAS = ["dev", "faiss", "langchain", "eval"]  # scripts/setup.sh's EXTRAS


def requirements(extras):
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PYPROJECT["optional-dependencies"][extra]]
    return reqs


@pytest.mark.parametrize(("name", "extras"), [("main", MAIN_EXTRAS), ("vllm", [])])
def test_locked_versions_satisfy_pyproject(name, extras):
    pins, torch_build = lock.read_lock(ROOT / "locks" / f"{name}.txt")
    assert torch_build is not None and torch_build.startswith(pins["torch"])
    for req in requirements(extras):
        key = lock.canonical(req.name)
        assert key in pins, f"locks/{name}.txt has no pin for {req}: refresh it (python3 scripts/lock.py)"
        assert req.specifier.contains(pins[key], prereleases=True), (
            f"locks/{name}.txt pins {key}=={pins[key]}, outside pyproject.toml's {req}: refresh it"
        )


def test_reference_lock_is_transformers_4_55_4_on_the_main_torch():
    ref, _ = lock.read_lock(ROOT / "locks" / "ref.txt")
    main, _ = lock.read_lock(ROOT / "locks" / "main.txt")
    assert ref["transformers"] == "4.55.4"
    assert ref["torch"] == main["torch"]


def test_lower_bound_is_read_from_pyproject():
    declared = next(r for r in requirements([]) if r.name == "transformers")
    bound = lock.lower_bound("transformers")
    assert bound == "5.19.0"
    assert declared.specifier.contains(bound) and not declared.specifier.contains("5.18.99")


def test_lower_bound_of_an_undeclared_package_is_an_error():
    with pytest.raises(SystemExit, match=r"declares no `nonexistent-package>=\.\.\.` dependency"):
        lock.lower_bound("nonexistent-package")


def test_differences_name_every_mismatch_and_ignore_local_labels_the_lock_omits():
    pins = {"torch": "2.13.0", "numpy": "2.4.6", "tqdm": "4.70.1"}
    have = {"torch": "2.13.0+cpu", "numpy": "2.4.5", "click": "8.5.1"}
    assert lock.differences(pins, have) == [
        "click: not in the lock, installed 8.5.1",
        "numpy: locked 2.4.6, installed 2.4.5",
        "tqdm: locked 4.70.1, not installed",
    ]
    assert lock.differences({"torch": "2.13.0+cpu"}, {"torch": "2.13.0"}) == [
        "torch: locked 2.13.0+cpu, installed 2.13.0"
    ]


def test_read_lock_refuses_anything_but_exact_pins(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("numpy>=2\n")
    with pytest.raises(SystemExit, match=r"'numpy>=2' is not a `name==version` pin"):
        lock.read_lock(bad)
