"""MotionRetriever fast path against the literal implementation of Eqs. 6-9 / POS Eq. 3."""

from __future__ import annotations

import random

import numpy as np
import pytest

from comfyui_searchpriors.retrieval.embedding import atomize, embed_parsed
from comfyui_searchpriors.retrieval.errors import SearchPriorsError
from comfyui_searchpriors.retrieval.index import build_index, load_index
from comfyui_searchpriors.retrieval.library import LibraryEntry, read_library
from comfyui_searchpriors.retrieval.atomizer import parse_texts
from comfyui_searchpriors.retrieval.models import spacy_identity
from comfyui_searchpriors.retrieval.search import SearchParams, search


def PaperParams(**kw) -> SearchParams:  # noqa: N802 (reads as the class it makes)
    """SearchParams with the paper's Eq. 9 ranking, which this file checks (the default ranking is
    pool_video_support: tests/unit/test_ranking_pool.py)."""
    return SearchParams(**{"ranking": "paper", **kw})

ACTORS = ["man", "woman", "dog", "cat", "horse", "child", "robot", "bear", "girl", "boy", "car", "bird"]
VERBS = ["rides", "eats", "jumps over", "pushes", "carries", "chases", "kicks", "throws", "climbs", "paints"]
OBJECTS = ["bicycle", "ball", "tree", "fence", "box", "apple", "wall", "kite", "rope", "door"]
PLACES = ["", " in the park", " on the beach", " at night", " near a lake", " in the snow"]


def synthetic_captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        cap = f"a {rng.choice(ACTORS)} {rng.choice(VERBS)} a {rng.choice(OBJECTS)}{rng.choice(PLACES)}"
        if rng.random() < 0.25:
            cap += f" and a {rng.choice(ACTORS)} {rng.choice(VERBS)} a {rng.choice(OBJECTS)}"
        if rng.random() < 0.05:
            cap = f"a {rng.choice(ACTORS)}{rng.choice(PLACES)}"      # no verb: fallback units
        out.append(cap)
    return out


def independent_captions(reference, nlp, encoder, captions):
    """Per-caption vectors embedded one caption at a time (not through the index's phrase table)."""
    out = []
    for parsed in parse_texts(nlp, captions):
        a = embed_parsed(parsed, encoder, spacy_identity(nlp))
        out.append(reference.caption_from_atomized(a))
    return out


def small_library_index(tmp_path_factory, name: str, library, nlp, encoder):
    """A loaded index of a hand-made library of (video, caption) pairs, built in a fresh temporary folder."""
    folder = tmp_path_factory.mktemp(name) / "idx"
    build_index(str(folder), [LibraryEntry(v, c, None) for v, c in library], nlp, encoder)
    return load_index(str(folder))


@pytest.fixture(scope="module")
def hash_index(tmp_path_factory, nlp, hash_encoder_cls):
    encoder = hash_encoder_cls()
    captions = synthetic_captions(600)
    entries = [LibraryEntry(f"v{i // 3}", c, None) for i, c in enumerate(captions)]
    folder = tmp_path_factory.mktemp("hash_index") / "idx"
    build_index(str(folder), entries, nlp, encoder, segment_size=250, batch_tokens=1000)
    kept = list(dict.fromkeys(e.key for e in entries))
    return load_index(str(folder)), encoder, [c for _, c in kept]


PROMPTS = ["a man rides a bicycle", "a dog chases a cat in the park", "a robot paints a wall",
           "a horse jumps over a fence", "a girl", "a bear climbs a tree and a bird eats an apple",
           "children kick balls"]


@pytest.mark.parametrize("params", [
    PaperParams(top_k=10),                                                     # paper defaults
    PaperParams(top_k=10, min_keep=3, t_total=0.2, t_mot=0.5, t_atr=0.2),      # fast path taken
    PaperParams(top_k=10, min_keep=25, t_total=0.6, t_mot=0.95, t_atr=0.9),    # fail-safe rounds
    PaperParams(top_k=10, alpha=0.3, beta=2.0, gamma=1.5, min_keep=5, t_total=0.0, t_mot=0.0, t_atr=0.0),
    PaperParams(top_k=10, min_keep=10, t_total=0.95, t_mot=0.99, t_atr=0.99),  # sentence round fail-safe
    PaperParams(top_k=10, min_keep=40, t_total=0.2, t_mot=0.99, t_atr=0.1),    # phrase walk inside A
])
def test_search_t2v_matches_literal_implementation(hash_index, nlp, reference, params):
    index, encoder, captions = hash_index
    literal_captions = independent_captions(reference, nlp, encoder, captions)
    for prompt in PROMPTS:
        atomized = atomize(prompt, nlp, encoder)
        fast = search(index, atomized, params)
        want = reference.search_t2v(literal_captions, reference.caption_from_atomized(atomized),
                                    top_k=params.top_k, t_total=params.t_total, t_mot=params.t_mot,
                                    t_atr=params.t_atr, alpha=params.alpha, beta=params.beta,
                                    gamma=params.gamma, min_keep=params.min_keep)
        assert [h.row for h in fast.hits] == [i for i, _ in want], prompt
        for hit, (_, parts) in zip(fast.hits, want):
            for name in ("total", "motion", "actor", "units", "score"):
                assert hit.parts[name] == pytest.approx(parts[name], abs=1e-5), (prompt, name)
            assert hit.caption == captions[hit.row]


def test_pos_matches_literal_cosine(hash_index, nlp, reference):
    index, encoder, captions = hash_index
    literal_captions = independent_captions(reference, nlp, encoder, captions)
    for prompt in PROMPTS:
        atomized = atomize(prompt, nlp, encoder)
        fast = search(index, atomized, PaperParams(mode="pos", top_k=10))
        want = reference.pos(literal_captions, reference.caption_from_atomized(atomized), top_k=10)
        assert [round(h.score, 5) for h in fast.hits] == [round(s, 5) for _, s in want]
        assert {h.row for h in fast.hits if h.score > want[-1][1] + 1e-6} <= {i for i, _ in want}


def test_argmax_is_the_first_hit_and_scores_are_sorted(hash_index, nlp):
    index, encoder, _ = hash_index
    result = search(index, atomize("a man rides a bicycle", nlp, encoder), PaperParams(top_k=20))
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert result.best is result.hits[0]
    for h in result.hits:  # Eq. 6 holds for every reported part
        p = h.parts
        assert h.score == pytest.approx(p["total"] + p["motion"] + p["actor"] + 0.5 * p["units"], abs=1e-9)


def test_real_minilm_on_the_sample_library(tmp_path, nlp, minilm, reference, sample_library_path):
    entries, _ = read_library(sample_library_path)
    build_index(str(tmp_path / "idx"), entries, nlp, minilm)
    index = load_index(str(tmp_path / "idx"))
    literal = independent_captions(reference, nlp, minilm, [e.caption for e in entries])
    for prompt in ["A panda rides a bicycle past the Eiffel Tower", "Scissors cutting through paper.",
                   "A dog is catching a ball", "Time-lapse of clouds"]:
        atomized = atomize(prompt, nlp, minilm)
        for params in (PaperParams(top_k=10), PaperParams(top_k=10, min_keep=2)):
            fast = search(index, atomized, params)
            want = reference.search_t2v(literal, reference.caption_from_atomized(atomized), top_k=10,
                                        min_keep=params.min_keep)
            assert [h.row for h in fast.hits] == [i for i, _ in want], prompt
    best = search(index, atomize("A panda rides a bicycle past the Eiffel Tower", nlp, minilm), PaperParams()).best
    assert best.caption == "a man rides a bicycle along a city street"  # motion beats appearance
    pos_best = search(index, atomize("A panda rides a bicycle past the Eiffel Tower", nlp, minilm), PaperParams(mode="pos")).best
    assert pos_best.caption == "a panda eats bamboo in the forest"


def test_model_mismatch_is_a_clear_error(hash_index, nlp, minilm):
    index, _, _ = hash_index
    with pytest.raises(SearchPriorsError, match="built with sentence model hash-encoder/48"):
        search(index, atomize("a man rides a bicycle", nlp, minilm), PaperParams())


@pytest.mark.parametrize("bad", [PaperParams(mode="nope"), PaperParams(top_k=0), PaperParams(t_mot=1.5),
                                 PaperParams(min_keep=0)])
def test_bad_parameters(bad):
    with pytest.raises(SearchPriorsError):
        bad.validate()


def test_empty_index_returns_no_hits(tmp_path, nlp, hash_encoder):
    from comfyui_searchpriors.retrieval.index import build_index as build

    build(str(tmp_path / "empty"), [], nlp, hash_encoder)
    index = load_index(str(tmp_path / "empty"))
    result = search(index, atomize("a man rides a bicycle", nlp, hash_encoder), PaperParams())
    assert result.hits == [] and "no captions" in result.report()
    assert np.all(index.unit_offsets == 0)



def _literal_rounds(reference, captions, prompt, t_total, t_mot, t_atr, min_keep):
    """The literal rounds of the coarse filter, as (kept, passed) each."""
    dim = len(prompt.v_total)
    p_core = prompt.core(dim)
    candidates = list(range(len(captions)))
    out = []
    checks = [(lambda c: c.v_total, prompt.v_total, t_total)]
    for role, threshold in ((0, t_mot), (1, t_atr)):
        if np.any(p_core[role]):
            checks.append((lambda c, role=role: c.core(dim)[role], p_core[role], threshold))
    for vector_of, target, threshold in checks:
        sims = {i: reference.cosine(vector_of(captions[i]), target) for i in candidates}
        passed = sum(sims[i] >= threshold for i in candidates)
        candidates = reference._round(candidates, sims, threshold, min_keep)
        out.append((len(candidates), passed))
    return out


@pytest.mark.parametrize("params", [
    PaperParams(top_k=10),
    PaperParams(top_k=10, min_keep=25, t_total=0.6, t_mot=0.95, t_atr=0.9),
    PaperParams(top_k=10, min_keep=10, t_total=0.95, t_mot=0.99, t_atr=0.99),
])
def test_filter_line_counts_passed_and_kept(hash_index, nlp, reference, params):
    """Each round reports how many passed its threshold and how many it kept; a round the fail-safe filled
    says so, and so does a top hit that is below a threshold."""
    index, encoder, captions = hash_index
    literal_captions = independent_captions(reference, nlp, encoder, captions)
    for prompt in PROMPTS:
        atomized = atomize(prompt, nlp, encoder)
        result = search(index, atomized, params)
        for name, kept, passed in result.rounds:
            assert 0 <= passed and (passed >= kept or kept == min(params.min_keep, index.count)), (prompt, name)
        literal = _literal_rounds(reference, literal_captions, reference.caption_from_atomized(atomized),
                                  params.t_total, params.t_mot, params.t_atr, params.min_keep)
        if len(result.rounds) == len(literal):   # the round-by-round path: every count is literal
            assert [(k, p) for _, k, p in result.rounds] == literal, prompt
        report = result.report()
        filled = any(passed < kept for _, kept, passed in result.rounds)
        assert ("(fail-safe)" in report) == filled, report
        assert ("the fail-safe (min_keep=" in report) == filled, report
        top = result.best.parts
        if top["total"] < params.t_total:
            assert f"< t_total {params.t_total:g}" in report, report
