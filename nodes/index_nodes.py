"""MotionIndexBuilder and MotionIndexLoader nodes: the captioned video library as a searchable index."""

from __future__ import annotations

import os
import threading

import folder_paths
from comfy_api.v0_0_2 import io

from ..retrieval.index import DEFAULT_LOCK_TIMEOUT, build_index, index_fingerprint, load_index
from ..retrieval.library import FORMATS, read_library
from ..retrieval.models import load_sentence_model, load_spacy
from .comfy_internals import glue
from .sockets import MotionIndexType


_loaded: dict[str, tuple[str, object]] = {}   # folder -> (fingerprint, MotionIndex)
_lock = threading.Lock()


def cached_index(folder: str):
    """Load an index once per published state; a rebuild is picked up on the next run."""
    stamp = index_fingerprint(folder)
    with _lock:
        hit = _loaded.get(folder)
        if hit and hit[0] == stamp:
            return hit[1]
    index = load_index(folder)
    with _lock:
        _loaded[folder] = (stamp, index)
    return index


class MotionIndexBuilder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SearchPriors_MotionIndexBuilder",
            display_name="Motion Index Builder",
            category=glue.CATEGORY,
            description="Indexes a captioned video library (CSV / JSONL / WebVid CSV / MSR-VTT JSON) into "
                        "models/motion_index/<index_name>. Incremental and resumable: entries already "
                        "indexed are skipped; Cancel keeps the previous index intact.",
            is_output_node=True,
            inputs=[
                io.String.Input("library", default="searchpriors_sample/library.csv",
                                tooltip="Library file, relative to ComfyUI's input folder"),
                io.Combo.Input("format", options=list(FORMATS), default="auto"),
                io.String.Input("index_name", default="searchpriors_sample",
                                tooltip="Folder name under models/motion_index"),
                *glue.model_inputs(),
                io.String.Input("videos_folder", default="", optional=True,
                                tooltip="Where the video files are (relative to the input folder); "
                                        "empty = the library file's folder"),
                io.Int.Input("lock_timeout", default=int(DEFAULT_LOCK_TIMEOUT), min=0, max=86400, optional=True,
                             tooltip="Seconds to wait while another build (another ComfyUI, the CLI) is publishing "
                                     "into this index; 0 = fail at once. Builds run side by side and the index "
                                     "gets the union of their captions"),
            ],
            outputs=[MotionIndexType.Output("index", display_name="index"), io.String.Output("report", display_name="report")],
        )

    @classmethod
    def validate_inputs(cls, spacy_model=None, sentence_model=None):
        return glue.check_model_dropdowns(spacy_model, sentence_model)

    @classmethod
    def fingerprint_inputs(cls, library=None, index_name=None, videos_folder=None, **_):
        base = folder_paths.get_input_directory()
        try:
            path = glue.resolve_user_path(library, base, "Library path")
        except Exception:
            return glue.RERUN  # so that execute runs and shows the error
        return (glue.file_stamp(path), index_name, videos_folder or "")

    @classmethod
    def execute(cls, library: str, format: str, index_name: str, spacy_model: str, sentence_model: str,
                videos_folder: str = "", lock_timeout: int = int(DEFAULT_LOCK_TIMEOUT)) -> io.NodeOutput:
        base = folder_paths.get_input_directory()
        library_path = glue.resolve_user_path(library, base, "Library path")
        videos_root = glue.resolve_user_path(videos_folder, base, "Videos folder") if videos_folder.strip() else None
        folder = glue.index_folder(index_name, must_exist=False)
        entries, library_report = read_library(library_path, format, videos_root)
        nlp = load_spacy(spacy_model, glue.model_folders(glue.SPACY_FOLDER))
        encoder = load_sentence_model(sentence_model, glue.model_folders(glue.SENTENCE_FOLDER))
        build = build_index(folder, entries, nlp, encoder, progress=glue.progress_callback(),
                            source={"path": os.path.relpath(library_path, base), "format": library_report.format},
                            lock_timeout=lock_timeout)
        index = cached_index(folder)
        report = f"{library_report.summary()}\n{build.summary()}"
        return io.NodeOutput(index, report)


class MotionIndexLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = glue.index_choices()
        return io.Schema(
            node_id="SearchPriors_MotionIndexLoader",
            display_name="Motion Index Loader",
            category=glue.CATEGORY,
            description="Loads a motion index from models/motion_index.",
            inputs=[glue.dropdown(io, "index_name", choices, None,
                                  "Indexes under models/motion_index (build one with Motion Index Builder)")],
            outputs=[MotionIndexType.Output("index", display_name="index"), io.String.Output("summary", display_name="summary")],
        )

    @classmethod
    def fingerprint_inputs(cls, index_name=None):
        try:
            return index_fingerprint(glue.index_folder(index_name, must_exist=True))
        except Exception:
            return glue.RERUN

    @classmethod
    def validate_inputs(cls, index_name=None):
        # An empty list is the first-run case and gets its message here; a name that is not (or no
        # longer) on disk is reported by execute, on the node, with the names that exist.
        return glue.check_dropdowns(glue.Dropdown("index_name", index_name, glue.index_choices(), glue.NO_INDEX_YET,
                                                  unknown_checked_by_execute=True))

    @classmethod
    def execute(cls, index_name: str) -> io.NodeOutput:
        index = cached_index(glue.index_folder(index_name, must_exist=True))
        return io.NodeOutput(index, index.summary())
