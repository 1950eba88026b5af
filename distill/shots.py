"""Shots of a video file: cut detection and frames sampled per shot, in one streaming PyAV pass.

Used by the clip library builder (``retrieval/clip_library.py``). No ComfyUI import.

**Cut detector.** Every decoded frame is scaled by libswscale (area averaging) to a tiny picture, at most
``analysis_long_side`` pixels on its longer side (48 by default), and compared with the previous one: the
frame's *score* is the mean absolute difference of the two tiny RGB pictures, in 0..1 (a hue/saturation/value
histogram distance was tried as well and separated the toy world's joins worse: shapes moving over textured
backgrounds change the histogram as much as a cut). A frame that repeats the previous one (score below
``DUPLICATE``: a 10 fps source stored at 25 fps) gets no score and is never a cut. A changed frame starts a
new shot when its score is at least ``threshold`` and at least ``ratio`` times the mean score of the
``window`` changed frames on each side of it (an adaptive rule, as PySceneDetect's AdaptiveDetector: steady
motion gives steady scores, a cut is one spike), and the running shot is at least ``min_shot_s`` long. The
decision for a frame waits for ``window`` changed frames after it, holding at most ``MAX_PENDING`` decoded
frames besides the decoder's own buffers (a long still stretch is decided without them). Measured against
PySceneDetect in ``benchmarks/bench_clip_library.py`` (docs/clip_library.md says why this one is used).

**Frames per shot.** While a shot runs, its frames are kept at ``sample_long_side`` (aspect ratio kept,
upright): every ``stride``-th frame from the shot's start, and when ``2 * frames_per_shot`` are held every
second one is dropped and the stride doubles. When the shot ends, ``frames_per_shot`` of them are picked
evenly. So memory is bounded (at most ``2 * frames_per_shot`` small frames, plus the held decoded frames),
whatever the video's length or resolution, and only a few frames per shot are converted at sample size.

Times are seconds from the first frame of the video stream (as in ``video_frames``); a shot's ``end_s`` is
the start of the next shot, or the end of the last frame.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .video_frames import (VideoFramesError, VideoInfo, _decode, _display_size, _open, _sized_info, quarter_turns)

ANALYSIS_LONG_SIDE = 48
SAMPLE_LONG_SIDE = 448
DUPLICATE = 0.002    # a frame this close to the previous one repeats it (a 10 fps source stored at 25 fps)
MAX_PENDING = 16     # decoded frames held at most while waiting for changed frames after them


class ShotsError(VideoFramesError):
    """A video that gives no shots; the message says why."""


@dataclass(frozen=True)
class CutSettings:
    threshold: float = 0.015     # least score of a cut (0..1)
    ratio: float = 3.0           # a cut's score over the mean score of its neighbours
    window: int = 2              # neighbours on each side
    min_shot_s: float = 0.4      # no cut closer than this to the previous one

    def check(self) -> None:
        for name, value, low in (("threshold", self.threshold, 0.0), ("ratio", self.ratio, 1.0),
                                 ("min_shot_s", self.min_shot_s, 0.0)):
            if not (math.isfinite(value) and value >= low):
                raise ShotsError(f"cut {name} must be a finite number of at least {low}, got {value}.")
        if int(self.window) < 1:
            raise ShotsError(f"cut window must be at least 1 frame, got {self.window}.")


@dataclass
class Shot:
    index: int                    # 0-based, in time order
    start_s: float
    end_s: float
    start_frame: int              # decoded frame number (presentation order)
    end_frame: int                # exclusive
    frames: list = field(default_factory=list)         # sampled uint8 [h, w, 3] RGB frames
    frame_times: list = field(default_factory=list)    # seconds of each sampled frame

    @property
    def duration(self) -> float:
        return self.end_s - self.start_s


@dataclass
class VideoShots:
    path: str
    info: VideoInfo
    shots: list[Shot]
    decoded: int                  # frames decoded
    duration: float               # seconds from the first frame to the end of the last one
    scores: Optional[list] = None  # per-frame cut scores (with keep_scores)

    def cut_times(self) -> list[float]:
        return [s.start_s for s in self.shots[1:]]


def frame_score(prev: np.ndarray, cur: np.ndarray) -> float:
    """Cut score between two analysed frames (tiny uint8 RGB): their mean absolute difference, 0..1."""
    return float(np.abs(cur.astype(np.int16) - prev.astype(np.int16)).mean()) / 255.0


class _Scaler:
    """Frames to small upright uint8 RGB pictures through one libswscale context per size, kept between
    frames (``VideoFrame.reformat`` makes a new context per call: 13x slower on small frames here)."""

    def __init__(self):
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()

    def __call__(self, frame, size: tuple[int, int]) -> np.ndarray:
        turns = quarter_turns(frame)
        width, height = (size[1], size[0]) if turns % 2 else size
        shrinking = width * height < frame.width * frame.height
        rgb = self._reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                         interpolation="AREA" if shrinking else "BICUBIC").to_ndarray()
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


class _ShotSampler:
    """Keeps every ``stride``-th frame of a running shot at sample size; halves when full."""

    def __init__(self, start_frame: int, start_time: float, count: int, long_side: int, scale: _Scaler):
        self.scale = scale
        self.start_frame, self.start_time = start_frame, start_time
        self.count, self.long_side = count, long_side
        self.stride = 1
        self.kept: list[tuple[float, np.ndarray]] = []
        self.size = None

    def offer(self, number: int, time: float, frame) -> None:
        if self.count <= 0 or (number - self.start_frame) % self.stride:
            return
        if self.size is None:
            self.size = _display_size(frame, self.long_side)
        self.kept.append((time, self.scale(frame, self.size)))
        if len(self.kept) >= 2 * self.count:
            self.kept = self.kept[::2]
            self.stride *= 2

    def pick(self, end_time: float) -> tuple[list[float], list[np.ndarray]]:
        """``count`` kept frames nearest to evenly spaced times over the shot (each frame at most once)."""
        if len(self.kept) <= self.count:
            chosen = list(range(len(self.kept)))
        else:
            times = np.array([t for t, _ in self.kept])
            free = np.ones(len(times), dtype=bool)
            span = end_time - self.start_time
            for k in range(self.count):
                target = self.start_time + (k + 0.5) * span / self.count
                distance = np.where(free, np.abs(times - target), np.inf)
                free[int(np.argmin(distance))] = False
            chosen = list(np.flatnonzero(~free))
        return [self.kept[i][0] for i in chosen], [self.kept[i][1] for i in chosen]


def detect_shots(path: str, frames_per_shot: int = 8, sample_long_side: int = SAMPLE_LONG_SIDE,
                 settings: CutSettings = CutSettings(), analysis_long_side: int = ANALYSIS_LONG_SIDE,
                 progress: Optional[Callable[[int, int], None]] = None, keep_scores: bool = False) -> VideoShots:
    """The shots of ``path`` and ``frames_per_shot`` frames of each (0: cut only); see the module docstring.

    ``progress(frames decoded, frames stated by the container or 0)`` is called every 64 frames and may
    raise to cancel. A file that is not a video, has no video stream or gives no frame raises a
    ``VideoFramesError`` (``ShotsError``) naming the file."""
    settings.check()
    if int(frames_per_shot) < 0:
        raise ShotsError(f"frames_per_shot must be 0 or more, got {frames_per_shot}.")
    container, stream = _open(path)
    try:
        info = _sized_info(path, container, stream)
        stream.thread_type = "AUTO"
        fps = info.fps if info.fps and info.fps > 0 else 25.0
        frame_duration = 1.0 / fps
        min_gap = max(1, int(round(settings.min_shot_s * fps)))
        w = int(settings.window)
        counter = [0]
        pending: deque = deque()          # (number, time, av frame) waiting for their cut decision
        window: deque = deque()           # (number, score) of the frames around the one decided
        all_scores: list = []
        shots: list[Shot] = []
        sampler: Optional[_ShotSampler] = None
        previous_feature = None
        analysis_size = None
        t0 = last_time = None
        analysis_scale, sample_scale = _Scaler(), _Scaler()

        def close(end_frame: int, end_time: float) -> None:
            times, frames = sampler.pick(end_time)
            shots.append(Shot(len(shots), round(sampler.start_time - t0, 6), round(end_time - t0, 6),
                              sampler.start_frame, end_frame, frames, [round(t - t0, 6) for t in times]))

        def decide(number: int, time: float, frame) -> None:
            nonlocal sampler
            if sampler is None:
                sampler = _ShotSampler(number, time, int(frames_per_shot), sample_long_side, sample_scale)
            elif number - sampler.start_frame >= min_gap and _is_cut(number, window, w, settings):
                close(number, time)
                sampler = _ShotSampler(number, time, int(frames_per_shot), sample_long_side, sample_scale)
            sampler.offer(number, time, frame)

        for item in _decode(container, stream, 0.0, fps, counter):
            number = counter[0] - 1
            if t0 is None:
                t0 = item.time
                analysis_size = _display_size(item.frame, analysis_long_side)
            last_time = item.time
            tiny = analysis_scale(item.frame, analysis_size)
            feature = tiny
            score = frame_score(previous_feature, feature) if previous_feature is not None else 0.0
            previous_feature = feature
            if keep_scores:
                all_scores.append(score)
            if number == 0 or score >= DUPLICATE:   # a repeated frame (a low-rate source) has no score
                window.append((number, score))
                while len(window) > 2 * w + 1:
                    window.popleft()
            pending.append((number, item.time, item.frame))
            while pending and (len(pending) > MAX_PENDING
                               or sum(n > pending[0][0] for n, _ in window) >= w):
                decide(*pending.popleft())
            if progress is not None and counter[0] % 64 == 0:
                progress(counter[0], info.frames or 0)
        if t0 is None:
            raise ShotsError(f"'{os.path.basename(path)}' gave no frames, so no shots; the file may be empty, "
                             f"truncated or damaged.")
        while pending:
            decide(*pending.popleft())
        end = last_time + frame_duration
        close(counter[0], end)
    finally:
        container.close()
    return VideoShots(path=path, info=info, shots=shots, decoded=counter[0], duration=round(end - t0, 6),
                      scores=all_scores if keep_scores else None)


def _is_cut(number: int, window: deque, w: int, settings: CutSettings) -> bool:
    """Is frame ``number`` a cut: its score against the ``w`` changed frames on each side of it."""
    items = list(window)
    at = next((i for i, (n, _) in enumerate(items) if n == number), None)
    if at is None or items[at][1] < settings.threshold:
        return False   # a repeated frame, or too small a change
    neighbours = [sc for _, sc in items[max(0, at - w):at] + items[at + 1:at + 1 + w]]
    base = float(np.mean(neighbours)) if neighbours else 0.0
    return items[at][1] >= settings.ratio * base
