"""Reusing a saved motion LoRA on a real server: the bundled motion_lora_apply workflow (API format) loads a
LoRA that Save Motion LoRA wrote (the harness tunes one for the tiny model through the server first), applies
it with Load Motion LoRA and samples with the one-node Hybrid Semantic Sampler, then VAE Decode, Create Video
and Save Video. The mp4 decodes to the requested frames and the schedule names the switch step; a LoRA that is
not there fails on Load Motion LoRA with the fix, and the server keeps serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "motion_lora_apply.json"
FRAMES, SIZE, STEPS = 4, 64, 4


def small_graph(comfy_harness, lora_name: str, gamma: float) -> dict:
    graph = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    graph = comfy_harness.motion_lora_apply_at_test_size(graph, lora_name, FRAMES, SIZE, STEPS)
    sampler = next(n for n in graph.values() if n["class_type"] == "SearchPriors_HybridSemanticSampler")
    sampler["inputs"]["gamma"] = gamma
    return graph


def test_saved_motion_lora_is_applied_and_sampled_into_a_video(comfy_server, comfy_harness, tiny_motion_lora):
    assert (comfy_server.models_dir / "loras" / tiny_motion_lora).is_file(), tiny_motion_lora
    graph = small_graph(comfy_harness, tiny_motion_lora, gamma=0.5)
    entry = comfy_server.run_prompt(graph, timeout=600)
    comfy_harness.assert_success(entry, "motion_lora_apply")

    decoded = comfy_harness.saved_video_frames(comfy_server, entry, graph)
    assert len(decoded) == FRAMES and decoded[0].shape == (SIZE, SIZE, 3)
    schedule_id = next(k for k, v in graph.items() if v["_meta"]["title"] == "Prompt schedule")
    schedule = "\n".join(comfy_harness.history_texts(entry, schedule_id))
    assert f"T = {STEPS} steps, switch step m = {STEPS // 2}" in schedule, schedule  # floor(4 * 0.5)
    assert schedule.count("rewritten") >= STEPS // 2, schedule


def test_missing_motion_lora_fails_on_its_node_and_the_server_keeps_serving(comfy_server, comfy_harness, tiny_t2v):
    graph = small_graph(comfy_harness, "motion_lora/not-there.safetensors", gamma=0.04)
    entry = comfy_server.run_prompt(graph, timeout=600)
    assert comfy_harness.history_status(entry) == "error"
    error = comfy_harness.history_error(entry)
    loader_id = next(k for k, v in graph.items() if v["class_type"] == "SearchPriors_LoadMotionLoRA")
    assert str(error.get("node_id")) == loader_id, error
    assert "No LoRA 'motion_lora/not-there.safetensors' in models/loras/" in error.get("exception_message", ""), error
    assert "Save Motion LoRA" in error["exception_message"]
    assert comfy_server.running


def test_saved_motion_lora_has_the_mode_of_comfys_outputs(comfy_server, tiny_motion_lora):
    import os
    import stat

    umask = os.umask(0o022)
    os.umask(umask)                      # the server inherited this process's umask
    path = comfy_server.models_dir / "loras" / tiny_motion_lora
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("strength, where", [(float("nan"), "node"), (1e30, "validation"),
                                             (float("inf"), "validation")])
def test_nan_and_huge_strengths_are_refused(comfy_server, comfy_harness, tiny_motion_lora, strength, where):
    """ComfyUI never refuses NaN (NaN < min is false) and skipped strength's range for a validate_inputs with
    **kwargs: strengths NaN, 1e30 and 1e309 decoded every frame black."""
    graph = small_graph(comfy_harness, tiny_motion_lora, gamma=0.5)
    loader_id = next(k for k, v in graph.items() if v["class_type"] == "SearchPriors_LoadMotionLoRA")
    graph[loader_id]["inputs"]["strength"] = strength
    if where == "validation":
        status, answer = comfy_server.post_json("/prompt", {"prompt": graph, "client_id": comfy_server.client_id})
        assert status == 400 and "bigger than max of 10" in json.dumps(answer), answer
    else:
        entry = comfy_server.run_prompt(graph, timeout=600)
        assert comfy_harness.history_status(entry) == "error"
        error = comfy_harness.history_error(entry)
        assert str(error.get("node_id")) == loader_id, error
        assert "strength is nan: NaN and infinity are not allowed" in error["exception_message"], error
    assert comfy_server.running
