"""Tiny random diffusion models as real ComfyUI MODELs, for in-process tests and CPU benchmarks.

- ``tiny_wan21_state_dict``: a Wan 2.1 text-to-video state dict (ComfyUI's own key names) with random
  weights; ``load_tiny_wan21`` loads it with ``comfy.sd.load_diffusion_model_state_dict`` into a native flow
  MODEL (WAN21, latents [B, 16, T, h, w], conditioning [1, L, 4096]). Detection fixes the head count at
  dim // 128 and the text width at 4096, so dim is a multiple of 128.
- ``load_tiny_eps``: an eps-prediction MODEL (``comfy.model_base.BaseModel`` + ModelPatcher, SD-style
  linear beta schedule and 0.18215 latent scale) over a small frames-as-batch network: latents
  [F, 4, h, w], one video per cond/uncond chunk of the batch (read from ``cond_or_uncond``, as the
  ModelScope wrapper must), temporal mixing across frames and cross-attention-like conditioning, so
  both the prompt and the frame order matter.

Import this module after ComfyUI is on sys.path (the in-process conftest does that). Load it by file path
(tests/ is never on sys.path), e.g. ``importlib.util.spec_from_file_location``.
"""

from __future__ import annotations

import math

import torch

WAN_TEXT_DIM = 4096


def tiny_wan21_state_dict(seed: int = 0, dim: int = 128, ffn_dim: int = 256, num_layers: int = 2,
                          in_dim: int = 16, out_dim: int = 16) -> dict[str, torch.Tensor]:
    """Random weights for every key of ComfyUI's WanModel (t2v) of this size, seeded."""
    import comfy.ldm.wan.model
    import comfy.ops

    if dim % 128:
        raise ValueError("dim must be a multiple of 128 (ComfyUI detects num_heads = dim // 128)")
    with torch.device("meta"):
        skeleton = comfy.ldm.wan.model.WanModel(model_type="t2v", dim=dim, ffn_dim=ffn_dim, num_heads=dim // 128,
                                                num_layers=num_layers, in_dim=in_dim, out_dim=out_dim,
                                                text_dim=WAN_TEXT_DIM, operations=comfy.ops.disable_weight_init)
    return _random_weights(skeleton, seed, dim)


def _random_weights(skeleton, seed: int, dim: int) -> dict[str, torch.Tensor]:
    """Seeded random float32 weights for every key of a meta-device ``skeleton`` (fan-in scaled matrices, small
    biases, norms near 1, modulation tables ~ 1/sqrt(dim))."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in skeleton.state_dict().items():
        shape = tuple(tensor.shape)
        if name.endswith("bias"):
            value = 0.02 * torch.randn(shape, generator=generator)
        elif "norm" in name and len(shape) == 1:
            value = 1.0 + 0.05 * torch.randn(shape, generator=generator)
        elif "modulation" in name or "scale_shift_table" in name:
            value = torch.randn(shape, generator=generator) / math.sqrt(dim)
        else:
            fan_in = max(1, math.prod(shape[1:]))
            value = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
        state[name] = value.float()
    return state


def load_tiny_wan21(seed: int = 0, **sizes):
    """The tiny Wan 2.1 as a native MODEL (ModelPatcher), float32."""
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model_state_dict(tiny_wan21_state_dict(seed, **sizes),
                                                       model_options={"dtype": torch.float32})
    if patcher is None:
        raise RuntimeError("ComfyUI did not detect the tiny Wan 2.1 state dict")
    return patcher


def _load_state_dict(state: dict, what: str, expected: str):
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model_state_dict(state, model_options={"dtype": torch.float32})
    if patcher is None:
        raise RuntimeError(f"ComfyUI did not detect the tiny {what} state dict")
    found = type(patcher.model.model_config).__name__
    if found != expected:
        raise RuntimeError(f"the tiny {what} state dict was detected as {found}, not {expected}")
    return patcher


# Wan 2.2 TI2V 5B (ComfyUI: WAN22_T2V config, WAN22 model, 48-channel Wan22 latent, its own VAE
# wan2.2_vae.safetensors): a WanModel with in/out_dim 48.
WAN22_CHANNELS = 48


def tiny_wan22_5b_state_dict(seed: int = 0, dim: int = 128, ffn_dim: int = 256, num_layers: int = 2):
    return tiny_wan21_state_dict(seed, dim=dim, ffn_dim=ffn_dim, num_layers=num_layers, in_dim=WAN22_CHANNELS,
                                 out_dim=WAN22_CHANNELS)


def load_tiny_wan22_5b(seed: int = 0, **sizes):
    return _load_state_dict(tiny_wan22_5b_state_dict(seed, **sizes), "Wan 2.2 5B", "WAN22_T2V")


# HunyuanVideo 1.5 (ComfyUI: HunyuanVideo15 config/model, 32-channel latent, patch 1x1x1, img_in takes 65
# channels = 32 noise + 32 image-conditioning + 1 mask (zeros for text-to-video, model_base.concat_cond),
# text from Qwen2.5-VL 7B ([1, L, 3584]), optional byT5 glyph tokens (conditioning_byt5small, 1472 wide),
# vision_in of 1152 (SigLIP, image-to-video only) and the cond-type embedding; detection needs vision_in to
# tell 1.5 from HunyuanVideo 1.0.
HUNYUAN15_TEXT_DIM = 3584
HUNYUAN15_CHANNELS = 32


def tiny_hunyuan15_state_dict(seed: int = 0, hidden: int = 128, depth: int = 1, single: int = 1):
    import comfy.ldm.hunyuan_video.model
    import comfy.ops

    if hidden % 128:
        raise ValueError("hidden must be a multiple of 128 (ComfyUI detects num_heads = hidden // 128)")
    with torch.device("meta"):
        skeleton = comfy.ldm.hunyuan_video.model.HunyuanVideo(
            in_channels=2 * HUNYUAN15_CHANNELS + 1, out_channels=HUNYUAN15_CHANNELS, vec_in_dim=None,
            context_in_dim=HUNYUAN15_TEXT_DIM, hidden_size=hidden, mlp_ratio=4.0, num_heads=hidden // 128,
            depth=depth, depth_single_blocks=single, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 1, 1],
            qkv_bias=True, guidance_embed=False, byt5=True, meanflow=False, use_cond_type_embedding=True,
            vision_in_dim=1152, operations=comfy.ops.disable_weight_init)
    return _random_weights(skeleton, seed, hidden)


def load_tiny_hunyuan15(seed: int = 0, **sizes):
    return _load_state_dict(tiny_hunyuan15_state_dict(seed, **sizes), "HunyuanVideo 1.5", "HunyuanVideo15")


def hunyuan15_conditioning(seed: int, tokens: int = 6, scale: float = 1.0, glyph_tokens: int = 0):
    """A CONDITIONING as ComfyUI's HunyuanVideo 1.5 text encoder gives it: Qwen2.5-VL hidden states
    [1, L, 3584] (no pooled vector: 1.5 has no vector_in) and, for quoted text in the prompt, byT5 tokens under 'conditioning_byt5small'."""
    generator = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": None}  # CLIPTextEncode always sets it; HunyuanVideo's encode_adm reads it
    if glyph_tokens:
        extra["conditioning_byt5small"] = torch.randn(1, glyph_tokens, 1472, generator=generator)
    return [[scale * torch.randn(1, tokens, HUNYUAN15_TEXT_DIM, generator=generator), extra]]


# LTX-Video 0.9.x (ComfyUI: LTXV config, LTXV model with Flux-style flow sampling, 128-channel latent at 1/32
# of the size and (frames - 1) / 8 + 1 latent frames; T5-XXL text [1, L, 4096] with an attention mask; the
# frame rate comes from LTXVConditioning). Detection fixes 32 heads, so the tiny one has 32 heads of 4.
LTXV_CHANNELS = 128
LTXV_TEXT_DIM = 4096


def tiny_ltxv_state_dict(seed: int = 0, head_dim: int = 4, num_layers: int = 2):
    import comfy.ldm.lightricks.model
    import comfy.ops

    with torch.device("meta"):
        skeleton = comfy.ldm.lightricks.model.LTXVModel(
            in_channels=LTXV_CHANNELS, cross_attention_dim=32 * head_dim, attention_head_dim=head_dim,
            num_attention_heads=32, caption_channels=LTXV_TEXT_DIM, num_layers=num_layers,
            operations=comfy.ops.disable_weight_init)
    return _random_weights(skeleton, seed, 32 * head_dim)


def load_tiny_ltxv(seed: int = 0, **sizes):
    return _load_state_dict(tiny_ltxv_state_dict(seed, **sizes), "LTX-Video", "LTXV")


def ltxv_conditioning(seed: int, tokens: int = 6, scale: float = 1.0, frame_rate: float = 25.0):
    """A CONDITIONING as CLIPTextEncode (T5-XXL, ltxv) + LTXVConditioning give it: [1, L, 4096], the T5
    attention mask and the frame rate."""
    generator = torch.Generator().manual_seed(seed)
    return [[scale * torch.randn(1, tokens, LTXV_TEXT_DIM, generator=generator),
             {"attention_mask": torch.ones(1, tokens, dtype=torch.long), "frame_rate": frame_rate}]]


def tiny_wan21_vae_state_dict(seed: int = 0, dim: int = 8) -> dict[str, torch.Tensor]:
    """Random weights for ComfyUI's Wan 2.1 VAE (comfy.ldm.wan.vae.WanVAE, z_dim 16) of width ``dim``: comfy.sd.VAE
    detects it by its keys (``decoder.middle.0.residual.0.gamma``; the width from ``decoder.head.0.gamma``), so
    it loads as the Wan 2.1 VAE (frames 4k+1, 1/8 of the size)."""
    import comfy.ldm.wan.vae

    with torch.device("meta"):
        skeleton = comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                            attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
    state = _random_weights(skeleton, seed, dim)
    for name, value in state.items():   # small convolutions: keep the activations of a random VAE in range
        if value.ndim >= 4:
            state[name] = value * 0.5
    return state


def wan_conditioning(seed: int, tokens: int = 6, scale: float = 1.0):
    """A CONDITIONING for Wan: [[tensor [1, L, 4096], {}]]."""
    generator = torch.Generator().manual_seed(seed)
    return [[scale * torch.randn(1, tokens, WAN_TEXT_DIM, generator=generator), {}]]


EPS_CONTEXT_DIM = 32


class TinyFramesEpsNet(torch.nn.Module):
    """Predicts eps for frames-as-batch latents [N, 4, h, w] where N = chunks x frames."""

    def __init__(self, channels: int = 4, hidden: int = 16, context_dim: int = EPS_CONTEXT_DIM, seed: int = 0,
                 device=None, operations=None, **_):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)

        def param(*shape, scale):
            return torch.nn.Parameter(scale * torch.randn(*shape, generator=generator))

        self.dtype = torch.float32
        self.conv_in = param(hidden, channels, 3, 3, scale=1 / math.sqrt(channels * 9))
        self.conv_out = param(channels, hidden, 3, 3, scale=0.5 / math.sqrt(hidden * 9))
        self.time_proj = param(hidden, 16, scale=0.5)
        self.context_proj = param(hidden, context_dim, scale=1 / math.sqrt(context_dim))
        self.temporal = param(hidden, hidden, scale=0.5 / math.sqrt(hidden))
        self.requires_grad_(False)

    def forward(self, x, timesteps, context=None, transformer_options={}, **kwargs):
        chunks = max(1, len(transformer_options.get("cond_or_uncond", [0])))
        if x.shape[0] % chunks:
            raise ValueError(f"batch {x.shape[0]} does not split into {chunks} videos")
        frames = x.shape[0] // chunks
        freqs = torch.exp(torch.arange(8, dtype=torch.float32, device=x.device) * -math.log(1000.0) / 8)
        angles = timesteps.float()[:, None] * freqs[None]
        t_emb = torch.cat([angles.sin(), angles.cos()], dim=1) @ self.time_proj.t()  # [N, hidden]
        h = torch.nn.functional.conv2d(x, self.conv_in, padding=1)
        h = h + t_emb[:, :, None, None]
        if context is not None:
            h = h + (context.float().mean(dim=1) @ self.context_proj.t())[:, :, None, None]
        h = torch.nn.functional.silu(h)
        video = h.reshape(chunks, frames, *h.shape[1:])  # one video per cond/uncond chunk
        temporal = torch.einsum("cfkhw,jk->cfjhw", video.mean(dim=1, keepdim=True).expand_as(video), self.temporal)
        h = (video + temporal).reshape(h.shape)
        return torch.nn.functional.conv2d(h, self.conv_out, padding=1)


def load_tiny_eps(seed: int = 0):
    """An eps-prediction MODEL (frames-as-batch, 4 latent channels, SD 1.x beta schedule and latent scale)."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models_base

    class TinyEpsConfig(comfy.supported_models_base.BASE):
        unet_config = {"channels": 4, "hidden": 16, "context_dim": EPS_CONTEXT_DIM, "seed": seed}
        unet_extra_config = {}
        sampling_settings = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.012}
        latent_format = comfy.latent_formats.SD15
        memory_usage_factor = 1.0

    config = TinyEpsConfig(TinyEpsConfig.unet_config)
    model = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EPS, unet_model=TinyFramesEpsNet)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device,
                                            offload_device=comfy.model_management.unet_offload_device())


def eps_conditioning(seed: int, tokens: int = 5):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, EPS_CONTEXT_DIM, generator=generator), {}]]


def smooth_video_latent(shape, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """A smooth, video-like latent (low spatial frequencies, slow change over frames), in VAE space."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(*shape, generator=generator)
    if len(shape) == 4:  # [F, C, h, w]: smooth over space and frames
        smooth = torch.nn.functional.avg_pool2d(base, 3, stride=1, padding=1)
        smooth = torch.cumsum(smooth, dim=0) / torch.arange(1, shape[0] + 1).view(-1, 1, 1, 1).sqrt()
    else:  # [B, C, T, h, w]
        smooth = torch.nn.functional.avg_pool3d(base, 3, stride=1, padding=1)
    return scale * smooth / smooth.std()


# HunyuanVideo 1.5 VAE (ComfyUI: comfy.ldm.hunyuan_video.vae_refiner Encoder/Decoder in an AutoencodingEngine, 32
# latent channels, 16x in space, 4x in time, frames 4k+1). comfy.sd.VAE detects it by its keys
# (``decoder.conv_in.conv.weight`` with 32 input channels) but builds it at the fixed widths [128, 256, 512, 1024,
# 1024] whatever the file holds (1.26 B parameters), so a tiny one needs those widths swapped in at load time:
# scripts/demo_nodes.py's SearchPriorsDemo_VAELoader (VAELoader as is, with the widths read from the file's keys).
HUNYUAN15_VAE_WIDTHS = (8, 16, 32, 64, 64)   # the last a multiple of 2 x 32 (the encoder's skip, the decoder's repeat)


def hunyuan15_vae_config(widths=HUNYUAN15_VAE_WIDTHS) -> dict:
    """ComfyUI's ddconfig for the HunyuanVideo 1.5 VAE (comfy/sd.py) with these block widths."""
    return {"block_out_channels": list(widths), "in_channels": 3, "out_channels": 3, "num_res_blocks": 2,
            "ffactor_spatial": 16, "ffactor_temporal": 4, "downsample_match_channel": True,
            "upsample_match_channel": True, "z_channels": HUNYUAN15_CHANNELS}


def tiny_hunyuan15_vae_state_dict(seed: int = 0, widths=HUNYUAN15_VAE_WIDTHS) -> dict[str, torch.Tensor]:
    """Random weights for ComfyUI's HunyuanVideo 1.5 VAE (AutoencodingEngine of vae_refiner.Encoder/Decoder, as
    comfy.sd.VAE builds it) at block widths ``widths``, with ComfyUI's key names (encoder.*, decoder.*)."""
    import comfy.ldm.models.autoencoder

    config = hunyuan15_vae_config(widths)
    with torch.device("meta"):
        skeleton = comfy.ldm.models.autoencoder.AutoencodingEngine(
            regularizer_config={"target": "comfy.ldm.models.autoencoder.EmptyRegularizer"},
            encoder_config={"target": "comfy.ldm.hunyuan_video.vae_refiner.Encoder", "params": config},
            decoder_config={"target": "comfy.ldm.hunyuan_video.vae_refiner.Decoder", "params": config})
    state = _random_weights(skeleton, seed, widths[-1])
    generator = torch.Generator().manual_seed(seed + 1)
    for name, value in state.items():   # RMS-norm gains near 1, small convolutions
        if name.endswith(".gamma"):
            state[name] = 1.0 + 0.05 * torch.randn(value.shape, generator=generator)
        elif value.ndim >= 4:
            state[name] = value * 0.5
    return state


# LTX-Video checkpoint (CheckpointLoaderSimple: the transformer under "model.diffusion_model.", the VAE under "vae.",
# no text encoder). comfy.sd.VAE builds the LTXV VideoVAE from the checkpoint's metadata "config" -> "vae" when
# present (as LTX-Video 0.9.5's own file has it), so the tiny one carries a small config there: base width 128 (fixed
# in ComfyUI's Encoder/Decoder), patch 4 and three compress_all stages (32x in space, 8x in time, frames 8k+1, as
# sd.py assumes), a decoder that starts with a res_x block (the key sd.py detects the LTXV VAE by).
TINY_LTXV_VAE_CONFIG = {
    "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
    "latent_channels": LTXV_CHANNELS,
    "encoder_blocks": [["res_x", 1], ["compress_all", 1], ["compress_all", 1], ["compress_all", 1]],
    "decoder_blocks": [["compress_all", 1], ["compress_all", 1], ["compress_all", 1], ["res_x", 1]],
    "scaling_factor": 1.0, "norm_layer": "pixel_norm", "patch_size": 4, "latent_log_var": "uniform",
    "use_quant_conv": False, "causal_decoder": False, "timestep_conditioning": False,
}


def tiny_ltxv_vae_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for ComfyUI's LTXV VideoVAE built from TINY_LTXV_VAE_CONFIG (keys encoder.*, decoder.*,
    per_channel_statistics.*; the latent statistics near mean 0, std 1)."""
    import comfy.ldm.lightricks.vae.causal_video_autoencoder as ltxv_vae

    with torch.device("meta"):
        skeleton = ltxv_vae.VideoVAE(config=TINY_LTXV_VAE_CONFIG)
    state = _random_weights(skeleton, seed, 128)
    generator = torch.Generator().manual_seed(seed + 1)
    for name, value in state.items():
        if name.startswith("per_channel_statistics."):
            statistic = name.split(".", 1)[1]
            state[name] = (1.0 + 0.1 * torch.rand(value.shape, generator=generator) if "std" in statistic
                           else 0.05 * torch.randn(value.shape, generator=generator))
        elif value.ndim >= 4:
            state[name] = value * 0.5
    return state


def tiny_ltxv_checkpoint(seed: int = 0, **sizes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, safetensors metadata) of a tiny LTX-Video checkpoint as CheckpointLoaderSimple loads it: the
    tiny LTXV transformer under "model.diffusion_model.", the tiny VAE under "vae.", its config in the metadata."""
    import json

    state = {f"model.diffusion_model.{k}": v for k, v in tiny_ltxv_state_dict(seed, **sizes).items()}
    state.update({f"vae.{k}": v for k, v in tiny_ltxv_vae_state_dict(seed).items()})
    return state, {"config": json.dumps({"vae": TINY_LTXV_VAE_CONFIG})}
