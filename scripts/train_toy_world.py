"""Train the toy world's text-to-video models from scratch: a ModelScope-family diffusers folder
(UNet3DConditionModel, a 4-level SD-style AutoencoderKL, CLIPTextModel with the real CLIP tokenizer), or with
``--family wan`` ComfyUI's WanModel and Wan 2.1 VAE classes (see "the Wan-architecture toy" below).

    # on a GPU, in runs of at most ~10 minutes; each run resumes from --ckpt and writes it back
    python scripts/train_toy_world.py train --ckpt CKPT_DIR --minutes 9 [--vae-minutes 2.5]
    # anywhere: the diffusers folder (fp16) from a checkpoint, EMA weights
    python scripts/train_toy_world.py export --ckpt CKPT_DIR --out sample_data/models/searchpriors-toy-t2v

Phases: the VAE first (frames of the world, pixel loss weighted toward the object, a small KL term), then
the UNet and the text encoder together on VAE latents of the training split (held-out pairs never shown, the
rare motion at 1.5 %), epsilon loss with min-SNR-5 weights, 10 % empty prompts for classifier-free
guidance, an EMA of both. Data: clips rendered by distill/toy_world.py on the training device from a seed.
Deterministic from --seed (the data of step k comes from seed and k, so a resumed run sees what an
unbroken one would). Checkpoints are safetensors shards of at most 15 MiB (the lent GPU returns files of at
most 16 MiB): fp32 weights, fp16 EMA; the optimizer restarts with a short warm-up on resume.

Needs torch, diffusers, transformers and safetensors; loads the pack's modules by path (the repository root
must never go on sys.path: its nodes/ would shadow ComfyUI's).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARD_BYTES = 15 * 1024 * 1024


def _harness():
    """scripts/comfy_server.py (standard library only), loaded by file path once: it says where ComfyUI is and
    loads helpers by path for every script, test and benchmark (this file is itself loaded by path in tests)."""
    name = "searchpriors_comfy_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "comfy_server.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _load(name: str, rel: str):
    return _harness().load_by_path(name, os.path.join(REPO, rel))


world = _load("searchpriors_toy_world", "distill/toy_world.py")
synth = _load("searchpriors_synthetic_t2v", "distill/synthetic_t2v.py")
TOY = synth.SIZES["toy"]
# OpenAI CLIP's BPE vocabulary with ModelScope's settings (77 tokens, padded with "!"), shipped with the model
DEFAULT_TOKENIZER = os.path.join(REPO, "sample_data", "models", "searchpriors-toy-t2v", "tokenizer")


# ------------------------------------------------------------------ models and checkpoints
def build_models(seed: int):
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(**TOY["unet"])
    vae = AutoencoderKL(**TOY["vae"])
    te_config = CLIPTextConfig(vocab_size=TOY["vocab_size"], bos_token_id=49406, eos_token_id=49407,
                               pad_token_id=0, **TOY["text_encoder"])
    te_config.architectures = ["CLIPTextModel"]
    return unet, vae, CLIPTextModel(te_config)


def save_sharded(tensors: dict[str, torch.Tensor], folder: str, stem: str, meta: dict) -> None:
    """safetensors shards of at most SHARD_BYTES, written to temporary names then renamed."""
    import safetensors.torch

    shards, current, size = [], {}, 0
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[key] = t
        size += nbytes
    shards.append(current)
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        if old.startswith(stem + "-") and old.endswith(".safetensors"):
            os.remove(os.path.join(folder, old))
    for i, shard in enumerate(shards):
        path = os.path.join(folder, f"{stem}-{i:02d}.safetensors")
        safetensors.torch.save_file(shard, path + ".tmp", metadata={k: str(v) for k, v in meta.items()})
        os.replace(path + ".tmp", path)


def load_sharded(folder: str, stem: str) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    tensors, meta = {}, {}
    names = sorted(n for n in os.listdir(folder) if n.startswith(stem + "-") and n.endswith(".safetensors"))
    for name in names:
        with safe_open(os.path.join(folder, name), "pt") as f:
            meta = f.metadata() or meta
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return tensors, meta


def prefixed(prefix: str, module: torch.nn.Module, dtype=None) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": (v.to(dtype) if dtype is not None else v) for k, v in module.state_dict().items()
            if not k.endswith("position_ids")}


def take(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


# ------------------------------------------------------------------ data
def tokenizer_from(path: str):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(path)


_TOKEN_CACHE: dict[str, list[int]] = {}


def tokens(tokenizer, texts: list[str], device) -> torch.Tensor:
    """[len(texts), 77] ids as the pipeline tokenizes (padding to max length); captions repeat, so cached."""
    missing = [t for t in dict.fromkeys(texts) if t not in _TOKEN_CACHE]
    if missing:
        ids = tokenizer(missing, padding="max_length", max_length=77, truncation=True).input_ids
        _TOKEN_CACHE.update(zip(missing, ids))
    return torch.tensor([_TOKEN_CACHE[t] for t in texts], device=device)


def frames_batch(step: int, seed: int, clips: int, split: str, device) -> tuple[torch.Tensor, list]:
    """[clips, T, 3, H, W] in -1..1 and the specs: the batch of ``step`` is a pure function of (seed, step)."""
    rng = random.Random(f"{seed}/{split}/{step}")
    specs = [world.sample_spec(rng, split) for _ in range(clips)]
    video = world.render(specs, device=device)                          # [B, T, H, W, 3]
    return video.permute(0, 1, 4, 2, 3) * 2 - 1, specs


def object_weight(x: torch.Tensor) -> torch.Tensor:
    """Pixel weights: 1 on the grey background, up to 9 on the (saturated) object, so small shapes count."""
    sat = (x.amax(dim=-3, keepdim=True) - x.amin(dim=-3, keepdim=True)) / 2
    return 1 + 8 * (sat > 0.2).float()


# ------------------------------------------------------------------ training
def optimizer_step(opt, loss: torch.Tensor, params, peak_lr: float, done: int, warmup: int) -> None:
    """One step of every phase of both families: the learning rate warmed up linearly over ``warmup`` steps of
    this run (``done`` so far), gradients clipped to norm 1."""
    for group in opt.param_groups:
        group["lr"] = peak_lr * min(1.0, (done + 1) / warmup)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def train_vae(vae, device, seconds: float, seed: int, log) -> int:
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    start, step = time.time(), 0
    while time.time() - start < seconds:
        x, _ = frames_batch(step, seed + 17, 48, "train", device)
        x = x.flatten(0, 1)                                            # 384 frames
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            post = vae.encode(x).latent_dist
            z = post.sample()
            rec = vae.decode(z).sample
        w = object_weight(x)
        loss_rec = ((rec.float() - x).abs() * w).mean() + (((rec.float() - x) ** 2) * w).mean()
        kl = post.kl().mean() / x[0].numel()
        loss = loss_rec + 1e-4 * kl
        optimizer_step(opt, loss, vae.parameters(), 1e-3, step, warmup=200)
        if step % 200 == 0:
            log(f"vae step {step} loss {loss_rec.item():.4f} kl {kl.item():.3f} ({time.time() - start:.0f} s)")
        step += 1
    vae.eval()
    return step


@torch.no_grad()
def latent_std(vae, device, seed: int) -> float:
    x, _ = frames_batch(10 ** 6, seed, 64, "train", device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        z = vae.encode(x.flatten(0, 1)).latent_dist.mean
    return float(z.float().std())


class EMA:
    """Exponential moving average of the floating-point state of ``modules`` (one fused update per step)."""

    def __init__(self, modules: dict[str, torch.nn.Module], decay: float, state: dict | None = None):
        self.decay = decay
        self.shadow, self._live = {}, []
        for name, m in modules.items():
            for k, v in m.state_dict(keep_vars=True).items():
                if v.dtype.is_floating_point:
                    key = f"{name}.{k}"
                    src = state[key] if state is not None and key in state else v
                    self.shadow[key] = src.detach().to(v.device, torch.float32).clone()
                    self._live.append(v)
        self._shadow_list = list(self.shadow.values())

    @torch.no_grad()
    def update(self, decay: float | None = None) -> None:
        d = self.decay if decay is None else decay
        torch._foreach_lerp_(self._shadow_list, [v.detach().float() for v in self._live], 1 - d)


def train_denoiser(unet, te, vae, tokenizer, device, seconds: float, seed: int, start_step: int, ema: EMA,
                   scale: float, batch: int, lr: float, log, profile: bool = False) -> int:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config({k: v for k, v in synth.SCHEDULER_CONFIG.items() if not k.startswith("_")})
    alphas = sched.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    weight_t = torch.clamp(snr, max=5.0) / snr                           # min-SNR-5 for epsilon prediction
    empty = tokens(tokenizer, [""], device)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    unet.train()
    te.train()
    begin, step, done = time.time(), start_step, 0
    prof = None
    if profile and device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile as torch_profile, schedule
        prof = torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                             schedule=schedule(wait=2, warmup=2, active=4, repeat=1))
        prof.__enter__()
    while time.time() - begin < seconds:
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)
        with torch.no_grad():
            x, specs = frames_batch(step, seed, batch, "train", device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                z = vae.encode(x.flatten(0, 1)).latent_dist.mean.float() * scale
            z = z.unflatten(0, (batch, world.FRAMES)).permute(0, 2, 1, 3, 4)   # [B, C, T, h, w]
            ids = tokens(tokenizer, [s.caption for s in specs], device)
            drop = torch.rand(batch, device=device, generator=g) < 0.1
            ids = torch.where(drop[:, None], empty.expand(batch, -1), ids)
            t = torch.randint(0, 1000, (batch,), device=device, generator=g)
            noise = torch.randn(z.shape, device=device, generator=g)
            a = alphas[t].view(-1, 1, 1, 1, 1)
            zt = a.sqrt() * z + (1 - a).sqrt() * noise
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            ctx = te(ids)[0]
            pred = unet(zt, t, encoder_hidden_states=ctx).sample
        per = ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3, 4))
        loss = (per * weight_t[t]).mean()
        optimizer_step(opt, loss, params, lr, done, warmup=300)
        ema.update(min(ema.decay, (1 + step) / (10 + step)))
        if prof is not None:
            prof.step()
            if done == 8:
                prof.__exit__(None, None, None)
                log("profile of 4 steps:\n" + prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
                prof = None
        if step % 250 == 0:
            log(f"unet step {step} loss {loss.item():.4f} ({time.time() - begin:.0f} s, "
                f"{done / max(time.time() - begin, 1e-6):.1f} steps/s)")
        step += 1
        done += 1
    unet.eval()
    te.eval()
    return step


@torch.no_grad()
def sample(unet, te, vae, tokenizer, prompts: list[str], device, scale: float, steps: int = 25, cfg: float = 7.0,
           seed: int = 0) -> torch.Tensor:
    """DDIM as TextToVideoSDPipeline does it; returns frames [B, T, H, W, 3] in 0..1."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config({k: v for k, v in synth.SCHEDULER_CONFIG.items() if not k.startswith("_")})
    sched.set_timesteps(steps)
    b = len(prompts)
    ctx = te(tokens(tokenizer, prompts, device))[0]
    unc = te(tokens(tokenizer, [""] * b, device))[0]
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn((b, 4, world.FRAMES, world.SIZE // 8, world.SIZE // 8), generator=g).to(device)
    for t in sched.timesteps:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            eps = unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([unc, ctx])).sample.float()
        eu, ec = eps.chunk(2)
        z = sched.step(eu + cfg * (ec - eu), t, z).prev_sample
    lat = z.permute(0, 2, 1, 3, 4).flatten(0, 1) / scale
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        img = vae.decode(lat).sample.float()
    img = ((img + 1) / 2).clamp(0, 1).unflatten(0, (b, world.FRAMES))
    return img.permute(0, 1, 3, 4, 2)


def evaluate(unet, te, vae, tokenizer, device, scale: float, log, count: int = 48, out_png: str | None = None) -> dict:
    """Probe accuracy on in-distribution and held-out prompts (the probe is distill/toy_probe.py)."""
    return probe_eval(lambda prompts: sample(unet, te, vae, tokenizer, prompts, device, scale, seed=3).cpu(), log,
                      count, out_png)


def probe_eval(sample_videos, log, count: int, out_png: str | None, frame_step: int = 1) -> dict:
    """What the probe reads in ``sample_videos(prompts)`` ([B, T, H, W, 3] at the world's size) for in-distribution
    and held-out prompts; the first in-distribution videos go to ``out_png`` (every ``frame_step``-th frame)."""
    probe_path = os.path.join(REPO, "distill", "toy_probe.py")
    if not os.path.exists(probe_path):
        log("no distill/toy_probe.py: evaluation skipped")
        return {}
    probe = _load("searchpriors_toy_probe", "distill/toy_probe.py")
    result = {}
    for name, rows in (("in_dist", world.in_distribution_prompts(count, seed=1)),
                       ("held_out", world.held_out_prompts(count, seed=1))):
        videos = sample_videos([r[0] for r in rows])
        hits = {"motion": 0, "colour": 0, "shape": 0}
        for v, (_, shape, colour, motion) in zip(videos, rows):
            p = probe.probe(v)
            hits["motion"] += p.motion == motion
            hits["colour"] += p.colour == colour
            hits["shape"] += p.shape == shape
        result[name] = {k: h / len(rows) for k, h in hits.items()}
        log(f"eval {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in result[name].items()))
        if out_png and name == "in_dist":
            save_grid(videos[:12, ::frame_step], out_png)
    return result


def save_grid(videos: torch.Tensor, path: str) -> None:
    from PIL import Image

    rows = [torch.cat(list(v), dim=1) for v in videos]                  # each [H, T*W, 3]
    grid = (torch.cat(rows, dim=0).numpy() * 255).astype("uint8")
    Image.fromarray(grid).save(path)


# ------------------------------------------------------------------ the Wan-architecture toy (--family wan)
# ComfyUI's own WanModel (Wan 2.1 T2V layout, detected by ComfyUI as WAN21: head dim 128, text width 4096,
# patch 1x2x2) and ComfyUI's Wan 2.1 VAE class (8x space, 4x time: 4k+1 frames -> k+1 latent frames), trained
# on the world rendered at WAN_SIZE with WAN_FRAMES frames. The text encoder is the ModelScope toy's CLIP,
# frozen; its 64-wide states are zero-padded to Wan's 4096 (``wan_context``). Rectified flow: x_t = (1-s) x0 +
# s eps, the model predicts eps - x0 at timestep 1000 s, as ComfyUI samples Wan (CONST). After the VAE phase
# its latent is re-centred per channel onto ComfyUI's Wan 2.1 latent format (folded into the encoder's last
# and the decoder's first 1x1 convolution), so ComfyUI's process_latent_in hands the model unit-scale latents.
WAN_FRAMES = 17
WAN_SIZE = 128
WAN_DIT = {"model_type": "t2v", "dim": 256, "ffn_dim": 768, "num_heads": 2, "num_layers": 4, "in_dim": 16,
           "out_dim": 16, "text_dim": 4096, "freq_dim": 256, "patch_size": (1, 2, 2), "qk_norm": True,
           "cross_attn_norm": True, "eps": 1e-6}
WAN_VAE = {"dim": 16, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
           "temperal_downsample": [False, True, True], "dropout": 0.0}
WAN_TEXT_WIDTH = 4096
WAN_SHIFT = 3.0   # the sampling shift the toy is evaluated with (ComfyUI's ModelSamplingSD3 node sets it)
TOY_TEXT_ENCODER = os.path.join(REPO, "sample_data", "models", "searchpriors-toy-t2v", "text_encoder")


def use_comfyui_source() -> None:
    """ComfyUI's source importable, found as everything else finds it (scripts/comfy_server.py's
    default_comfyui_dir: COMFYUI_PATH, SEARCHPRIORS_COMFYUI, the set-up's copy); CPU mode without CUDA."""
    path = str(_harness().default_comfyui_dir())
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True


def build_wan_models(seed: int):
    use_comfyui_source()
    import comfy.ldm.wan.model
    import comfy.ldm.wan.vae
    import comfy.ops
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    dit = init_weights(comfy.ldm.wan.model.WanModel(**WAN_DIT, operations=comfy.ops.disable_weight_init))
    vae = init_weights(comfy.ldm.wan.vae.WanVAE(**WAN_VAE))
    te = CLIPTextModel.from_pretrained(TOY_TEXT_ENCODER).float()
    te.requires_grad_(False)
    return dit, vae, te.eval()


def init_weights(model: torch.nn.Module) -> torch.nn.Module:
    """ComfyUI's inference ops skip weight initialisation (their tensors start as whatever memory held): give
    every layer torch's own initialisation, norms ones, Wan's modulation tables randn / sqrt(dim)."""
    with torch.no_grad():
        for module in model.modules():
            for base in (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding):
                if isinstance(module, base):
                    base.reset_parameters(module)
                    break
            else:
                for name, p in module.named_parameters(recurse=False):
                    if name == "modulation":
                        p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
                    elif name in ("weight", "gamma", "scale") and p.ndim <= 4:
                        p.fill_(1.0)
                    else:
                        p.zero_()
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise RuntimeError(f"uninitialised parameters left: {bad[:5]}")
    return model


def wan_latent_format():
    use_comfyui_source()
    import comfy.latent_formats

    fmt = comfy.latent_formats.Wan21()
    return fmt.latents_mean.flatten().float(), fmt.latents_std.flatten().float()


def wan_frames_batch(step: int, seed: int, clips: int, split: str, device,
                     frames: int = WAN_FRAMES) -> tuple[torch.Tensor, list]:
    """[clips, 3, T, H, W] in -1..1 (the VAE's layout) and the specs, a pure function of (seed, step)."""
    rng = random.Random(f"{seed}/{split}/wan/{step}")
    specs = [world.sample_spec(rng, split, frames=frames, size=WAN_SIZE) for _ in range(clips)]
    video = world.render(specs, frames=frames, size=WAN_SIZE, device=device)   # [B, T, H, W, 3]
    return video.permute(0, 4, 1, 2, 3) * 2 - 1, specs


def wan_context(te, ids: torch.Tensor) -> torch.Tensor:
    """The toy CLIP's last hidden states [B, 77, 64], zero-padded to Wan's text width [B, 77, 4096]."""
    states = te(ids)[0].float()
    return torch.nn.functional.pad(states, (0, WAN_TEXT_WIDTH - states.shape[-1]))


def train_wan_vae(vae, device, seconds: float, seed: int, log, clips: int = 12, start_step: int = 0,
                  frames: int = 9) -> int:
    """Reconstruction training on ``frames``-frame clips (4k+1; the VAE is causal and works in chunks of 4 frames
    with a cache, so 9 frames hold the first frame and two chunks at half the cost of the model's 17)."""
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=5e-4, weight_decay=0.0)
    start, step, done = time.time(), start_step, 0
    while time.time() - start < seconds:
        x, _ = wan_frames_batch(step, seed + 17, clips, "train", device, frames=frames)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            mu = vae.encode(x)
            # noise at 5 % of the latent's own spread: a smooth latent space for the denoiser
            z = mu + 0.05 * mu.detach().float().std() * torch.randn_like(mu)
            rec = vae.decode(z)
        w = object_weight(x.transpose(1, 2)).transpose(1, 2)
        diff = rec.float() - x
        loss_rec = (diff.abs() * w).mean() + ((diff ** 2) * w).mean()
        optimizer_step(opt, loss_rec, vae.parameters(), 5e-4, done, warmup=100)
        if step % 100 == 0:
            log(f"wan vae step {step} loss {loss_rec.item():.4f} |mu| {mu.float().std().item():.3f} "
                f"({time.time() - start:.0f} s)")
        step += 1
        done += 1
    vae.eval()
    return step


@torch.no_grad()
def fold_wan_latent_format(vae, device, seed: int, log) -> None:
    """Re-centre the VAE's latent per channel onto ComfyUI's Wan 2.1 latent format (see the heading)."""
    x, _ = wan_frames_batch(10 ** 6, seed, 32, "train", device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        mu = vae.encode(x).float()
    m = mu.mean(dim=(0, 2, 3, 4))
    s = mu.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)
    mean_w, std_w = (t.to(device) for t in wan_latent_format())
    z = WAN_VAE["z_dim"]
    a = std_w / s                                          # mu' = mean_w + a (mu - m)
    w1, b1 = vae.conv1.weight, vae.conv1.bias              # conv1 gives [mu, log_var]
    w1[:z] *= a.view(-1, 1, 1, 1, 1)
    b1[:z] = (b1[:z] - m) * a + mean_w
    w2, b2 = vae.conv2.weight, vae.conv2.bias              # z_orig = m + (z' - mean_w) / a
    b2 += (w2[:, :, 0, 0, 0] @ (m - mean_w / a))
    w2 *= (1 / a).view(1, -1, 1, 1, 1)
    log(f"wan latent folded onto the Wan 2.1 format: channel std {s.min().item():.3f}..{s.max().item():.3f}")


def wan_model_latents(vae, x: torch.Tensor) -> torch.Tensor:
    """What the denoiser sees: ComfyUI's process_latent_in of the (folded) VAE latent."""
    mean_w, std_w = (t.to(x.device).view(1, -1, 1, 1, 1) for t in wan_latent_format())
    return (vae.encode(x).float() - mean_w) / std_w


@torch.no_grad()
def wan_latent_bank(te, vae, tokenizer, device, seed: int, clips: int, log, chunk: int = 64):
    """Latents and text states of ``clips`` training clips, encoded once: the VAE's cost is paid per clip, not
    per step (the denoiser then draws its batches from the bank)."""
    begin = time.time()
    latents, contexts = [], []
    for i in range(0, clips, chunk):
        x, specs = wan_frames_batch(i // chunk, seed, min(chunk, clips - i), "train", device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            latents.append(wan_model_latents(vae, x).to(torch.bfloat16))
        contexts.append(wan_context(te, tokens(tokenizer, [s.caption for s in specs], device)).to(torch.bfloat16))
    log(f"wan latent bank: {clips} clips in {time.time() - begin:.0f} s")
    return torch.cat(latents), torch.cat(contexts)


@torch.no_grad()
def wan_text_whitening(te, tokenizer, device, seed: int, captions: int = 512):
    """Mean m and whitening A (with its inverse) of the toy CLIP's token states over training captions.

    The frozen CLIP separates colours and shapes by far more than motion directions (mean token distance red-blue
    4.6, left-right 0.17): a denoiser fed its raw states learned the colours and never the directions. Training on
    whitened states (x - m) A gives every direction of the text space the same scale; ``_refold_text_input`` keeps
    the model's function on raw states, so nothing outside the trainer changes."""
    rng = random.Random(f"{seed}/wan-text-whitening")
    specs = [world.sample_spec(rng, "train", frames=WAN_FRAMES, size=WAN_SIZE) for _ in range(captions)]
    h = te(tokens(tokenizer, [s.caption for s in specs], device))[0].float()
    h = h.reshape(-1, h.shape[-1])
    m = h.mean(0)
    e, v = torch.linalg.eigh(torch.cov((h - m).T))
    e = e.clamp_min(0) + 1e-3 * e.max()
    return m, v @ torch.diag(e.rsqrt()) @ v.T, v @ torch.diag(e.sqrt()) @ v.T


@torch.no_grad()
def _refold_text_input(weights: list[tuple[torch.Tensor, torch.Tensor]], m: torch.Tensor, a: torch.Tensor,
                       to_whitened: bool) -> None:
    """Rewrite text_embedding.0's (weight, bias) pairs so that W' x' + b' on whitened x' = A (x - m) equals W x + b
    on raw x (``to_whitened``), or back."""
    width = m.shape[0]
    for w, b in weights:
        cols = w[:, :width].float()
        if to_whitened:   # W' = W A^-1, b' = b + W m
            b.add_((cols @ m).to(b.dtype))
            w[:, :width] = torch.linalg.solve(a, cols.T).T.to(w.dtype)
        else:             # W = W' A, b = b' - W m
            raw = cols @ a
            w[:, :width] = raw.to(w.dtype)
            b.sub_((raw @ m).to(b.dtype))


def train_wan_denoiser(dit, te, vae, tokenizer, device, seconds: float, seed: int, start_step: int, ema: EMA,
                       batch: int, lr: float, log, bank_clips: int) -> int:
    begin = time.time()
    bank, bank_ctx = wan_latent_bank(te, vae, tokenizer, device, seed + start_step, bank_clips, log)
    empty = wan_context(te, tokens(tokenizer, [""], device)).to(torch.bfloat16)
    m, a, _ = wan_text_whitening(te, tokenizer, device, seed)
    width = m.shape[0]
    for ctx in (bank_ctx, empty):
        for i in range(0, ctx.shape[0], 256):
            ctx[i:i + 256, :, :width] = ((ctx[i:i + 256, :, :width].float() - m) @ a).to(ctx.dtype)
    text_in = [(dit.text_embedding[0].weight, dit.text_embedding[0].bias),
               (ema.shadow["dit.text_embedding.0.weight"], ema.shadow["dit.text_embedding.0.bias"])]
    _refold_text_input(text_in, m, a, to_whitened=True)
    params = list(dit.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    dit.train()
    step, done = start_step, 0
    while time.time() - begin < seconds:
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)
        with torch.no_grad():
            pick = torch.randint(0, bank.shape[0], (batch,), device=device, generator=g)
            z, ctx = bank[pick].float(), bank_ctx[pick]
            drop = torch.rand(batch, device=device, generator=g) < 0.1
            ctx = torch.where(drop[:, None, None], empty.expand(batch, -1, -1), ctx).float()
            # sigma: half uniform, half logit-normal around the middle (where the layout is decided)
            u = torch.rand(batch, device=device, generator=g)
            ln = torch.sigmoid(torch.randn(batch, device=device, generator=g))
            t = torch.where(torch.arange(batch, device=device) % 2 == 0, u, ln)
            # shifted as the sampler's schedule is: a quarter of the draws at sigma >= 0.9, where motion is decided
            sigma = (WAN_SHIFT * t / (1 + (WAN_SHIFT - 1) * t)).clamp(1e-3, 1.0)
            noise = torch.randn(z.shape, device=device, generator=g)
            s5 = sigma.view(-1, 1, 1, 1, 1)
            zt = (1 - s5) * z + s5 * noise
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = dit(zt, sigma * 1000.0, ctx)
        loss = ((pred.float() - (noise - z)) ** 2).mean()
        optimizer_step(opt, loss, params, lr, done, warmup=300)
        ema.update(min(ema.decay, (1 + step) / (10 + step)))
        if step % 250 == 0:
            log(f"wan dit step {step} loss {loss.item():.4f} ({time.time() - begin:.0f} s, "
                f"{done / max(time.time() - begin, 1e-6):.1f} steps/s)")
        step += 1
        done += 1
    _refold_text_input(text_in, m, a, to_whitened=False)
    dit.eval()
    return step


def shifted_sigmas(steps: int, shift: float = WAN_SHIFT) -> list[float]:
    """ComfyUI's 'simple' schedule of a flow model with ModelSamplingSD3(shift), as plain numbers."""
    out = []
    for i in range(steps):
        t = 1 - i / steps
        out.append(shift * t / (1 + (shift - 1) * t))
    return out + [0.0]


@torch.no_grad()
def sample_wan(dit, te, vae, tokenizer, prompts: list[str], device, steps: int = 25, cfg: float = 5.0,
               seed: int = 0) -> torch.Tensor:
    """Euler over the shifted flow schedule with CFG; frames [B, T, H, W, 3] in 0..1."""
    b = len(prompts)
    ctx = wan_context(te, tokens(tokenizer, prompts, device))
    unc = wan_context(te, tokens(tokenizer, [""] * b, device))
    g = torch.Generator(device="cpu").manual_seed(seed)
    lat_t = (WAN_FRAMES - 1) // 4 + 1
    x = torch.randn((b, 16, lat_t, WAN_SIZE // 8, WAN_SIZE // 8), generator=g).to(device)
    sig = shifted_sigmas(steps)
    for s, s_next in zip(sig[:-1], sig[1:]):
        t = torch.full((2 * b,), s * 1000.0, device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            v = dit(torch.cat([x, x]), t, torch.cat([unc, ctx])).float()
        vu, vc = v.chunk(2)
        x = x + (s_next - s) * (vu + cfg * (vc - vu))
    mean_w, std_w = (t.to(device).view(1, -1, 1, 1, 1) for t in wan_latent_format())
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        img = vae.decode(x * std_w + mean_w).float()
    return ((img + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1)                  # [B, T, H, W, 3]


def to_probe_size(videos: torch.Tensor) -> torch.Tensor:
    """[B, T, H, W, 3] at WAN_SIZE -> at world.SIZE (the probe's calibration size)."""
    b, t, h, w, c = videos.shape
    if h == world.SIZE:
        return videos
    flat = videos.permute(0, 1, 4, 2, 3).flatten(0, 1)
    small = torch.nn.functional.interpolate(flat, size=(world.SIZE, world.SIZE), mode="area")
    return small.unflatten(0, (b, t)).permute(0, 1, 3, 4, 2)


def evaluate_wan(dit, te, vae, tokenizer, device, log, count: int = 48, out_png: str | None = None) -> dict:
    return probe_eval(lambda prompts: to_probe_size(sample_wan(dit, te, vae, tokenizer, prompts, device, seed=3).cpu()),
                      log, count, out_png, frame_step=2)


def cmd_train_wan(args, log) -> dict:
    """The Wan family's phases; returns the checkpoint's meta (the state is written by the caller's helpers)."""
    deadline = time.time() + args.minutes * 60
    dit, vae, te = build_wan_models(args.seed)
    meta = {"family": "wan", "vae_steps": 0, "dit_steps": 0, "seed": args.seed}
    ema_state = None
    if os.path.isdir(args.ckpt) and any(n.startswith("ckpt-") for n in os.listdir(args.ckpt)):
        state, stored = load_sharded(args.ckpt, "ckpt")
        vae.load_state_dict(take("vae", state))
        dit.load_state_dict(take("dit", state))
        ema_state = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
        meta.update(json.loads(stored.get("meta", "{}")))
        log(f"resumed: {meta}")
    tokenizer = tokenizer_from(args.tokenizer)
    for m in (dit, vae, te):
        m.to(device=args.device_obj)
    device = args.device_obj
    if int(meta["vae_steps"]) == 0 or args.vae_more_minutes > 0:
        seconds = (args.vae_minutes if int(meta["vae_steps"]) == 0 else args.vae_more_minutes) * 60
        meta["vae_steps"] = train_wan_vae(vae, device, seconds, args.seed, log, args.vae_clips,
                                          start_step=int(meta["vae_steps"]))
        fold_wan_latent_format(vae, device, args.seed, log)
    vae.requires_grad_(False)
    ema = EMA({"dit": dit}, 0.999, ema_state)
    seconds = deadline - time.time() - args.reserve_s
    first = int(meta["dit_steps"])
    meta["dit_steps"] = train_wan_denoiser(dit, te, vae, tokenizer, device, seconds, args.seed, first, ema,
                                           args.batch, args.lr, log, args.bank)
    meta.setdefault("whitened_text_from_step", first)   # steps before it: raw text states, unshifted sigmas
    state = {**prefixed("vae", vae), **prefixed("dit", dit), **{f"ema.{k}": v.half() for k, v in ema.shadow.items()}}
    meta_json = json.dumps(meta)
    save_sharded(state, args.ckpt, "ckpt", {"meta": meta_json})
    log(f"checkpoint written to {args.ckpt}: {meta_json}")
    if args.eval:
        own = dit.state_dict()
        dit.load_state_dict({k: ema.shadow[f"dit.{k}"].to(v.dtype) if f"dit.{k}" in ema.shadow else v
                             for k, v in own.items()})
        try:
            res = evaluate_wan(dit, te, vae, tokenizer, device, log, count=args.eval,
                               out_png=os.path.join(args.ckpt, "samples.png"))
        except Exception as exc:  # the checkpoint is already written; say why the evaluation failed
            log(f"evaluation failed: {type(exc).__name__}: {exc}")
            res = {}
        with open(os.path.join(args.ckpt, "eval.json"), "w") as f:
            json.dump({"meta": meta, "eval": res}, f, indent=1)
    return meta


def export_wan(ckpt: str, out: str, overwrite: bool = True) -> str:
    """The Wan toy as ComfyUI loads it: diffusion model and VAE safetensors (fp16, EMA weights) in ``out``."""
    import safetensors.torch

    state, stored = load_sharded(ckpt, "ckpt")
    meta = json.loads(stored["meta"])
    dit = {k[len("ema.dit."):]: v.half() for k, v in state.items() if k.startswith("ema.dit.")}
    vae = {k: v.half() for k, v in take("vae", state).items()}
    def fill(tmp: str) -> dict:
        safetensors.torch.save_file(dit, os.path.join(tmp, "searchpriors_toy_wan_t2v.safetensors"),
                                    metadata={"trained_by": "scripts/train_toy_world.py --family wan"})
        safetensors.torch.save_file(vae, os.path.join(tmp, "searchpriors_toy_wan_vae.safetensors"))
        return {"trained_by": "scripts/train_toy_world.py --family wan", "frames": WAN_FRAMES, "size": WAN_SIZE,
                "shift": WAN_SHIFT, "text_encoder": "searchpriors-toy-t2v/text_encoder (frozen), states "
                "zero-padded to 4096", **meta}

    return write_folder(out, fill, overwrite)


def write_folder(out: str, fill, overwrite: bool = True) -> str:
    """``fill(tmp)`` writes a model folder into a temporary sibling of ``out`` and returns the TRAINING.json
    record; the folder is then published at ``out`` in one rename (nothing half-written is ever seen there)."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    try:
        record = fill(tmp)
        with open(os.path.join(tmp, "TRAINING.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        if os.path.exists(out) and not overwrite:
            raise FileExistsError(out)
        synth.publish_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ------------------------------------------------------------------ commands
def cmd_train(args) -> int:
    if args.device == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)      # its backward fails on small heads (torch 2.11, H200)
        # Profiled (H200, batch 192): flash attention's backward over the temporal attention's ~50k sequences
        # of 8 tokens took 46 % of the GPU time; the math kernel is a batched matmul there.
        # (Wan's attention runs over whole clips, 320 tokens of head dim 128: flash attention stays on there.)
        torch.backends.cuda.enable_flash_sdp(args.family == "wan")
        torch.backends.cuda.enable_mem_efficient_sdp(args.family == "wan")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    device = torch.device(args.device)
    log_lines: list[str] = []

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log_lines.append(line)

    if args.family == "wan":
        args.device_obj = device
        cmd_train_wan(args, log)
        with open(os.path.join(args.ckpt, "train_log.txt"), "a") as f:
            f.write("\n".join(log_lines) + "\n")
        return 0
    deadline = time.time() + args.minutes * 60
    unet, vae, te = build_models(args.seed)
    meta = {"vae_steps": 0, "unet_steps": 0, "scale": 0.0, "seed": args.seed}
    ema_state = None
    if os.path.isdir(args.ckpt) and any(n.startswith("ckpt-") for n in os.listdir(args.ckpt)):
        state, stored = load_sharded(args.ckpt, "ckpt")
        vae.load_state_dict(take("vae", state))
        unet.load_state_dict(take("unet", state))
        te.load_state_dict(take("te", state), strict=False)
        ema_state = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
        meta.update(json.loads(stored.get("meta", "{}")))
        log(f"resumed: {meta}")
    tokenizer = tokenizer_from(args.tokenizer)
    unet.to(device)
    vae.to(device)
    te.to(device)
    if int(meta["vae_steps"]) == 0:
        meta["vae_steps"] = train_vae(vae, device, args.vae_minutes * 60, args.seed, log)
        meta["scale"] = 1.0 / latent_std(vae, device, args.seed)
        log(f"vae done: {meta['vae_steps']} steps, latent scale {meta['scale']:.4f}")
    vae.requires_grad_(False)
    ema = EMA({"unet": unet, "te": te}, 0.999, ema_state)
    seconds = deadline - time.time() - args.reserve_s
    meta["unet_steps"] = train_denoiser(unet, te, vae, tokenizer, device, seconds, args.seed,
                                        int(meta["unet_steps"]), ema, float(meta["scale"]), args.batch, args.lr, log,
                                        profile=args.profile)
    state = {**prefixed("vae", vae), **prefixed("unet", unet), **prefixed("te", te),
             **{f"ema.{k}": v.half() for k, v in ema.shadow.items()}}
    meta_json = json.dumps(meta)
    save_sharded(state, args.ckpt, "ckpt", {"meta": meta_json})
    log(f"checkpoint written to {args.ckpt}: {meta_json}")
    if args.eval:
        use_ema(unet, te, ema.shadow)
        try:
            res = evaluate(unet, te, vae, tokenizer, device, float(meta["scale"]), log, count=args.eval,
                           out_png=os.path.join(args.ckpt, "samples.png"))
        except Exception as exc:  # the checkpoint is already written; say why the evaluation failed
            log(f"evaluation failed: {type(exc).__name__}: {exc}")
            res = {}
        with open(os.path.join(args.ckpt, "eval.json"), "w") as f:
            json.dump({"meta": meta, "eval": res}, f, indent=1)
    with open(os.path.join(args.ckpt, "train_log.txt"), "a") as f:
        f.write("\n".join(log_lines) + "\n")
    return 0


def use_ema(unet, te, shadow: dict) -> None:
    for prefix, m in (("unet", unet), ("te", te)):
        own = m.state_dict()
        m.load_state_dict({k: (shadow[f"{prefix}.{k}"].to(v.dtype) if f"{prefix}.{k}" in shadow else v)
                           for k, v in own.items()}, strict=False)


def export_folder(ckpt: str, out: str, tokenizer_dir: str, overwrite: bool = True) -> str:
    """The diffusers folder (fp16, EMA weights) of a checkpoint, written atomically."""
    state, stored = load_sharded(ckpt, "ckpt")
    meta = json.loads(stored["meta"])
    unet, vae, te = build_models(0)
    vae.load_state_dict(take("vae", state))
    ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    use_ema(unet, te, {k: v.float() for k, v in ema.items()})
    def fill(tmp: str) -> dict:
        unet.half().save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
        vae.register_to_config(scaling_factor=round(float(meta["scale"]), 6))
        vae.half().save_pretrained(os.path.join(tmp, "vae"), safe_serialization=True)
        synth._save_text_encoder(te.half(), os.path.join(tmp, "text_encoder"))
        tok = os.path.join(tmp, "tokenizer")
        os.makedirs(tok)
        for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
            shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(tok, name))
        synth.write_pipeline_files(tmp)
        return {"trained_by": "scripts/train_toy_world.py", **meta}

    return write_folder(out, fill, overwrite)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train (or resume) for --minutes")
    t.add_argument("--ckpt", required=True, help="checkpoint folder (read if present, written at the end)")
    t.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of this run, all phases")
    t.add_argument("--vae-minutes", type=float, default=2.5)
    t.add_argument("--reserve-s", type=float, default=60.0, help="seconds kept for saving and evaluation")
    t.add_argument("--batch", type=int, default=192)
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval", type=int, default=48, help="prompts per evaluation set (0: none)")
    t.add_argument("--profile", action="store_true", help="print a torch.profiler table of 4 denoiser steps")
    t.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false")
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    t.add_argument("--bank", type=int, default=16384, help="clips encoded once for the denoiser (--family wan)")
    t.add_argument("--vae-clips", type=int, default=12, help="clips per VAE step (--family wan)")
    t.add_argument("--vae-more-minutes", type=float, default=0.0,
                   help="--family wan: train a resumed VAE this much longer (the denoiser then re-encodes its bank)")
    t.add_argument("--family", choices=("modelscope", "wan"), default="modelscope",
                   help="modelscope: diffusers UNet3D folder; wan: ComfyUI's WanModel + Wan 2.1 VAE")
    e = sub.add_parser("export", help="write the model folder from a checkpoint")
    e.add_argument("--ckpt", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    args = parser.parse_args(argv)
    if args.cmd == "train":
        return cmd_train(args)
    _, stored = load_sharded(args.ckpt, "ckpt")
    if json.loads(stored.get("meta", "{}")).get("family") == "wan":
        print(export_wan(args.ckpt, args.out))
        return 0
    print(export_folder(args.ckpt, args.out, args.tokenizer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
