"""PromptAtomizer parse rules on the real en_core_web_sm model (Search-T2V Sec. 4.1)."""

from __future__ import annotations

import numpy as np
import pytest

from comfyui_searchpriors.retrieval.atomizer import Unit, check_language, clean_prompt, parse_doc, verb_forms_of
from comfyui_searchpriors.retrieval.embedding import atomize
from comfyui_searchpriors.retrieval.errors import SearchPriorsError


def parse(nlp, text):
    return parse_doc(nlp(text), verb_forms_of(nlp))


@pytest.mark.parametrize("text, core", [
    ("A panda rides a bicycle past the Eiffel Tower", Unit("ride", "panda", "bicycle")),
    ("Scissors cutting through paper.", Unit("cut", "scissor", "paper")),          # participle on a noun
    ("The ball was kicked by the boy", Unit("kick", "boy", "ball")),                 # passive agent
    ("A car driven by a woman", Unit("drive", "woman", "car")),                      # passive participle
    ("An elephant is walking under the sea.", Unit("walk", "elephant", "sea")),      # object of preposition
    ("Fountains spraying water in a park.", Unit("spray", "fountain", "water")),
    ("A girl is holding an umbrella on a foggy street.", Unit("hold", "girl", "umbrella")),  # adjective dropped
])
def test_core_unit_roles(nlp, text, core):
    parsed = parse(nlp, text)
    assert parsed.core == core
    assert parsed.fallback is None


def test_coordinated_verbs_share_the_subject(nlp):
    parsed = parse(nlp, "The boy opens the door and walks into the room at night")
    units = {u.motion: u for u in parsed.units}
    assert units["open"] == Unit("open", "boy", "door")
    assert units["walk"] == Unit("walk", "boy", "room")      # inherited subject
    assert parsed.core.motion == "open"


def test_open_complement_inherits_the_subject_and_time_is_dropped(nlp):
    parsed = parse(nlp, "a girl starts to dance at night")
    units = {u.motion: u for u in parsed.units}
    assert units["start"].actor == "girl" and units["dance"].actor == "girl"
    assert all(u.recipient != "night" for u in parsed.units)  # temporal state dropped


def test_relative_clause_actor_is_the_noun(nlp):
    parsed = parse(nlp, "A man who rides a horse smiles")
    assert Unit("ride", "man", "horse") in parsed.units


def test_compound_nouns_kept_adjectives_dropped(nlp):
    parsed = parse(nlp, "The evil witch is conducting experiments on the alchemy table.")
    assert parsed.core == Unit("conduct", "witch", "experiment")
    parsed = parse(nlp, "A fire truck drives down the road")
    assert parsed.core.actor == "fire truck"


def test_existential_there_is_not_the_motion(nlp):
    parsed = parse(nlp, "there is a tiger killing an animal")
    assert parsed.core == Unit("kill", "tiger", "animal")
    assert all(u.motion != "be" for u in parsed.units)


def test_no_verb_prompt_uses_the_documented_fallback(nlp):
    parsed = parse(nlp, "Time-lapse of clouds")
    assert parsed.fallback == "no-verb"
    assert len(parsed.units) == 1
    unit = parsed.units[0]
    assert unit.motion is None and unit.recipient == "cloud" and "lapse" in unit.actor
    assert "no verb" in parsed.describe()


def test_describe_format(nlp):
    assert parse(nlp, "A panda rides a bicycle").describe() == "[core] panda -ride-> bicycle"


def test_atomize_vectors_are_normalised_and_missing_roles_are_zero(nlp, minilm):
    a = atomize("A dog is running", nlp, minilm)
    assert a.units[a.core_index] == Unit("run", "dog", None)
    assert np.isclose(np.linalg.norm(a.v_total), 1.0, atol=1e-5)
    assert np.isclose(np.linalg.norm(a.unit_vectors[0, 0]), 1.0, atol=1e-5)
    assert not a.unit_vectors[0, 2].any()          # no recipient -> zero vector
    assert a.sentence_model == "all-MiniLM-L6-v2/384"
    # the motion vector is the embedding of the lemma itself
    ref = minilm.encode(["run"], normalize_embeddings=True)[0]
    assert np.allclose(a.unit_vectors[0, 0], ref, atol=1e-5)


@pytest.mark.parametrize("prompt", ["", "   \n\t "])
def test_empty_prompt_is_rejected(prompt):
    with pytest.raises(SearchPriorsError, match="empty"):
        clean_prompt(prompt)


@pytest.mark.parametrize("prompt", ["一只熊猫在埃菲尔铁塔前骑自行车", "Ein Hund läuft schnell über die Straße"])
def test_other_languages_get_a_clear_error(nlp, prompt):
    with pytest.raises(SearchPriorsError, match="does not look like English"):
        check_language(nlp(prompt), nlp.lang)


@pytest.mark.parametrize("prompt", ["Time-lapse of clouds", "Fountains spraying water", "city skyline"])
def test_short_english_prompts_pass_the_language_check(nlp, prompt):
    check_language(nlp(prompt), nlp.lang)


def test_paper_prompts_all_atomize(nlp, minilm, shared_data):
    import os

    with open(os.path.join(shared_data, "prompts", "search_t2v_prompts.txt"), encoding="utf-8") as fh:
        prompts = [line.strip() for line in fh if line.strip()]
    assert len(prompts) == 10
    for prompt in prompts:
        a = atomize(prompt, nlp, minilm)
        assert a.units, prompt
        assert a.unit_vectors.shape == (len(a.units), 3, 384)
