"""The rewriter's text side (POS Sec. 4.3, 5.2): the instruction template, answer cleaning, the atomizer
check and the answer cache."""

from __future__ import annotations

import json
import os

import pytest

from comfyui_searchpriors.retrieval.errors import SearchPriorsError
from comfyui_searchpriors.retrieval.rewriter import (RewriteCache, build_instruction, cache_key, chat_messages,
                                                     check_rewrite, clean_answer, reference_lines,
                                                     validate_template)

REFS = ["a man rides a horse along the beach.", "a boy rides his bike down a hill",
        "  a woman cycles   past a tower at sunset ", "a bear rides a tricycle in a circus.",
        "people ride bicycles through a park", "a sixth caption that k leaves out"]
PROMPT = "A panda rides a bicycle past the Eiffel Tower."


def test_paper_template_exact_text_k5():
    text, used = build_instruction(PROMPT, REFS, k=5, max_words=20)
    assert text == (
        "Let me give you 5 examples: a man rides a horse along the beach, a boy rides his bike down a hill, "
        "a woman cycles past a tower at sunset, a bear rides a tricycle in a circus, people ride bicycles "
        "through a park, rewrite the sentence A panda rides a bicycle past the Eiffel Tower without changing "
        "the meaning of the original sentence to a maximum of 20 words, imitating/combining the adjectives, "
        "adverbs or sentence patterns from the 5 examples above")
    assert len(used) == 5 and "sixth" not in text


def test_paper_template_exact_text_k3_and_other_word_limit():
    text, used = build_instruction("A dog catches a frisbee", REFS, k=3, max_words=12)
    assert text == (
        "Let me give you 3 examples: a man rides a horse along the beach, a boy rides his bike down a hill, "
        "a woman cycles past a tower at sunset, rewrite the sentence A dog catches a frisbee without changing "
        "the meaning of the original sentence to a maximum of 12 words, imitating/combining the adjectives, "
        "adverbs or sentence patterns from the 3 examples above")
    assert used == [" ".join(r.split()).rstrip(".") for r in REFS[:3]]


def test_fewer_references_than_k_says_how_many_were_given():
    text, _ = build_instruction(PROMPT, REFS[:2], k=5)
    assert text.startswith("Let me give you 2 examples: a man rides") and "from the 2 examples above" in text


def test_reference_lines_skip_blanks():
    assert reference_lines("a\n\n  b  c \n") == ["a", "b c"]


def test_no_references_is_a_clear_error():
    with pytest.raises(SearchPriorsError, match="No reference captions"):
        build_instruction(PROMPT, ["", "  "], k=5)


def test_custom_template_fields_filled():
    text, _ = build_instruction(PROMPT, REFS, k=2, max_words=9,
                                template="P={prompt} | {references_numbered} | first={ref1} | {k}/{max_words} {{x}}")
    assert text == ("P=A panda rides a bicycle past the Eiffel Tower | 1. a man rides a horse along the beach\n"
                    "2. a boy rides his bike down a hill | first=a man rides a horse along the beach | 2/9 {x}")


@pytest.mark.parametrize("template, message", [
    ("Rewrite {prompt} like {examples}", r"unknown field\(s\) \{examples\}"),
    ("Rewrite {prompt} using {ref6}", r"unknown field\(s\) \{ref6\}"),
    ("Rewrite {prompt.__class__}", "unknown field"),
    ("Rewrite {prompt!r}", "conversion or format spec"),
    ("Rewrite {prompt:>40}", "conversion or format spec"),
    ("Rewrite {prompt", "unbalanced braces"),
    ("Rewrite the references {references}", r"no \{prompt\} field"),
])
def test_custom_template_errors(template, message):
    with pytest.raises(SearchPriorsError, match=message):
        validate_template(template, k=5)
    with pytest.raises(SearchPriorsError, match=message):
        build_instruction(PROMPT, REFS, k=5, template=template)


def test_chat_messages_system_optional():
    assert chat_messages("do it") == [{"role": "user", "content": "do it"}]
    assert chat_messages("do it", " be brief ")[0] == {"role": "system", "content": "be brief"}


@pytest.mark.parametrize("answer, expected, note", [
    ('"A panda rides a red bicycle."', "A panda rides a red bicycle.", "quotes"),
    ("Rewritten: A panda rides a bicycle", "A panda rides a bicycle", "Rewritten:"),
    ('Rewritten sentence: “A panda rides a bicycle.”', "A panda rides a bicycle.", "quotes"),
    ("**Rewritten:** A panda rides a bicycle", "A panda rides a bicycle", "Rewritten:"),
    ("Sure! Here is the rewritten sentence:\n\nA panda rides a bicycle.\n\nIt keeps the meaning.",
     "A panda rides a bicycle.", "extra line"),
    ("<think>the user wants...</think>\nA panda rides a bicycle.", "A panda rides a bicycle.", "<think>"),
    ("1. A panda rides a bicycle", "A panda rides a bicycle", None),
    ("A panda rides a bicycle.", "A panda rides a bicycle.", None),
    ("A dog's day out", "A dog's day out", None),       # an apostrophe is not a quote pair
    ("New York traffic flows at night", "New York traffic flows at night", None),
])
def test_clean_answer(answer, expected, note):
    text, notes = clean_answer(answer)
    assert text == expected
    if note is None:
        assert not any("prefix" in n or "quotes" in n for n in notes)
    else:
        assert any(note in n for n in notes), notes


def test_clean_answer_empty():
    assert clean_answer("   \n ")[0] == ""
    assert clean_answer("Rewritten:")[0] == ""


def test_check_passes_when_every_role_is_kept(nlp):
    check = check_rewrite(nlp, "A panda rides a bicycle past the Eiffel Tower",
                          "A cheerful panda riding a red bicycle past the Eiffel Tower", 20)
    assert check.passed and check.lost == [] and check.words == 11
    assert check.prompt_units == ["panda -ride-> bicycle"]


def test_check_names_the_lost_roles(nlp):
    check = check_rewrite(nlp, "A panda rides a bicycle past the Eiffel Tower",
                          "A bear pedals a bicycle near a tower", 20)
    lost = {(x.role, x.phrase) for x in check.lost}
    assert lost == {("motion", "ride"), ("actor", "panda")}
    assert not check.passed
    assert any("the motion 'ride' of [panda -ride-> bicycle]" in p for p in check.problems())


def test_check_word_limit_and_empty(nlp):
    long = check_rewrite(nlp, "A dog runs", "A happy dog runs across a wide sunny beach today", 5)
    assert long.kept_every_role and long.too_long and not long.passed
    assert "10 words, more than the limit of 5" in long.problems()[0]
    empty = check_rewrite(nlp, "A dog runs", "", 5)
    assert empty.empty and not empty.passed and {x.role for x in empty.lost} == {"motion", "actor"}


def test_check_over_units_with_two_verbs(nlp):
    check = check_rewrite(nlp, "A girl jumps and catches a ball", "A young girl leaps and catches a red ball", 20)
    assert [(x.role, x.phrase) for x in check.lost] == [("motion", "jump")]


def test_cache_key_depends_on_what_decides_the_answer():
    msgs = chat_messages("x")
    base = cache_key("openai_compatible", "m", msgs, 0, 0.0, 96)
    assert base == cache_key("openai_compatible", "m", chat_messages("x"), 0, 0.0, 96)
    others = {cache_key("local_transformers", "m", msgs, 0, 0.0, 96), cache_key("openai_compatible", "n", msgs, 0, 0.0, 96),
              cache_key("openai_compatible", "m", chat_messages("y"), 0, 0.0, 96),
              cache_key("openai_compatible", "m", msgs, 1, 0.0, 96),
              cache_key("openai_compatible", "m", msgs, 0, 0.5, 96),
              cache_key("openai_compatible", "m", msgs, 0, 0.0, 64)}
    assert base not in others and len(others) == 6


def test_cache_memory_disk_round_trip_and_damaged_file(tmp_path):
    path = tmp_path / "sub" / "cache.json"
    cache = RewriteCache(str(path), limit=3)
    cache.put("a", {"answer": "one"})
    cache.put("b", {"answer": "two"}, use_disk=False)
    assert cache.get("a")["answer"] == "one" and cache.get("b")["answer"] == "two"
    on_disk = json.loads(path.read_text())["entries"]
    assert set(on_disk) == {"a"}                       # memory-only entries stay off the disk
    assert RewriteCache(str(path)).get("a")["answer"] == "one"     # a restart reads the file
    assert RewriteCache(str(path)).get("a", use_disk=False) is None
    for key in "cdef":
        cache.put(key, {"answer": key})
    assert cache.get("a") is None and cache.get("f")["answer"] == "f"   # newest `limit` kept
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
    path.write_text("{not json")
    damaged = RewriteCache(str(path))
    assert damaged.get("f") is None
    damaged.put("g", {"answer": "g"})
    assert json.loads(path.read_text())["entries"]["g"]["answer"] == "g"


# ------------------------------------------------------------------------------------------ length caps

class CountingNlp:
    """spaCy's pipeline, recording the length of every text it is asked to parse."""

    def __init__(self, nlp):
        self.nlp, self.lengths = nlp, []
        self.vocab = nlp.vocab

    def __call__(self, text):
        self.lengths.append(len(text))
        return self.nlp(text)

    def __getattr__(self, name):
        return getattr(self.nlp, name)


def test_a_prompt_above_the_cap_is_refused_before_anything_is_parsed(nlp):
    from comfyui_searchpriors.retrieval.rewriter import MAX_TEXT_CHARS, build_instruction, check_rewrite

    long_prompt = "a dog runs " * 1000
    with pytest.raises(SearchPriorsError, match=r"prompt \(the text to rewrite\) is too long: 10,999 characters, "
                                                f"more than the limit of {MAX_TEXT_CHARS:,}"):
        build_instruction(long_prompt, ["a cat jumps"])
    counting = CountingNlp(nlp)
    with pytest.raises(SearchPriorsError, match="too long"):
        check_rewrite(counting, long_prompt, "a dog runs", 20)
    assert counting.lengths == []


@pytest.mark.parametrize("size", [2_001, 200_000])
def test_a_rewrite_above_the_cap_is_not_parsed_and_fails_the_check(nlp, size):
    from comfyui_searchpriors.retrieval.rewriter import check_rewrite

    counting = CountingNlp(nlp)
    rewrite = ("a dog runs fast " * (size // 16 + 1))[:size]
    check = check_rewrite(counting, "A dog runs", rewrite, 20)
    assert max(counting.lengths) <= 2_000 and not check.passed and check.unchecked
    assert f"{len(rewrite.strip()):,} characters" in check.problems()[0]


def test_a_huge_answer_is_not_cleaned():
    from comfyui_searchpriors.retrieval.rewriter import MAX_RAW_ANSWER_CHARS, clean_answer

    text, notes = clean_answer("<think>" + "x" * MAX_RAW_ANSWER_CHARS + "</think> A dog runs.")
    assert notes == [f"not cleaned: the answer has {MAX_RAW_ANSWER_CHARS + 27:,} characters"]
    assert clean_answer("<think>hmm</think> A dog runs.")[0] == "A dog runs."

def test_eq6_references_take_a_pos_retrieval_and_refuse_search_t2v():
    from types import SimpleNamespace

    from comfyui_searchpriors.retrieval.errors import SearchPriorsError
    from comfyui_searchpriors.retrieval.rewriter import eq6_references

    pos = SimpleNamespace(mode="pos", reference_captions=lambda: ["a", "b"])
    assert eq6_references(pos) == ["a", "b"]
    for mode in ("search_t2v", None):
        other = SimpleNamespace(mode=mode, reference_captions=lambda: ["a"])
        with pytest.raises(SearchPriorsError, match="Set that Motion Retriever's mode to 'pos'.*reference_captions"):
            eq6_references(other)
