"""Search-then-tune on Wan end to end on a real server: the bundled search_then_tune_wan21 workflow (API format)
through POST /prompt with a tiny random Wan 2.1 and Wan 2.1 VAE of ComfyUI's own classes under the file names
ComfyUI's Wan 2.1 template uses, the tiny random GroundingDINO and the toy world's index: retrieve
(search_t2v), reference frames, 4k+1 keyframes, Encode Keyframes with the Wan VAE, VMC on Wan's self-attention,
Save Motion LoRA, sampling with the tuned MODEL (core KSampler), VAE Decode, Create Video + Save Video.

The one stand-in: CLIPLoader (ComfyUI builds umT5-XXL at 5.7 B parameters whatever the file holds) is replaced by
the test-only E2ETinyCLIPLoader (tests/e2e_text_node.py); the rest runs as shipped. A keyframe count that does not fit
Wan's VAE (8) is refused by Encode Keyframes with the counts that fit, and the server keeps running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]
API = TESTS.parent / "workflows" / "api" / "search_then_tune_wan21.json"
FRAMES, SIZE, TUNE_STEPS, SAMPLE_STEPS = 9, 64, 3, 3
TEMPLATE_FILES = {"wan2.1_t2v_1.3B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                  "wan_2.1_vae.safetensors"}


@pytest.fixture(scope="module")
def tiny_wan_files(install_tiny_models, tests_module):
    """The tiny Wan 2.1 and its VAE under the template's names in the server's models folders."""
    tiny = tests_module("tiny_models")
    return install_tiny_models({
        "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors": lambda: tiny.tiny_wan21_state_dict(0),
        "vae/wan_2.1_vae.safetensors": lambda: tiny.tiny_wan21_vae_state_dict(0)})


def graph_at_test_size(comfy_harness, text_node, keyframes: int = FRAMES) -> dict:
    graph = text_node.tiny_text_graph(json.loads(API.read_text(encoding="utf-8")))
    ints = {"Reference frames": FRAMES, "Width": SIZE, "Height": SIZE, "Keyframes (4k+1 for Wan's VAE)": keyframes}
    comfy_harness.dit_workflow_at_test_size(graph, ints, SAMPLE_STEPS, prompt="a red circle moves to the left")
    for node in graph.values():
        if node["class_type"] == "SearchPriors_KeyframeExtractor":
            node["inputs"]["detector"] = comfy_harness.TINY_GROUNDING_DINO_FOLDER
        elif node["class_type"] == "SearchPriors_VMCTemporalLoRA":
            node["inputs"].update(steps=TUNE_STEPS, rank=4)
    return graph


def test_workflow_names_the_template_files_and_fits_the_server(comfy_server):
    graph = json.loads(API.read_text(encoding="utf-8"))
    files = {v for node in graph.values() for k, v in node["inputs"].items()
             if k in ("unet_name", "clip_name", "vae_name")}
    assert files == TEMPLATE_FILES
    info = comfy_server.object_info()
    for node_id, node in graph.items():
        spec = info[node["class_type"]]["input"]
        known = {**spec.get("required", {}), **spec.get("optional", {})}
        assert set(spec.get("required", {})) <= set(node["inputs"]), node_id
        assert set(node["inputs"]) <= set(known), node_id
    keyframes = next(n for n in graph.values() if n["_meta"]["title"].startswith("Keyframes"))["inputs"]["value"]
    assert (keyframes - 1) % 4 == 0, "Wan's VAE takes 4k+1 frames"


def test_search_then_tune_on_wan_runs_end_to_end(tiny_wan_files, comfy_harness, tiny_grounding_dino, tests_module):
    server = tiny_wan_files
    graph = graph_at_test_size(comfy_harness, tests_module("e2e_text_node"))
    entry = server.run_prompt(graph, timeout=900)
    comfy_harness.assert_success(entry, "search_then_tune_wan21")
    assert len(comfy_harness.saved_video_frames(server, entry, graph)) == FRAMES
    by_title = {v["_meta"]["title"]: k for k, v in graph.items()}
    report = "\n".join(comfy_harness.history_texts(entry, by_title["VMC report"]))
    assert f"{TUNE_STEPS} of {TUNE_STEPS} steps" in report, report
    lora_name = "\n".join(comfy_harness.history_texts(entry, by_title["Saved motion LoRA"])).strip()
    assert lora_name.startswith("motion_lora/search_then_tune_wan21"), lora_name
    import safetensors

    with safetensors.safe_open(str(server.models_dir / "loras" / lora_name), "pt") as f:
        keys = set(f.keys())
        assert f.metadata()["searchpriors.family"] == "wan"
    assert "diffusion_model.blocks.0.self_attn.q.lora_up.weight" in keys
    assert entry["outputs"].get(by_title["VMC loss curve"], {}).get("images")


def test_a_keyframe_count_that_wans_vae_would_cut_is_refused(tiny_wan_files, comfy_harness, tiny_grounding_dino,
                                                              tests_module):
    server = tiny_wan_files
    graph = graph_at_test_size(comfy_harness, tests_module("e2e_text_node"), keyframes=8)
    entry = server.run_prompt(graph, timeout=900)
    error = comfy_harness.execution_error(entry) if hasattr(comfy_harness, "execution_error") else None
    messages = json.dumps(entry.get("status", {}).get("messages", []))
    assert entry["status"]["status_str"] == "error"
    assert "8 keyframes do not fit" in messages and "5, 9" in messages, error or messages
    assert server.running
