"""Denoising with hybrid semantics (POS Eq. 8): which prompt a model call uses.

The rewritten prompt conditions the first ``m = floor(T * gamma)`` sampling steps, the original prompt
the remaining ``T - m``; ``T = len(sigmas) - 1`` of the sigmas the sampler actually runs.

Step of a model call (the documented inclusive rule): a call at noise level ``s`` belongs to step ``i``
when ``sigmas[i] >= s > sigmas[i + 1]``, i.e. to the step whose interval ``(sigmas[i+1], sigmas[i]]``
contains it. So the first call of every step (at ``sigmas[i]``) belongs to step i, midpoint calls
(dpm_2, dpmpp_2s_ancestral, dpmpp_sde, seeds_2, ...) belong to the step they are inside, and a call
exactly at the end level of step i (heun's and heunpp2's correction call) belongs to step i + 1: the
prompt follows the noise level the model sees. Therefore the rewritten prompt is used exactly for calls
with ``s > sigmas[m]``; ``m = 0`` means the original throughout, ``m = T`` the rewritten throughout
(whatever the sigmas of the calls), which is what makes gamma 0 and 1 identical to plain sampling.

``switch_step`` computes m without float surprises: ``floor(0.29 * 100)`` is 28 in floating point, but
the user meant 29, so gamma is read as the decimal it prints as, and a product within 1e-9 of an integer
counts as that integer.

Pure Python, no ComfyUI import.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Optional, Sequence


def check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0.0 or gamma > 1.0:
        raise ValueError(f"gamma is {gamma}; it must lie in [0, 1] (the share of steps that use the rewritten "
                         f"prompt: 0 = original only, 1 = rewritten only; the paper uses 0.04-1.0).")
    return gamma


def switch_step(total_steps: int, gamma: float, override: Optional[int] = None) -> int:
    """m = floor(T * gamma), clamped to [0, T]; ``override`` (>= 0) replaces it (also clamped)."""
    total = int(total_steps)
    if total < 0:
        raise ValueError(f"the number of steps is {total}; it must be >= 0.")
    if override is not None and int(override) >= 0:
        return min(int(override), total)
    gamma = check_gamma(gamma)
    product = Decimal(repr(gamma)) * total
    nearest = product.to_integral_value()
    if abs(product - nearest) <= Decimal("1e-9"):
        product = nearest
    return max(0, min(total, math.floor(product)))


def step_of_sigma(sigma: float, sigmas: Sequence[float]) -> int:
    """The step a call at ``sigma`` belongs to: i with sigmas[i] >= sigma > sigmas[i+1] (see the module doc).

    Calls above sigmas[0] count as step 0; calls at or below the last sigma as step T."""
    values = [float(s) for s in sigmas]
    total = len(values) - 1
    s = float(sigma)
    for i in range(total):
        if s > values[i + 1]:
            return i
    return max(total, 0)


def uses_rewritten(sigma: float, sigmas: Sequence[float], m: int) -> bool:
    """Whether a call at ``sigma`` uses the rewritten prompt, for switch step ``m`` of these ``sigmas``."""
    total = len(sigmas) - 1
    if m <= 0:
        return False
    if m >= total:
        return True
    return float(sigma) > float(sigmas[m])


def stage_offset(stage: Sequence[float], full: Sequence[float], rel_tol: float = 1e-5) -> Optional[int]:
    """Where a stage of two-stage sampling starts in the whole schedule: the index j with
    ``stage[i] == full[j + i]`` for every value of the stage but its last (a stage that runs to the end may
    have its last sigma set to 0, as KSamplerAdvanced's full denoise does). None when the stage is not a
    contiguous part of ``full`` (then each call's own sigma decides, which gives the same prompts)."""
    stage_values, full_values = [float(s) for s in stage], [float(s) for s in full]
    body = stage_values[:-1] if len(stage_values) > 1 else stage_values

    def same(a: float, b: float) -> bool:
        return abs(a - b) <= rel_tol * max(1.0, abs(a), abs(b))

    for j in range(len(full_values)):
        if j + len(body) <= len(full_values) and all(same(v, full_values[j + i]) for i, v in enumerate(body)):
            return j
    return None


def describe_stage(full: Sequence[float], m: int, stage: Sequence[float], offset: Optional[int]) -> str:
    """The whole schedule's switch, and which of its steps this stage samples (two-stage sampling)."""
    head = describe_schedule(full, m)
    total = len(full) - 1
    if offset is None:
        return (f"{head}\nthis stage samples sigma {float(stage[0]):.6g} -> {float(stage[-1]):.6g}, not a part of the "
                f"whole schedule given: each call's sigma decides (rewritten iff above the switch sigma)")
    last = offset + len(stage) - 2
    if 0 < m < total:
        where = ("the switch falls in this stage" if offset < m <= last else
                 "rewritten throughout this stage" if last < m else "original throughout this stage")
    else:
        where = "one prompt throughout"
    return f"{head}\nthis stage samples steps {offset}..{last} of the whole schedule's {total}: {where}"


def describe_schedule(sigmas: Sequence[float], m: int) -> str:
    """One line per step: index, sigma interval and prompt (for reports)."""
    values = [float(s) for s in sigmas]
    total = len(values) - 1
    lines = [f"T = {total} steps, switch step m = {m}: rewritten prompt for steps 0..{m - 1} "
             f"(calls with sigma > {values[m]:.6g})" if 0 < m < total else
             f"T = {total} steps, m = {m}: {'rewritten' if m >= total and total > 0 else 'original'} prompt "
             f"throughout"]
    for i in range(total):
        which = "rewritten" if i < m else "original"
        lines.append(f"  step {i:3d}: sigma {values[i]:.6g} -> {values[i + 1]:.6g}  {which}")
    return "\n".join(lines)
