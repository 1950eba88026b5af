"""Benchmark-style prompts: modifiers split off, recovery rules that find the verbs the parser missed,
the English check, the length cap and batched atomizing with per-prompt errors (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from comfyui_searchpriors.retrieval import atomizer as A
from comfyui_searchpriors.retrieval.atomizer import Unit, parse_text, parse_texts, split_modifiers
from comfyui_searchpriors.retrieval.embedding import atomize, atomize_many
from comfyui_searchpriors.retrieval.errors import SearchPriorsError


def core_of(nlp, text):
    parsed = parse_text(nlp, text)
    return parsed, parsed.core


# Each issue example and each recovery rule: (prompt, core unit, rule that found it, modifiers)
@pytest.mark.parametrize("text, core, rule, modifiers", [
    ("two kangaroos box playfully", Unit("box", "kangaroo", None), A.RULE_PLURAL_SUBJECT, []),
    ("three parrots chatter in a tropical rainforest", Unit("chatter", "parrot", "rainforest"), A.RULE_PLURAL_SUBJECT, []),
    ("four frogs leap from lily pad to lily pad in a pond", Unit("leap", "frog", "pad"), A.RULE_PLURAL_SUBJECT, []),
    ("waves crash", Unit("crash", "wave", None), A.RULE_PLURAL_SUBJECT, []),
    ("A horse races alongside a moving train", Unit("race", "horse", "train"), A.RULE_SINGULAR_SUBJECT, []),
    ("Dog firefighter rescues kittens from a tree", Unit("rescue", "dog firefighter", "kitten"), A.RULE_COMPOUND_VERB, []),
    ("A panda drinking coffee in a cafe in Paris, animated style", Unit("drink", "panda", "coffee"),
     A.RULE_HIDDEN_PARTICIPLE, ["animated style"]),
    ("A cute happy Corgi playing in park, sunset, racking focus", Unit("play", "corgi", "park"),
     A.RULE_HIDDEN_PARTICIPLE, ["racking focus"]),
    ("A person is sweeping floor", Unit("sweep", "person", "floor"), A.RULE_PROGRESSIVE, []),
    ("Close up of grapes on a rotating table.", Unit("rotate", "table", None), A.RULE_PARTICIPLE_ADJECTIVE, ["close up"]),
    ("a kitten chases a laser dot", Unit("chase", "kitten", "laser dot"), A.RULE_REPARSE, []),
    ("a woman dances flamenco, in the style of a painting", Unit("dance", "woman", "flamenco"), A.RULE_REPARSE,
     ["in the style of a painting"]),
    ("a top spinning on a table", Unit("spin", "top", "table"), A.RULE_REPARSE, []),
])
def test_issue_examples_and_recovery_rules(nlp, text, core, rule, modifiers):
    parsed, got = core_of(nlp, text)
    assert got == core, parsed.describe()
    assert got.rule == rule
    assert parsed.modifiers == modifiers
    assert parsed.fallback is None
    assert f"(recovered: {rule})" in parsed.describe() and rule in " ".join(parsed.notes)


def test_coordinated_verb_read_as_noun(nlp):
    parsed = parse_text(nlp, "a glass falls and breaks on the floor")
    assert parsed.units == [Unit("fall", "glass", None), Unit("break", "glass", "floor")]
    assert parsed.core_index == 0 and parsed.units[0].rule is None
    assert parsed.units[1].rule == A.RULE_COORDINATED


@pytest.mark.parametrize("text, core", [
    ("cats fight", Unit("fight", "cat", None)),
    ("A panda rides a bicycle past the Eiffel Tower", Unit("ride", "panda", "bicycle")),
    ("The ocean waves crash against the rocks", Unit("crash", "ocean wave", "rock")),
])
def test_plain_parses_carry_no_rule(nlp, text, core):
    parsed, got = core_of(nlp, text)
    assert got == core and got.rule is None and not parsed.modifiers


@pytest.mark.parametrize("text, content, modifiers", [
    ("A cat playing piano, with an intense shaking effect, 4k", "A cat playing piano",
     ["with an intense shaking effect", "4k"]),
    ("A car drifting on a race track, in cyberpunk style", "A car drifting on a race track", ["in cyberpunk style"]),
    ("An astronaut flying in space, Van Gogh style", "An astronaut flying in space", ["Van Gogh style"]),
    ("a dog runs on the beach in slow motion", "a dog runs on the beach", ["in slow motion"]),
    ("Cinematic, a dog runs on the beach", "a dog runs on the beach", ["Cinematic"]),
    ("Time-lapse of clouds", "clouds", ["time-lapse"]),
    ("a video of a man playing guitar", "a man playing guitar", ["video"]),
    ("Aerial view of a small island", "a small island", ["aerial view"]),
    ("A man taking a video of a dog", "A man taking a video of a dog", []),         # not a shot phrase
    ("A cute happy Corgi playing in park, sunset", "A cute happy Corgi playing in park, sunset", []),
    ("4k, cinematic", "4k, cinematic", []),                                          # nothing but modifiers: kept
])
def test_split_modifiers(text, content, modifiers):
    assert split_modifiers(text) == (content, modifiers)


def test_modifiers_never_take_the_core(nlp):
    for text in ("A panda drinking coffee in a cafe in Paris, animated style",
                 "a robot dances in the rain, cyberpunk style", "a dog runs on the beach, 4k, cinematic"):
        parsed = parse_text(nlp, text)
        assert all(u.actor not in ("style", "4k", "cinematic") for u in parsed.units), parsed.describe()
        assert parsed.core.motion is not None


def test_shot_words_reach_the_subject(nlp):
    parsed = parse_text(nlp, "Footage of a storm over the sea")
    assert parsed.core == Unit(None, "storm", "sea") and parsed.modifiers == ["footage"]


def test_atomized_json_reports_modifiers_and_rules(nlp, hash_encoder):
    a = atomize("two kangaroos box playfully, animated style", nlp, hash_encoder)
    data = a.to_json()
    assert data["modifiers"] == ["animated style"]
    assert data["units"][data["core"]] == {"motion": "box", "actor": "kangaroo", "recipient": None,
                                           "rule": A.RULE_PLURAL_SUBJECT}
    plain = atomize("A panda rides a bicycle", nlp, hash_encoder).to_json()
    assert plain["units"][0] == {"motion": "ride", "actor": "panda", "recipient": "bicycle"}  # no "rule" key
    assert plain["modifiers"] == []
    assert a.text == "two kangaroos box playfully, animated style"  # the sentence vector is the whole prompt


def test_library_parse_splits_modifiers_too(nlp):
    parsed = list(parse_texts(nlp, ["a video of a man playing guitar", "two kangaroos box playfully"]))
    assert parsed[0].core == Unit("play", "man", "guitar") and parsed[0].modifiers == ["video"]
    assert parsed[1].core == Unit("box", "kangaroo", None) and parsed[1].core.rule == A.RULE_PLURAL_SUBJECT


# ------------------------------------------------------------------------------------------ language


@pytest.mark.parametrize("prompt", [
    "一只熊猫在埃菲尔铁塔前骑自行车",                       # Chinese
    "Собака бежит по пляжу",                              # Russian
    "قطة تلعب بالكرة في الحديقة",                           # Arabic
    "एक कुत्ता समुद्र तट पर दौड़ रहा है",                      # Hindi
    "猫がボールで遊んでいる",                                # Japanese
    "Ένας σκύλος τρέχει στην παραλία",                    # Greek
    "Ein Hund läuft schnell über die Straße",             # German, Latin script
])
def test_non_english_prompts_are_refused_with_a_clear_message(nlp, prompt, hash_encoder):
    with pytest.raises(SearchPriorsError, match="does not look like English.*translate the prompt to English"):
        atomize(prompt, nlp, hash_encoder)


@pytest.mark.parametrize("prompt", ["two kangaroos box playfully", "cats fight", "waves crash", "dogs bark",
                                    "Pikachu dances", "A Lamborghini drifts", "Time-lapse of clouds", "city skyline",
                                    "a animated clip of spongebob squarepants",   # English only in the shot words
                                    "一只熊猫 rides a bicycle"])
def test_short_english_prompts_are_accepted(nlp, prompt, hash_encoder):
    assert atomize(prompt, nlp, hash_encoder).units


# ------------------------------------------------------------------------------------------ length cap


def test_prompt_length_cap_refuses_before_parsing(hash_encoder):
    class NoParse:
        lang = "en"

        def __call__(self, text):
            raise AssertionError("an oversized prompt must be refused before it is parsed")

    with pytest.raises(SearchPriorsError, match=r"too long: 2,001 characters, more than the limit of 2,000"):
        atomize("a" * 2001, NoParse(), hash_encoder)
    with pytest.raises(SearchPriorsError, match="limit of 10"):
        A.clean_prompt("a dog runs fast", max_chars=10)
    assert A.clean_prompt("x " * 5000, max_chars=None) == " ".join(["x"] * 5000)
    assert A.MAX_PROMPT_CHARS == 2000


# ------------------------------------------------------------------------------------------ batches


def test_atomize_many_keeps_order_reports_errors_in_place_and_equals_atomize(nlp, hash_encoder):
    prompts = ["two kangaroos box playfully", "   ", "A panda rides a bicycle, 4k", "Собака бежит по пляжу",
               "a dog runs " * 300, "Time-lapse of clouds", "cats fight"]
    results = list(atomize_many(prompts, nlp, hash_encoder, chunk=3))
    assert len(results) == len(prompts)
    errors = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert errors == [1, 3, 4]
    assert "empty" in str(results[1]) and "English" in str(results[3]) and "too long" in str(results[4])
    for prompt, got in zip(prompts, results):
        if isinstance(got, Exception):
            continue
        one = atomize(prompt, nlp, hash_encoder)
        assert got.text == one.text and got.units == one.units and got.core_index == one.core_index
        assert [u.rule for u in got.units] == [u.rule for u in one.units] and got.modifiers == one.modifiers
        assert np.allclose(got.v_total, one.v_total, atol=1e-6)
        assert np.allclose(got.unit_vectors, one.unit_vectors, atol=1e-6)


BATCH = ["two kangaroos box playfully", "   ", "A panda rides a bicycle, 4k", "Собака бежит по пляжу",
         "a dog runs " * 300, "Time-lapse of clouds", "cats fight", "a kitten chases a laser dot",
         "猫が走る", "a top spinning on a table", "", "waves crash"]


def test_atomize_many_in_the_parse_helper_equals_in_process(nlp, hash_encoder):
    from comfyui_searchpriors.retrieval import embedding

    assert embedding.ATOMIZE_HELPER_MIN >= 500  # short batches and single prompts never start a process
    want = list(atomize_many(BATCH, nlp, hash_encoder, chunk=2, parse_helper=False))
    got = list(atomize_many(BATCH, nlp, hash_encoder, chunk=2, parse_helper=True))
    assert [isinstance(g, Exception) for g in got] == [isinstance(w, Exception) for w in want]
    assert [i for i, w in enumerate(want) if isinstance(w, Exception)] == [1, 3, 4, 8, 10]
    for g, w in zip(got, want):
        if isinstance(w, Exception):
            assert isinstance(g, SearchPriorsError) and str(g) == str(w)   # the message crosses the wire
        else:
            assert g.to_json(with_vectors=True) == w.to_json(with_vectors=True)  # same chunks: bit-identical


def test_atomize_many_falls_back_when_the_helper_cannot_start_or_dies(nlp, hash_encoder, monkeypatch):
    from comfyui_searchpriors.retrieval import parse_worker

    want = list(atomize_many(BATCH, nlp, hash_encoder, chunk=2, parse_helper=False))

    def cannot_start(source):
        raise OSError("no processes left")

    monkeypatch.setattr(parse_worker, "ParseWorker", cannot_start)
    got = list(atomize_many(BATCH, nlp, hash_encoder, chunk=2, parse_helper=True))
    assert [str(g) if isinstance(g, Exception) else g.to_json() for g in got] == \
        [str(w) if isinstance(w, Exception) else w.to_json() for w in want]
    monkeypatch.undo()

    made = []

    class DiesAfterTwo(parse_worker.ParseWorker):
        def __init__(self, source):
            super().__init__(source)
            made.append(self)

        def submit(self, chunk_id, texts, **kwargs):
            super().submit(chunk_id, texts, **kwargs)
            if chunk_id == 2:
                self._proc.kill()

    monkeypatch.setattr(parse_worker, "ParseWorker", DiesAfterTwo)
    got = list(atomize_many(BATCH, nlp, hash_encoder, chunk=2, parse_helper=True))
    assert [str(g) if isinstance(g, Exception) else g.to_json() for g in got] == \
        [str(w) if isinstance(w, Exception) else w.to_json() for w in want]
    assert made and not made[0].usable and made[0]._proc.poll() is not None


def test_atomize_many_survives_an_unexpected_failure(nlp, hash_encoder, monkeypatch):
    real = A.parse_doc

    def flaky(doc, *args, **kwargs):
        if "boom" in doc.text:
            raise RuntimeError("parser exploded")
        return real(doc, *args, **kwargs)

    monkeypatch.setattr("comfyui_searchpriors.retrieval.atomizer.parse_doc", flaky)
    results = list(atomize_many(["a dog runs", "boom goes the cannon", "cats fight"], nlp, hash_encoder))
    assert isinstance(results[1], SearchPriorsError) and "RuntimeError: parser exploded" in str(results[1])
    assert results[0].units[0].motion == "run" and results[2].units[0].motion == "fight"


def test_batched_second_parses_equal_one_by_one(nlp):
    prompts = ["a kitten chases a laser dot", "a woman dances flamenco", "two kangaroos box playfully",
               "a top spinning on a table", "A panda rides a bicycle", "a kitten chases a laser dot", "clouds"]
    batched = list(parse_texts(nlp, prompts, batch_size=4))
    for prompt, got in zip(prompts, batched):
        one = parse_text(nlp, prompt)
        assert got == one and [u.rule for u in got.units] == [u.rule for u in one.units] and got.notes == one.notes
    assert batched[0].core.rule == A.RULE_REPARSE


@pytest.mark.parametrize("text, core", [
    ("a man playing tennis with a person", Unit("play", "man", "tennis")),   # the plain parse has the verb
    ("a guy talking to a man", Unit("talk", "guy", "man")),
    ("a clear sky with little clouds", Unit(None, "sky", "cloud")),          # the subject ended: no verb
    ("a cozy living room with a fireplace", Unit(None, "living room", "fireplace")),
])
def test_no_recovery_where_the_parse_is_right_or_there_is_no_verb(nlp, text, core):
    parsed, got = core_of(nlp, text)
    assert got == core and all(u.rule is None for u in parsed.units), parsed.describe()


def test_a_prompt_the_encoder_fails_on_gets_its_own_error_and_the_batch_goes_on(nlp, hash_encoder_cls):
    """The encoder failing on a batch is retried prompt by prompt: only the culprit gets an error."""

    class Picky(hash_encoder_cls):
        def encode(self, texts, *args, **kwargs):
            texts = [texts] if isinstance(texts, str) else list(texts)
            if any("poison" in t for t in texts):
                raise RuntimeError("encoder failed")
            return super().encode(texts, *args, **kwargs)

    prompts = ["a dog runs on the beach", "a poison frog hops", "cats fight"]
    results = list(atomize_many(prompts, nlp, Picky(), chunk=3, parse_helper=False))
    assert [isinstance(r, Exception) for r in results] == [False, True, False]
    assert "encoder failed" in str(results[1])
