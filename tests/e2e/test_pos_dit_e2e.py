"""POS on Wan 2.2 A14B with both experts, end to end on a real server: the bundled workflow
(workflows/api/pos_wan22_a14b.json) through POST /prompt with tiny random models of ComfyUI's own classes put under
the file names ComfyUI's template uses (wan2.2_t2v_high/low_noise_14B_fp16.safetensors: two different tiny
WanModels; wan_2.1_vae.safetensors: a tiny WanVAE) and the toy world's index: retrieve, reference frames, VAE
encode, DDIM inversion through both experts, mix, SplitSigmas at boundary_step, a hybrid guider per expert over the
whole schedule, two SamplerCustomAdvanced, VAE decode, Create Video + Save Video.

The one stand-in: CLIPLoader (ComfyUI builds umT5-XXL at 5.7 B parameters whatever the file holds) is replaced by
the test-only E2ETinyCLIPLoader (tests/e2e_text_node.py, in the session server's custom_nodes); the rest runs as
shipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]
API = TESTS.parent / "workflows" / "api" / "pos_wan22_a14b.json"
FRAMES, SIZE, STEPS = 5, 64, 4


@pytest.fixture(scope="module")
def dit_server(install_tiny_models, tests_module):
    """The session server with two different tiny Wan 2.1 experts and the tiny Wan VAE under the template's file
    names in its models folder, and the toy world's index."""
    tiny = tests_module("tiny_models")
    return install_tiny_models({
        "diffusion_models/wan2.2_t2v_high_noise_14B_fp16.safetensors": lambda: tiny.tiny_wan21_state_dict(seed=7),
        "diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors": lambda: tiny.tiny_wan21_state_dict(seed=0),
        "vae/wan_2.1_vae.safetensors": lambda: tiny.tiny_wan21_vae_state_dict(seed=0)})


def a14b_at_test_size(comfy_harness, text_node) -> dict:
    graph = text_node.tiny_text_graph(json.loads(API.read_text(encoding="utf-8")))
    return comfy_harness.dit_workflow_at_test_size(graph, {"Frames": FRAMES, "Width": SIZE, "Height": SIZE}, STEPS)


def test_pos_wan22_a14b_workflow_runs_both_experts_end_to_end(dit_server, comfy_harness, tests_module):
    graph = a14b_at_test_size(comfy_harness, tests_module("e2e_text_node"))
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
