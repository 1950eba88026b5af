"""Video and model side of ComfyUI-SearchPriors (pure torch / diffusers, no ComfyUI import).

Empty for now: keyframes, VMC temporal LoRA, DDIM inversion, noise mixing and hybrid-semantics sampling
arrive with their own issues.
"""
