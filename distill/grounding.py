"""Open-set detection for the KeyframeExtractor (Search-T2V Sec. 4.3 uses GroundingDINO [27]).

Two layouts of a detector under ComfyUI's ``models/grounding-dino/``:

- **transformers** (default): a folder as published for ``IDEA-Research/grounding-dino-tiny`` / ``-base``:
  ``config.json`` (model_type ``grounding-dino``), ``model.safetensors`` (or ``pytorch_model.bin``, or a
  sharded index), the processor's ``preprocessor_config.json`` / ``processor_config.json`` and the
  tokenizer (``tokenizer.json`` or ``vocab.txt``). Loaded with ``GroundingDinoForObjectDetection`` and
  ``AutoProcessor``, offline (``local_files_only``): pure PyTorch, no compiled extension.
- **original**: a ``.pth`` checkpoint with its Python config (``GroundingDINO_SwinT_OGC.py`` /
  ``GroundingDINO_SwinB_cfg.py``, the names other packs use), in a sub-folder or directly in
  ``models/grounding-dino/``; needs the optional extra (``pip install comfyui-searchpriors[groundingdino]``).
  Its text encoder is BERT: a ``bert-base-uncased`` folder next to the checkpoint keeps it offline.

Captions are lower-case phrases, each ended by `` .`` (``"man . bike ."``). A box belongs to the caption
whose tokens it scores highest (the max over that caption's tokens); it is kept when that score exceeds
``box_threshold`` and is at least ``text_threshold``. Scores and boxes come from the same sigmoid logits and
``pred_boxes`` as the processor's ``post_process_grounded_object_detection``, whose label strings cannot be
mapped back to captions reliably (it joins every token above the threshold), hence the spans here.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..errors import SearchPriorsError
from .keyframes import FrameDetections

FOLDER_NAME = "grounding-dino"
EXTRA_HINT = "pip install comfyui-searchpriors[groundingdino]"
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
DEFAULT_BOX_THRESHOLD = 0.35    # the GroundingDINO authors' demo values
DEFAULT_TEXT_THRESHOLD = 0.25
MAX_DETECT_FRAMES = 64
EXPECTED = (f"Expected under models/{FOLDER_NAME}/: a folder in the transformers layout (config.json with "
            f"model_type 'grounding-dino', model.safetensors, preprocessor_config.json and tokenizer.json, as "
            f"published for IDEA-Research/grounding-dino-tiny or -base), or an original .pth checkpoint with its "
            f".py config (e.g. groundingdino_swint_ogc.pth + GroundingDINO_SwinT_OGC.py).")


class DetectorError(SearchPriorsError):
    """Detector weights missing, of an unknown layout, or an optional package absent."""


@dataclass(frozen=True)
class DetectorSource:
    kind: str                        # "transformers" or "original"
    path: str                        # the folder (transformers) or the checkpoint (original)
    config: Optional[str] = None     # the original layout's .py config


# --------------------------------------------------------------------------------------------- layouts

def _config_for_checkpoint(checkpoint: str) -> Optional[str]:
    """The .py config next to an original checkpoint: the only one there, else the one of the same Swin
    size (swint / swinb in both names)."""
    folder = os.path.dirname(checkpoint)
    configs = sorted(p for p in glob.glob(os.path.join(folder, "*.py")) if not p.endswith("__init__.py"))
    if len(configs) == 1:
        return configs[0]
    name = os.path.basename(checkpoint).lower()
    for size in ("swint", "swinb", "swin_t", "swin_b"):
        if size in name:
            same = [c for c in configs if size.replace("_", "") in os.path.basename(c).lower().replace("_", "")]
            if len(same) == 1:
                return same[0]
    return None


def list_detectors(roots: Sequence[str]) -> list[str]:
    """Names for the detector dropdown: sub-folders of each root and original checkpoints lying directly
    in a root (the layout other GroundingDINO packs use)."""
    names = set()
    for root in roots:
        if not os.path.isdir(root):
            continue
        for entry in os.scandir(root):
            if entry.is_dir() and not entry.name.startswith("."):
                names.add(entry.name)
            elif entry.is_file() and entry.name.lower().endswith(".pth"):
                names.add(entry.name)
    return sorted(names)


def find_source(path: str) -> DetectorSource:
    """What ``path`` (a folder or a .pth file) holds; a ``DetectorError`` saying what is missing."""
    if os.path.isfile(path):
        if not path.lower().endswith(".pth"):
            raise DetectorError(f"'{os.path.basename(path)}' is not a detector. {EXPECTED}")
        config = _config_for_checkpoint(path)
        if config is None:
            raise DetectorError(f"The checkpoint '{os.path.basename(path)}' has no config next to it: put its .py "
                                f"config (e.g. GroundingDINO_SwinT_OGC.py) in the same folder.")
        return DetectorSource("original", path, config)
    if not os.path.isdir(path):
        raise DetectorError(f"No detector at '{path}'. {EXPECTED}")
    files = set(os.listdir(path))
    if "config.json" in files:
        try:
            with open(os.path.join(path, "config.json"), encoding="utf-8") as fh:
                model_type = json.load(fh).get("model_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise DetectorError(f"The detector's config.json in '{path}' cannot be read ({exc}).") from exc
        if model_type != "grounding-dino":
            raise DetectorError(f"'{os.path.basename(path)}' holds a '{model_type}' model, not GroundingDINO "
                                f"(config.json model_type 'grounding-dino'). {EXPECTED}")
        missing = []
        if not files.intersection(TRANSFORMERS_WEIGHTS):
            missing.append("the weights (model.safetensors)")
        if not files.intersection(PROCESSOR_FILES):
            missing.append("the processor (preprocessor_config.json)")
        if not files.intersection(TOKENIZER_FILES):
            missing.append("the tokenizer (tokenizer.json or vocab.txt)")
        if missing:
            raise DetectorError(f"The GroundingDINO folder '{os.path.basename(path)}' lacks {', '.join(missing)}: "
                                f"copy every file of the published grounding-dino-tiny / -base folder into it.")
        return DetectorSource("transformers", path)
    checkpoints = sorted(f for f in files if f.lower().endswith(".pth"))
    if len(checkpoints) == 1:
        return find_source(os.path.join(path, checkpoints[0]))
    if len(checkpoints) > 1:
        raise DetectorError(f"'{os.path.basename(path)}' holds several checkpoints ({', '.join(checkpoints)}): "
                            f"keep one per folder.")
    raise DetectorError(f"'{os.path.basename(path)}' is not a GroundingDINO folder of a known layout (found: "
                        f"{', '.join(sorted(files)[:8]) or 'nothing'}). {EXPECTED}")


# ---------------------------------------------------------------------------------------- transformers

def load_transformers_detector(folder: str, dtype: torch.dtype = torch.float32):
    """(model, processor) from a transformers-layout folder, offline; model in eval mode on the CPU."""
    try:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection
    except ImportError as exc:   # pragma: no cover - transformers is a ComfyUI requirement
        raise DetectorError("The GroundingDINO detector needs the Python package 'transformers' (>= 4.40).") from exc
    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        model = GroundingDinoForObjectDetection.from_pretrained(folder, local_files_only=True).to(dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise DetectorError(f"The GroundingDINO folder '{os.path.basename(folder)}' could not be loaded ({exc}). "
                            f"{EXPECTED}") from exc
    return model.eval().requires_grad_(False), processor


def caption_spans(input_ids: Sequence[int], tokenizer, captions: Sequence[str]) -> list[tuple[int, int]]:
    """[start, end) token positions of each caption inside ``input_ids`` of "c1 . c2 . ... ." (after [CLS])."""
    ids = [int(i) for i in input_ids]
    dot = tokenizer.convert_tokens_to_ids(".")
    spans, pos = [], 1
    for caption in captions:
        piece = tokenizer(caption, add_special_tokens=False)["input_ids"]
        end = pos + len(piece)
        if ids[pos:end] != list(piece) or end >= len(ids) or ids[end] != dot:
            raise DetectorError(f"The detector's tokenizer split the captions unexpectedly near '{caption}' "
                                f"(or they exceed its text length): use fewer or shorter captions.")
        spans.append((pos, end))
        pos = end + 1
    return spans


def grounded_detections(logits: torch.Tensor, pred_boxes: torch.Tensor, spans: Sequence[tuple[int, int]],
                        sizes: Sequence[tuple[int, int]], box_threshold: float,
                        text_threshold: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(boxes x0,y0,x1,y1 pixels, scores, caption labels) per image from GroundingDINO's raw outputs:
    logits (B, Q, T), pred_boxes (B, Q, 4) as normalised cx, cy, w, h; sizes (height, width) per image."""
    probs = torch.sigmoid(logits.float())
    per_caption = torch.stack([probs[:, :, a:b].max(dim=-1).values for a, b in spans], dim=-1)   # (B, Q, C)
    scores, labels = per_caption.max(dim=-1)
    cx, cy, w, h = pred_boxes.float().unbind(-1)
    corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    out = []
    for i, (height, width) in enumerate(sizes):
        keep = (scores[i] > box_threshold) & (scores[i] >= text_threshold)
        scale = torch.tensor([width, height, width, height], dtype=corners.dtype, device=corners.device)
        out.append(((corners[i][keep] * scale).cpu().double().numpy(), scores[i][keep].cpu().double().numpy(),
                    labels[i][keep].cpu().numpy().astype(np.int64)))
    return out


class TransformersGroundingDino:
    """``detect(images, captions, box_threshold, text_threshold)`` with transformers' GroundingDINO."""

    def __init__(self, model, processor, device: Optional[torch.device] = None):
        self.model, self.processor = model, processor
        self.device = device or next(model.parameters()).device

    @torch.no_grad()
    def detect(self, images: torch.Tensor, captions: Sequence[str], box_threshold: float,
               text_threshold: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        text = " . ".join(captions) + " ."
        pixels = [(img[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy() for img in images]
        inputs = self.processor(images=pixels, text=[text] * len(pixels), return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        outputs = self.model(**inputs)
        spans = caption_spans(inputs["input_ids"][0].tolist(), self.processor.tokenizer, captions)
        sizes = [(int(img.shape[0]), int(img.shape[1])) for img in images]
        return grounded_detections(outputs.logits, outputs.pred_boxes, spans, sizes, box_threshold,
                                   text_threshold)


# -------------------------------------------------------------------------------------------- original

def load_original_detector(source: DetectorSource, device: str = "cpu"):
    """An original checkpoint through ``groundingdino-py`` (optional extra)."""
    try:
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig
        from groundingdino.util.utils import clean_state_dict
    except ImportError as exc:
        raise DetectorError(f"'{os.path.basename(source.path)}' is an original GroundingDINO checkpoint, which needs "
                            f"the optional package groundingdino-py: {EXTRA_HINT} (or use a transformers-layout "
                            f"folder such as grounding-dino-tiny, which needs nothing extra).") from exc
    args = SLConfig.fromfile(source.config)
    local_bert = os.path.join(os.path.dirname(source.path), "bert-base-uncased")
    if os.path.isdir(local_bert):
        args.text_encoder_type = local_bert   # offline: no hub look-up for the text encoder
    args.device = device
    model = build_model(args)
    state = torch.load(source.path, map_location="cpu", weights_only=True)
    model.load_state_dict(clean_state_dict(state.get("model", state)), strict=False)
    return model.eval().requires_grad_(False)


class OriginalGroundingDino:
    """``detect`` with an original GroundingDINO model (groundingdino-py); phrases map to captions by text."""

    MEAN = torch.tensor([0.485, 0.456, 0.406])
    STD = torch.tensor([0.229, 0.224, 0.225])

    def __init__(self, model, device: Optional[torch.device] = None, short_side: int = 800):
        self.model, self.short_side = model, short_side
        self.device = device or next(model.parameters()).device

    @torch.no_grad()
    def detect(self, images: torch.Tensor, captions: Sequence[str], box_threshold: float,
               text_threshold: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        text = " . ".join(captions) + " ."
        out = []
        for img in images:
            height, width = int(img.shape[0]), int(img.shape[1])
            scale = self.short_side / min(height, width)
            chw = img[..., :3].movedim(-1, 0)[None].float()
            chw = torch.nn.functional.interpolate(chw, size=(round(height * scale), round(width * scale)),
                                                  mode="bilinear", align_corners=False, antialias=True)[0]
            chw = ((chw - self.MEAN[:, None, None]) / self.STD[:, None, None]).to(self.device)
            result = self.model(chw[None], captions=[text])
            spans = caption_spans(self.model.tokenizer(text)["input_ids"], self.model.tokenizer, captions)
            dets = grounded_detections(result["pred_logits"][:1], result["pred_boxes"][:1], spans,
                                       [(height, width)], box_threshold, text_threshold)
            out.append(dets[0])
        return out


# ------------------------------------------------------------------------------------------- detection

def sample_frames(num_frames: int, max_frames: int = MAX_DETECT_FRAMES) -> list[int]:
    """Every frame up to ``max_frames``; beyond that, ``max_frames`` evenly spaced ones (first and last kept)."""
    if num_frames <= max_frames:
        return list(range(num_frames))
    step = (num_frames - 1) / (max_frames - 1)
    return sorted({int(np.floor(k * step + 0.5)) for k in range(max_frames)})


def run_detection(detector, frames: torch.Tensor, captions: Sequence[str], box_threshold: float,
                  text_threshold: float, max_frames: int = MAX_DETECT_FRAMES, batch_size: int = 4,
                  progress: Optional[Callable[[int, int], None]] = None) -> list[FrameDetections]:
    """Detections of ``captions`` on sampled ``frames`` (IMAGE [F, H, W, 3]); ``progress(done, total)`` is
    called before and after every batch (it may raise to cancel)."""
    if not captions:
        raise SearchPriorsError("No detection captions were given.")
    chosen = sample_frames(int(frames.shape[0]), max_frames)
    out: list[FrameDetections] = []
    total = len(chosen)
    if progress:
        progress(0, total)
    for start in range(0, total, batch_size):
        batch = chosen[start:start + batch_size]
        results = detector.detect(frames[batch], captions, box_threshold, text_threshold)
        for f, (boxes, scores, labels) in zip(batch, results):
            out.append(FrameDetections.of(f, boxes, scores, labels))
        if progress:
            progress(min(start + batch_size, total), total)
    return out
