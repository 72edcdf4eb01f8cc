import pytest

from counterpoint.prompting import ChatTemplate, FewShotTemplate, RenderedPrompt

DEMOS = [
    {"input": "great film", "output": "positive"},
    {"input": "dull plot", "output": "negative"},
]


def test_render_text_lays_out_instruction_demos_query():
    t = FewShotTemplate(instruction="Classify the sentiment.")
    assert t.render_text(DEMOS, {"input": "loved it"}) == (
        "Classify the sentiment.\n\n"
        "Input: great film\nOutput: positive\n\n"
        "Input: dull plot\nOutput: negative\n\n"
        "Input: loved it\nOutput:"
    )


def test_selection_results_render_like_plain_examples_and_strings_like_dicts():
    t = FewShotTemplate(demo_format="Q: {input} A: {output}", query_format="Q: {input} A:", separator="\n")
    selected = [{"index": 7, "score": 0.5, "example": d} for d in DEMOS]
    plain = t.render_text(DEMOS, {"input": "x"})
    assert (
        t.render_text(selected, "x")
        == plain
        == "Q: great film A: positive\nQ: dull plot A: negative\nQ: x A:"
    )
    assert t.render_text([], "x") == "Q: x A:"  # no instruction, no demos: the query alone


def test_render_counts_tokens_as_the_tokenizer_does(smol_tokenizer):
    t = FewShotTemplate()
    r = t.render(DEMOS, {"input": "loved it"}, smol_tokenizer)
    assert isinstance(r, RenderedPrompt)
    assert r.text == t.render_text(DEMOS, {"input": "loved it"})
    assert r.num_tokens == len(smol_tokenizer(r.text)["input_ids"]) > 10
    assert t.render(DEMOS, "x").num_tokens is None


def test_context_is_written_before_its_record_and_dropped_for_no_context():
    t = FewShotTemplate(query_format="Q: {input}\nA:")
    q = {"input": "who won?", "context": "Spain won the final."}
    assert t.render_text([], q) == "Context: Spain won the final.\nQ: who won?\nA:"
    assert t.amateur_text([DEMOS[0]], q, "no-context") == (
        "Input: great film\nOutput: positive\n\nQ: who won?\nA:"
    )
    with pytest.raises(
        ValueError, match=r"variant='no-context' needs the query to have a non-empty 'context'"
    ):
        t.amateur_text([], {"input": "x"}, "no-context")


def test_amateur_variants_come_from_the_same_template():
    t = FewShotTemplate(instruction="Be helpful.", noisy_instruction="Be unhelpful.")
    q = {"input": "loved it"}
    assert t.amateur_text(DEMOS, q, "no-demos") == "Be helpful.\n\nInput: loved it\nOutput:"
    assert t.amateur_text(DEMOS, q, "noisy-instruction") == t.render_text(DEMOS, q).replace(
        "Be helpful.", "Be unhelpful."
    )
    with pytest.raises(ValueError, match=r"variant='bogus' is not an amateur variant; use one of"):
        t.amateur_text(DEMOS, q, "bogus")


def test_contrastive_demonstrations_are_marked():
    t = FewShotTemplate(contrastive=True, demo_format="Q: {input}\nA: {output}")
    demos = [
        {"input": "hi", "output": "Hello! How can I help?", "polarity": "positive"},
        {"input": "hi", "output": "what", "polarity": False},
    ]
    assert t.render_text(demos, {"input": "hey"}) == (
        "Positive example:\nQ: hi\nA: Hello! How can I help?\n\n"
        "Negative example:\nQ: hi\nA: what\n\n"
        "Input: hey\nOutput:"
    )
    with pytest.raises(
        ValueError, match=r"contrastive=True needs every demonstration's 'polarity' .* got None"
    ):
        t.render_text([DEMOS[0]], "x")


def test_missing_field_names_the_format_and_the_keys():
    t = FewShotTemplate()
    with pytest.raises(
        KeyError, match=r"demo_format=.* needs field 'output' but the demonstration has keys \['input'\]"
    ):
        t.render_text([{"input": "a"}], "x")
    with pytest.raises(
        KeyError, match=r"query_format=.* needs field 'input' but the query has keys \['text'\]"
    ):
        t.render_text([], {"text": "a"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"demo_format": "no fields"},
            r"demo_format='no fields' must be a str.format string with at least one",
        ),
        ({"query_format": 3}, r"query_format=3 must be a str.format string"),
        ({"context_format": "C: {ctx}"}, r"context_format='C: \{ctx\}' must contain \{context\}"),
    ],
)
def test_template_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FewShotTemplate(**kwargs)


def test_chat_rendering_alternates_user_and_assistant_turns(smol_tokenizer):
    t = FewShotTemplate(instruction="Classify.")
    chat = t.chat(smol_tokenizer)
    assert t.to_messages(DEMOS, "loved it") == [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "great film"},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "dull plot"},
        {"role": "assistant", "content": "negative"},
        {"role": "user", "content": "loved it"},
    ]
    # SmolLM2's ChatML template, written out by hand.
    assert chat.render_text(DEMOS, "loved it") == (
        "<|im_start|>system\nClassify.<|im_end|>\n"
        "<|im_start|>user\ngreat film<|im_end|>\n<|im_start|>assistant\npositive<|im_end|>\n"
        "<|im_start|>user\ndull plot<|im_end|>\n<|im_start|>assistant\nnegative<|im_end|>\n"
        "<|im_start|>user\nloved it<|im_end|>\n<|im_start|>assistant\n"
    )
    # The text holds its special tokens already: counted without adding more.
    r = chat.render(DEMOS, "loved it")
    assert r.num_tokens == len(smol_tokenizer(r.text, add_special_tokens=False)["input_ids"])
    assert ChatTemplate.add_special_tokens is False


def test_chat_system_prompt_and_amateur_variants(smol_tokenizer):
    t = FewShotTemplate(instruction="Classify.", noisy_instruction="Ignore the task.")
    chat = ChatTemplate(t, smol_tokenizer, system_prompt="You are terse.")
    q = {"input": "who won?", "context": "Spain won."}
    full = chat.render_text(DEMOS, q)
    assert full.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n")
    assert "<|im_start|>user\nContext: Spain won.\nwho won?<|im_end|>" in full
    assert chat.amateur_text(DEMOS, q, "no-demos") == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nContext: Spain won.\nwho won?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat.amateur_text(DEMOS, q, "no-context") == full.replace("Context: Spain won.\n", "")
    assert chat.amateur_text(DEMOS, q, "noisy-instruction") == full.replace(
        "You are terse.", "Ignore the task."
    )


def test_chat_needs_a_chat_template(smol_tokenizer):
    class NoChat:
        chat_template = None
        name_or_path = "plain"

    with pytest.raises(ValueError, match=r"tokenizer NoChat \(plain\) has no chat_template"):
        FewShotTemplate().chat(NoChat())
