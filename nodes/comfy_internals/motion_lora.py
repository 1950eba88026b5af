"""VMC motion LoRAs as ComfyUI weight patches: train on a native ModelScope MODEL, save, load, check the base.

Binds distill/vmc.py (pure torch) to ComfyUI: the MODEL's diffusers UNet3D is loaded through ComfyUI's memory
manager, trained under ``torch.inference_mode(False)`` with adapters hooked onto its temporal projections
(weights never written), and the result is returned as a clone of the ModelPatcher with the adapters added
as weight patches built by core's own LoRA code (``comfy.lora.load_lora`` on the native key form), so the
pack's MODEL and core LoraLoaderModelOnly on the saved file give the same patched weights.

A MOTION_LORA is ``{"state_dict": {key: fp32 tensor}, "metadata": {str: str}}`` with keys
``diffusion_model.<module>.lora_up.weight / .lora_down.weight / .alpha`` (``.diff`` / ``.diff_b`` for full
fine-tuning). The metadata records the base model's fingerprint (distill.vmc.base_fingerprint), checked by
the pack's Load Motion LoRA; core's loader cannot check it.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Optional

import torch

import comfy.lora
import comfy.model_management
import comfy.utils

from ...distill import vmc
from ...distill.experts import check_boundary, high_noise_steps
from ...retrieval.errors import SearchPriorsError
from .glue import check_expert_pair

META_PREFIX = "searchpriors."
# ComfyUI's key layout for a LoRA on the diffusion model: comfy.lora.model_lora_keys_unet maps
# "diffusion_model." + <module path> to the module's weight (checked against ComfyUI 0.3.75).
LORA_KEY_PREFIX = "diffusion_model."
KIND = "vmc_motion_lora"


# ------------------------------------------------------------------ the MODEL's network
def motion_network(model) -> tuple[torch.nn.Module, str]:
    """(the diffusion network, its family: 'unet3d' or 'wan'); a clear error for other models."""
    base = getattr(model, "model", None)
    network = getattr(base, "diffusion_model", None)
    if network is None:
        raise vmc.VMCError("This input is not a ComfyUI MODEL: connect the MODEL output of the ModelScope / "
                           "ZeroScope Loader, or of Load Diffusion Model with a Wan model.")
    return network, vmc.model_family(network)


def prediction_type(model) -> str:
    import comfy.model_base

    model_type = getattr(model.model, "model_type", None)
    if model_type == comfy.model_base.ModelType.V_PREDICTION:
        return "v_prediction"
    if model_type == comfy.model_base.ModelType.EPS:
        return "epsilon"
    raise vmc.VMCError(f"Model type {model_type} is not supported: VMC needs an epsilon or v-prediction model.")


def alphas_cumprod(model) -> torch.Tensor:
    sigmas = model.model.model_sampling.sigmas.detach().double().cpu()
    return (1.0 / (sigmas * sigmas + 1.0)).float()


def sampler_space_noiser(model) -> vmc.SamplerSpaceNoiser:
    """The MODEL as ComfyUI samples it (any prediction type: Wan's flow, eps, v): noise added with its
    model_sampling, x0 predicted by its own apply_model with the text as cross-attention."""
    sampling = model.model.model_sampling

    def denoise(x, sigma, context):
        return model.model.apply_model(x, sigma.to(x.device), c_crossattn=context)

    def scaling(sigma, noise, x0):
        return sampling.noise_scaling(sigma.to(noise.device), noise, x0)

    return vmc.SamplerSpaceNoiser(sampling.sigmas.detach().float(), scaling, denoise)


def expert_ranges(model, boundary: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """Training timestep index ranges (low-noise expert, high-noise expert) of a two-expert Wan 2.2: a timestep
    belongs to the high-noise expert when model_sampling.timestep(sigma) >= boundary * 1000, as Wan 2.2 hands
    over between its experts (distill/experts.py)."""
    sampling = model.model.model_sampling
    timesteps = sampling.timestep(sampling.sigmas.detach().float().cpu()).float().tolist()   # ascending
    first_high = len(timesteps) - high_noise_steps(timesteps[::-1], boundary)   # the rule of DDIM Video Invert
    if first_high <= 0 or first_high >= len(timesteps):
        raise vmc.VMCError(f"boundary {boundary} leaves one expert no timesteps of this model's schedule: use a "
                           f"value inside (0, 1), e.g. 0.875 for Wan 2.2 text-to-video.")
    return (0, first_high), (first_high, len(timesteps))


def make_weights_trainable(unet: torch.nn.Module) -> int:
    """Swap inference-mode tensors (ComfyUI loads under inference mode) for equal normal ones.

    Autograd cannot save inference tensors for backward, and the frozen layers between an adapter and the
    output must be differentiated through. Values are copied bit for bit; the swap is per tensor, so the
    extra memory is one tensor at a time.
    """
    # Every tensor is swapped, not only those that report is_inference(): moving a module to the GPU assigns
    # ``param.data``, after which a parameter created under inference mode no longer reports it but still has
    # no version counter ("Inference tensors do not track version counter" on CUDA, seen on an H200).
    swapped = 0
    for module in unet.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[name] = torch.nn.Parameter(param.detach().clone(), requires_grad=False)
                swapped += 1
        for name, buf in list(module._buffers.items()):
            if buf is not None:
                module._buffers[name] = buf.clone()
                swapped += 1
    return swapped


def unpatched_weight(model, key: str) -> torch.Tensor:
    """The weight without the patches now applied to the shared module (ModelPatcher keeps the originals)."""
    backup = getattr(model, "backup", {}) or {}
    if key in backup:
        return backup[key].weight
    return comfy.utils.get_attr(model.model, key)


def model_fingerprint(model, target_names: list[str]) -> dict:
    prefix = LORA_KEY_PREFIX
    keys = [f"{n}.weight" for n in target_names] + list(vmc.FINGERPRINT_PROBES)
    weights = {}
    for key in keys:
        try:
            weights[key] = unpatched_weight(model, prefix + key)
        except AttributeError:
            continue
    return vmc.base_fingerprint(weights, [f"{n}.weight" for n in target_names])


def conditioning_context(conditioning) -> torch.Tensor:
    if not conditioning or not isinstance(conditioning, list) or not torch.is_tensor(conditioning[0][0]):
        raise vmc.VMCError("conditioning is empty: connect CLIP Text Encode (with the model's own text encoder) of "
                           "the reference caption or the prompt.")
    context = conditioning[0][0]
    if context.ndim != 3:
        raise vmc.VMCError(f"conditioning has shape {tuple(context.shape)}; expected [1, tokens, width] from "
                           f"CLIP Text Encode.")
    if not bool(torch.isfinite(context).all()):
        raise vmc.VMCError("conditioning contains NaN/inf values: encode the text again (a broken text encoder or "
                           "a conditioning node upstream produced them).")
    return context[:1].detach().clone().float()


def keyframe_latents(model, latent, family: str = "unet3d", needed: int = 3) -> torch.Tensor:
    """The keyframes' latents as [1, C, F, h, w] at the model's scale (process_latent_in)."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    shape = None if samples is None or not torch.is_tensor(samples) else tuple(samples.shape)
    if family == "wan":
        channels = model.model.latent_format.latent_channels
        if shape is None or len(shape) != 5:
            raise vmc.VMCError(f"keyframes must be a video LATENT [1, {channels}, frames, h, w]: Encode Keyframes "
                               f"(or core VAE Encode) of the keyframe IMAGE with this Wan model's VAE; got {shape}.")
        if shape[0] != 1:
            raise vmc.VMCError(f"keyframes hold {shape[0]} videos (shape {shape}); VMC tunes on one clip: encode "
                               f"the keyframes of one reference video.")
        if shape[2] < needed:
            raise vmc.VMCError(
                f"keyframes give {shape[2]} latent frame(s); the motion loss needs at least {needed}. Wan's VAE packs "
                f"4 video frames into one latent frame (4k+1 frames -> k+1 latent frames): extract "
                f"{4 * (needed - 1) + 1} or more keyframes (a count 4k+1: 9, 13, 17, ...).")
        expected = channels
    else:
        if shape is None or len(shape) != 4:
            raise vmc.VMCError(f"keyframes must be a LATENT of frames as batch [F, 4, h, w] (Encode Keyframes or "
                               f"core VAE Encode of the keyframe IMAGE with the ModelScope VAE); got {shape}.")
        network = model.model.diffusion_model
        expected = network.config.in_channels if hasattr(network, "config") else shape[1]
    if shape[1] != expected:
        raise vmc.VMCError(f"keyframe latents have {shape[1]} channels, the model takes {expected}: encode the "
                           f"keyframes with this model's VAE.")
    if not bool(torch.isfinite(samples).all()):
        raise vmc.VMCError("keyframes contain NaN/inf values: encode the keyframes again.")
    scaled = model.model.process_latent_in(samples.detach().clone().float())
    if family == "wan":
        return scaled
    return scaled.permute(1, 0, 2, 3).unsqueeze(0)  # [F,C,h,w] -> [1,C,F,h,w]


def valid_frame_counts(vae, around: int, count: int = 4) -> list[int]:
    """Frame counts near ``around`` that the VAE encodes without dropping frames (all for an image VAE)."""
    down, up = vae.downscale_ratio, vae.upscale_ratio
    if getattr(vae, "latent_dim", 2) != 3 or not (isinstance(down, tuple) and callable(down[0])):
        return []
    fits = [n for n in range(2, max(around, 1) * 2 + 16) if up[0](down[0](n)) == n]
    fits.sort(key=lambda n: (abs(n - around), n))
    return sorted(fits[:count])


def encode_keyframes(vae, images) -> torch.Tensor:
    """VAE Encode of IMAGE [F, H, W, C] after checking that F fits the VAE's temporal packing."""
    if not torch.is_tensor(images) or images.ndim != 4:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise vmc.VMCError(f"keyframes must be an IMAGE [frames, height, width, channels] (the Keyframe "
                           f"Extractor's keyframes); got {shape}.")
    if not bool(torch.isfinite(images).all()):
        raise vmc.VMCError("keyframes contain NaN/inf values: extract the keyframes again.")
    frames = images.shape[0]
    fits = valid_frame_counts(vae, frames)
    if fits and frames not in fits:
        kept = vae.upscale_ratio[0](vae.downscale_ratio[0](frames))
        raise vmc.VMCError(
            f"{frames} keyframes do not fit this VAE: it packs 4 frames into one latent frame and takes 4k+1 frames, "
            f"so only {kept} of the {frames} would be encoded. Set the Keyframe Extractor's keyframe_count to one "
            f"of {', '.join(map(str, fits))}.")
    return vae.encode(images[..., :3])


# ------------------------------------------------------------------ patches
def patches_for(model, state_dict: dict[str, torch.Tensor]) -> dict:
    """Core's own patch objects for a native-key LoRA state dict (what LoraLoaderModelOnly builds)."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    return comfy.lora.load_lora(state_dict, key_map, log_missing=True)


def patched_clone(model, state_dict: dict[str, torch.Tensor], strength: float = 1.0):
    patched = model.clone()
    patches = patches_for(model, state_dict)
    added = patched.add_patches(patches, strength)
    if len(added) != len(patches) or not patches:
        raise vmc.VMCError(f"Only {len(added)} of {len(patches)} motion LoRA layers fit this model.")
    return patched


# ------------------------------------------------------------------ training
def check_experts(model, high_noise_model, boundary: float) -> None:
    """Both experts of one Wan model (glue.check_expert_pair, as DDIM Video Invert checks them), boundary
    in (0, 1) (distill/experts.py)."""
    try:
        check_boundary(boundary)
    except ValueError as exc:
        raise vmc.VMCError(str(exc)) from None
    check_expert_pair(model, high_noise_model)
    families = motion_network(model)[1], motion_network(high_noise_model)[1]
    if families != ("wan", "wan"):
        raise vmc.VMCError(f"high_noise_model is for Wan 2.2 A14B's two experts; here MODEL is "
                           f"{vmc.FAMILY_NAMES[families[0]]} and high_noise_model {vmc.FAMILY_NAMES[families[1]]}. "
                           f"Disconnect high_noise_model, or connect both Wan 2.2 experts (high and low noise).")


def train_motion_lora(model, latent, conditioning, steps: int = 400, lr: float = 1e-4, rank: int = 32,
                      targets: str = "qkv", loss: str = "vmc_abs", seed: int = 0,
                      gradient_checkpointing=vmc.DEFAULT_CHECKPOINTING, caption: str = "", on_step=None,
                      blocks: str = "all", high_noise_model=None, boundary: float = 0.875):
    """(patched MODEL clone, MOTION_LORA, losses, stop message or None). The input MODEL is not changed.

    With ``high_noise_model`` (Wan 2.2 A14B), each expert is tuned on the timesteps it samples (see
    ``expert_ranges``), ``steps`` steps each; the MOTION_LORA then holds the pair (its 'high_noise' entry) and
    the tuned high-noise expert is ``motion_lora['high_noise']['model']``."""
    if targets not in vmc.TARGETS:
        raise vmc.VMCError(f"targets '{targets}' is not one of {', '.join(vmc.TARGETS)}.")
    if loss not in vmc.LOSSES:
        raise vmc.VMCError(f"loss '{loss}' is not one of {', '.join(vmc.LOSSES)}.")
    vmc.checkpoint_mode(gradient_checkpointing)
    if high_noise_model is None:
        return _train_one(model, latent, conditioning, steps, lr, rank, targets, loss, seed, gradient_checkpointing,
                          caption, on_step, blocks)
    check_experts(model, high_noise_model, boundary)
    low_range, high_range = expert_ranges(model, float(boundary))
    total = 2 * int(steps)

    def shifted(offset):
        if on_step is None:
            return None
        return lambda done, _total, value: on_step(offset + done, total, value)

    # the high-noise expert first: it draws the early steps, where the motion is laid out
    high = _train_one(high_noise_model, latent, conditioning, steps, lr, rank, targets, loss, seed,
                      gradient_checkpointing, caption, shifted(0), blocks, high_range, "high_noise")
    low = _train_one(model, latent, conditioning, steps, lr, rank, targets, loss, seed, gradient_checkpointing,
                     caption, shifted(int(steps)), blocks, low_range, "low_noise")
    tuned, motion_lora, losses, stopped = low
    tuned_high, lora_high, losses_high, stopped_high = high
    motion_lora["high_noise"] = dict(lora_high, model=tuned_high, losses=losses_high)
    stops = [f"{name}: {why}" for name, why in (("high-noise expert", stopped_high), ("low-noise expert", stopped))
             if why]
    return tuned, motion_lora, losses_high + losses, "; ".join(stops) or None


def checkpointing_that_runs(model, gradient_checkpointing) -> str:
    """The gradient checkpointing the tuning runs with on this MODEL and its load device, for the node's report:
    'compiled' runs as 'outer' where it cannot compile (no CUDA, no Triton, not a Wan model), and says so."""
    requested = vmc.checkpoint_mode(gradient_checkpointing)
    ran = vmc.effective_checkpointing(motion_network(model)[0], requested, device=model.load_device)
    return ran if ran == requested else f"{ran} ({requested} needs a Wan model on a CUDA GPU with Triton)"


def _train_one(model, latent, conditioning, steps, lr, rank, targets, loss, seed, gradient_checkpointing, caption,
               on_step, blocks, timestep_range=(0, 1000), expert: str = ""):
    checkpointing = vmc.checkpoint_mode(gradient_checkpointing)
    network, family = motion_network(model)
    with torch.inference_mode(False):
        latents = keyframe_latents(model, latent, family, needed=3 if loss == "vmc_abs" else 2)
        context = conditioning_context(conditioning)
        schedule = alphas_cumprod(model) if family == "unet3d" else sampler_space_noiser(model)
        # like core's Train LoRA: free the other models, load this one whole
        comfy.model_management.load_models_gpu([model], memory_required=1e20, force_full_load=True)
        make_weights_trainable(network)
        adapters = vmc.MotionAdapters(network, targets, rank=rank, seed=seed, blocks=blocks)
        config = vmc.VMCConfig(steps=int(steps), lr=float(lr), loss=loss, seed=int(seed),
                               gradient_checkpointing=checkpointing, timestep_range=tuple(timestep_range))
        try:
            result = vmc.train_motion_adapters(network, adapters, latents, context, schedule, config,
                                               prediction_type=prediction_type(model) if family == "unet3d" else "",
                                               on_step=on_step)
        except torch.OutOfMemoryError as exc:
            del adapters
            comfy.model_management.soft_empty_cache()
            size = (f"{latents.shape[2]} keyframes of {latents.shape[3] * 8}x{latents.shape[4] * 8}" if family == "unet3d"
                    else f"{latents.shape[2]} latent frames of {tuple(latents.shape[3:])}")
            raise vmc.VMCError(
                f"Out of GPU memory while tuning {size} (gradient_checkpointing '{checkpointing}'): "
                + ("set gradient_checkpointing to 'all', " if checkpointing != "all" else "")
                + f"use fewer or smaller keyframes, fewer blocks, targets 'qkv' instead of '{targets}', or a lower "
                  f"rank.") from exc
        state_dict = adapters.comfy_state_dict(LORA_KEY_PREFIX)
    metadata = motion_lora_metadata(model, adapters, config, result, caption, expert)
    motion_lora = {"state_dict": state_dict, "metadata": metadata}
    return patched_clone(model, state_dict), motion_lora, result.losses, result.stopped


def motion_lora_metadata(model, adapters: vmc.MotionAdapters, config: vmc.VMCConfig, result: vmc.VMCResult,
                         caption: str, expert: str = "") -> dict[str, str]:
    folder = getattr(model.model, "diffusers_folder", None)
    values = {
        "kind": KIND,
        "family": adapters.family,
        "base_model": os.path.basename(folder.rstrip("/\\")) if folder else type(model.model).__name__,
        "base_fingerprint": json.dumps(model_fingerprint(model, adapters.names)),
        "expert": expert,
        "prompt": caption or "",
        "steps": str(config.steps), "steps_done": str(result.steps_done),
        "rank": "full" if adapters.targets == "full_qkv" else str(adapters.deltas[0].rank),
        "alpha": str(adapters.alpha), "targets": adapters.targets, "blocks": adapters.blocks,
        "loss_kind": config.loss, "timestep_range": json.dumps(list(config.timestep_range)),
        "loss": f"{result.losses[-1]:.6f}" if result.losses else "nan",
        "losses": json.dumps([round(v, 6) for v in result.losses]),
        "lr": repr(config.lr), "seed": str(config.seed), "stopped": result.stopped or "",
    }
    return {META_PREFIX + k: v for k, v in values.items()}


# ------------------------------------------------------------------ files
def save_motion_lora(motion_lora: dict, path: str) -> str:
    """safetensors at ``path``, written to a temporary sibling and renamed into place."""
    import safetensors.torch

    if not isinstance(motion_lora, dict) or "state_dict" not in motion_lora:
        raise SearchPriorsError("motion_lora is not a MOTION_LORA: connect the VMC Temporal LoRA node's output.")
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in motion_lora["state_dict"].items()}
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    os.close(fd)
    try:
        safetensors.torch.save_file(tensors, tmp, metadata=dict(motion_lora.get("metadata", {})))
        os.chmod(tmp, 0o666 & ~current_umask())   # mkstemp makes 0600; ComfyUI's own outputs follow the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def current_umask() -> int:
    """The process umask, read without changing it where the system says it (setting it to read it back
    would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_motion_lora(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        state_dict, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except Exception as exc:  # noqa: BLE001 (a damaged or foreign file: say so on the node)
        raise SearchPriorsError(f"'{os.path.basename(path)}' could not be read as a LoRA file ({type(exc).__name__}: "
                                f"{str(exc)[:200]}): it is damaged or not a safetensors file. Save it again with "
                                f"Save Motion LoRA.") from exc
    return state_dict, dict(metadata or {})


def check_base_model(model, state_dict: dict, metadata: dict, name: str) -> None:
    """A clear error when the LoRA was trained on another base model than ``model``."""
    if metadata.get(META_PREFIX + "kind") != KIND:
        raise SearchPriorsError(f"'{name}' is not a motion LoRA saved by Save Motion LoRA (no SearchPriors metadata), "
                                f"so its base model cannot be checked: load it with core Load LoRA (model only).")
    try:
        saved = json.loads(metadata.get(META_PREFIX + "base_fingerprint", "{}"))
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise SearchPriorsError(f"Motion LoRA '{name}' has damaged metadata ({META_PREFIX}base_fingerprint is not "
                                f"the JSON object Save Motion LoRA writes: {exc}), so its base model cannot be "
                                f"checked. Save it again with Save Motion LoRA, or load it with core Load LoRA "
                                f"(model only) if you know its base model.") from None
    targets = sorted({k[len(LORA_KEY_PREFIX):].rsplit(".", 2)[0] if ".lora_" in k else
                      k[len(LORA_KEY_PREFIX):].rsplit(".", 1)[0]
                      for k in state_dict if k.startswith(LORA_KEY_PREFIX)})
    base = metadata.get(META_PREFIX + "base_model", "?")
    saved_family = metadata.get(META_PREFIX + "family") or "unet3d"   # files saved before Wan support: UNet3D
    try:
        family = motion_network(model)[1]
    except vmc.VMCError:
        family = None
    if family is not None and saved_family != family:
        raise SearchPriorsError(f"Motion LoRA '{name}' was trained for {vmc.FAMILY_NAMES.get(saved_family, saved_family)} "
                                f"('{base}'), but this MODEL is {vmc.FAMILY_NAMES[family]}. Load it on the model "
                                f"family it was trained for, or train one for this model with VMC Temporal LoRA.")
    try:
        current = model_fingerprint(model, targets)
    except Exception:
        current = {}
    problem = vmc.fingerprint_mismatch(saved, current)
    if problem:
        expert = metadata.get(META_PREFIX + "expert", "")
        hint = (f" It was tuned on Wan 2.2's {expert.replace('_', '-')} expert: load it on that expert's MODEL."
                if expert else "")
        raise SearchPriorsError(f"Motion LoRA '{name}' was trained on base model '{base}' and does not fit this "
                                f"MODEL ({problem}).{hint} Load the model it was trained on, or train a new one on "
                                f"this model with VMC Temporal LoRA.")


# ------------------------------------------------------------------ loss curve
def loss_curve_image(losses: list[float], width: int = 512, height: int = 256,
                     note: Optional[str] = None) -> torch.Tensor:
    """IMAGE [1,H,W,3]: the loss per step with its range, white on dark."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 48, width - 12, 20, height - 28
    draw.rectangle([left, top, right, bottom], outline=(90, 90, 100))
    finite = [v for v in losses if v == v and abs(v) != float("inf")]
    if finite:
        lo, hi = min(finite), max(finite)
        span = (hi - lo) or 1.0
        n = max(len(losses) - 1, 1)
        points = [(left + (right - left) * i / n, bottom - (bottom - top) * (v - lo) / span)
                  for i, v in enumerate(losses) if v in finite]
        if len(points) == 1:
            points.append(points[0])
        draw.line(points, fill=(120, 200, 255), width=2)
        draw.text((4, top), f"{hi:.4f}", fill=(220, 220, 220))
        draw.text((4, bottom - 10), f"{lo:.4f}", fill=(220, 220, 220))
        draw.text((left, bottom + 6), f"motion loss, {len(losses)} steps, last {finite[-1]:.4f}",
                  fill=(220, 220, 220))
    else:
        draw.text((left + 8, top + 8), "no finite loss", fill=(255, 120, 120))
    if note:
        draw.text((left + 8, top + 4), note[:80], fill=(255, 160, 80))
    import numpy as np

    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)
