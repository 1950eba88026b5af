"""retrieval.clip_library: a folder of clips cut, captioned and indexed; reruns, deletions, broken files, Cancel."""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest

from comfyui_searchpriors.retrieval.clip_library import (LIBRARY_FILE, ClipLibraryError, build_clip_library,
                                                         scan_clips)
from comfyui_searchpriors.retrieval.index import (CLIP_LIBRARY_DIR, MANIFEST, build_index, load_index,
                                                  read_manifest, remove_entries)
from comfyui_searchpriors.retrieval.library import LibraryEntry

from .conftest import load_test_module

shot_clips = load_test_module("shot_clips")


class FakeCaptioner:
    """The captioner interface (retrieval.captioner): one caption or one exception per shot."""

    family = "fake"
    folder = "fake"

    def __init__(self, fail_dark: bool = False):
        self.shots_seen = 0
        self.fail_dark = fail_dark

    def caption(self, shots, prompt, batch_size=4):
        out = []
        for frames in shots:
            self.shots_seen += 1
            level = int(np.mean(frames[0]))
            out.append(ValueError("too dark") if self.fail_dark and level < 60
                       else f"a shape moves over a background of level {level}")
        return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three videos: 6, 4 and 1 toy clips (5 + 3 + 0 joins)."""
    folder = tmp_path_factory.mktemp("sources")
    paths = shot_clips.toy_clip_paths(11, seed=7)
    out = {}
    for name, part in (("six.mp4", paths[:6]), ("four.mp4", paths[6:10]), ("one.mp4", paths[10:])):
        out[name] = (str(folder / name), shot_clips.concat_toy_clips(str(folder / name), part))
    return out


@pytest.fixture()
def clips(tmp_path, sources):
    root = tmp_path / "clips"
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(sources["six.mp4"][0], root / "six.mp4")
    shutil.copy(sources["four.mp4"][0], root / "nested" / "deeper" / "four.mkv")   # mp4 inside: fine
    (root / "notes.txt").write_text("not a clip, ignored")
    return root


def build(root, index, captioner=None, **kwargs):
    return build_clip_library(str(root), str(index), captioner or FakeCaptioner(), kwargs.pop("nlp"),
                              kwargs.pop("encoder"), **kwargs)


def library_rows(index):
    with open(os.path.join(index, CLIP_LIBRARY_DIR, LIBRARY_FILE), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_every_shot_gets_an_index_row_with_its_times(tmp_path, clips, nlp, hash_encoder):
    index = tmp_path / "index"
    report = build(clips, index, nlp=nlp, encoder=hash_encoder)
    assert report.clips == 2 and report.processed == 2 and not report.errors
    assert report.shots_total == 10 and report.shots_added == 10
    loaded = load_index(str(index))
    assert loaded.count == 10
    entries = loaded.entries(range(10))
    ids = sorted(e.video_id for e in entries)
    assert ids[:4] == ["nested/deeper/four.mkv#0.00-1.00", "nested/deeper/four.mkv#1.00-2.00",
                       "nested/deeper/four.mkv#2.00-3.00", "nested/deeper/four.mkv#3.00-4.00"]
    assert ids[4:] == [f"six.mp4#{k}.00-{k + 1}.00" for k in range(6)]
    assert all(os.path.isfile(e.video_path) for e in entries)
    times = {e.video_id: (e.start_s, e.end_s) for e in entries}   # the index keeps every shot's times
    assert times["six.mp4#5.00-6.00"] == (5.0, 6.0) and times["nested/deeper/four.mkv#0.00-1.00"] == (0.0, 1.0)
    rows = library_rows(index)
    assert [(r["source"], float(r["start_s"]), float(r["end_s"])) for r in rows][:2] == [
        ("nested/deeper/four.mkv", 0.0, 1.0), ("nested/deeper/four.mkv", 1.0, 2.0)]
    assert {r["video_id"] for r in rows} == set(ids)


def test_a_rerun_does_only_new_and_changed_clips_and_deleted_ones_leave(tmp_path, clips, sources, nlp, hash_encoder):
    index = tmp_path / "index"
    build(clips, index, nlp=nlp, encoder=hash_encoder)
    captioner = FakeCaptioner()
    again = build(clips, index, captioner, nlp=nlp, encoder=hash_encoder)
    assert again.processed == 0 and again.unchanged == 2 and captioner.shots_seen == 0 and again.shots_added == 0
    os.utime(clips / "six.mp4", ns=(1, 1))             # touched, same content: hashed, not redone
    touched = build(clips, index, captioner, nlp=nlp, encoder=hash_encoder)
    assert touched.processed == 0 and captioner.shots_seen == 0
    shutil.copy(sources["one.mp4"][0], clips / "nested" / "one.webm")   # a new clip
    added = build(clips, index, captioner, nlp=nlp, encoder=hash_encoder)
    assert added.processed == 1 and captioner.shots_seen == 1 and load_index(str(index)).count == 11
    shutil.copy(sources["four.mp4"][0], clips / "six.mp4")   # changed: 4 shots now where 6 were
    changed = build(clips, index, captioner, nlp=nlp, encoder=hash_encoder)
    assert changed.processed == 1 and changed.removed_from_index >= 2   # six old shots out, four new in
    assert load_index(str(index)).count == 9
    (clips / "nested" / "deeper" / "four.mkv").unlink()      # deleted
    gone = build(clips, index, captioner, nlp=nlp, encoder=hash_encoder)
    assert gone.deleted == 1 and gone.removed_from_index == 4
    loaded = load_index(str(index))
    ids = sorted(e.video_id for e in loaded.entries(range(loaded.count)))
    assert ids == ["nested/one.webm#0.00-1.00"] + [f"six.mp4#{k}.00-{k + 1}.00" for k in range(4)]
    assert sorted(r["video_id"] for r in library_rows(index)) == ids


def test_a_broken_file_gets_its_own_error_row_and_the_rest_go_on(tmp_path, clips, nlp, hash_encoder):
    (clips / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (clips / "text.mov").write_text("hello")
    index = tmp_path / "index"
    report = build(clips, index, nlp=nlp, encoder=hash_encoder)
    assert sorted(c for c, _ in report.errors) == ["broken.mp4", "text.mov"]
    assert "not a readable video file" in dict(report.errors)["text.mov"]
    assert "2 clips failed" in report.summary() and load_index(str(index)).count == 10
    (clips / "text.mov").unlink()
    report = build(clips, index, nlp=nlp, encoder=hash_encoder)   # failures are tried again, the rest skipped
    assert report.processed == 1 and [c for c, _ in report.errors] == ["broken.mp4"]


def test_shots_that_cannot_be_captioned_are_reported_and_the_others_indexed(tmp_path, clips, nlp, hash_encoder):
    index = tmp_path / "index"
    report = build(clips, index, FakeCaptioner(fail_dark=True), nlp=nlp, encoder=hash_encoder)
    assert report.shot_errors and all("too dark" in why for _, why in report.shot_errors)
    assert load_index(str(index)).count == 10 - len(report.shot_errors)


class Cancelled(Exception):
    pass


def cancel_after_first_clip(done, total):
    """A progress callback that cancels (as ComfyUI's Cancel does) once the first clip is done."""
    if done >= 1:
        raise Cancelled()


def test_cancel_midway_keeps_every_finished_clip(tmp_path, clips, nlp, hash_encoder):
    index = tmp_path / "index"

    captioner = FakeCaptioner()
    with pytest.raises(Cancelled):
        build(clips, index, captioner, nlp=nlp, encoder=hash_encoder, progress=cancel_after_first_clip)
    assert not os.path.exists(index / MANIFEST)   # nothing published, nothing half-written
    first = captioner.shots_seen
    assert first in (4, 6)                        # exactly one clip was done
    rerun = FakeCaptioner()
    report = build(clips, index, rerun, nlp=nlp, encoder=hash_encoder)
    assert report.processed == 1 and report.unchanged == 1 and rerun.shots_seen == 10 - first
    assert load_index(str(index)).count == 10


def test_bad_folders_are_clear_errors_and_nothing_is_written(tmp_path, nlp, hash_encoder):
    index = tmp_path / "index"
    with pytest.raises(ClipLibraryError, match="does not exist"):
        build(tmp_path / "nowhere", index, nlp=nlp, encoder=hash_encoder)
    (tmp_path / "file.mp4").write_text("x")
    with pytest.raises(ClipLibraryError, match="is a file, not a folder"):
        build(tmp_path / "file.mp4", index, nlp=nlp, encoder=hash_encoder)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no videos here")
    with pytest.raises(ClipLibraryError, match=r"No video files \(.mp4, .webm, .mov, .mkv\)"):
        build(empty, index, nlp=nlp, encoder=hash_encoder)
    (empty / "fake.mp4").write_text("not a video")
    with pytest.raises(ClipLibraryError, match="No shots found in the 1 clips .*fake.mp4: .*not a readable video"):
        build(empty, index, nlp=nlp, encoder=hash_encoder)
    assert not os.path.exists(index / MANIFEST)
    with pytest.raises(ClipLibraryError, match="must not contain each other"):
        build(empty, empty / "index", nlp=nlp, encoder=hash_encoder)


def test_scan_skips_hidden_files_and_other_extensions(tmp_path):
    (tmp_path / ".hidden").mkdir()
    for name in ("a.MP4", "b.webm", "c.gif", ".d.mp4", ".hidden/e.mp4", "f.mov"):
        (tmp_path / name).write_bytes(b"x")
    assert [c.relpath for c in scan_clips(str(tmp_path))] == ["a.MP4", "b.webm", "f.mov"]


def test_remove_entries_rewrites_segments_and_keeps_the_old_ones_for_readers(tmp_path, nlp, hash_encoder):
    folder = str(tmp_path / "idx")
    caps = ["a man rides a horse", "a dog runs on the beach", "a cat eats fish", "a boy kicks a ball"]
    build_index(folder, [LibraryEntry(f"v{i}", c, None) for i, c in enumerate(caps)], nlp, hash_encoder,
                segment_size=2)
    before = load_index(folder)
    old_names = [s.name for s in before.segments]
    report = remove_entries(folder, {("v1", caps[1]), ("v2", caps[2]), ("v3", caps[3]), ("x", "not there")})
    assert report.removed == 3 and report.total == 1 and report.segments_rewritten == 2
    after = load_index(folder)
    assert [e.video_id for e in after.entries(range(after.count))] == ["v0"]
    manifest = read_manifest(folder)
    assert sorted(r["name"] for r in manifest["retired"]) == sorted(old_names)
    assert [e.caption for e in before.entries([3])] == [caps[3]]   # an older reader still finds its rows
    build_index(folder, [LibraryEntry("v9", "a girl throws a ball", None)], nlp, hash_encoder)
    assert all(os.path.isdir(os.path.join(folder, n)) for n in old_names)   # in their grace period
    assert load_index(folder).count == 2
    assert remove_entries(folder, set()).removed == 0


def test_bad_settings_are_refused_before_any_clip_is_read(tmp_path, clips, nlp, hash_encoder):
    from comfyui_searchpriors.retrieval.clip_library import ClipSettings
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    captioner = FakeCaptioner()
    for settings, message in ((ClipSettings(frames_per_shot=0), "frames_per_shot"),
                              (ClipSettings(ratio=float("nan")), "cut ratio must be a finite number"),
                              (ClipSettings(threshold="x"), "cut settings must be numbers")):
        with pytest.raises(SearchPriorsError, match=message):
            build(clips, tmp_path / "index", captioner, nlp=nlp, encoder=hash_encoder, settings=settings)
    with pytest.raises(ClipLibraryError, match="batch_size"):
        build(clips, tmp_path / "index", captioner, nlp=nlp, encoder=hash_encoder, batch_size=0)
    assert captioner.shots_seen == 0 and not os.path.exists(tmp_path / "index")


def test_a_long_build_publishes_as_it_goes_and_an_empty_folder_keeps_the_state(tmp_path, clips, nlp, hash_encoder):
    index = tmp_path / "index"

    captioner = FakeCaptioner()
    with pytest.raises(Cancelled):
        build(clips, index, captioner, nlp=nlp, encoder=hash_encoder, progress=cancel_after_first_clip, publish_every=1)
    assert load_index(str(index)).count == captioner.shots_seen   # the first clip was published before Cancel
    assert len(library_rows(index)) == captioner.shots_seen
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ClipLibraryError, match="No video files"):
        build(empty, index, nlp=nlp, encoder=hash_encoder)
    rerun = FakeCaptioner()
    report = build(clips, index, rerun, nlp=nlp, encoder=hash_encoder)   # the state survived the wrong folder
    assert report.unchanged == 1 and rerun.shots_seen == 10 - captioner.shots_seen
    assert load_index(str(index)).count == 10
