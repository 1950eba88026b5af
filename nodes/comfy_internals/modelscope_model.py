"""ModelScope / ZeroScope diffusers folders as ComfyUI's own MODEL, CLIP and VAE.

Usage from Python (ComfyUI importable, e.g. a benchmark):

    import torch, comfy.sample, comfy.samplers
    from comfyui_searchpriors.nodes.comfy_internals.modelscope_model import load_modelscope_folder, modelscope_ddim_sigmas
    model, clip, vae = load_modelscope_folder(".../models/diffusers/zeroscope_v2_576w", dtype="bf16")
    pos = clip.encode_from_tokens_scheduled(clip.tokenize("a corgi running on the beach"))
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    latent = torch.zeros(24, 4, 320 // 8, 576 // 8)        # frames as batch: [F, 4, H/8, W/8]
    noise = comfy.sample.prepare_noise(latent, 0)           # seed 0, as core RandomNoise
    sigmas = modelscope_ddim_sigmas(model, steps=50)        # the pipeline's DDIM timesteps
    ddim = comfy.samplers.sampler_object("ddim")
    out = comfy.sample.sample_custom(model, noise, 9.0, ddim, sigmas, pos, neg, latent, seed=0)  # cfg 9
    frames = vae.decode(out)                                # [F, H, W, 3] in 0..1
(model: a ModelPatcher over a BaseModel whose diffusion_model is diffusers' UNet3DConditionModel; clip:
comfy.sd.CLIP; vae: comfy.sd.VAE. Run under torch.inference_mode() as ComfyUI does.)

Latents are frames as batch ([F,4,h,w], one video per latent), so core EmptyLatentImage (batch = frames),
VAEEncode and VAEDecode work unchanged. ComfyUI batches cond and uncond (and several conds) into one model
call; `ModelScopeModel._apply_model` regroups the batch by `transformer_options["cond_or_uncond"]` into
[chunks, 4, F, h, w], runs the UNet3D with one context per chunk (ComfyUI repeats the conditioning per
frame; only the first row of each chunk is moved to the GPU, without making the host wait: see
`context_per_chunk`) and returns [batch, 4, h, w]. Weight keys are
`diffusion_model.<diffusers module path>`, so ComfyUI weight patches (LoRA) address diffusers' modules.

Two scheduling details make core sampling reproduce `TextToVideoSDPipeline` with DDIM exactly:
- sampling starts from unit-variance noise whenever the latent is empty (all zeros), as diffusers does at
  any first timestep (ComfyUI core does so only when the first sigma is sigma_max); img2img is unchanged.
- `modelscope_ddim_sigmas` gives the diffusers DDIM timesteps as sigmas, ending at the sigma of
  final_alpha_cumprod; the result is then the pipeline's VP latent divided by sqrt(final_alpha_cumprod)
  (ComfyUI keeps latents in VE form: 1.00043x for ModelScope, invisible after decoding).
"""

from __future__ import annotations

import os
from typing import Optional

import torch

import comfy.diffusers_convert
import comfy.latent_formats
import comfy.ldm.models.autoencoder
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models_base

from ...distill.diffusers_folder import (DTYPES, DiffusersFolderError, T2VFolder, beta_schedule,
                                        check_vae_structure, ddim_sigmas, inspect_folder, key_differences,
                                        load_unet, read_state_dict)
from ...distill.device_copy import to_device_without_wait
from ...distill.group_norm import use_few_rows_group_norm


# ------------------------------------------------------------------ MODEL
class ModelScopeConfig(comfy.supported_models_base.BASE):
    """Model config for BaseModel: no UNet built by ComfyUI (the diffusers module is attached), SD latents."""

    unet_config = {"disable_unet_model_creation": True}
    unet_extra_config = {}
    latent_format = comfy.latent_formats.SD15
    memory_usage_factor = 2.0


class EmptyLatentStartsFromUnitNoise:
    """Sampling from an empty (all-zero) latent starts from unit-variance noise in diffusers' VP form.

    ComfyUI's EPS noise scaling uses sqrt(1 + sigma^2) only when the first sigma is sigma_max; diffusers'
    pipelines start from N(0, I) at whatever their first timestep is (901 for 10 DDIM steps). A latent
    with content (img2img, partial denoise) keeps ComfyUI's x0 + sigma * noise.
    """

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        if not max_denoise and not bool(torch.any(latent_image != 0)):
            max_denoise = True
        return super().noise_scaling(sigma, noise, latent_image, max_denoise)


def diffusers_model_sampling(scheduler_config: dict) -> torch.nn.Module:
    """ComfyUI model sampling on the folder's own training betas (bitwise the scheduler's alphas_cumprod)."""
    prediction = scheduler_config.get("prediction_type", "epsilon")
    base = comfy.model_sampling.V_PREDICTION if prediction == "v_prediction" else comfy.model_sampling.EPS
    cls = type("ModelSamplingDiffusers", (EmptyLatentStartsFromUnitNoise, base,
                                          comfy.model_sampling.ModelSamplingDiscrete), {})
    sampling = cls(model_config=None)
    sampling._register_schedule(given_betas=beta_schedule(scheduler_config))
    return sampling


def unet3d_frames_as_batch(unet, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                           chunks: int) -> torch.Tensor:
    """Run a diffusers UNet3D on ComfyUI's frames-as-batch input: [chunks*F,4,h,w] -> [chunks*F,4,h,w].
    ``context``: one text conditioning per chunk, [chunks, L, D] (``context_per_chunk``)."""
    batch = x.shape[0]
    if chunks < 1 or batch % chunks:
        raise ValueError(f"ModelScope model: batch {batch} is not a multiple of {chunks} conditioning chunks")
    if context.shape[0] != chunks:
        raise ValueError(f"ModelScope model: {context.shape[0]} text conditionings for {chunks} chunks")
    frames = batch // chunks
    video = x.reshape(chunks, frames, *x.shape[1:]).permute(0, 2, 1, 3, 4)
    per_chunk_t = timestep.reshape(chunks, frames)[:, 0]
    out = unet(video, per_chunk_t, encoder_hidden_states=context, return_dict=False)[0]
    return out.permute(0, 2, 1, 3, 4).reshape(batch, *out.shape[1:2], *out.shape[3:])


def context_per_chunk(c_crossattn: torch.Tensor, chunks: int, device, dtype) -> torch.Tensor:
    """The text conditioning of each chunk, [chunks, L, D], on ``device`` in ``dtype``.

    ComfyUI keeps conditioning on the CPU and repeats it for every row of the batch, i.e. every frame
    ([chunks*F, L, D]: 7.5 MB per chunk in float32 at ZeroScope size, 24 frames). Copying all of it from
    pageable memory on every model call made the host wait for the GPU to finish the previous call (the copy
    is ordered behind it), so the next call's kernels could not be queued ahead and the GPU idled between
    calls. Only the first row of each chunk is used, and it goes to a CUDA device without a wait
    (``distill.device_copy.to_device_without_wait``)."""
    batch = c_crossattn.shape[0]
    if chunks < 1 or batch % chunks:
        raise ValueError(f"ModelScope model: conditioning batch {batch} is not a multiple of {chunks} chunks")
    rows = c_crossattn.reshape(chunks, batch // chunks, *c_crossattn.shape[1:])[:, 0]
    target = torch.device(device)
    if target.type == "cuda":
        return to_device_without_wait(rows, target).to(dtype)
    return comfy.model_management.cast_to_device(rows, target, dtype)


class ModelScopeModel(comfy.model_base.BaseModel):
    """BaseModel whose diffusion_model is diffusers' UNet3DConditionModel (keys keep diffusers' paths)."""

    def __init__(self, folder: T2VFolder, unet: torch.nn.Module, device=None):
        config = ModelScopeConfig(dict(ModelScopeConfig.unet_config))
        config.latent_format = comfy.latent_formats.SD15(scale_factor=folder.latent_scale)
        model_type = (comfy.model_base.ModelType.V_PREDICTION if folder.prediction_type == "v_prediction"
                      else comfy.model_base.ModelType.EPS)
        super().__init__(config, model_type=model_type, device=device)
        self.diffusion_model = unet
        self.model_sampling = diffusers_model_sampling(folder.scheduler_config)
        self.diffusers_scheduler_config = dict(folder.scheduler_config)
        self.diffusers_folder = folder.path

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t
        dtype = self.get_dtype()
        xc = self.model_sampling.calculate_input(sigma, x).to(dtype)
        timestep = self.model_sampling.timestep(t).float()
        if c_crossattn is None:
            raise ValueError("ModelScope model needs text conditioning (CLIP Text Encode with its CLIP).")
        chunks = len(transformer_options.get("cond_or_uncond") or [0])
        context = context_per_chunk(c_crossattn, chunks, xc.device, dtype)
        model_output = unet3d_frames_as_batch(self.diffusion_model, xc, timestep, context, chunks)
        return self.model_sampling.calculate_denoised(sigma, model_output.float(), x)


class FullLoadModelPatcher(comfy.model_patcher.ModelPatcher):
    """ModelPatcher for modules not built with comfy ops: loaded and freed whole, never partially.

    ComfyUI's partial (lowvram) loading leaves modules without `comfy_cast_weights` on the offload device,
    which breaks their forward; here a load is always complete, and a partial unload frees nothing so that
    the memory manager unloads the model completely instead.
    """

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        return super().load(device_to, lowvram_model_memory=lowvram_model_memory,
                            force_patch_weights=force_patch_weights, full_load=True)

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
        return 0


def _torch_dtype(dtype: str) -> Optional[torch.dtype]:
    if dtype in (None, "auto"):
        return None
    if dtype not in DTYPES:
        raise DiffusersFolderError(f"dtype '{dtype}' is not one of auto, {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def load_model(folder: T2VFolder, dtype: str = "auto") -> FullLoadModelPatcher:
    load_device = comfy.model_management.get_torch_device()
    target = _torch_dtype(dtype)
    if target is None:
        target = comfy.model_management.unet_dtype(device=load_device,
                                                   supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    unet = load_unet(folder, target)
    # the UNet3D's whole-video GroupNorms (temporal layers) run at full-GPU width (distill/group_norm.py)
    use_few_rows_group_norm(unet)
    model = ModelScopeModel(folder, unet)
    return FullLoadModelPatcher(model, load_device=load_device,
                                offload_device=comfy.model_management.unet_offload_device())


# ------------------------------------------------------------------ CLIP
def _clip_target(folder: T2VFolder):
    """A ClipTarget (tokenizer class, model class) configured like the pipeline's prompt encoding:
    the text encoder's last hidden state after the final layer norm, 77 tokens, the tokenizer's pad id."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder.tokenizer_dir)
    te_config = dict(folder.text_encoder_config)
    max_length = min(int(tokenizer.model_max_length), int(te_config.get("max_position_embeddings", 77)))
    empty = tokenizer("")["input_ids"]
    special = {"start": empty[0], "end": empty[-1],
               "pad": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else empty[-1]}
    hidden = int(te_config["hidden_size"])
    key = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}.get(hidden, "clip_h")
    tokenizer_dir = folder.tokenizer_dir
    use_mask = bool(te_config.get("use_attention_mask", False))

    class FolderTextEncoder(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, max_length=max_length, layer="last", textmodel_json_config=dict(te_config),
                             dtype=dtype, special_tokens=dict(special), enable_attention_masks=use_mask,
                             return_projected_pooled=False, model_options=model_options)

    class FolderTokenizer(comfy.sd1_clip.SDTokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            super().__init__(tokenizer_dir, max_length=max_length, pad_with_end=False, pad_token=special["pad"],
                             embedding_directory=embedding_directory, embedding_size=hidden, embedding_key=key,
                             tokenizer_data=tokenizer_data)

    class FolderClipModel(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
            super().__init__(device=device, dtype=dtype, model_options=model_options, clip_name="h",
                             clip_model=FolderTextEncoder, **kwargs)

    class FolderClipTokenizer(comfy.sd1_clip.SD1Tokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data, clip_name="h",
                             tokenizer=FolderTokenizer)

    return comfy.supported_models_base.ClipTarget(FolderClipTokenizer, FolderClipModel)


def load_clip(folder: T2VFolder, dtype: str = "auto", embedding_directory=None) -> comfy.sd.CLIP:
    state = read_state_dict(folder.weight_files["text_encoder"])
    # published checkpoints prefix "text_model."; a bare CLIPTextTransformer save does not
    state = {(k if k.startswith(("text_model.", "text_projection")) else f"text_model.{k}"): v
             for k, v in state.items() if not k.endswith("position_ids")}
    options = {}
    if _torch_dtype(dtype) is not None:
        options["dtype"] = _torch_dtype(dtype)
    parameters = sum(v.numel() for v in state.values())
    clip = comfy.sd.CLIP(_clip_target(folder), embedding_directory=embedding_directory, parameters=parameters,
                         model_options=options)
    missing, unexpected = clip.load_sd(state)
    missing = [k for k in missing if not k.endswith(("text_projection.weight", "logit_scale"))]
    problem = key_differences(folder.name, "text_encoder", missing, unexpected)
    if problem:
        raise DiffusersFolderError(problem)
    return clip


# ------------------------------------------------------------------ VAE
def vae_config(folder: T2VFolder) -> dict:
    """ComfyUI AutoencoderKL parameters from diffusers' vae/config.json (no shape guessing)."""
    cfg = folder.vae_config
    check_vae_structure(folder.name, cfg, folder.unet_config)
    channels = list(cfg.get("block_out_channels", [64]))
    base = channels[0]
    ddconfig = {"double_z": True, "z_channels": int(cfg.get("latent_channels", 4)),
                "resolution": int(cfg.get("sample_size", 256)), "in_channels": int(cfg.get("in_channels", 3)),
                "out_ch": int(cfg.get("out_channels", 3)), "ch": base, "ch_mult": [c // base for c in channels],
                "num_res_blocks": int(cfg.get("layers_per_block", 2)), "attn_resolutions": [], "dropout": 0.0}
    return {"params": {"embed_dim": ddconfig["z_channels"], "ddconfig": ddconfig}}


def load_vae(folder: T2VFolder, dtype: str = "auto") -> comfy.sd.VAE:
    state = read_state_dict(folder.weight_files["vae"])
    target = _torch_dtype(dtype)
    # fp16 overflows in the SD VAE's decoder: "fp16" and "auto" take ComfyUI's own VAE dtype choice
    vae_dtype = target if target in (torch.float32, torch.bfloat16) else None
    config = vae_config(folder)
    # the keys ComfyUI will look up, from its own diffusers -> ldm key map (tensors on "meta": keys only)
    given = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state.items()}
    if "decoder.up_blocks.0.resnets.0.norm1.weight" in given:
        given = comfy.diffusers_convert.convert_vae_state_dict(given)
    with torch.device("meta"):
        expected = comfy.ldm.models.autoencoder.AutoencoderKL(**config["params"]).state_dict().keys()
    problem = key_differences(folder.name, "vae", set(expected) - set(given), set(given) - set(expected))
    if problem:
        raise DiffusersFolderError(problem)
    vae = comfy.sd.VAE(sd=state, config=config, dtype=vae_dtype)
    vae.latent_channels = int(folder.vae_config.get("latent_channels", 4))
    vae.downscale_ratio = vae.upscale_ratio = folder.vae_downscale
    return vae


# ------------------------------------------------------------------ all three, and SIGMAS
def load_modelscope_folder(path: str, dtype: str = "auto", embedding_directory=None):
    """(MODEL, CLIP, VAE) of a ModelScope/ZeroScope diffusers folder."""
    folder = inspect_folder(os.path.abspath(path))
    return load_model(folder, dtype), load_clip(folder, dtype, embedding_directory), load_vae(folder, dtype)


def modelscope_ddim_sigmas(model, steps: int) -> torch.Tensor:
    """SIGMAS of the diffusers DDIMScheduler timesteps of the MODEL's folder (see distill.ddim_sigmas)."""
    inner = getattr(model, "model", model)
    config = getattr(inner, "diffusers_scheduler_config", None)
    if config is None:
        raise DiffusersFolderError("This MODEL does not come from the ModelScope / ZeroScope Loader, so it has no "
                                   "diffusers scheduler config: use a core scheduler node (BasicScheduler) instead.")
    sigmas, _ = ddim_sigmas(config, steps)
    return sigmas.float()
