"""POS nodes on more of the video models ComfyUI 0.3.75 runs natively, each a tiny random model of ComfyUI's
OWN class loaded from a state dict with ComfyUI's key names (so detection, model_base, extra conds and the
latent format are the real ones): Wan 2.2 TI2V 5B (WAN22, 48-channel latent), HunyuanVideo 1.5 (32-channel
latent, image-conditioning channels + mask concatenated, Qwen2.5-VL text, optional byT5 glyph tokens) and
LTX-Video 0.9.x (128-channel latent, T5 text with its attention mask, frame rate). And few-step settings
(4-8 steps at cfg 1, as with distilled LoRAs)."""

from __future__ import annotations

import re

import pytest
import torch

# name -> (loader, conditioning maker, latent shape [B, C, T, h, w], model class, model_base class)
MODELS = {
    "wan22_5b": ("load_tiny_wan22_5b", "wan_conditioning", (1, 48, 3, 8, 8), "WAN22_T2V", "WAN22"),
    "hunyuan15": ("load_tiny_hunyuan15", "hunyuan15_conditioning", (1, 32, 3, 8, 8), "HunyuanVideo15",
                  "HunyuanVideo15"),
    "ltxv": ("load_tiny_ltxv", "ltxv_conditioning", (1, 128, 3, 4, 4), "LTXV", "LTXV"),
}


@pytest.fixture(scope="module")
def loaded(tiny):
    return {name: getattr(tiny, spec[0])(seed=0) for name, spec in MODELS.items()}


def setup(tiny, loaded, name):
    _, cond_name, shape, _, _ = MODELS[name]
    make = getattr(tiny, cond_name)
    return loaded[name], make, shape, tiny.smooth_video_latent(shape, seed=1)


def invert(pos, model, latent, cond, steps, refine, **extra):
    with torch.inference_mode():
        return pos.DDIMVideoInvert.execute(model=model, latent={"samples": latent}, conditioning=cond, steps=steps,
                                           scheduler="simple", refine_iterations=refine, cfg=1.0,
                                           check_reconstruction=True, **extra).args


def error_of(report: str) -> float:
    return float(re.search(r"relative error ([0-9.e+-]+)", report).group(1))


def test_the_tiny_models_are_comfys_own_classes(loaded):
    for name, (_, _, shape, config, model_class) in MODELS.items():
        patcher = loaded[name]
        assert type(patcher.model.model_config).__name__ == config
        assert type(patcher.model).__name__ == model_class
        assert patcher.model.latent_format.latent_channels == shape[1]


@pytest.mark.parametrize("name", list(MODELS))
def test_inversion_regenerates_the_latent_on_each_model(pos, tiny, loaded, name):
    model, make, shape, latent = setup(tiny, loaded, name)
    errors = []
    for refine in (0, 3):   # the model's own shift (Wan 2.2 5B 8, HunyuanVideo 1.5 7, LTXV 2.37 Flux-style)
        noise, report, k = invert(pos, model, latent, make(100), steps=20, refine=refine)
        assert noise["samples"].shape == shape and torch.isfinite(noise["samples"]).all() and k == 20
        assert "flow (CONST" in report
        errors.append(error_of(report))
    assert errors[1] < errors[0] / 10 and errors[1] < 1e-2, errors   # measured: 4e-4, 2.4e-3, 8.1e-3


@pytest.mark.parametrize("name", list(MODELS))
def test_pos_in_all_with_each_models_conditioning(pos, ncs, tiny, loaded, name, recording):
    """Invert -> mix -> hybrid guider through core SamplerCustomAdvanced, with the model's real extra conds: the
    rewritten prompt for calls above sigmas[m], the original after, and the conds each model needs reach it."""
    model, make, shape, latent = setup(tiny, loaded, name)
    extra = {"glyph_tokens": 3} if name == "hunyuan15" else {}
    rewritten, original, negative = make(1, **extra), make(2), make(3)
    noise, _, _ = invert(pos, model, latent, make(100), steps=10, refine=3)
    mix = pos.GaussianNoiseMix.execute(inverted=noise, eta=1.0, seed=0).args[0]
    keys: list = []
    recorder, calls = recording(model, {"rewritten": rewritten[0][0], "original": original[0][0]}, keys)
    guider = pos.HybridSemanticGuider.execute(recorder, rewritten, original, negative, 1.0, 0.3).args[0]
    sigmas = ncs.BasicScheduler.execute(model, "simple", 10, 1.0).args[0]
    with torch.inference_mode():
        out = ncs.SamplerCustomAdvanced.execute(mix, guider, ncs.KSamplerSelect.execute("euler").args[0], sigmas,
                                                {"samples": torch.zeros(shape)}).args[0]["samples"]
    assert [n for _, n in calls] == ["rewritten"] * 3 + ["original"] * 7
    assert out.shape == shape and torch.isfinite(out).all()
    needed = {"wan22_5b": set(), "hunyuan15": {"c_concat", "guidance", "txt_byt5"},
              "ltxv": {"frame_rate", "attention_mask"}}[name]
    assert needed <= set(keys[0]), keys[0]   # the first calls: the rewritten prompt, with its glyph tokens
    if name == "hunyuan15":
        assert "txt_byt5" not in keys[-1]    # the original prompt has none


def test_a_latent_of_another_models_vae_is_refused_with_the_fix(pos, tiny, loaded):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    model, make, _, _ = setup(tiny, loaded, "wan22_5b")
    with pytest.raises(SearchPriorsError, match=r"16 channels .* takes 48-channel latents .* VAE that belongs"):
        invert(pos, model, torch.randn(1, 16, 3, 8, 8), make(1), steps=2, refine=0)
    hunyuan, make_h, _, latent = setup(tiny, loaded, "hunyuan15")
    with pytest.raises(SearchPriorsError, match=r"high_noise_model is a LTXV but model is a HunyuanVideo15"):
        invert(pos, hunyuan, latent, make_h(1), steps=2, refine=0, high_noise_model=loaded["ltxv"], boundary=0.5)


# ------------------------------------------------------------------------------------------------ few steps


@pytest.mark.parametrize("steps", [4, 8])
def test_few_step_settings_invert_and_switch(pos, tiny, loaded, steps, recording):
    """4-8 steps at cfg 1 (distilled LoRAs): the inversion has one call per step (refinement makes each large
    step land back), the switch step is floor(steps * gamma) of those few steps, and cfg 1 makes one positive
    call per step (core skips the negative)."""
    model, make, shape, latent = setup(tiny, loaded, "wan22_5b")
    # few large steps: plain inversion drifts (0.30 at 4 steps); 6 refine iterations land each step back
    errors = [error_of(invert(pos, model, latent, make(100), steps=steps, refine=r)[1]) for r in (0, 6)]
    assert errors[1] < errors[0] / 20 and errors[1] < 1e-2, errors
    rewritten, original, negative = make(1), make(2), make(3)
    keys: list = []
    recorder, calls = recording(model, {"rewritten": rewritten[0][0], "original": original[0][0],
                                        "negative": negative[0][0]}, keys)
    with torch.inference_mode():
        out, schedule = pos.HybridSemanticSampler.execute(
            recorder, seed=1, steps=steps, cfg=1.0, sampler_name="euler", scheduler="simple",
            positive_rewritten=rewritten, positive_original=original, negative=negative,
            latent_image={"samples": torch.zeros(shape)}, gamma=0.25, denoise=1.0).args
    m = steps // 4
    assert [n for _, n in calls] == ["rewritten"] * m + ["original"] * (steps - m)   # never the negative
    assert f"switch step m = {m}" in schedule and torch.isfinite(out["samples"]).all()
    # a gamma below 1/steps switches at step 0: the schedule says so and how to get one rewritten step
    with torch.inference_mode():
        _, schedule = pos.HybridSemanticSampler.execute(
            model, seed=1, steps=steps, cfg=1.0, sampler_name="euler", scheduler="simple",
            positive_rewritten=rewritten, positive_original=original, negative=negative,
            latent_image={"samples": torch.zeros(shape)}, gamma=0.1, denoise=1.0).args
    assert "original prompt throughout" in schedule and f"gamma >= {1 / steps:g}" in schedule


def test_few_step_two_experts_split(pos, tiny):
    """A 4-step distilled A14B run (shift 5, boundary 0.875): the high expert takes the first step(s) by Wan's
    rule, and DDIM Video Invert's boundary_step says how many."""
    from comfy_extras import nodes_model_advanced

    shift = nodes_model_advanced.ModelSamplingSD3()
    low, high = (shift.patch(tiny.load_tiny_wan21(seed=s), 5.0)[0] for s in (0, 7))
    latent = tiny.smooth_video_latent((1, 16, 3, 8, 8), seed=1)
    noise, report, k = invert(pos, low, latent, tiny.wan_conditioning(100), steps=4, refine=6, high_noise_model=high,
                              boundary=0.875)
    # shift 5: sigmas 1, 0.9375, 0.833, 0.625, 0 -> steps 0 and 1 start at or above 0.875
    assert k == 2 and "high-noise expert for steps 0..1" in report and torch.isfinite(noise["samples"]).all()
    assert "model sampling differs" not in report   # both patched by core ModelSamplingSD3 with shift 5
    plain = error_of(invert(pos, low, latent, tiny.wan_conditioning(100), steps=4, refine=0, high_noise_model=high,
                            boundary=0.875)[1])
    # the error sits in the first inversion step (sigma 0 -> 0.625, the low expert's): refinement shrinks it
    assert error_of(report) < plain / 2, (error_of(report), plain)
