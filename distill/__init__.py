"""Video and model side of ComfyUI-SearchPriors (pure torch / diffusers, no ComfyUI import).

POS generation math: ``inversion`` (DDIM / flow-ODE inversion with fixed-point refinement, Eq. 2),
``noise_mix`` (Eq. 4 and the shape rules of inverted noise), ``hybrid_semantics`` (Eq. 8's switch step).
"""
