"""Clip Library Builder node: a folder of your own videos cut into shots, captioned and indexed (incremental)."""

from __future__ import annotations

import hashlib
import os

import folder_paths
from comfy_api.v0_0_2 import io

from ..retrieval.captioner import DEFAULT_CAPTION_PROMPT, load_captioner
from ..retrieval.clip_library import LIBRARY_FILE, ClipSettings, build_clip_library, scan_clips
from ..retrieval.index import CLIP_LIBRARY_DIR, DEFAULT_LOCK_TIMEOUT, index_fingerprint
from ..retrieval.models import load_sentence_model, load_spacy
from .comfy_internals import glue
from .index_nodes import cached_index
from .sockets import MotionIndexType

NO_CAPTIONER = ("No captioner in models/vlm yet: put a vision-language model folder there (Qwen2.5-VL, Florence-2; "
                "docs/clip_library.md says which files), or the toy captioner that `make serve` installs.")


def _captioner_device():
    import comfy.model_management

    return comfy.model_management.get_torch_device()


class ClipLibraryBuilder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_ClipLibraryBuilder",
            display_name="Clip Library Builder",
            category=glue.CATEGORY,
            description="Cuts a folder of videos (mp4, webm, mov, mkv; subfolders too) into shots, captions "
                        "every shot with a local vision-language model, and indexes the shots into "
                        "models/motion_index/<index_name> with their start and end times. Incremental: a rerun "
                        "does only new or changed clips, deleted clips leave the index; Cancel keeps every "
                        "finished clip; a broken file gets its own line in the report.",
            is_output_node=True,
            inputs=[
                io.String.Input("clips_folder", default="searchpriors_toy_clips",
                                tooltip="Folder of videos, relative to ComfyUI's input folder (or a path inside "
                                        "the input or models folders); subfolders are read too"),
                io.String.Input("index_name", default="my_clips", tooltip="Folder name under models/motion_index"),
                glue.dropdown(io, "captioner", glue.captioner_choices(), None,
                              "Vision-language model folder under models/vlm (Qwen2.5-VL / Qwen2-VL read the "
                              "shot as a video, Florence-2 its middle frame, toy: the toy world's probe)"),
                io.String.Input("prompt", default=DEFAULT_CAPTION_PROMPT, multiline=True,
                                tooltip="What the captioner is asked for each shot (Florence-2 takes a task "
                                        "token instead). Changing it re-captions every clip on the next run"),
                *glue.model_inputs(),
                io.Int.Input("frames_per_shot", default=8, min=1, max=64, optional=True,
                             tooltip="Frames sampled evenly from each shot for the captioner"),
                io.Float.Input("cut_threshold", default=0.015, min=0.0, max=1.0, step=0.001, optional=True,
                               tooltip="Least mean frame difference (0..1, at 48 px) that can be a cut"),
                io.Float.Input("cut_ratio", default=3.0, min=1.0, max=100.0, step=0.1, optional=True,
                               tooltip="A cut's frame difference over the mean of its 2 neighbours on each side"),
                io.Float.Input("min_shot_seconds", default=0.4, min=0.0, max=3600.0, step=0.1, optional=True,
                               tooltip="No cut closer than this to the previous one"),
                io.Int.Input("batch_size", default=4, min=1, max=64, optional=True,
                             tooltip="Shots captioned at once (more is faster on a GPU, needs more memory)"),
                io.Int.Input("lock_timeout", default=int(DEFAULT_LOCK_TIMEOUT), min=0, max=86400, optional=True,
                             tooltip="Seconds to wait while another build writes into this index; 0 = fail at once"),
            ],
            outputs=[MotionIndexType.Output("index", display_name="index"),
                     io.String.Output("library", display_name="library"),
                     io.String.Output("report", display_name="report")],
        )

    @classmethod
    def validate_inputs(cls, captioner=None):
        # only the captioner (one message per problem); the text models are checked when the node runs
        return glue.check_dropdowns(glue.Dropdown("captioner", captioner, glue.captioner_choices(), NO_CAPTIONER))

    @classmethod
    def fingerprint_inputs(cls, clips_folder=None, **_):
        # the folder's files change without any input changing: the fingerprint is every clip's path, size and
        # modification time (a scan, no decoding); an unchanged folder keeps the graph's later nodes cached
        try:
            root = glue.resolve_user_path(clips_folder, folder_paths.get_input_directory(), "Clips folder")
            clips = scan_clips(root)
        except Exception:
            return glue.RERUN  # so that execute runs and shows the error
        return hashlib.sha256(repr([(c.relpath, c.size, c.mtime_ns) for c in clips]).encode()).hexdigest()[:24]

    @classmethod
    def execute(cls, clips_folder: str, index_name: str, captioner: str, prompt: str, spacy_model: str,
                sentence_model: str, frames_per_shot: int = 8, cut_threshold: float = 0.015, cut_ratio: float = 3.0,
                min_shot_seconds: float = 0.4, batch_size: int = 4,
                lock_timeout: int = int(DEFAULT_LOCK_TIMEOUT)) -> io.NodeOutput:
        base = folder_paths.get_input_directory()
        root = glue.resolve_user_path(clips_folder, base, "Clips folder")
        folder = glue.index_folder(index_name, must_exist=False)
        model = load_captioner(glue.captioner_folder(captioner), device=_captioner_device())
        nlp = load_spacy(spacy_model, glue.model_folders(glue.SPACY_FOLDER))
        encoder = load_sentence_model(sentence_model, glue.model_folders(glue.SENTENCE_FOLDER))
        settings = ClipSettings(frames_per_shot=frames_per_shot, threshold=cut_threshold, ratio=cut_ratio,
                                min_shot_s=min_shot_seconds)
        report = build_clip_library(root, folder, model, nlp, encoder, prompt=prompt, settings=settings,
                                    batch_size=batch_size, progress=glue.progress_callback(),
                                    lock_timeout=lock_timeout)
        index = cached_index(folder) if index_fingerprint(folder) != "missing" else None
        return io.NodeOutput(index, os.path.join(folder, CLIP_LIBRARY_DIR, LIBRARY_FILE), report.summary())
