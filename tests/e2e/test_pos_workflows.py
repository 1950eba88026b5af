"""POS end to end on a real server. The bundled ModelScope/ZeroScope workflow (API format) runs through
POST /prompt with the tiny random model and an index of real clips from ../shared/data: retrieve (pos),
reference frames, VAE encode, invert, mix, hybrid sampling, VAE decode, Create Video + Save Video; the saved
mp4 decodes to the requested frames. The Wan 2.1 workflow's model files cannot be had here, so it is checked
against /object_info (every node, input and option known to the server) instead of run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

API_DIR = Path(__file__).resolve().parents[2] / "workflows" / "api"
FRAMES, SIZE, STEPS = 4, 64, 4
# Dropdowns filled from disk: model files a user downloads (README), the index they build, their LLM folder.
# The server here has none of them, so their values are not checked against its (empty) lists.
MODEL_FILE_INPUTS = {"unet_name", "clip_name", "vae_name", "index_name", "local_model"}


def load(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text(encoding="utf-8"))


def test_pos_modelscope_workflow_makes_a_video(comfy_server, comfy_harness, tiny_t2v, clip_index):
    graph = comfy_harness.pos_at_test_size(load("pos_modelscope"), FRAMES, SIZE, STEPS)
    entry = comfy_server.run_prompt(graph, timeout=900)
    comfy_harness.assert_success(entry, "pos_modelscope")

    decoded = comfy_harness.saved_video_frames(comfy_server, entry, graph)
    assert len(decoded) == FRAMES
    assert decoded[0].shape == (SIZE, SIZE, 3)

    # The retrieval table shows a real clip's caption; the inversion and mix reports reach their previews.
    by_title = {v["_meta"]["title"]: k for k, v in graph.items()}
    table = "\n".join(comfy_harness.history_texts(entry, by_title["Retrieval table"]))
    assert any(caption in table for _, caption in clip_index), table
    inversion = "\n".join(comfy_harness.history_texts(entry, by_title["Inversion report"]))
    assert "residual" in inversion.lower() or "sigma" in inversion.lower(), inversion
    frames_info = "\n".join(comfy_harness.history_texts(entry, by_title["Reference frames info"]))
    assert ".mp4" in frames_info, frames_info
    assert comfy_server.running


def test_pos_wan_workflow_matches_the_server(comfy_server):
    graph = load("pos_wan21")
    info = comfy_server.object_info()
    for node_id, node in graph.items():
        kind = node["class_type"]
        assert kind in info, f"node {node_id}: {kind} is not known to the server"
        spec = info[kind]["input"]
        required, optional = spec.get("required", {}), spec.get("optional", {})
        for name in required:
            assert name in node["inputs"], f"node {node_id} ({kind}) lacks required input {name}"
        for name, value in node["inputs"].items():
            assert name in required or name in optional, f"node {node_id} ({kind}): unknown input {name}"
            declared = (required.get(name) or optional.get(name))
            if isinstance(value, list) or name in MODEL_FILE_INPUTS:
                continue
            options = declared[1].get("options") if len(declared) > 1 and isinstance(declared[1], dict) else None
            if isinstance(declared[0], list):
                options = declared[0]
            if options is not None:
                assert value in options, f"node {node_id} ({kind}): {name}={value!r} not in {options}"


def test_pos_rerun_with_another_seed_reuses_the_cached_inversion(comfy_server, comfy_harness, tiny_t2v, clip_index):
    """ComfyUI caches node outputs: a second run that changes only the mix (seed, eta) and the guider (gamma)
    takes the inversion from the cache, so trying seeds costs what plain sampling does."""
    graph = comfy_harness.pos_at_test_size(load("pos_modelscope"), FRAMES, SIZE, STEPS)
    first = comfy_server.run_prompt(graph, timeout=900)
    comfy_harness.assert_success(first, "pos_modelscope (first run)")
    by_type = {v["class_type"]: k for k, v in graph.items()}
    graph[by_type["SearchPriors_GaussianNoiseMix"]]["inputs"].update(seed=7, eta=0.5)
    graph[by_type["SearchPriors_HybridSemanticGuider"]]["inputs"]["gamma"] = 0.5
    second = comfy_server.run_prompt(graph, timeout=900)
    comfy_harness.assert_success(second, "pos_modelscope (second run)")
    cached = {str(n) for kind, body in second["status"]["messages"] if kind == "execution_cached"
              for n in body.get("nodes", [])}
    invert, mix = by_type["SearchPriors_DDIMVideoInvert"], by_type["SearchPriors_GaussianNoiseMix"]
    assert invert in cached and by_type["VAEEncode"] in cached, cached
    assert mix not in cached and by_type["SamplerCustomAdvanced"] not in cached, cached
    assert len(comfy_harness.saved_video_frames(comfy_server, second, graph)) == FRAMES
