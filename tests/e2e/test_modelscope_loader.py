"""The ModelScope / ZeroScope Loader on a real server: a clear error with no model folder, then a tiny
random folder sampled with core nodes (CLIP Text Encode, Empty Latent Image, SamplerCustom with the DDIM
sigmas node, VAE Decode) through POST /prompt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MAKE_FOLDER = Path(__file__).resolve().parents[2] / "scripts" / "make_t2v_folder.py"
FRAMES = 3


def loader_graph(folder) -> dict:
    return {
        "1": {"class_type": "SearchPriors_ModelScopeLoader", "inputs": {"folder": folder, "dtype": "fp32"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }


@pytest.mark.parametrize("folder", ["", None])
def test_no_model_folder_is_a_clear_error_on_the_node(bare_server, comfy_harness, folder):
    entry = bare_server.run_prompt(loader_graph(folder), timeout=120)
    assert comfy_harness.history_status(entry) == "error"
    error = comfy_harness.history_error(entry)
    assert error["node_type"] == "SearchPriors_ModelScopeLoader"
    assert error["exception_type"].endswith("DiffusersFolderError"), error["exception_message"]
    assert "put a ModelScope/ZeroScope diffusers folder in models/diffusers/" in error["exception_message"]
    assert bare_server.running


def test_tiny_folder_samples_with_core_nodes(comfy_server, comfy_harness):
    target = comfy_server.models_dir / "diffusers" / "tiny-t2v"
    if not target.exists():
        subprocess.run([sys.executable, str(MAKE_FOLDER), "--size", "tiny", "--out", str(target)], check=True,
                       capture_output=True, timeout=300)
    info = comfy_server.object_info("SearchPriors_ModelScopeLoader")
    assert "tiny-t2v" in info["input"]["required"]["folder"][1]["options"]
    graph = {
        "1": {"class_type": "SearchPriors_ModelScopeLoader", "inputs": {"folder": "tiny-t2v", "dtype": "fp32"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a dog catches a frisbee"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": FRAMES}},
        "5": {"class_type": "SearchPriors_DiffusersSchedulerSigmas", "inputs": {"model": ["1", 0], "steps": 4}},
        "6": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "ddim"}},
        "7": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": True, "noise_seed": 0, "cfg": 7.5, "positive": ["2", 0],
            "negative": ["3", 0], "sampler": ["6", 0], "sigmas": ["5", 0], "latent_image": ["4", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    entry = comfy_server.run_prompt(graph, timeout=300)
    comfy_harness.assert_success(entry, "loader + core sampling")
    assert len(entry["outputs"]["9"]["images"]) == FRAMES  # frames as batch: one image per frame
