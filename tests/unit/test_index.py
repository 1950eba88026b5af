"""The on-disk motion index: round trip, incremental and resumable builds, atomicity, clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from comfyui_searchpriors.retrieval.errors import MotionIndexError
from comfyui_searchpriors.retrieval.index import MANIFEST, build_index, load_index, read_manifest
from comfyui_searchpriors.retrieval.library import LibraryEntry

CAPTIONS = ["a man rides a horse", "a dog runs on the beach", "a woman rides a bicycle", "a cat eats fish",
            "a car drives down the road", "clouds over the sea", "a boy kicks a ball", "a girl throws a ball"]


def entries(captions, prefix="v"):
    return [LibraryEntry(f"{prefix}{i}", c, None) for i, c in enumerate(captions)]


def snapshot(folder):
    """Every file's bytes, to prove that a failed build changed nothing published."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.relpath(os.path.join(root, f), folder)] = fh.read()
    return out


def test_round_trip_keeps_every_vector_unit_and_entry(tmp_path, nlp, hash_encoder):
    report = build_index(str(tmp_path / "idx"), entries(CAPTIONS), nlp, hash_encoder, segment_size=3)
    assert report.total == len(CAPTIONS) and report.added == len(CAPTIONS)
    index = load_index(str(tmp_path / "idx"))
    assert index.count == len(CAPTIONS) and len(index.segments) == 3
    want = hash_encoder.encode(CAPTIONS, normalize_embeddings=True)
    assert np.allclose(index.sentence_vectors(), want, atol=1e-6)
    got = index.entries([7, 0, 4])
    assert [e.caption for e in got] == [CAPTIONS[7], CAPTIONS[0], CAPTIONS[4]]
    # the core unit of "a man rides a horse" points at the phrases ride / man / horse
    core = index.units[index.core_units[0]]
    assert [index.phrase_texts[i] for i in core] == ["ride", "man", "horse"]
    # a missing role points at the zero row
    clouds = index.units[index.core_units[5]]
    assert clouds[0] == index.missing_id and not index.phrases[index.missing_id].any()
    manifest = read_manifest(str(tmp_path / "idx"))
    assert manifest["sentence_model"] == "hash-encoder/48" and manifest["spacy_model"].endswith("@3.8.0")


def unit_texts(index, row):
    return [[index.phrase_texts[i] if i != index.missing_id else None for i in index.units[u]]
            for u in range(index.unit_offsets[row], index.unit_offsets[row + 1])]


def test_phrases_shared_by_segments_and_builds_are_loaded_once(tmp_path, nlp, hash_encoder):
    whole = str(tmp_path / "whole")
    build_index(whole, entries(CAPTIONS), nlp, hash_encoder)
    split = str(tmp_path / "split")
    build_index(split, entries(CAPTIONS[:3]), nlp, hash_encoder, segment_size=2)   # ride, man, horse...
    build_index(split, entries(CAPTIONS[3:], "w"), nlp, hash_encoder, segment_size=2)  # ... ball twice
    a, b = load_index(whole), load_index(split)
    assert len(b.segments) == 5
    assert len(b.phrase_texts) == len(set(b.phrase_texts)) == len(a.phrase_texts)
    assert b.phrases.shape == (len(b.phrase_texts) + 1, hash_encoder.dim) and not b.phrases[b.missing_id].any()
    for row in range(len(CAPTIONS)):
        assert unit_texts(b, row) == unit_texts(a, row)
        assert b.core_units[row] - b.unit_offsets[row] == a.core_units[row] - a.unit_offsets[row]
    for i, text in enumerate(b.phrase_texts):
        assert np.array_equal(b.phrases[i], a.phrases[a.phrase_texts.index(text)])


def test_each_distinct_phrase_is_embedded_once(tmp_path, nlp, hash_encoder):
    captions = ["a man rides a horse"] * 1 + ["a man rides a bicycle", "a woman rides a horse"]
    report = build_index(str(tmp_path / "idx"), entries(captions), nlp, hash_encoder)
    assert report.phrases_embedded == 5  # ride, man, horse, bicycle, woman


def test_incremental_build_adds_only_new_entries(tmp_path, nlp, hash_encoder):
    folder = str(tmp_path / "idx")
    build_index(folder, entries(CAPTIONS[:5]), nlp, hash_encoder)
    hash_encoder.calls.clear()
    report = build_index(folder, entries(CAPTIONS), nlp, hash_encoder)
    assert report.skipped_existing == 5 and report.added == 3 and report.total == 8
    assert sum(hash_encoder.calls) < 3 + 3 * 3 + 1  # 3 sentences and their phrases, not all 8
    index = load_index(folder)
    assert [e.caption for e in index.entries(range(8))] == CAPTIONS


def test_cancel_keeps_previous_index_and_resumes(tmp_path, nlp, hash_encoder):
    folder = str(tmp_path / "idx")
    build_index(folder, entries(CAPTIONS[:2]), nlp, hash_encoder)
    before = snapshot(folder)

    class Stop(Exception):
        pass

    def cancel_after_first_segment(done, total):
        if done >= 4:  # the first segment (2 captions) is written, the second is under way
            raise Stop()

    more = entries(CAPTIONS[2:], prefix="w")
    with pytest.raises(Stop):
        build_index(folder, more, nlp, hash_encoder, progress=cancel_after_first_segment, segment_size=2,
                    batch_tokens=16)
    after = snapshot(folder)
    assert after[MANIFEST] == before[MANIFEST]
    assert load_index(folder).count == 2          # published index unchanged
    assert [f for f in after if f.startswith("staging-")]  # the finished segment is kept for resuming
    report = build_index(folder, more, nlp, hash_encoder, segment_size=2)
    assert report.resumed == 2 and report.total == 8
    assert not [f for f in os.listdir(folder) if f.startswith("staging")]
    assert sorted(e.caption for e in load_index(folder).entries(range(8))) == sorted(CAPTIONS)


def test_crash_inside_a_segment_write_leaves_no_partial_segment(tmp_path, nlp, hash_encoder, monkeypatch):
    folder = str(tmp_path / "idx")
    build_index(folder, entries(CAPTIONS[:2]), nlp, hash_encoder)
    import comfyui_searchpriors.retrieval.index as index_module

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(index_module.np, "save", boom)
    with pytest.raises(OSError):
        build_index(folder, entries(CAPTIONS[2:], "w"), nlp, hash_encoder)
    monkeypatch.undo()
    assert load_index(folder).count == 2
    build_index(folder, entries(CAPTIONS[2:], "w"), nlp, hash_encoder)  # cleans the leftover temp folder
    assert not [d for d in os.listdir(folder) if d.startswith("_tmp-")]
    assert load_index(folder).count == 8


def test_other_models_are_refused(tmp_path, nlp, hash_encoder, hash_encoder_cls):
    folder = str(tmp_path / "idx")
    build_index(folder, entries(CAPTIONS[:2]), nlp, hash_encoder)
    other = hash_encoder_cls(dim=32)
    with pytest.raises(MotionIndexError, match="built with sentence model hash-encoder/48"):
        build_index(folder, entries(CAPTIONS), nlp, other)


def test_missing_foreign_corrupt_and_damaged_folders(tmp_path, nlp, hash_encoder):
    with pytest.raises(MotionIndexError, match="No motion index"):
        load_index(str(tmp_path / "nothing"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    with pytest.raises(MotionIndexError, match="no manifest.json"):
        load_index(str(tmp_path / "plain"))
    with pytest.raises(MotionIndexError, match="not empty and is not a motion index"):
        build_index(str(tmp_path / "plain"), entries(CAPTIONS), nlp, hash_encoder)
    assert os.listdir(tmp_path / "plain") == ["notes.txt"]  # left untouched
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(MotionIndexError, match="not a ComfyUI-SearchPriors motion index"):
        load_index(str(tmp_path / "foreign"))
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / MANIFEST).write_text("{not json")
    with pytest.raises(MotionIndexError, match="corrupt"):
        load_index(str(tmp_path / "corrupt"))
    folder = tmp_path / "damaged"
    build_index(str(folder), entries(CAPTIONS), nlp, hash_encoder)
    segment = next(p for p in folder.iterdir() if p.name.startswith("seg-"))
    (segment / "units.npy").unlink()
    with pytest.raises(MotionIndexError, match="damaged.*units.npy"):
        load_index(str(folder))
    np.save(segment / "units.npy", np.zeros((1, 3), np.int32))
    with pytest.raises(MotionIndexError, match=f"{segment.name}/units.npy does not match the manifest"):
        load_index(str(folder))
    manifest = json.loads((folder / MANIFEST).read_text())   # a version-1 index: no checksums to catch it
    manifest["version"] = 1
    for seg in manifest["segments"]:
        del seg["files"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(MotionIndexError, match="inconsistent"):
        load_index(str(folder))


def test_progress_is_monotonic_and_never_passes_the_total(tmp_path, nlp, hash_encoder):
    seen = []
    build_index(str(tmp_path / "idx"), entries(CAPTIONS * 3, "p"), nlp, hash_encoder,
                progress=lambda done, total: seen.append((done, total)), segment_size=10, batch_tokens=32)
    assert seen[0] == (0, 24) and seen[-1] == (24, 24)
    assert all(0 <= d <= t for d, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
