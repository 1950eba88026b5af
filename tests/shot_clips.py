"""Videos made of the toy world's clips played one after the other: their joins are known shot cuts.

``concat_toy_clips(out, clip_paths)`` decodes each clip (8 frames at 8 fps, 128x128) and writes all frames
into one H.264 mp4 at the same rate, so clip k starts at exactly ``8 k / 8 = k`` seconds. Used by the cut
tests, the clip library tests (unit, in-process, end to end) and ``benchmarks/bench_clip_library.py``.
"""

from __future__ import annotations

import glob
import os
import random

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_VIDEOS = os.path.join(REPO, "sample_data", "toy_world", "videos")
TOY_FPS = 8


def toy_clip_paths(count: int, seed: int = 0) -> list[str]:
    """``count`` of the 288 toy-world clips in a seeded random order (repeats when count > 288)."""
    paths = sorted(glob.glob(os.path.join(TOY_VIDEOS, "*.mp4")))
    assert paths, f"no toy-world clips under {TOY_VIDEOS}"
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        batch = list(paths)
        rng.shuffle(batch)
        out.extend(batch)
    return out[:count]


def read_frames(path: str) -> list[np.ndarray]:
    import av

    with av.open(path) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def write_frames(out: str, frames, fps: int = TOY_FPS, crf: int = 18, size=None) -> str:
    """An H.264 mp4 of ``frames`` (uint8 [H, W, 3]); ``size`` (w, h) scales each frame (nearest)."""
    import av

    frames = list(frames)
    h, w = frames[0].shape[:2]
    if size is not None:
        w, h = size
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for i, frame in enumerate(frames):
            if size is not None and frame.shape[:2] != (h, w):
                ys = (np.arange(h) * frame.shape[0] // h)[:, None]
                xs = (np.arange(w) * frame.shape[1] // w)[None, :]
                frame = frame[ys, xs]
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    return str(out)


def concat_toy_clips(out: str, clip_paths, size=None) -> list[float]:
    """Writes the clips one after the other into ``out``; returns the join times in seconds."""
    frames, joins, t = [], [], 0.0
    for k, path in enumerate(clip_paths):
        clip = read_frames(path)
        if k:
            joins.append(round(t, 6))
        frames.extend(clip)
        t += len(clip) / TOY_FPS
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_frames(out, frames, size=size)
    return joins


def match_cuts(found: list[float], truth: list[float], tolerance: float = 0.5 / TOY_FPS) -> tuple[int, float, float]:
    """(true positives, precision, recall): each true join matched by at most one found cut within
    ``tolerance`` seconds."""
    unused = sorted(found)
    hits = 0
    for t in truth:
        best = next((c for c in unused if abs(c - t) <= tolerance), None)
        if best is not None:
            unused.remove(best)
            hits += 1
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth) if truth else 1.0
    return hits, precision, recall
