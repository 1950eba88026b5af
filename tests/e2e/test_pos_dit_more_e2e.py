"""POS on HunyuanVideo 1.5 and on LTX-Video, end to end on a real server: the bundled workflows
(workflows/api/pos_hunyuan15.json, workflows/api/pos_ltxv.json) through POST /prompt with tiny random models of
ComfyUI's own classes under the file names ComfyUI's templates use, and the toy world's index: retrieve, reference
frames, VAE encode, DDIM inversion, mix, hybrid guider, SamplerCustomAdvanced, VAE decode, Create Video + Save Video.

- HunyuanVideo 1.5: hunyuanvideo1.5_720p_t2v_fp16.safetensors is a tiny HunyuanVideo (1.5: vision_in, byT5 mapper,
  cond-type embedding; UNETLoader, ModelSamplingSD3 shift 7 as shipped); hunyuanvideo15_vae_fp16.safetensors a tiny
  HunyuanVideo 1.5 VAE (ComfyUI's vae_refiner encoder/decoder, widths 8..64).
- LTX-Video: ltx-video-2b-v0.9.5.safetensors is a tiny checkpoint that CheckpointLoaderSimple loads as shipped (the
  LTXV transformer under model.diffusion_model., the LTXV VideoVAE under vae., its small config in the file's
  metadata as LTX-Video 0.9.5's own file carries its VAE config).

The stand-ins (tests/e2e_text_node.py, in the session server's custom_nodes): DualCLIPLoader (Qwen2.5-VL 7B + byT5)
-> E2ETinyDualCLIPLoader and CLIPLoader (T5-XXL) -> E2ETinyCLIPLoader, because ComfyUI builds those encoders at full
size whatever the file holds; VAELoader -> SearchPriorsDemo_VAELoader (make serve's demo VAE loader,
scripts/demo_nodes.py, in the same servers) for HunyuanVideo 1.5, because comfy/sd.py builds that VAE at fixed widths
(1.26 B parameters) whatever the file holds (the stand-in is VAELoader with the file's widths). The rest runs as
shipped, at 64 x 64 and a few steps."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]
API = TESTS.parent / "workflows" / "api"
SIZE, STEPS = 64, 3
FRAMES = {"pos_hunyuan15": 5, "pos_ltxv": 9}   # 4k+1 (HunyuanVideo 1.5 VAE), 8k+1 (LTXV VAE)
LATENT = {"pos_hunyuan15": [1, 32, 2, 4, 4], "pos_ltxv": [1, 128, 2, 2, 2]}   # 1/16 and 1/32 of the size


@pytest.fixture(scope="module")
def dit_server(install_tiny_models, tests_module):
    """The session server with the tiny HunyuanVideo 1.5, its VAE and the tiny LTX-Video checkpoint under the
    templates' file names in its models folder, and the toy world's index."""
    tiny = tests_module("tiny_models")
    return install_tiny_models({
        "diffusion_models/hunyuanvideo1.5_720p_t2v_fp16.safetensors": lambda: tiny.tiny_hunyuan15_state_dict(seed=0),
        "vae/hunyuanvideo15_vae_fp16.safetensors": lambda: tiny.tiny_hunyuan15_vae_state_dict(seed=0),
        "checkpoints/ltx-video-2b-v0.9.5.safetensors": lambda: tiny.tiny_ltxv_checkpoint(seed=0)})


def at_test_size(comfy_harness, nodes, name: str) -> dict:
    """The bundled workflow with the stand-ins, the toy world's prompt and index, 64 x 64, FRAMES and STEPS."""
    graph = nodes.tiny_vae_graph(nodes.tiny_text_graph(json.loads((API / f"{name}.json").read_text(encoding="utf-8"))))
    return comfy_harness.dit_workflow_at_test_size(graph, {"Frames": FRAMES[name], "Width": SIZE, "Height": SIZE},
                                                   STEPS)


@pytest.mark.parametrize("name", ["pos_hunyuan15", "pos_ltxv"])
def test_pos_dit_workflow_runs_end_to_end(dit_server, comfy_harness, tests_module, name):
    graph = at_test_size(comfy_harness, tests_module("e2e_text_node"), name)
    kinds = {node["class_type"] for node in graph.values()}
    assert not kinds & {"CLIPLoader", "DualCLIPLoader", "VAELoader"}, kinds   # only the stand-ins were swapped in
    entry = dit_server.run_prompt(graph, timeout=900)
    comfy_harness.assert_success(entry, name)

    decoded = comfy_harness.saved_video_frames(dit_server, entry, graph)
    assert len(decoded) == FRAMES[name] and decoded[0].shape == (SIZE, SIZE, 3)
    by_title = {v["_meta"]["title"]: k for k, v in graph.items()}
    report = "\n".join(comfy_harness.history_texts(entry, by_title["Inversion report"]))
    assert f"latent {LATENT[name]}; SIGMAS input, {STEPS} steps" in report, report
    stats = re.search(r"inverted noise: mean ([-+0-9.eE]+|[-+]?nan), std ([-+0-9.eE]+|nan)", report)
    assert stats and all(math.isfinite(float(v)) for v in stats.groups()), report
    if name == "pos_hunyuan15":   # ModelSamplingSD3 shift 7, as shipped
        assert "flow shift is 7" in report, report
    assert dit_server.running
