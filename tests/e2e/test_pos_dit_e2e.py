"""POS on Wan 2.2 A14B with both experts, end to end on a real server: the bundled workflow
(workflows/api/pos_wan22_a14b.json) through POST /prompt with tiny random models of ComfyUI's own classes put under
the file names ComfyUI's template uses (wan2.2_t2v_high/low_noise_14B_fp16.safetensors: two different tiny
WanModels; wan_2.1_vae.safetensors: a tiny WanVAE) and an index of real clips from ../shared/data: retrieve,
reference frames, VAE encode, DDIM inversion through both experts, mix, SplitSigmas at boundary_step, a hybrid
guider per expert over the whole schedule, two SamplerCustomAdvanced, VAE decode, Create Video + Save Video.

The text encoder is the one part that cannot be tiny: ComfyUI builds umT5-XXL from a fixed config (5.7 B
parameters) whatever the file holds. This module's server therefore gets a test-only node (written into its
custom_nodes, never part of the pack) that stands in for CLIPLoader: same inputs, and a CLIP whose encoding is a
fixed random [1, L, 4096] per text, the shape umT5-XXL gives Wan. Everything else is the workflow as shipped."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
API_DIR = REPO / "workflows" / "api"
FRAMES, SIZE, STEPS = 5, 64, 4
TEXT_ENCODER_NODE = "SearchPriorsTest_TinyUMT5Loader"

CUSTOM_NODE = '''
"""Test-only stand-in for CLIPLoader (umT5-XXL cannot be made tiny in ComfyUI): a fixed random encoding per text."""
import hashlib

import torch


class _TinyUMT5:
    def tokenize(self, text, **_):
        return text

    def encode_from_tokens_scheduled(self, tokens, **_):
        seed = int.from_bytes(hashlib.sha256(tokens.encode("utf-8")).digest()[:4], "little")
        length = 4 + len(tokens.split()) % 8
        cond = torch.randn(1, length, 4096, generator=torch.Generator().manual_seed(seed))
        return [[cond, {"pooled_output": None}]]


class TinyUMT5Loader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": ("STRING", {"default": ""}), "type": ("STRING", {"default": "wan"}),
                             "device": ("STRING", {"default": "default"})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, clip_name, type, device):
        return (_TinyUMT5(),)


NODE_CLASS_MAPPINGS = {"NODE_NAME": TinyUMT5Loader}
'''.replace("NODE_NAME", TEXT_ENCODER_NODE)

WRITE_MODELS = r'''
import importlib.util, sys
sys.path.insert(0, sys.argv[1])
import comfy.cli_args
comfy.cli_args.args.cpu = True
from safetensors.torch import save_file
spec = importlib.util.spec_from_file_location("tiny_models", sys.argv[2])
tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny)
models = sys.argv[3]
save_file(tiny.tiny_wan21_state_dict(seed=7), f"{models}/diffusion_models/wan2.2_t2v_high_noise_14B_fp16.safetensors")
save_file(tiny.tiny_wan21_state_dict(seed=0), f"{models}/diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors")
save_file(tiny.tiny_wan21_vae_state_dict(seed=0), f"{models}/vae/wan_2.1_vae.safetensors")
'''


def shared_videos() -> Path:
    root = os.environ.get("SEARCHPRIORS_SHARED_DATA") or str(REPO.parent / "shared" / "data")
    return Path(root) / "videos"


@pytest.fixture(scope="module")
def dit_server(tmp_path_factory, comfy_harness, unavailable):
    """A server of its own: the test-only text-encoder node in its custom_nodes, the tiny experts and VAE under
    the template's file names in its models folder, and the real-clip index."""
    comfyui_dir = comfy_harness.default_comfyui_dir()
    if not (comfyui_dir / "main.py").is_file():
        unavailable(f"no ComfyUI at {comfyui_dir}; run `make setup` or set COMFYUI_PATH")
    clips = comfy_harness.shared_clips(shared_videos())
    if not clips:
        pytest.skip(f"../shared/data/videos not found (looked at {shared_videos()}); set SEARCHPRIORS_SHARED_DATA")
    base = tmp_path_factory.mktemp("comfyui-dit")
    for sub in ("custom_nodes", "models/diffusion_models", "models/vae"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "searchpriors_test_text_encoder.py").write_text(CUSTOM_NODE, encoding="utf-8")
    subprocess.run([comfy_harness.default_python(), "-c", WRITE_MODELS, str(comfyui_dir),
                    str(REPO / "tests" / "tiny_models.py"), str(base / "models")], check=True, timeout=300,
                   capture_output=True)
    server = comfy_harness.ComfyServer(base)
    server.start()
    try:
        comfy_harness.install_clip_library(server, clips)
        comfy_harness.build_clip_index(server)
        yield server
    finally:
        server.stop()
        print(f"\nComfyUI log (dit_server): {server.log_path}")


def a14b_at_test_size(graph: dict) -> dict:
    values = {"Frames": FRAMES, "Width": SIZE, "Height": SIZE}
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "PrimitiveInt" and node["_meta"]["title"] in values:
            inputs["value"] = values[node["_meta"]["title"]]
        elif kind in ("BasicScheduler", "SearchPriors_DDIMVideoInvert"):
            inputs["steps"] = STEPS
        elif kind == "CLIPLoader":
            node["class_type"] = TEXT_ENCODER_NODE   # the same inputs: the template's clip_name stays
    return graph


def test_pos_wan22_a14b_workflow_runs_both_experts_end_to_end(dit_server, comfy_harness):
    graph = a14b_at_test_size(json.loads((API_DIR / "pos_wan22_a14b.json").read_text(encoding="utf-8")))
    entry = dit_server.run_prompt(graph, timeout=900)
    comfy_harness.assert_success(entry, "pos_wan22_a14b")

    decoded = comfy_harness.saved_video_frames(dit_server, entry, graph)
    assert len(decoded) == FRAMES and decoded[0].shape == (SIZE, SIZE, 3)
    by_title = {v["_meta"]["title"]: k for k, v in graph.items()}
    report = "\n".join(comfy_harness.history_texts(entry, by_title["Inversion report"]))
    # shift 8, 4 simple steps: sigmas 1, 0.96, 0.889, 0.727, 0 -> the high-noise expert starts steps 0..2
    assert "experts: boundary 0.875: high-noise expert for steps 0..2" in report, report
    assert "SplitSigmas step 3" in report and "model sampling differs" not in report, report
    assert dit_server.running
