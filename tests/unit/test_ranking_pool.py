"""The "pool_video_support" ranking: the nearest captions by sentence similarity, the prompt's verb first, then
sentence similarity plus the video's support; beside the paper's Eq. 9, which must not change."""

from __future__ import annotations

import numpy as np
import pytest

from comfyui_searchpriors.retrieval import coarse
from comfyui_searchpriors.retrieval import search as search_module
from comfyui_searchpriors.retrieval.embedding import atomize
from comfyui_searchpriors.retrieval.errors import SearchPriorsError
from comfyui_searchpriors.retrieval.index import build_index, load_index
from comfyui_searchpriors.retrieval.library import LibraryEntry
from comfyui_searchpriors.retrieval.search import (POOL_RANKING, POOL_SUPPORT_WEIGHT, VIDEO_SUPPORT_TOP,
                                                   SearchParams, search)

from .test_ranking import PROMPTS, independent_captions, small_library_index, synthetic_captions

# "push" has three wordings that are the nearest to the prompt but another verb; "ride" has the prompt's verb
# in captions a little further away; the rest is far from the prompt
LIBRARY = [("push", "a man pushes a bicycle on a road"),
           ("push", "a man pushes a bicycle down a road"),
           ("push", "a man pushes a bicycle along the road"),
           ("ride", "a kid rides fast on his bike"),
           ("ride", "someone rides down a hill on a bike"),
           ("cat", "a cat sleeps on a sofa"),
           ("food", "food is cooked in a kitchen"),
           ("paint", "a woman paints a wall")]
PROMPT = "a man rides a bicycle on a road"


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, nlp, hash_encoder_cls):
    encoder = hash_encoder_cls()
    return small_library_index(tmp_path_factory, "pool_small", LIBRARY, nlp, encoder), encoder


@pytest.fixture(scope="module")
def synthetic_index(tmp_path_factory, nlp, hash_encoder_cls):
    """500 synthetic captions, three per video; its folder, to load exact or compressed."""
    encoder = hash_encoder_cls()
    entries = [LibraryEntry(f"v{i // 3}", c, None) for i, c in enumerate(synthetic_captions(500, seed=5))]
    folder = tmp_path_factory.mktemp("pool_synthetic") / "idx"
    build_index(str(folder), entries, nlp, encoder, segment_size=200, batch_tokens=1000, parse_helper=False)
    return folder, encoder


def _rows(result):
    return [h.row for h in result.hits]


def test_same_verb_first_even_below_nearer_captions(small_index, nlp):
    index, encoder = small_index
    atomized = atomize(PROMPT, nlp, encoder)
    nearest = search(index, atomized, SearchParams(mode="pos", top_k=8))
    assert nearest.best.video_id == "push"   # the nearest captions have another verb
    ours = search(index, atomized, SearchParams(ranking=POOL_RANKING, top_k=8, pool=8))
    assert [h.video_id for h in ours.hits[:2]] == ["ride", "ride"]
    assert [h.parts["verb"] for h in ours.hits] == [1.0, 1.0] + [0.0] * 6
    assert all(h.parts["motion"] >= 0.9 for h in ours.hits[:2]) and all(h.parts["motion"] < 0.9 for h in ours.hits[2:])
    for h in ours.hits:   # the score is sentence similarity plus the weighted support; sorted within each tier
        assert h.score == pytest.approx(h.parts["total"] + POOL_SUPPORT_WEIGHT * h.parts["video"], abs=1e-12)
    for tier in (ours.hits[:2], ours.hits[2:]):
        assert [h.score for h in tier] == sorted((h.score for h in tier), reverse=True)
    assert ours.rounds == [("nearest 8 by sentence similarity", 8, 8), ("motion>=0.9 first", 2, 2)]
    assert "| units | support |" in ours.report() and ours.notes == ["the best entry (ride) has no local video "
                                                                      "file; a node that needs the video cannot use it"]
    # with a gate every caption passes, the order is sentence similarity plus support: the "push" video
    loose = search(index, atomized, SearchParams(ranking=POOL_RANKING, top_k=8, pool=8, t_mot=-1.0))
    assert loose.best.video_id == "push"


def test_pool_size_is_respected(small_index, nlp):
    index, encoder = small_index
    atomized = atomize(PROMPT, nlp, encoder)
    near3 = set(_rows(search(index, atomized, SearchParams(mode="pos", top_k=3))))
    # the three nearest are the "push" wordings: no caption with the verb in the pool, so none comes first
    ours = search(index, atomized, SearchParams(ranking=POOL_RANKING, top_k=2, pool=3))
    assert set(_rows(ours)) <= near3 and len(ours.hits) == 2
    assert ours.rounds == [("nearest 3 by sentence similarity", 3, 3), ("motion>=0.9 first", 0, 0)]
    assert any("no caption among the 3 nearest has the prompt's verb 'ride'" in n for n in ours.notes)
    # top_k above the pool widens the pool to top_k: as many hits as asked, still the nearest ones
    wide = search(index, atomized, SearchParams(ranking=POOL_RANKING, top_k=5, pool=3))
    assert set(_rows(wide)) == set(_rows(search(index, atomized, SearchParams(mode="pos", top_k=5))))


def test_matches_literal_implementation(synthetic_index, nlp, reference):
    folder, encoder = synthetic_index
    index = load_index(str(folder))
    entries = index.entries(list(range(index.count)))
    videos = [e.video_id for e in entries]
    literal = independent_captions(reference, nlp, encoder, [e.caption for e in entries])
    checked_tiers = 0
    for prompt in PROMPTS:
        atomized = atomize(prompt, nlp, encoder)
        for pool, t_mot in ((20, 0.9), (120, 0.9), (60, 0.5)):
            ours = search(index, atomized, SearchParams(ranking=POOL_RANKING, top_k=10, pool=pool, t_mot=t_mot))
            want = reference.pool_video_support(literal, videos, reference.caption_from_atomized(atomized),
                                                top_k=10, pool=pool, t_mot=t_mot, weight=POOL_SUPPORT_WEIGHT,
                                                top=VIDEO_SUPPORT_TOP)
            assert _rows(ours) == [i for i, _ in want], (prompt, pool, t_mot)
            for hit, (_, parts) in zip(ours.hits, want):
                for name in ("total", "motion", "video", "verb", "score"):
                    assert hit.parts[name] == pytest.approx(parts[name], abs=1e-5), (prompt, name)
            checked_tiers += 0 < sum(p["verb"] for _, p in want) < len(want)
    assert checked_tiers >= 3   # some rankings mix both tiers


def test_paper_ranking_ignores_the_pool(synthetic_index, nlp):
    folder, encoder = synthetic_index
    index = load_index(str(folder))
    for prompt in PROMPTS:
        atomized = atomize(prompt, nlp, encoder)
        for ranking in ("paper", "video_support"):
            results = [search(index, atomized, SearchParams(ranking=ranking, top_k=10, pool=pool)) for pool in (1, 5000)]
            assert _rows(results[0]) == _rows(results[1]) and results[0].rounds == results[1].rounds
            assert "verb" not in results[0].hits[0].parts


def test_compressed_index_takes_the_pool_from_the_coarse_index(synthetic_index, nlp, monkeypatch):
    folder, encoder = synthetic_index
    plain = load_index(str(folder))
    comp = load_index(str(folder), compress_min=1)   # threshold forced low: compressed at 500 captions
    assert comp.compressed and not plain.compressed
    calls, probes = [], []
    real = search_module._coarse_top

    def spy(index, q, fetch, nprobe):
        rows = real(index, q, fetch, nprobe)
        calls.append(set(rows.tolist()))
        probes.append(nprobe)
        return rows

    monkeypatch.setattr(search_module, "_coarse_top", spy)
    monkeypatch.setattr(coarse, "NPROBE_POS", 1)   # the pool probes its own number of lists, not pos's
    monkeypatch.setattr(coarse, "NPROBE_POOL", comp.sentence_index.nlist)
    atomized = [atomize(p, nlp, encoder) for p in PROMPTS]
    params = SearchParams(ranking=POOL_RANKING, top_k=10, pool=40)
    for a in atomized:   # every list probed: the same ranking as the exact index
        ours, exact = search(comp, a, params), search(plain, a, params)
        assert _rows(ours) == _rows(exact) and [h.score for h in ours.hits] == [h.score for h in exact.hits]
    assert len(calls) == len(atomized)
    calls.clear()
    assert set(probes) == {comp.sentence_index.nlist}
    monkeypatch.setattr(coarse, "NPROBE_POOL", 1)   # one list: the pool is what the coarse index found
    for a in atomized:
        ours = search(comp, a, params)
        assert set(_rows(ours)) <= calls[-1]
        verbs = [h.parts["verb"] for h in ours.hits]
        assert len(ours.hits) == 10 and verbs == sorted(verbs, reverse=True)   # the verb's tier first


@pytest.mark.parametrize("pool", [0, -3, 100_001])
def test_bad_pool_is_a_clear_error(pool):
    with pytest.raises(SearchPriorsError, match=f"pool .* must be between 1 and 100000, got {pool}"):
        SearchParams(ranking=POOL_RANKING, pool=pool).validate()


def test_unknown_ranking_names_the_new_one():
    with pytest.raises(SearchPriorsError, match="choose one of paper, video_support, pool_video_support"):
        SearchParams(ranking="nope").validate()


def test_no_verb_prompt_ranks_by_sentence_and_support(small_index, nlp):
    index, encoder = small_index
    ours = search(index, atomize("a man on a road", nlp, encoder), SearchParams(ranking=POOL_RANKING, top_k=8, pool=8))
    assert len(ours.rounds) == 1 and all(h.parts["verb"] == 0.0 for h in ours.hits)
    assert [h.score for h in ours.hits] == sorted((h.score for h in ours.hits), reverse=True)
    assert any("the prompt has no verb" in n for n in ours.notes)
    assert np.isfinite([h.score for h in ours.hits]).all()


def test_compressed_pool_reads_only_rows_that_can_reach_the_top(synthetic_index, nlp, monkeypatch):
    """A compressed index scores its pool (and the pool's videos) from the 8-bit codes; only the rows within the
    score's error bound of the k-th best are read from disk, and the top-k still equals the exact index's."""
    folder, encoder = synthetic_index
    plain = load_index(str(folder))
    comp = load_index(str(folder), compress_min=1)
    monkeypatch.setattr(coarse, "NPROBE_POOL", comp.sentence_index.nlist)
    params = SearchParams(ranking=POOL_RANKING, top_k=5, pool=300)
    vectors = comp.sentence_vectors()
    for prompt in PROMPTS:
        a = atomize(prompt, nlp, encoder)
        before = vectors.rows_read
        ours, exact = search(comp, a, params), search(plain, a, params)
        read = vectors.rows_read - before
        assert _rows(ours) == _rows(exact)
        assert [h.parts["video"] for h in ours.hits] == [h.parts["video"] for h in exact.hits]
        assert 5 <= read < 150   # the pool's 300 rows and their videos' ~900 captions are scored from the codes
