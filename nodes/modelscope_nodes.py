"""ModelScope / ZeroScope Loader and Diffusers Scheduler Sigmas nodes (native MODEL, CLIP, VAE, SIGMAS).

The loader lists the diffusers folders of the UNet3D text-to-video family under ComfyUI's models/diffusers/
and returns ComfyUI's own types, so core KSampler / SamplerCustomAdvanced / VAE Decode work with them.
The sigmas node gives the folder scheduler's DDIM timesteps so that core sampling reproduces diffusers'
TextToVideoSDPipeline exactly. The model code is in modelscope_model.py and distill/diffusers_folder.py.
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.v0_0_2 import io

from ..distill.diffusers_folder import DiffusersFolderError, inspect_folder, list_t2v_folders
from .comfy_internals import glue

CATEGORY = "SearchPriors/models"
DIFFUSERS_FOLDER = "diffusers"
DTYPE_CHOICES = ["auto", "fp32", "fp16", "bf16"]
NO_FOLDERS = ("No ModelScope/ZeroScope model found: put a ModelScope/ZeroScope diffusers folder in "
              "models/diffusers/ (e.g. models/diffusers/zeroscope_v2_576w with unet/, vae/, text_encoder/, "
              "tokenizer/, scheduler/ and model_index.json: the diffusers-format text-to-video-ms-1.7b or "
              "zeroscope_v2_576w repository), then refresh the page.")

def diffusers_roots() -> list[str]:
    try:
        return list(folder_paths.get_folder_paths(DIFFUSERS_FOLDER))
    except KeyError:
        return [os.path.join(folder_paths.models_dir, DIFFUSERS_FOLDER)]


def folder_choices() -> list[str]:
    return list_t2v_folders(diffusers_roots())


def folder_path(name) -> str:
    """The folder called ``name`` under models/diffusers (names only: no paths from a workflow)."""
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name:
        raise DiffusersFolderError(NO_FOLDERS if not folder_choices() else
                                   "No model folder selected: pick one in the loader's list.")
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise DiffusersFolderError(f"'{name}' is not a folder name under models/diffusers/.")
    for root in diffusers_roots():
        candidate = os.path.join(root, name)
        if os.path.isdir(candidate):
            return candidate
    known = ", ".join(folder_choices()) or "none"
    raise DiffusersFolderError(f"No folder '{name}' in models/diffusers/ (ModelScope/ZeroScope folders found: "
                               f"{known}). " + ("" if known != "none" else NO_FOLDERS))


def folder_stamp(path: str) -> str:
    """Changes when any config or weight file of the folder changes (cache key and fingerprint)."""
    parts = []
    for sub in ("", "unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        parts.append(glue.file_stamp(os.path.join(path, sub)))
        directory = os.path.join(path, sub)
        if sub and os.path.isdir(directory):
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
            parts.extend(f"{e.name}:{glue.file_stamp(e.path)}" for e in entries)
    return "|".join(parts)


def load_folder(name: str, dtype: str):
    from .comfy_internals.modelscope_model import load_clip, load_model, load_vae

    folder = inspect_folder(folder_path(name))
    embeddings = folder_paths.get_folder_paths("embeddings") if "embeddings" in folder_paths.folder_names_and_paths \
        else None
    return load_model(folder, dtype), load_clip(folder, dtype, embeddings), load_vae(folder, dtype)


class ModelScopeLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = folder_choices()
        return io.Schema(
            node_id="SearchPriors_ModelScopeLoader",
            display_name="ModelScope / ZeroScope Loader",
            category=CATEGORY,
            description="Loads a ModelScope (text-to-video-ms-1.7b) or ZeroScope diffusers folder from "
                        "models/diffusers/ as ComfyUI's own MODEL, CLIP and VAE. Latents are frames as batch: "
                        "Empty Latent Image with batch_size = frames, VAE Encode / Decode of F frames.",
            inputs=[
                io.Combo.Input("folder", options=choices, default=choices[0] if choices else None,
                               tooltip="A diffusers-format folder in models/diffusers/ (unet/, vae/, text_encoder/, "
                                       "tokenizer/, scheduler/)"),
                io.Combo.Input("dtype", options=DTYPE_CHOICES, default="auto",
                               tooltip="Weight dtype of the UNet and text encoder (auto: ComfyUI's choice for the "
                                       "device). The VAE uses fp32 or bf16 (fp16 overflows in the SD VAE)."),
            ],
            outputs=[io.Model.Output("MODEL"), io.Clip.Output("CLIP"), io.Vae.Output("VAE")],
        )

    @classmethod
    def validate_inputs(cls, folder=None, dtype=None):
        return True  # an empty list or a missing folder is reported by execute, on the node, with the fix

    @classmethod
    def fingerprint_inputs(cls, folder=None, dtype=None, **kwargs):
        try:
            return (folder_stamp(folder_path(folder)), dtype)
        except Exception:
            return float("nan")

    @classmethod
    def execute(cls, folder=None, dtype="auto", **kwargs) -> io.NodeOutput:
        if dtype not in DTYPE_CHOICES:
            raise DiffusersFolderError(f"dtype '{dtype}' is not one of {', '.join(DTYPE_CHOICES)}.")
        model, clip, vae = load_folder(folder, dtype)
        return io.NodeOutput(model, clip, vae)


class DiffusersSchedulerSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_DiffusersSchedulerSigmas",
            display_name="Diffusers Scheduler Sigmas (DDIM)",
            category=CATEGORY,
            description="The timesteps of diffusers' DDIMScheduler for the MODEL's folder (ModelScope/ZeroScope "
                        "Loader) as SIGMAS, ending at the sigma of final_alpha_cumprod. With core "
                        "SamplerCustom(Advanced) and sampler 'ddim' or 'euler' this reproduces the diffusers "
                        "TextToVideoSDPipeline with DDIM (eta 0) exactly.",
            inputs=[
                io.Model.Input("model", tooltip="A MODEL from the ModelScope / ZeroScope Loader"),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Number of DDIM steps"),
            ],
            outputs=[io.Sigmas.Output("SIGMAS")],
        )

    @classmethod
    def execute(cls, model, steps: int) -> io.NodeOutput:
        from .comfy_internals.modelscope_model import modelscope_ddim_sigmas

        return io.NodeOutput(modelscope_ddim_sigmas(model, int(steps)))
