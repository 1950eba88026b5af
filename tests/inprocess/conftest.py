"""Fixtures of the in-process tier: ComfyUI's own modules imported in this process, folders in tmp.

ComfyUI comes from COMFYUI_PATH, else the copy that scripts/setup_env.sh unpacks. Its root goes on
sys.path (ComfyUI's own `nodes` module must win; the pack's repository root is never put there).
"""

from __future__ import annotations

import os
import sys

import pytest

COMFYUI = os.environ.get("COMFYUI_PATH") or os.path.join(
    os.path.expanduser("~"), ".cache", "comfyui-searchpriors", "comfyui-0.3.75")


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
