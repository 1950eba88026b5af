"""distill.video_frames on clips whose frames encode their own index: selection, resizing, errors, real clips."""

from __future__ import annotations

import glob
import os
import re

import numpy as np
import pytest

from comfyui_searchpriors.distill.video_frames import (VideoFramesError, probe_video, read_reference_frames,
                                                       target_geometry)

from .conftest import SHARED_DATA, load_test_module

clips = load_test_module("video_clips")
FPS, N = 10, 60


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """60 frames at 10 fps (6 s), 64x48, keyframes every 12 frames, B-frames, plus an audio track."""
    return clips.write_clip(tmp_path_factory.mktemp("clips") / "count.mp4", N, fps=FPS, audio=True)


def indices(result) -> list[int]:
    return [clips.frame_index(f.numpy()) for f in result.frames]


def on_screen(t: float) -> int:
    """Literal reference: the frame shown at time t (frame i spans [i/FPS, (i+1)/FPS))."""
    return int(np.floor(t * FPS + 1e-9))


def test_probe_reports_the_stream(clip):
    info = probe_video(clip)
    assert (info.width, info.height, info.fps) == (64, 48, 10.0)
    assert info.duration == pytest.approx(6.0, abs=0.11) and info.frames == N


@pytest.mark.parametrize("start, stride, count", [(0.0, 1, 16), (0.0, 3, 20), (1.25, 2, 8), (2.0, 1, 40),
                                                  (3.3, 5, 6), (5.9, 1, 1), (0.0, 59, 2)])
def test_stride_selection_is_exact(clip, start, stride, count):
    result = read_reference_frames(clip, count, 32, 32, start_seconds=start, stride=stride)
    expected = [on_screen(start) + k * stride for k in range(count)]
    assert indices(result) == expected
    assert result.source_indices == expected
    assert result.timestamps == pytest.approx([i / FPS for i in expected])
    assert result.frames.shape == (count, 32, 32, 3) and str(result.frames.dtype) == "torch.float32"
    assert 0.0 <= float(result.frames.min()) and float(result.frames.max()) <= 1.0


@pytest.mark.parametrize("start, fps, count", [(0.0, 4.0, 12), (1.0, 2.5, 8), (0.35, 3.0, 10),
                                               (2.0, 25.0, 20), (0.0, 10.0, 60), (4.0, 7.0, 14)])
def test_fps_resampling_picks_the_frame_on_screen(clip, start, fps, count):
    result = read_reference_frames(clip, count, 32, 32, start_seconds=start, stride=0, fps=fps)
    t0 = on_screen(start) / FPS
    assert indices(result) == [on_screen(t0 + k / fps) for k in range(count)]


def test_decoding_stops_after_the_last_needed_frame_and_seeks_to_the_start(clip):
    head = read_reference_frames(clip, 4, 16, 16, start_seconds=0.0, stride=1)
    assert head.decoded <= 4 + 8  # the decoder's frame threads may run a few frames ahead
    late = read_reference_frames(clip, 4, 16, 16, start_seconds=5.0, stride=1)
    # keyframes every 12 frames: the seek lands on frame 48, so frames 0-47 are never decoded
    assert indices(late) == [50, 51, 52, 53] and late.decoded <= 12


@pytest.mark.parametrize("crop", ["center", "pad", "stretch"])
@pytest.mark.parametrize("size", [(40, 24), (24, 40), (128, 96), (8, 8)])
def test_every_mode_gives_the_requested_size(clip, crop, size):
    w, h = size
    result = read_reference_frames(clip, 3, w, h, start_seconds=1.0, stride=2, crop=crop)
    assert result.frames.shape == (3, h, w, 3)
    if min(w, h) >= 24 and crop != "pad":   # pad's black bars cover the pixels frame_index reads
        assert indices(result) == [10, 12, 14]


def test_resize_content_center_pad_stretch(tmp_path):
    """A wide 96x32 clip with a bright middle third: centre crop to a square keeps only the middle, pad
    keeps everything with black bars above and below, stretch keeps everything over the whole height."""
    import av

    path = tmp_path / "wide.mp4"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 32, "yuv420p"
        stream.options = {"crf": "10"}
        img = np.full((32, 96, 3), 40, np.uint8)
        img[:, 32:64] = 220
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    center = read_reference_frames(str(path), 1, 32, 32, crop="center").frames[0].numpy() * 255
    assert center[4:28, 4:28].mean() == pytest.approx(220, abs=6)   # only the bright middle third
    pad = read_reference_frames(str(path), 1, 48, 48, crop="pad").frames[0].numpy() * 255
    assert target_geometry(96, 32, 48, 48, "pad") == (48, 16, 0, 16)
    assert pad[:16].max() == 0 and pad[32:].max() == 0          # black bars
    assert pad[20:28, 2:12].mean() == pytest.approx(40, abs=8) and pad[20:28, 20:28].mean() == pytest.approx(220, abs=8)
    stretch = read_reference_frames(str(path), 1, 48, 48, crop="stretch").frames[0].numpy() * 255
    assert stretch[:, 2:12].mean() == pytest.approx(40, abs=8) and stretch[:, 20:28].mean() == pytest.approx(220, abs=8)


@pytest.mark.parametrize("degrees, bright_side", [(0, "left"), (90, "bottom"), (-90, "top"), (180, "right")])
def test_display_rotation_is_applied(tmp_path, degrees, bright_side):
    """A 64x32 clip stored landscape with a bright left quarter; a display matrix turns it counter-clockwise
    by ``degrees``, so the bright strip appears on ``bright_side`` and a turned clip shows portrait."""
    import av

    path = tmp_path / f"rot{degrees}.mp4"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(degrees)
        img = np.full((32, 64, 3), 30, np.uint8)
        img[:, :16] = 230
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    result = read_reference_frames(str(path), 1, 32, 64, crop="pad")   # portrait output
    pic = result.frames[0].numpy().mean(axis=2) * 255
    sides = {"left": pic[:, :4], "right": pic[:, -4:], "top": pic[:4, :], "bottom": pic[-4:, :]}
    brightest = max(sides, key=lambda k: sides[k].mean())
    assert brightest == bright_side
    turned = degrees % 180 != 0
    # portrait content fills the portrait output; landscape content is padded above and below
    assert (pic[:8].max() > 0) == turned and result.quarter_turns == (degrees // 90) % 4
    assert ("turned" in result.summary()) == (degrees != 0)


@pytest.mark.parametrize("src, out, crop, expected", [
    ((1920, 1080), (256, 256), "center", (455, 256, 99, 0)),
    ((1080, 1920), (256, 256), "center", (256, 455, 0, 99)),
    ((1920, 1080), (256, 256), "pad", (256, 144, 0, 56)),
    ((640, 480), (320, 240), "center", (320, 240, 0, 0)),
    ((100, 100), (64, 32), "stretch", (64, 32, 0, 0)),
])
def test_target_geometry(src, out, crop, expected):
    assert target_geometry(*src, *out, crop) == expected


def test_progress_is_called_and_can_cancel(clip):
    calls = []
    read_reference_frames(clip, 5, 16, 16, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5, 5)

    class Stop(Exception):
        pass

    def cancel(done, total):
        if done >= 2:
            raise Stop

    with pytest.raises(Stop):
        read_reference_frames(clip, 5, 16, 16, progress=cancel)


# ------------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("kwargs, words", [
    (dict(frame_count=21, stride=3, start_seconds=0.0), ["too short", "60 frames from 0 s", "needs 61",
                                                          "frame_count 20 or less"]),
    (dict(frame_count=20, stride=3, start_seconds=1.0), ["too short", "50 frames from 1 s", "frame_count 17 or less",
                                                          "stride 2 or less", "start_seconds 0.20 or less"]),
    (dict(frame_count=30, stride=0, fps=4.0, start_seconds=0.0), ["too short", "at 4 fps needs 7.25 s",
                                                                  "frame_count 24 or less"]),
])
def test_too_short_says_what_is_there_and_what_to_change(clip, kwargs, words):
    with pytest.raises(VideoFramesError) as err:
        read_reference_frames(clip, width=32, height=32, **kwargs)
    for word in words:
        assert word in str(err.value), str(err.value)


@pytest.mark.parametrize("kwargs", [dict(frame_count=20, stride=3, start_seconds=1.0), dict(frame_count=21, stride=3),
                                    dict(frame_count=30, stride=0, fps=4.0),
                                    dict(frame_count=30, stride=0, fps=4.0, start_seconds=1.0),
                                    dict(frame_count=12, stride=5, start_seconds=0.7)])
def test_every_suggested_fix_works(clip, kwargs):
    """Each change the too-short message proposes, made alone, does give the frames."""
    with pytest.raises(VideoFramesError) as err:
        read_reference_frames(clip, width=16, height=16, **kwargs)
    fixes = re.findall(r"(frame_count|stride|start_seconds|fps) ([0-9.]+) or (?:less|more)", str(err.value))
    assert len(fixes) >= 2, str(err.value)
    for name, value in fixes:
        cast = int if name in ("frame_count", "stride") else float
        result = read_reference_frames(clip, width=16, height=16, **{**kwargs, name: cast(value)})
        assert result.frames.shape[0] == (int(value) if name == "frame_count" else kwargs["frame_count"])


def test_start_past_the_end(clip):
    with pytest.raises(VideoFramesError, match="past the end.*below 6"):
        read_reference_frames(clip, 4, 32, 32, start_seconds=7.0)


def test_audio_only_file(tmp_path):
    path = clips.write_audio_only(tmp_path / "tone.mp4")
    with pytest.raises(VideoFramesError, match="no video stream.*audio"):
        read_reference_frames(path, 4, 32, 32)


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoFramesError, match="not a readable video file"):
        read_reference_frames(str(path), 4, 32, 32)


def test_truncated_file(tmp_path, clip):
    path = tmp_path / "cut.mp4"
    with open(clip, "rb") as fh:
        path.write_bytes(fh.read()[: os.path.getsize(clip) // 3])
    with pytest.raises(VideoFramesError):
        read_reference_frames(str(path), 50, 32, 32)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(VideoFramesError, match="does not exist"):
        read_reference_frames(str(tmp_path / "nope.mp4"), 4, 32, 32)
    with pytest.raises(VideoFramesError, match="not a file"):
        read_reference_frames(str(tmp_path), 4, 32, 32)


@pytest.mark.parametrize("kwargs, words", [
    (dict(frame_count=0), "frame_count must be at least 1"),
    (dict(frame_count=-3), "frame_count must be at least 1"),
    (dict(width=0), "width must be between"),
    (dict(height=100000), "height must be between"),
    (dict(start_seconds=-1.0), "start_seconds must be 0 or more"),
    (dict(start_seconds=float("nan")), "start_seconds must be 0 or more"),
    (dict(stride=-1), "stride must be 1 or more"),
    (dict(stride=0, fps=0.0), "fps, which must be above 0"),
    (dict(crop="zoom"), "Unknown crop mode 'zoom'"),
])
def test_bad_requests_fail_before_opening(kwargs, words):
    args = dict(frame_count=4, width=32, height=32, start_seconds=0.0, stride=1, fps=8.0, crop="center")
    args.update(kwargs)
    with pytest.raises(VideoFramesError, match=words):
        read_reference_frames("/nonexistent/never-opened.mp4", **args)


# ------------------------------------------------------------------------------------------ real clips

def real_clips() -> list[str]:
    return sorted(glob.glob(os.path.join(SHARED_DATA, "videos", "*", "*.mp4")))


def test_real_clips_decode_at_the_requested_size():
    paths = real_clips()
    if not paths:
        pytest.skip(f"no real clips under {os.path.join(SHARED_DATA, 'videos')} (set SEARCHPRIORS_SHARED_DATA)")
    for path in paths:
        info = probe_video(path)
        result = read_reference_frames(path, 8, 64, 40, start_seconds=0.5, stride=2)
        assert result.frames.shape == (8, 40, 64, 3), path
        assert float(result.frames.std()) > 0.01, path   # real picture content, not a blank
        expected0 = int(np.floor(0.5 * info.fps + 1e-6))
        assert abs(result.source_indices[0] - expected0) <= 1 and np.all(np.diff(result.source_indices) == 2), path
        resampled = read_reference_frames(path, 6, 48, 48, stride=0, fps=4.0, crop="pad")
        assert resampled.frames.shape == (6, 48, 48, 3)
        assert resampled.timestamps[-1] == pytest.approx(1.25, abs=1.0 / info.fps + 1e-6), path


# ------------------------------------------------------------------------------------------ memory budget

def test_memory_budget_default_is_half_the_machine(monkeypatch):
    from comfyui_searchpriors.distill import memory_budget as mb

    monkeypatch.delenv(mb.BUDGET_ENV, raising=False)
    total = mb.physical_memory_bytes()
    assert total and mb.budget_bytes() == total // 2
    monkeypatch.setattr(mb, "physical_memory_bytes", lambda: None)
    assert mb.budget_bytes() == mb.FALLBACK_BYTES
    monkeypatch.setenv(mb.BUDGET_ENV, "1024")
    assert mb.budget_bytes() == 1024 * mb.MiB
    for bad in ("lots", "0", "-5", "nan", "inf"):
        monkeypatch.setenv(mb.BUDGET_ENV, bad)
        with pytest.raises(mb.MemoryBudgetError, match=mb.BUDGET_ENV):
            mb.budget_bytes()


def test_frames_beyond_the_budget_are_refused_before_any_file_is_opened(monkeypatch, tmp_path):
    from comfyui_searchpriors.distill import memory_budget as mb
    from comfyui_searchpriors.distill import video_frames as vf

    monkeypatch.setattr(mb, "physical_memory_bytes", lambda: 24 * 1024 ** 3)   # the 24 GiB machine
    monkeypatch.delenv(mb.BUDGET_ENV, raising=False)
    with pytest.raises(mb.MemoryBudgetError) as refused:
        vf.check_request(24, 8192, 8192, 0.0, 1, 8.0, "center")
    message = str(refused.value)
    assert "24 frames at 8192x8192 needs about 23,040 MiB" in message and "(12,288 MiB)" in message
    assert "Take fewer frames" in message and mb.BUDGET_ENV in message
    vf.check_request(8, 4096, 4096, 0.0, 1, 8.0, "center")                     # ~1.9 GiB: fine
    monkeypatch.setenv(mb.BUDGET_ENV, "100")
    with pytest.raises(mb.MemoryBudgetError, match="the budget set in SEARCHPRIORS_MAX_ALLOC_MB \\(100 MiB\\)"):
        vf.read_reference_frames(str(tmp_path / "never_opened.mp4"), 8, 1024, 1024)
