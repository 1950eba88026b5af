"""What every node of the pack shares with ComfyUI: model folders, safe paths, progress and Cancel.

Paths typed into a widget come from workflows that strangers share, so they are untrusted: they resolve
(symbolic links followed) inside ComfyUI's input, output, user and models folders only (never custom_nodes),
and ``..`` is refused outright.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from typing import Any, Callable, Optional, Union

import folder_paths

from ...retrieval.errors import SearchPriorsError
from ...retrieval.number_inputs import NumberSpec, check_numbers, first_number_problem
from ...retrieval.models import (DEFAULT_SENTENCE_MODEL, DEFAULT_SPACY_MODEL, list_sentence_models,
                                list_spacy_models)

CATEGORY = "SearchPriors/retrieval"
INDEX_FOLDER = "motion_index"
SPACY_FOLDER = "spacy"
SENTENCE_FOLDER = "sentence_transformers"
VLM_FOLDER = "vlm"   # clip captioners: models/vlm/<folder> (retrieval/captioner.py)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def register_model_folders() -> None:
    """models/motion_index, models/spacy, models/sentence_transformers and models/vlm (extra_model_paths may
    add more)."""
    for name in (INDEX_FOLDER, SPACY_FOLDER, SENTENCE_FOLDER, VLM_FOLDER):
        if name not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name), is_default=True)


def model_folders(name: str) -> list[str]:
    register_model_folders()
    return list(folder_paths.get_folder_paths(name))


def spacy_choices() -> list[str]:
    return list_spacy_models(model_folders(SPACY_FOLDER))


def sentence_choices() -> list[str]:
    return list_sentence_models(model_folders(SENTENCE_FOLDER))


def captioner_choices() -> list[str]:
    """Folders under models/vlm/ that hold a config.json (retrieval.captioner checks the family on load)."""
    from ...retrieval.captioner import list_captioner_folders

    return list_captioner_folders(model_folders(VLM_FOLDER))


def captioner_folder(name: str) -> str:
    """The path of models/vlm/<name>; a clear error when no such folder exists."""
    from ...retrieval.captioner import find_captioner_folder

    return find_captioner_folder(name, model_folders(VLM_FOLDER))


def model_inputs() -> list:
    """The spaCy and Sentence-Transformers dropdowns, defaulting to the paper's models when present."""
    from comfy_api.v0_0_2 import io

    return [
        dropdown(io, "spacy_model", spacy_choices(), DEFAULT_SPACY_MODEL,
                 "spaCy pipeline with a parser: installed packages and folders in models/spacy/"),
        dropdown(io, "sentence_model", sentence_choices(), DEFAULT_SENTENCE_MODEL,
                 "Sentence-Transformers model: folders in models/sentence_transformers/, package-shipped or cached"),
    ]


def dropdown(io, name: str, options: list[str], default: Optional[str], tooltip: str):
    """A COMBO input whose options come from disk; it may be empty (then it has no default)."""
    chosen = default if default in options else (options[0] if options else None)
    return io.Combo.Input(name, options=options, default=chosen, tooltip=tooltip)


def index_choices() -> list[str]:
    names = set()
    for root in model_folders(INDEX_FOLDER):
        if os.path.isdir(root):
            names.update(e.name for e in os.scandir(root)
                         if e.is_dir() and os.path.isfile(os.path.join(e.path, "manifest.json")))
    return sorted(names)


# folder_paths also registers ComfyUI's custom_nodes folder; it is no place for a workflow's files (it holds
# code, and keys or configs of other packs), so it is left out even though folder_paths lists it.
NOT_ALLOWED_FOLDERS = ("custom_nodes",)


def allowed_roots() -> list[str]:
    """ComfyUI's input, output, user and models folders (and the model folders extra_model_paths adds), with
    symbolic links resolved."""
    roots = [folder_paths.get_input_directory(), folder_paths.get_output_directory(),
             folder_paths.get_user_directory(), folder_paths.models_dir]
    for name, (paths, _) in folder_paths.folder_names_and_paths.items():
        if name not in NOT_ALLOWED_FOLDERS:
            roots.extend(paths)
    return [os.path.realpath(r) for r in roots if r]


def resolve_user_path(value: str, base: str, what: str) -> str:
    """``value`` relative to ``base`` (or absolute), refused unless inside ComfyUI's own folders.

    Symbolic links are resolved before the check (the path returned is the resolved one), so a link in the
    input folder that points elsewhere is refused like the path it points to."""
    raw = (value or "").strip()
    if not raw:
        raise SearchPriorsError(f"{what} is empty: give a path relative to {base}.")
    if "\x00" in raw:
        raise SearchPriorsError(f"{what} contains a NUL character (\\x00), which no file name can hold: retype "
                                f"the path, e.g. a file name relative to {base}.")
    if ".." in re.split(r"[\\/]+", raw):
        raise SearchPriorsError(f"{what} '{raw}' contains '..': paths must stay inside ComfyUI's input, "
                                f"output, user or models folders. Put the file there and give its path.")
    path = os.path.realpath(raw if os.path.isabs(raw) else os.path.join(base, raw))
    for root in allowed_roots():
        if os.path.commonpath([path, root]) == root:
            return path
    linked = path != os.path.abspath(raw if os.path.isabs(raw) else os.path.join(base, raw))
    raise SearchPriorsError(f"{what} '{raw}' " + (f"is a symbolic link (or lies under one) to {path}, which is "
                                                  if linked else "is ")
                            + f"outside ComfyUI's input, output, user and models folders, which is not allowed "
                              f"for paths in workflows. Move (copy) the file under {base}.")


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
                                f"Build it with Motion Index Builder first, or pick one from the list.")
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


# ---------------------------------------------------------------------------------- missing and empty inputs
# The pattern every node of the pack follows (new nodes too: loaders, POS nodes, the rewriter).
#
# ComfyUI calls a node's ``validate_inputs`` and ``fingerprint_inputs`` with only the inputs it has a value
# for: an input the prompt lacks is not passed (a dropdown with nothing in it sends nothing), and neither
# is any input fed by a link (its value does not exist before the graph runs). A required positional
# parameter then fails with a TypeError that the user sees instead of a message. So:
#
#   * every parameter of ``validate_inputs`` and ``fingerprint_inputs`` is a keyword with default None;
#   * ``validate_inputs`` never takes ``**kwargs`` and names only the dropdowns the node checks itself
#     (for the inputs it names, and for all inputs once it takes ``**kwargs``, ComfyUI skips its own
#     min/max and "value not in list" checks);
#   * it returns ``check_dropdowns(...)``: True, or the node's own message with the fix. None is "missing
#     or linked": ComfyUI already names a missing required input, and execute checks a linked value, so
#     None is an error only when the list is empty, that is, when there is nothing the user could pick
#     (then the message is raised, since ComfyUI drops a message returned for inputs it did not pass);
#   * ``fingerprint_inputs`` returns ``RERUN`` when it cannot tell (execute then runs and shows the error).
#
#     @classmethod
#     def validate_inputs(cls, index_name=None):
#         return glue.check_dropdowns(glue.Dropdown("index_name", index_name, glue.index_choices(),
#                                                   glue.NO_INDEX_YET, unknown_checked_by_execute=True))

RERUN = float("nan")   # a fingerprint that never equals itself: ComfyUI runs the node again
NO_INDEX_YET = ("No motion index yet: build one with Motion Index Builder first (it writes "
                f"models/{INDEX_FOLDER}/<index_name>), then press R in the browser to refresh the list.")
NO_SPACY_MODEL = (f"No spaCy pipeline found: install one (python -m spacy download {DEFAULT_SPACY_MODEL}) or "
                  f"put a pipeline folder in models/{SPACY_FOLDER}/, then restart ComfyUI.")
NO_SENTENCE_MODEL = (f"No Sentence-Transformers model found: put a model folder (e.g. {DEFAULT_SENTENCE_MODEL}) "
                     f"in models/{SENTENCE_FOLDER}/, then press R in the browser to refresh the list.")


class Dropdown:
    """One dropdown to check: its value (None when missing or linked), its options, and what to say."""

    def __init__(self, name: str, value: Any, options: list[str], when_empty: str,
                 unknown_checked_by_execute: bool = False):
        self.name, self.value, self.options, self.when_empty = name, value, list(options), when_empty
        self.unknown_checked_by_execute = unknown_checked_by_execute

    def problem(self) -> Optional[str]:
        value = self.value.strip() if isinstance(self.value, str) else self.value
        if not self.options:
            # Nothing to pick: even a name saved in a shared workflow cannot be there yet.
            return self.when_empty if value is None or value == "" or not self.unknown_checked_by_execute \
                else f"{self.when_empty} (This workflow asks for '{value}'.)"
        if value is None or value == "":
            if value is None:
                return None   # missing (ComfyUI names it) or linked (execute checks it)
            return f"{self.name} is empty: pick one of {_listing(self.options)}."
        if value not in self.options and not self.unknown_checked_by_execute:
            return f"{self.name} '{value}' is not available here: pick one of {_listing(self.options)}."
        return None


def check_dropdowns(*dropdowns: Dropdown) -> Union[bool, str]:
    """``validate_inputs``' answer: True, or the first problem as a message that names the fix. (ComfyUI
    repeats it once for each input that validate_inputs names, so the message says which dropdown it means.)

    A problem with a dropdown that ComfyUI did not pass (an empty list sends nothing) is raised instead:
    ComfyUI files a returned message under the inputs it passed, so with none passed it would drop the
    message and show only "Required input is missing"; raised, the message is what the user reads."""
    for item in dropdowns:
        problem = item.problem()
        if problem and item.value is None:
            raise SearchPriorsError(problem)
        if problem:
            return problem
    return True


def _listing(options: list[str], limit: int = 8) -> str:
    shown = ", ".join(options[:limit])
    return shown + (f" (and {len(options) - limit} more)" if len(options) > limit else "")


def check_model_dropdowns(spacy_model=None, sentence_model=None) -> Union[bool, str]:
    """``validate_inputs`` of every node that has the two text-model dropdowns of ``model_inputs``."""
    return check_dropdowns(Dropdown("spacy_model", spacy_model, spacy_choices(), NO_SPACY_MODEL),
                           Dropdown("sentence_model", sentence_model, sentence_choices(), NO_SENTENCE_MODEL))


def retrieval_hit(retrieval, rank):
    """The RETRIEVAL's entry at ``rank`` (1 = best), or a message saying what to change."""
    hits = list(getattr(retrieval, "hits", None) or [])
    rank = 1 if rank is None else int(rank)
    if not hits:
        raise SearchPriorsError("The retrieval has no entries (its index is empty): build the index from a "
                                "library with videos first.")
    if not 1 <= rank <= len(hits):
        raise SearchPriorsError(f"rank {rank} is out of range: the retrieval has {len(hits)} entries "
                                f"(rank 1 = best). Lower the rank or raise the retriever's top_k.")
    return hits[rank - 1]


# ----------------------------------------------------------------------------------------- number inputs
# Every INT and FLOAT input of every node of the pack is checked against its own schema when the node runs:
# finite, and within min/max (retrieval/number_inputs.py says why ComfyUI's own check is not enough).
# nodes/__init__.py installs the check on every node it registers; a validate_inputs that receives number
# widgets (by name or through **kwargs) returns ``number_inputs_problem(cls, values)`` as well, so that the
# message shows before the graph runs.

_NUMBER_SPECS: dict = {}


def number_specs(node_cls) -> list[NumberSpec]:
    """The INT and FLOAT inputs of ``node_cls``'s schema with their declared ranges (computed once)."""
    key = getattr(node_cls, "__searchpriors_node__", node_cls)
    if key not in _NUMBER_SPECS:
        specs = []
        for item in key.define_schema().inputs:
            kind = item.get_io_type() if hasattr(item, "get_io_type") else None
            if kind in ("INT", "FLOAT"):
                specs.append(NumberSpec(item.id, kind, getattr(item, "min", None), getattr(item, "max", None)))
        _NUMBER_SPECS[key] = specs
    return _NUMBER_SPECS[key]


def _display_name(node_cls) -> str:
    key = getattr(node_cls, "__searchpriors_node__", node_cls)
    try:
        return key.define_schema().display_name or key.__name__
    except Exception:  # noqa: BLE001 (the name is only for the message)
        return key.__name__


def number_inputs_problem(node_cls, values: dict) -> Optional[str]:
    """For ``validate_inputs``: the first number widget of ``values`` that its schema refuses, or None."""
    return first_number_problem(number_specs(node_cls), values)


def install_number_checks(node_cls) -> None:
    """Wrap ``node_cls.execute`` so that every number input is checked before the node does anything."""
    if getattr(node_cls, "__searchpriors_node__", None) is node_cls:
        return
    function = node_cls.__dict__["execute"].__func__
    signature = inspect.signature(function)

    @functools.wraps(function)
    def execute(cls, *args, **kwargs):
        try:
            bound = signature.bind_partial(cls, *args, **kwargs).arguments
        except TypeError:
            bound = kwargs
        check_numbers(number_specs(node_cls), bound, node=_display_name(node_cls))
        return function(cls, *args, **kwargs)

    if inspect.iscoroutinefunction(function):
        async def execute_async(cls, *args, **kwargs):
            try:
                bound = signature.bind_partial(cls, *args, **kwargs).arguments
            except TypeError:
                bound = kwargs
            check_numbers(number_specs(node_cls), bound, node=_display_name(node_cls))
            return await function(cls, *args, **kwargs)
        execute = functools.wraps(function)(execute_async)

    node_cls.execute = classmethod(execute)
    node_cls.__searchpriors_node__ = node_cls


# --------------------------------------------------------------------------------- two experts (Wan 2.2 A14B)
def check_expert_pair(model, high_noise_model) -> None:
    """The high-noise expert must be the other half of the same model: same model class, latent format and
    architecture (Wan 2.2 A14B's two experts share one WanModel config). For every node with a high_noise_model
    input (DDIM Video Invert, VMC Temporal LoRA)."""
    if not hasattr(high_noise_model, "get_model_object") or getattr(high_noise_model, "model", None) is None:
        raise SearchPriorsError("high_noise_model is not a MODEL; wire a Load Diffusion Model of the high-noise expert (e.g. "
                     "wan2.2_t2v_high_noise_14B_fp16.safetensors) or leave it unconnected.")
    low, high = model.model, high_noise_model.model
    fix = ("connect the high-noise expert of the same model as 'model' (Wan 2.2 A14B: "
           "wan2.2_t2v_high_noise_14B for high_noise_model, wan2.2_t2v_low_noise_14B for model), or leave "
           "high_noise_model unconnected for a one-expert model")
    if type(low) is not type(high):
        raise SearchPriorsError(f"high_noise_model is a {type(high).__name__} but model is a {type(low).__name__}: the two "
                     f"experts must be one model family; {fix}.")
    low_format, high_format = getattr(low, "latent_format", None), getattr(high, "latent_format", None)
    if type(low_format) is not type(high_format) or getattr(low_format, "latent_channels", None) != \
            getattr(high_format, "latent_channels", None):
        raise SearchPriorsError(f"high_noise_model takes {type(high_format).__name__} latents "
                     f"({getattr(high_format, 'latent_channels', '?')} channels) but model takes "
                     f"{type(low_format).__name__} ({getattr(low_format, 'latent_channels', '?')} channels); {fix}.")
    low_config = getattr(getattr(low, "model_config", None), "unet_config", {}) or {}
    high_config = getattr(getattr(high, "model_config", None), "unet_config", {}) or {}
    differ = sorted(key for key in set(low_config) | set(high_config)
                    if str(low_config.get(key)) != str(high_config.get(key)))
    if differ:
        shown = ", ".join(f"{key} {high_config.get(key)!r} vs {low_config.get(key)!r}" for key in differ[:4])
        raise SearchPriorsError(f"high_noise_model has another size or architecture than model ({shown}; high vs low): it "
                     f"is not the other expert of this model; {fix}.")


def progress_with_loss():
    """Progress bar + Cancel per step, and the current loss as the node's progress text."""
    advance = progress_callback()

    def on_step(done: int, total: int, loss: float) -> None:
        advance(done, total)
        try:
            from comfy_execution.utils import get_executing_context
            from server import PromptServer

            context = get_executing_context()
            if context is not None and PromptServer.instance is not None:
                PromptServer.instance.send_progress_text(f"step {done}/{total}  loss {loss:.4f}", context.node_id)
        except Exception:  # progress text is a nicety; training goes on without a UI
            pass

    return on_step
