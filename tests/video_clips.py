"""Small H.264 clips written with PyAV whose frames say their own index, so frame selection is checked exactly.

Frame i is grey: its left half has level 8 * (i % 32) + 4 and its right half 8 * (i // 32) + 4 (up to 1024
frames); levels 8 apart survive lossy coding, chroma subsampling and scaling, so ``frame_index`` reads the
index back from any resized or cropped frame.
"""

from __future__ import annotations

import numpy as np


def frame_pixels(index: int, width: int, height: int) -> np.ndarray:
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:, : width // 2] = 8 * (index % 32) + 4
    img[:, width // 2:] = 8 * (index // 32) + 4
    return img


def write_clip(path, frames: int, fps: int = 10, width: int = 64, height: int = 48, gop: int = 12,
               audio: bool = False, pixels=frame_pixels) -> str:
    """An mp4 of ``frames`` frames at ``fps`` (B-frames on, a keyframe every ``gop`` frames); frame i shows
    ``pixels(i, width, height)`` (uint8 [height, width, 3])."""
    import av

    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12", "g": str(gop), "keyint_min": str(gop), "bf": "2", "preset": "veryfast"}
        tone = _add_tone(out) if audio else None   # every stream exists before the first packet
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pixels(i, width, height), format="rgb24")
            frame.pts = i   # in the encoder's time base, 1/fps
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if tone is not None:
            _write_tone(out, tone, seconds=frames / fps)
    return str(path)


def _add_tone(out, rate: int = 16000):
    stream = out.add_stream("aac", rate=rate)
    stream.layout = "mono"
    return stream


def _write_tone(out, stream, seconds: float) -> None:
    import av

    rate = stream.rate
    samples = int(seconds * rate)
    chunk = 1024
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        data = (0.2 * np.sin(2 * np.pi * 440 * t))[None, :].astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_audio_only(path, seconds: float = 1.0) -> str:
    """An m4a-style mp4 with one AAC stream and no video."""
    import av

    with av.open(str(path), mode="w", format="mp4") as out:
        _write_tone(out, _add_tone(out), seconds)
    return str(path)


def frame_index(image: np.ndarray) -> int:
    """The index a frame of ``write_clip`` encodes; ``image`` is [H, W, 3] in 0..1 or 0..255."""
    img = np.asarray(image, dtype=np.float64)
    if img.max() <= 1.0 + 1e-6:
        img = img * 255.0
    h, w = img.shape[:2]
    left = img[h // 4: 3 * h // 4, w // 8: 3 * w // 8].mean()
    right = img[h // 4: 3 * h // 4, 5 * w // 8: 7 * w // 8].mean()
    low, high = round((left - 4) / 8), round((right - 4) / 8)
    assert abs(left - (8 * low + 4)) < 3 and abs(right - (8 * high + 4)) < 3, (left, right)
    return high * 32 + low
