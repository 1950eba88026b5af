"""Library readers: generic CSV / JSONL, WebVid CSV, MSR-VTT JSON, and their errors."""

from __future__ import annotations

import json
import os

import pytest

from comfyui_searchpriors.retrieval.errors import SearchPriorsError
from comfyui_searchpriors.retrieval.library import read_library


def test_generic_csv_with_local_and_missing_videos(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    (tmp_path / "lib.csv").write_text("video,caption\nclips/a.mp4,a dog runs\nclips/b.mp4,a cat sits\n")
    entries, report = read_library(str(tmp_path / "lib.csv"))
    assert [e.video_id for e in entries] == ["a", "b"]
    assert entries[0].video_path == str(tmp_path / "clips" / "a.mp4") and entries[1].video_path is None
    assert report.format == "csv" and report.missing_videos == 1 and "1 entries have no local video" in report.summary()


def test_csv_missing_columns_names_them(tmp_path):
    (tmp_path / "lib.csv").write_text("file,title\na.mp4,a dog runs\n")
    with pytest.raises(SearchPriorsError, match="lacks required columns.*caption.*it has file, title"):
        read_library(str(tmp_path / "lib.csv"))


def test_unreadable_rows_are_reported_with_line_numbers(tmp_path):
    (tmp_path / "lib.jsonl").write_text('{"video": "a.mp4", "caption": "a dog runs"}\n{broken\n'
                                        '{"video": "b.mp4", "caption": ""}\n')
    entries, report = read_library(str(tmp_path / "lib.jsonl"))
    assert len(entries) == 1
    assert [n for n, _ in report.bad_rows] == [2, 3]
    assert "2 unreadable rows skipped (line 2: invalid JSON" in report.summary()


def test_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "lib.jsonl").write_text("{broken\n")
    with pytest.raises(SearchPriorsError, match="no readable captions"):
        read_library(str(tmp_path / "lib.jsonl"))
    with pytest.raises(SearchPriorsError, match="does not exist"):
        read_library(str(tmp_path / "absent.csv"))
    (tmp_path / "lib.txt").write_text("x")
    with pytest.raises(SearchPriorsError, match="Cannot tell the library format"):
        read_library(str(tmp_path / "lib.txt"))


def test_webvid_csv_maps_to_page_dir_layout(tmp_path):
    (tmp_path / "videos" / "001_050").mkdir(parents=True)
    (tmp_path / "videos" / "001_050" / "1066.mp4").write_bytes(b"x")
    (tmp_path / "results_2M_val.csv").write_text(
        "videoid,contentUrl,duration,page_dir,name\n1066,http://x,PT10S,001_050,Aerial shot of a lake\n"
        "1067,http://y,PT10S,001_050,Cars on a bridge\n")
    entries, report = read_library(str(tmp_path / "results_2M_val.csv"), videos_root=str(tmp_path / "videos"))
    assert report.format == "webvid"
    assert entries[0].video_path == str(tmp_path / "videos" / "001_050" / "1066.mp4")
    assert entries[1].video_path is None and entries[1].caption == "Cars on a bridge"


def test_msrvtt_json(tmp_path):
    data = {"videos": [{"video_id": "video0"}], "sentences": [
        {"video_id": "video0", "caption": "a man is singing", "sen_id": 0},
        {"video_id": "video0", "caption": "someone sings", "sen_id": 1}, {"caption": "orphan"}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    entries, report = read_library(str(tmp_path / "ann.json"))
    assert [e.caption for e in entries] == ["a man is singing", "someone sings"]
    assert report.format == "msrvtt" and len(report.bad_rows) == 1 and report.missing_videos == 2
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(SearchPriorsError, match="not an MSR-VTT annotation file"):
        read_library(str(tmp_path / "other.json"))


def test_real_msrvtt_annotations(shared_data):
    entries, report = read_library(os.path.join(shared_data, "captions", "msrvtt", "train_val_videodatainfo.json"))
    assert report.rows == 140200 and not report.bad_rows
    assert len({e.video_id for e in entries}) == 7010
    assert report.missing_videos == 140200  # captions only: no videos in the shared data


def test_real_video_captions_csv(shared_data):
    entries, report = read_library(os.path.join(shared_data, "videos", "captions.csv"))
    assert len(entries) == 8 and report.missing_videos == 0
    assert all(os.path.isfile(e.video_path) for e in entries)
