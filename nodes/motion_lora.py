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

from ..distill import vmc
from ..retrieval.errors import SearchPriorsError

META_PREFIX = "searchpriors."
KIND = "vmc_motion_lora"


# ------------------------------------------------------------------ the MODEL's UNet
def diffusers_unet(model) -> torch.nn.Module:
    base = getattr(model, "model", None)
    unet = getattr(base, "diffusion_model", None)
    if unet is None:
        raise vmc.VMCError("This input is not a ComfyUI MODEL: connect the MODEL output of the ModelScope / "
                           "ZeroScope Loader.")
    vmc.find_temporal_projections(unet)  # says which models have temporal attention when this one has none
    return unet


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
    prefix = vmc.COMFY_PREFIX
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
        raise vmc.VMCError("conditioning is empty: connect CLIP Text Encode (with the ModelScope CLIP) of the "
                           "reference caption or the prompt.")
    context = conditioning[0][0]
    if context.ndim != 3:
        raise vmc.VMCError(f"conditioning has shape {tuple(context.shape)}; expected [1, tokens, width] from "
                           f"CLIP Text Encode.")
    return context[:1].detach().clone().float()


def keyframe_latents(model, latent) -> torch.Tensor:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or samples.ndim != 4:
        shape = None if samples is None else tuple(samples.shape)
        raise vmc.VMCError(f"keyframes must be a LATENT of frames as batch [F, 4, h, w] (core VAE Encode of the "
                           f"keyframe IMAGE with the ModelScope VAE); got {shape}.")
    channels = model.model.diffusion_model.config.in_channels if hasattr(model.model.diffusion_model, "config") \
        else samples.shape[1]
    if samples.shape[1] != channels:
        raise vmc.VMCError(f"keyframe latents have {samples.shape[1]} channels, the model takes {channels}: encode "
                           f"the keyframes with this model's VAE.")
    scaled = model.model.process_latent_in(samples.detach().clone().float())
    return scaled.permute(1, 0, 2, 3).unsqueeze(0)  # [F,C,h,w] -> [1,C,F,h,w]


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
def train_motion_lora(model, latent, conditioning, steps: int = 400, lr: float = 1e-4, rank: int = 32,
                      targets: str = "qkv", loss: str = "vmc_abs", seed: int = 0, gradient_checkpointing=vmc.DEFAULT_CHECKPOINTING,
                      caption: str = "", on_step=None):
    """(patched MODEL clone, MOTION_LORA, losses, stop message or None). The input MODEL is not changed."""
    if targets not in vmc.TARGETS:
        raise vmc.VMCError(f"targets '{targets}' is not one of {', '.join(vmc.TARGETS)}.")
    if loss not in vmc.LOSSES:
        raise vmc.VMCError(f"loss '{loss}' is not one of {', '.join(vmc.LOSSES)}.")
    checkpointing = vmc.checkpoint_mode(gradient_checkpointing)
    unet = diffusers_unet(model)
    with torch.inference_mode(False):
        latents = keyframe_latents(model, latent)
        context = conditioning_context(conditioning)
        schedule = alphas_cumprod(model)
        # like core's Train LoRA: free the other models, load this one whole
        comfy.model_management.load_models_gpu([model], memory_required=1e20, force_full_load=True)
        make_weights_trainable(unet)
        adapters = vmc.MotionAdapters(unet, targets, rank=rank, seed=seed)
        config = vmc.VMCConfig(steps=int(steps), lr=float(lr), loss=loss, seed=int(seed),
                               gradient_checkpointing=checkpointing)
        try:
            result = vmc.train_motion_adapters(unet, adapters, latents, context, schedule, config,
                                               prediction_type=prediction_type(model), on_step=on_step)
        except torch.OutOfMemoryError as exc:
            del adapters
            comfy.model_management.soft_empty_cache()
            raise vmc.VMCError(
                f"Out of GPU memory while tuning {latents.shape[2]} keyframes of {latents.shape[3] * 8}x"
                f"{latents.shape[4] * 8} (gradient_checkpointing '{checkpointing}'): "
                + ("set gradient_checkpointing to 'all', " if checkpointing != "all" else "")
                + f"use fewer or smaller keyframes, targets 'qkv' instead of '{targets}', or a lower rank.") from exc
        state_dict = adapters.comfy_state_dict()
    metadata = motion_lora_metadata(model, adapters, config, result, caption)
    motion_lora = {"state_dict": state_dict, "metadata": metadata}
    return patched_clone(model, state_dict), motion_lora, result.losses, result.stopped


def motion_lora_metadata(model, adapters: vmc.MotionAdapters, config: vmc.VMCConfig, result: vmc.VMCResult,
                         caption: str) -> dict[str, str]:
    folder = getattr(model.model, "diffusers_folder", None)
    values = {
        "kind": KIND,
        "base_model": os.path.basename(folder.rstrip("/\\")) if folder else type(model.model).__name__,
        "base_fingerprint": json.dumps(model_fingerprint(model, adapters.names)),
        "prompt": caption or "",
        "steps": str(config.steps), "steps_done": str(result.steps_done),
        "rank": "full" if adapters.targets == "full_qkv" else str(adapters.deltas[0].rank),
        "alpha": str(adapters.alpha), "targets": adapters.targets, "loss_kind": config.loss,
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
    targets = sorted({k[len(vmc.COMFY_PREFIX):].rsplit(".", 2)[0] if ".lora_" in k else
                      k[len(vmc.COMFY_PREFIX):].rsplit(".", 1)[0]
                      for k in state_dict if k.startswith(vmc.COMFY_PREFIX)})
    base = metadata.get(META_PREFIX + "base_model", "?")
    try:
        current = model_fingerprint(model, targets)
    except Exception:
        current = {}
    problem = vmc.fingerprint_mismatch(saved, current)
    if problem:
        raise SearchPriorsError(f"Motion LoRA '{name}' was trained on base model '{base}' and does not fit this "
                                f"MODEL ({problem}). Load the model it was trained on, or train a new one on this "
                                f"model with VMC Temporal LoRA.")


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
