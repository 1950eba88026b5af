"""KeyframeExtractor, video side (Search-T2V Sec. 4.3): critical segment, key region, crops and a preview.

Input: per-frame detections of the detection captions (the targets) on sampled frames of the reference
clip. Output: a ``KeyframePlan`` (segment, region, keyframe indices, warnings), the cropped keyframes and
a preview image. Pure torch / numpy; the detector itself is ``distill.grounding``.

Rules (the paper says "the most critical time segments and the key image regions"; these make it exact):

- **Targets.** ``keep_together`` on: every caption is a target (actor and recipient stay in one region,
  so the hand that throws the ball is kept with the ball: the paper's failure case A). Off: only the
  *primary* caption, the one with the highest total confidence over the clip (ties: the earlier caption,
  actors come first), which is what a detector that follows one object gives.
- **Frame score.** s_t = sum over targets of the best score of that target in frame t (0 when absent).
  A sampled frame is *active* when s_t > 0.
- **Gaps.** Active frames separated by at most ``max_gap`` inactive sampled frames belong to one run
  (detectors flicker for a frame or two); the bridged frames add 0. A run starts and ends on an active
  frame. Because every s_t >= 0, the contiguous run with the highest total confidence is always one of
  these maximal runs.
- **Ties.** Runs whose totals differ by less than 1e-6 (relative) tie; the longer run (in frames) wins,
  then the earlier one.
- **Keyframes.** n frame indices spread evenly over the segment, rounded half up. A segment of fewer
  than n frames is widened symmetrically to n frames (clamped to the clip, with a warning); a clip of
  fewer than n frames is an error.
- **Region.** The union of all target boxes in the segment's frames, grown by ``margin`` of its size on
  each side, then grown along the short side to the output aspect ratio (width / height). A region larger
  than the frame at that aspect is shrunk to the largest one that fits, centred on the targets (warning:
  parts of the targets are cut). It is then shifted inside the frame. If its area exceeds
  ``full_frame_above`` of the frame's area, the full frame is taken (the largest centred rectangle at the
  output aspect): whole-frame dynamics such as a sunset (the paper's failure case B). 1.0 never does.
- **Nothing detected.** n evenly spaced full frames over the whole clip, with a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import SearchPriorsError

TIE_TOLERANCE = 1e-6
DEFAULT_MARGIN = 0.1
DEFAULT_MAX_GAP = 1
DEFAULT_FULL_FRAME_ABOVE = 0.7


@dataclass
class FrameDetections:
    """Detections on one frame: boxes (k, 4) x0, y0, x1, y1 in pixels, scores (k,), labels (k,) caption
    indices."""

    frame: int
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls, frame: int) -> "FrameDetections":
        return cls(frame, np.zeros((0, 4), np.float64), np.zeros(0, np.float64), np.zeros(0, np.int64))

    @classmethod
    def of(cls, frame: int, boxes, scores, labels) -> "FrameDetections":
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError("boxes, scores and labels must have one row per detection")
        return cls(int(frame), boxes, scores, labels)

    def best_score(self, label: int) -> float:
        chosen = self.scores[self.labels == label]
        return float(chosen.max()) if len(chosen) else 0.0


@dataclass
class KeyframePlan:
    """Where the keyframes come from: frames, region and why."""

    num_frames: int
    frame_size: tuple[int, int]                 # (height, width) of the source frames
    keyframe_indices: list[int]
    region: tuple[int, int, int, int]           # x0, y0, x1, y1 in pixels, end exclusive
    segment: Optional[tuple[int, int]]          # first and last frame of the critical segment
    targets: list[int]                          # caption indices that shaped segment and region
    captions: list[str]
    frame_scores: dict[int, float] = field(default_factory=dict)   # sampled frame -> s_t
    segment_total: float = 0.0
    full_frame: bool = False
    targets_box: Optional[tuple[float, float, float, float]] = None  # union of target boxes, before margin
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        x0, y0, x1, y1 = self.region
        h, w = self.frame_size
        lines = []
        if self.segment is None:
            lines.append(f"segment: none (nothing detected); keyframes spread over all {self.num_frames} frames")
        else:
            lines.append(f"segment: frames {self.segment[0]}-{self.segment[1]} of {self.num_frames} "
                         f"(total confidence {self.segment_total:.3f})")
        lines.append("keyframes: frames " + ", ".join(map(str, self.keyframe_indices)))
        kind = "full frame" if self.full_frame else "key region"
        lines.append(f"region: x {x0}-{x1}, y {y0}-{y1} ({x1 - x0}x{y1 - y0} of {w}x{h}, {kind})")
        lines.append("captions: " + (" . ".join(self.captions) + " ." if self.captions else "(none)"))
        if self.targets:
            lines.append("targets: " + ", ".join(self.captions[i] for i in self.targets))
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ segment

def target_totals(detections: Sequence[FrameDetections], num_captions: int) -> np.ndarray:
    """Total confidence of each caption over the clip (sum over frames of its best score)."""
    totals = np.zeros(num_captions, dtype=np.float64)
    for det in detections:
        for label in range(num_captions):
            totals[label] += det.best_score(label)
    return totals


def choose_targets(detections: Sequence[FrameDetections], num_captions: int, keep_together: bool) -> list[int]:
    """Every caption (keep_together) or the primary one: highest total confidence, earliest on ties."""
    if num_captions == 0:
        return []
    if keep_together:
        return list(range(num_captions))
    totals = target_totals(detections, num_captions)
    best = totals.max()
    if best <= 0:
        return []
    return [int(np.flatnonzero(totals >= best - TIE_TOLERANCE * max(1.0, best))[0])]


def frame_scores(detections: Sequence[FrameDetections], targets: Sequence[int]) -> list[float]:
    """s_t for each sampled frame, in the order given."""
    return [sum(det.best_score(t) for t in targets) for det in detections]


def critical_segment(frames: Sequence[int], scores: Sequence[float],
                     max_gap: int = DEFAULT_MAX_GAP) -> Optional[tuple[int, int, float]]:
    """(first frame, last frame, total) of the best run over sampled ``frames`` (ascending) with scores
    ``scores``; None when no frame is active. See the module docstring for the gap and tie rules."""
    if len(frames) != len(scores):
        raise ValueError("one score per sampled frame")
    if any(b <= a for a, b in zip(frames, frames[1:])):
        raise ValueError("sampled frames must be strictly ascending")
    runs: list[tuple[int, int, float]] = []   # (first sample, last sample, total)
    start = last = None
    total = 0.0
    for i, s in enumerate(scores):
        if s <= 0:
            continue
        if start is not None and i - last - 1 <= max_gap:
            last, total = i, total + s
            continue
        if start is not None:
            runs.append((start, last, total))
        start, last, total = i, i, float(s)
    if start is not None:
        runs.append((start, last, total))
    if not runs:
        return None
    best = max(r[2] for r in runs)
    tied = [r for r in runs if r[2] >= best - TIE_TOLERANCE * max(1.0, best)]
    # longer (in frames) first, then earlier: max over (length, -first)
    first, last_, total = max(tied, key=lambda r: (frames[r[1]] - frames[r[0]], -frames[r[0]]))
    return frames[first], frames[last_], total


def spread_indices(first: int, last: int, n: int) -> list[int]:
    """n indices spread evenly over [first, last], rounded half up (distinct when last - first >= n - 1)."""
    if n == 1:
        return [int(math.floor((first + last) / 2 + 0.5))]
    return [int(math.floor(first + (last - first) * k / (n - 1) + 0.5)) for k in range(n)]


def widen_segment(first: int, last: int, n: int, num_frames: int) -> tuple[int, int]:
    """[first, last] grown symmetrically (extra frame after) to at least n frames, kept inside the clip."""
    length = last - first + 1
    if length >= n:
        return first, last
    missing = n - length
    first -= missing // 2
    last += missing - missing // 2
    if first < 0:
        last, first = last - first, 0
    if last > num_frames - 1:
        first, last = max(0, first - (last - num_frames + 1)), num_frames - 1
    return first, last


# ------------------------------------------------------------------------------------------------- region

def aspect_rectangle(box: tuple[float, float, float, float], aspect: float, frame_w: int,
                     frame_h: int) -> tuple[tuple[int, int, int, int], bool]:
    """The smallest rectangle at ``aspect`` (w / h) around ``box``, shrunk to fit the frame if needed, then
    shifted inside it. Returns ((x0, y0, x1, y1) integer pixels, end exclusive; whether it was shrunk)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    if w / h < aspect:
        w = h * aspect
    else:
        h = w / aspect
    shrunk = False
    fit = min(frame_w / w, frame_h / h)
    if fit < 1.0:
        w, h, shrunk = w * fit, h * fit, True
    wi = min(frame_w, max(1, int(math.floor(w + 0.5))))
    hi = min(frame_h, max(1, int(math.floor(h + 0.5))))
    left = int(math.floor(cx - wi / 2 + 0.5))
    top = int(math.floor(cy - hi / 2 + 0.5))
    left = min(max(left, 0), frame_w - wi)
    top = min(max(top, 0), frame_h - hi)
    return (left, top, left + wi, top + hi), shrunk


def full_frame_rectangle(aspect: float, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """The largest centred rectangle of the frame at ``aspect`` (the whole frame when aspects agree)."""
    rect, _ = aspect_rectangle((0.0, 0.0, float(frame_w), float(frame_h)), aspect, frame_w, frame_h)
    return rect


def union_box(detections: Sequence[FrameDetections], targets: Sequence[int], first: int,
              last: int) -> Optional[tuple[float, float, float, float]]:
    boxes = [det.boxes[np.isin(det.labels, list(targets))] for det in detections if first <= det.frame <= last]
    boxes = [b for b in boxes if len(b)]
    if not boxes:
        return None
    stacked = np.concatenate(boxes, axis=0)
    return (float(stacked[:, 0].min()), float(stacked[:, 1].min()), float(stacked[:, 2].max()),
            float(stacked[:, 3].max()))


def grow(box: tuple[float, float, float, float], margin: float, frame_w: int,
         frame_h: int) -> tuple[float, float, float, float]:
    """``box`` (clipped to the frame) grown by ``margin`` of its width / height on each side."""
    x0, y0, x1, y1 = max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(frame_w)), min(box[3], float(frame_h))
    if x1 <= x0 or y1 <= y0:   # a box wholly outside the frame: keep its clipped edge as a thin box
        x1, y1 = max(x1, x0 + 1e-6), max(y1, y0 + 1e-6)
    mw, mh = margin * (x1 - x0), margin * (y1 - y0)
    return x0 - mw, y0 - mh, x1 + mw, y1 + mh


# --------------------------------------------------------------------------------------------------- plan

def check_plan_request(num_frames: int, n: int, out_w: int, out_h: int, full_frame_above: float,
                       margin: float = DEFAULT_MARGIN) -> None:
    if n < 1:
        raise SearchPriorsError(f"keyframes must be at least 1, got {n}.")
    if out_w < 1 or out_h < 1:
        raise SearchPriorsError(f"width and height must be positive, got {out_w}x{out_h}.")
    if not 0.0 <= full_frame_above <= 1.0:
        raise SearchPriorsError(f"full_frame_above is a fraction of the frame's area and must lie in [0, 1], "
                                f"got {full_frame_above}.")
    if margin < 0:
        raise SearchPriorsError(f"margin must not be negative, got {margin}.")
    if num_frames < n:
        raise SearchPriorsError(f"The reference video gives {num_frames} frames but {n} keyframes are asked: "
                                f"lower keyframes to at most {num_frames}, or raise Reference Video Frames' "
                                f"frame_count.")


def plan_keyframes(detections: Sequence[FrameDetections], num_frames: int, frame_size: tuple[int, int], n: int,
                   out_size: tuple[int, int], captions: Sequence[str], keep_together: bool = True,
                   full_frame_above: float = DEFAULT_FULL_FRAME_ABOVE, margin: float = DEFAULT_MARGIN,
                   max_gap: int = DEFAULT_MAX_GAP) -> KeyframePlan:
    """Segment, region and keyframe indices from detections on sampled frames (``frame_size`` = (h, w),
    ``out_size`` = (w, h) of the keyframes)."""
    out_w, out_h = out_size
    frame_h, frame_w = frame_size
    check_plan_request(num_frames, n, out_w, out_h, full_frame_above, margin)
    detections = sorted(detections, key=lambda d: d.frame)
    if any(not 0 <= d.frame < num_frames for d in detections):
        raise ValueError("a detection's frame index lies outside the clip")
    aspect = out_w / out_h
    targets = choose_targets(detections, len(captions), keep_together)
    scores = frame_scores(detections, targets)
    found = critical_segment([d.frame for d in detections], scores, max_gap) if targets else None
    plan = KeyframePlan(num_frames=num_frames, frame_size=(frame_h, frame_w), keyframe_indices=[],
                        region=full_frame_rectangle(aspect, frame_w, frame_h), segment=None, targets=targets,
                        captions=list(captions), frame_scores={d.frame: s for d, s in zip(detections, scores)})
    if found is None:
        plan.targets = []
        plan.full_frame = True
        plan.keyframe_indices = spread_indices(0, num_frames - 1, n)
        what = ", ".join(f"'{c}'" for c in captions) or "no caption"
        plan.warnings.append(f"nothing detected ({what}) on {len(detections)} sampled frames: keyframes are "
                             f"{n} evenly spaced full frames. Lower box_threshold / text_threshold, or pick "
                             f"another retrieved entry (rank).")
        return plan
    first, last, total = found
    plan.segment, plan.segment_total = (first, last), total
    box = union_box(detections, targets, first, last)
    plan.targets_box = box
    lo, hi = widen_segment(first, last, n, num_frames)
    if (lo, hi) != (first, last):
        plan.warnings.append(f"the segment (frames {first}-{last}) is shorter than {n} keyframes: widened to "
                             f"frames {lo}-{hi}")
    plan.keyframe_indices = spread_indices(lo, hi, n)
    rect, shrunk = aspect_rectangle(grow(box, margin, frame_w, frame_h), aspect, frame_w, frame_h)
    area = (rect[2] - rect[0]) * (rect[3] - rect[1])
    if area > full_frame_above * frame_w * frame_h:
        plan.full_frame = True
        plan.warnings.append(f"the key region covers {area / (frame_w * frame_h):.0%} of the frame (more than "
                             f"full_frame_above {full_frame_above:g}): the full frame is used")
    else:
        plan.region = rect
        if shrunk:
            plan.warnings.append(f"the targets span more than the frame holds at the output aspect ratio "
                                 f"{out_w}x{out_h}: parts of them are cut; lower full_frame_above to take the full "
                                 f"frame instead")
    return plan


# ------------------------------------------------------------------------------------ whole-clip segment

@dataclass
class ClipKeyframes:
    """Where the keyframes come from when the segment is searched over the whole clip: ``plan`` is over the
    scanned frames (its segment, region in scanned-frame pixels, warnings); ``times`` are the keyframes'
    seconds in the clip, spread over the segment's time span ``span``."""

    plan: KeyframePlan
    times: list[float]
    span: tuple[float, float]
    scan_times: list[float]

    def describe(self) -> str:
        lines = self.plan.describe().splitlines()
        # the plan's frame numbers are scanned frames; say what they are in time
        if self.plan.segment is not None:
            a, b = self.plan.segment
            lines[0] = (f"segment: scanned frames {a}-{b} of {self.plan.num_frames} = {self.span[0]:.2f}-"
                        f"{self.span[1]:.2f} s of the clip (total confidence {self.plan.segment_total:.3f})")
        else:
            lines[0] = (f"segment: none (nothing detected on {self.plan.num_frames} scanned frames); keyframes "
                        f"spread over the whole clip, {self.span[0]:.2f}-{self.span[1]:.2f} s")
        lines[1] = "keyframes at seconds: " + ", ".join(f"{t:.2f}" for t in self.times)
        return "\n".join(lines)


def plan_clip_keyframes(detections: Sequence[FrameDetections], scan_times: Sequence[float],
                        scan_size: tuple[int, int], n: int, out_size: tuple[int, int], captions: Sequence[str],
                        clip_duration: float, frame_duration: float, keep_together: bool = True,
                        full_frame_above: float = DEFAULT_FULL_FRAME_ABOVE, margin: float = DEFAULT_MARGIN,
                        max_gap: int = DEFAULT_MAX_GAP) -> ClipKeyframes:
    """The critical segment over a whole clip scanned at a low rate, and n keyframe times inside it.

    Detections are on scanned frames (indices into ``scan_times``, seconds). The segment and region follow
    ``plan_keyframes`` (same targets, frame score, gap and tie rules) over the scanned frames. Its time span
    runs from the first to the last active scanned frame; a span shorter than n source frames
    (``frame_duration`` each) is widened symmetrically to that, kept inside the clip. The n keyframes are
    spread evenly over the span. Nothing detected: n times spread over the whole clip, full frames."""
    if n < 1:
        raise SearchPriorsError(f"keyframes must be at least 1, got {n}.")
    if not scan_times:
        raise SearchPriorsError("the scan of the clip gave no frames.")
    plan = plan_keyframes(detections, len(scan_times), scan_size, 1, out_size, captions,
                          keep_together=keep_together, full_frame_above=full_frame_above, margin=margin,
                          max_gap=max_gap)
    last_start = max(0.0, float(clip_duration) - float(frame_duration))   # the last frame's start
    if plan.segment is None:
        lo, hi = 0.0, last_start
        plan.warnings = [w.replace(f"keyframes are {1} evenly spaced full frames", f"keyframes are {n} evenly "
                                   f"spaced full frames of the whole clip") for w in plan.warnings]
    else:
        lo, hi = float(scan_times[plan.segment[0]]), float(scan_times[plan.segment[1]])
        need = (n - 1) * float(frame_duration)
        if hi - lo < need:
            extra = need - (hi - lo)
            lo, hi = lo - extra / 2, hi + extra / 2
            if lo < 0:
                lo, hi = 0.0, hi - lo
            if hi > last_start:
                lo, hi = max(0.0, lo - (hi - last_start)), last_start
            plan.warnings = [w for w in plan.warnings if "shorter than" not in w]
            plan.warnings.append(f"the segment ({scan_times[plan.segment[0]]:.2f}-{scan_times[plan.segment[1]]:.2f} "
                                 f"s) is shorter than {n} source frames: widened to {lo:.2f}-{hi:.2f} s")
    times = [lo + (hi - lo) * k / (n - 1) for k in range(n)] if n > 1 else [(lo + hi) / 2]
    # for the preview's timeline: the scanned frame nearest to each keyframe
    plan.keyframe_indices = sorted({int(np.argmin([abs(st - t) for st in scan_times])) for t in times})
    return ClipKeyframes(plan=plan, times=[round(t, 6) for t in times], span=(round(lo, 6), round(hi, 6)),
                         scan_times=list(scan_times))


def scale_region(region: tuple[int, int, int, int], from_size: tuple[int, int],
                 to_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A region in pixels of a (w, h) frame, in pixels of the same frame at another (w, h) size."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    x0, y0, x1, y1 = region
    out = (int(math.floor(x0 * sx + 0.5)), int(math.floor(y0 * sy + 0.5)), int(math.floor(x1 * sx + 0.5)),
           int(math.floor(y1 * sy + 0.5)))
    x0, y0 = min(max(out[0], 0), to_size[0] - 1), min(max(out[1], 0), to_size[1] - 1)
    return x0, y0, max(x0 + 1, min(out[2], to_size[0])), max(y0 + 1, min(out[3], to_size[1]))


def crop_one(frame: torch.Tensor, region: tuple[int, int, int, int], out_w: int, out_h: int) -> torch.Tensor:
    """One frame [H, W, 3] cut to ``region`` and resized to [out_h, out_w, 3] (as ``crop_keyframes``)."""
    x0, y0, x1, y1 = region
    chw = frame[y0:y1, x0:x1, :3].movedim(-1, 0)[None].float()
    if chw.shape[-2:] != (out_h, out_w):
        chw = torch.nn.functional.interpolate(chw, size=(out_h, out_w), mode="bilinear", align_corners=False,
                                              antialias=True)
    return chw[0].movedim(0, -1).clamp(0.0, 1.0).contiguous()


# -------------------------------------------------------------------------------------------------- crops

def crop_keyframes(frames: torch.Tensor, plan: KeyframePlan, out_w: int, out_h: int) -> torch.Tensor:
    """The plan's keyframes cut to its region and resized to (out_h, out_w): IMAGE [n, out_h, out_w, 3]."""
    if frames.ndim != 4 or frames.shape[-1] < 3:
        raise SearchPriorsError(f"frames must be an IMAGE batch [frames, height, width, 3], got "
                                f"{tuple(frames.shape)}.")
    x0, y0, x1, y1 = plan.region
    picked = frames[plan.keyframe_indices, y0:y1, x0:x1, :3]
    chw = picked.movedim(-1, 1).float()
    if chw.shape[-2:] != (out_h, out_w):
        chw = torch.nn.functional.interpolate(chw, size=(out_h, out_w), mode="bilinear", align_corners=False,
                                              antialias=True)
    return chw.movedim(1, -1).clamp(0.0, 1.0).contiguous()


# ------------------------------------------------------------------------------------------------ preview

# one colour per caption (RGB 0..1), repeating
PALETTE = [(1.0, 0.25, 0.25), (0.25, 0.6, 1.0), (1.0, 0.8, 0.1), (0.8, 0.35, 1.0), (0.2, 0.9, 0.9),
           (1.0, 0.55, 0.1), (0.6, 1.0, 0.3), (1.0, 0.4, 0.75)]
REGION_COLOUR = (1.0, 1.0, 1.0)
SEGMENT_COLOUR = (0.15, 0.85, 0.3)
OUTSIDE_COLOUR = (0.3, 0.3, 0.3)
KEYFRAME_COLOUR = (1.0, 1.0, 1.0)


def colour_name(label: int) -> str:
    names = ["red", "blue", "yellow", "purple", "cyan", "orange", "lime", "pink"]
    return names[label % len(names)]


def _rectangle(img: torch.Tensor, box, colour, thickness: int) -> None:
    """Draw a rectangle outline in place on img [H, W, 3]; box in pixels, clipped to the image."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (int(math.floor(v + 0.5)) for v in box)
    x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1 - 1, w - 1))
    y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1 - 1, h - 1))
    c = torch.tensor(colour, dtype=img.dtype)
    t = max(1, thickness)
    img[y0:min(y0 + t, y1 + 1), x0:x1 + 1] = c
    img[max(y1 - t + 1, y0):y1 + 1, x0:x1 + 1] = c
    img[y0:y1 + 1, x0:min(x0 + t, x1 + 1)] = c
    img[y0:y1 + 1, max(x1 - t + 1, x0):x1 + 1] = c


def draw_preview(frames: torch.Tensor, detections: Sequence[FrameDetections], plan: KeyframePlan,
                 max_thumbs: int = 8, thumb_height: int = 128, columns: int = 4) -> torch.Tensor:
    """One IMAGE [1, H, W, 3]: thumbnails of sampled frames with every detection in its caption's colour
    and the key region in white, framed green inside the critical segment and grey outside; under them a
    timeline with one bar per frame (height = frame score, green inside the segment) and white ticks at
    the keyframes."""
    num, fh, fw = frames.shape[0], frames.shape[1], frames.shape[2]
    by_frame = {d.frame: d for d in detections}
    sampled = sorted(by_frame) or list(range(num))
    count = min(max_thumbs, len(sampled))
    chosen = [sampled[i] for i in spread_indices(0, len(sampled) - 1, count)] if count > 1 else sampled[:1]
    chosen = list(dict.fromkeys(chosen))
    scale = thumb_height / fh
    tw, th = max(8, int(round(fw * scale))), thumb_height
    sx, sy = tw / fw, th / fh
    border = 3
    cols = min(columns, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    cell_w, cell_h = tw + 2 * border, th + 2 * border
    timeline_h = 24
    canvas = torch.zeros(rows * cell_h + timeline_h, cols * cell_w, 3)
    seg = plan.segment
    for k, f in enumerate(chosen):
        thumb = torch.nn.functional.interpolate(frames[f:f + 1, :, :, :3].movedim(-1, 1).float(), size=(th, tw),
                                                mode="bilinear", align_corners=False, antialias=True)
        thumb = thumb[0].movedim(0, -1).clamp(0, 1).clone()
        det = by_frame.get(f)
        if det is not None:
            for box, label in zip(det.boxes, det.labels):
                _rectangle(thumb, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy),
                           PALETTE[int(label) % len(PALETTE)], 1)
        inside = seg is not None and seg[0] <= f <= seg[1]
        if inside or seg is None:
            x0, y0, x1, y1 = plan.region
            _rectangle(thumb, (x0 * sx, y0 * sy, x1 * sx, y1 * sy), REGION_COLOUR, 2)
        r, c = divmod(k, cols)
        cell = canvas[r * cell_h:(r + 1) * cell_h, c * cell_w:(c + 1) * cell_w]
        cell[:] = torch.tensor(SEGMENT_COLOUR if inside else OUTSIDE_COLOUR)
        cell[border:border + th, border:border + tw] = thumb
    # timeline
    line = canvas[rows * cell_h:]
    width = line.shape[1]
    top = max(plan.frame_scores.values(), default=0.0)
    for f in range(num):
        a, b = f * width // num, max(f * width // num + 1, (f + 1) * width // num)
        s = plan.frame_scores.get(f)
        inside = seg is not None and seg[0] <= f <= seg[1]
        colour = torch.tensor(SEGMENT_COLOUR if inside else (0.45, 0.5, 0.65))
        if inside:
            line[timeline_h - 4:, a:b] = colour   # the segment's extent, also over unsampled frames
        if s and top > 0:
            height = max(1, int(round((timeline_h - 6) * s / top)))
            line[timeline_h - 4 - height:timeline_h - 4, a:b] = colour
        if f in plan.keyframe_indices:
            line[:3, a:b] = torch.tensor(KEYFRAME_COLOUR)
    return canvas.unsqueeze(0)
