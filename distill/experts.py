"""Two-expert schedules (Wan 2.2 A14B): which sampling steps the high-noise expert draws.

Wan 2.2 A14B has two diffusion models of one architecture: a high-noise expert for the early, noisy steps and
a low-noise expert for the rest. Wan's own sampler (``wan/text2video.py``) picks the model per step from the
scheduler's timestep ``t`` the step starts from:

    high-noise expert  iff  t >= boundary * num_train_timesteps        (num_train_timesteps = 1000)

with ``boundary = 0.875`` for text-to-video (``wan/configs/wan_t2v_A14B.py``; image-to-video uses 0.900).
ComfyUI has no boundary of its own: its Wan 2.2 template runs two KSamplerAdvanced, the high expert for
steps [0, 10) and the low one for [10, 20) of 20. Here the rule is Wan's, applied to ComfyUI's schedule:
step ``i`` (from ``sigmas[i]`` to ``sigmas[i+1]``) belongs to the high-noise expert when the model_sampling
timestep of ``sigmas[i]`` is ``>= boundary * 1000``. For Wan (rectified flow) that timestep is
``1000 * sigma``, so the rule reads ``sigma_i >= boundary``; with shift 8 and 20 simple steps that is steps
0..10 (11 steps; step 10 starts at sigma 0.889). As the sigmas decrease, the high-noise steps are a prefix:
``k`` of them, so ``SplitSigmas`` at step ``k`` (or ``end_at_step = k`` / ``start_at_step = k`` on two
KSamplerAdvanced) splits sampling the same way.

Inversion walks the schedule backwards: the inversion step that undoes sampling step ``i`` runs through the
expert that samples step ``i``, i.e. the low-noise expert for the steps ``k..T-1`` first, then the high-noise
expert for ``0..k-1``.

Pure Python, no ComfyUI import.
"""

from __future__ import annotations

import math
from typing import Sequence

DEFAULT_BOUNDARY = 0.875          # Wan 2.2 T2V A14B
NUM_TRAIN_TIMESTEPS = 1000


def check_boundary(boundary: float) -> float:
    """The boundary as a float in the open interval (0, 1); ValueError naming the input and the fix."""
    try:
        value = float(boundary)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"boundary is {boundary!r}, not a number; set it to a fraction of the timesteps between 0 "
                         f"and 1 (Wan 2.2 T2V: 0.875, I2V: 0.9).") from exc
    if not math.isfinite(value) or not 0.0 < value < 1.0:
        raise ValueError(f"boundary is {boundary!r}; it must lie strictly between 0 and 1 (the fraction of the "
                         f"1000 training timesteps where the high-noise expert hands over: Wan 2.2 T2V 0.875, "
                         f"I2V 0.9). 0 or 1 would give every step to one expert: leave high_noise_model "
                         f"unconnected for that.")
    return value


def high_noise_steps(step_timesteps: Sequence[float], boundary: float,
                     num_train_timesteps: float = NUM_TRAIN_TIMESTEPS) -> int:
    """k: how many leading steps the high-noise expert samples, given each step's start timestep (the
    model_sampling timestep of ``sigmas[i]`` for i = 0..T-1, in ``[0, num_train_timesteps]``).

    A step belongs to the high-noise expert iff its timestep >= boundary * num_train_timesteps. The steps are
    in sampling order (timesteps decreasing); a schedule whose high steps are not a prefix is refused."""
    threshold = check_boundary(boundary) * float(num_train_timesteps)
    flags = [float(t) >= threshold - 1e-6 * float(num_train_timesteps) for t in step_timesteps]
    k = 0
    while k < len(flags) and flags[k]:
        k += 1
    if any(flags[k:]):
        raise ValueError("the sigmas do not decrease: a high-noise step follows a low-noise one. Give the sampling "
                         "schedule as a sampler gets it (highest first).")
    return k


def describe_split(sigmas: Sequence[float], k: int, boundary: float) -> str:
    """One line: which steps each expert samples."""
    values = [float(s) for s in sigmas]
    total = len(values) - 1
    if k <= 0:
        return (f"experts: boundary {boundary:g}: every one of the {total} steps starts below it, so the low-noise "
                f"expert (model) samples them all; the high-noise expert is not used")
    if k >= total:
        return (f"experts: boundary {boundary:g}: every one of the {total} steps starts at or above it, so the "
                f"high-noise expert samples them all; the low-noise expert (model) is not used")
    return (f"experts: boundary {boundary:g}: high-noise expert for steps 0..{k - 1} (sigma {values[0]:.6g} -> "
            f"{values[k]:.6g}), low-noise expert (model) for steps {k}..{total - 1} (sigma {values[k]:.6g} -> "
            f"{values[-1]:.6g}); sample with SplitSigmas step {k} (or end_at_step / start_at_step {k})")
