"""Reference frames from a shot inside a longer file: start_seconds counts from the shot's start, frames
from the shot's end on are never used, and a request that does not fit in the shot is refused clearly."""

from __future__ import annotations

import pytest

from comfyui_searchpriors.distill.video_frames import VideoFramesError, read_reference_frames

from .conftest import load_test_module

clips = load_test_module("video_clips")
FPS, N = 10, 60


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return clips.write_clip(tmp_path_factory.mktemp("shots") / "long.mp4", N, fps=FPS)


def indices(result) -> list[int]:
    return [clips.frame_index(f.numpy()) for f in result.frames]


def test_start_seconds_counts_from_the_shot_start(clip):
    result = read_reference_frames(clip, 5, 32, 32, start_seconds=0.5, stride=2, shot_start=2.0, shot_end=4.0)
    assert indices(result) == [25, 27, 29, 31, 33]
    assert result.timestamps == pytest.approx([2.5, 2.7, 2.9, 3.1, 3.3])     # the file's times
    whole = read_reference_frames(clip, 3, 32, 32, start_seconds=0.5, stride=2)
    assert indices(whole) == [5, 7, 9]


def test_frames_beyond_the_shot_end_are_not_used(clip):
    # 20 frames fit exactly in [2 s, 4 s): frames 20..39
    result = read_reference_frames(clip, 20, 32, 32, shot_start=2.0, shot_end=4.0)
    assert indices(result) == list(range(20, 40))
    with pytest.raises(VideoFramesError, match=r"does not fit in the shot.*2.00 s long \(2-4 s\).*20 frames.*"
                                               r"frame_count 21.*frame_count 20 or less"):
        read_reference_frames(clip, 21, 32, 32, shot_start=2.0, shot_end=4.0)
    with pytest.raises(VideoFramesError, match="does not fit in the shot.*an earlier start_seconds"):
        read_reference_frames(clip, 4, 32, 32, start_seconds=1.5, stride=0, fps=2.0, shot_start=2.0, shot_end=4.0)


def test_open_ended_shot_and_bad_times(clip):
    result = read_reference_frames(clip, 2, 32, 32, stride=5, shot_start=5.0)
    assert indices(result) == [50, 55]
    with pytest.raises(VideoFramesError, match="at or past the end of the shot.*below 2.00 s"):
        read_reference_frames(clip, 2, 32, 32, start_seconds=2.0, shot_start=2.0, shot_end=4.0)
    with pytest.raises(VideoFramesError, match="ends .* before it starts"):
        read_reference_frames(clip, 2, 32, 32, shot_start=4.0, shot_end=3.0)
    with pytest.raises(VideoFramesError, match="shot start must be a finite"):
        read_reference_frames(clip, 2, 32, 32, shot_start=float("nan"))


def test_the_keyframe_scan_and_its_frames_stay_inside_the_shot(clip):
    from comfyui_searchpriors.distill.video_frames import read_frames_at, scan_clip

    scan = scan_clip(clip, fps=5.0, shot_start=2.0, shot_end=4.0)
    got = indices(scan)
    assert got == [20, 22, 24, 26, 28, 30, 32, 34, 36, 38]          # 2 s at 5 fps, none from 4 s on
    assert scan.times[0] == 0.0 and scan.duration == pytest.approx(2.0) and "shot 2-4 s" in scan.summary()
    frames = read_frames_at(clip, [0.0, 1.0, 1.95, 5.0], shot_start=2.0, shot_end=4.0)
    assert [clips.frame_index(f) for f in frames] == [20, 30, 39, 39]  # times count from the shot; its last frame
    whole = scan_clip(clip, fps=1.0)
    assert indices(whole)[:3] == [0, 10, 20] and "whole clip" in whole.summary()
    with pytest.raises(VideoFramesError, match="starts at 7 s, at or past the end of 'long.mp4'"):
        scan_clip(clip, shot_start=7.0, shot_end=8.0)
