"""Effects on the Wan-architecture toy (sample_data/models/searchpriors-toy-wan: ComfyUI's WanModel and Wan 2.1
VAE class), not only code paths: POS on Wan moves the video along the reference's motion. A broken inversion,
noise mix or flow-sampler path makes the video ignore the reference and fails it.

For each straight-motion held-out prompt, POS (eta 1, 10 steps, seed 0) runs twice: with a world clip of the
prompt's own motion and with one of the opposite motion. The probe's net displacement of each video, projected on
the prompt's direction, must be larger with the own-motion clip. Measured on this machine's CPU: see MEASURED.
"""

from __future__ import annotations

import math

import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

STRAIGHT = (0, 2, 4, 5)   # held_out_references' prompts with a straight motion: up, left, right, down_left
# Measured on this machine's CPU (2026-12-03, the model of training run 5): gaps up 65.0, left 30.8, right 0.5,
# down_left 0.7 px (the last two prompts come out the same with either clip). A path that ignores the reference
# gives gaps near 0 everywhere.
MEASURED = {"up": 65.0, "left": 30.8, "right": 0.5, "down_left": 0.7}
MIN_TOTAL = 45.0        # the sum of the gaps (measured 97 px; the clip's own displacement is ~30 px)
MIN_MOVED = 2           # prompts whose gap is at least a third of a clip's displacement (measured 2)


@pytest.fixture(scope="module")
def wan(comfy):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    toy = harness.load_test_helper("toy_world_harness")
    yield toy, toy.ToyWanPipeline(steps=10)
    torch.set_num_threads(threads)


def _along(result, angle: float) -> float:
    """The probe's fitted net displacement (pixels) projected on the direction ``angle`` (degrees, y up)."""
    if result.angle is None:
        return 0.0
    return result.displacement * math.cos(math.radians(result.angle - angle))


def test_pos_on_wan_moves_the_video_along_the_reference(wan):
    from comfyui_searchpriors.distill import toy_probe

    toy, pipe = wan
    gaps = []
    for k, prompt, shape, colour, motion, own, _ in toy.held_out_references(pipe, max(STRAIGHT) + 1):
        if k not in STRAIGHT:
            continue
        opposite = pipe.reference(shape, toy.reference_colour(colour, k), toy.OPPOSITE[motion], seed=4000 + k)
        angle = toy_probe.LINEAR_ANGLES[motion]
        with_own = _along(toy_probe.probe(pipe.pos(prompt, 0, pipe.invert(own), eta=1.0).video), angle)
        with_opposite = _along(toy_probe.probe(pipe.pos(prompt, 0, pipe.invert(opposite), eta=1.0).video), angle)
        gaps.append(with_own - with_opposite)
        print(f"{prompt!r}: along {motion} with its own motion's clip {with_own:.1f} px, with the opposite's "
              f"{with_opposite:.1f} px")
    print("gaps", [round(g, 1) for g in gaps], "measured", MEASURED)
    assert sum(gaps) >= MIN_TOTAL, f"gaps {gaps} (measured {MEASURED})"
    assert sum(g >= 10.0 for g in gaps) >= MIN_MOVED, f"gaps {gaps} (measured {MEASURED})"
    assert min(gaps) > -10.0, f"a clip of the opposite motion moved the video further along the prompt: {gaps}"
