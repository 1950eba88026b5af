"""DDIM / flow-ODE inversion of a LATENT through ComfyUI's own sampling machinery (POS Eq. 2).

The inversion runs as a custom ``comfy.samplers.Sampler`` inside core ``CFGGuider.sample``, so the
model is loaded and freed by ComfyUI's memory manager, conditioning goes through ``process_conds``,
cond/uncond are batched by core ``sampling_function``, and model patches, hooks and wrappers apply as
in normal sampling. The math is ``distill.inversion`` (one Euler step in sigma per inversion step, with
fixed-point refinement).

Why not core FlipSigmas + SamplerCustom: KSAMPLER applies ``noise_scaling`` at the first sigma and
``inverse_noise_scaling`` at the last; flipped, the last sigma of a flow model is exactly 1 and
``inverse_noise_scaling`` divides by ``1 - sigma``, which gives inf. This sampler applies neither: it
starts from the model-space clean latent (the guider's ``process_latent_in``) and converts the end
state to the unit-variance noise that a sampler expects from a NOISE (``x / noise_scale`` with
``noise_scale = noise_scaling(sigma_start, 1, empty latent)``). The guider's ``process_latent_out`` on
the returned tensor is bypassed as well: the result is read from the sampler object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers

from ...distill.experts import DEFAULT_BOUNDARY, NUM_TRAIN_TIMESTEPS, describe_split, high_noise_steps
from ...distill.inversion import (InversionError, InversionResult, StepRecord, invert, inversion_sigmas, relative_error,
                                to_unit_noise)


def model_kind(model_sampling) -> str:
    """A readable name of the prediction type (EPS, V_PREDICTION, CONST = flow, ...)."""
    ms = comfy.model_sampling
    for cls, name in ((ms.CONST, "flow (CONST, rectified flow: reverse Euler ODE)"),
                      (ms.EDM, "EDM"), (ms.V_PREDICTION, "v-prediction (DDIM inversion)"),
                      (ms.IMG_TO_IMG, "x0"), (ms.X0, "x0"), (ms.EPS, "eps (DDIM inversion)")):
        if isinstance(model_sampling, cls):
            return name
    return type(model_sampling).__name__


def starts_at_max(model_sampling, sigma_start: float) -> bool:
    """Core ``Sampler.max_denoise``: the sampler treats the start as pure noise."""
    sigma_max = float(model_sampling.sigma_max)
    return math.isclose(sigma_max, sigma_start, rel_tol=1e-05) or sigma_start > sigma_max


def noise_scale(model_sampling, sigma_start: float) -> float:
    """What a sampler multiplies a unit NOISE by when it starts from an empty latent at ``sigma_start``."""
    sigma = torch.tensor(sigma_start, dtype=torch.float64)
    scaled = model_sampling.noise_scaling(sigma, torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                                          starts_at_max(model_sampling, sigma_start))
    return float(scaled.reshape(-1)[0])


def input_scale_of(model_sampling) -> Callable[[float], float]:
    """sigma -> the factor ``calculate_input`` applies to the model's input (1/sqrt(1+sigma^2) for eps/v, 1 for
    flow), so that the inversion's first guess shows the model the current latent as diffusers' DDIM inversion
    does (``distill.inversion.inversion_step``)."""
    cache: dict = {}

    def scale(sigma: float) -> float:
        if sigma not in cache:
            probe = model_sampling.calculate_input(torch.tensor(float(sigma), dtype=torch.float64),
                                                   torch.ones(1, dtype=torch.float64))
            cache[sigma] = float(probe.reshape(-1)[0])
        return cache[sigma]

    return scale


class InversionSampler(comfy.samplers.Sampler):
    """A SAMPLER whose run inverts ``latent_image`` along the reversed sigmas; the result is ``self.result``."""

    def __init__(self, refine_iterations: int, on_step: Optional[Callable[[int, int], None]] = None,
                 latent_was_empty: bool = False, start: Optional[torch.Tensor] = None):
        self.refine_iterations = int(refine_iterations)
        self.on_step = on_step
        self.latent_was_empty = latent_was_empty
        self.start = start  # a model-space state to invert from instead of latent_image (the next expert's part)
        self.result: Optional[InversionResult] = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        if latent_image is None:
            raise InversionError("no latent to invert.")
        x0 = latent_image
        if self.start is not None:
            x0 = self.start.to(latent_image.device)
        elif self.latent_was_empty:  # core's guider skips process_latent_in for an all-zero latent
            x0 = model_wrap.inner_model.process_latent_in(x0)
        x0 = x0.to(torch.float32)
        sigma_values = sigmas.detach().to(torch.float32)
        model_options = extra_args.get("model_options", {})
        seed = extra_args.get("seed")

        def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
            s_in = torch.full((x.shape[0],), sigma, dtype=sigma_values.dtype, device=x.device)
            return model_wrap(x, s_in, model_options=model_options, seed=seed)

        self.result = invert(denoise, x0, [float(v) for v in sigma_values.cpu()], self.refine_iterations,
                             on_step=self.on_step, input_scale=input_scale_of(model_wrap.inner_model.model_sampling))
        return self.result.latent


@dataclass
class InversionOutcome:
    noise: torch.Tensor
    result: InversionResult
    sigmas: list
    noise_scale: float
    kind: str
    warnings: list = field(default_factory=list)
    reconstruction_error: Optional[float] = None
    high_noise_steps: Optional[int] = None   # k with two experts: the high-noise expert samples steps 0..k-1
    split: str = ""                          # describe_split's line, with two experts


def make_guider(model, positive, negative, cfg: float) -> comfy.samplers.CFGGuider:
    guider = comfy.samplers.CFGGuider(model)
    conds = {"positive": positive}
    if negative is not None:
        conds["negative"] = negative
    guider.inner_set_conds(conds)
    guider.set_cfg(cfg)
    return guider


def timestep_scale(model_sampling) -> float:
    """What the model_sampling's timestep of sigma_max is measured against: 1000 training timesteps for Wan's
    flow sampling (``multiplier``) and discrete eps/v models; 1 for Flux-style flow (LTXV: timestep = sigma)."""
    multiplier = getattr(model_sampling, "multiplier", None)
    if multiplier is not None:
        return float(multiplier)
    if isinstance(model_sampling, comfy.model_sampling.ModelSamplingFlux):
        return 1.0
    return float(NUM_TRAIN_TIMESTEPS)


def expert_split(model_sampling, sigmas: torch.Tensor, boundary: float) -> int:
    """k, the number of leading steps of ``sigmas`` that the high-noise expert samples (distill.experts: the
    step's start timestep >= boundary * 1000, Wan 2.2's rule)."""
    starts = sigmas[:-1].to(torch.float32)
    timesteps = [float(t) for t in model_sampling.timestep(starts).reshape(-1).cpu()]
    scale = timestep_scale(model_sampling)
    return high_noise_steps([t * NUM_TRAIN_TIMESTEPS / scale for t in timesteps], boundary)


def _invert_part(model, latent, positive, negative, cfg, sigmas, refine_iterations, on_step, start):
    guider = make_guider(model, positive, negative, cfg)
    empty = start is None and bool(torch.count_nonzero(latent) == 0)
    sampler = InversionSampler(refine_iterations, on_step=on_step, latent_was_empty=empty, start=start)
    guider.sample(torch.zeros_like(latent, device="cpu"), latent, sampler, sigmas, seed=0, disable_pbar=True)
    return sampler.result


def _offset_progress(on_step, offset: int, total: int):
    if on_step is None:
        return None

    def report(done, _part_total):
        on_step(offset + done, total)

    return report


def _merge(parts: list) -> InversionResult:
    """One InversionResult of the parts walked in order (step numbers continue)."""
    steps, index = [], 0
    for part in parts:
        for step in part.steps:
            index += 1
            steps.append(StepRecord(index, step.sigma_from, step.sigma_to, step.residual, step.model_calls))
    return InversionResult(latent=parts[-1].latent, steps=steps)


def sample_two_stage(low_model, high_model, noise, latent, positive, negative, cfg, sigmas, k, sampler_name="euler",
                     callback=None):
    """Core two-stage sampling (SplitSigmas at k: the high expert with the noise, then the low one without
    noise from its output), as the Wan 2.2 template's two KSamplerAdvanced do. k 0 or T: one expert."""
    total = sigmas.shape[-1] - 1
    sampler = comfy.samplers.sampler_object(sampler_name)
    if k <= 0 or high_model is None:
        return make_guider(low_model, positive, negative, cfg).sample(noise, latent, sampler, sigmas,
                                                                      callback=callback, disable_pbar=True, seed=0)
    out = make_guider(high_model, positive, negative, cfg).sample(noise, latent, sampler, sigmas[:k + 1],
                                                                  callback=callback, disable_pbar=True, seed=0)
    if k >= total:
        return out
    out = out.to(torch.float32)
    return make_guider(low_model, positive, negative, cfg).sample(torch.zeros_like(out), out, sampler, sigmas[k:],
                                                                  callback=callback, disable_pbar=True, seed=0)


@torch.no_grad()
def invert_latent(model, latent_samples: torch.Tensor, positive, sampling_sigmas: torch.Tensor,
                  refine_iterations: int, cfg: float = 1.0, negative=None,
                  on_step: Optional[Callable[[int, int], None]] = None, check_reconstruction: bool = False,
                  on_reconstruction_step: Optional[Callable] = None, high_model=None,
                  boundary: float = DEFAULT_BOUNDARY) -> InversionOutcome:
    """Inverts ``latent_samples`` (VAE space, as VAEEncode gives it) into unit-variance noise for sampling
    with ``sampling_sigmas`` from an empty latent. Inputs are never modified.

    With ``high_model`` (Wan 2.2 A14B's high-noise expert; ``model`` is then the low-noise one) each step is
    inverted through the expert that samples it (``distill.experts``): the low-noise part of the schedule
    first, from the clean latent, then the high-noise part from where it ended."""
    model_sampling = model.get_model_object("model_sampling")
    latent = comfy.sample.fix_empty_latent_channels(model, latent_samples)
    sigmas = sampling_sigmas.detach().to(torch.float32).cpu()
    total = sigmas.shape[0] - 1
    k, split = None, ""
    if high_model is not None:
        inversion_sigmas([float(v) for v in sigmas])  # refuse a bad schedule before reading timesteps from it
        k = expert_split(high_model.get_model_object("model_sampling"), sigmas, boundary)
        split = describe_split([float(v) for v in sigmas], k, boundary)
    parts, start = [], None
    # (model, sigmas of its part, progress offset): the inversion walks from sigma 0 upwards
    if k is None or k <= 0:
        plan = [(model, sigmas, 0)]
    elif k >= total:
        plan = [(high_model, sigmas, 0)]
    else:
        plan = [(model, sigmas[k:], 0), (high_model, sigmas[:k + 1], total - k)]
    for part_model, part_sigmas, offset in plan:
        result = _invert_part(part_model, latent, positive, negative, cfg, part_sigmas, refine_iterations,
                              _offset_progress(on_step, offset, total), start)
        parts.append(result)
        start = result.latent
    result = parts[0] if len(parts) == 1 else _merge(parts)
    top_sampling = plan[-1][0].get_model_object("model_sampling")
    sigma_start = float(sigmas[0])
    scale = noise_scale(top_sampling, sigma_start)
    noise = to_unit_noise(result.latent, scale).to(comfy.model_management.intermediate_device(), torch.float32)
    if not bool(torch.isfinite(noise).all()):
        raise InversionError("the inverted noise contains NaN/inf (noise scale "
                             f"{scale:g} at sigma {sigma_start:g}).")
    outcome = InversionOutcome(noise=noise, result=result, sigmas=[float(v) for v in sigmas], noise_scale=scale,
                               kind=model_kind(model_sampling), high_noise_steps=k, split=split)
    if check_reconstruction:
        rebuilt = sample_two_stage(model, high_model, noise.clone(), torch.zeros_like(latent), positive, negative, cfg,
                                   sigmas, k or 0, callback=on_reconstruction_step)
        rebuilt = rebuilt.to(latent.device, torch.float32)
        outcome.reconstruction_error = relative_error(rebuilt, latent.to(torch.float32))
    return outcome
