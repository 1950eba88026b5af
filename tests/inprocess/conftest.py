"""Fixtures of the in-process tier: ComfyUI's own modules imported in this process, folders in tmp.

ComfyUI is found as scripts/comfy_server.py's ``default_comfyui_dir()`` finds it for the server, the demo and the
benchmarks (COMFYUI_PATH, else SEARCHPRIORS_COMFYUI, else the copy that scripts/setup_env.sh unpacks under
SEARCHPRIORS_CACHE). Its root goes on sys.path (ComfyUI's own `nodes` module must win; the pack's repository
root is never put there, so the harness is loaded by file path).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest


def _comfyui_dir() -> str:
    name = "searchpriors_comfy_server"   # the one copy tests/conftest.py loads, whichever asks first
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parents[2] / "scripts" / "comfy_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return str(sys.modules[name].default_comfyui_dir())


COMFYUI = _comfyui_dir()


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    if not os.path.isfile(os.path.join(COMFYUI, "folder_paths.py")):
        pytest.fail(f"ComfyUI not found at {COMFYUI}: run `make setup` (or set COMFYUI_PATH)")
    if COMFYUI not in sys.path:
        sys.path.insert(0, COMFYUI)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # no accelerator in tests; model_management reads this at import
    import folder_paths

    base = tmp_path_factory.mktemp("comfy_base")
    for sub in ("input", "output", "user", "models"):
        (base / sub).mkdir()
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_user_directory(str(base / "user"))
    folder_paths.models_dir = str(base / "models")
    for name in ("motion_index", "spacy", "sentence_transformers", "LLM"):
        folder_paths.folder_names_and_paths[name] = ([str(base / "models" / name)], set())
    return base


@pytest.fixture(scope="session")
def pack_nodes(comfy):
    import comfyui_searchpriors.nodes as nodes_pkg

    return nodes_pkg
