"""Every piece of the pack that reaches into ComfyUI beyond its public node API (``comfy_api`` io / ComfyNode).

Checked against ComfyUI 0.3.75 and audited against the newest public ComfyUI source: docs/comfy_internals.md
lists each internal, the module here that uses it, what would break and which test would notice.

- ``glue``: model folders, path confinement, number and dropdown checks, progress text, expert-pair checks.
- ``hybrid_guider``: POS's hybrid semantic switch as a ``comfy.samplers.CFGGuider`` subclass.
- ``inversion_sampler``: DDIM video inversion as a ``comfy.samplers.Sampler``.
- ``noise_objects``: the NOISE objects of Gaussian Noise Mix (``comfy.sample.prepare_noise``).
- ``modelscope_model``: ModelScope / ZeroScope folders as native MODEL / CLIP / VAE (``BaseModel``,
  ``ModelPatcher`` and ``model_sampling`` overrides).
- ``motion_lora``: VMC's binding to a MODEL (``apply_model``, memory manager, ComfyUI's LoRA key layout).
- ``local_lm``: the rewriter's local language model under ComfyUI's memory manager.

The node modules one level up are thin adapters over ``retrieval`` and ``distill`` and import from here.
"""
