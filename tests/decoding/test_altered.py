import pytest

from counterpoint.batching import left_pad
from counterpoint.decoding.input_contrast import (
    OPPOSITE_INSTRUCTION,
    noisy_instruction,
    perturb_token_ids,
    without_spans,
)


def test_noisy_instruction_variants():
    inst = "Translate the sentence into French please"
    assert noisy_instruction(inst, "opposite") == OPPOSITE_INSTRUCTION
    assert noisy_instruction(inst, "null") == ""
    rand = noisy_instruction(inst, "random_words", words=["x", "y"], seed=1)
    assert len(rand.split()) == 6 and set(rand.split()) <= {"x", "y"}
    trunc = noisy_instruction(inst, "truncate_shuffle", keep=0.5, seed=3)
    assert sorted(trunc.split()) == sorted(inst.split()[:3])
    with pytest.raises(ValueError, match=r"kind='reverse' is not a noise kind"):
        noisy_instruction(inst, "reverse")
    with pytest.raises(ValueError, match=r"keep=0 must be in \(0, 1\]"):
        noisy_instruction(inst, "truncate_shuffle", keep=0)


def test_perturb_token_ids_changes_exactly_the_asked_share():
    ids = list(range(10, 30))
    out = perturb_token_ids(ids, 0.25, vocab_size=50, protect=[0, 1], seed=7)
    changed = [i for i, (a, b) in enumerate(zip(ids, out, strict=True)) if a != b]
    assert len(changed) == 5 and not {0, 1} & set(changed)
    assert all(0 <= t < 50 for t in out)
    assert perturb_token_ids(ids, 0.25, vocab_size=50, protect=[0, 1], seed=7) == out  # seeded
    with pytest.raises(ValueError, match=r"rate=1.5 must be in \[0, 1\]"):
        perturb_token_ids(ids, 1.5, vocab_size=50)


def test_without_spans_and_left_pad():
    assert without_spans([1, 2, 3, 4, 5, 6], [(4, 5), (0, 2)]) == [3, 4, 6]
    with pytest.raises(ValueError, match=r"spans \(0, 3\) and \(2, 4\) overlap"):
        without_spans([1, 2, 3, 4], [(0, 3), (2, 4)])
    with pytest.raises(ValueError, match=r"span \(2, 9\) is outside the prompt's 4 tokens"):
        without_spans([1, 2, 3, 4], [(2, 9)])
    batch = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match=r"sequences \[1\] are empty"):
        left_pad([[5], []], pad_token_id=0)
