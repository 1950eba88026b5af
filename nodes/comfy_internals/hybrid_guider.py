"""A ComfyUI GUIDER for denoising with hybrid semantics (POS Eq. 8), and a KSampler-like run of it.

``HybridSemanticsGuider`` is core's ``CFGGuider`` with two positive prompts: every model call reads the
sigmas the sampler actually runs (``transformer_options["sample_sigmas"]``), resolves the switch step
``m = floor(T * gamma)`` and uses the rewritten prompt for calls above ``sigmas[m]`` and the original
prompt for the others (``distill.hybrid_semantics`` has the rule and its reasons). Apart from choosing
the positive conditioning it makes exactly core's call (``comfy.samplers.sampling_function``), so
gamma 0 is bitwise core ``CFGGuider`` with the original prompt and gamma 1 with the rewritten one.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

import comfy.samplers

from ...distill.hybrid_semantics import (check_gamma, describe_schedule, describe_stage, stage_offset, switch_step,
                                        uses_rewritten)

REWRITTEN_KEY = "positive_rewritten"
log = logging.getLogger(__name__)


def _sigma_list(sigmas) -> list[float]:
    if torch.is_tensor(sigmas):
        return [float(v) for v in sigmas.detach().float().cpu().tolist()]
    return [float(v) for v in sigmas]


# Core samplers whose step callback reports i, the index into the sigmas they run, once per step, at some
# point inside step i (after zero or more of its model calls). dpm_fast and dpm_adaptive are absent: they
# run their own time grid and number their own steps. A sampler from another pack is not trusted either.
_STEP_REPORTING_NAMES = tuple(n for n in comfy.samplers.KSAMPLER_NAMES if n not in ("dpm_fast", "dpm_adaptive"))


def _step_reporting_functions() -> set:
    import comfy.k_diffusion.sampling as k_sampling
    from comfy.extra_samplers import uni_pc

    found = {getattr(k_sampling, f"sample_{name}", None) for name in _STEP_REPORTING_NAMES}
    found |= {getattr(uni_pc, "sample_unipc", None), getattr(uni_pc, "sample_unipc_bh2", None)}
    found.discard(None)
    return found


def _reports_steps(sampler) -> bool:
    """Whether ``sampler``'s callback numbers the steps of the sigmas it runs (see _STEP_REPORTING_NAMES)."""
    if not isinstance(sampler, comfy.samplers.KSAMPLER):
        return False
    return sampler.sampler_function in _step_reporting_functions()


class HybridSemanticsGuider(comfy.samplers.CFGGuider):
    """CFG guidance whose positive prompt switches from rewritten to original at step m."""

    def __init__(self, model_patcher):
        super().__init__(model_patcher)
        self.gamma = 0.0
        self.switch_override: Optional[int] = None
        self._cached: tuple = (None, None)
        self.last_schedule: str = ""
        self._steps_done: Optional[int] = None
        self.full_sigmas: Optional[list[float]] = None   # the whole schedule, when this guider samples a stage
        self.stage_start: Optional[int] = None           # the stage's first step in it, when known

    def set_full_schedule(self, full_sigmas, stage_start: Optional[int] = None) -> None:
        """Two-stage sampling (SplitSigmas, or start/end steps): m = floor(T * gamma) counts over the whole
        schedule ``full_sigmas`` and the rewritten prompt is used for calls above ``full_sigmas[m]`` in every
        stage. ``stage_start`` is the stage's first step; None: found by matching the stage's sigmas."""
        self.full_sigmas = None if full_sigmas is None else _sigma_list(full_sigmas)
        self.stage_start = stage_start

    def set_conds(self, positive_rewritten, positive_original, negative):  # noqa: D401 (core's signature style)
        conds = {"positive": positive_original, REWRITTEN_KEY: positive_rewritten}
        if negative is not None:
            conds["negative"] = negative
        self.inner_set_conds(conds)

    def set_switch(self, gamma: float, switch_step_override: Optional[int] = None) -> None:
        self.gamma = check_gamma(gamma)
        self.switch_override = None if switch_step_override is None or int(switch_step_override) < 0 \
            else int(switch_step_override)

    def resolve(self, sigmas) -> tuple[list[float], int, Optional[int]]:
        """(sigma values of the rule, m, offset) for the sigmas a sampler runs: its own, or with a whole schedule
        set, that schedule and the stage's first step in it (None: unknown, decide by each call's sigma)."""
        key = (id(sigmas), tuple(sigmas.shape) if torch.is_tensor(sigmas) else len(sigmas))
        if self._cached[0] == key:
            return self._cached[1]
        stage = _sigma_list(sigmas)
        if self.full_sigmas is None:
            values, offset = stage, 0
            m = switch_step(len(values) - 1, self.gamma, self.switch_override)
            self.last_schedule = describe_schedule(values, m)
        else:
            values = self.full_sigmas
            offset = self.stage_start if self.stage_start is not None else stage_offset(stage, values)
            m = switch_step(len(values) - 1, self.gamma, self.switch_override)
            self.last_schedule = describe_stage(values, m, stage, offset)
        self._cached = (key, (values, m, offset))
        log.debug("SearchPriors hybrid semantics: %s", self.last_schedule.splitlines()[0])
        return values, m, offset

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, *args, **kwargs):
        self._sampling_sigmas = sigmas
        self._cached = (None, None)
        self._steps_done = None

        counts = _reports_steps(sampler)

        def count_steps(step, *cb_args):
            # ComfyUI's samplers report each step (0-based) through this callback; only a sampler whose
            # numbering is that of the sigmas is counted (dpm_adaptive calls back with its own step numbers).
            if counts:
                self._steps_done = int(step) + 1
            if callback is not None:
                return callback(step, *cb_args)

        self._steps_done = 0 if counts else None
        return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, count_steps, *args, **kwargs)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
        if sigmas is None:
            sigmas = getattr(self, "_sampling_sigmas", None)
        if sigmas is None:
            raise RuntimeError("HybridSemanticsGuider was called without the sampling sigmas "
                               "(transformer_options['sample_sigmas']); run it through a sampler node.")
        values, m, offset = self.resolve(sigmas)
        done = self._steps_done
        if done is not None:
            done = None if offset is None else done + offset  # steps of the whole schedule done
        # ``done`` counts the callbacks so far; while step i runs it is i (before step i's callback) or i + 1
        # (after it: dpm_2, heun, dpmpp_sde, seeds_2 ... call back before their midpoint or correction call).
        if m <= 0 or m >= len(values) - 1:  # one prompt throughout: no need to read the call's sigma
            rewritten = m > 0
        elif done is not None and done <= m - 2:  # step i <= m - 2: every call at sigma >= ~sigma_{i+1} > sigma_m
            rewritten = True
        elif done is not None and done >= m + 1:  # step i >= m: every call at sigma <= sigma_i <= sigma_m
            rewritten = False
        else:
            # Only around the switch (or with a sampler that reports no steps) is the call's sigma read: reading
            # a device tensor makes the CPU wait for the GPU, so doing it every call costs ~7 % on ZeroScope.
            sigma = float(timestep.detach().reshape(-1).max()) if torch.is_tensor(timestep) else float(timestep)
            rewritten = uses_rewritten(sigma, values, m)
        key = REWRITTEN_KEY if rewritten else "positive"
        return comfy.samplers.sampling_function(self.inner_model, x, timestep, self.conds.get("negative", None),
                                                self.conds.get(key, None), self.cfg, model_options=model_options,
                                                seed=seed)


def make_guider(model, positive_rewritten, positive_original, negative, cfg: float, gamma: float,
                switch_step_override: Optional[int] = None, full_sigmas=None) -> HybridSemanticsGuider:
    guider = HybridSemanticsGuider(model)
    guider.set_conds(positive_rewritten, positive_original, negative)
    guider.set_cfg(cfg)
    guider.set_switch(gamma, switch_step_override)
    if full_sigmas is not None:
        guider.set_full_schedule(full_sigmas)
    return guider


def stage_sigmas(sigmas: torch.Tensor, start_at_step: int = 0, end_at_step: int = 10000,
                 return_with_leftover_noise: bool = True) -> Optional[torch.Tensor]:
    """The part of ``sigmas`` that KSamplerAdvanced samples for these steps (core ``KSampler.sample``'s
    slicing): up to ``end_at_step`` (its last sigma set to 0 unless ``return_with_leftover_noise``), from
    ``start_at_step``. None when the start is at or past the end (core then returns the latent unchanged)."""
    part = sigmas
    if end_at_step < part.shape[-1] - 1:
        part = part[:end_at_step + 1].clone()
        if not return_with_leftover_noise:
            part[-1] = 0
    if start_at_step >= part.shape[-1] - 1:
        return None
    return part[start_at_step:]


def sample_hybrid(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive_rewritten,
                  positive_original, negative, latent: dict, gamma: float, denoise: float, noise=None,
                  switch_step_override: Optional[int] = None, start_at_step: int = 0, end_at_step: int = 10000,
                  add_noise: bool = True, return_with_leftover_noise: bool = False) -> tuple[dict, str]:
    """What core KSampler does (``nodes.common_ksampler``), with the hybrid guider; ``noise`` (a NOISE
    object, e.g. the Eq. 4 mix) replaces the seeded noise when given. Returns (LATENT, schedule).

    ``start_at_step`` / ``end_at_step`` / ``add_noise`` / ``return_with_leftover_noise`` are KSamplerAdvanced's
    (two samplers as in ComfyUI's Wan 2.2 template): this call samples steps [start, end) of the ``steps``-step
    schedule, and the switch step m = floor(steps * gamma) counts over that whole schedule."""
    import comfy.model_management
    import comfy.sample
    import comfy.utils
    import latent_preview

    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    latent = dict(latent, samples=latent_image)
    if not add_noise:
        noise_tensor = torch.zeros(latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout,
                                   device="cpu")
        noise_seed = seed
    elif noise is None:
        noise_tensor = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
        noise_seed = seed
    else:
        noise_tensor = noise.generate_noise(latent)
        noise_seed = noise.seed
    ksampler = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                       scheduler=scheduler, denoise=denoise, model_options=model.model_options)
    full = ksampler.sigmas
    if full.shape[-1] == 0:
        return dict(latent), "denoise 0: nothing to sample"
    staged = int(start_at_step) > 0 or int(end_at_step) < full.shape[-1] - 1
    sigmas = stage_sigmas(full, int(start_at_step), int(end_at_step), bool(return_with_leftover_noise)) if staged \
        else full
    if sigmas is None:
        return dict(latent), (f"start_at_step {start_at_step} is at or past the end of the {full.shape[-1] - 1} "
                              f"steps (end_at_step {end_at_step}): nothing to sample, the latent passes through")
    guider = make_guider(model, positive_rewritten, positive_original, negative, cfg, gamma, switch_step_override)
    if staged:
        guider.set_full_schedule(full, stage_start=int(start_at_step))
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    samples = guider.sample(noise_tensor, latent_image, comfy.samplers.sampler_object(sampler_name), sigmas,
                            denoise_mask=latent.get("noise_mask"), callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=noise_seed)
    out = dict(latent)
    out["samples"] = samples.to(comfy.model_management.intermediate_device())
    schedule = guider.last_schedule or describe_schedule(_sigma_list(sigmas), switch_step(
        sigmas.shape[-1] - 1, gamma, switch_step_override))
    total = full.shape[-1] - 1
    if gamma > 0 and (switch_step_override is None or switch_step_override < 0) and \
            switch_step(total, gamma) == 0:
        schedule += (f"\nNOTE: gamma {gamma:g} of {total} steps gives m = floor({total} * {gamma:g}) = 0: the "
                     f"rewritten prompt is not used. With few steps (distilled LoRAs) set gamma >= {1 / total:g} "
                     f"for one rewritten step, or switch_step.")
    return out, schedule
