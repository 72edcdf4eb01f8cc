import pytest
import torch

from counterpoint.decoding import input_contrast
from counterpoint.decoding.scores import ContrastConfig
from counterpoint.prompting import (
    FewShotTemplate,
    GenerationOptions,
    Pipeline,
    generate_texts,
    length_batches,
)

POOL = [
    {"input": "the cat sat on the mat", "output": "cats"},
    {"input": "a dog barked all night long", "output": "dogs"},
    {"input": "the stock market fell sharply today", "output": "finance"},
    {"input": "rain is expected tomorrow morning", "output": "weather"},
]
QUERIES = [
    {"input": "my dog"},
    {"input": "will the market recover after it fell so sharply this week"},
    {"input": "the cat"},
    {"input": "more rain expected tomorrow in the morning and then sun"},
    {"input": "dogs and cats"},
]


class OverlapSelector:
    """A tiny deterministic selector: the k pool examples sharing most words with the query."""

    def __init__(self, pool, k=2):
        self.pool, self.k = pool, k

    def select(self, queries):
        out = []
        for q in queries:
            words = set(q["input"].split())
            scored = sorted(
                ((len(words & set(ex["input"].split())), -i) for i, ex in enumerate(self.pool)), reverse=True
            )[: self.k]
            out.append([{"index": -i, "score": float(s), "example": self.pool[-i]} for s, i in scored])
        return out


class Recorder:
    """Wraps model.generate: records each call's inputs and kwargs, strips the contrast-only kwargs."""

    def __init__(self, model, monkeypatch):
        self.calls = []
        original = model.generate

        def generate(**kwargs):
            self.calls.append(dict(kwargs))
            for key in ("custom_generate", "contrast", "amateur_input_ids", "amateur_attention_mask"):
                kwargs.pop(key, None)
            return original(**kwargs)

        monkeypatch.setattr(model, "generate", generate)


def unpadded(call, row):
    ids, mask = call["input_ids"][row], call["attention_mask"][row]
    assert mask.tolist() == sorted(mask.tolist()), "padding must be on the left"
    return ids[mask.bool()].tolist()


def test_prompt_given_to_model_is_the_template_rendering_of_the_selected_demos(
    tiny_model, smol_tokenizer, monkeypatch
):
    template = FewShotTemplate(instruction="Topic?")
    selector = OverlapSelector(POOL)
    rec = Recorder(tiny_model, monkeypatch)
    pipe = Pipeline(tiny_model, smol_tokenizer, template, selector, max_new_tokens=3, batch_size=2)
    results = pipe.run(QUERIES)

    expected_demos = selector.select(QUERIES)
    assert [r.index for r in results] == list(range(len(QUERIES)))
    seen = {}
    for call in rec.calls:
        for row in range(call["input_ids"].shape[0]):
            seen[tuple(unpadded(call, row))] = True
    for r, demos, q in zip(results, expected_demos, QUERIES, strict=True):
        assert r.query == q and r.demos == demos
        assert r.prompt == template.render_text(demos, q)
        assert tuple(smol_tokenizer(r.prompt)["input_ids"]) in seen
    assert len(seen) == len(QUERIES)


def test_batches_are_grouped_by_length_and_outputs_match_one_by_one_greedy(
    tiny_model, smol_tokenizer, monkeypatch
):
    rec = Recorder(tiny_model, monkeypatch)
    pipe = Pipeline(tiny_model, smol_tokenizer, FewShotTemplate(), None, max_new_tokens=4, batch_size=2)
    results = pipe.run(QUERIES)
    lengths = [len(smol_tokenizer(r.prompt)["input_ids"]) for r in results]
    # longest first, two per batch: (1, 3), (4, 0 or 2 ...) as the lengths order them
    order = sorted(range(len(QUERIES)), key=lambda i: -lengths[i])
    assert [[len(unpadded(c, j)) for j in range(c["input_ids"].shape[0])] for c in rec.calls] == [
        [lengths[i] for i in order[k : k + 2]] for k in range(0, len(order), 2)
    ]
    for r in results:  # oracle: the same prompt alone, no padding
        ids = torch.tensor([smol_tokenizer(r.prompt)["input_ids"]])
        alone = tiny_model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1] :]
        assert r.output_ids == alone.tolist()
        assert r.output == smol_tokenizer.decode(alone, skip_special_tokens=True)


def test_length_batches():
    assert length_batches([3, 9, 1, 9, 5], 2) == [[1, 3], [4, 0], [2]]
    assert length_batches([], 4) == []
    with pytest.raises(ValueError, match=r"batch_size=0 must be an int >= 1"):
        length_batches([1], 0)


def test_sampling_is_seeded_and_a_skipped_run_matches_the_full_run(tiny_model, smol_tokenizer):
    prompts = [f"prompt number {i} " * (i + 1) for i in range(5)]
    opts = GenerationOptions(temperature=1.5)

    def run(**kw):
        return {
            i: ids
            for i, _, ids in generate_texts(
                tiny_model,
                smol_tokenizer,
                prompts,
                strategy="sample",
                options=opts,
                max_new_tokens=5,
                batch_size=2,
                **kw,
            )
        }

    full = run(seed=3)
    assert run(seed=3) == full
    assert run(seed=4) != full
    # The plan is [4, 3], [2, 1], [0] (longest first); skipping a whole batch leaves the others as they were.
    assert run(seed=3, skip={3, 4}) == {i: v for i, v in full.items() if i not in {3, 4}}


def test_beam_matches_model_generate(tiny_model, smol_tokenizer):
    prompt = "Input: hello\nOutput:"
    [(i, _, ids)] = list(
        generate_texts(
            tiny_model,
            smol_tokenizer,
            [prompt],
            strategy="beam",
            options=GenerationOptions(num_beams=3),
            max_new_tokens=4,
        )
    )
    enc = smol_tokenizer([prompt], return_tensors="pt")
    ref = tiny_model.generate(**enc, max_new_tokens=4, num_beams=3, do_sample=False)[
        0, enc["input_ids"].shape[1] :
    ]
    assert i == 0 and ids == ref.tolist()[: len(ids)]


def test_callable_selector_and_selector_errors(tiny_model, smol_tokenizer):
    pipe = Pipeline(tiny_model, smol_tokenizer, selector=lambda qs: [[POOL[0]] for _ in qs], max_new_tokens=1)
    [r] = pipe.run(["x"])
    assert r.prompt == "Input: the cat sat on the mat\nOutput: cats\n\nInput: x\nOutput:"
    bad = Pipeline(tiny_model, smol_tokenizer, selector=lambda qs: [], max_new_tokens=1)
    with pytest.raises(ValueError, match=r"the selector returned 0 demo lists for 1 queries"):
        bad.run(["x"])
    with pytest.raises(
        TypeError, match=r"selector=3 must be None, an object with select\(queries\), or a callable"
    ):
        Pipeline(tiny_model, smol_tokenizer, selector=3)


def test_input_contrast_gets_amateur_prompts_from_the_template(tiny_model, smol_tokenizer, monkeypatch):
    rec = Recorder(tiny_model, monkeypatch)
    template = FewShotTemplate(instruction="Topic?", noisy_instruction="Say nonsense.")
    opts = GenerationOptions(variant="noisy-instruction", beta=0.25)
    pipe = Pipeline(
        tiny_model, smol_tokenizer, template, OverlapSelector(POOL), "input-contrast", opts, max_new_tokens=2
    )
    results = pipe.run(QUERIES[:3])
    [call] = rec.calls
    assert call["custom_generate"] is input_contrast and call["contrast"] == ContrastConfig(beta=0.25)
    amateur = {"input_ids": call["amateur_input_ids"], "attention_mask": call["amateur_attention_mask"]}
    got = {tuple(unpadded(amateur, j)) for j in range(3)}
    for r in results:
        assert r.amateur_prompt == template.amateur_text(r.demos, r.query, "noisy-instruction")
        assert r.amateur_prompt.startswith("Say nonsense.\n\n")
        assert tuple(smol_tokenizer(r.amateur_prompt)["input_ids"]) in got


def test_pipeline_validates_before_any_work(tiny_model, smol_tokenizer):
    with pytest.raises(ValueError, match=r"strategy='nucleus' is unknown; use one of: greedy, sample, beam"):
        Pipeline(tiny_model, smol_tokenizer, strategy="nucleus")
    with pytest.raises(
        ValueError, match=r"beta=1.0 does not apply to strategy 'greedy'; it takes: no options"
    ):
        Pipeline(tiny_model, smol_tokenizer, options=GenerationOptions(beta=1.0))
    with pytest.raises(ValueError, match=r"max_new_tokens=0 must be an int >= 1"):
        Pipeline(tiny_model, smol_tokenizer, max_new_tokens=0)
