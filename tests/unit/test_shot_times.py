"""Shots inside long videos: library entries carry start_s / end_s, the index stores them (older segments
without the columns read as None), retrieval hits carry them."""

from __future__ import annotations

import os
import sqlite3

from comfyui_searchpriors.retrieval.embedding import atomize
from comfyui_searchpriors.retrieval.index import build_index, load_index
from comfyui_searchpriors.retrieval.library import LibraryEntry
from comfyui_searchpriors.retrieval.search import SearchParams, search

ENTRIES = [LibraryEntry("long#0", "a man rides a horse", None, 0.0, 4.5),
           LibraryEntry("long#1", "a dog runs on the beach", None, 4.5, 9.25),
           LibraryEntry("whole", "a woman rides a bicycle", None),
           LibraryEntry("tail", "a cat eats fish", None, 12.0, None)]


def test_times_round_trip_through_the_index_and_into_hits(tmp_path, nlp, hash_encoder):
    folder = str(tmp_path / "idx")
    build_index(folder, ENTRIES, nlp, hash_encoder, segment_size=2)
    index = load_index(folder)
    got = index.entries([0, 1, 2, 3])
    assert [(e.start_s, e.end_s) for e in got] == [(0.0, 4.5), (4.5, 9.25), (None, None), (12.0, None)]
    result = search(index, atomize("a dog runs on the beach", nlp, hash_encoder), SearchParams(mode="pos", top_k=4))
    by_id = {h.video_id: h for h in result.hits}
    assert (by_id["long#1"].start_s, by_id["long#1"].end_s) == (4.5, 9.25)
    assert by_id["whole"].start_s is None and by_id["whole"].end_s is None
    assert by_id["long#1"].to_json()["start_s"] == 4.5


def _old_entries_bytes(entries):
    """entries.sqlite as builds before shot times wrote it (no start_s / end_s columns)."""
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE entries (row INTEGER PRIMARY KEY, video_id TEXT NOT NULL, caption TEXT NOT NULL, "
                "video_path TEXT)")
    con.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)",
                    ((i, e.video_id, e.caption, e.video_path) for i, e in enumerate(entries)))
    con.commit()
    data = bytes(con.serialize())
    con.close()
    return data


def test_segments_written_before_times_keep_loading(tmp_path, nlp, hash_encoder, monkeypatch):
    from comfyui_searchpriors.retrieval import index as index_module

    folder = str(tmp_path / "idx")
    with monkeypatch.context() as m:
        m.setattr(index_module, "_entries_bytes", _old_entries_bytes)
        build_index(folder, ENTRIES[:2], nlp, hash_encoder)
    build_index(folder, ENTRIES, nlp, hash_encoder)          # a newer build adds a segment with times
    index = load_index(folder)
    got = index.entries([1, 0, 2, 3])
    assert [e.video_id for e in got] == ["long#1", "long#0", "whole", "tail"]
    assert [(e.start_s, e.end_s) for e in got] == [(None, None), (None, None), (None, None), (12.0, None)]
    con = sqlite3.connect(os.path.join(folder, index.segments[0].name, "entries.sqlite"))
    assert "start_s" not in {r[1] for r in con.execute("PRAGMA table_info(entries)")}
    con.close()


def test_the_report_names_a_hits_shot(tmp_path, nlp, hash_encoder):
    build_index(str(tmp_path / "idx"), ENTRIES, nlp, hash_encoder)
    result = search(load_index(str(tmp_path / "idx")), atomize("a man rides a horse", nlp, hash_encoder),
                    SearchParams(mode="pos", top_k=4))
    report = result.report()
    assert "long#0 (no local video) [0-4.5 s]" in report and "tail (no local video) [12-end s]" in report
    assert "whole (no local video) |" in report
