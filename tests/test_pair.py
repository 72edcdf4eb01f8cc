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


def _lm_head_rows(path: Path) -> int:
    """Rows of the output matrix, read from the GGUF's tensor table (no weights are loaded)."""
    import gguf

    shapes = {t.name: [int(d) for d in t.shape] for t in gguf.GGUFReader(str(path)).tensors}
    # GGUF lists the fastest-varying dimension first: (hidden, vocab). Tied models have no output.weight.
    return shapes.get("output.weight", shapes["token_embd.weight"])[1]


def test_expert_and_amateur_share_the_vocabulary():
    from transformers import AutoTokenizer

    tokenizers = {
        name: AutoTokenizer.from_pretrained(PAIR_DIR, gguf_file=f"{name}.gguf") for name in (EXPERT, AMATEUR)
    }
    expert, amateur = tokenizers[EXPERT], tokenizers[AMATEUR]
    assert expert.get_vocab() == amateur.get_vocab()
    assert expert.all_special_tokens == amateur.all_special_tokens
    text = "def add(a, b):\n    return a + b  # sum"
    assert expert(text)["input_ids"] == amateur(text)["input_ids"]
    rows = {name: _lm_head_rows(PAIR_DIR / f"{name}.gguf") for name in (EXPERT, AMATEUR)}
    # Both heads are padded past the real vocabulary to the same number of rows; the library accepts the pair.
    assert rows[EXPERT] == rows[AMATEUR] >= len(expert)
    assert check_vocabularies(rows[EXPERT], rows[AMATEUR], expert, amateur) == len(expert)
