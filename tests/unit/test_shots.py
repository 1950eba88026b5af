"""distill.shots: toy-world clips played back to back are cut at their joins; frames sampled per shot."""

from __future__ import annotations

import numpy as np
import pytest

from comfyui_searchpriors.distill.shots import CutSettings, ShotsError, _ShotSampler, detect_shots
from comfyui_searchpriors.distill.video_frames import VideoFramesError

from .conftest import load_test_module

shot_clips = load_test_module("shot_clips")
video_clips = load_test_module("video_clips")


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    """Two videos of 50 toy clips each (98 joins); the second scaled to 320x180 (another aspect ratio)."""
    folder = tmp_path_factory.mktemp("joined")
    paths = shot_clips.toy_clip_paths(100, seed=3)
    a = str(folder / "a.mp4")
    b = str(folder / "b.mp4")
    return [(a, shot_clips.concat_toy_clips(a, paths[:50])),
            (b, shot_clips.concat_toy_clips(b, paths[50:], size=(320, 180)))]


def test_joins_of_world_clips_are_found_with_precision_and_recall_of_095(joined):
    hits = found = truth = 0
    for path, joins in joined:
        result = detect_shots(path, frames_per_shot=0)
        h, _, _ = shot_clips.match_cuts(result.cut_times(), joins)
        hits, found, truth = hits + h, found + len(result.cut_times()), truth + len(joins)
    precision, recall = hits / found, hits / truth
    assert truth == 98
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, hits, found, truth)


def test_every_shot_has_times_and_evenly_sampled_frames(joined):
    path, joins = joined[1]
    result = detect_shots(path, frames_per_shot=4, sample_long_side=160)
    shots = result.shots
    assert shots[0].start_s == 0.0 and shots[-1].end_s == pytest.approx(50.0)
    assert all(a.end_s == b.start_s for a, b in zip(shots, shots[1:]))   # no gaps, no overlaps
    for shot in shots:
        assert len(shot.frames) == 4 and len(shot.frame_times) == 4
        assert all(f.shape == (90, 160, 3) and f.dtype == np.uint8 for f in shot.frames)
        assert shot.start_s <= shot.frame_times[0] < shot.frame_times[-1] < shot.end_s
    assert result.decoded == 400 and result.duration == pytest.approx(50.0)


def test_a_long_shot_keeps_a_bounded_number_of_frames_spread_over_it(tmp_path):
    # 400 frames of a slowly brightening picture: one shot, 10 s at 40 fps
    frames = [np.full((48, 64, 3), 40 + i // 4, np.uint8) for i in range(400)]
    path = shot_clips.write_frames(str(tmp_path / "long.mp4"), frames, fps=40)
    result = detect_shots(path, frames_per_shot=6)
    assert len(result.shots) == 1
    times = result.shots[0].frame_times
    assert len(times) == 6
    gaps = np.diff(times)
    assert gaps.min() > 1.0 and gaps.max() < 2.2, times   # spread over the 10 s, not bunched at the start


def test_the_sampler_never_holds_more_than_twice_the_frames_it_gives():
    class Frame:
        width, height, rotation = 64, 48, 0

    sampler = _ShotSampler(0, 0.0, 5, 32, lambda frame, size: np.zeros((size[1], size[0], 3), np.uint8))
    most = 0
    for n in range(10_000):
        sampler.offer(n, n / 25, Frame())
        most = max(most, len(sampler.kept))
    assert most < 10 and sampler.stride >= 1024
    times, frames = sampler.pick(10_000 / 25)
    assert len(frames) == 5 and times[-1] > 300


def test_a_file_that_is_not_a_video_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoFramesError, match="notes.mp4' is not a readable video file"):
        detect_shots(str(text))
    audio = video_clips.write_audio_only(tmp_path / "voice.mp4")
    with pytest.raises(VideoFramesError, match="has no video stream"):
        detect_shots(audio)


def test_bad_cut_settings_are_refused():
    with pytest.raises(ShotsError, match="ratio"):
        CutSettings(ratio=float("nan")).check()
    with pytest.raises(ShotsError, match="window"):
        CutSettings(window=0).check()


def test_repeated_frames_of_a_low_rate_source_make_no_cuts(tmp_path):
    # 12 toy clips, each frame shown three times (8 fps footage stored at 24 fps): the repeats have no score,
    # so the one changed frame in three is not a spike among them
    paths = shot_clips.toy_clip_paths(12, seed=5)
    frames = [f for p in paths for f in shot_clips.read_frames(p) for _ in range(3)]
    path = shot_clips.write_frames(str(tmp_path / "repeats.mp4"), frames, fps=24)
    cuts = detect_shots(path, frames_per_shot=0).cut_times()
    _, precision, recall = shot_clips.match_cuts(cuts, [float(k) for k in range(1, 12)], tolerance=1 / 48)
    assert precision == 1.0 and recall >= 10 / 11, cuts
