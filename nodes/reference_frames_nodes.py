"""Reference Video Frames node: a retrieved video (RETRIEVAL + rank) or a video file -> IMAGE frames.

The POS paper inverts the nearest library video (Sec. 3.1, Eq. 2); this node turns that video into
frames of the generation size for core VAE Encode. Decoding is ``distill.video_frames`` (PyAV, bounded
memory). A typed ``video_path`` is untrusted and confined to ComfyUI's folders; the paths inside a
RETRIEVAL come from the user's own motion index (built from a library file that was itself confined) and
are used as they are, so that a library may keep its videos on another disk.
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.v0_0_2 import io

from ..distill.video_frames import (CROP_MODES, MAX_FRAMES, MAX_SIDE, check_frames_budget, check_request,
                                    read_reference_frames)
from ..retrieval.errors import SearchPriorsError
from .comfy_internals import glue
from .sockets import RetrievalType

CATEGORY = "SearchPriors/video"
_DEFAULTS = {"frame_count": 16, "width": 256, "height": 256, "start_seconds": 0.0, "stride": 1, "fps": 8.0,
             "crop": "center"}


def _source(retrieval, rank, video_path) -> tuple[str, str, str, tuple]:
    """(file, caption, what it is, (shot start, shot end)) for the given inputs; exactly one of retrieval /
    video_path. The times are the retrieved entry's shot inside the file (None, None: the whole file)."""
    typed = (video_path or "").strip()
    if retrieval is not None and typed:
        raise SearchPriorsError("Both a retrieval and a video_path are given: connect the retrieval (the video "
                                "at its rank is used) or type a video_path, not both. Clear video_path to use "
                                "the retrieval.")
    if retrieval is None and not typed:
        raise SearchPriorsError("No video given: connect a Motion Retriever's retrieval output (and pick a rank), "
                                "or type a video_path relative to ComfyUI's input folder.")
    if typed:
        path = glue.resolve_user_path(typed, folder_paths.get_input_directory(), "Video path")
        return path, "", f"video_path {typed}", (None, None)
    rank = 1 if rank is None else int(rank)
    hit = glue.retrieval_hit(retrieval, rank)
    shot = (getattr(hit, "start_s", None), getattr(hit, "end_s", None))
    label = f"retrieval rank {rank}: {hit.video_id} \"{hit.caption}\""
    if shot != (None, None):
        label += f" (shot {shot[0] or 0:g}-{'end' if shot[1] is None else format(shot[1], 'g')} s of the file)"
    if not hit.video_path:
        with_video = [h.rank for h in getattr(retrieval, "hits", None) or [] if h.video_path]
        other = (f" Ranks with a local video: {', '.join(map(str, with_video[:10]))}." if with_video
                 else " No entry of this retrieval has one.")
        raise SearchPriorsError(f"The entry at rank {rank} ({hit.video_id}, \"{hit.caption}\") has no local video "
                                f"file: the library named none or it was missing when the index was built. "
                                f"Rebuild the index with videos_folder pointing at the videos, or pick another "
                                f"rank.{other}")
    if not os.path.isfile(hit.video_path):
        raise SearchPriorsError(f"The video of the entry at rank {rank} ({hit.video_id}, \"{hit.caption}\") is "
                                f"gone: {hit.video_path} no longer exists. Put it back or rebuild the index.")
    return hit.video_path, hit.caption, label, shot


class ReferenceFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_ReferenceFrames",
            display_name="Reference Video Frames",
            category=CATEGORY,
            description="Frames of a retrieved reference video (retrieval + rank) or of a video file, resized "
                        "to the generation size, as an IMAGE batch [frames, height, width, 3] for VAE Encode "
                        "(POS Sec. 3.1). Decodes only the frames it needs (PyAV).",
            inputs=[
                io.Int.Input("frame_count", default=_DEFAULTS["frame_count"], min=1, max=MAX_FRAMES,
                             tooltip="How many frames to take (the latent's frame count)"),
                io.Int.Input("width", default=_DEFAULTS["width"], min=8, max=MAX_SIDE, step=8,
                             tooltip="Output width in pixels (the generation width)"),
                io.Int.Input("height", default=_DEFAULTS["height"], min=8, max=MAX_SIDE, step=8,
                             tooltip="Output height in pixels (the generation height)"),
                io.Float.Input("start_seconds", default=_DEFAULTS["start_seconds"], min=0.0, max=1e7, step=0.1,
                               tooltip="The first frame is the one on screen at this time"),
                io.Int.Input("stride", default=_DEFAULTS["stride"], min=0, max=10000,
                             tooltip="Take every n-th source frame; 0 = resample to fps by timestamps"),
                io.Float.Input("fps", default=_DEFAULTS["fps"], min=0.0, max=1000.0, step=0.5,
                               tooltip="Used when stride is 0: frame k is the one on screen at start + k/fps"),
                io.Combo.Input("crop", options=list(CROP_MODES), default=_DEFAULTS["crop"],
                               tooltip="center: keep the aspect ratio, fill, cut the centre; pad: keep the "
                                       "aspect ratio, fit, black bars; stretch: scale to width x height"),
                RetrievalType.Input("retrieval", optional=True,
                                    tooltip="A Motion Retriever's output; its entry at rank gives the video"),
                io.Int.Input("rank", default=1, min=1, max=1000, optional=True,
                             tooltip="Which retrieved entry (1 = best)"),
                io.String.Input("video_path", default="", optional=True,
                                tooltip="Instead of a retrieval: a video file relative to ComfyUI's input "
                                        "folder (input, output, user and models folders only)"),
            ],
            outputs=[
                io.Image.Output("frames", display_name="frames"),
                io.String.Output("info", display_name="info",
                                 tooltip="The file, its fps and size, and the source frames chosen"),
                io.String.Output("caption", display_name="caption",
                                 tooltip="The retrieved entry's caption ('' for a video_path)"),
            ],
        )

    @classmethod
    def validate_inputs(cls, frame_count=None, width=None, height=None):
        # Only what decides the memory budget is named, so a request too large for it is refused before the
        # graph runs, on these three inputs (ComfyUI files a returned message once per input named here, and
        # skips its own range check of them: the schema's ranges are checked here instead). Every other widget
        # is range- and option-checked by ComfyUI itself and checked again, with the file, when the node runs.
        # A linked widget (e.g. frame_count from a Primitive node) comes as None: checked when the node runs.
        values = {"frame_count": frame_count, "width": width, "height": height}
        problem = glue.number_inputs_problem(cls, values)
        if problem:
            return problem
        if any(v is None for v in values.values()):
            return True
        try:
            check_frames_budget(frame_count, width, height)
        except SearchPriorsError as exc:
            return str(exc)
        return True

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        typed = (kwargs.get("video_path") or "").strip()
        retrieval = kwargs.get("retrieval")
        if not typed and retrieval is None:
            return "linked retrieval"   # ComfyUI re-runs the node when the retrieval upstream changes
        try:
            path, _, _, _ = _source(retrieval, kwargs.get("rank", 1), typed)
        except Exception:
            return float("nan")   # always re-run, so that the error shows on the node
        stamp = glue.file_stamp(path)
        return float("nan") if stamp == "missing" else (path, stamp)

    @classmethod
    def execute(cls, frame_count: int = 16, width: int = 256, height: int = 256, start_seconds: float = 0.0,
                stride: int = 1, fps: float = 8.0, crop: str = "center", retrieval=None, rank: int = 1,
                video_path: str = "") -> io.NodeOutput:
        check_request(frame_count, width, height, start_seconds, stride, fps, crop)
        path, caption, label, (shot_start, shot_end) = _source(retrieval, rank, video_path)
        result = read_reference_frames(path, frame_count, width, height, start_seconds=start_seconds,
                                       stride=stride, fps=fps, crop=crop, progress=glue.progress_callback(),
                                       shot_start=shot_start, shot_end=shot_end)
        info = f"{label}\n{path}\n{result.summary()}"
        return io.NodeOutput(result.frames, info, caption)
