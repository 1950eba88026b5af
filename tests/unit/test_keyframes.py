"""KeyframeExtractor's pure logic: critical segment (gaps, ties), key region (margin, aspect ratio, clamping,
full-frame rule, keep-together), nothing detected, crops, preview, and a moving square read from an mp4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_searchpriors.distill.keyframes import (FrameDetections, aspect_rectangle, critical_segment,
                                                     crop_keyframes, draw_preview, plan_keyframes, spread_indices,
                                                     widen_segment)
from comfyui_searchpriors.retrieval.errors import SearchPriorsError

from .conftest import load_test_module

FRAME = (48, 64)   # (height, width)


def det(frame, *items):
    """FrameDetections from (label, score, x0, y0, x1, y1) tuples."""
    return FrameDetections.of(frame, [i[2:] for i in items], [i[1] for i in items], [i[0] for i in items])


def plan(dets, n=4, out=(32, 32), captions=("thing",), num_frames=10, **kw):
    return plan_keyframes(dets, num_frames, FRAME, n, out, list(captions), **kw)


# -------------------------------------------------------------------------------------------- segment

def test_best_run_by_total_confidence():
    frames = list(range(10))
    assert critical_segment(frames, [0, .5, .6, 0, 0, 0, .9, 0, 0, 0]) == (1, 2, pytest.approx(1.1))
    assert critical_segment(frames, [0, .5, 0, 0, 0, 0, .9, .1, .2, 0]) == (6, 8, pytest.approx(1.2))


def test_gaps_up_to_max_gap_are_bridged_and_add_nothing():
    frames = list(range(6))
    scores = [.5, 0, .5, 0, 0, .8]
    assert critical_segment(frames, scores, max_gap=1) == (0, 2, 1.0)
    assert critical_segment(frames, scores, max_gap=2) == (0, 5, pytest.approx(1.8))
    assert critical_segment(frames, scores, max_gap=0) == (5, 5, .8)


def test_ties_prefer_the_longer_then_the_earlier_run():
    assert critical_segment(list(range(5)), [.5, 0, 0, .25, .25]) == (3, 4, .5)
    assert critical_segment(list(range(4)), [.5, 0, 0, .5]) == (0, 0, .5)


def test_sampled_frames_count_gaps_in_samples_and_report_frame_numbers():
    assert critical_segment([0, 4, 8, 12, 16], [0, .7, .7, 0, 0]) == (4, 8, pytest.approx(1.4))
    assert critical_segment([0, 4, 8], [0, 0, 0]) is None


def test_spread_rounds_half_up_and_widen_stays_in_the_clip():
    assert spread_indices(0, 9, 4) == [0, 3, 6, 9]
    assert spread_indices(0, 10, 4) == [0, 3, 7, 10]
    assert spread_indices(2, 5, 1) == [4]   # 3.5 rounds up
    assert widen_segment(5, 5, 4, 10) == (4, 7)
    assert widen_segment(9, 9, 4, 10) == (6, 9)
    assert widen_segment(0, 0, 3, 10) == (0, 2)
    assert widen_segment(2, 8, 4, 10) == (2, 8)


# --------------------------------------------------------------------------------------------- region

def test_region_is_the_union_with_margin_at_the_output_aspect():
    dets = [det(f, (0, .8, 10, 10, 20, 30)) for f in range(2, 6)]
    dets += [det(f) for f in (0, 1, 6, 7, 8, 9)]
    p = plan(dets)
    assert p.segment == (2, 5) and p.keyframe_indices == [2, 3, 4, 5]
    # union (10,10,20,30); 10% margin -> (9,8,21,32): 12x24; square -> 24x24 around x=15
    assert p.region == (3, 8, 27, 32) and not p.full_frame and p.warnings == []
    assert p.segment_total == pytest.approx(3.2)


def test_union_over_the_segment_only():
    dets = [det(0, (0, .3, 50, 0, 60, 10))] + [det(f) for f in (1, 2)]
    dets += [det(f, (0, .9, 10 + f, 10, 20 + f, 20)) for f in (3, 4, 5)]
    p = plan(dets, n=3, margin=0.0)
    assert p.segment == (3, 5)
    assert p.targets_box == (13, 10, 25, 20)          # the early box at x 50-60 is outside the segment
    assert p.region == (13, 9, 25, 21)


def test_region_is_clamped_inside_the_frame():
    dets = [det(f, (0, .9, 58, 40, 64, 48)) for f in range(10)]
    p = plan(dets, margin=0.5)
    assert p.region == (48, 32, 64, 48)
    x0, y0, x1, y1 = plan([det(f, (0, .9, 0, 0, 4, 4)) for f in range(10)], margin=0.0).region
    assert (x0, y0, x1 - x0, y1 - y0) == (0, 0, 4, 4)


def test_region_wider_than_the_frame_holds_is_shrunk_with_a_warning():
    rect, shrunk = aspect_rectangle((0, 0, 64, 48), 2.0, 64, 48)
    assert rect == (0, 8, 64, 40) and shrunk
    dets = [det(f, (0, .9, 0, 0, 64, 48)) for f in range(10)]
    p = plan(dets, out=(64, 32), margin=0.0, full_frame_above=1.0)
    assert p.region == (0, 8, 64, 40) and not p.full_frame
    assert any("cut" in w for w in p.warnings)


def test_full_frame_when_the_region_covers_most_of_it():
    dets = [det(f, (0, .9, 4, 4, 60, 44)) for f in range(10)]
    p = plan(dets, out=(32, 24), margin=0.0, full_frame_above=0.7)
    assert p.full_frame and p.region == (0, 0, 64, 48) and any("full frame" in w for w in p.warnings)
    p = plan(dets, out=(32, 24), margin=0.0, full_frame_above=0.8)
    assert not p.full_frame and p.region == (4, 3, 60, 45)   # 56x40 -> 4:3 is 56x42 around y=24
    # at another aspect ratio the full frame is the largest centred rectangle of that aspect
    p = plan(dets, out=(32, 32), margin=0.0, full_frame_above=0.1)
    assert p.full_frame and p.region == (8, 0, 56, 48)


def test_keep_together_unites_actor_and_recipient():
    hand = [(0, .4, 2, 10, 12, 20)]
    ball = [(1, .9, 40, 30, 50, 40)]
    dets = [det(f, *(hand if f <= 5 else []), *(ball if f >= 3 else [])) for f in range(10)]
    alone = plan(dets, captions=("hand", "ball"), margin=0.0, keep_together=False)
    assert alone.targets == [1] and alone.segment == (3, 9)
    assert alone.targets_box == (40, 30, 50, 40)
    together = plan(dets, captions=("hand", "ball"), margin=0.0, keep_together=True)
    assert together.targets == [0, 1] and together.segment == (0, 9)
    assert together.targets_box == (2, 10, 50, 40)
    assert together.frame_scores[4] == pytest.approx(1.3) and together.frame_scores[0] == pytest.approx(.4)


def test_primary_target_ties_go_to_the_earlier_caption():
    dets = [det(0, (0, .5, 0, 0, 8, 8), (1, .5, 30, 30, 38, 38))] + [det(f) for f in range(1, 10)]
    assert plan(dets, n=2, captions=("a", "b"), keep_together=False).targets == [0]


def test_nothing_detected_gives_evenly_spaced_full_frames_and_a_warning():
    p = plan([det(f) for f in range(10)], n=4, out=(64, 48))
    assert p.segment is None and p.full_frame and p.keyframe_indices == [0, 3, 6, 9]
    assert p.region == (0, 0, 64, 48)
    assert len(p.warnings) == 1 and "nothing detected" in p.warnings[0]
    assert "nothing detected" in p.describe()


def test_short_segment_is_widened_and_too_few_frames_is_an_error():
    dets = [det(f, *([(0, .9, 10, 10, 20, 20)] if f == 9 else [])) for f in range(10)]
    p = plan(dets, n=4)
    assert p.segment == (9, 9) and p.keyframe_indices == [6, 7, 8, 9] and "widened" in p.warnings[0]
    with pytest.raises(SearchPriorsError, match="gives 3 frames but 4 keyframes"):
        plan([det(f) for f in range(3)], n=4, num_frames=3)


# ----------------------------------------------------------------------------------------------- crops

def coded_frames(num=10, h=48, w=64):
    """Frame f, pixel (y, x): channels (f, y, x) / 100, so every crop is checkable."""
    f, y, x = torch.meshgrid(torch.arange(num), torch.arange(h), torch.arange(w), indexing="ij")
    return (torch.stack([f, y, x], dim=-1).float() / 100.0).contiguous()


def test_crop_cuts_the_region_of_the_keyframes_exactly():
    frames = coded_frames()
    dets = [det(f, (0, .9, 10, 10, 20, 30)) for f in range(2, 6)] + [det(f) for f in (0, 1, 6, 7, 8, 9)]
    p = plan(dets, out=(24, 24))
    out = crop_keyframes(frames, p, 24, 24)     # region 24x24: no resampling
    assert out.shape == (4, 24, 24, 3)
    assert torch.equal(out, frames[[2, 3, 4, 5], 8:32, 3:27])
    resized = crop_keyframes(frames, p, 48, 48)
    assert resized.shape == (4, 48, 48, 3)
    assert torch.allclose(resized[..., 0], frames[[2, 3, 4, 5], :1, :1, 0].expand(4, 48, 48))
    assert resized[..., 2].min() >= 0.03 - 1e-6 and resized[..., 2].max() <= 0.26 + 1e-6


def test_preview_marks_boxes_region_and_segment():
    frames = torch.zeros(10, 48, 64, 3)
    dets = [det(f, (0, .9, 16, 12, 32, 24)) for f in range(4, 8)] + [det(f) for f in (0, 1, 2, 3, 8, 9)]
    p = plan(dets, margin=0.0)
    img = draw_preview(frames, dets, p, max_thumbs=10, thumb_height=48, columns=5)
    assert img.ndim == 4 and img.shape[0] == 1 and img.shape[-1] == 3
    assert img.shape[1:3] == (2 * (48 + 6) + 24, 5 * (64 + 6))
    green, grey = torch.tensor([0.15, 0.85, 0.3]), torch.tensor([0.3, 0.3, 0.3])
    assert torch.allclose(img[0, 0, 0], grey)                    # frame 0: outside the segment
    assert torch.allclose(img[0, 0, 4 * 70], green)              # frame 4: inside
    inside = img[0, 3:51, 4 * 70 + 3:4 * 70 + 67]                # frame 4's thumbnail
    assert torch.allclose(inside[12, 20], torch.tensor([1.0, 0.25, 0.25]))   # caption 0's box edge (red)
    assert torch.allclose(inside[10, 24], torch.ones(3))        # the white region edge: 16x16 from y 10
    assert torch.allclose(img[0, 0, 3 * 70 + 30], grey)


# ----------------------------------------------------------------------------------------- moving square

SQUARE = 10


def square_at(index: int) -> tuple[int, int] | None:
    """Top-left of the white square in frame ``index`` of the clip (visible in frames 5..14, moving right)."""
    if not 5 <= index <= 14:
        return None
    return 4 + 5 * (index - 5), 20


def square_pixels(index: int, width: int, height: int) -> np.ndarray:
    img = np.full((height, width, 3), 30, dtype=np.uint8)
    at = square_at(index)
    if at is not None:
        img[at[1]:at[1] + SQUARE, at[0]:at[0] + SQUARE] = 235
    return img


class BrightBoxDetector:
    """A stand-in for GroundingDINO that finds the bright square and calls it caption 0."""

    def detect(self, images, captions, box_threshold, text_threshold):
        out = []
        for img in images:
            ys, xs = torch.nonzero(img.mean(-1) > 0.5, as_tuple=True)
            if len(xs) == 0:
                out.append((np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)))
                continue
            box = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
            out.append((np.array([box], float), np.array([0.9]), np.array([0])))
        return out


def test_moving_square_crop_follows_it(tmp_path):
    from comfyui_searchpriors.distill.grounding import run_detection
    from comfyui_searchpriors.distill.video_frames import read_reference_frames

    clips = load_test_module("video_clips")
    path = clips.write_clip(tmp_path / "square.mp4", 20, fps=10, width=96, height=64, pixels=square_pixels)
    frames = read_reference_frames(path, 20, 96, 64).frames
    calls = []
    dets = run_detection(BrightBoxDetector(), frames, ["square"], 0.35, 0.25, batch_size=6,
                         progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 20), (6, 20), (12, 20), (18, 20), (20, 20)]
    p = plan_keyframes(dets, 20, (64, 96), 4, (32, 32), ["square"], margin=0.1, full_frame_above=0.9)
    assert p.segment == (5, 14) and p.keyframe_indices == [5, 8, 11, 14]
    x0, y0, x1, y1 = p.region
    assert x0 <= 4 and x1 >= 4 + 45 + SQUARE and y0 <= 20 and y1 >= 30 and (x1 - x0) == (y1 - y0)
    crops = crop_keyframes(frames, p, 32, 32)
    centres = []
    for k, f in enumerate(p.keyframe_indices):
        bright = crops[k].mean(-1) > 0.5
        assert bright.sum() > 0.8 * (SQUARE * 32 / (x1 - x0)) ** 2       # the whole square is inside
        centres.append(torch.nonzero(bright)[:, 1].float().mean().item())
        ax, _ = square_at(f)
        expected = (ax + SQUARE / 2 - x0) * 32 / (x1 - x0)
        assert abs(centres[-1] - expected) < 1.5
    assert centres == sorted(centres) and centres[-1] - centres[0] > 10


def test_clip_plan_times_lie_in_the_segment_and_a_short_one_is_widened():
    from comfyui_searchpriors.distill.keyframes import FrameDetections, plan_clip_keyframes

    times = [0.5 * k for k in range(20)]   # a 10 s clip scanned at 2 fps
    box = np.array([[10.0, 10.0, 20.0, 20.0]])

    def dets(active):
        return [FrameDetections.of(k, box, [0.9], [0]) if k in active else FrameDetections.empty(k)
                for k in range(20)]

    clip = plan_clip_keyframes(dets({14, 15, 16}), times, (48, 64), 4, (32, 32), ["square"], clip_duration=10.0,
                               frame_duration=0.1)
    assert clip.plan.segment == (14, 16) and clip.span == (7.0, 8.0)
    assert clip.times == pytest.approx([7.0, 7.0 + 1 / 3, 7.0 + 2 / 3, 8.0])
    # one active scanned frame: the span is widened to 4 source frames (0.3 s) around it
    one = plan_clip_keyframes(dets({6}), times, (48, 64), 4, (32, 32), ["square"], clip_duration=10.0,
                              frame_duration=0.1)
    assert one.span == pytest.approx((2.85, 3.15)) and any("widened to 2.85-3.15 s" in w for w in one.plan.warnings)
    # at the clip's end the widening stays inside it (a 9.6 s clip: the last frame starts at 9.5 s)
    end = plan_clip_keyframes(dets({19}), times, (48, 64), 4, (32, 32), ["square"], clip_duration=9.6,
                              frame_duration=0.1)
    assert end.span == pytest.approx((9.2, 9.5))
    # nothing detected: spread over the whole clip
    none = plan_clip_keyframes(dets(set()), times, (48, 64), 3, (32, 32), ["square"], clip_duration=10.0,
                               frame_duration=0.1)
    assert none.plan.segment is None and none.times == pytest.approx([0.0, 4.95, 9.9])
    assert any("3 evenly spaced full frames of the whole clip" in w for w in none.plan.warnings)
