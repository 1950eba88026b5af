"""The toy world's probe: which colour and shape a video shows, and which motion (DESIGN.md, "The toy world").

Reads any video of the world (ground-truth renders, decoded mp4s, or samples of a model trained on it) and
answers with a ``ProbeResult``: ``colour`` (one of ``toy_world.COLOURS``), ``shape`` (one of ``SHAPES``) and
``motion`` (one of ``MOTIONS``, ``"static"`` when the object does not move, ``"none"`` when no object is
found), plus the features the answers come from.

How it reads a clip (all frames are used):

1. *Object mask.* Backgrounds are grey and objects saturated, so the saturation ``max(RGB) - min(RGB)`` of
   a pixel is the object's cover times its colour's saturation (a grey background adds the same to every
   channel). The object's saturation level is the clip's median over frames of the mean of each frame's
   brightest pixels; ``cover = saturation / level`` clipped to 0..1. The mask of a frame is the connected
   component of ``cover > 0.5`` that holds the frame's densest patch of cover (so faint spurious saturated
   pixels and specks elsewhere are ignored), grown by two pixels to keep the soft edge, times the cover.
2. *Colour.* The hue of the cover-weighted mean colour of confident object pixels (hue does not change
   when grey is blended in, so soft edges and blur do not shift it), nearest palette hue.
3. *Shape.* The soft masks of the clip's three largest frames are compared with a circle, an axis-aligned square and an upward
   triangle of the same area at the same centroid, with the world's soft edge, sharp and Gaussian-blurred
   (blurry samples round a square's corners); the shape with the least summed absolute difference (at its
   best blur) wins. The bounding-box fill ratio (circle ~0.79,
   square ~1, triangle ~0.5) is reported as a feature.
4. *Motion.* From the centroid track and the mask area per frame: ``growing`` when the fitted area grows
   by ``GROW_AREA_RATIO`` or more over the clip; ``circling`` when the path is long but its fitted net
   displacement is a small part of it (``straightness``); ``static`` when the fitted displacement is
   tiny; else the nearest of the six linear directions to the displacement's angle.

Pure torch + numpy; no ComfyUI import, no relative import (scripts and benchmarks load it by path).
``read_video_file`` decodes an mp4 with PyAV for it.
"""

from __future__ import annotations

import colorsys
import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Kept in step with toy_world.py (a test checks they agree); duplicated so this module stands alone.
SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (0.95, 0.12, 0.10),
    "green": (0.12, 0.85, 0.15),
    "blue": (0.15, 0.30, 1.00),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.70, 0.15, 0.95),
    "cyan": (0.10, 0.90, 0.95),
}
LINEAR_ANGLES = {  # degrees, counter-clockwise from +x with y pointing up (image y is flipped)
    "right": 0.0, "up_right": 45.0, "up": 90.0, "left": 180.0, "down_left": 225.0, "down": 270.0,
}
MOTIONS = tuple(LINEAR_ANGLES) + ("circling", "growing")
OTHER_MOTIONS = ("static", "none")

MIN_SATURATION = 0.15      # below this the clip holds no saturated object: motion "none"
MIN_AREA_PX = 6.0          # a frame whose mask is smaller than this has no object
GROW_AREA_RATIO = 2.0      # fitted area of the last frame / the first (the world's growing: 4.8-6.8)
CIRCLE_STRAIGHTNESS = 0.6  # net displacement / path length below this (and a long path) reads as circling
CIRCLE_MIN_PATH = 0.2      # ... path length at least this share of the frame side
STATIC_SHIFT = 0.08        # fitted net displacement under this share of the frame side reads as static
EDGE_SHARPNESS = 2.5       # the world's soft edge: cover = sigmoid(-signed distance * 2.5)
TEMPLATE_BLUR = (0.0, 1.0, 1.7)    # templates are also matched Gaussian-blurred by these sigmas (pixels), for
                                   # blurry videos (a model's samples); each shape's best blur counts
COARSE = True
SHAPE_FRAMES = 3           # the shape is matched on each clip's frames with the largest masks

_PALETTE_HUES = {name: colorsys.rgb_to_hsv(*rgb)[0] * 360.0 for name, rgb in COLOURS.items()}


@dataclass
class ProbeResult:
    colour: str                      # a COLOURS name, or "none"
    shape: str                       # a SHAPES name, or "none"
    motion: str                      # a MOTIONS name, "static" or "none"
    track: list = field(default_factory=list)       # (x, y) centroid per frame, pixels; None where no object
    sizes: list = field(default_factory=list)       # mask area per frame, pixels (0 where no object)
    angle: Optional[float] = None    # net displacement angle, degrees counter-clockwise from +x (y up)
    displacement: float = 0.0        # fitted net displacement over the clip, pixels
    path_length: float = 0.0         # summed centroid steps, pixels
    straightness: float = 0.0        # displacement / path_length
    area_ratio: float = 1.0          # fitted area last frame / first frame
    fill_ratio: float = 0.0          # mask area / bounding-box area (median over frames)
    hue: Optional[float] = None      # degrees
    mean_rgb: Optional[tuple] = None
    saturation: float = 0.0          # the object's saturation level
    shape_scores: dict = field(default_factory=dict)   # mean |mask - template| per pixel of the object, lower wins
    confidence: dict = field(default_factory=dict)     # colour / shape / motion margins, 0..1
    frames_with_object: int = 0

    @property
    def label(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.motion)


# --------------------------------------------------------------------------------------------- input
def _as_batch(videos) -> torch.Tensor:
    """[B, T, H, W, 3] float32 0..1 from a tensor / array of that layout, or [T, H, W, 3]; uint8 is scaled."""
    if isinstance(videos, np.ndarray):
        arr = videos
        t = torch.from_numpy(np.ascontiguousarray(arr))
    elif isinstance(videos, torch.Tensor):
        t = videos.detach().cpu()
    else:
        raise TypeError(f"probe wants a tensor or an array [T, H, W, 3], got {type(videos).__name__}")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    else:
        t = t.float()
    if t.dim() == 4:
        t = t[None]
    if t.dim() != 5 or t.shape[-1] < 3:
        raise ValueError(f"probe wants frames [T, H, W, 3] (or a batch [B, T, H, W, 3]), got {tuple(t.shape)}")
    return t[..., :3].clamp(0, 1)


# ------------------------------------------------------------------------------------- object masks
def _dilate(x: torch.Tensor) -> torch.Tensor:
    """[N, H, W] bool grown by one pixel in the 8-neighbourhood (shifted ORs: cheaper than a max-pool)."""
    y = x.clone()
    y[:, 1:] |= x[:, :-1]
    y[:, :-1] |= x[:, 1:]
    z = y.clone()
    z[:, :, 1:] |= y[:, :, :-1]
    z[:, :, :-1] |= y[:, :, 1:]
    return z


def _main_component(mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """[N, H, W] bool: per frame, the 8-connected component of ``mask`` holding the densest 5x5 patch of weight.

    Frames of 32 pixels or more are labelled at half resolution (a coarse cell is in the mask when any of its
    four pixels is; 8x less work), and the coarse component is cut back to the fine mask."""
    n, h, w = mask.shape
    if COARSE and h >= 32 and w >= 32 and h % 2 == 0 and w % 2 == 0:
        coarse = F.max_pool2d(mask.float()[:, None], 2)[:, 0] > 0
        cw = F.avg_pool2d(weight[:, None], 2)[:, 0]
        region = _main_component(coarse, cw)
        return region.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2) & mask
    dense = F.avg_pool2d(weight[:, None], 5, stride=1, padding=2, count_include_pad=False)[:, 0] * mask
    seed_idx = dense.reshape(n, -1).argmax(dim=1)
    region = torch.zeros(n, h * w, dtype=torch.bool)
    region[torch.arange(n), seed_idx] = True
    region = region.reshape(n, h, w) & mask
    active = torch.arange(n)
    cur, sub = region, mask
    for it in range(h + w + 2):
        grown = _dilate(cur) & sub
        if it % 2 == 1:
            changed = (grown != cur).flatten(1).any(dim=1)
            region[active] = grown
            active = active[changed]
            if active.numel() == 0:
                break
            cur, sub = region[active], mask[active]
        else:
            cur = grown
    return region


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """[N, H, W] blurred by a separable Gaussian (zero outside the frame)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma * sigma))
    k = k / k.sum()
    y = F.conv2d(x[:, None], k.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(y, k.view(1, 1, -1, 1), padding=(r, 0))[:, 0]


def _templates(shape: str, cx: torch.Tensor, cy: torch.Tensor, area: torch.Tensor, h: int, w: int,
               sharpness: float = EDGE_SHARPNESS) -> torch.Tensor:
    """[N, H, W] soft cover of ``shape`` with ``area`` centred (centroid) at (cx, cy): sigmoid(-distance * sharpness)."""
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    px = xs[None, None, :] - cx[:, None, None]
    py = ys[None, :, None] - cy[:, None, None]
    area = area.clamp(min=1.0)[:, None, None]
    if shape == "circle":
        r = torch.sqrt(area / math.pi)
        d = torch.sqrt(px * px + py * py) - r
    elif shape == "square":
        half = torch.sqrt(area) / 2
        d = torch.maximum(px.abs(), py.abs()) - half
    else:  # equilateral, pointing up; area = 3 sqrt(3) * inradius^2
        inr = torch.sqrt(area / (3 * math.sqrt(3)))
        d = None
        for angle in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
            e = px * math.cos(angle) + py * math.sin(angle) - inr
            d = e if d is None else torch.maximum(d, e)
    return torch.sigmoid(-d * sharpness)


def _frame_features(video: torch.Tensor) -> dict:
    """Per-frame features of a batch [B, T, H, W, 3]: everything vectorised over B*T frames."""
    b, t, h, w, _ = video.shape
    frames = video.reshape(b * t, h, w, 3)
    sat = frames.max(dim=-1).values - frames.min(dim=-1).values                    # [N, H, W]
    k = max(4, min(16, (h * w) // 256))
    top = sat.reshape(b * t, -1).topk(k, dim=1).values.mean(dim=1).reshape(b, t)
    level = top.median(dim=1).values                                                 # [B]
    lvl = level.clamp(min=1e-3).repeat_interleave(t)[:, None, None]
    cover = (sat / lvl).clamp(0, 1)
    core = _main_component(cover > 0.5, cover)
    keep = F.max_pool2d(core.float()[:, None], 5, stride=1, padding=2)[:, 0]        # grown by two pixels
    soft = cover * keep
    area = soft.sum(dim=(1, 2))
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    safe = area.clamp(min=1e-6)
    cx = (soft.sum(dim=1) * xs).sum(dim=1) / safe
    cy = (soft.sum(dim=2) * ys).sum(dim=1) / safe
    # bounding-box fill ratio of the binary core
    rows_any, cols_any = core.any(dim=2), core.any(dim=1)
    height = rows_any.sum(dim=1).float()
    width = cols_any.sum(dim=1).float()
    fill = core.flatten(1).sum(dim=1).float() / (height * width).clamp(min=1)
    # shape, on each clip's SHAPE_FRAMES largest masks: |soft - template| summed per frame, for each shape
    # and edge sharpness: [B, k, shapes, sharpness]
    kf = min(SHAPE_FRAMES, t)
    pick = area.reshape(b, t).topk(kf, dim=1).indices                                 # [B, k]
    flat = (pick + torch.arange(b)[:, None] * t).reshape(-1)
    ps, pcx, pcy, pa = soft[flat], cx[flat], cy[flat], area[flat]
    scores = torch.stack([torch.stack([(ps - _gaussian_blur(base, sg)).abs().sum(dim=(1, 2)) for sg in TEMPLATE_BLUR], dim=1)
                          for base in (_templates(s, pcx, pcy, pa, h, w) for s in SHAPES)], dim=1)
    # colour: cover-weighted mean RGB of confident pixels
    wgt = (soft * (cover > 0.6)).reshape(b * t, h * w, 1)
    rgb_sum = (frames.reshape(b * t, h * w, 3) * wgt).sum(dim=1)
    return {
        "level": level, "area": area.reshape(b, t), "cx": cx.reshape(b, t), "cy": cy.reshape(b, t),
        "fill": fill.reshape(b, t), "scores": scores.reshape(b, kf, len(SHAPES), len(TEMPLATE_BLUR)), "shape_frames": pick,
        "rgb_sum": rgb_sum.reshape(b, t, 3), "rgb_w": wgt.sum(dim=(1, 2)).reshape(b, t),
    }


# ------------------------------------------------------------------------------------------ decisions
def nearest_colour(rgb: Sequence[float]) -> tuple[str, float, float]:
    """(palette name, hue in degrees, margin 0..1) of an RGB colour by hue."""
    hue = colorsys.rgb_to_hsv(*[float(v) for v in rgb])[0] * 360.0
    dists = sorted((min(abs(hue - ph), 360 - abs(hue - ph)), name) for name, ph in _PALETTE_HUES.items())
    (d0, name), (d1, _) = dists[0], dists[1]
    return name, hue, float((d1 - d0) / max(d1 + d0, 1e-6))


def nearest_direction(angle: float) -> tuple[str, float]:
    """(linear motion, margin 0..1) nearest to ``angle`` degrees (counter-clockwise from +x, y up)."""
    dists = sorted((abs((angle - a + 180.0) % 360.0 - 180.0), name) for name, a in LINEAR_ANGLES.items())
    (d0, name), (d1, _) = dists[0], dists[1]
    return name, float((d1 - d0) / max(d1 + d0, 1e-6))


def _fit(ts: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Least-squares line: (value at the first time, value at the last time)."""
    if len(ts) < 2:
        return float(values[0]), float(values[0])
    slope, icpt = np.polyfit(ts, values, 1)
    return float(icpt + slope * ts[0]), float(icpt + slope * ts[-1])


def _decide(feat: dict, i: int, h: int, w: int) -> ProbeResult:
    level = float(feat["level"][i])
    area = feat["area"][i].numpy().astype(np.float64)
    cx, cy = feat["cx"][i].numpy().astype(np.float64), feat["cy"][i].numpy().astype(np.float64)
    t = len(area)
    valid = area >= MIN_AREA_PX if level >= MIN_SATURATION else np.zeros(t, dtype=bool)
    res = ProbeResult(colour="none", shape="none", motion="none", saturation=level,
                      track=[(float(x), float(y)) if v else None for x, y, v in zip(cx, cy, valid)],
                      sizes=[float(a) if v else 0.0 for a, v in zip(area, valid)],
                      frames_with_object=int(valid.sum()))
    if not valid.any():
        res.confidence = {"colour": 0.0, "shape": 0.0, "motion": 0.0}
        return res
    # colour
    rgb_w = feat["rgb_w"][i].numpy()[valid].sum()
    if rgb_w > 0:
        rgb = feat["rgb_sum"][i].numpy()[valid].sum(axis=0) / rgb_w
        res.mean_rgb = tuple(float(v) for v in rgb)
        res.colour, res.hue, c_conf = nearest_colour(rgb)
    else:
        c_conf = 0.0
    # shape
    used = valid[feat["shape_frames"][i].numpy()]
    if not used.any():
        used[:] = True
    scores = feat["scores"][i].numpy()[used].sum(axis=0).min(axis=1)
    scores = scores / max(float(area[feat["shape_frames"][i].numpy()[used]].sum()), 1e-6)
    res.shape_scores = {s: float(v) for s, v in zip(SHAPES, scores)}
    order = np.argsort(scores)
    res.shape = SHAPES[int(order[0])]
    s_conf = float((scores[order[1]] - scores[order[0]]) / max(scores[order[1]], 1e-6))
    res.fill_ratio = float(np.median(feat["fill"][i].numpy()[valid]))
    # motion
    ts = np.nonzero(valid)[0].astype(np.float64)
    xs, ys, areas = cx[valid], cy[valid], area[valid]
    side = float(min(h, w))
    a0, a1 = _fit(ts, np.log(areas))
    res.area_ratio = float(math.exp(a1 - a0))
    x0, x1 = _fit(ts, xs)
    y0, y1 = _fit(ts, ys)
    dx, dy = x1 - x0, y1 - y0
    res.displacement = float(math.hypot(dx, dy))
    res.path_length = float(np.hypot(np.diff(xs), np.diff(ys)).sum()) if len(xs) > 1 else 0.0
    res.straightness = res.displacement / res.path_length if res.path_length > 1e-6 else 1.0
    res.angle = float(math.degrees(math.atan2(-dy, dx)) % 360.0)
    if len(ts) < 2:
        res.motion, m_conf = "static", 0.0
    elif res.area_ratio >= GROW_AREA_RATIO:
        res.motion = "growing"
        m_conf = min(1.0, math.log(res.area_ratio / GROW_AREA_RATIO) / math.log(2.0))
    elif res.path_length >= CIRCLE_MIN_PATH * side and res.straightness < CIRCLE_STRAIGHTNESS:
        res.motion = "circling"
        m_conf = min(1.0, (CIRCLE_STRAIGHTNESS - res.straightness) / CIRCLE_STRAIGHTNESS * 2)
    elif res.displacement < STATIC_SHIFT * side:
        res.motion = "static"
        m_conf = 1.0 - res.displacement / (STATIC_SHIFT * side)
    else:
        res.motion, m_conf = nearest_direction(res.angle)
    res.confidence = {"colour": round(c_conf, 4), "shape": round(s_conf, 4), "motion": round(float(m_conf), 4)}
    return res


# ----------------------------------------------------------------------------------------------- API
@contextlib.contextmanager
def torch_threads(count: Optional[int]):
    """Run the block with ``count`` torch intra-op threads (None: as set), then restore the setting.

    The probe's work is many small tensor ops: on a shared CPU one thread is several times faster than two
    that wait for each other (measured on 2 busy cores: 1,000 clips in ~4 s on one thread, ~35 s on two)."""
    before = torch.get_num_threads()
    if count is not None and count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@torch.no_grad()
def probe_batch(videos, chunk: int = 64, threads: Optional[int] = 1) -> list[ProbeResult]:
    """Probe many clips: a tensor / array [B, T, H, W, 3] (float 0..1 or uint8) or a list of [T, H, W, 3].

    ``threads``: torch threads while probing (see ``torch_threads``); None keeps the process's setting."""
    if isinstance(videos, (list, tuple)):
        out: list[ProbeResult] = []
        for v in videos:
            out.extend(probe_batch(_as_batch(v), chunk, threads))
        return out
    batch = _as_batch(videos)
    results = []
    with torch_threads(threads):
        for start in range(0, batch.shape[0], chunk):
            part = batch[start:start + chunk]
            feat = _frame_features(part)
            results.extend(_decide(feat, i, part.shape[2], part.shape[3]) for i in range(part.shape[0]))
    return results


def probe(video) -> ProbeResult:
    """Probe one clip: [T, H, W, 3] float 0..1 (ComfyUI IMAGE layout) or uint8; a path reads the mp4."""
    if isinstance(video, str) or hasattr(video, "__fspath__"):
        video = read_video_file(video)
    return probe_batch(_as_batch(video))[0]


def read_video_file(path, size=None, max_frames: int = 4096) -> np.ndarray:
    """All frames of a video file as uint8 [T, H, W, 3] RGB (PyAV, libswscale's conversion).

    ``size`` (an int or (height, width)) resizes them: area averaging for whole-number factors (the toy
    world's mp4s are its 64x64 frames upscaled 2x, so ``size=64`` gives the world's frames back), else
    antialiased bilinear."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - the pack's requirements have av
        raise ImportError("reading videos for the probe needs PyAV (pip install av)") from exc
    frames = []
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"no video frames in {os.fspath(path)}")
    video = np.stack(frames)
    if size is None:
        return video
    th, tw_ = (size, size) if isinstance(size, int) else tuple(size)
    h, w = video.shape[1:3]
    if (h, w) == (th, tw_):
        return video
    x = torch.from_numpy(video).permute(0, 3, 1, 2).float()
    if h % th == 0 and w % tw_ == 0:
        x = F.avg_pool2d(x, (h // th, w // tw_))
    else:
        x = F.interpolate(x, size=(th, tw_), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def accuracy(results: Sequence[ProbeResult], specs) -> dict:
    """Share of colour / shape / motion answers that match specs (objects with .colour .shape .motion)."""
    n = max(len(specs), 1)
    return {k: sum(getattr(r, k) == getattr(s, k) for r, s in zip(results, specs)) / n
            for k in ("colour", "shape", "motion")}
