"""Memory-bounded search (retrieval/coarse.py): memory-mapped vectors, the coarse index, its exactness
when every list is probed, identical results below the threshold, and the one-command upgrade."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from comfyui_searchpriors.retrieval import coarse
from comfyui_searchpriors.retrieval.embedding import atomize
from comfyui_searchpriors.retrieval.errors import MotionIndexError
from comfyui_searchpriors.retrieval.index import MANIFEST, VERSION, build_index, load_index
from comfyui_searchpriors.retrieval.library import LibraryEntry
from comfyui_searchpriors.retrieval.search import SearchParams, search

from .test_ranking import PROMPTS, synthetic_captions


@pytest.fixture(scope="module")
def built(tmp_path_factory, nlp, hash_encoder_cls):
    encoder = hash_encoder_cls()
    captions = synthetic_captions(700, seed=3)
    entries = [LibraryEntry(f"v{i // 3}", c, None) for i, c in enumerate(captions)]
    folder = tmp_path_factory.mktemp("coarse") / "idx"
    build_index(str(folder), entries[:500], nlp, encoder, segment_size=200, batch_tokens=1000, parse_helper=False)
    atomized = [atomize(p, nlp, encoder) for p in PROMPTS + synthetic_captions(8, seed=9)]
    return folder, encoder, entries, atomized


def _results(index, atomized, **kw):
    out = []
    for mode in ("search_t2v", "pos"):
        for a in atomized:
            r = search(index, a, SearchParams(mode=mode, top_k=10, **{"ranking": "paper", **kw}))
            out.append(([h.row for h in r.hits], [h.score for h in r.hits], r.rounds))
    return out


def test_below_threshold_is_the_exact_path(built):
    folder, _, _, atomized = built
    plain = load_index(str(folder))
    count = plain.count
    assert not plain.compressed and coarse.COMPRESS_MIN > count
    just_below = load_index(str(folder), compress_min=count + 1)
    assert not just_below.compressed and type(just_below.sentence_index) is type(plain.sentence_index)
    assert _results(just_below, atomized) == _results(plain, atomized)   # bit-identical, rounds included
    assert load_index(str(folder), compress_min=count).compressed       # the threshold is inclusive


def test_mapped_vectors_equal_the_loaded_ones(built):
    folder = built[0]
    plain, comp = load_index(str(folder)), load_index(str(folder), compress_min=1)
    want = plain.sentence_vectors()
    got = comp.sentence_vectors()
    assert got.shape == want.shape and np.array_equal(got[0:len(got)], want)
    rows = np.array([450, 3, 199, 200, 3, 0])
    assert np.array_equal(got[rows], want[rows]) and np.array_equal(got[17:333], want[17:333])
    assert comp.count == plain.count and "built in memory" in " ".join(comp.load_notes)


def test_compressed_all_lists_probed_equals_exact(built, monkeypatch):
    """With every list probed and the exact-subset path off, the compressed search is the exact ranking."""
    folder, _, _, atomized = built
    plain = load_index(str(folder))
    comp = load_index(str(folder), compress_min=1)
    monkeypatch.setattr(coarse, "NPROBE_POS", comp.sentence_index.nlist)
    monkeypatch.setattr(coarse, "NPROBE_T2V", comp.sentence_index.nlist)
    monkeypatch.setattr(coarse, "EXACT_SUBSET", 0)
    want = [(rows, scores) for rows, scores, _ in _results(plain, atomized)]
    got = [(rows, scores) for rows, scores, _ in _results(comp, atomized)]
    assert got == want
    got_min = [(rows, s) for rows, s, _ in _results(comp, atomized, min_keep=40, t_total=0.9)]
    assert got_min == [(rows, s) for rows, s, _ in _results(plain, atomized, min_keep=40, t_total=0.9)]


def test_compressed_few_lists_keeps_recall(built, monkeypatch):
    folder, _, _, atomized = built
    plain = load_index(str(folder))
    comp = load_index(str(folder), compress_min=1)
    monkeypatch.setattr(coarse, "NPROBE_POS", comp.sentence_index.nlist // 4)
    monkeypatch.setattr(coarse, "NPROBE_T2V", comp.sentence_index.nlist // 4)
    monkeypatch.setattr(coarse, "EXACT_SUBSET", 0)
    want, got = _results(plain, atomized), _results(comp, atomized)
    recall = np.mean([len(set(w[0]) & set(g[0])) / max(len(w[0]), 1) for w, g in zip(want, got)])
    assert 0.5 <= recall <= 1.0
    for (rows, scores, _), (wrows, wscores, _) in zip(got, want):
        assert len(rows) == len(wrows)
        assert scores == sorted(scores, reverse=True)     # exact re-rank of what the coarse pass found
        common = set(rows) & set(wrows)
        assert all(abs(scores[rows.index(r)] - wscores[wrows.index(r)]) < 1e-12 for r in common)


def test_upgrade_writes_the_coarse_index_and_later_builds_are_added(built, nlp):
    folder, encoder, entries, atomized = built
    import shutil
    work = folder.parent / "upgraded"
    shutil.copytree(folder, work)
    manifest = json.loads((work / MANIFEST).read_text())
    manifest["version"] = 2
    (work / MANIFEST).write_text(json.dumps(manifest))
    text = coarse.upgrade_index(str(work), compress_min_rows=1)
    manifest = json.loads((work / MANIFEST).read_text())
    assert manifest["version"] == VERSION == 3 and "coarse index" in text
    entry = manifest["coarse"]
    assert entry["rows"] == 500 and os.path.isfile(work / entry["name"] / coarse.COARSE_FILE)
    comp = load_index(str(work), compress_min=1)
    assert comp.load_notes == [] and comp.sentence_index.ntotal == 500
    build_index(str(work), entries, nlp, encoder, segment_size=200, batch_tokens=1000, parse_helper=False)
    comp = load_index(str(work), compress_min=1)
    assert comp.count == 700 and comp.sentence_index.ntotal == 700 and "added to it on load" in comp.load_notes[0]
    plain = load_index(str(work))
    for a in atomized[:4]:
        r_plain = search(plain, a, SearchParams(mode="pos", top_k=5))
        r_comp = search(comp, a, SearchParams(mode="pos", top_k=5))
        assert [h.row for h in r_comp.hits][:1] == [h.row for h in r_plain.hits][:1]
    # below the threshold the upgrade drops the coarse index again
    assert "dropped" in coarse.upgrade_index(str(work), compress_min_rows=10_000)
    assert "coarse" not in json.loads((work / MANIFEST).read_text())
    assert not os.path.exists(work / entry["name"])


def test_damaged_coarse_index_is_refused(built):
    folder = built[0]
    import shutil
    work = folder.parent / "damaged"
    shutil.copytree(folder, work)
    coarse.upgrade_index(str(work), compress_min_rows=1)
    entry = json.loads((work / MANIFEST).read_text())["coarse"]
    path = work / entry["name"] / coarse.COARSE_FILE
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MotionIndexError, match="upgrade"):
        load_index(str(work), compress_min=1)
    assert load_index(str(work)).count == 500         # below the threshold it is not read


def test_truncated_vectors_are_refused(built):
    folder = built[0]
    import shutil
    work = folder.parent / "truncated"
    shutil.copytree(folder, work)
    seg = json.loads((work / MANIFEST).read_text())["segments"][1]["name"]
    path = work / seg / "sentences.faiss"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(MotionIndexError, match="damaged"):
        load_index(str(work), compress_min=1)


def test_compress_min_from_environment(monkeypatch):
    monkeypatch.setenv("SEARCHPRIORS_COMPRESS_MIN", "1234")
    assert coarse.compress_min() == 1234 and coarse.compress_min(5) == 5
    monkeypatch.setenv("SEARCHPRIORS_COMPRESS_MIN", "lots")
    with pytest.raises(Exception, match="SEARCHPRIORS_COMPRESS_MIN"):
        coarse.compress_min()


# ------------------------------------------------------------------ issue 26, second pass: bounded reads and memory

def _every_list(monkeypatch, comp):
    monkeypatch.setattr(coarse, "NPROBE_POS", comp.sentence_index.nlist)
    monkeypatch.setattr(coarse, "NPROBE_T2V", comp.sentence_index.nlist)


def test_code_decisions_equal_exact_with_every_list_probed(built, monkeypatch):
    """Sentence rounds decided from the 8-bit codes (reading only rows within the error bound) and the
    shortlist of Eq. 9 give the exact ranking when no list is skipped."""
    folder, _, _, atomized = built
    plain, comp = load_index(str(folder)), load_index(str(folder), compress_min=1)
    _every_list(monkeypatch, comp)
    for kw in ({}, {"t_total": -1.0}):
        want = [(rows, scores) for rows, scores, _ in _results(plain, atomized, **kw)]
        assert [(rows, scores) for rows, scores, _ in _results(comp, atomized, **kw)] == want


def test_band_read_only_when_shortlisted_equals_exact(built, monkeypatch):
    """LAZY_FROM 1: rows within the bound of t_total are read only if they reach the shortlist; with every
    list probed the ranking is the exact one wherever no unit round needed its fail-safe (a fail-safe could
    keep a row of the band that is then dropped: why LAZY_FROM is far above min_keep), and fewer vectors are read."""
    folder, _, _, atomized = built
    plain, comp = load_index(str(folder)), load_index(str(folder), compress_min=1)
    _every_list(monkeypatch, comp)
    vectors = comp.sentence_vectors()
    params = SearchParams(mode="search_t2v", top_k=10, t_total=0.0, t_mot=-1.0, t_atr=-1.0, ranking="paper")
    reads, default = {}, coarse.LAZY_FROM
    for lazy in (default, 1):
        monkeypatch.setattr(coarse, "LAZY_FROM", lazy)
        before, checked = vectors.rows_read, 0
        for a in atomized:
            want = search(plain, a, params)
            if any(passed < kept for _, kept, passed in want.rounds):
                continue
            got = search(comp, a, params)
            assert [(h.row, h.score) for h in got.hits] == [(h.row, h.score) for h in want.hits]
            checked += 1
        reads[lazy] = vectors.rows_read - before
        assert checked >= 5
    assert reads[1] < reads[default]


def test_fail_safe_walk_past_its_budget_equals_exact_with_every_list_probed(built, monkeypatch):
    from comfyui_searchpriors.retrieval import search as search_module

    folder, _, _, atomized = built
    plain, comp = load_index(str(folder)), load_index(str(folder), compress_min=1)
    _every_list(monkeypatch, comp)
    monkeypatch.setattr(coarse, "WALK_ROWS", 60)
    stopped = []
    real = search_module._first_members

    def spy(index, vectors, rows, *a, **kw):
        members, decided = real(index, vectors, rows, *a, **kw)
        stopped.append(decided < len(rows) and len(members) < a[2])
        return members, decided
    monkeypatch.setattr(search_module, "_first_members", spy)
    kw = {"min_keep": 40, "t_total": 0.6}
    want = [(rows, scores) for rows, scores, _ in _results(plain, atomized, **kw)]
    assert [(rows, scores) for rows, scores, _ in _results(comp, atomized, **kw)] == want
    assert any(stopped)   # the walk ran out of its budget and went on in the probed lists


def test_code_scores_stay_within_their_bound(built):
    folder, _, _, atomized = built
    comp = load_index(str(folder), compress_min=1)
    scores = coarse.code_scores(comp)
    vectors = comp.sentence_vectors()[0:comp.count].astype(np.float64)
    rows = np.arange(comp.count)[::-1]
    for a in atomized:
        exact = vectors[rows] @ a.v_total
        approx = scores.approx(rows, a.v_total)
        _, _, bound = scores.weights(a.v_total)
        assert 0 < bound < 0.05
        assert np.max(np.abs(approx - exact)) <= bound
        assert np.max(np.abs(approx - exact)) > 1e-7          # they are approximations, not the vectors
    assert scores.approx(np.zeros(0, np.int64), atomized[0].v_total).shape == (0,)


def test_search_reads_few_vectors_and_maps_none(built, monkeypatch):
    """A sentence round that every caption passes reads only the rows that can reach the top-k; the vector
    files are read, never memory-mapped (mapped pages would count as the process's resident memory)."""
    folder, _, _, atomized = built
    comp = load_index(str(folder), compress_min=1)
    _every_list(monkeypatch, comp)
    vectors = comp.sentence_vectors()
    no_roles = [a for a in atomized if not a.units] or atomized[:1]
    for a in atomized:
        before = vectors.rows_read
        r = search(comp, a, SearchParams(mode="search_t2v", top_k=5, t_total=-1.0, t_mot=-1.0, t_atr=-1.0, ranking="paper"))
        assert r.rounds[0][1] == comp.count                  # every caption is a candidate
        assert 5 <= vectors.rows_read - before < comp.count // 4
    assert no_roles
    if os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as fh:
            assert "sentences.faiss" not in fh.read()
    assert comp.units.dtype == np.int32 and comp.unit_offsets.dtype == np.int32 and comp.core_units.dtype == np.int32


def test_vector_files_past_the_open_limit_are_opened_per_read(built, monkeypatch):
    folder = built[0]
    monkeypatch.setattr(coarse, "MAX_OPEN_FILES", 0)
    plain, comp = load_index(str(folder)), load_index(str(folder), compress_min=1)
    want, got = plain.sentence_vectors(), comp.sentence_vectors()
    rows = np.arange(0, comp.count, 3)[::-1]
    assert np.array_equal(got[rows], want[rows]) and np.array_equal(got[5:420], want[5:420])
    assert all(f.fd is None for f in got.maps)          # nothing kept open
