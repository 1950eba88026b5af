"""POS on two experts (Wan 2.2 A14B): DDIM Video Invert with a high-noise expert and a boundary, checked by
two-stage sampling through core nodes (SplitSigmas + two SamplerCustomAdvanced), on two different tiny random
Wan models of ComfyUI's own class."""

from __future__ import annotations

import re

import pytest
import torch

WAN_SHAPE = (1, 16, 3, 8, 8)
STEPS = 12


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
    from comfyui_searchpriors.nodes.comfy_internals import glue as comfy_glue

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


# ------------------------------------------------------------------------------- hybrid semantics in two stages


def _prompts(tiny):
    rewritten, original, negative = tiny.wan_conditioning(1), tiny.wan_conditioning(2), tiny.wan_conditioning(3)
    return rewritten, original, negative, {"rewritten": rewritten[0][0], "original": original[0][0]}


def _check_rule(calls, full, m):
    assert calls and "?" not in {n for _, n in calls}
    for sigma, name in calls:
        expected = "rewritten" if (m >= len(full) - 1 or (m > 0 and sigma > full[m])) else "original"
        assert name == expected, (sigma, name, m, full)


# (T, k, gamma): the switch m = floor(T * gamma) in the first stage, at the split, in the second stage
SPLITS = [(10, 6, 0.3), (10, 4, 0.4), (10, 4, 0.7), (10, 4, 0.0), (10, 4, 1.0)]


@pytest.mark.parametrize("steps, k, gamma", SPLITS)
def test_guider_with_full_sigmas_over_split_sigmas_equals_one_stage(pos, ncs, tiny, experts, recording, steps, k,
                                                                     gamma):
    model = experts[0]
    rewritten, original, negative, prompts = _prompts(tiny)
    sigmas = ncs.BasicScheduler.execute(model, "simple", steps, 1.0).args[0]
    full = [float(s) for s in sigmas]
    m = int(steps * gamma + 1e-9)
    euler = ncs.KSamplerSelect.execute("euler").args[0]
    empty = {"samples": torch.zeros(WAN_SHAPE)}
    with torch.inference_mode():
        one_model, one_calls = recording(model, prompts)
        guider = pos.HybridSemanticGuider.execute(one_model, rewritten, original, negative, 3.0, gamma).args[0]
        one = ncs.SamplerCustomAdvanced.execute(ncs.RandomNoise.execute(5).args[0], guider, euler, sigmas.clone(),
                                                empty).args[0]["samples"]
        two_model, two_calls = recording(model, prompts)
        high_sigmas, low_sigmas = ncs.SplitSigmas.execute(sigmas.clone(), k).args
        first = pos.HybridSemanticGuider.execute(two_model, rewritten, original, negative, 3.0, gamma,
                                                 full_sigmas=sigmas.clone()).args[0]
        mid = ncs.SamplerCustomAdvanced.execute(ncs.RandomNoise.execute(5).args[0], first, euler, high_sigmas,
                                                empty).args[0]
        second = pos.HybridSemanticGuider.execute(two_model, rewritten, original, negative, 3.0, gamma,
                                                  full_sigmas=sigmas.clone()).args[0]
        two = ncs.SamplerCustomAdvanced.execute(ncs.DisableNoise.execute().args[0], second, euler, low_sigmas,
                                                mid).args[0]["samples"]
    assert torch.allclose(two, one, rtol=1e-4, atol=1e-5), float((two - one).abs().max())
    assert [n for _, n in two_calls] == [n for _, n in one_calls]
    assert [n for _, n in one_calls] == ["rewritten"] * m + ["original"] * (steps - m)
    _check_rule(two_calls, full, m)
    assert f"this stage samples steps {k}..{steps - 1} of the whole schedule's {steps}" in second.last_schedule
    if 0 < m < steps and m > k:
        assert "the switch falls in this stage" in second.last_schedule
        # without full_sigmas the second stage would count m over its own steps: a different split
        plain, plain_calls = recording(model, prompts)
        alone = pos.HybridSemanticGuider.execute(plain, rewritten, original, negative, 3.0, gamma).args[0]
        with torch.inference_mode():
            ncs.SamplerCustomAdvanced.execute(ncs.DisableNoise.execute().args[0], alone, euler, low_sigmas, mid)
        assert [n for _, n in plain_calls] != [n for _, n in two_calls[k:]]


@pytest.mark.parametrize("sampler_name, steps, k, gamma", [("euler", 10, 4, 0.7), ("euler", 10, 6, 0.3),
                                                           ("heun", 8, 4, 0.75), ("heun", 8, 4, 0.5)])
def test_sampler_start_end_steps_as_the_wan22_template_equal_one_stage(pos, ncs, tiny, experts, sampler_name, steps,
                                                                      k, gamma, recording):
    """Two Hybrid Semantic Samplers as ComfyUI's Wan 2.2 template wires two KSamplerAdvanced: the first with
    noise, end_at_step k and leftover noise, the second without noise from step k. heun's correction calls run
    at the next sigma, so they follow the rule by sigma (rewritten iff above full[m]) in both stages."""
    model = experts[0]
    rewritten, original, negative, prompts = _prompts(tiny)
    full = [float(s) for s in ncs.BasicScheduler.execute(model, "simple", steps, 1.0).args[0]]
    m = int(steps * gamma + 1e-9)
    empty = {"samples": torch.zeros(WAN_SHAPE)}
    common = dict(seed=3, steps=steps, cfg=2.0, sampler_name=sampler_name, scheduler="simple",
                  positive_rewritten=rewritten, positive_original=original, negative=negative, gamma=gamma,
                  denoise=1.0)
    with torch.inference_mode():
        one_model, one_calls = recording(model, prompts)
        one = pos.HybridSemanticSampler.execute(one_model, latent_image=empty, **common).args[0]["samples"]
        two_model, two_calls = recording(model, prompts)
        mid, first_schedule = pos.HybridSemanticSampler.execute(two_model, latent_image=empty, end_at_step=k,
                                                                return_with_leftover_noise=True, **common).args
        out, schedule = pos.HybridSemanticSampler.execute(two_model, latent_image=mid, add_noise=False,
                                                          start_at_step=k, **common).args
    assert torch.allclose(out["samples"], one, rtol=1e-4, atol=1e-5), float((out["samples"] - one).abs().max())
    assert [n for _, n in two_calls] == [n for _, n in one_calls]
    _check_rule(two_calls, full, m)
    assert f"switch step m = {m}" in schedule and f"steps {k}..{steps - 1}" in schedule
    assert f"steps 0..{k - 1}" in first_schedule
    if m > k:
        assert "the switch falls in this stage" in schedule and "rewritten throughout this stage" in first_schedule


def test_two_stage_sampler_on_two_experts_uses_each_for_its_part(pos, ncs, tiny, experts, recording):
    """The A14B wiring: the high expert draws steps [0, k) with the rewritten prompt where the switch says, the
    low expert [k, T); each expert's calls are its own part's sigmas."""
    low, high = experts
    rewritten, original, negative, prompts = _prompts(tiny)
    steps, k, gamma = 10, 4, 0.6
    full = [float(s) for s in ncs.BasicScheduler.execute(low, "simple", steps, 1.0).args[0]]
    high_rec, high_calls = recording(high, prompts)
    low_rec, low_calls = recording(low, prompts)
    common = dict(seed=3, steps=steps, cfg=2.0, sampler_name="euler", scheduler="simple",
                  positive_rewritten=rewritten, positive_original=original, negative=negative, gamma=gamma,
                  denoise=1.0)
    with torch.inference_mode():
        mid = pos.HybridSemanticSampler.execute(high_rec, latent_image={"samples": torch.zeros(WAN_SHAPE)},
                                                end_at_step=k, return_with_leftover_noise=True, **common).args[0]
        out = pos.HybridSemanticSampler.execute(low_rec, latent_image=mid, add_noise=False, start_at_step=k,
                                                **common).args[0]
    assert torch.isfinite(out["samples"]).all()
    assert [s for s, _ in high_calls] == pytest.approx(full[:k]) and [s for s, _ in low_calls] == pytest.approx(
        full[k:-1])
    assert [n for _, n in high_calls + low_calls] == ["rewritten"] * 6 + ["original"] * 4


def test_bad_full_sigmas_and_an_empty_stage(pos, ncs, tiny, experts):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    model = experts[0]
    rewritten, original, negative, _ = _prompts(tiny)
    for bad in (torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0.5]), "sigmas", torch.tensor([1.0, float("nan"), 0.0])):
        with pytest.raises(SearchPriorsError, match="full_sigmas is not a"):
            pos.HybridSemanticGuider.execute(model, rewritten, original, negative, 3.0, 0.5, full_sigmas=bad)
    latent = {"samples": torch.randn(WAN_SHAPE)}
    out, schedule = pos.HybridSemanticSampler.execute(
        model, seed=0, steps=4, cfg=1.0, sampler_name="euler", scheduler="simple", positive_rewritten=rewritten,
        positive_original=original, negative=negative, latent_image=latent, gamma=0.5, denoise=1.0,
        start_at_step=4).args
    assert torch.equal(out["samples"], latent["samples"]) and "nothing to sample" in schedule
