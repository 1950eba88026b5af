"""Reading ModelScope / ZeroScope diffusers folders (the `UNet3DConditionModel` text-to-video family).

A folder has the layout of the public text-to-video-ms-1.7b and zeroscope_v2_576w repositories:
model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/. `inspect_folder` validates it from
its JSON files alone (cheap: the loader's dropdown and the node's validation use it) and says what is
missing or unknown; `read_state_dict` reads a component's weights (safetensors or .bin, sharded or not,
fp16 variants); `load_unet` builds the diffusers UNet3D in a dtype (the native MODEL wraps it) and
`load_modules` all of the folder's diffusers/transformers modules; `ddim_sigmas` gives the sigmas of the
diffusers DDIM timesteps. No ComfyUI import here: the ComfyUI objects are built in nodes/comfy_internals/modelscope_model.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..errors import SearchPriorsError

PIPELINE_CLASSES = ("TextToVideoSDPipeline", "VideoToVideoSDPipeline")
SUPPORTED_MODELS = "ModelScope text-to-video-ms-1.7b and ZeroScope (zeroscope_v2_576w / _XL), diffusers format"
COMPONENT_CLASSES = {
    "unet": ("UNet3DConditionModel",),
    "vae": ("AutoencoderKL",),
    "text_encoder": ("CLIPTextModel",),
    "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"),
}
PREDICTION_TYPES = ("epsilon", "v_prediction")
BETA_SCHEDULES = ("scaled_linear", "linear", "squaredcos_cap_v2")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Weight file names in the order they are preferred; an index file names the shards of a sharded save.
WEIGHT_STEMS = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": ("model", "pytorch_model"),
}


class DiffusersFolderError(SearchPriorsError):
    """A folder that is not a complete ModelScope/ZeroScope diffusers folder; the message says why."""


@dataclass
class T2VFolder:
    """A validated folder: its path and each component's config (JSON files only, no weights read)."""

    path: str
    model_index: dict
    unet_config: dict
    vae_config: dict
    text_encoder_config: dict
    scheduler_config: dict
    tokenizer_dir: str
    weight_files: dict = field(default_factory=dict)  # component -> list of files (shards in order)

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def latent_scale(self) -> float:
        return float(self.vae_config.get("scaling_factor", 0.18215))

    @property
    def vae_downscale(self) -> int:
        return 2 ** (len(self.vae_config.get("block_out_channels", (0, 0, 0, 0))) - 1)


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DiffusersFolderError(f"{what} is missing: {path} does not exist.") from None
    except (OSError, ValueError) as exc:
        raise DiffusersFolderError(f"{what} cannot be read ({path}): {exc}") from None
    if not isinstance(data, dict):
        raise DiffusersFolderError(f"{what} ({path}) is not a JSON object.")
    return data


def _weight_files(component_dir: str, stems) -> list[str]:
    """The weight files of one component: single file, fp16 variant, or the shards an index names."""
    stems = (stems,) if isinstance(stems, str) else stems
    for stem in stems:
        for ext in ("safetensors", "bin"):
            for variant in ("", ".fp16"):
                single = os.path.join(component_dir, f"{stem}{variant}.{ext}")
                if os.path.isfile(single):
                    return [single]
                index = os.path.join(component_dir, f"{stem}{variant}.{ext}.index.json")
                if os.path.isfile(index):
                    weight_map = _read_json(index, "Shard index").get("weight_map", {})
                    shards = sorted(set(weight_map.values()))
                    paths = [os.path.join(component_dir, s) for s in shards]
                    missing = [s for s in shards if not os.path.isfile(os.path.join(component_dir, s))]
                    if missing:
                        raise DiffusersFolderError(f"{component_dir}: shard(s) {', '.join(missing)} named in "
                                                   f"{os.path.basename(index)} are missing; download them again.")
                    return paths
    return []


def _unsupported(what: str) -> DiffusersFolderError:
    return DiffusersFolderError(f"{what} Supported: {SUPPORTED_MODELS}, with unet/ (UNet3DConditionModel), "
                                f"vae/ (AutoencoderKL), text_encoder/ (CLIPTextModel), tokenizer/ (CLIPTokenizer) "
                                f"and scheduler/.")


# ComfyUI turns a diffusers VAE into its own AutoencoderKL with a fixed key map (comfy/diffusers_convert.py):
# 4 levels, at most 2 resnets per encoder level; anything else loads with keys missing and decodes to black.
VAE_LEVELS = 4
VAE_MAX_LAYERS_PER_BLOCK = 2
VAE_NORM_GROUPS = 32


def check_vae_structure(name: str, vae: dict, unet: Optional[dict] = None) -> None:
    """Refuse a VAE config that ComfyUI's VAE cannot hold, naming what differs from the SD VAE."""
    where = f"'{name}/vae'"
    channels = vae.get("block_out_channels", [64])
    if not isinstance(channels, (list, tuple)) or not channels or \
            not all(isinstance(c, int) and c > 0 for c in channels):
        raise DiffusersFolderError(f"{where}: block_out_channels is {channels!r}, not a list of channel counts.")
    if len(channels) != VAE_LEVELS:
        raise DiffusersFolderError(
            f"{where} has {len(channels)} levels (block_out_channels {list(channels)}); ComfyUI's VAE conversion "
            f"needs the Stable Diffusion VAE's {VAE_LEVELS} (e.g. [128, 256, 512, 512]), and would decode this one "
            f"to black. Use the folder's original vae/ (the SD VAE).")
    groups = int(vae.get("norm_num_groups", VAE_NORM_GROUPS))
    if groups != VAE_NORM_GROUPS or any(c % groups for c in channels):
        raise DiffusersFolderError(
            f"{where}: norm_num_groups {groups} with block_out_channels {list(channels)}; ComfyUI's VAE uses "
            f"{VAE_NORM_GROUPS} groups, so every channel count must be a multiple of {VAE_NORM_GROUPS}.")
    if any(c % channels[0] for c in channels):
        raise DiffusersFolderError(f"{where}: block_out_channels {list(channels)} are not multiples of the first "
                                   f"({channels[0]}), which ComfyUI's VAE needs.")
    layers = int(vae.get("layers_per_block", 1))
    if not 1 <= layers <= VAE_MAX_LAYERS_PER_BLOCK:
        raise DiffusersFolderError(f"{where}: layers_per_block is {layers}; ComfyUI's VAE conversion maps 1 or "
                                   f"{VAE_MAX_LAYERS_PER_BLOCK} (the SD VAE has 2).")
    if vae.get("act_fn", "silu") != "silu" or not vae.get("use_quant_conv", True):
        raise DiffusersFolderError(f"{where} is not a Stable Diffusion style AutoencoderKL (act_fn "
                                   f"'{vae.get('act_fn', 'silu')}', use_quant_conv {vae.get('use_quant_conv', True)}).")
    latent = int(vae.get("latent_channels", 4))
    unet_in = (unet or {}).get("in_channels")
    if unet_in is not None and int(unet_in) != latent:
        raise DiffusersFolderError(f"'{name}': the VAE makes {latent}-channel latents but the UNet takes "
                                   f"{unet_in} channels; the vae/ and unet/ folders come from different models.")


def key_differences(name: str, component: str, missing, unexpected, shown: int = 3) -> Optional[str]:
    """A message naming the component and the keys its weights lack or have in excess, or None."""
    missing, unexpected = sorted(missing), sorted(unexpected)
    if not missing and not unexpected:
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:shown])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:shown])})")
    return (f"'{name}/{component}' weights do not fit its config.json: {' and '.join(parts)}. The folder is "
            f"damaged or mixes two models: download {component}/ again.")


def inspect_folder(path: str, check_weights: bool = True) -> T2VFolder:
    """Validate a diffusers folder of the UNet3D text-to-video family from its JSON files.

    Raises DiffusersFolderError naming the missing component or the unknown architecture.
    """
    if not os.path.isdir(path):
        raise DiffusersFolderError(f"Model folder {path} does not exist.")
    name = os.path.basename(os.path.normpath(path))
    index_path = os.path.join(path, "model_index.json")
    if not os.path.isfile(index_path):
        raise _unsupported(f"'{name}' has no model_index.json, so it is not a diffusers-format folder.")
    model_index = _read_json(index_path, "model_index.json")
    pipeline = model_index.get("_class_name")
    if pipeline not in PIPELINE_CLASSES:
        raise _unsupported(f"'{name}' is a {pipeline or 'unnamed'} folder (model_index.json _class_name), an "
                           f"architecture this loader does not know.")
    missing = [c for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
               if not os.path.isdir(os.path.join(path, c))]
    if missing:
        raise DiffusersFolderError(f"'{name}' is missing component folder(s) {', '.join(m + '/' for m in missing)}: a "
                                   f"ModelScope/ZeroScope folder needs unet/, vae/, text_encoder/, tokenizer/ and "
                                   f"scheduler/. Download the whole repository (diffusers format).")

    configs = {}
    for component, config_name in (("unet", "config.json"), ("vae", "config.json"),
                                   ("text_encoder", "config.json"), ("scheduler", "scheduler_config.json")):
        configs[component] = _read_json(os.path.join(path, component, config_name), f"{name}/{component}/{config_name}")

    # model_index.json says which class each component is; the configs must agree with it.
    for component, allowed in COMPONENT_CLASSES.items():
        entry = model_index.get(component)
        declared = entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else None
        if component == "text_encoder":
            archs = configs[component].get("architectures") or []
            actual = archs[0] if archs else declared
        elif component == "tokenizer":
            actual = declared
        else:
            actual = configs[component].get("_class_name", declared)
        for value in {declared, actual} - {None}:
            if value not in allowed:
                raise _unsupported(f"'{name}': {component} is a {value}, an architecture this loader does not know "
                                   f"(expected {' or '.join(allowed)}).")
    check_vae_structure(name, configs["vae"], configs["unet"])
    scheduler = configs["scheduler"]
    prediction = scheduler.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise _unsupported(f"'{name}': scheduler prediction_type '{prediction}' is not supported "
                           f"({', '.join(PREDICTION_TYPES)}).")
    if scheduler.get("trained_betas") is None and scheduler.get("beta_schedule", "linear") not in BETA_SCHEDULES:
        raise _unsupported(f"'{name}': scheduler beta_schedule '{scheduler.get('beta_schedule')}' is not supported "
                           f"({', '.join(BETA_SCHEDULES)}).")

    tokenizer_dir = os.path.join(path, "tokenizer")
    has_slow = all(os.path.isfile(os.path.join(tokenizer_dir, f)) for f in ("vocab.json", "merges.txt"))
    if not has_slow:
        raise DiffusersFolderError(f"'{name}/tokenizer' lacks vocab.json and merges.txt (the CLIP tokenizer files); "
                                   f"download the tokenizer folder again.")

    weight_files = {}
    if check_weights:
        for component, stems in WEIGHT_STEMS.items():
            files = _weight_files(os.path.join(path, component), stems)
            if not files:
                first = stems if isinstance(stems, str) else stems[0]
                raise DiffusersFolderError(f"'{name}/{component}' has no weights ({first}.safetensors or .bin); "
                                           f"download them (diffusers format).")
            weight_files[component] = files
    return T2VFolder(path=path, model_index=model_index, unet_config=configs["unet"], vae_config=configs["vae"],
                     text_encoder_config=configs["text_encoder"], scheduler_config=scheduler,
                     tokenizer_dir=tokenizer_dir, weight_files=weight_files)


def looks_like_t2v_folder(path: str) -> bool:
    """Cheap test for the loader's dropdown: model_index.json names a UNet3D text-to-video pipeline."""
    try:
        with open(os.path.join(path, "model_index.json"), encoding="utf-8") as f:
            index = json.load(f)
        return isinstance(index, dict) and (index.get("_class_name") in PIPELINE_CLASSES or
                                            list(index.get("unet") or [None, None])[1] == "UNet3DConditionModel")
    except (OSError, ValueError, TypeError, IndexError):
        return False


def list_t2v_folders(roots: list[str]) -> list[str]:
    names = set()
    for root in roots:
        if os.path.isdir(root):
            names.update(e.name for e in os.scandir(root) if e.is_dir() and looks_like_t2v_folder(e.path))
    return sorted(names)


def resolve_dtype(dtype, stored: Optional[torch.dtype] = None) -> torch.dtype:
    """'auto' means the dtype the weights are stored in (fp32 when unknown)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return stored or torch.float32
    if dtype not in DTYPES:
        raise DiffusersFolderError(f"dtype '{dtype}' is not one of auto, {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def read_state_dict(files: list[str], dtype=None) -> dict[str, torch.Tensor]:
    """Read weight files (safetensors or .bin); floating tensors cast to ``dtype`` unless it is None/'auto'."""
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if path.endswith(".safetensors"):
            import safetensors.torch

            part = safetensors.torch.load_file(path)
        else:
            part = torch.load(path, map_location="cpu", weights_only=True)
        state.update(part)
    if dtype not in (None, "auto"):
        target = resolve_dtype(dtype)
        state = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
    return state


def stored_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    for value in state.values():
        if value.is_floating_point():
            return value.dtype
    return torch.float32


def load_unet(folder: T2VFolder, dtype="auto"):
    """The diffusers UNet3DConditionModel of ``folder`` in ``dtype``, eval mode, on the CPU."""
    from diffusers import UNet3DConditionModel

    state = read_state_dict(folder.weight_files["unet"])
    target = resolve_dtype(dtype, stored_dtype(state))
    state = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
    config = {k: v for k, v in folder.unet_config.items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet3DConditionModel.from_config(config)
    missing, unexpected = unet.load_state_dict(state, strict=False, assign=True)
    problem = key_differences(folder.name, "unet", missing, unexpected)
    if problem:
        raise DiffusersFolderError(problem)
    leftovers = [n for n, t in list(unet.named_parameters()) + list(unet.named_buffers()) if t.is_meta]
    if leftovers:
        raise DiffusersFolderError(f"'{folder.name}/unet': no weights for {leftovers[0]}.")
    return with_quick_dtype(unet.eval().requires_grad_(False))


class QuickDtype:
    """Mixin: a diffusers model's ``dtype`` read from its first floating parameter, without walking the model.

    diffusers' ``ModelMixin.dtype`` first walks every submodule looking for layer-wise casting hooks: ~9 ms of
    host time for the ZeroScope UNet3D (1,662 submodules), read once in every ``UNet3DConditionModel.forward``
    and twice more per model call by ComfyUI (``BaseModel.get_dtype``). Measured on an H200 (2026-12-02),
    those ~28 ms per call were enough to make the batch-1 inversion host-bound: the host needed ~106 ms per
    step for ~105 ms of GPU work, so any host hiccup left the GPU idle. The answer is diffusers' own as long as
    no layer-wise casting hook (``enable_layerwise_casting``) is installed: the pack installs none, and loaders
    of this class do not offer it."""

    @property
    def dtype(self) -> torch.dtype:
        keep = getattr(self, "_keep_in_fp32_modules", None) or ()
        for name, param in self.named_parameters():
            if param.is_floating_point() and not any(k in name for k in keep):
                return param.dtype
        return super().dtype


_QUICK_DTYPE_CLASSES: dict = {}


def with_quick_dtype(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its class swapped in place for a same-named subclass with ``QuickDtype`` (isinstance,
    parameters, state-dict keys and config unchanged); returns it. Idempotent."""
    cls = type(model)
    if isinstance(model, QuickDtype):
        return model
    if cls not in _QUICK_DTYPE_CLASSES:
        _QUICK_DTYPE_CLASSES[cls] = type(cls.__name__, (QuickDtype, cls),
                                         {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    model.__class__ = _QUICK_DTYPE_CLASSES[cls]
    return model


def load_modules(folder: T2VFolder, dtype="auto") -> dict:
    """The folder as diffusers/transformers modules (unet, vae, text_encoder, tokenizer, scheduler), e.g. to
    build a reference TextToVideoSDPipeline(**modules); weights in ``dtype`` ('auto': as stored)."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = load_unet(folder, dtype)
    target = unet.dtype
    modules = {"unet": unet, "tokenizer": CLIPTokenizer.from_pretrained(folder.tokenizer_dir),
               "scheduler": DDIMScheduler.from_pretrained(folder.path, subfolder="scheduler")}
    modules["vae"] = AutoencoderKL.from_pretrained(folder.path, subfolder="vae", torch_dtype=target).eval()
    import transformers

    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"  # renamed in 5.x
    modules["text_encoder"] = CLIPTextModel.from_pretrained(os.path.join(folder.path, "text_encoder"),
                                                            **{dtype_key: target}).eval()
    return modules


def beta_schedule(scheduler_config: dict) -> torch.Tensor:
    """The scheduler's training betas (float32), computed by diffusers' own DDIMScheduler."""
    return ddim_scheduler(scheduler_config).betas.clone()


def ddim_scheduler(scheduler_config: dict):
    from diffusers import DDIMScheduler

    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    return DDIMScheduler.from_config(config)


def ddim_sigmas(scheduler_config: dict, steps: int) -> tuple[torch.Tensor, list[int]]:
    """Sigmas (VE form, sqrt((1 - a) / a)) of diffusers' DDIMScheduler timesteps for ``steps`` steps.

    The last sigma is that of ``final_alpha_cumprod``: alphas_cumprod[0] with set_alpha_to_one false (a small
    sigma, ~0.029 for ModelScope), 1.0 (sigma 0) otherwise. Returns (sigmas [steps + 1], timesteps).
    """
    if int(steps) < 1:
        raise DiffusersFolderError(f"steps must be at least 1 (got {steps}).")
    scheduler = ddim_scheduler(scheduler_config)
    if steps > scheduler.config.num_train_timesteps:
        raise DiffusersFolderError(f"steps ({steps}) exceeds the scheduler's {scheduler.config.num_train_timesteps} "
                                   f"training timesteps.")
    scheduler.set_timesteps(int(steps))
    timesteps = [int(t) for t in scheduler.timesteps]
    acp = scheduler.alphas_cumprod  # float32, as the pipeline uses
    if max(timesteps) >= len(acp):
        # "leading" spacing plus steps_offset reaches past the last training timestep near the maximum
        most = int(steps) - 1
        while most > 1:
            scheduler.set_timesteps(most)
            if max(int(t) for t in scheduler.timesteps) < len(acp):
                break
            most -= 1
        raise DiffusersFolderError(
            f"steps {steps} is more than this scheduler can take: its timesteps would reach {max(timesteps)}, "
            f"past the last of its {len(acp)} training timesteps (timestep_spacing "
            f"'{scheduler.config.timestep_spacing}', steps_offset {scheduler.config.steps_offset}); use {most} "
            f"or fewer steps.")
    sigmas = ((1 - acp) / acp) ** 0.5
    final = scheduler.final_alpha_cumprod
    final_sigma = ((1 - final) / final) ** 0.5
    return torch.cat([sigmas[timesteps], final_sigma.reshape(1).to(sigmas.dtype)]), timesteps
