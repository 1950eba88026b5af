"""Fixtures of the in-process tier: ComfyUI's own modules imported in this process, folders in tmp.

ComfyUI is found as scripts/comfy_server.py's ``default_comfyui_dir()`` finds it for the server, the demo and the
benchmarks (COMFYUI_PATH, else SEARCHPRIORS_COMFYUI, else the copy that scripts/setup_env.sh unpacks under
SEARCHPRIORS_CACHE). Its root goes on sys.path (ComfyUI's own `nodes` module must win; the pack's repository
root is never put there, so the harness is loaded by file path, by tests/conftest.py, and helpers with its
``load_test_helper``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

TESTS = Path(__file__).resolve().parents[1]


COMFYUI = str(harness.default_comfyui_dir())


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


@pytest.fixture(scope="session")
def pos(pack_nodes):
    """The pack's POS nodes module."""
    from comfyui_searchpriors.nodes import pos_nodes

    return pos_nodes


@pytest.fixture(scope="session")
def ncs(comfy):
    """ComfyUI's comfy_extras.nodes_custom_sampler (the core sampling nodes the POS nodes are checked against)."""
    from comfy_extras import nodes_custom_sampler

    return nodes_custom_sampler


@pytest.fixture(scope="module")
def tiny(comfy, one_torch_thread):
    """tests/tiny_models.py (tiny random models of ComfyUI's own classes), loaded once per session; the module
    that uses it runs on one torch thread (tiny ops on a shared 2-core machine are much faster so)."""
    return harness.load_test_helper("tiny_models")


def _recording(model, prompts: dict, keys: list | None = None):
    """A clone of ``model`` that records (sigma, prompt name) for the positive chunk of every model call (a name
    of ``prompts`` whose tensor starts the chunk's context, else "?"); with ``keys``, each call's sorted cond keys
    are appended to it. Returns (clone, calls)."""
    import torch

    calls = []
    recorder = model.clone()

    def record(apply_model, args):
        context = args["c"]["c_crossattn"]
        per_chunk = context.shape[0] // len(args["cond_or_uncond"])
        for j, which in enumerate(args["cond_or_uncond"]):
            if which == 0:  # 0 = the positive prompt, 1 = the negative (core sampling_function's order)
                row = context[j * per_chunk]
                names = [n for n, c in prompts.items() if torch.equal(row[: c.shape[1]], c[0].to(row.dtype))]
                calls.append((float(args["timestep"][j * per_chunk]), names[0] if names else "?"))
        if keys is not None:
            keys.append(sorted(args["c"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    recorder.set_model_unet_function_wrapper(record)
    return recorder, calls


@pytest.fixture(scope="session")
def recording():
    """``recording(model, prompts, keys=None) -> (clone, calls)``: see ``_recording``."""
    return _recording


@pytest.fixture
def nan_loss_from_call(monkeypatch):
    """nan_loss_from_call(n): VMC's motion loss turns NaN from its n-th call on, the training around it as it is."""
    from comfyui_searchpriors.distill import vmc

    def install(n: int) -> None:
        real_loss, calls = vmc.motion_loss, []

        def loss(*args, **kwargs):
            calls.append(1)
            value = real_loss(*args, **kwargs)
            return value * float("nan") if len(calls) >= n else value

        monkeypatch.setattr(vmc, "motion_loss", loss)

    return install
