"""The "video_support" ranking (Eq. 6's score plus the video's support) beside the paper's exact Eq. 9."""

from __future__ import annotations

import numpy as np
import pytest

from comfyui_searchpriors.retrieval.embedding import atomize
from comfyui_searchpriors.retrieval.errors import SearchPriorsError
from comfyui_searchpriors.retrieval.search import (VIDEO_SUPPORT_TOP, VIDEO_SUPPORT_WEIGHT, SearchParams, search,
                                                   video_support)

from .test_ranking import small_library_index

# video "alone" has one caption that is the prompt itself, and two that describe something else; video "many"
# has four wordings of one clip, each a little further from the prompt, but all of them near it
LIBRARY = [("alone", "a man rides a bicycle on a road"),
           ("alone", "a cat sleeps on a sofa"),
           ("alone", "food is cooked in a kitchen"),
           ("many", "a man rides a bicycle down a road"),
           ("many", "a man rides a bicycle down the road"),
           ("many", "a man rides a bicycle down a long road"),
           ("many", "a man rides a bicycle down a wide road"),
           ("other", "a man rides a horse on a beach"),
           ("other", "a woman paints a wall")]
PROMPT = "a man rides a bicycle on a road"


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, nlp, hash_encoder_cls):
    encoder = hash_encoder_cls()
    return small_library_index(tmp_path_factory, "video_support", LIBRARY, nlp, encoder), encoder


def _literal(reference, nlp, encoder):
    from comfyui_searchpriors.retrieval.atomizer import parse_texts
    from comfyui_searchpriors.retrieval.embedding import embed_parsed
    from comfyui_searchpriors.retrieval.models import spacy_identity

    return [reference.caption_from_atomized(embed_parsed(p, encoder, spacy_identity(nlp)))
            for p in parse_texts(nlp, [c for _, c in LIBRARY])]


def test_video_support_is_the_mean_of_the_videos_best_captions(small_index, nlp, reference):
    index, encoder = small_index
    captions = _literal(reference, nlp, encoder)
    videos = [v for v, _ in LIBRARY]
    prompt = reference.caption_from_atomized(atomize(PROMPT, nlp, encoder))
    rows = np.array([4, 0, 8, 3, 7, 2], dtype=np.int64)   # any order, repeated videos
    got = video_support(index, index.sentence_vectors(), rows, np.asarray(prompt.v_total, dtype=np.float64))
    want = [reference.video_support(captions, videos, prompt, int(r), VIDEO_SUPPORT_TOP) for r in rows]
    assert got == pytest.approx(want, abs=1e-6)
    # "many" has four captions: the support is the mean of its best three, not of all four nor the row's own
    sims = sorted((reference.cosine(captions[i].v_total, prompt.v_total) for i in range(3, 7)), reverse=True)
    assert got[0] == pytest.approx(sum(sims[:3]) / 3, abs=1e-6) and got[0] != pytest.approx(np.mean(sims), abs=1e-6)


def test_video_support_ranking_adds_the_weighted_support_to_eq6(small_index, nlp, reference):
    index, encoder = small_index
    atomized = atomize(PROMPT, nlp, encoder)
    params = dict(top_k=9, min_keep=1, t_total=-1.0, t_mot=-1.0, t_atr=-1.0)
    paper = search(index, atomized, SearchParams(ranking="paper", **params))
    ours = search(index, atomized, SearchParams(ranking="video_support", **params))
    paper_score = {h.row: h.score for h in paper.hits}
    for h in ours.hits:
        p = h.parts
        assert h.score == pytest.approx(paper_score[h.row] + VIDEO_SUPPORT_WEIGHT * p["video"], abs=1e-9)
        assert h.score == pytest.approx(p["total"] + p["motion"] + p["actor"] + 0.5 * p["units"]
                                        + VIDEO_SUPPORT_WEIGHT * p["video"], abs=1e-9)
    assert "video" not in paper.hits[0].parts
    assert [h.score for h in ours.hits] == sorted((h.score for h in ours.hits), reverse=True)
    # the paper's Eq. 9 takes the single near-copy; the support prefers the video that many captions match
    assert paper.best.video_id == "alone"
    assert ours.best.video_id == "many"
    assert "| units | support | video |" in ours.report() and "support" not in paper.report()


def test_unknown_ranking_is_a_clear_error():
    with pytest.raises(SearchPriorsError, match="Unknown ranking 'nope': choose one of paper, video_support"):
        SearchParams(ranking="nope").validate()
