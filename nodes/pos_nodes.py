"""POS generation nodes (paper ../shared/papers/pos.txt, Sec. 3-4): DDIM Video Invert (Eq. 2), Gaussian Noise
Mix (Eq. 4), Hybrid Semantic Guider and Sampler (Eq. 8).

They take and give ComfyUI's own types (MODEL, CONDITIONING, LATENT, SIGMAS, NOISE, GUIDER), so they work
with every model ComfyUI samples (eps, v and flow models; frames-as-batch [F,C,h,w] and 5-D [B,C,T,h,w]
latents) and compose with core SamplerCustomAdvanced, KSampler's schedulers and VAE nodes.
"""

from __future__ import annotations

import math

import torch
from comfy_api.v0_0_2 import io, ui

import comfy.samplers

from ..distill.experts import DEFAULT_BOUNDARY, check_boundary
from ..distill.hybrid_semantics import check_gamma
from ..distill.inversion import InversionError
from ..distill.noise_mix import check_eta, mixed_std, noise_stats
from ..distill.pos_presets import CUSTOM, DEFAULT_ETA, DEFAULT_GAMMA, PRESET_CHOICES, resolve
from ..retrieval.errors import SearchPriorsError
from .comfy_internals import glue
from .comfy_internals.hybrid_guider import make_guider, sample_hybrid
from .comfy_internals.inversion_sampler import invert_latent
from .comfy_internals.noise_objects import MixedInvertedNoise, noise_of

CATEGORY = "SearchPriors/pos"

ETA_TOOLTIP = ("eta of Eq. 4: eps_mix = (eps + eta * eps_inv) / sqrt(1 + eta^2). 0 = plain random noise (bitwise core "
               "RandomNoise), larger = closer to the inverted video. Paper, Table 1: ModelScope 0.2, Tune-A-Video "
               "0.1, VideoCrafter 0.3, SCVideo 0.5 (best in its ablation); image models 0.05.")
GAMMA_TOOLTIP = ("gamma of Eq. 8: the rewritten prompt conditions the first m = floor(T * gamma) of the T sampling "
                 "steps, the original prompt the rest. 0 = original only, 1 = rewritten only. Paper, Table 1: ModelScope 0.04 "
                 "(MSR-VTT) and 1.0 (UCF-101), Tune-A-Video 0.5, VideoCrafter 0.1, SCVideo 0.1 / 1.0; images 0.4.")
PRESET_TOOLTIP = ("The POS paper's eta / gamma for a backbone (Table 1). 'custom' (default) uses this node's own "
                  "widget; a preset replaces it (set the same preset on Gaussian Noise Mix and the hybrid guider / "
                  "sampler to fill both).")
BOUNDARY_TOOLTIP = ("With high_noise_model: where the experts hand over, as a fraction of the 1000 timesteps (Wan 2.2 "
                    "T2V 0.875, I2V 0.9). A step belongs to the high-noise expert when the timestep of the sigma it "
                    "starts from is >= boundary * 1000 (Wan: sigma >= boundary). Must lie strictly between 0 and 1")
SWITCH_TOOLTIP = ("Optional: the switch step m itself (steps 0..m-1 rewritten), overriding gamma; -1 = use gamma. "
                  "Clamped to the number of steps.")


def _error(message: str) -> SearchPriorsError:
    return SearchPriorsError(message)


def _latent_samples(latent, what: str) -> torch.Tensor:
    if not isinstance(latent, dict) or not torch.is_tensor(latent.get("samples")):
        raise _error(f"{what} is not a LATENT (a dict with 'samples'); wire a VAE Encode or latent node.")
    samples = latent["samples"]
    if getattr(samples, "is_nested", False):
        raise _error(f"{what} is a nested (multi-shape) latent; give one video latent.")
    if samples.ndim not in (4, 5):
        raise _error(f"{what} has shape {list(samples.shape)}; expected [frames, C, h, w] (frames as batch, "
                     f"ModelScope) or [batch, C, frames, h, w] (Wan and other video models).")
    if not bool(torch.isfinite(samples).all()):
        raise _error(f"{what} contains NaN/inf values; re-encode the frames.")
    return samples


def _check_latent_fits_model(model, samples: torch.Tensor, what: str) -> None:
    """The latent's layout and channels are the MODEL's (its latent format): a 5-D latent for a frames-as-batch
    model, or one from another model's VAE, would otherwise fail deep inside torch with a shape error."""
    latent_format = getattr(getattr(model, "model", None), "latent_format", None)
    channels = getattr(latent_format, "latent_channels", None)
    dims = getattr(latent_format, "latent_dimensions", None)
    if not isinstance(channels, int) or not isinstance(dims, int):
        return
    expected = "[frames, C, h, w] (frames as batch)" if dims == 2 else "[batch, C, frames, h, w]"
    expected = expected.replace("C", str(channels))
    if samples.ndim != dims + 2:
        raise _error(f"{what} has shape {list(samples.shape)}, but this MODEL ({type(model.model).__name__}) takes "
                     f"{dims + 2}-D latents {expected}: encode the reference frames with this model's own VAE (VAE "
                     f"Encode of Reference Video Frames), or connect the MODEL the latent was made for.")
    if samples.shape[1] != channels:
        raise _error(f"{what} has {samples.shape[1]} channels (shape {list(samples.shape)}), but this MODEL "
                     f"({type(model.model).__name__}) takes {channels}-channel latents {expected}: the latent comes "
                     f"from another model's VAE. Encode the frames with the VAE that belongs to this MODEL.")


def _same_sampling(a, b) -> bool:
    # by the classes' names: core ModelSamplingSD3 makes a new class for every model it patches
    names = lambda x: [c.__name__ for c in type(x).__mro__]  # noqa: E731
    return names(a) == names(b) and all(
        math.isclose(float(getattr(a, n, 0.0)), float(getattr(b, n, 0.0)), rel_tol=1e-6) for n in ("shift", "multiplier"))


def _check_conditioning(value, what: str) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(c, (list, tuple)) and len(c) == 2 for c in value):
        raise _error(f"{what} is not a CONDITIONING; wire a CLIP Text Encode (the paper inverts with the empty "
                     f"prompt: CLIP Text Encode of '').")


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3e}"


class DDIMVideoInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_DDIMVideoInvert",
            display_name="DDIM Video Invert (POS)",
            category=CATEGORY,
            description="POS Eq. 2: inverts a video latent (frames through VAE Encode) into the noise that "
                        "regenerates it: DDIM inversion for eps/v models, the reverse Euler ODE for flow models "
                        "(Wan), with optional fixed-point refinement per step. The output is unit-variance noise, "
                        "what a NOISE gives a sampler that starts from an empty latent with these sigmas.",
            inputs=[
                io.Model.Input("model", tooltip="The model that samples; with high_noise_model connected, the "
                                                "low-noise expert (Wan 2.2 A14B: wan2.2_t2v_low_noise_14B)"),
                io.Latent.Input("latent", tooltip="The reference video's latent (VAE Encode of its frames)"),
                io.Conditioning.Input("conditioning", tooltip="The paper inverts with the empty prompt: CLIP Text "
                                                              "Encode of ''"),
                io.Int.Input("steps", default=50, min=1, max=10000,
                             tooltip="Sampling steps the noise is for; sample with the same steps and scheduler"),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="simple"),
                io.Int.Input("refine_iterations", default=0, min=0, max=50,
                             tooltip="Fixed-point iterations per step so that the sampling step lands back on the "
                                     "previous latent. 0 = plain DDIM inversion as in the paper (1 model call per "
                                     "step); each iteration adds one call per step and cuts the reconstruction error "
                                     "(benchmarks/README.md, inversion: 1-3 is plenty at 20+ steps)"),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="1 = no guidance (the paper); above 1 needs a negative and reconstructs "
                                       "less exactly"),
                io.Conditioning.Input("negative", optional=True, tooltip="Only used when cfg is not 1"),
                io.Sigmas.Input("sigmas", optional=True,
                                tooltip="The sampling sigmas (highest first, ending at 0); replaces steps and "
                                        "scheduler. The inversion walks them in reverse"),
                io.Boolean.Input("check_reconstruction", default=False, optional=True,
                                 tooltip="Regenerate from the noise with euler on the same sigmas and report the "
                                         "relative error (one more sampling pass; with two experts, two-stage)"),
                io.Model.Input("high_noise_model", optional=True,
                               tooltip="Wan 2.2 A14B: the high-noise expert (then 'model' is the low-noise one). "
                                       "Each step is inverted through the expert that samples it"),
                io.Float.Input("boundary", default=DEFAULT_BOUNDARY, min=0.0, max=1.0, step=0.005, round=0.001,
                               optional=True, tooltip=BOUNDARY_TOOLTIP),
            ],
            outputs=[
                io.Latent.Output("inverted_noise", display_name="inverted_noise",
                                 tooltip="Unit-variance noise in the model's latent space (feed Gaussian Noise Mix)"),
                io.String.Output("report", display_name="report"),
                io.Int.Output("boundary_step", display_name="boundary_step",
                              tooltip="With two experts: k, the steps the high-noise expert samples (wire to "
                                      "SplitSigmas' step, or end_at_step / start_at_step of the two samplers); "
                                      "without: the number of steps"),
            ],
        )

    @classmethod
    def execute(cls, model, latent, conditioning, steps: int, scheduler: str, refine_iterations: int, cfg: float,
                negative=None, sigmas=None, check_reconstruction: bool = False, high_noise_model=None,
                boundary: float = DEFAULT_BOUNDARY) -> io.NodeOutput:
        samples = _latent_samples(latent, "latent")
        _check_latent_fits_model(model, samples, "latent")
        if high_noise_model is not None:
            glue.check_expert_pair(model, high_noise_model)
            try:
                boundary = check_boundary(boundary)
            except ValueError as exc:
                raise _error(f"DDIM Video Invert: {exc}") from exc
        _check_conditioning(conditioning, "conditioning")
        if refine_iterations < 0:
            raise _error(f"refine_iterations is {refine_iterations}; use 0 or more.")
        if not math.isclose(cfg, 1.0) and negative is None:
            raise _error(f"cfg is {cfg:g} but no negative conditioning is wired; wire one (e.g. CLIP Text Encode "
                         f"of '') or set cfg to 1.0 (the paper inverts without guidance).")
        if negative is not None:
            _check_conditioning(negative, "negative")
        model_sampling = model.get_model_object("model_sampling")
        if sigmas is None:
            if steps < 1:
                raise _error(f"steps is {steps}; use 1 or more.")
            sampling_sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, steps).cpu()
            source = f"{scheduler} scheduler, {steps} steps"
        else:
            if not torch.is_tensor(sigmas) or sigmas.ndim != 1:
                raise _error("sigmas is not a SIGMAS (a 1-D tensor); wire a scheduler node.")
            sampling_sigmas = sigmas.detach().cpu()
            source = f"SIGMAS input, {sampling_sigmas.shape[0] - 1} steps"
        progress = glue.progress_callback()
        recon_progress = glue.progress_callback()

        def on_reconstruction_step(step, _x0, _x, total):
            recon_progress(step + 1, total)

        try:
            outcome = invert_latent(model, samples, conditioning, sampling_sigmas, refine_iterations, cfg=cfg,
                                    negative=negative if not math.isclose(cfg, 1.0) else None, on_step=progress,
                                    check_reconstruction=bool(check_reconstruction),
                                    on_reconstruction_step=on_reconstruction_step, high_model=high_noise_model,
                                    boundary=boundary)
        except (InversionError, ValueError) as exc:
            raise _error(f"DDIM Video Invert: {exc}") from exc
        report = cls.report(outcome, model_sampling, samples, source, refine_iterations, cfg)
        if high_noise_model is not None:
            report = report.replace("\n", f"\n{outcome.split}\n", 1)
            high_sampling = high_noise_model.get_model_object("model_sampling")
            if not _same_sampling(model_sampling, high_sampling):
                report += ("\nWARNING: the two experts' model sampling differs (shift or type): give both the same "
                           "ModelSamplingSD3 shift, as the Wan 2.2 template does (8 on both).")
        boundary_step = outcome.high_noise_steps if outcome.high_noise_steps is not None else len(outcome.sigmas) - 1
        return io.NodeOutput({"samples": outcome.noise}, report, boundary_step, ui=ui.PreviewText(report))

    @staticmethod
    def report(outcome, model_sampling, samples, source: str, refine_iterations: int, cfg: float) -> str:
        result = outcome.result
        stats = noise_stats(outcome.noise)
        lines = [
            f"DDIM Video Invert: {outcome.kind}; latent {list(samples.shape)}; {source}",
            f"sigma {outcome.sigmas[-1]:.6g} -> {outcome.sigmas[0]:.6g} (model sigma_max "
            f"{float(model_sampling.sigma_max):.6g}); noise = x / {outcome.noise_scale:.6g}",
            f"refine_iterations {refine_iterations}, cfg {cfg:g}: {result.model_calls} model calls, max fixed-point "
            f"residual {_fmt(result.max_residual)}",
            f"inverted noise: mean {stats['mean']:+.4f}, std {stats['std']:.4f}",
        ]
        if outcome.reconstruction_error is not None:
            lines.append(f"reconstruction (euler from this noise, same sigmas): relative error "
                         f"{outcome.reconstruction_error:.3e}")
        warnings = []
        shift = getattr(model_sampling, "shift", None)
        if "flow" in outcome.kind and shift is not None and not math.isclose(float(shift), 1.0):
            warnings.append(f"flow shift is {float(shift):g}, not 1: the inversion follows the shifted schedule, so "
                            f"sample with the same shift, scheduler and steps. Shift 1 (ModelSamplingSD3 on the "
                            f"model for both) inverts far more exactly (benchmarks/README.md: inversion).")
        if not math.isclose(cfg, 1.0):
            warnings.append(f"cfg {cfg:g}, not 1: the paper inverts with the empty prompt and no guidance; guided "
                            f"inversion drifts and reconstructs less exactly.")
        # Notes, not warnings: what the settings mean, on the defaults too (the paper's plain inversion, the
        # pipeline's DDIM schedule), where nothing needs changing.
        notes = []
        if refine_iterations == 0:
            notes.append("refine_iterations 0: plain DDIM inversion as in the paper, residual not measured; 1-3 "
                         "iterations make the noise regenerate the video more exactly.")
        if "flow" not in outcome.kind and outcome.sigmas[0] < float(model_sampling.sigma_max) * (1 - 1e-5):
            notes.append(f"the schedule starts at sigma {outcome.sigmas[0]:.6g}, below the model's maximum: the "
                         f"noise fits a sampler that starts at that same sigma.")
        if outcome.sigmas[-1] > 0:
            notes.append(f"the schedule ends at sigma {outcome.sigmas[-1]:.6g}, not 0: the latent is taken as the "
                         f"state at that level (what a sampler on this schedule returns).")
        lines += [f"WARNING: {w}" for w in warnings] + [f"note: {n}" for n in notes]
        lines.append("step  sigma_from -> sigma_to   residual   calls")
        for step in result.steps:
            lines.append(f"{step.index:4d}  {step.sigma_from:10.6g} -> {step.sigma_to:<10.6g} {_fmt(step.residual):>10}"
                         f"   {step.model_calls}")
        return "\n".join(lines)


class GaussianNoiseMix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_GaussianNoiseMix",
            display_name="Gaussian Noise Mix (POS Eq. 4)",
            category=CATEGORY,
            description="A NOISE for SamplerCustomAdvanced (or the Hybrid Semantic Sampler): random noise mixed with "
                        "the inverted noise, (eps + eta * eps_inv) / sqrt(1 + eta^2), so the video stays close to the "
                        "reference's noise yet differs per seed.",
            inputs=[
                io.Latent.Input("inverted", tooltip="DDIM Video Invert's inverted_noise"),
                io.Float.Input("eta", default=DEFAULT_ETA, min=0.0, max=100.0, step=0.01, tooltip=ETA_TOOLTIP),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of the random part (same noise as core RandomNoise with this seed)"),
                io.Noise.Input("noise", optional=True, tooltip="Optional NOISE (e.g. core RandomNoise) for the random "
                                                               "part; replaces seed"),
                io.Combo.Input("preset", options=PRESET_CHOICES, default=CUSTOM, optional=True,
                               tooltip=PRESET_TOOLTIP),
            ],
            outputs=[
                io.Noise.Output("mixed_noise", display_name="noise"),
                io.String.Output("report", display_name="report"),
            ],
        )

    @classmethod
    def execute(cls, inverted, eta: float, seed: int, noise=None, preset: str = CUSTOM) -> io.NodeOutput:
        samples = _latent_samples(inverted, "inverted")
        eta, _, from_preset = resolve(preset, eta=eta)
        try:
            eta = check_eta(eta)
            base = noise_of(noise, seed)
        except (ValueError, TypeError) as exc:
            raise _error(f"Gaussian Noise Mix: {exc}") from exc
        mixed = MixedInvertedNoise(samples, eta, seed=seed, base=base)
        stats = noise_stats(samples)
        channels = ", ".join(f"{m:+.3f}/{s:.3f}" for m, s in zip(stats["channel_mean"], stats["channel_std"]))
        report = "\n".join([
            f"Gaussian Noise Mix (Eq. 4): {mixed.describe()}" + (f" (eta from the {from_preset})" if from_preset
                                                                  else ""),
            f"inverted noise: mean {stats['mean']:+.4f}, std {stats['std']:.4f}; per channel mean/std: {channels}",
            f"expected std of the mix (unit random part, independent): {mixed_std(stats['std'], eta):.4f}",
        ])
        return io.NodeOutput(mixed, report, ui=ui.PreviewText(report))


def _hybrid_inputs() -> list:
    return [
        io.Conditioning.Input("positive_rewritten", tooltip="The rewritten (detail-rich) prompt: first steps"),
        io.Conditioning.Input("positive_original", tooltip="The user's prompt: the remaining steps"),
        io.Conditioning.Input("negative"),
    ]


def _check_hybrid(positive_rewritten, positive_original, negative, gamma: float, cfg: float) -> None:
    _check_conditioning(positive_rewritten, "positive_rewritten")
    _check_conditioning(positive_original, "positive_original")
    _check_conditioning(negative, "negative")
    try:
        check_gamma(gamma)
    except ValueError as exc:
        raise _error(str(exc)) from exc
    if not math.isfinite(cfg) or cfg < 0:
        raise _error(f"cfg is {cfg}; it must be a finite number >= 0.")


def _check_full_sigmas(full_sigmas) -> None:
    if not torch.is_tensor(full_sigmas) or full_sigmas.ndim != 1 or full_sigmas.shape[0] < 2:
        raise _error("full_sigmas is not a SIGMAS of at least 2 values; wire the scheduler's SIGMAS from before "
                     "SplitSigmas (the whole schedule), or leave it unconnected.")
    values = [float(v) for v in full_sigmas]
    if any(not math.isfinite(v) or v < 0 for v in values) or any(b >= a for a, b in zip(values, values[1:])):
        raise _error("full_sigmas is not a sampling schedule (finite, >= 0, strictly decreasing); wire the "
                     "scheduler's SIGMAS from before SplitSigmas, not a flipped or split one.")


class HybridSemanticGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_HybridSemanticGuider",
            display_name="Hybrid Semantic Guider (POS Eq. 8)",
            category=CATEGORY,
            description="A GUIDER for SamplerCustomAdvanced: CFG with the rewritten prompt for the first "
                        "m = floor(T * gamma) of the sigmas actually sampled, the original prompt after. A model "
                        "call at sigma s uses the rewritten prompt when s > sigmas[m] (multi-call samplers: a call "
                        "belongs to the step whose interval (sigmas[i+1], sigmas[i]] contains it).",
            inputs=[
                io.Model.Input("model"),
                *_hybrid_inputs(),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Float.Input("gamma", default=DEFAULT_GAMMA, min=0.0, max=1.0, step=0.01, tooltip=GAMMA_TOOLTIP),
                io.Int.Input("switch_step", default=-1, min=-1, max=10000, optional=True, tooltip=SWITCH_TOOLTIP),
                io.Combo.Input("preset", options=PRESET_CHOICES, default=CUSTOM, optional=True,
                               tooltip=PRESET_TOOLTIP),
                io.Sigmas.Input("full_sigmas", optional=True,
                                tooltip="Two-stage sampling (SplitSigmas; Wan 2.2's two experts): the whole schedule, "
                                        "before the split. m = floor(T * gamma) then counts over all T steps, and "
                                        "in each stage a call uses the rewritten prompt iff its sigma is above "
                                        "full_sigmas[m]. Leave unconnected for one-stage sampling"),
            ],
            outputs=[io.Guider.Output("guider", display_name="guider")],
        )

    @classmethod
    def execute(cls, model, positive_rewritten, positive_original, negative, cfg: float, gamma: float,
                switch_step: int = -1, preset: str = CUSTOM, full_sigmas=None) -> io.NodeOutput:
        _, gamma, _ = resolve(preset, gamma=gamma)
        _check_hybrid(positive_rewritten, positive_original, negative, gamma, cfg)
        if full_sigmas is not None:
            _check_full_sigmas(full_sigmas)
        return io.NodeOutput(make_guider(model, positive_rewritten, positive_original, negative, cfg, gamma,
                                         switch_step, full_sigmas=full_sigmas))


class HybridSemanticSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_HybridSemanticSampler",
            display_name="Hybrid Semantic Sampler (POS)",
            category=CATEGORY,
            description="KSampler with denoising with hybrid semantics (Eq. 8): the rewritten prompt for the first "
                        "floor(steps * gamma) steps, the original after; an optional NOISE (e.g. Gaussian Noise Mix) "
                        "replaces the seeded noise. start_at_step / end_at_step / add_noise as on KSamplerAdvanced "
                        "give two-stage sampling (Wan 2.2's two experts), the switch counted over all steps.",
            inputs=[
                io.Model.Input("model"),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True),
                io.Int.Input("steps", default=50, min=1, max=10000),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Combo.Input("sampler_name", options=list(comfy.samplers.SAMPLER_NAMES), default="euler"),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="simple"),
                *_hybrid_inputs(),
                io.Latent.Input("latent_image"),
                io.Float.Input("gamma", default=DEFAULT_GAMMA, min=0.0, max=1.0, step=0.01, tooltip=GAMMA_TOOLTIP),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01),
                io.Noise.Input("noise", optional=True, tooltip="Optional NOISE (e.g. Gaussian Noise Mix); replaces "
                                                               "the seeded noise"),
                io.Int.Input("switch_step", default=-1, min=-1, max=10000, optional=True, tooltip=SWITCH_TOOLTIP),
                io.Combo.Input("preset", options=PRESET_CHOICES, default=CUSTOM, optional=True,
                               tooltip=PRESET_TOOLTIP),
                io.Boolean.Input("add_noise", default=True, optional=True,
                                 tooltip="As KSamplerAdvanced: off for the second stage of two-stage sampling (it "
                                         "continues the first stage's latent)"),
                io.Int.Input("start_at_step", default=0, min=0, max=10000, optional=True,
                             tooltip="As KSamplerAdvanced: the first of the 'steps' steps this sampler runs (Wan 2.2 "
                                     "template: 0 on the high-noise expert, e.g. 10 on the low-noise one). The "
                                     "switch step m = floor(steps * gamma) counts over all 'steps'"),
                io.Int.Input("end_at_step", default=10000, min=0, max=10000, optional=True,
                             tooltip="As KSamplerAdvanced: the step this sampler stops before (e.g. 10 on the "
                                     "high-noise expert, 10000 = to the end)"),
                io.Boolean.Input("return_with_leftover_noise", default=False, optional=True,
                                 tooltip="As KSamplerAdvanced: on for the first stage (hand the noisy latent to the "
                                         "second); off denoises fully at end_at_step"),
            ],
            outputs=[
                io.Latent.Output("latent", display_name="LATENT"),
                io.String.Output("schedule", display_name="schedule",
                                 tooltip="Which prompt every step used, with its sigmas"),
            ],
        )

    @classmethod
    def execute(cls, model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive_rewritten,
                positive_original, negative, latent_image, gamma: float, denoise: float, noise=None,
                switch_step: int = -1, preset: str = CUSTOM, add_noise: bool = True, start_at_step: int = 0,
                end_at_step: int = 10000, return_with_leftover_noise: bool = False) -> io.NodeOutput:
        _, gamma, from_preset = resolve(preset, gamma=gamma)
        _check_hybrid(positive_rewritten, positive_original, negative, gamma, cfg)
        _latent_samples(latent_image, "latent_image")
        if noise is not None and not (hasattr(noise, "generate_noise") and hasattr(noise, "seed")):
            raise _error("noise is not a NOISE (it needs seed and generate_noise); wire Gaussian Noise Mix or "
                         "RandomNoise.")
        if sampler_name not in comfy.samplers.SAMPLER_NAMES:
            raise _error(f"unknown sampler '{sampler_name}'.")
        if scheduler not in comfy.samplers.SCHEDULER_NAMES:
            raise _error(f"unknown scheduler '{scheduler}'.")
        if not 0.0 <= denoise <= 1.0:
            raise _error(f"denoise is {denoise}; it must lie in [0, 1].")
        try:
            latent, schedule = sample_hybrid(model, seed, steps, cfg, sampler_name, scheduler, positive_rewritten,
                                             positive_original, negative, latent_image, gamma, denoise, noise=noise,
                                             switch_step_override=switch_step, start_at_step=start_at_step,
                                             end_at_step=end_at_step, add_noise=bool(add_noise),
                                             return_with_leftover_noise=bool(return_with_leftover_noise))
        except ValueError as exc:  # the noise's shape check and the gamma rule raise ValueError subclasses
            raise _error(f"Hybrid Semantic Sampler: {exc}") from exc
        if from_preset:
            schedule = f"gamma {gamma:g} from the {from_preset}\n{schedule}"
        return io.NodeOutput(latent, schedule)


NODES = [DDIMVideoInvert, GaussianNoiseMix, HybridSemanticGuider, HybridSemanticSampler]
