"""Deterministic inversion of a clean latent into noise (POS Eq. 2), in ComfyUI's sigma convention.

Pure torch: the model enters as a plain callable ``denoise(x, sigma) -> denoised`` (ComfyUI's guider
returns exactly that), numbers are plain floats, so this module imports nothing of ComfyUI.

Why one formula serves every model type
---------------------------------------
ComfyUI writes every sampler state as ``x = x0 + sigma * eps`` (eps and v models, variance-exploding
form) or ``x = (1 - sigma) * x0 + sigma * eps`` (flow models, CONST), and every model call returns the
denoised estimate ``D(x, sigma)``. The direction ``d = (x - D) / sigma`` is then the predicted noise for
eps/v models and the velocity for flow models, and one Euler step in sigma is

    x_next = x + (sigma_next - sigma) * d

which is DDIM for eps/v models (with ``z = x * sqrt(alpha)``, ``sigma = sqrt((1 - alpha) / alpha)`` it is
Eq. 1 of the POS paper, read backwards Eq. 2) and the Euler step of the probability-flow ODE for flow
models. ComfyUI's ``euler`` and ``ddim`` samplers take exactly this step, so inverting with it and then
sampling with them retraces the same path.

Inversion step i goes from ``s_lo`` up to ``s_hi``. Eq. 2 evaluates the model at the point it starts
from; at ``s_lo = 0`` (the clean latent) that is undefined, so like diffusers' DDIMInverseScheduler,
Tune-A-Video's and null-text inversion the first guess shows the model the *current* latent with the
*target* timestep: ``x^0 = x + (s_hi - s_lo) * d(x~, s_hi)`` where ``x~`` is ``x`` rescaled so that the
model's input is the current one (``input_scale``; for eps models exactly ``eps(z_t, t_next)``, for flow
models ``x~ = x``). Refinement then solves the implicit equation that makes the
forward (sampling) step from the new point land back on the previous latent,

    x_new = x + (s_hi - s_lo) * d(x_new, s_hi)          (fixed point; forward Euler s_hi -> s_lo gives x)

by ``x^{k+1} = x + (s_hi - s_lo) * d(x^k, s_hi)``. It is a contraction when ``|s_hi - s_lo| * |dd/dx|``
is small, so a few iterations suffice at 20+ steps. The residual reported for a step is the size of the
last correction relative to the latent, ``|x^K - x^{K-1}| / |x^{K-1}|`` (it bounds how far the previous
iterate missed the fixed point); with no refinement it is unknown (NaN) unless ``measure_residual`` asks
for one extra model call.

The final latent lives in the sampler's state space at ``sigma_start``; a sampler starting from an empty
latent computes ``x = noise_scale * noise`` (ComfyUI's ``noise_scaling`` with a zero latent: ``sigma`` or
``sqrt(1 + sigma^2)`` for eps/v models, ``sigma`` for flow models), so the noise it needs is
``x / noise_scale`` (see ``to_unit_noise``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch

from ..errors import SearchPriorsError

Denoise = Callable[[torch.Tensor, float], torch.Tensor]
OnStep = Callable[[int, int], None]
InputScale = Callable[[float], float]


class InversionError(SearchPriorsError):
    """Bad sigmas, bad settings, or a non-finite latent during inversion."""


@dataclass
class StepRecord:
    index: int
    sigma_from: float
    sigma_to: float
    residual: float  # last fixed-point correction / |x|, NaN when not measured
    model_calls: int


@dataclass
class InversionResult:
    latent: torch.Tensor  # the state at the highest sigma, in the sampler's x space
    steps: List[StepRecord] = field(default_factory=list)

    @property
    def model_calls(self) -> int:
        return sum(s.model_calls for s in self.steps)

    @property
    def max_residual(self) -> float:
        values = [s.residual for s in self.steps if not math.isnan(s.residual)]
        return max(values) if values else float("nan")


def inversion_sigmas(sampling_sigmas: Sequence[float]) -> List[float]:
    """The sampling sigmas (descending, normally ending at 0) reversed into the inversion path (ascending).

    A schedule that ends above 0 (e.g. diffusers' DDIM timesteps without ``set_alpha_to_one``) is taken as
    it is: the latent is the state at that last level, which is what a sampler on it returns.
    Refused: fewer than two values, a value that is negative or not finite, a schedule that is not strictly
    decreasing (e.g. one already flipped)."""
    values = [float(s) for s in sampling_sigmas]
    if len(values) < 2:
        raise InversionError(f"the sigmas have {len(values)} value(s); inversion needs at least 2 (one step).")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise InversionError(f"the sigmas contain a negative or non-finite value: {values}.")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise InversionError("the sigmas are not strictly decreasing: give the sampling schedule as a sampler "
                             "gets it (highest first, ending at 0), not a flipped one.")
    return values[::-1]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(torch.linalg.vector_norm(b.double()))
    return float(torch.linalg.vector_norm((a - b).double())) / max(den, 1e-30)


def _direction(denoise: Denoise, x: torch.Tensor, sigma: float) -> torch.Tensor:
    return (x - denoise(x, sigma).to(x.dtype)) / sigma


def inversion_step(denoise: Denoise, x: torch.Tensor, sigma_from: float, sigma_to: float,
                   refine_iterations: int = 0, measure_residual: bool = False,
                   input_scale: Optional[InputScale] = None) -> tuple[torch.Tensor, float, int]:
    """One inversion step from ``sigma_from`` up to ``sigma_to`` (> 0): returns (x_new, residual, calls).

    ``input_scale(sigma)`` is the factor by which the model's input is scaled at ``sigma`` (ComfyUI's
    ``calculate_input``: ``1/sqrt(1+sigma^2)`` for eps/v models, 1 for flow models). Given, the first guess
    shows the model the current latent's own input (``x`` rescaled so that its input at ``sigma_to``
    equals its input at ``sigma_from``), which for eps models is diffusers' DDIM inversion exactly:
    ``eps(z_t, t_next)`` in Eq. 2. Without it the model sees ``x`` at ``sigma_to`` (the same for flow).
    Never changes ``x`` in place."""
    if not sigma_to > 0:
        raise InversionError(f"an inversion step must end above sigma 0 (got {sigma_to}).")
    delta = sigma_to - sigma_from
    probe = x
    if input_scale is not None:
        factor = input_scale(sigma_from) / input_scale(sigma_to)
        if factor != 1.0:
            probe = x * factor
    current = x + delta * _direction(denoise, probe, sigma_to)
    calls, residual = 1, float("nan")
    for _ in range(int(refine_iterations)):
        refined = x + delta * _direction(denoise, current, sigma_to)
        calls += 1
        residual = _rel(refined, current) if float(torch.linalg.vector_norm(current.double())) > 0 else 0.0
        current = refined
    if measure_residual and refine_iterations == 0:
        residual = _rel(x + delta * _direction(denoise, current, sigma_to), current)
        calls += 1
    return current, residual, calls


FINITE_CHECK_EVERY = 8


class FiniteWatch:
    """Per-step finiteness of the inverted latent, read by the host without making it wait for the GPU.

    Each step adds one on-device flag. Every ``every`` steps the new flags are copied to page-locked host
    memory without blocking and an event is recorded behind the copy; ``first_bad`` inspects only batches
    whose event has completed (a query, no wait), except at the end (``wait=True``). A blocking read every few
    steps (as before) emptied the GPU's queue: after each one the GPU idled while the host queued the next
    model call. On the CPU (tests) flags are read at once. ``make_event`` is for tests (an object with
    ``record()``, ``query()``, ``synchronize()``)."""

    def __init__(self, every: int = FINITE_CHECK_EVERY, make_event: Optional[Callable[[], object]] = None):
        self.every = max(1, int(every))
        self.make_event = make_event
        self.fresh: list[torch.Tensor] = []
        self.first_fresh = 0
        self.pending: list[tuple] = []  # (first step index, host flags, event or None)

    def add(self, x: torch.Tensor) -> None:
        self.fresh.append(torch.isfinite(x).all())
        if len(self.fresh) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.fresh:
            return
        flags = torch.stack(self.fresh)
        event = None
        if flags.is_cuda or self.make_event is not None:
            try:
                host = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=flags.is_cuda)
                host.copy_(flags, non_blocking=True)
                event = self.make_event() if self.make_event is not None else torch.cuda.Event()
                event.record()
            except RuntimeError:  # no page-locked memory: read at once
                host, event = flags.cpu(), None
        else:
            host = flags
        self.pending.append((self.first_fresh, host, event))
        self.first_fresh += len(self.fresh)
        self.fresh = []

    def first_bad(self, wait: bool = False) -> Optional[int]:
        """Index of the first step whose latent is not finite, among the batches ready to read (all of them,
        waiting for the GPU, with ``wait``); None if none."""
        if wait:
            self.flush()
        while self.pending:
            start, host, event = self.pending[0]
            if event is not None:
                if wait:
                    event.synchronize()
                elif not event.query():
                    return None
            self.pending.pop(0)
            bad = (~host).nonzero()
            if bad.numel():
                return start + int(bad[0, 0])
        return None


def invert(denoise: Denoise, x0: torch.Tensor, sampling_sigmas: Sequence[float], refine_iterations: int = 0,
           on_step: Optional[OnStep] = None, measure_residual: bool = False,
           input_scale: Optional[InputScale] = None) -> InversionResult:
    """Inverts the clean (model-space) latent ``x0`` along the reversed ``sampling_sigmas``.

    ``on_step(done, total)`` runs after every step (progress bar and Cancel live there). A non-finite
    latent stops the loop with an InversionError naming the step and sigma (noticed within a few steps
    of happening, without the host waiting for the GPU: ``FiniteWatch``)."""
    if refine_iterations < 0:
        raise InversionError(f"refine_iterations must be 0 or more (got {refine_iterations}).")
    path = inversion_sigmas(sampling_sigmas)
    total = len(path) - 1
    x = x0.clone()
    result = InversionResult(latent=x)
    if on_step is not None:
        on_step(0, total)
    # refinement and residuals read the device every step anyway: there the flags are read at once
    watch = FiniteWatch(1 if (refine_iterations > 0 or measure_residual) else FINITE_CHECK_EVERY)

    def check_finite(wait: bool) -> None:
        bad = watch.first_bad(wait=wait)
        if bad is None:
            return
        lo, hi = path[bad], path[bad + 1]
        raise InversionError(f"the inverted latent became NaN/inf at step {bad + 1} of {total} (sigma {lo:g} -> "
                             f"{hi:g}). The model or its dtype overflows here: try fp32/bf16 weights, fewer "
                             f"refine iterations or more steps.")

    for i in range(total):
        s_lo, s_hi = path[i], path[i + 1]
        x, residual, calls = inversion_step(denoise, x, s_lo, s_hi, refine_iterations, measure_residual, input_scale)
        watch.add(x)
        check_finite(wait=watch.every == 1)
        result.steps.append(StepRecord(i + 1, s_lo, s_hi, residual, calls))
        if on_step is not None:
            on_step(i + 1, total)
    check_finite(wait=True)
    result.latent = x
    return result


def to_unit_noise(latent: torch.Tensor, noise_scale: float) -> torch.Tensor:
    """The noise a sampler must get so that ``noise_scale * noise`` (its start from an empty latent) equals
    ``latent``. ``noise_scale`` is ComfyUI's ``noise_scaling(sigma_start, 1, 0, max_denoise)``."""
    if not (math.isfinite(noise_scale) and noise_scale > 0):
        raise InversionError(f"the noise scale at the first sigma is {noise_scale}; it must be a positive number.")
    return latent / noise_scale


def relative_error(reconstruction: torch.Tensor, reference: torch.Tensor) -> float:
    """|reconstruction - reference| / |reference| (L2 over the whole tensor, in float64)."""
    return _rel(reconstruction, reference)
