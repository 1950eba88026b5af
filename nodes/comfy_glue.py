"""What every node of the pack shares with ComfyUI: model folders, safe paths, progress and Cancel.

Paths typed into a widget come from workflows that strangers share, so they are untrusted: they resolve
inside ComfyUI's input, output, user and models folders only, and ``..`` is refused outright.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Optional

import folder_paths

from ..retrieval.errors import SearchPriorsError
from ..retrieval.models import (DEFAULT_SENTENCE_MODEL, DEFAULT_SPACY_MODEL, list_sentence_models,
                                list_spacy_models)

CATEGORY = "SearchPriors/retrieval"
INDEX_FOLDER = "motion_index"
SPACY_FOLDER = "spacy"
SENTENCE_FOLDER = "sentence_transformers"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def register_model_folders() -> None:
    """models/motion_index, models/spacy and models/sentence_transformers (extra_model_paths may add more)."""
    for name in (INDEX_FOLDER, SPACY_FOLDER, SENTENCE_FOLDER):
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name), is_default=True)


def model_folders(name: str) -> list[str]:
    register_model_folders()
    return list(folder_paths.get_folder_paths(name))


def spacy_choices() -> list[str]:
    return list_spacy_models(model_folders(SPACY_FOLDER))


def sentence_choices() -> list[str]:
    return list_sentence_models(model_folders(SENTENCE_FOLDER))


def model_inputs() -> list:
    """The spaCy and Sentence-Transformers dropdowns, defaulting to the paper's models when present."""
    from comfy_api.v0_0_2 import io

    def combo(name: str, options: list[str], default: str, tooltip: str):
        return io.Combo.Input(name, options=options, default=default if default in options else options[0],
                              tooltip=tooltip)

    return [
        combo("spacy_model", spacy_choices(), DEFAULT_SPACY_MODEL,
              "spaCy pipeline with a parser: installed packages and folders in models/spacy/"),
        combo("sentence_model", sentence_choices(), DEFAULT_SENTENCE_MODEL,
              "Sentence-Transformers model: folders in models/sentence_transformers/, package-shipped or cached"),
    ]


def index_choices() -> list[str]:
    names = set()
    for root in model_folders(INDEX_FOLDER):
        if os.path.isdir(root):
            names.update(e.name for e in os.scandir(root)
                         if e.is_dir() and os.path.isfile(os.path.join(e.path, "manifest.json")))
    return sorted(names)


def allowed_roots() -> list[str]:
    roots = [folder_paths.get_input_directory(), folder_paths.get_output_directory(),
             folder_paths.get_user_directory(), folder_paths.models_dir]
    for paths, _ in folder_paths.folder_names_and_paths.values():
        roots.extend(paths)
    return [os.path.abspath(r) for r in roots if r]


def resolve_user_path(value: str, base: str, what: str) -> str:
    """``value`` relative to ``base`` (or absolute), refused unless inside ComfyUI's own folders."""
    raw = (value or "").strip()
    if not raw:
        raise SearchPriorsError(f"{what} is empty: give a path relative to {base}.")
    if "\x00" in raw or ".." in re.split(r"[\\/]+", raw):
        raise SearchPriorsError(f"{what} '{raw}' contains '..': paths must stay inside ComfyUI's input, "
                                f"output, user or models folders. Put the file there and give its path.")
    path = os.path.abspath(raw if os.path.isabs(raw) else os.path.join(base, raw))
    for root in allowed_roots():
        if os.path.commonpath([path, root]) == root:
            return path
    raise SearchPriorsError(f"{what} '{raw}' is outside ComfyUI's input, output, user and models folders, "
                            f"which is not allowed for paths in workflows. Move the file under {base}.")


def index_folder(name: str, must_exist: bool) -> str:
    """The folder of the index called ``name`` under models/motion_index."""
    name = (name or "").strip()
    if not _NAME.match(name):
        raise SearchPriorsError(f"Index name '{name}' is not allowed: use letters, digits, '.', '_' and '-' "
                                f"only (it names a folder under models/{INDEX_FOLDER}).")
    roots = model_folders(INDEX_FOLDER)
    for root in roots:
        candidate = os.path.join(root, name)
        if os.path.isdir(candidate):
            return candidate
    if must_exist:
        known = ", ".join(index_choices()) or "none yet"
        raise SearchPriorsError(f"No motion index named '{name}' under models/{INDEX_FOLDER} (found: {known}). "
                                f"Build it with MotionIndexBuilder first, or pick one from the list.")
    return os.path.join(roots[0], name)


def progress_callback() -> Callable[[int, int], None]:
    """A callback for long loops: moves ComfyUI's progress bar and honours Cancel."""
    import comfy.model_management
    import comfy.utils

    state: dict = {"bar": None, "total": None}

    def update(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        total = max(int(total), 1)
        if state["bar"] is None or state["total"] != total:
            state["bar"], state["total"] = comfy.utils.ProgressBar(total), total
        state["bar"].update_absolute(min(done, total), total)

    return update


def file_stamp(path: Optional[str]) -> str:
    try:
        st = os.stat(path)
    except (OSError, TypeError):
        return "missing"
    return f"{st.st_mtime_ns}-{st.st_size}"
