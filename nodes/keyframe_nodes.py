"""Keyframe Extractor node (Search-T2V Sec. 4.3): keyframes around the objects that move in a retrieved video.

The retrieved entry's units are matched to the prompt's (``retrieval.unit_matching``), their nouns are
detected with GroundingDINO on the entry's frames (``distill.grounding``), and the critical segment and key
region give the cropped keyframes (``distill.keyframes``). This module only adapts: it finds the detector
under ``models/grounding-dino/``, loads it once and hands it to ComfyUI's memory manager, and converts types.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import torch

import comfy.model_management
import folder_paths
from comfy_api.v0_0_2 import io

from ..distill.grounding import (DEFAULT_BOX_THRESHOLD, DEFAULT_TEXT_THRESHOLD, EXPECTED, FOLDER_NAME, DetectorError,
                                 OriginalGroundingDino, TransformersGroundingDino, find_source, list_detectors,
                                 load_original_detector, load_transformers_detector, run_detection)
from ..distill.keyframes import (DEFAULT_FULL_FRAME_ABOVE, colour_name, crop_keyframes, crop_one, draw_preview,
                                 plan_clip_keyframes, plan_keyframes, scale_region)
from ..distill.memory_budget import check_allocation
from ..distill.video_frames import SCAN_MAX_FRAMES, read_frames_at, scan_clip
from ..retrieval.errors import SearchPriorsError
from ..retrieval.unit_matching import detection_captions
from .comfy_internals import glue
from .comfy_internals.modelscope_model import FullLoadModelPatcher
from .sockets import AtomizedPrompt, RetrievalType

CATEGORY = "SearchPriors/search_t2v"
MAX_SIDE = 4096
DETECTOR_DTYPE = torch.float32   # GroundingDINO's deformable attention is run in float32 by its authors too
_DEFAULTS = {"keyframe_count": 8, "width": 256, "height": 256, "box_threshold": DEFAULT_BOX_THRESHOLD,
             "text_threshold": DEFAULT_TEXT_THRESHOLD, "keep_together": True,
             "full_frame_above": DEFAULT_FULL_FRAME_ABOVE}
NO_DETECTOR = (f"No GroundingDINO detector found: put a GroundingDINO folder in models/{FOLDER_NAME}/ (for "
               f"example the published grounding-dino-tiny folder, with config.json, model.safetensors, "
               f"preprocessor_config.json and tokenizer.json) and refresh. {EXPECTED}")

log = logging.getLogger(__name__)
# one loaded detector at a time: (path, dtype, file stamp) -> (patcher, processor or None, kind)
_LOADED: dict[tuple, tuple] = {}


def detector_roots() -> list[str]:
    if FOLDER_NAME not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(FOLDER_NAME, os.path.join(folder_paths.models_dir, FOLDER_NAME),
                                           is_default=True)
    return list(folder_paths.get_folder_paths(FOLDER_NAME))


def detector_choices() -> list[str]:
    return list_detectors(detector_roots())


def detector_path(name: Optional[str]) -> str:
    """The folder or checkpoint called ``name`` in a models/grounding-dino root (a plain name only)."""
    name = (name or "").strip()
    if not name:
        raise DetectorError(NO_DETECTOR)
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise DetectorError(f"Detector '{name}' is not a name in models/{FOLDER_NAME}/: pick one from the list.")
    for root in detector_roots():
        candidate = os.path.join(root, name)
        if os.path.exists(candidate):
            return candidate
    known = ", ".join(detector_choices()) or "none"
    raise DetectorError(f"No detector '{name}' in models/{FOLDER_NAME}/ (found: {known}). {EXPECTED}")


def _stamp(path: str) -> str:
    if os.path.isfile(path):
        return glue.file_stamp(path)
    return "|".join(f"{n}:{glue.file_stamp(os.path.join(path, n))}" for n in sorted(os.listdir(path)))


class DetectorHolder(torch.nn.Module):
    """The detector as a plain module for ModelPatcher, which sets attributes (``device``) that a transformers
    model refuses."""

    def __init__(self, detector: torch.nn.Module):
        super().__init__()
        self.detector = detector


def load_detector(path: str):
    """A detector object with ``detect`` on the device ComfyUI's memory manager gives it; loaded once."""
    source = find_source(path)
    key = (os.path.abspath(source.path), str(DETECTOR_DTYPE), _stamp(path))
    if key not in _LOADED:
        _LOADED.clear()   # one detector at a time: a new choice frees the old one
        if source.kind == "transformers":
            model, processor = load_transformers_detector(source.path, DETECTOR_DTYPE)
        else:
            model, processor = load_original_detector(source), None
        patcher = FullLoadModelPatcher(DetectorHolder(model), load_device=comfy.model_management.get_torch_device(),
                                       offload_device=comfy.model_management.unet_offload_device())
        _LOADED[key] = (patcher, processor, source.kind)
    patcher, processor, kind = _LOADED[key]
    comfy.model_management.load_models_gpu([patcher])
    if kind == "transformers":
        return TransformersGroundingDino(patcher.model.detector, processor, patcher.load_device)
    return OriginalGroundingDino(patcher.model.detector, patcher.load_device)


def _check_widgets(keyframe_count, width, height, box_threshold, text_threshold, full_frame_above) -> None:
    if not 1 <= int(keyframe_count) <= 1024:
        raise SearchPriorsError(f"keyframe_count must be between 1 and 1024, got {keyframe_count}.")
    for name, value in (("width", width), ("height", height)):
        if not 8 <= int(value) <= MAX_SIDE:
            raise SearchPriorsError(f"{name} must be between 8 and {MAX_SIDE} pixels, got {value}.")
    for name, value in (("box_threshold", box_threshold), ("text_threshold", text_threshold),
                        ("full_frame_above", full_frame_above)):
        if not 0.0 <= float(value) <= 1.0:
            raise SearchPriorsError(f"{name} must lie in [0, 1], got {value}.")
    count, w, h = int(keyframe_count), int(width), int(height)
    # the keyframes IMAGE (float32) and the resize's intermediate copy of it
    check_allocation(f"{count} keyframes at {w}x{h}", count * w * h * 3 * 4 * 2,
                     "Lower keyframe_count, width or height")


def _hit(retrieval, rank):
    return glue.retrieval_hit(retrieval, rank)


def _check_frames(frames) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise SearchPriorsError(f"frames must be an IMAGE batch [frames, height, width, 3] (from Reference Video "
                                f"Frames), got {shape}.")


class KeyframeExtractor(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_KeyframeExtractor",
            display_name="Keyframe Extractor (Search-T2V)",
            category=CATEGORY,
            description="Matches the retrieved entry's units to the prompt's, detects their nouns with "
                        "GroundingDINO on the entry's whole video (scanned at a low rate), finds the critical "
                        "segment (the contiguous run with the highest total confidence) and the key region (the targets' union with a "
                        "margin, at the output aspect ratio), and cuts n keyframes (Search-T2V Sec. 4.3).",
            inputs=[
                AtomizedPrompt.Input("atomized", tooltip="The prompt's Prompt Atomizer output"),
                RetrievalType.Input("retrieval", tooltip="A Motion Retriever's output; the entry at rank is used"),
                io.Image.Input("frames", tooltip="The entry's frames (Reference Video Frames with the same "
                                                 "retrieval and rank)"),
                io.Combo.Input("detector", options=detector_choices(),
                               tooltip=f"GroundingDINO under models/{FOLDER_NAME}/: a transformers folder "
                                       f"(grounding-dino-tiny / -base) or an original .pth with its config"),
                io.Int.Input("keyframe_count", default=_DEFAULTS["keyframe_count"], min=1, max=1024,
                             tooltip="How many keyframes (VMC tunes on 8 by default)"),
                io.Int.Input("width", default=_DEFAULTS["width"], min=8, max=MAX_SIDE, step=8,
                             tooltip="Keyframe width (the generation width; sets the region's aspect ratio)"),
                io.Int.Input("height", default=_DEFAULTS["height"], min=8, max=MAX_SIDE, step=8,
                             tooltip="Keyframe height (the generation height)"),
                io.Float.Input("box_threshold", default=_DEFAULTS["box_threshold"], min=0.0, max=1.0, step=0.01,
                               tooltip="Keep a box when its caption score exceeds this (GroundingDINO demo: 0.35)"),
                io.Float.Input("text_threshold", default=_DEFAULTS["text_threshold"], min=0.0, max=1.0,
                               step=0.01, tooltip="A box's caption must score at least this (demo: 0.25)"),
                io.Boolean.Input("keep_together", default=_DEFAULTS["keep_together"],
                                 tooltip="On: every caption (actor and recipient) shapes segment and region, so "
                                         "a ball stays with the hand that throws it. Off: only the caption "
                                         "detected with the highest total confidence"),
                io.Float.Input("full_frame_above", default=_DEFAULTS["full_frame_above"], min=0.0, max=1.0,
                               step=0.01, tooltip="Take the full frame when the region would cover more than "
                                                  "this fraction of it (whole-frame dynamics: sunsets, lights); "
                                                  "1 = never"),
                io.Int.Input("rank", default=1, min=1, max=1000, optional=True,
                             tooltip="Which retrieved entry (1 = best); the same as the frames' rank"),
                io.Boolean.Input("search_whole_clip", default=True, optional=True,
                                 tooltip="On: the critical segment is searched over the entry's whole video "
                                         "file (scanned at scan_fps), and the keyframes are cut from that "
                                         "segment of the file; 'frames' is used only when the entry has no "
                                         "local video. Off: the segment is searched inside 'frames' only"),
                io.Float.Input("scan_fps", default=2.0, min=0.05, max=30.0, step=0.05, optional=True,
                               tooltip=f"Frames per second of the whole-clip scan; a clip longer than "
                                       f"{SCAN_MAX_FRAMES} scanned frames is scanned at a lower rate (memory "
                                       f"and detector time stay bounded)"),
            ],
            outputs=[
                io.Image.Output("keyframes", display_name="keyframes",
                                tooltip="[keyframes, height, width, 3], for VAE Encode and VMC tuning"),
                io.Image.Output("preview", display_name="preview",
                                tooltip="Sampled frames with boxes (caption colours) and the region (white); "
                                        "green frames lie in the segment; a timeline of frame scores below"),
                io.String.Output("segment", display_name="segment",
                                 tooltip="Frames, region, captions used and warnings"),
            ],
        )

    @classmethod
    def validate_inputs(cls, detector=None):
        # Only the detector dropdown is named: ComfyUI files a returned message once for each input named here,
        # and checks every number widget's range itself; execute checks the widgets again (and NaN) on the node.
        choices = detector_choices()
        if detector is None:
            return glue.check_dropdowns(glue.Dropdown("detector", None, choices, NO_DETECTOR))
        if not str(detector).strip():
            return NO_DETECTOR
        try:
            detector_path(detector)
        except SearchPriorsError as exc:
            return str(exc)
        return True

    @classmethod
    def fingerprint_inputs(cls, atomized=None, retrieval=None, frames=None, detector=None, **_ignored):
        # the detector's files can change under the same name; everything else is a plain input
        try:
            path = detector_path(detector)
            return (path, _stamp(path))
        except Exception:
            return float("nan")   # re-run, so that the error shows on the node

    @classmethod
    def execute(cls, atomized, retrieval, frames, detector: str, keyframe_count: int = 8, width: int = 256,
                height: int = 256, box_threshold: float = DEFAULT_BOX_THRESHOLD,
                text_threshold: float = DEFAULT_TEXT_THRESHOLD, keep_together: bool = True,
                full_frame_above: float = DEFAULT_FULL_FRAME_ABOVE, rank: int = 1, search_whole_clip: bool = True,
                scan_fps: float = 2.0) -> io.NodeOutput:
        _check_widgets(keyframe_count, width, height, box_threshold, text_threshold, full_frame_above)
        if not 0.05 <= float(scan_fps) <= 30.0:
            raise SearchPriorsError(f"scan_fps must be between 0.05 and 30, got {scan_fps}.")
        _check_frames(frames)
        hit = _hit(retrieval, rank)
        if atomized is None or not hasattr(atomized, "unit_vectors"):
            raise SearchPriorsError("atomized must be a Prompt Atomizer output.")
        video = hit.video_path if search_whole_clip and hit.video_path and os.path.isfile(hit.video_path) else None
        if video is None:
            num_frames = int(frames.shape[0])
            if num_frames < keyframe_count:
                raise SearchPriorsError(f"The reference video gives {num_frames} frames but {keyframe_count} keyframes "
                                        f"are asked: lower keyframe_count to at most {num_frames}, or raise Reference "
                                        f"Video Frames' frame_count.")
        matched = detection_captions(atomized.units, atomized.unit_vectors, atomized.core_index, hit.units,
                                     hit.unit_vectors)
        model = load_detector(detector_path(detector))
        if video is not None:
            images, preview, plan_text, plan_warnings = cls._from_whole_clip(
                video, model, matched.captions, keyframe_count, width, height, box_threshold, text_threshold,
                keep_together, full_frame_above, scan_fps,
                shot=(getattr(hit, "start_s", None), getattr(hit, "end_s", None)))
        else:
            images, preview, plan_text, plan_warnings = cls._from_frames(
                frames, model, matched.captions, keyframe_count, width, height, box_threshold, text_threshold,
                keep_together, full_frame_above)
            if search_whole_clip:
                why = ("the library names no video file for it" if not hit.video_path
                       else f"its video file {hit.video_path} is gone")
                plan_warnings = [f"the segment was searched inside the 'frames' input only: {why}"] + plan_warnings
                plan_text += f"\nwarning: {plan_warnings[0]}"
        legend = ", ".join(f"{c} = {colour_name(i)}" for i, c in enumerate(matched.captions))
        source = ("matched units of the entry" if matched.source == "entry" else "the prompt's own nouns (fallback)")
        lines = [f"entry: rank {int(rank or 1)}, {hit.video_id} \"{hit.caption}\"",
                 f"captions from {source}: {matched.text()}"]
        lines += [line for line in matched.describe(hit.units, atomized.units).splitlines() if line]
        lines.append(plan_text)
        lines.append(f"preview colours: {legend}; key region = white")
        lines += [f"warning: {w}" for w in matched.warnings]
        text = "\n".join(lines)
        for w in matched.warnings + plan_warnings:
            log.warning("Keyframe Extractor: %s", w)
        return io.NodeOutput(images, preview, text)

    @staticmethod
    def _from_frames(frames, model, captions, keyframe_count, width, height, box_threshold, text_threshold,
                     keep_together, full_frame_above):
        """The segment inside the given frames, keyframes cut from them."""
        num_frames, frame_h, frame_w = int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2])
        detections = run_detection(model, frames, captions, box_threshold, text_threshold,
                                   progress=glue.progress_callback())
        plan = plan_keyframes(detections, num_frames, (frame_h, frame_w), keyframe_count, (width, height),
                              captions, keep_together=keep_together, full_frame_above=full_frame_above)
        return (crop_keyframes(frames, plan, width, height), draw_preview(frames, detections, plan), plan.describe(),
                list(plan.warnings))

    @staticmethod
    def _from_whole_clip(video, model, captions, keyframe_count, width, height, box_threshold, text_threshold,
                         keep_together, full_frame_above, scan_fps, shot=(None, None)):
        """The whole file (or the retrieved shot inside it: ``shot`` = start, end seconds) scanned at a low
        rate, the segment found over it, keyframes decoded from the segment (never outside the shot)."""
        scan = scan_clip(video, fps=float(scan_fps), progress=glue.progress_callback(), shot_start=shot[0],
                         shot_end=shot[1])
        scan_h, scan_w = int(scan.frames.shape[1]), int(scan.frames.shape[2])
        detections = run_detection(model, scan.frames, captions, box_threshold, text_threshold,
                                   max_frames=len(scan.times), progress=glue.progress_callback())
        frame_duration = 1.0 / scan.info.fps if scan.info.fps else 0.04
        clip = plan_clip_keyframes(detections, scan.times, (scan_h, scan_w), keyframe_count, (width, height),
                                   captions, scan.duration, frame_duration, keep_together=keep_together,
                                   full_frame_above=full_frame_above)

        def cut(rgb):
            region = scale_region(clip.plan.region, (scan_w, scan_h), (rgb.shape[1], rgb.shape[0]))
            return crop_one(torch.from_numpy(rgb).float().div_(255.0), region, width, height)

        images = torch.stack(read_frames_at(video, clip.times, convert=cut, shot_start=shot[0], shot_end=shot[1]))
        text = f"{scan.summary()}\n{clip.describe()}"
        return images, draw_preview(scan.frames, detections, clip.plan), text, list(clip.plan.warnings)
