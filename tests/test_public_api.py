import importlib
import subprocess
import sys

import counterpoint


def test_every_exported_name_resolves():
    for name in counterpoint.__all__:
        assert getattr(counterpoint, name) is not None


def test_exports_are_the_subpackages_objects():
    from counterpoint.decoding import contrastive_search
    from counterpoint.selection import select

    assert counterpoint.contrastive_search is contrastive_search
    assert counterpoint.select is select


def test_import_is_light():
    code = "import sys, counterpoint; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unknown_name_is_an_attribute_error():
    try:
        counterpoint.no_such_name  # noqa: B018
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("expected AttributeError")
    assert importlib.import_module("counterpoint").__version__ == "0.1.0"


def test_all_lists_exactly_the_lazy_exports():
    assert sorted(counterpoint.__all__) == sorted(["__version__", *counterpoint._EXPORTS])
