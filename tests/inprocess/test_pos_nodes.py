"""POS generation nodes in-process on real ComfyUI MODELs: a tiny random Wan 2.1 (flow, 5-D latents, loaded from
a state dict) and a tiny eps model (frames-as-batch [F, 4, h, w]). Core nodes are the references."""

from __future__ import annotations

import math
import re

import pytest
import torch

WAN_SHAPE = (1, 16, 3, 8, 8)
EPS_SHAPE = (4, 4, 8, 8)


@pytest.fixture(scope="module")
def core(comfy):
    from comfy_extras import nodes_custom_sampler, nodes_model_advanced

    return nodes_custom_sampler, nodes_model_advanced


@pytest.fixture(scope="module")
def wan(tiny):
    return tiny.load_tiny_wan21(seed=0)


@pytest.fixture(scope="module")
def wan_shift1(wan, core):
    return core[1].ModelSamplingSD3().patch(wan, 1.0)[0]


@pytest.fixture(scope="module")
def eps_model(tiny):
    return tiny.load_tiny_eps(seed=0)


@pytest.fixture(scope="module")
def models(tiny, wan, wan_shift1, eps_model):
    """name -> (model, latent, empty-prompt conditioning, cond maker)"""
    return {
        "wan": (wan_shift1, tiny.smooth_video_latent(WAN_SHAPE, seed=1), tiny.wan_conditioning(100),
                tiny.wan_conditioning),
        "eps": (eps_model, tiny.smooth_video_latent(EPS_SHAPE, seed=1), tiny.eps_conditioning(100),
                tiny.eps_conditioning),
    }


def invert(pos, model, latent, cond, steps=20, refine=0, **extra):
    with torch.inference_mode():
        out = pos.DDIMVideoInvert.execute(model=model, latent={"samples": latent}, conditioning=cond, steps=steps,
                                          scheduler="simple", refine_iterations=refine, cfg=extra.pop("cfg", 1.0),
                                          **extra)
    return out.args[:2]  # (inverted_noise, report); the third output, boundary_step: test_pos_experts.py


def reconstruction_error(report: str) -> float:
    return float(re.search(r"relative error ([0-9.e+-]+)", report).group(1))


def test_every_pos_schema_passes_comfys_validation(pos):
    """The server validates each schema at start-up; one failure keeps the whole pack from loading."""
    for node in pos.NODES:
        schema = node.define_schema()
        schema.validate()
        assert schema.node_id.startswith("SearchPriors_") and schema.category == "SearchPriors/pos"


# ------------------------------------------------------------------------------------------------ inversion


@pytest.mark.parametrize("name, best", [("eps", 1e-3), ("wan", 1e-3)])
def test_reconstruction_error_falls_with_refinement(pos, models, name, best):
    model, latent, cond, _ = models[name]
    before = latent.clone()
    errors = []
    for refine in (0, 1, 3):
        noise, report = invert(pos, model, latent, cond, refine=refine, check_reconstruction=True)
        assert noise["samples"].shape == latent.shape and torch.isfinite(noise["samples"]).all()
        errors.append(reconstruction_error(report))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < best and errors[0] > 20 * errors[2], errors
    assert torch.equal(latent, before)
    assert ("flow (CONST" in report) == (name == "wan") and "max fixed-point residual" in report
    assert len(re.findall(r"^\s+\d+\s+[0-9.e+-]+ ->", report, flags=re.M)) == 20  # one line per step


def test_core_flip_sigmas_gives_inf_on_flow_but_the_node_is_finite(pos, core, models):
    ncs = core[0]
    model, latent, cond, _ = models["wan"]
    sigmas = ncs.BasicScheduler.execute(model, "simple", 8, 1.0).args[0]
    flipped = ncs.FlipSigmas.execute(sigmas.clone()).args[0]
    euler = ncs.KSamplerSelect.execute("euler").args[0]
    with torch.inference_mode():
        core_out = ncs.SamplerCustom.execute(model, False, 0, 1.0, cond, cond, euler, flipped,
                                             {"samples": latent}).args[0]["samples"]
    assert not torch.isfinite(core_out).all()  # the pitfall this node exists to avoid
    noise, report = invert(pos, model, latent, cond, steps=8, sigmas=sigmas)
    assert torch.isfinite(noise["samples"]).all()
    assert "SIGMAS input, 8 steps" in report and "sigma 0 -> 1" in report


def test_noise_regenerates_the_video_through_core_sampler_custom_advanced(pos, core, models):
    """The LATENT is what a NOISE must return: core sampling from an empty latent gives the video back."""
    ncs = core[0]
    model, latent, cond, _ = models["eps"]
    noise, _ = invert(pos, model, latent, cond, steps=20, refine=3)
    # eta -> inf: the inverted noise (past the widget's max of 100, so the node's function without its input check)
    mix = pos.GaussianNoiseMix.execute.__wrapped__(pos.GaussianNoiseMix, inverted=noise, eta=1e6, seed=0).args[0]
    guider = ncs.CFGGuider.execute(model, cond, cond, 1.0).args[0]
    sigmas = ncs.BasicScheduler.execute(model, "simple", 20, 1.0).args[0]
    with torch.inference_mode():
        out = ncs.SamplerCustomAdvanced.execute(mix, guider, ncs.KSamplerSelect.execute("euler").args[0], sigmas,
                                                {"samples": torch.zeros(EPS_SHAPE)}).args[0]["samples"]
    assert float((out - latent).norm() / latent.norm()) < 2e-3


def test_a_schedule_ending_above_zero_is_inverted_from_its_last_level(pos, core, models):
    model, latent, cond, _ = models["eps"]
    sigmas = core[0].BasicScheduler.execute(model, "simple", 20, 1.0).args[0][:-1]  # e.g. diffusers' DDIM timesteps
    noise, report = invert(pos, model, latent, cond, sigmas=sigmas, refine=3, check_reconstruction=True)
    assert re.search(r"note: the schedule ends at sigma [0-9.]+, not 0", report)
    assert reconstruction_error(report) < 1e-3


def test_shift_and_cfg_warnings_and_guided_inversion(pos, tiny, wan, models):
    _, latent, cond, make = models["wan"]
    _, report = invert(pos, wan, latent, cond, steps=4)
    assert "WARNING: flow shift is 8" in report and "note: refine_iterations 0" in report
    noise, report = invert(pos, wan, latent, cond, steps=4, cfg=3.0, negative=make(101))
    assert torch.isfinite(noise["samples"]).all() and "WARNING: cfg 3, not 1" in report


def test_cancel_mid_inversion_raises_comfys_interrupt_and_leaves_inputs_alone(pos, models):
    import comfy.model_management

    model, latent, cond, _ = models["wan"]
    before, cond_before = latent.clone(), cond[0][0].clone()
    calls = []
    cancelling = model.clone()

    def cancel_after_three(apply_model, args):
        calls.append(1)
        if len(calls) == 3:
            comfy.model_management.interrupt_current_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])

    cancelling.set_model_unet_function_wrapper(cancel_after_three)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        invert(pos, cancelling, latent, cond, steps=20, refine=1)
    assert len(calls) <= 4  # stopped within the step that was running
    assert not comfy.model_management.processing_interrupted()
    assert torch.equal(latent, before) and torch.equal(cond[0][0], cond_before)


def test_nan_from_the_model_is_a_clear_error(pos, models):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    model, latent, cond, _ = models["eps"]
    broken = model.clone()
    broken.set_model_unet_function_wrapper(lambda apply_model, args: apply_model(
        args["input"], args["timestep"], **args["c"]) * float("nan"))
    with pytest.raises(SearchPriorsError, match=r"NaN/inf at step 1 of 5"):
        invert(pos, broken, latent, cond, steps=5)


# ------------------------------------------------------------------------------------------------ noise mix


def test_eta_zero_is_bitwise_core_random_noise_through_sampler_custom_advanced(pos, core, models):
    ncs = core[0]
    for name in ("wan", "eps"):
        model, latent, cond, make = models[name]
        inverted = {"samples": torch.randn(latent.shape)}
        mix = pos.GaussianNoiseMix.execute(inverted=inverted, eta=0.0, seed=42).args[0]
        guider = ncs.CFGGuider.execute(model, make(1), make(2), 2.0).args[0]
        sigmas = ncs.BasicScheduler.execute(model, "simple", 4, 1.0).args[0]
        sampler = ncs.KSamplerSelect.execute("euler").args[0]
        empty = {"samples": torch.zeros(latent.shape)}
        with torch.inference_mode():
            ours = ncs.SamplerCustomAdvanced.execute(mix, guider, sampler, sigmas, empty).args[0]["samples"]
            ref = ncs.SamplerCustomAdvanced.execute(ncs.RandomNoise.execute(42).args[0], guider, sampler, sigmas,
                                                    empty).args[0]["samples"]
        assert torch.equal(ours, ref), name
        assert mix.seed == 42


def test_mix_is_eq4_with_core_noise_and_respects_batch_index(pos, core, comfy):
    import comfy.sample

    ncs = core[0]
    inverted = torch.randn(8, 4, 8, 8)
    mix, report = pos.GaussianNoiseMix.execute(inverted={"samples": inverted}, eta=0.2, seed=5).args
    latent = {"samples": torch.zeros(8, 4, 8, 8)}
    eps = comfy.sample.prepare_noise(latent["samples"], 5)
    torch.testing.assert_close(mix.generate_noise(latent), (eps + 0.2 * inverted) / math.sqrt(1.04))
    picked = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [3, 6]}
    eps = ncs.RandomNoise.execute(5).args[0].generate_noise(picked)
    torch.testing.assert_close(mix.generate_noise(picked), (eps + 0.2 * inverted[[3, 6]]) / math.sqrt(1.04))
    # an upstream NOISE replaces the seed
    other = pos.GaussianNoiseMix.execute(inverted={"samples": inverted}, eta=0.0, seed=5,
                                         noise=ncs.RandomNoise.execute(9).args[0]).args[0]
    assert other.seed == 9
    assert torch.equal(other.generate_noise(latent), comfy.sample.prepare_noise(latent["samples"], 9))
    assert "eta 0.2" in report and "expected std of the mix" in report


@pytest.mark.parametrize("name, latent_shape, message", [
    ("wan", (1, 16, 4, 8, 8), "frames differ: inverted noise has 3, the latent has 4"),
    ("wan", (1, 16, 3, 8, 16), "width differ"),
    ("wan", (1, 4, 3, 8, 8), "channels differ"),
    ("wan", (3, 16, 8, 8), "frames differ: inverted noise has 3, the latent has 1"),  # core makes 4-D latents 5-D
    ("eps", (4, 4, 8, 8), "layout mismatch: the inverted noise is 5-D"),
])
def test_mix_shape_mismatch_is_a_clear_error(pos, core, models, name, latent_shape, message):
    ncs = core[0]
    model, latent, cond, make = models[name]
    mix = pos.GaussianNoiseMix.execute(inverted={"samples": torch.randn(WAN_SHAPE)}, eta=0.2, seed=0).args[0]
    guider = ncs.CFGGuider.execute(model, make(1), make(2), 1.0).args[0]
    sigmas = ncs.BasicScheduler.execute(model, "simple", 2, 1.0).args[0]
    with pytest.raises(ValueError, match=message):
        ncs.SamplerCustomAdvanced.execute(mix, guider, ncs.KSamplerSelect.execute("euler").args[0], sigmas,
                                          {"samples": torch.ones(latent_shape)})  # non-empty: core keeps channels


# ------------------------------------------------------------------------------------------------ hybrid semantics


def _sample_advanced(ncs, guider, model, sampler_name, steps, shape, seed=3):
    sigmas = ncs.BasicScheduler.execute(model, "simple", steps, 1.0).args[0]
    with torch.inference_mode():
        return ncs.SamplerCustomAdvanced.execute(ncs.RandomNoise.execute(seed).args[0], guider,
                                                 ncs.KSamplerSelect.execute(sampler_name).args[0], sigmas,
                                                 {"samples": torch.zeros(shape)}).args[0]["samples"]


@pytest.mark.parametrize("sampler_name", ["euler", "dpmpp_2m", "heun"])
def test_gamma_zero_and_one_are_bitwise_core_cfg_guider(pos, core, models, sampler_name):
    ncs = core[0]
    model, latent, _, make = models["wan"]
    rewritten, original, negative = make(1), make(2), make(3)
    for gamma, prompt in ((0.0, original), (1.0, rewritten)):
        ours = pos.HybridSemanticGuider.execute(model, rewritten, original, negative, 4.0, gamma).args[0]
        ref = ncs.CFGGuider.execute(model, prompt, negative, 4.0).args[0]
        a = _sample_advanced(ncs, ours, model, sampler_name, 5, latent.shape)
        b = _sample_advanced(ncs, ref, model, sampler_name, 5, latent.shape)
        assert torch.equal(a, b), (sampler_name, gamma)
    mixed = pos.HybridSemanticGuider.execute(model, rewritten, original, negative, 4.0, 0.4).args[0]
    assert not torch.equal(_sample_advanced(ncs, mixed, model, sampler_name, 5, latent.shape), b)


@pytest.mark.parametrize("sampler_name", ["euler", "ddim", "dpmpp_2m"])
def test_switch_lands_at_step_m(pos, core, models, sampler_name, recording):
    ncs = core[0]
    model, latent, _, make = models["wan"]
    rewritten, original, negative = make(1), make(2), make(3)
    recorder, calls = recording(model, {"rewritten": rewritten[0][0], "original": original[0][0]})
    guider = pos.HybridSemanticGuider.execute(recorder, rewritten, original, negative, 3.0, 0.3).args[0]
    _sample_advanced(ncs, guider, recorder, sampler_name, 10, latent.shape)
    sigmas = [float(s) for s in ncs.BasicScheduler.execute(model, "simple", 10, 1.0).args[0]]
    assert [s for s, _ in calls] == pytest.approx(sigmas[:-1], rel=0, abs=0)  # one call per step
    assert [name for _, name in calls] == ["rewritten"] * 3 + ["original"] * 7  # m = floor(10 * 0.3) = 3


def test_one_node_sampler_on_frames_as_batch_with_heun_and_a_noise(pos, core, models, recording):
    """heun's correction call of step i runs at sigmas[i+1], so it belongs to step i+1 (the documented rule)."""
    ncs = core[0]
    model, latent, _, make = models["eps"]
    rewritten, original, negative = make(1), make(2), make(3)
    recorder, calls = recording(model, {"rewritten": rewritten[0][0], "original": original[0][0]})
    empty = {"samples": torch.zeros(EPS_SHAPE)}
    before = empty["samples"].clone()
    with torch.inference_mode():
        out, schedule = pos.HybridSemanticSampler.execute(
            recorder, seed=1, steps=6, cfg=2.0, sampler_name="heun", scheduler="simple", positive_rewritten=rewritten,
            positive_original=original, negative=negative, latent_image=empty, gamma=0.5, denoise=1.0).args
    sigmas = [float(s) for s in ncs.BasicScheduler.execute(model, "simple", 6, 1.0).args[0]]
    m = 3
    for sigma, name in calls:
        assert name == ("rewritten" if sigma > sigmas[m] else "original"), (sigma, name)
    assert sum(name == "rewritten" for _, name in calls) == m + (m - 1)  # first calls of 0..2, corrections of 0..1
    assert "switch step m = 3" in schedule and out["samples"].shape == EPS_SHAPE
    assert torch.equal(empty["samples"], before)
    # the optional NOISE replaces the seeded noise; eta 0 gives the seeded run back bitwise
    mix = pos.GaussianNoiseMix.execute(inverted={"samples": torch.randn(EPS_SHAPE)}, eta=0.0, seed=1).args[0]
    with torch.inference_mode():
        again = pos.HybridSemanticSampler.execute(
            model, seed=999, steps=6, cfg=2.0, sampler_name="heun", scheduler="simple", positive_rewritten=rewritten,
            positive_original=original, negative=negative, latent_image=empty, gamma=0.5, denoise=1.0,
            noise=mix).args[0]
    assert torch.equal(again["samples"], out["samples"])


def test_switch_step_override(pos, core, models, recording):
    ncs = core[0]
    model, latent, _, make = models["wan"]
    rewritten, original, negative = make(1), make(2), make(3)
    recorder, calls = recording(model, {"rewritten": rewritten[0][0], "original": original[0][0]})
    guider = pos.HybridSemanticGuider.execute(recorder, rewritten, original, negative, 1.0, 0.9, switch_step=2).args[0]
    _sample_advanced(ncs, guider, recorder, "euler", 6, latent.shape)
    assert [name for _, name in calls] == ["rewritten"] * 2 + ["original"] * 4


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_each_give_a_clear_message(pos, models):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    model, latent, cond, make = models["wan"]
    c = make(1)
    bad = [
        (lambda: pos.HybridSemanticGuider.execute(model, c, c, c, 4.0, 1.5), "gamma is 1.5, above its maximum of 1"),
        (lambda: pos.HybridSemanticGuider.execute(model, c, c, c, 4.0, -0.1), "gamma is -0.1"),
        (lambda: pos.HybridSemanticGuider.execute(model, c, "text", c, 4.0, 0.5),
         "positive_original is not a CONDITIONING"),
        (lambda: pos.GaussianNoiseMix.execute(inverted={"samples": latent}, eta=-0.5, seed=0), "eta is -0.5"),
        (lambda: pos.GaussianNoiseMix.execute(inverted=latent, eta=0.2, seed=0), "inverted is not a LATENT"),
        (lambda: pos.GaussianNoiseMix.execute(inverted={"samples": latent}, eta=0.2, seed=0, noise="x"), "not a NOISE"),
        (lambda: invert(pos, model, latent, cond, cfg=5.0), "cfg is 5 but no negative"),
        (lambda: invert(pos, model, latent * float("nan"), cond), "latent contains NaN/inf"),
        (lambda: invert(pos, model, latent[0, 0], cond), "expected \\[frames, C, h, w\\]"),
        (lambda: invert(pos, model, latent, cond, sigmas=torch.tensor([0.0, 0.5, 1.0])), "not strictly decreasing"),
        (lambda: invert(pos, model, latent, cond, sigmas=torch.tensor([0.5])), "at least 2"),
        (lambda: invert(pos, model, latent, cond, sigmas=torch.tensor([0.5, 1.0, 0.0])), "not strictly decreasing"),
        (lambda: invert(pos, model, latent, "", ), "conditioning is not a CONDITIONING"),
        (lambda: pos.HybridSemanticSampler.execute(model, 0, 2, 1.0, "euler", "simple", c, c, c, {"samples": latent},
                                                   2.0, 1.0), "gamma is 2"),
    ]
    for call, message in bad:
        with pytest.raises(SearchPriorsError, match=message):
            call()


def test_a_latent_of_another_layout_or_vae_names_the_model_and_the_fix(pos, models):
    """A 5-D latent for a frames-as-batch model gave a torch permute error, a 16-channel latent "expected input
    ... to have 4 channels"; now the message says what the MODEL takes."""
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    eps, _, eps_cond, _ = models["eps"]
    wan, wan_latent, wan_cond, _ = models["wan"]
    cases = [
        (eps, torch.randn(1, 4, 3, 8, 8), eps_cond, r"latent has shape \[1, 4, 3, 8, 8\], but this MODEL .* takes 4-D "
                                                    r"latents \[frames, 4, h, w\] \(frames as batch\)"),
        (eps, torch.randn(4, 16, 8, 8), eps_cond, r"latent has 16 channels .* takes 4-channel latents .* another "
                                                  r"model's VAE"),
        (wan, torch.randn(3, 16, 8, 8), wan_cond, r"takes 5-D latents \[batch, 16, frames, h, w\]"),
    ]
    for model, latent, cond, message in cases:
        with pytest.raises(SearchPriorsError, match=message):
            invert(pos, model, latent, cond, steps=2)


# ------------------------------------------------------------------------------------------------ every sampler

# Samplers that cannot run on the tiny models, with the reason (none so far: every name ComfyUI lists runs).
UNRUNNABLE_SAMPLERS: dict[str, str] = {}


def _rule(sigma: float, sigmas: list, gamma: float) -> str:
    """POS Eq. 8 as the pack states it, written out independently of distill.hybrid_semantics: m = floor(T gamma);
    m = 0: the original prompt throughout, m = T: the rewritten one throughout, else rewritten iff sigma >
    sigmas[m]."""
    total = len(sigmas) - 1
    m = math.floor(total * gamma + 1e-9)
    if m == 0:
        return "original"
    if m == total:
        return "rewritten"
    return "rewritten" if sigma > sigmas[m] else "original"


def test_every_sampler_uses_the_prompt_the_rule_names_at_every_call(pos, core, models, recording):
    """Every model call of every sampler ComfyUI lists (two-call, ancestral, SDE, multistep, adaptive) gets the
    rewritten prompt iff its sigma > sigmas[m], for gamma 0, 0.5 and 1 (T = 6 karras steps: m = 0, 3, 6).

    One test walks the whole list (read from ComfyUI at run time, so a sampler added by a newer ComfyUI is
    checked too) and reports every sampler that breaks the rule."""
    import comfy.samplers

    ncs = core[0]
    model, latent, _, make = models["eps"]
    rewritten, original, negative = make(1), make(2), make(3)
    sigma_tensor = ncs.BasicScheduler.execute(model, "karras", 6, 1.0).args[0]
    sigmas = [float(s) for s in sigma_tensor]
    names = list(comfy.samplers.KSampler.SAMPLERS)
    assert {"dpm_2", "dpmpp_sde", "seeds_2", "heun", "dpm_adaptive", "uni_pc", "ddim"} <= set(names)
    failures, checked = [], []
    for sampler_name in names:
        if sampler_name in UNRUNNABLE_SAMPLERS:
            continue
        for gamma in (0.0, 0.5, 1.0):
            recorder, calls = recording(model, {"rewritten": rewritten[0][0], "original": original[0][0]})
            guider = pos.HybridSemanticGuider.execute(recorder, rewritten, original, negative, 2.0, gamma).args[0]
            with torch.inference_mode():
                out = ncs.SamplerCustomAdvanced.execute(ncs.RandomNoise.execute(5).args[0], guider,
                                                        ncs.KSamplerSelect.execute(sampler_name).args[0],
                                                        sigma_tensor.clone(),
                                                        {"samples": torch.zeros(EPS_SHAPE)}).args[0]["samples"]
            wrong = [(round(s, 5), name) for s, name in calls if name != _rule(s, sigmas, gamma)]
            if not torch.isfinite(out).all() or len(calls) < 2 or "?" in {n for _, n in calls}:
                failures.append(f"{sampler_name} gamma {gamma}: bad run ({len(calls)} calls)")
            if wrong:
                failures.append(f"{sampler_name} gamma {gamma}: calls against the rule (sigma, prompt): {wrong}")
            if gamma == 0.5 and {name for _, name in calls} != {"rewritten", "original"}:
                failures.append(f"{sampler_name} gamma 0.5: only {sorted({n for _, n in calls})} used")
        checked.append(sampler_name)
    assert not failures, f"m = 3 of sigmas {[round(s, 4) for s in sigmas]}:\n" + "\n".join(failures)
    assert len(checked) == len(names) - len(UNRUNNABLE_SAMPLERS) and len(checked) >= 40, checked


# ------------------------------------------------------------------------------------------------ presets


def test_pos_presets_fill_eta_and_gamma_and_custom_keeps_the_widgets(pos, core, models, recording):
    from comfyui_searchpriors.distill.pos_presets import DEFAULT_ETA, DEFAULT_GAMMA, PRESET_CHOICES

    for node, widget in ((pos.GaussianNoiseMix, "eta"), (pos.HybridSemanticGuider, "gamma"),
                         (pos.HybridSemanticSampler, "gamma")):
        inputs = node.define_schema().inputs
        preset = next(i for i in inputs if i.id == "preset")  # after it only inputs added later (two-stage sampling)
        assert preset.optional and preset.default == "custom" and preset.options == PRESET_CHOICES
        assert next(i for i in inputs if i.id == widget).default == (DEFAULT_ETA if widget == "eta" else DEFAULT_GAMMA)
    assert (DEFAULT_ETA, DEFAULT_GAMMA) == (0.2, 0.04)   # one row of the paper's table: ModelScope on MSR-VTT
    ncs = core[0]
    model, latent, _, make = models["wan"]
    inverted = {"samples": torch.randn(WAN_SHAPE, generator=torch.Generator().manual_seed(4))}
    empty = {"samples": torch.zeros(WAN_SHAPE)}
    ucf = "ModelScope (UCF-101): eta 0.2, gamma 1.0"
    by_preset = pos.GaussianNoiseMix.execute(inverted=inverted, eta=7.0, seed=3, preset=ucf)
    by_widget = pos.GaussianNoiseMix.execute(inverted=inverted, eta=0.2, seed=3).args[0]
    assert torch.equal(by_preset.args[0].generate_noise(empty), by_widget.generate_noise(empty))
    assert "eta from the preset 'ModelScope (UCF-101)" in by_preset.args[1]
    custom = pos.GaussianNoiseMix.execute(inverted=inverted, eta=7.0, seed=3, preset="custom").args[0]
    assert not torch.equal(custom.generate_noise(empty), by_widget.generate_noise(empty))
    # gamma 1.0 from the preset: every call rewritten although the widget says 0
    rewritten, original, negative = make(1), make(2), make(3)
    recorder, calls = recording(model, {"rewritten": rewritten[0][0], "original": original[0][0]})
    guider = pos.HybridSemanticGuider.execute(recorder, rewritten, original, negative, 2.0, 0.0, preset=ucf).args[0]
    _sample_advanced(ncs, guider, recorder, "euler", 4, latent.shape)
    assert [name for _, name in calls] == ["rewritten"] * 4
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError, match="Unknown POS preset 'Zeroscope'.*custom"):
        pos.HybridSemanticGuider.execute(model, rewritten, original, negative, 2.0, 0.1, preset="Zeroscope")
