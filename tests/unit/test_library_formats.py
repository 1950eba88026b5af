"""The open datasets' caption formats as published (OpenVid-1M, Panda-70M, MSR-VTT with its times) and
shot times in generic CSV / JSONL; fixtures in tests/data/library_formats are made up in the same layouts."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from comfyui_searchpriors.retrieval.library import (FORMATS, detect_format, parse_time, parse_timestamp,
                                                    read_library)

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "library_formats")


def fixture(tmp_path, name):
    shutil.copy(os.path.join(DATA, name), tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.parametrize("text, seconds", [("0:00:04.500", 4.5), ("0:01:02.000", 62.0), ("01:02", 62.0),
                                           ("12.25", 12.25), (3, 3.0), ("", None), ("1:00:00", 3600.0)])
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-1", "nan", "inf"])
def test_bad_times_are_refused(bad):
    with pytest.raises(ValueError):
        parse_time(bad)


def test_parse_timestamp_pairs():
    assert parse_timestamp("['0:00:00.000', '0:00:05.005']") == (0.0, 5.005)
    assert parse_timestamp("[1.5, 3]") == (1.5, 3.0)
    assert parse_timestamp("2.5-4") == (2.5, 4.0)
    with pytest.raises(ValueError, match="not after"):
        parse_timestamp("[4, 2]")


def test_formats_are_offered_and_detected(tmp_path):
    assert {"openvid", "panda70m"} <= set(FORMATS)
    assert detect_format(fixture(tmp_path, "openvid_sample.csv")) == "openvid"
    assert detect_format(fixture(tmp_path, "panda70m_sample.csv")) == "panda70m"
    assert detect_format(fixture(tmp_path, "shots_sample.csv")) == "csv"


def test_openvid_with_a_video_root(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    (root / "kite_over_dunes_0001.mp4").write_bytes(b"x")
    entries, report = read_library(fixture(tmp_path, "openvid_sample.csv"), videos_root=str(root))
    assert report.format == "openvid" and [e.video_id for e in entries] == ["kite_over_dunes_0001", "harbour_boat_0002"]
    assert entries[0].video_path == str(root / "kite_over_dunes_0001.mp4") and entries[1].video_path is None
    assert entries[0].start_s is None and "1 entries have no local video" in report.summary()


def test_panda70m_clips_inside_whole_videos_and_one_summary_for_missing(tmp_path):
    root = tmp_path / "panda"
    root.mkdir()
    (root / "AbCdEfGh123.mkv").write_bytes(b"x")         # any video extension; ZyXwVu98765 is not downloaded
    entries, report = read_library(fixture(tmp_path, "panda70m_sample.csv"), "auto", str(root))
    assert [e.video_id for e in entries] == ["AbCdEfGh123_0", "AbCdEfGh123_1", "AbCdEfGh123_2", "ZyXwVu98765_0"]
    assert [(e.start_s, e.end_s) for e in entries] == [(0.0, 4.5), (4.5, 9.25), (62.0, 65.0), (10.0, 15.0)]
    assert entries[1].caption == "The cyclist stops and drinks from a bottle."
    assert entries[0].video_path == str(root / "AbCdEfGh123.mkv") and entries[3].video_path is None
    # the row whose lists differ in length is one bad row; the missing video is counted, not raised
    assert len(report.bad_rows) == 1 and "differ in number" in report.bad_rows[0][1]
    summary = report.summary()
    assert summary.count("no local video") == 1 and "1 entries have no local video file (e.g. ZyXwVu98765_0)" in summary


def test_msrvtt_own_clips_whole_else_source_video_with_times(tmp_path):
    path = fixture(tmp_path, "msrvtt_sample.json")
    (tmp_path / "video0.mp4").write_bytes(b"x")           # MSR-VTT's own clip file: used whole
    (tmp_path / "SrcVideoB02.webm").write_bytes(b"x")     # only the source of video1: the clip inside it
    entries, report = read_library(path, "msrvtt")
    by = {e.caption: e for e in entries}
    frisbee = by["a man throws a frisbee to his dog in a park"]
    assert frisbee.video_path == str(tmp_path / "video0.mp4") and frisbee.start_s is None
    bread = by["a woman slices bread on a wooden board"]
    assert bread.video_path == str(tmp_path / "SrcVideoB02.webm") and (bread.start_s, bread.end_s) == (3.0, 14.25)
    assert report.missing_videos == 0


def test_generic_csv_and_jsonl_shot_columns(tmp_path):
    (tmp_path / "long").mkdir()
    (tmp_path / "long" / "match.mp4").write_bytes(b"x")
    entries, report = read_library(fixture(tmp_path, "shots_sample.csv"))
    assert [(e.start_s, e.end_s) for e in entries] == [(3.0, 7.5), (7.5, 11.0), (None, None)]
    assert report.bad_rows == [(5, "end 4 s is not after start 9 s")]
    lines = [{"video": "long/match.mp4", "caption": "a ball rolls", "timestamp": [1, 2.5]},
             {"video": "long/match.mp4", "caption": "a flag waves", "start_s": "0:00:05", "end_s": None},
             {"video": "long/match.mp4", "caption": "nonsense", "start_s": "later"}]
    (tmp_path / "lib.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    entries, report = read_library(str(tmp_path / "lib.jsonl"))
    assert [(e.start_s, e.end_s) for e in entries] == [(1.0, 2.5), (5.0, None)]
    assert len(report.bad_rows) == 1 and "later" in report.bad_rows[0][1]
