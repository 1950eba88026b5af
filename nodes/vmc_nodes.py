"""VMC Temporal LoRA, Save Motion LoRA and Load Motion LoRA nodes (Search-T2V Sec. 4.3, Eq. 10).

Thin adapters over nodes/comfy_internals/motion_lora.py (ComfyUI binding) and distill/vmc.py (adapters, loss, loop).
"""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.v0_0_2 import io

from ..distill import vmc
from ..retrieval.errors import SearchPriorsError
from .comfy_internals import glue
from .sockets import MotionLoraType

CATEGORY = "SearchPriors/search_t2v"
TARGET_CHOICES = list(vmc.TARGETS)
LOSS_CHOICES = list(vmc.LOSSES)
CHECKPOINT_CHOICES = list(vmc.CHECKPOINT_MODES)
log = logging.getLogger(__name__)


class VMCTemporalLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_VMCTemporalLoRA",
            display_name="VMC Temporal LoRA (Search-T2V)",
            category=CATEGORY,
            description="Distils the motion of the keyframes into a video MODEL (VMC motion distillation, "
                        "Search-T2V Eq. 10): adapters on the query/key/value of the attention that sees time (the "
                        "temporal attention of ModelScope / ZeroScope; the self-attention of every Wan block), "
                        "trained so that the predicted noise changes between frames as the true noise does. Returns "
                        "the MODEL with the adapters as weight patches (the input MODEL is unchanged), the "
                        "MOTION_LORA for Save Motion LoRA, and the loss curve. Wan 2.2 A14B: connect the high-noise "
                        "expert too and both are tuned, each on the timesteps it samples.",
            inputs=[
                io.Model.Input("model", tooltip="ModelScope / ZeroScope (the pack's loader), or Wan 2.1 / Wan 2.2 5B / "
                                                "Wan 2.2 A14B's low-noise expert (core Load Diffusion Model)"),
                io.Latent.Input("keyframes", tooltip="Encode Keyframes of the keyframe IMAGE with the model's own VAE: "
                                                     "ModelScope at least 3 frames; Wan 4k+1 frames (9, 13, 17, ...), "
                                                     "which its VAE packs into k+1 latent frames"),
                io.Conditioning.Input("conditioning",
                                      tooltip="Text the model is tuned with. VMC tunes with the reference video's "
                                              "own caption; Search-T2V does not say which text it used: the "
                                              "bundled workflow encodes the reference caption (retrieved video)."),
                io.Int.Input("steps", default=400, min=1, max=10000, tooltip="Training steps (VMC: 400)"),
                io.Float.Input("lr", default=1e-4, min=1e-7, max=1.0, step=1e-5,
                               tooltip="AdamW learning rate (VMC: 1e-4; weight decay 1e-2, grad clip 1.0)"),
                io.Int.Input("rank", default=32, min=1, max=1024,
                             tooltip="LoRA rank (alpha = rank, so scale 1); ignored for full_qkv"),
                io.Combo.Input("targets", options=TARGET_CHOICES, default="qkv",
                               tooltip="qkv: LoRA on query/key/value of the temporal attention; qkv+out: also "
                                       "the output projection; full_qkv: full fine-tuning of q/k/v (as the VMC "
                                       "code), saved as weight differences"),
                io.Combo.Input("loss", options=LOSS_CHOICES, default="vmc_abs",
                               tooltip="vmc_abs: VMC code (abs of frame differences, cosine over the frame axis "
                                       "per pixel); eq10_pairs: Eq. 10 literally (cosine per frame pair)"),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Seeds the adapter init, timesteps and noise"),
                io.Combo.Input("gradient_checkpointing", options=CHECKPOINT_CHOICES, default=vmc.DEFAULT_CHECKPOINTING,
                               tooltip="What is recomputed in backward instead of kept in VRAM. all: every "
                                       "transformer/resnet block (least VRAM, about one extra forward per step); "
                                       "outer: those of the two highest-resolution levels (Wan: every block but "
                                       "its attention); outermost: the highest level only (Wan: every other "
                                       "block); off: none (most VRAM); compiled (default): Wan on a CUDA GPU with "
                                       "Triton compiles each block and keeps only what is costly to recompute "
                                       "(fastest under 10 GB; the first step compiles, ~15-35 s), elsewhere it "
                                       "runs as outer. benchmarks/README.md: measured VRAM and speed of each"),
                io.String.Input("caption", default="", optional=True,
                                tooltip="The text that was encoded into conditioning; recorded in the LoRA's "
                                        "metadata only"),
                io.String.Input("blocks", default="all", optional=True,
                                tooltip="Wan only: the transformer blocks whose self-attention is tuned, 'all' or "
                                        "0-based numbers and ranges such as '0-9, 20'. ModelScope: 'all'"),
                io.Model.Input("high_noise_model", optional=True,
                               tooltip="Wan 2.2 A14B: the high-noise expert. Both experts are tuned, each on the "
                                       "timesteps it samples (steps each); Save Motion LoRA writes the pair"),
                io.Float.Input("boundary", default=0.875, min=0.001, max=0.999, step=0.005, optional=True,
                               tooltip="With high_noise_model: the fraction of the timesteps above which the "
                                       "high-noise expert samples (Wan 2.2 text-to-video: 0.875)"),
            ],
            outputs=[io.Model.Output("MODEL", display_name="MODEL"),
                     MotionLoraType.Output("MOTION_LORA", display_name="MOTION_LORA"),
                     io.Image.Output("loss_curve", display_name="loss_curve", tooltip="Motion loss per step"),
                     io.String.Output("report", display_name="report",
                                      tooltip="Steps done, first and last loss, and why training stopped early"),
                     io.Model.Output("MODEL_HIGH_NOISE", display_name="MODEL_HIGH_NOISE",
                                     tooltip="The tuned high-noise expert (Wan 2.2 A14B); without high_noise_model "
                                             "connected, the same tuned MODEL as the first output")],
        )

    @classmethod
    def execute(cls, model, keyframes, conditioning, steps=400, lr=1e-4, rank=32, targets="qkv", loss="vmc_abs",
                seed=0, gradient_checkpointing=vmc.DEFAULT_CHECKPOINTING, caption="", blocks="all",
                high_noise_model=None, boundary=0.875) -> io.NodeOutput:
        from .comfy_internals.motion_lora import checkpointing_that_runs, loss_curve_image, train_motion_lora

        tuned, motion_lora, losses, stopped = train_motion_lora(
            model, keyframes, conditioning, steps=steps, lr=lr, rank=rank, targets=targets, loss=loss, seed=seed,
            gradient_checkpointing=gradient_checkpointing, caption=caption or "", on_step=glue.progress_with_loss(),
            blocks=blocks or "all", high_noise_model=high_noise_model, boundary=boundary)
        report = (f"{len(losses)} of {steps * (2 if high_noise_model is not None else 1)} steps, {targets}, "
                  f"rank {rank}, loss {loss}, blocks {blocks or 'all'}, checkpointing "
                  f"{checkpointing_that_runs(model, gradient_checkpointing)}: "
                  f"{losses[0]:.4f} -> {losses[-1]:.4f}" if losses else f"no step finished ({targets}, {loss})")
        high = motion_lora.get("high_noise")
        if high is not None:
            report += (f"\nboth Wan 2.2 experts tuned (boundary {boundary}): high-noise expert "
                       f"{len(high['losses'])} steps, then low-noise expert")
        if stopped:
            log.warning("VMC Temporal LoRA: %s", stopped)
            report += f"\nSTOPPED: {stopped}"
        tuned_high = high["model"] if high is not None else tuned
        return io.NodeOutput(tuned, motion_lora, loss_curve_image(losses, note=stopped), report, tuned_high)


class EncodeKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_EncodeKeyframes",
            display_name="Encode Keyframes",
            category=CATEGORY,
            description="VAE Encode of the keyframes for VMC Temporal LoRA, after checking that their number fits "
                        "the VAE: a video VAE such as Wan's packs 4 frames into one latent frame and takes 4k+1 "
                        "frames (core VAE Encode silently drops the frames that do not fit).",
            inputs=[io.Image.Input("keyframes", tooltip="The Keyframe Extractor's keyframes"),
                    io.Vae.Input("vae", tooltip="The VAE of the model that is tuned")],
            outputs=[io.Latent.Output("LATENT", display_name="LATENT")],
        )

    @classmethod
    def execute(cls, keyframes, vae) -> io.NodeOutput:
        from .comfy_internals.motion_lora import encode_keyframes

        return io.NodeOutput({"samples": encode_keyframes(vae, keyframes)})


NAME_MAX = 255                     # bytes in one file or folder name (Linux, macOS, Windows)
SAVED_SUFFIX = "_00000_.safetensors"


def loras_root() -> str:
    return folder_paths.get_folder_paths("loras")[0]


class SaveMotionLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_SaveMotionLoRA",
            display_name="Save Motion LoRA",
            category=CATEGORY,
            description="Writes a MOTION_LORA as safetensors into models/loras/ (atomically) with its metadata "
                        "(base model and fingerprint, prompt, steps, rank, loss). The keys are ComfyUI's native "
                        "LoRA form, so core Load LoRA (model only) reads it on the same model. A Wan 2.2 A14B pair "
                        "is written as two files, <prefix>_high_noise_* and <prefix>_low_noise_*.",
            inputs=[
                MotionLoraType.Input("motion_lora"),
                io.String.Input("filename_prefix", default="motion_lora/vmc",
                                tooltip="Path under models/loras/; a counter is appended"),
            ],
            outputs=[io.String.Output("lora_name", display_name="lora_name",
                                      tooltip="The saved file's name under models/loras/ (Wan 2.2 A14B: the "
                                              "low-noise expert's)"),
                     io.String.Output("lora_name_high_noise", display_name="lora_name_high_noise",
                                      tooltip="Wan 2.2 A14B: the high-noise expert's file (empty otherwise)")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, motion_lora, filename_prefix="motion_lora/vmc") -> io.NodeOutput:
        root = loras_root()
        prefix = (filename_prefix or "").strip() or "motion_lora/vmc"
        if "\x00" in prefix:
            raise SearchPriorsError("filename_prefix contains a NUL character (\\x00), which no file name can hold: "
                                    "retype it, e.g. motion_lora/vmc.")
        if ".." in prefix.replace("\\", "/").split("/") or os.path.isabs(prefix):
            raise SearchPriorsError(f"filename_prefix '{prefix}' must be a relative path inside models/loras/ "
                                    f"(no '..', not absolute).")
        high = motion_lora.get("high_noise") if isinstance(motion_lora, dict) else None
        suffix = ("_high_noise" if high is not None else "") + SAVED_SUFFIX
        longest = max(prefix.replace("\\", "/").split("/"), key=lambda part: len(part.encode("utf-8")))
        if len(longest.encode("utf-8")) + len(suffix) > NAME_MAX:
            raise SearchPriorsError(f"filename_prefix has a name of {len(longest.encode('utf-8'))} bytes "
                                    f"('{longest[:40]}...'); with the counter and '.safetensors' a file or folder "
                                    f"name may have at most {NAME_MAX - len(suffix)}. Shorten it.")
        if high is None:
            lora_name = _save_one(motion_lora, prefix, root)
            return io.NodeOutput(lora_name, "", ui={"text": [lora_name]})
        # Wan 2.2 A14B: the pair, named as Wan 2.2 LoRAs are shared (..._high_noise / ..._low_noise)
        high_name = _save_one(high, f"{prefix}_high_noise", root)
        low_name = _save_one(motion_lora, f"{prefix}_low_noise", root)
        return io.NodeOutput(low_name, high_name, ui={"text": [low_name, high_name]})


def _save_one(motion_lora: dict, prefix: str, root: str) -> str:
    from .comfy_internals.motion_lora import save_motion_lora

    try:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, root)
    except Exception as exc:
        raise SearchPriorsError(f"filename_prefix '{prefix}' leaves models/loras/: {exc}") from exc
    path = os.path.join(folder, f"{name}_{counter:05}_.safetensors")
    try:
        save_motion_lora(motion_lora, path)
    except OSError as exc:
        raise SearchPriorsError(f"Could not write the motion LoRA to {path}: {exc.strerror or exc}. Check that "
                                f"models/loras/ is writable and has space, or change filename_prefix.") from exc
    return os.path.relpath(path, root).replace(os.sep, "/")


class LoadMotionLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = folder_paths.get_filename_list("loras")
        return io.Schema(
            node_id="SearchPriors_LoadMotionLoRA",
            display_name="Load Motion LoRA",
            category=CATEGORY,
            description="Applies a motion LoRA saved by Save Motion LoRA to a MODEL, after checking that the MODEL "
                        "is the base model it was trained on (core Load LoRA cannot check this).",
            inputs=[
                io.Model.Input("model"),
                io.Combo.Input("lora_name", options=names, default=names[0] if names else None,
                               tooltip="A file in models/loras/ written by Save Motion LoRA"),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01),
            ],
            outputs=[io.Model.Output("MODEL", display_name="MODEL")],
        )

    @classmethod
    def validate_inputs(cls, lora_name=None):
        # lora_name only (not **kwargs: ComfyUI would skip strength's range check): a file this machine lacks
        # is reported by execute, on the node, with the fix
        return True

    @classmethod
    def execute(cls, model, lora_name, strength=1.0) -> io.NodeOutput:
        from .comfy_internals.motion_lora import check_base_model, patched_clone, read_motion_lora

        path = folder_paths.get_full_path("loras", lora_name or "")
        if not path:
            raise SearchPriorsError(f"No LoRA '{lora_name}' in models/loras/: save one with Save Motion LoRA and "
                                    f"refresh the page.")
        state_dict, metadata = read_motion_lora(path)
        check_base_model(model, state_dict, metadata, lora_name)
        return io.NodeOutput(patched_clone(model, state_dict, float(strength)))
