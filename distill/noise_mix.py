"""The Gaussian mixture of random and inverted noise (POS Eq. 4) and the shape rules that pair them.

    eps_mix = (eps + eta * eps_inv) / sqrt(1 + eta^2)

With ``eps`` and ``eps_inv`` independent and of unit variance the mix keeps unit variance; eta = 0 gives
``eps`` itself (the very tensor, so a sampler fed the mix at eta 0 is bitwise the one fed plain noise),
large eta approaches ``eps_inv``. The paper's settings (Table 1): ModelScope eta 0.2, VideoCrafter 0.3,
Tune-A-Video 0.1, SCVideo 0.5; image models 0.05.

Pure torch, no ComfyUI import.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..errors import SearchPriorsError


class NoiseShapeError(SearchPriorsError):
    """The inverted noise does not fit the latent being sampled."""


def check_eta(eta: float) -> float:
    eta = float(eta)
    if not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta is {eta}; it must be a finite number >= 0 (the paper uses 0.1-0.5; 0 = plain "
                         f"random noise).")
    return eta


def mix_noise(eps: torch.Tensor, eps_inv: torch.Tensor, eta: float) -> torch.Tensor:
    """Eq. 4. ``eps`` is returned unchanged (same object) for eta = 0; otherwise a new tensor in ``eps``'s
    dtype, computed in at least float32."""
    eta = check_eta(eta)
    if eta == 0.0:
        return eps
    if eps.shape != eps_inv.shape:
        raise NoiseShapeError(f"random noise {tuple(eps.shape)} and inverted noise {tuple(eps_inv.shape)} differ.")
    work = torch.promote_types(eps.dtype, torch.float32)
    mixed = (eps.to(work) + eta * eps_inv.to(device=eps.device, dtype=work)) / math.sqrt(1.0 + eta * eta)
    return mixed.to(eps.dtype)


def _describe(shape: Sequence[int]) -> str:
    if len(shape) == 5:
        return f"[batch {shape[0]}, channels {shape[1]}, frames {shape[2]}, height {shape[3]}, width {shape[4]}]"
    if len(shape) == 4:
        return f"[frames/batch {shape[0]}, channels {shape[1]}, height {shape[2]}, width {shape[3]}]"
    return str(list(shape))


def fit_inverted(inverted: torch.Tensor, target_shape: Sequence[int],
                 batch_index: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The inverted noise arranged to ``target_shape`` (the latent being sampled), or a NoiseShapeError
    that says which dimension differs.

    Layouts: 4-D ``[F, C, H, W]`` is frames as batch (ModelScope/ZeroScope; or images): the first
    dimension is frames and must match. 5-D ``[B, C, T, H, W]`` is a batch of videos (Wan, Hunyuan,
    LTX): a single inverted video is repeated over a larger batch (each video then gets its own random
    part). ``batch_index`` (from core latent-batch nodes) picks those rows of the inverted noise when it
    has more rows than the latent; when it has as many rows as the latent they are used as they are."""
    target = tuple(int(d) for d in target_shape)
    have = tuple(int(d) for d in inverted.shape)
    if len(have) != len(target):
        raise NoiseShapeError(f"layout mismatch: the inverted noise is {len(have)}-D {_describe(have)} but the "
                              f"latent is {len(target)}-D {_describe(target)}. Invert with the same model family "
                              f"that samples (frames-as-batch 4-D for ModelScope, 5-D video latents for Wan).")
    names = ["channels", "frames", "height", "width"] if len(target) == 5 else ["channels", "height", "width"]
    for name, a, b in zip(names, have[1:], target[1:]):
        if a != b:
            hint = ("encode the same number of frames as the generation (frames -> latent frames)" if name == "frames"
                    else "resize/crop the reference frames to the generation size" if name in ("height", "width")
                    else "invert with the model that samples (its latent channels)")
            raise NoiseShapeError(f"{name} differ: inverted noise has {a}, the latent has {b} "
                                  f"(inverted {_describe(have)}, latent {_describe(target)}); {hint}.")
    if have[0] == target[0]:
        return inverted
    if batch_index is not None:
        rows = [int(i) for i in batch_index]
        if len(rows) == target[0] and rows and min(rows) >= 0 and max(rows) < have[0]:
            return inverted[rows]
    if len(target) == 5 and have[0] == 1:
        return inverted.expand(target[0], *have[1:])
    what = "frames (frames-as-batch latents)" if len(target) == 4 else "batch"
    raise NoiseShapeError(f"{what} differ: inverted noise has {have[0]}, the latent has {target[0]} "
                          f"(inverted {_describe(have)}, latent {_describe(target)}); encode and invert as many "
                          f"frames as you generate.")


def noise_stats(noise: torch.Tensor, channel_dim: int = 1) -> dict:
    """Mean and std overall and per channel (for the node's report)."""
    data = noise.detach().double()
    dims = [d for d in range(data.ndim) if d != channel_dim]
    return {
        "mean": float(data.mean()), "std": float(data.std()) if data.numel() > 1 else 0.0,
        "channel_mean": [float(v) for v in data.mean(dim=dims)],
        "channel_std": [float(v) for v in data.std(dim=dims)] if data.numel() > data.shape[channel_dim] else [],
    }


def mixed_std(inverted_std: float, eta: float) -> float:
    """The std of Eq. 4 for unit random noise and independent inverted noise of std ``inverted_std``."""
    eta = check_eta(eta)
    return math.sqrt((1.0 + (eta * inverted_std) ** 2) / (1.0 + eta * eta))
