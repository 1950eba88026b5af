"""Reference frames from a video file with PyAV: pick a few frames, resize them, return a ComfyUI IMAGE.

Used by the Reference Video Frames node (the POS paper's neighbour video, Sec. 3.1, enters the model through
VAE encoding of these frames). No ComfyUI import.

Selection (times are seconds from the first frame of the video stream):

- The *start frame* is the frame on screen at ``start_seconds``: the last frame whose timestamp is at or
  before it (the first frame when ``start_seconds`` lies before it).
- ``stride >= 1``: the start frame, then every ``stride``-th decoded frame after it (source frames, in
  presentation order), ``frame_count`` in all.
- ``stride == 0``: resampling to ``fps``: frame k is the frame on screen at ``t_start + k / fps``, where
  ``t_start`` is the start frame's time. A target fps above the source's repeats frames.

Bounded memory, whatever the file: the container seeks to the keyframe at or before the start, decodes
forward, converts only the selected frames (libswscale scales them straight to the small size, so no
full-size RGB array is ever made) and stops after the last frame it needs. At most one decoded source
frame is held besides the decoder's own buffers, plus the output tensor.

Frames come out upright as players show them: a display-matrix rotation (phone videos) is applied in
quarter turns before resizing. Resize modes (``crop``): ``center`` scales to cover width x height keeping
the aspect ratio, then cuts the centre; ``pad`` scales to fit inside keeping the aspect ratio, then pads
with black; ``stretch`` scales to width x height exactly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterator, Optional

import numpy as np

from ..errors import MissingDependencyError, SearchPriorsError
from .memory_budget import check_allocation

CROP_MODES = ("center", "pad", "stretch")
MAX_SIDE = 8192
MAX_FRAMES = 4096
# memory per output pixel: the uint8 frames decoded into (3 bytes) and the float32 IMAGE made from them (12)
BYTES_PER_PIXEL = 3 + 12


class VideoFramesError(SearchPriorsError):
    """A video that cannot give the requested frames; the message says why and what to change."""


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float                 # average frame rate of the stream
    duration: Optional[float]  # seconds, when the container or stream states it
    frames: Optional[int]      # frame count stated by the container (0 / None when unknown)
    codec: str

    def describe(self) -> str:
        duration = f"{self.duration:.2f} s" if self.duration is not None else "unknown duration"
        frames = f", {self.frames} frames" if self.frames else ""
        return f"{self.width}x{self.height} {self.codec} at {self.fps:.3f} fps, {duration}{frames}"


@dataclass
class ReferenceFrames:
    frames: "object"                               # torch.Tensor [F, H, W, 3] float32 in 0..1
    info: VideoInfo
    source_indices: list[int] = field(default_factory=list)   # frame number in the source, from its timestamp
    timestamps: list[float] = field(default_factory=list)     # seconds
    decoded: int = 0                               # frames the decoder produced (what the selection cost)
    quarter_turns: int = 0                         # counter-clockwise turns applied (display matrix)

    def summary(self) -> str:
        shown = ", ".join(str(i) for i in self.source_indices[:24]) + (" ..." if len(self.source_indices) > 24 else "")
        span = (f"{self.timestamps[0]:.3f}-{self.timestamps[-1]:.3f} s" if self.timestamps else "none")
        f, h, w = (self.frames.shape[0], self.frames.shape[1], self.frames.shape[2])
        turned = f", shown turned {90 * self.quarter_turns} degrees counter-clockwise" if self.quarter_turns else ""
        return (f"{os.path.basename(self.info.path)}: {self.info.describe()}{turned}\n"
                f"{f} frames at {w}x{h}, source frames {shown} ({span}); {self.decoded} frames decoded")


def _av():
    try:
        import av
    except ImportError as exc:  # ComfyUI ships PyAV; a bare environment may not
        raise MissingDependencyError("av", "Reading reference video frames") from exc
    return av


def check_request(frame_count: int, width: int, height: int, start_seconds: float, stride: int, fps: float,
                  crop: str) -> None:
    """Refuse impossible requests before any file is opened."""
    if int(frame_count) <= 0:
        raise VideoFramesError(f"frame_count must be at least 1, got {frame_count}.")
    if int(frame_count) > MAX_FRAMES:
        raise VideoFramesError(f"frame_count {frame_count} is more than {MAX_FRAMES}; take fewer frames.")
    for name, value in (("width", width), ("height", height)):
        if not 1 <= int(value) <= MAX_SIDE:
            raise VideoFramesError(f"{name} must be between 1 and {MAX_SIDE} pixels, got {value}.")
    if not math.isfinite(start_seconds) or start_seconds < 0:
        raise VideoFramesError(f"start_seconds must be 0 or more, got {start_seconds}.")
    if int(stride) < 0:
        raise VideoFramesError(f"stride must be 1 or more (every n-th source frame), or 0 to resample to fps; "
                               f"got {stride}.")
    if int(stride) == 0 and not (math.isfinite(fps) and fps > 0):
        raise VideoFramesError(f"stride is 0, so frames are resampled to fps, which must be above 0 (got {fps}). "
                               f"Set fps, or a stride of 1 or more.")
    if crop not in CROP_MODES:
        raise VideoFramesError(f"Unknown crop mode '{crop}': choose one of {', '.join(CROP_MODES)}.")
    check_frames_budget(frame_count, width, height)


def check_frames_budget(frame_count: int, width: int, height: int) -> None:
    """Refuse a request whose frames would not fit the memory budget (distill/memory_budget.py)."""
    count, w, h = int(frame_count), int(width), int(height)
    check_allocation(f"{count} frames at {w}x{h}", count * w * h * BYTES_PER_PIXEL,
                     "Take fewer frames, or a smaller width and height")


def _open(path: str):
    """The container and its first video stream, or an error that says what the file is."""
    av = _av()
    if not os.path.exists(path):
        raise VideoFramesError(f"Video file '{path}' does not exist.")
    if not os.path.isfile(path):
        raise VideoFramesError(f"'{path}' is not a file: give the path of a video file.")
    try:
        container = av.open(path, mode="r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoFramesError(f"'{os.path.basename(path)}' is not a readable video file ({exc}). "
                               f"Give an mp4/webm/mkv/mov file that a video player opens.") from exc
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise VideoFramesError(f"'{os.path.basename(path)}' has no video stream (it holds: {', '.join(kinds)}); "
                               f"an audio-only file cannot give frames. Give a video file.")
    return container, container.streams.video[0]


def _info(path: str, container, stream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000.0
    ctx = stream.codec_context
    return VideoInfo(path=path, width=int(ctx.width or 0), height=int(ctx.height or 0), fps=fps, duration=duration,
                     frames=int(stream.frames or 0) or None, codec=str(ctx.name or "?"))


def _sized_info(path: str, container, stream) -> VideoInfo:
    """``_info`` of a stream that has a frame size (frames can be read from it), else the error that says so."""
    info = _info(path, container, stream)
    if info.width <= 0 or info.height <= 0:
        raise VideoFramesError(f"'{os.path.basename(path)}' has a video stream without a frame size; "
                               f"it is not a readable video.")
    return info


def probe_video(path: str) -> VideoInfo:
    container, stream = _open(path)
    try:
        return _info(path, container, stream)
    finally:
        container.close()


# ------------------------------------------------------------------------------------------- selection

@dataclass
class _Decoded:
    frame: "object"   # av.VideoFrame, not converted yet
    time: float       # seconds from the stream's first frame


def _decode(container, stream, start_seconds: float, fps: float, counter: list) -> Iterator[_Decoded]:
    """Frames from the keyframe at or before ``start_seconds`` on, in presentation order."""
    origin = stream.start_time or 0
    base = stream.time_base or Fraction(1, 1_000_000)
    if start_seconds > 0:
        # land on the keyframe at or before the start; the frames between it and the start are decoded
        # (they are needed to decode the start) and skipped
        container.seek(origin + int(start_seconds / base), stream=stream, backward=True, any_frame=False)
    fallback = 0
    try:
        for frame in container.decode(stream):
            counter[0] += 1
            if frame.pts is not None:
                t = float((frame.pts - origin) * base)
            else:  # no timestamps: count frames at the stated rate
                t = fallback / fps if fps else float(fallback)
            fallback += 1
            yield _Decoded(frame, t)
    except av_errors() as exc:
        raise VideoFramesError(f"'{os.path.basename(container.name)}' could not be decoded past "
                               f"{counter[0]} frames ({exc}); the file may be truncated or damaged.") from exc


def av_errors():
    return (_av().FFmpegError,)


def _from_start(frames: Iterator[_Decoded], start: float, tol: float) -> Iterator[_Decoded]:
    """The frame on screen at ``start``, then every later frame."""
    previous = None
    started = False
    for item in frames:
        if not started:
            if item.time <= start + tol:
                previous = item
                continue
            started = True
            if previous is not None:
                yield previous
                previous = None
        yield item
    if not started and previous is not None:
        yield previous


def _select_stride(frames: Iterator[_Decoded], count: int, stride: int) -> Iterator[_Decoded]:
    taken = 0
    for n, item in enumerate(frames):
        if n % stride == 0:
            yield item
            taken += 1
            if taken == count:
                return


def _select_fps(frames: Iterator[_Decoded], count: int, fps: float, frame_duration: float,
                tol: float) -> Iterator[_Decoded]:
    """Frame k is the one on screen at t0 + k/fps (t0: the start frame's time)."""
    k = 0
    t0 = None
    current = None
    for item in frames:
        if t0 is None:
            t0, current = item.time, item
            continue
        # every target before this frame's time shows the current frame
        while k < count and t0 + k / fps < item.time - tol:
            yield current
            k += 1
        if k == count:
            return
        current = item
    if current is None:
        return
    # the last frame stays on screen for one frame duration
    while k < count and t0 + k / fps < current.time + frame_duration - tol:
        yield current
        k += 1


# ----------------------------------------------------------------------------------------- conversion

def target_geometry(src_w: int, src_h: int, width: int, height: int, crop: str) -> tuple[int, int, int, int]:
    """(scaled width, scaled height, x offset, y offset). For ``center`` the offsets say where the crop
    starts inside the scaled frame; for ``pad`` where the scaled frame sits inside the output."""
    if crop == "stretch":
        return width, height, 0, 0
    cover = crop == "center"
    scale = (max if cover else min)(width / src_w, height / src_h)
    sw = max(width if cover else 1, min(MAX_SIDE, round(src_w * scale)))
    sh = max(height if cover else 1, min(MAX_SIDE, round(src_h * scale)))
    if not cover:
        sw, sh = min(sw, width), min(sh, height)
    if cover:
        return sw, sh, (sw - width) // 2, (sh - height) // 2
    return sw, sh, (width - sw) // 2, (height - sh) // 2


def quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns the file's display matrix asks for (phone videos), 0..3."""
    degrees = getattr(frame, "rotation", 0) or 0
    return int(round(degrees / 90.0)) % 4


def _convert(frame, width: int, height: int, crop: str, out: np.ndarray) -> None:
    """One decoded frame into ``out`` ([H, W, 3] uint8), upright as players show it, scaled by libswscale."""
    turns = quarter_turns(frame)
    shown_w, shown_h = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
    sw, sh, x, y = target_geometry(shown_w, shown_h, width, height, crop)
    # area averaging when shrinking (no aliasing on 1080p -> 256), bicubic when enlarging
    shrinking = sw * sh < frame.width * frame.height
    stored_w, stored_h = (sh, sw) if turns % 2 else (sw, sh)
    rgb = frame.reformat(width=stored_w, height=stored_h, format="rgb24",
                         interpolation="AREA" if shrinking else "BICUBIC").to_ndarray()
    if turns:
        rgb = np.rot90(rgb, turns)   # counter-clockwise, as the display matrix says
    if crop == "center":
        out[:] = rgb[y:y + height, x:x + width]
    elif crop == "pad":
        out[:] = 0
        out[y:y + sh, x:x + sw] = rgb
    else:
        out[:] = rgb


# ----------------------------------------------------------------------------------------------- main

def _down(seconds: float) -> float:
    """Rounded down to 1/100 s (a suggested latest start must not round past the limit)."""
    return max(0.0, math.floor(seconds * 100 + 1e-6) / 100)


def _too_short(info: VideoInfo, count: int, start_seconds: float, stride: int, fps: float, got: int,
               remaining: int) -> VideoFramesError:
    name = os.path.basename(info.path)
    duration = f"{info.duration:.2f} s" if info.duration is not None else "of unknown length"
    total = info.frames or (round(info.duration * info.fps) if info.duration and info.fps else None)
    if stride:
        need = (count - 1) * stride + 1
        fixes = [f"frame_count {max(1, 1 + (remaining - 1) // stride)} or less" if remaining else None,
                 f"stride {(remaining - 1) // (count - 1)} or less" if 1 < count <= remaining else None]
        if total and info.fps and total >= need:
            fixes.append(f"start_seconds {_down((total - need) / info.fps):.2f} or less")
        wanted = f"frame_count {count} with stride {stride} needs {need} source frames from there"
    else:
        span = (count - 1) / fps
        fixes = [f"frame_count {got} or less" if got else None]
        if info.fps and remaining > 1 and count > 1:   # the span of the frames left, from first to last
            fixes.append(f"fps {math.ceil(1000 * (count - 1) / ((remaining - 1) / info.fps)) / 1000:.3f} or more")
        if info.duration is not None and info.duration > span:
            latest = info.duration - span - 1.0 / max(fps, info.fps or fps)
            fixes.append(f"start_seconds {_down(latest):.2f} or less")
        wanted = f"frame_count {count} at {fps:g} fps needs {span:.2f} s from there"
    fixes = [f for f in fixes if f]
    return VideoFramesError(f"'{name}' is too short: it is {duration} at {info.fps:.3f} fps and has {remaining} "
                            f"frames from {start_seconds:g} s on; {wanted}, so only {got} could be taken. "
                            f"Use " + (", or ".join(fixes) if fixes else "an earlier start or a longer video") + ".")


def check_shot(shot_start: Optional[float], shot_end: Optional[float]) -> None:
    for name, value in (("shot start", shot_start), ("shot end", shot_end)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise VideoFramesError(f"The {name} must be a finite number of seconds >= 0, got {value}: fix the "
                                   f"library's times for this entry.")
    if shot_start is not None and shot_end is not None and shot_end <= shot_start:
        raise VideoFramesError(f"The shot ends ({shot_end:g} s) before it starts ({shot_start:g} s): fix the "
                               f"library's times for this entry.")


def _until(frames: Iterator[_Decoded], end: float, tol: float) -> Iterator[_Decoded]:
    """The frames that start before ``end`` (the shot's last frames; the decoder stops there)."""
    for item in frames:
        if item.time >= end - tol:
            return
        yield item


def _shot_too_short(path: str, shot_start: float, shot_end: Optional[float], count: int, start_seconds: float,
                    stride: int, fps: float, got: int, remaining: int) -> VideoFramesError:
    length = f"{shot_end - shot_start:.2f} s long ({shot_start:g}-{shot_end:g} s)" if shot_end is not None else ""
    if stride:
        wanted = f"frame_count {count} with stride {stride} needs {(count - 1) * stride + 1} frames"
        fixes = [f"frame_count {max(1, 1 + (remaining - 1) // stride)} or less" if remaining else None,
                 f"stride {(remaining - 1) // (count - 1)} or less" if 1 < count <= remaining else None]
    else:
        wanted = f"frame_count {count} at {fps:g} fps needs {(count - 1) / fps:.2f} s"
        fixes = [f"frame_count {got} or less" if got else None]
    if start_seconds > 0:
        fixes.append("an earlier start_seconds")
    fixes = [f for f in fixes if f]
    return VideoFramesError(
        f"The request does not fit in the shot: the retrieved entry is a shot inside '{os.path.basename(path)}', "
        f"{length}, and has {remaining} frames from start_seconds {start_seconds:g} (counted from the shot's "
        f"start) to its end; {wanted}, so only {got} could be taken. Use " + ", or ".join(fixes or ["another rank"])
        + ".")


def read_reference_frames(path: str, frame_count: int, width: int, height: int, start_seconds: float = 0.0,
                          stride: int = 1, fps: float = 0.0, crop: str = "center",
                          progress: Optional[Callable[[int, int], None]] = None,
                          shot_start: Optional[float] = None, shot_end: Optional[float] = None) -> ReferenceFrames:
    """``frame_count`` frames of ``path`` as a float32 tensor [F, height, width, 3] in 0..1 (ComfyUI IMAGE).

    ``progress(done, total)`` is called after each selected frame and every 64 decoded frames (it may raise
    to cancel). ``shot_start`` / ``shot_end`` (seconds in the file; None = its start / end): the frames come
    from that shot only: ``start_seconds`` counts from the shot's start, frames from the shot's end on are
    not used, and a request that does not fit in the shot is refused with what would fit. Timestamps in the
    result stay the file's.
    """
    import torch

    check_request(frame_count, width, height, start_seconds, stride, fps, crop)
    check_shot(shot_start, shot_end)
    count, width, height, stride = int(frame_count), int(width), int(height), int(stride)
    in_shot = shot_start is not None or shot_end is not None
    offset = float(shot_start or 0.0)
    relative = start_seconds
    start_seconds = offset + start_seconds
    if shot_end is not None and start_seconds >= shot_end:
        raise VideoFramesError(f"start_seconds {relative:g} is at or past the end of the shot: the retrieved entry "
                               f"is {shot_end - offset:.2f} s of '{os.path.basename(path)}' ({offset:g}-{shot_end:g} "
                               f"s) and start_seconds counts from its start; use a start below "
                               f"{shot_end - offset:.2f} s.")
    container, stream = _open(path)
    try:
        info = _sized_info(path, container, stream)
        if info.duration is not None and start_seconds >= info.duration:
            raise VideoFramesError(f"start_seconds {start_seconds:g} is at or past the end of "
                                   f"'{os.path.basename(path)}' ({info.describe()}); use a start below "
                                   f"{info.duration:.2f} s.")
        stream.thread_type = "AUTO"   # frame threads: a few frames in flight, decoding several times faster
        frame_duration = 1.0 / info.fps if info.fps else 0.04
        tol = 1e-3 * frame_duration    # float rounding only: a target on a frame's timestamp shows that frame
        counter = [0]
        decoded = _decode(container, stream, start_seconds, info.fps, counter)
        from_start = _from_start(decoded, start_seconds, tol)
        if shot_end is not None:
            from_start = _until(from_start, float(shot_end), tol)
        # count the frames seen from the start, so that "too short" can say what the file has
        seen = [0]

        def counted(it):
            for item in it:
                seen[0] += 1
                if progress is not None and seen[0] % 64 == 0:
                    progress(len(indices), count)
                yield item

        chosen = (_select_stride(counted(from_start), count, stride) if stride
                  else _select_fps(counted(from_start), count, float(fps), frame_duration, tol))
        out = np.empty((count, height, width, 3), dtype=np.uint8)
        indices: list[int] = []
        times: list[float] = []
        last_id = None
        turns = 0
        for item in chosen:
            k = len(indices)
            if last_id is not None and item.frame is last_id[0]:
                out[k] = out[k - 1]   # the same source frame again (fps above the source's)
            else:
                _convert(item.frame, width, height, crop, out[k])
                last_id = (item.frame,)
                turns = quarter_turns(item.frame)
            indices.append(round(item.time * info.fps) if info.fps else k)
            times.append(round(item.time, 6))
            if progress is not None:
                progress(len(indices), count)
        if len(indices) < count:   # the selection ran to the end of the stream, so seen[0] is all there is
            if in_shot and (shot_end is not None and (info.duration is None or shot_end < info.duration)):
                raise _shot_too_short(path, offset, shot_end, count, relative, stride, float(fps), len(indices),
                                      seen[0])
            raise _too_short(info, count, start_seconds, stride, float(fps), len(indices), seen[0])
    finally:
        container.close()
    frames = torch.from_numpy(out).to(torch.float32).div_(255.0)
    return ReferenceFrames(frames=frames, info=info, source_indices=indices, timestamps=times, decoded=counter[0],
                           quarter_turns=turns)


# ------------------------------------------------------------------------------------ whole-clip scan

SCAN_MAX_FRAMES = 64      # one detector pass per scanned frame (distill.grounding.MAX_DETECT_FRAMES)
SCAN_LONG_SIDE = 384      # scanned frames keep the aspect ratio; detectors resize to ~800 px anyway
KEYFRAME_LONG_SIDE = 1024  # keyframes are decoded at most this large before their region is cut


@dataclass
class ClipScan:
    frames: "object"          # torch.Tensor [S, h, w, 3] float32 in 0..1, upright, the aspect ratio kept
    times: list[float]        # seconds of each scanned frame, evenly spaced by ``interval``
    interval: float           # seconds between scanned frames (1 / fps, doubled while the clip did not fit)
    info: VideoInfo
    decoded: int = 0
    duration: float = 0.0     # seconds from the first frame to the end of the last one
    shot: tuple = (None, None)   # (start, end) seconds in the file when only a shot of it was scanned

    def summary(self) -> str:
        h, w = (self.frames.shape[1], self.frames.shape[2])
        what = "the whole clip" if self.shot == (None, None) else (
            f"the shot {self.shot[0] or 0:g}-{'end' if self.shot[1] is None else format(self.shot[1], 'g')} s of the file")
        return (f"scanned {what} ({self.duration:.2f} s, {self.info.describe()}): {len(self.times)} frames at "
                f"{1 / self.interval:.3g} fps, {w}x{h}; {self.decoded} frames decoded")


def _display_size(frame, long_side: int) -> tuple[int, int]:
    """(width, height) of ``frame`` as shown (its display rotation applied), fitted to ``long_side``."""
    shown = (frame.height, frame.width) if quarter_turns(frame) % 2 else (frame.width, frame.height)
    return fit_long_side(shown[0], shown[1], long_side)


def _small_rgb(frame, size: tuple[int, int]) -> np.ndarray:
    out = np.empty((size[1], size[0], 3), dtype=np.uint8)
    _convert(frame, size[0], size[1], "stretch", out)
    return out


def fit_long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the aspect ratio of width x height and the longer side at most ``long_side`` (even sizes)."""
    scale = min(1.0, long_side / max(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _shot_frames(container, stream, info: VideoInfo, counter: list, shot_start: Optional[float],
                 shot_end: Optional[float], tol: float) -> Iterator[_Decoded]:
    """Decoded frames of the shot [shot_start, shot_end) (None: the file's start / end): from the frame on
    screen at shot_start, stopping before the first frame at or after shot_end."""
    check_shot(shot_start, shot_end)
    if shot_start and info.duration is not None and shot_start >= info.duration:
        raise VideoFramesError(f"The shot starts at {shot_start:g} s, at or past the end of "
                               f"'{os.path.basename(info.path)}' ({info.describe()}): fix the library's times for "
                               f"this entry or pick another rank.")
    frames = _decode(container, stream, float(shot_start or 0.0), info.fps, counter)
    if shot_start:
        frames = _from_start(frames, float(shot_start), tol)
    if shot_end is not None:
        frames = _until(frames, float(shot_end), tol)
    return frames


def scan_clip(path: str, fps: float = 2.0, max_frames: int = SCAN_MAX_FRAMES, long_side: int = SCAN_LONG_SIDE,
              progress: Optional[Callable[[int, int], None]] = None, shot_start: Optional[float] = None,
              shot_end: Optional[float] = None) -> ClipScan:
    """The whole clip at a low rate, in bounded memory: frame k is the one on screen at t0 + k * interval,
    interval = 1 / fps; whenever more than ``max_frames`` are held, every second one is dropped and the
    interval doubles, so the clip's length need not be known and at most ``max_frames`` small frames (and
    one decoded source frame) are held at any time. ``shot_start`` / ``shot_end``: only that shot of the
    file is scanned (times then count from the shot's first frame; ``read_frames_at`` takes the same shot)."""
    import torch

    if not (math.isfinite(fps) and fps > 0):
        raise VideoFramesError(f"scan_fps must be above 0, got {fps}.")
    if int(max_frames) < 2:
        raise VideoFramesError(f"the scan needs at least 2 frames, got {max_frames}.")
    container, stream = _open(path)
    try:
        info = _sized_info(path, container, stream)
        stream.thread_type = "AUTO"
        counter = [0]
        interval = 1.0 / float(fps)
        frame_duration = 1.0 / info.fps if info.fps else 0.04
        tol = 1e-3 * frame_duration
        kept: list[tuple[float, np.ndarray]] = []   # (target time, converted frame)
        t0, last_time, size = None, None, None
        previous = None

        def take(target: float, item) -> None:
            nonlocal size
            if size is None:
                size = _display_size(item.frame, long_side)
            kept.append((target, _small_rgb(item.frame, size)))

        for item in _shot_frames(container, stream, info, counter, shot_start, shot_end, tol):
            if t0 is None:
                t0 = item.time
            # every target time before this frame shows the previous frame
            while previous is not None and t0 + len(kept) * interval < item.time - tol:
                take(t0 + len(kept) * interval, previous)
                if len(kept) > max_frames:
                    kept = kept[::2]
                    interval *= 2
            previous, last_time = item, item.time
            if progress is not None and counter[0] % 64 == 0:
                progress(counter[0], max(counter[0], info.frames or 0))
        if previous is None:
            if shot_start is not None or shot_end is not None:
                raise VideoFramesError(f"The shot {shot_start or 0:g}-{shot_end if shot_end is not None else 'end'} s "
                                       f"of '{os.path.basename(path)}' ({info.describe()}) holds no frames: fix the "
                                       f"library's times for this entry or pick another rank.")
            raise VideoFramesError(f"'{os.path.basename(path)}' gave no frames; the file may be empty or damaged.")
        end = last_time + frame_duration
        if shot_end is not None:
            end = min(end, float(shot_end))
        while t0 + len(kept) * interval < end - tol:
            take(t0 + len(kept) * interval, previous)
            if len(kept) > max_frames:
                kept = kept[::2]
                interval *= 2
    finally:
        container.close()
    frames = torch.from_numpy(np.stack([f for _, f in kept])).to(torch.float32).div_(255.0)
    return ClipScan(frames=frames, times=[round(t - t0, 6) for t, _ in kept], interval=interval, info=info,
                    decoded=counter[0], duration=round(end - t0, 6), shot=(shot_start, shot_end))


def read_frames_at(path: str, times: list[float], long_side: int = KEYFRAME_LONG_SIDE,
                   convert: Optional[Callable[[np.ndarray], "object"]] = None, shot_start: Optional[float] = None,
                   shot_end: Optional[float] = None) -> list:
    """The frames on screen at ``times`` (seconds from the first frame, ascending), upright, the aspect ratio
    kept, the longer side at most ``long_side``; ``convert`` (e.g. a crop) is applied to each uint8
    [h, w, 3] frame as it is decoded, so only its results are held. With ``shot_start`` / ``shot_end`` the
    times count from the shot's first frame and no frame past the shot's end is used (as ``scan_clip``)."""
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("times must be ascending")
    if not times:
        return []
    container, stream = _open(path)
    out = []
    try:
        info = _info(path, container, stream)
        stream.thread_type = "AUTO"
        frame_duration = 1.0 / info.fps if info.fps else 0.04
        tol = 1e-3 * frame_duration
        counter = [0]
        t0, previous, size = None, None, None

        def emit(item) -> None:
            nonlocal size
            if size is None:
                size = _display_size(item.frame, long_side)
            rgb = _small_rgb(item.frame, size)
            out.append(convert(rgb) if convert is not None else rgb)

        k = 0
        for item in _shot_frames(container, stream, info, counter, shot_start, shot_end, tol):
            if t0 is None:
                t0 = item.time
            while k < len(times) and previous is not None and t0 + times[k] < item.time - tol:
                emit(previous)
                k += 1
            if k == len(times):
                break
            previous = item
        while k < len(times) and previous is not None:   # times at or past the last frame show the last one
            emit(previous)
            k += 1
    finally:
        container.close()
    return out
