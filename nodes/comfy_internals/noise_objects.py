"""ComfyUI NOISE objects of the pack: the POS Eq. 4 mix of random and inverted noise.

A NOISE is any object with ``seed`` and ``generate_noise(input_latent) -> tensor`` (core
SamplerCustomAdvanced calls exactly these). ``MixedInvertedNoise`` draws its random part like core
RandomNoise (``comfy.sample.prepare_noise`` with the seed and the latent's ``batch_index``) or from any
NOISE it was given, and mixes in the inverted noise with ``distill.noise_mix``. At eta 0 it returns the
random part itself, bitwise what core RandomNoise returns.
"""

from __future__ import annotations

from typing import Optional

import torch

from ...distill.noise_mix import check_eta, fit_inverted, mix_noise


class SeededRandomNoise:
    """Core RandomNoise's behaviour (same function, same arguments) without importing comfy_extras."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def generate_noise(self, input_latent):
        import comfy.sample

        return comfy.sample.prepare_noise(input_latent["samples"], self.seed, input_latent.get("batch_index"))


class MixedInvertedNoise:
    """NOISE: (eps + eta * eps_inv) / sqrt(1 + eta^2) with eps from ``base`` (default: the seed)."""

    def __init__(self, inverted: torch.Tensor, eta: float, seed: int = 0, base=None):
        if not torch.is_tensor(inverted):
            raise TypeError("the inverted noise must be a tensor (the 'samples' of a LATENT).")
        self.eta = check_eta(eta)
        # Kept on the CPU in float32 and never written to: the LATENT it came from is a cached node output.
        self.inverted = inverted.detach().to(device="cpu", dtype=torch.float32)
        self.base = base if base is not None else SeededRandomNoise(seed)
        self.seed = getattr(self.base, "seed", seed)

    def generate_noise(self, input_latent):
        eps = self.base.generate_noise(input_latent)
        if getattr(eps, "is_nested", False):
            if self.eta == 0.0:
                return eps
            raise ValueError("GaussianNoiseMix: nested (multi-shape) latents are not supported; sample one video "
                             "latent at a time.")
        inverted = fit_inverted(self.inverted, eps.shape, input_latent.get("batch_index"))
        return mix_noise(eps, inverted, self.eta)

    def describe(self) -> str:
        source = f"seed {self.seed}" if isinstance(self.base, SeededRandomNoise) else \
            f"{type(self.base).__name__} (seed {self.seed})"
        return f"eps from {source}, eta {self.eta:g}, inverted noise {list(self.inverted.shape)}"


def noise_of(base: Optional[object], seed: int):
    """The NOISE that supplies eps: the given one, else core-equivalent seeded noise."""
    if base is not None and not (hasattr(base, "generate_noise") and hasattr(base, "seed")):
        raise TypeError("the noise input is not a NOISE (it needs seed and generate_noise); wire RandomNoise.")
    return base if base is not None else SeededRandomNoise(seed)
