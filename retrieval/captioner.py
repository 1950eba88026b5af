"""Captions for shots: local vision-language models through transformers, and the toy world's probe.

``load_captioner(folder)`` reads the folder's ``config.json`` and returns a ``Captioner`` of its family:

- ``qwen2_5_vl`` (and ``qwen2_vl``): Qwen2.5-VL / Qwen2-VL, which read a shot as a *video* (its sampled
  frames, one temporal sequence);
- ``florence2``: Florence-2, which reads one *image*: the shot's middle frame. It follows task tokens
  (``<CAPTION>``, ``<DETAILED_CAPTION>``, ``<MORE_DETAILED_CAPTION>``), not free instructions: a prompt that is
  not one of its caption tasks is answered with ``<CAPTION>`` (short "a dog running on a beach" captions);
- ``toy``: a folder whose config.json is ``{"searchpriors_captioner": "toy"}``; it captions the toy world's
  clips with ``distill/toy_probe.py`` ("the red square drifts to the left"), so the demo gets real captions.

``Captioner.caption(shots, prompt, batch_size)`` takes shots as lists of HxWx3 uint8 RGB frames and returns
one caption or one exception per shot (a bad shot or a failed generation is that shot's error; the rest go
on). Memory is bounded whatever the input: at most ``max_frames`` frames of a shot are used (evenly spread),
each scaled down so its longer side is at most ``max_side`` pixels before the processor sees it, and the
processor's own pixel limits apply after that. Decoding is greedy, so a batch gives the captions that one
shot at a time gives. Models load only from local files (no download, no remote code).

Pure logic: no ComfyUI import (the node side puts the folder under ``models/vlm/``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ..errors import MissingDependencyError, SearchPriorsError

# Asks for the shape the atomizer reads best: one subject, its motion (with direction), its object or place.
DEFAULT_CAPTION_PROMPT = (
    "Describe the main action of this video in one short sentence: the main subject, how it moves, and what "
    "it moves on, toward or with. Example: 'a brown dog runs across a sandy beach'. Write only the sentence.")

FAMILIES = {
    "qwen2_5_vl": "Qwen2.5-VL (video)",
    "qwen2_vl": "Qwen2-VL (video)",
    "florence2": "Florence-2 (one frame)",
    "toy": "toy world probe",
}
TOY_CONFIG = {"searchpriors_captioner": "toy"}
FLORENCE_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
MAX_PROMPT_CHARS = 4000

# Lead-ins that VLMs put before the caption proper; the atomizer wants the subject first.
_LEAD_INS = re.compile(
    r"^(?:(?:in )?(?:this|the) (?:video|clip|image|footage|scene|shot)(?: (?:shows|depicts|features|captures))?"
    r"(?: that)?[,:]?\s+|(?:the )?(?:video|clip|image) (?:shows|depicts|features|captures)\s+)", re.IGNORECASE)

ShotResult = Union[str, Exception]


def family_of(folder: str) -> str:
    """The captioner family of a model folder, from its config.json; a clear error when it is not one."""
    supported = ", ".join(f"{k} ({v})" for k, v in FAMILIES.items())
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise SearchPriorsError(
            f"Captioner folder '{folder}' has no config.json: put a transformers vision-language model folder "
            f"(config.json, weights, processor and tokenizer files) under models/vlm/. Supported families: "
            f"{supported}.")
    try:
        with open(config_path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SearchPriorsError(f"Captioner folder '{folder}': config.json is not readable JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise SearchPriorsError(f"Captioner folder '{folder}': config.json is not a JSON object.")
    family = config.get("searchpriors_captioner") or config.get("model_type")
    if family not in FAMILIES:
        raise SearchPriorsError(
            f"Captioner folder '{folder}' holds a model of family '{family or 'unknown'}', which the clip "
            f"captioner does not support. Supported families: {supported}.")
    return family


# ------------------------------------------------------------------------------------------- frames
def check_shot(shot) -> list[np.ndarray]:
    """The shot's frames as a list of HxWx3 uint8 arrays, or a SearchPriorsError saying what is wrong."""
    if isinstance(shot, np.ndarray) and shot.ndim == 4:
        shot = list(shot)
    if not isinstance(shot, (list, tuple)) or not shot:
        raise SearchPriorsError("a shot must be a non-empty list of HxWx3 uint8 RGB frames; this one has no frames")
    frames = []
    for i, frame in enumerate(shot):
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            what = (f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray)
                    else type(frame).__name__)
            raise SearchPriorsError(f"frame {i} of the shot is a {what}; frames must be HxWx3 uint8 RGB arrays")
        if frame.shape[0] < 2 or frame.shape[1] < 2:
            raise SearchPriorsError(f"frame {i} of the shot is {frame.shape[0]}x{frame.shape[1]} pixels; too small")
        frames.append(frame)
    return frames


def sample_frames(frames: Sequence[np.ndarray], count: int) -> list[np.ndarray]:
    """At most ``count`` frames, evenly spread over the shot (first and last included)."""
    if len(frames) <= count:
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in idx]


def fit_frame(frame: np.ndarray, max_side: int) -> np.ndarray:
    """The frame scaled down (area averaging) so that its longer side is at most ``max_side``."""
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return np.ascontiguousarray(frame)
    from PIL import Image

    scale = max_side / max(h, w)
    size = (max(2, int(round(w * scale))), max(2, int(round(h * scale))))
    return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize(size, Image.BOX))


def clean_caption(text: str) -> str:
    """One line, no quotes, no "The video shows" lead-in, no trailing period."""
    text = " ".join(str(text).split())
    text = text.strip(" \"'`")
    text = _LEAD_INS.sub("", text, count=1)
    text = text.strip(" \"'`")
    if text.endswith(".") and text.count(".") == 1:
        text = text[:-1]
    return text


def _check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise SearchPriorsError("The caption prompt is empty: write what the captioner should describe "
                                "(the default asks for one subject, its motion and its object).")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise SearchPriorsError(f"The caption prompt has {len(prompt)} characters; keep it under "
                                f"{MAX_PROMPT_CHARS}.")
    return prompt.strip()


# --------------------------------------------------------------------------------------- captioners
class Captioner:
    """Captions shots; subclasses implement ``_caption_batch`` (a list of prepared shots -> texts)."""

    family = "base"

    def __init__(self, folder: str, max_frames: int = 8, max_side: int = 448, max_new_tokens: int = 48):
        for name, value, low in (("max_frames", max_frames, 1), ("max_side", max_side, 28),
                                 ("max_new_tokens", max_new_tokens, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SearchPriorsError(f"Captioner {name} must be a whole number >= {low}, got {value!r}.")
        self.folder = folder
        self.max_frames = max_frames
        self.max_side = max_side
        self.max_new_tokens = max_new_tokens

    def prepare(self, shot) -> list[np.ndarray]:
        """The frames the model will see: checked, sampled to ``max_frames`` and scaled to ``max_side``."""
        return [fit_frame(f, self.max_side) for f in sample_frames(check_shot(shot), self.max_frames)]

    def caption(self, shots: Sequence[Sequence[np.ndarray]], prompt: str = DEFAULT_CAPTION_PROMPT,
                batch_size: int = 4, on_progress: Optional[Callable[[int, int], None]] = None) -> list[ShotResult]:
        """One caption (str) or one exception per shot, in order. ``on_progress(done, total)`` runs after
        each batch (it may raise to cancel)."""
        prompt = _check_prompt(prompt)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise SearchPriorsError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        shots = list(shots)
        results: list[Optional[ShotResult]] = [None] * len(shots)
        for start in range(0, len(shots), batch_size):
            ready: list[tuple[int, list[np.ndarray]]] = []
            for i in range(start, min(start + batch_size, len(shots))):
                try:
                    ready.append((i, self.prepare(shots[i])))
                except Exception as exc:  # noqa: BLE001 - a bad shot is that shot's error
                    results[i] = exc
            if ready:
                self._run(ready, prompt, results)
            if on_progress is not None:
                on_progress(min(start + batch_size, len(shots)), len(shots))
        return results  # type: ignore[return-value]

    def _run(self, ready, prompt, results) -> None:
        try:
            texts = self._caption_batch([frames for _, frames in ready], prompt)
        except Exception as exc:  # noqa: BLE001 - retried one at a time so that each shot gets its own answer
            if len(ready) == 1:
                results[ready[0][0]] = exc
                return
            for item in ready:
                self._run([item], prompt, results)
            return
        for (i, _), text in zip(ready, texts):
            text = clean_caption(text)
            results[i] = text if text else SearchPriorsError("the captioner returned an empty caption")

    def _caption_batch(self, shots: list[list[np.ndarray]], prompt: str) -> list[str]:
        raise NotImplementedError


class ToyCaptioner(Captioner):
    """The toy world's probe as a captioner: colour, shape and motion read from the frames."""

    family = "toy"

    def __init__(self, folder: str, **kwargs):
        kwargs.setdefault("max_frames", 64)
        super().__init__(folder, **kwargs)
        self._probe = _load_distill("toy_probe")
        self._phrases = _load_distill("toy_world").MOTION_PHRASES

    def prepare(self, shot) -> list[np.ndarray]:
        # all frames up to max_frames (the probe reads motion from the whole track), at the world's size
        return [fit_frame(f, min(self.max_side, 128)) for f in sample_frames(check_shot(shot), self.max_frames)]

    def _caption_batch(self, shots, prompt):
        out = []
        for frames in shots:
            h, w = frames[0].shape[:2]
            frames = [f if f.shape[:2] == (h, w) else fit_frame(f, max(h, w)) for f in frames]
            r = self._probe.probe_batch(np.stack(frames)[None])[0]
            if r.motion == "none" or r.colour == "none":
                raise SearchPriorsError("the toy probe found no object in this shot")
            out.append(toy_caption(r.colour, r.shape, r.motion, self._phrases))
        return out


# The toy world's phrasing (toy_world.MOTION_PHRASES, by index) that the atomizer parses best with "the":
# 134 of the 144 colour x shape x motion captions give the shape as actor and a verb as motion, against 88 with
# "a ..." and each motion's first phrase (tests/unit/test_captioner.py measures it).
TOY_PHRASE = {"left": 1, "right": 3, "up": 1, "down": 1, "up_right": 1, "down_left": 1, "circling": 2, "growing": 0}


def toy_caption(colour: str, shape: str, motion: str, phrases: Optional[dict] = None) -> str:
    """"the red square drifts to the left": a toy-world caption in the phrasing the atomizer reads best."""
    if motion == "static":
        return f"the {colour} {shape} stays still"
    phrases = phrases or _load_distill("toy_world").MOTION_PHRASES
    return f"the {colour} {shape} {phrases[motion][TOY_PHRASE[motion]]}"


def _load_distill(name: str):
    """distill/<name>.py loaded by path (pure torch + numpy modules, no relative imports)."""
    try:
        from ..distill import toy_probe, toy_world  # noqa: F401  (inside the installed pack)
        return {"toy_probe": toy_probe, "toy_world": toy_world}[name]
    except ImportError:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "distill", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"searchpriors_captioner_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


class TransformersCaptioner(Captioner):
    """Shared loading and greedy generation for the transformers families."""

    model_class = ""

    def __init__(self, folder: str, device="cpu", dtype=None, **kwargs):
        super().__init__(folder, **kwargs)
        try:
            import torch
            import transformers
        except ImportError as exc:  # pragma: no cover - the pack's requirements have both
            raise MissingDependencyError("transformers", "The clip captioner") from exc
        cls = getattr(transformers, self.model_class, None)
        if cls is None:
            raise SearchPriorsError(
                f"This transformers ({transformers.__version__}) has no {self.model_class}, which the "
                f"{FAMILIES[self.family]} captioner needs: update transformers in ComfyUI's Python environment.")
        self.device = torch.device(device)
        if dtype is None:
            dtype = torch.float32
            if self.device.type == "cuda":
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.dtype = dtype
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()   # no "Loading weights" bar in ComfyUI's console per load
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
            self.model = cls.from_pretrained(folder, local_files_only=True, dtype=dtype)
        except Exception as exc:  # noqa: BLE001 - any loading failure is a folder the user must fix
            raise SearchPriorsError(
                f"Could not load the {FAMILIES[self.family]} captioner in '{folder}': {type(exc).__name__}: "
                f"{exc}. The folder must hold the model's config.json, weights and its processor and tokenizer "
                f"files, as published.") from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.model.to(self.device).eval()
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"   # batched decoder-only generation needs left padding

    def _generate(self, inputs) -> list[str]:
        import torch

        inputs = inputs.to(self.device)
        for key, value in list(inputs.items()):
            if torch.is_tensor(value) and value.is_floating_point():
                inputs[key] = value.to(self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        if not self.model.config.is_encoder_decoder:
            out = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(out, skip_special_tokens=True)


class QwenVLCaptioner(TransformersCaptioner):
    """Qwen2.5-VL / Qwen2-VL: the shot's frames as one video."""

    family = "qwen2_5_vl"
    model_class = "Qwen2_5_VLForConditionalGeneration"

    def prepare(self, shot) -> list[np.ndarray]:
        frames = super().prepare(shot)
        # frames are paired in time (temporal patch of 2): an odd count repeats its last frame, and all frames
        # of a shot share the first frame's size
        h, w = frames[0].shape[:2]
        frames = [f if f.shape[:2] == (h, w) else _resize_to(f, h, w) for f in frames]
        if len(frames) % 2:
            frames.append(frames[-1])
        return frames

    def _caption_batch(self, shots, prompt):
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text] * len(shots), videos=[np.stack(f) for f in shots], padding=True,
                                return_tensors="pt")
        return self._generate(inputs)


class Qwen2VLCaptioner(QwenVLCaptioner):
    family = "qwen2_vl"
    model_class = "Qwen2VLForConditionalGeneration"


class FlorenceCaptioner(TransformersCaptioner):
    """Florence-2: the shot's middle frame, with a caption task token."""

    family = "florence2"
    model_class = "Florence2ForConditionalGeneration"

    def prepare(self, shot) -> list[np.ndarray]:
        frames = check_shot(shot)
        return [fit_frame(frames[len(frames) // 2], self.max_side)]

    @staticmethod
    def task(prompt: str) -> str:
        return prompt if prompt in FLORENCE_TASKS else "<CAPTION>"

    def _caption_batch(self, shots, prompt):
        inputs = self.processor(text=[self.task(prompt)] * len(shots), images=[f[0] for f in shots], padding=True,
                                return_tensors="pt")
        return self._generate(inputs)


def _resize_to(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((w, h), Image.BILINEAR))


_CLASSES = {"qwen2_5_vl": QwenVLCaptioner, "qwen2_vl": Qwen2VLCaptioner, "florence2": FlorenceCaptioner,
            "toy": ToyCaptioner}


def load_captioner(folder: str, device="cpu", dtype=None, **kwargs) -> Captioner:
    """The captioner of a model folder (family from its config.json); ``kwargs``: max_frames, max_side,
    max_new_tokens. Raises SearchPriorsError for a missing folder or an unsupported family."""
    if not isinstance(folder, str) or not os.path.isdir(folder):
        raise SearchPriorsError(f"Captioner folder '{folder}' does not exist: put a vision-language model folder "
                                f"under ComfyUI's models/vlm/ and choose it.")
    family = family_of(folder)
    if family == "toy":
        return ToyCaptioner(folder, **kwargs)
    return _CLASSES[family](folder, device=device, dtype=dtype, **kwargs)


def list_captioner_folders(roots: Sequence[str]) -> list[str]:
    """Names of the sub-folders of ``roots`` that hold a config.json (sorted, first root wins)."""
    names: list[str] = []
    for root in roots:
        try:
            entries = sorted(os.listdir(root))
        except OSError:
            continue
        for name in entries:
            if name not in names and os.path.isfile(os.path.join(root, name, "config.json")):
                names.append(name)
    return names


def find_captioner_folder(name: str, roots: Sequence[str]) -> str:
    """The folder ``name`` under the first of ``roots`` that has it; a clear error when none does."""
    if not isinstance(name, str) or not name.strip() or os.sep in name or name in (".", ".."):
        raise SearchPriorsError(f"Captioner '{name}' is not a folder name: choose a folder under models/vlm/.")
    for root in roots:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    raise SearchPriorsError(f"No captioner folder '{name}' under {', '.join(roots) or 'models/vlm'}: put a "
                            f"vision-language model folder there (config.json, weights, processor files).")


def write_toy_captioner(folder: str) -> str:
    """Makes ``folder`` a toy captioner (a config.json naming the family); returns the folder."""
    os.makedirs(folder, exist_ok=True)
    from .index import write_json_atomic

    write_json_atomic(os.path.join(folder, "config.json"), TOY_CONFIG)
    return folder


def frames_budget(max_frames: int, max_side: int) -> int:
    """Bytes of frames one shot can hold after ``prepare`` (the memory bound, per shot in a batch)."""
    return int(max_frames + 1) * int(max_side) * int(max_side) * 3


__all__ = ["DEFAULT_CAPTION_PROMPT", "FAMILIES", "Captioner", "load_captioner", "family_of", "write_toy_captioner",
           "list_captioner_folders", "find_captioner_folder",
           "clean_caption", "check_shot", "sample_frames", "fit_frame", "frames_budget"]
