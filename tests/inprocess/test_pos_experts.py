"""POS on two experts (Wan 2.2 A14B): DDIM Video Invert with a high-noise expert and a boundary, checked by
two-stage sampling through core nodes (SplitSigmas + two SamplerCustomAdvanced), on two different tiny random
Wan models of ComfyUI's own class."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest
import torch

TESTS = os.path.join(os.path.dirname(__file__), "..")
WAN_SHAPE = (1, 16, 3, 8, 8)
STEPS = 12


def _load_tiny_models():
    spec = importlib.util.spec_from_file_location("searchpriors_tests_tiny_models",
                                                  os.path.join(TESTS, "tiny_models.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(comfy):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _load_tiny_models()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ncs(comfy):
    from comfy_extras import nodes_custom_sampler

    return nodes_custom_sampler


@pytest.fixture(scope="module")
def pos(pack_nodes):
    from comfyui_searchpriors.nodes import pos_nodes

    return pos_nodes


@pytest.fixture(scope="module")
def experts(tiny, comfy):
    """(low, high): two different tiny Wan 2.1-architecture experts (as Wan 2.2 A14B's), shift 1."""
    from comfy_extras import nodes_model_advanced

    shift = nodes_model_advanced.ModelSamplingSD3()
    return (shift.patch(tiny.load_tiny_wan21(seed=0), 1.0)[0], shift.patch(tiny.load_tiny_wan21(seed=7), 1.0)[0])


@pytest.fixture(scope="module")
def latent(tiny):
    return tiny.smooth_video_latent(WAN_SHAPE, seed=1)


class FixedNoise:
    """A NOISE that gives back one tensor (the inverted noise as it is: the eta -> infinity end of Eq. 4)."""

    def __init__(self, tensor):
        self.tensor, self.seed = tensor, 0

    def generate_noise(self, _latent):
        return self.tensor.clone()


def invert(pos, model, latent, cond, high=None, boundary=0.5, refine=3, steps=STEPS, **extra):
    with torch.inference_mode():
        return pos.DDIMVideoInvert.execute(model=model, latent={"samples": latent}, conditioning=cond, steps=steps,
                                           scheduler="simple", refine_iterations=refine, cfg=1.0,
                                           high_noise_model=high, boundary=boundary, **extra).args


def two_stage(ncs, high, low, noise, cond, k, steps=STEPS):
    """Core nodes as a user wires Wan 2.2: SplitSigmas at k; the high expert samples the first part from the
    noise, the low one the rest from its output with DisableNoise."""
    sigmas = ncs.BasicScheduler.execute(low, "simple", steps, 1.0).args[0]
    high_sigmas, low_sigmas = ncs.SplitSigmas.execute(sigmas, k).args
    euler = ncs.KSamplerSelect.execute("euler").args[0]
    empty = {"samples": torch.zeros(WAN_SHAPE)}
    with torch.inference_mode():
        if k == 0:  # one expert, one stage
            return ncs.SamplerCustomAdvanced.execute(FixedNoise(noise), ncs.CFGGuider.execute(low, cond, cond, 1.0)
                                                     .args[0], euler, sigmas, empty).args[0]["samples"]
        mid = ncs.SamplerCustomAdvanced.execute(FixedNoise(noise), ncs.CFGGuider.execute(high, cond, cond, 1.0).args[0],
                                                euler, high_sigmas, empty).args[0]
        out = ncs.SamplerCustomAdvanced.execute(ncs.DisableNoise.execute().args[0],
                                                ncs.CFGGuider.execute(low, cond, cond, 1.0).args[0], euler,
                                                low_sigmas, mid).args[0]
    return out["samples"]


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_two_expert_inversion_reconstructs_through_two_stage_sampling(pos, ncs, tiny, experts, latent):
    low, high = experts
    cond = tiny.wan_conditioning(100)
    # shift 1, 12 simple steps: sigma_i = 1 - i/12 >= 0.5 for i <= 6, so the high expert samples steps 0..6
    noise, report, k = invert(pos, low, latent, cond, high=high, boundary=0.5, check_reconstruction=True)
    assert k == 7
    assert "high-noise expert for steps 0..6" in report and "SplitSigmas step 7" in report
    node_error = float(re.search(r"relative error ([0-9.e+-]+)", report).group(1))
    two = rel(two_stage(ncs, high, low, noise["samples"], cond, k), latent)
    assert two == pytest.approx(node_error, rel=1e-3, abs=1e-7)  # the node's check is core's two-stage run

    # the one-expert baseline: invert and sample with the low expert alone
    one_noise, _, one_k = invert(pos, low, latent, cond)
    assert one_k == STEPS
    one = rel(two_stage(ncs, low, low, one_noise["samples"], cond, 0), latent)
    assert two < 1e-3 and two < 3 * one + 1e-4, (two, one)

    # the wrong split: experts swapped, the boundary one step off, or the noise inverted with one expert only
    swapped = rel(two_stage(ncs, low, high, noise["samples"], cond, k), latent)
    off_by_two = rel(two_stage(ncs, high, low, noise["samples"], cond, k + 2), latent)
    one_expert_noise = rel(two_stage(ncs, high, low, one_noise["samples"], cond, k), latent)
    print(f"two experts {two:.2e}, one expert {one:.2e}, swapped {swapped:.2e}, split +2 {off_by_two:.2e}, "
          f"one-expert noise {one_expert_noise:.2e}")
    for wrong in (swapped, off_by_two, one_expert_noise):
        assert wrong > 20 * two, (wrong, two)


def test_boundary_rule_is_wans_on_the_shifted_schedule(pos, experts, tiny, latent):
    """Wan 2.2's rule, t >= boundary * 1000 with t = 1000 sigma: with shift 8 and 20 simple steps step 10 starts at
    sigma 0.889 and belongs to the high expert, step 11 (0.867) to the low one; boundary 0.9 takes 10 steps."""
    from comfy_extras import nodes_model_advanced

    from comfyui_searchpriors.distill.experts import high_noise_steps

    low, high = (nodes_model_advanced.ModelSamplingSD3().patch(m, 8.0)[0] for m in experts)
    cond = tiny.wan_conditioning(100)
    _, report, k = invert(pos, low, latent, cond, high=high, boundary=0.875, refine=0, steps=20)
    assert k == 11 and "high-noise expert for steps 0..10 (sigma 1 -> 0.8" in report
    assert invert(pos, low, latent, cond, high=high, boundary=0.9, refine=0, steps=20)[2] == 10
    assert high_noise_steps([1000, 900, 875, 874.9, 100], 0.875) == 3
    # every step above or below: one expert does everything, and the report says so
    _, report, k = invert(pos, low, latent, cond, high=high, boundary=0.01, refine=0, steps=4)
    assert k == 4 and "high-noise expert samples them all" in report
    # the experts' model sampling differs: a warning
    _, report, _ = invert(pos, low, latent, cond, high=experts[1], boundary=0.875, refine=0, steps=4)
    assert "WARNING: the two experts' model sampling differs" in report


def test_two_expert_progress_counts_the_whole_schedule(pos, experts, tiny, latent, monkeypatch):
    from comfyui_searchpriors.nodes import comfy_glue

    seen = []
    monkeypatch.setattr(comfy_glue, "progress_callback", lambda: (lambda done, total: seen.append((done, total))))
    low, high = experts
    invert(pos, low, latent, tiny.wan_conditioning(100), high=high, boundary=0.5, refine=0, steps=6)
    assert seen[-1] == (6, 6) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_bad_second_expert_or_boundary_names_the_input_and_the_fix(pos, experts, tiny, latent):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    low, _ = experts
    cond = tiny.wan_conditioning(100)
    other_size = tiny.load_tiny_wan21(seed=3, dim=256)
    other_family = tiny.load_tiny_wan22_5b(seed=3)
    other_class = tiny.load_tiny_eps(seed=3)
    cases = [
        (dict(high=other_size), r"high_noise_model has another size or architecture than model \(dim 256 vs 128"),
        (dict(high=other_family), r"high_noise_model is a WAN22 but model is a WAN21"),
        (dict(high=other_class), r"high_noise_model is a BaseModel but model is a WAN21"),
        (dict(high="model"), r"high_noise_model is not a MODEL"),
        (dict(high=experts[1], boundary=0.0), r"boundary is 0.0; it must lie strictly between 0 and 1"),
        (dict(high=experts[1], boundary=1.0), r"boundary is 1.0; it must lie strictly between 0 and 1"),
        (dict(high=experts[1], boundary=1.5), r"boundary is 1.5, above its maximum of 1"),
        (dict(high=experts[1], boundary=float("nan")), r"boundary is nan: NaN and infinity are not allowed"),
    ]
    for extra, message in cases:
        with pytest.raises(SearchPriorsError, match=message) as info:
            invert(pos, low, latent, cond, refine=0, steps=4, **extra)
        text = str(info.value)
        assert "boundary" in text or "unconnected" in text, text
    # the same expert twice is allowed (a one-model run, split for nothing)
    assert invert(pos, low, latent, cond, high=low, boundary=0.5, refine=0, steps=4)[2] == 3
