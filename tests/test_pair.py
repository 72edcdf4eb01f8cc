"""The Qwen2.5-Coder expert-amateur pair that scripts/get_pair.sh assembles (opt-in, never downloads).

Runs with --runslow and only where the pair is present: in $COUNTERPOINT_PAIR_DIR, else
$COUNTERPOINT_CACHE/pair, else ~/.cache/counterpoint/pair (the script's own default).
"""

import hashlib
import os
import re
from pathlib import Path

import pytest

from counterpoint.decoding.processors import check_vocabularies

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "get_pair.sh"
EXPERT, AMATEUR = "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct"


def _pair_dir() -> Path:
    if os.environ.get("COUNTERPOINT_PAIR_DIR"):
        return Path(os.environ["COUNTERPOINT_PAIR_DIR"])
    cache = os.environ.get("COUNTERPOINT_CACHE")
    return (Path(cache) if cache else Path.home() / ".cache" / "counterpoint") / "pair"


def _expected_hashes() -> dict[str, str]:
    """The sha256 of each assembled GGUF, read from the script's PAIR table (one source for both)."""
    rows = re.findall(r'^\s*"([^|"]+)\|[^|]+\|\d+\|[^|]+\|([0-9a-f]{64})\|', SCRIPT.read_text(), re.M)
    return dict(rows)


PAIR_DIR = _pair_dir()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all((PAIR_DIR / f"{name}.gguf").is_file() for name in (EXPERT, AMATEUR)),
        reason=f"the Qwen2.5-Coder pair is not in {PAIR_DIR}; run scripts/get_pair.sh (1.5 GB download)",
    ),
]


def test_script_pins_both_files():
    hashes = _expected_hashes()
    assert set(hashes) == {EXPERT, AMATEUR}
    # The amateur's hash is the one given with the pair; the expert's was computed by the script's author.
    assert hashes[AMATEUR] == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


@pytest.mark.parametrize("name", [EXPERT, AMATEUR])
def test_assembled_file_has_the_pinned_sha256(name):
    h = hashlib.sha256()
    with open(PAIR_DIR / f"{name}.gguf", "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    assert h.hexdigest() == _expected_hashes()[name]


@pytest.fixture(scope="module")
def tokenizer_fields():
    """Each GGUF's tokenizer fields and output-matrix rows, parsed once (the parse takes a while)."""
    import gguf

    out = {}
    for name in (EXPERT, AMATEUR):
        reader = gguf.GGUFReader(str(PAIR_DIR / f"{name}.gguf"))
        fields = {}
        for key, field in reader.fields.items():
            if key.startswith("tokenizer.ggml."):
                values = [field.parts[i] for i in field.data]
                if (
                    field.types[0] == gguf.GGUFValueType.ARRAY
                    and field.types[-1] == gguf.GGUFValueType.STRING
                ):
                    fields[key] = [bytes(v).decode() for v in values]
                elif field.types[0] == gguf.GGUFValueType.STRING:
                    fields[key] = bytes(values[0]).decode()
                else:
                    fields[key] = [v.tolist() for v in values]
        # GGUF lists the fastest-varying dimension first: (hidden, vocab). A tied model has no output.weight.
        shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
        rows = shapes.get("output.weight", shapes["token_embd.weight"])[1]
        out[name] = (fields, rows)
    return out


def test_expert_and_amateur_share_the_tokenizer(tokenizer_fields):
    expert, expert_rows = tokenizer_fields[EXPERT]
    amateur, amateur_rows = tokenizer_fields[AMATEUR]
    # The same tokenizer: the same tokens at the same ids, merges, token types and special token ids.
    assert expert.keys() == amateur.keys()
    for key in sorted(expert):
        assert expert[key] == amateur[key], key
    tokens = expert["tokenizer.ggml.tokens"]
    assert len(tokens) > 150_000 and len(set(tokens)) == len(tokens)
    assert len(expert["tokenizer.ggml.merges"]) > 100_000
    # Both output matrices have one row per token, so the library accepts the pair as it is.
    assert expert_rows == amateur_rows == len(tokens)
    assert check_vocabularies(expert_rows, amateur_rows) is None
