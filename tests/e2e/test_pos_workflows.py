"""POS end to end on a real server. The bundled ModelScope/ZeroScope workflow (API format) runs through
POST /prompt with the tiny random model and an index of real clips from ../shared/data: retrieve (pos),
reference frames, VAE encode, invert, mix, hybrid sampling, VAE decode, Create Video + Save Video; the saved
mp4 decodes to the requested frames. The DiT workflows (Wan 2.1, Wan 2.2 A14B with both experts, HunyuanVideo 1.5,
LTX-Video) are checked against /object_info (every node, input and option known to the server) and name their model
files as ComfyUI's own templates do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

API_DIR = Path(__file__).resolve().parents[2] / "workflows" / "api"
FRAMES, SIZE, STEPS = 4, 64, 4
# Dropdowns filled from disk: model files a user downloads (README), the index they build, their LLM folder.
# The server here has none of them, so their values are not checked against its (empty) lists.
MODEL_FILE_INPUTS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "ckpt_name", "index_name",
                     "local_model"}


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


@pytest.mark.parametrize("name", ["pos_wan21", "pos_wan22_a14b", "pos_hunyuan15", "pos_ltxv"])
def test_pos_dit_workflow_matches_the_server(comfy_server, name):
    graph = load(name)
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


# The model files each DiT workflow names, as ComfyUI's own templates name them (Wan 2.2 14B T2V, HunyuanVideo 1.5
# 720p T2V, LTX-Video 2B 0.9.5): a user who has the template's files has this workflow's.
TEMPLATE_FILES = {
    "pos_wan22_a14b": {"wan2.2_t2v_high_noise_14B_fp16.safetensors", "wan2.2_t2v_low_noise_14B_fp16.safetensors",
                       "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors"},
    "pos_hunyuan15": {"hunyuanvideo1.5_720p_t2v_fp16.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                      "byt5_small_glyphxl_fp16.safetensors", "hunyuanvideo15_vae_fp16.safetensors"},
    "pos_ltxv": {"ltx-video-2b-v0.9.5.safetensors", "t5xxl_fp16.safetensors"},
}


@pytest.mark.parametrize("name", sorted(TEMPLATE_FILES))
def test_dit_workflows_name_the_templates_model_files(name):
    graph = load(name)
    files = {value for node in graph.values() for key, value in node["inputs"].items()
             if key in {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "ckpt_name"}}
    assert files == TEMPLATE_FILES[name]


def test_a14b_workflow_wires_both_experts_and_the_whole_schedule():
    """Inversion through both experts; SplitSigmas at the node's boundary_step; each stage's hybrid guider counts
    the switch over the whole schedule (full_sigmas); the second stage continues the first without noise."""
    graph = load("pos_wan22_a14b")
    by_type: dict = {}
    for node_id, node in graph.items():
        by_type.setdefault(node["class_type"], []).append(node_id)
    (invert,) = by_type["SearchPriors_DDIMVideoInvert"]
    (split,) = by_type["SplitSigmas"]
    (scheduler,) = by_type["BasicScheduler"]
    assert graph[invert]["inputs"]["high_noise_model"] and graph[invert]["inputs"]["boundary"] == 0.875
    assert graph[split]["inputs"]["step"] == [invert, 2]
    guiders = by_type["SearchPriors_HybridSemanticGuider"]
    assert len(guiders) == 2 and all(graph[g]["inputs"]["full_sigmas"] == [scheduler, 0] for g in guiders)
    first, second = sorted(by_type["SamplerCustomAdvanced"], key=lambda n: graph[n]["inputs"]["sigmas"][1])
    assert graph[first]["inputs"]["sigmas"] == [split, 0] and graph[second]["inputs"]["sigmas"] == [split, 1]
    assert graph[second]["inputs"]["latent_image"] == [first, 0]
    assert graph[graph[second]["inputs"]["noise"][0]]["class_type"] == "DisableNoise"

    def unet_of(sampler_id):   # sampler -> guider -> ModelSamplingSD3 -> UNETLoader
        guider = graph[graph[sampler_id]["inputs"]["guider"][0]]
        return graph[graph[guider["inputs"]["model"][0]]["inputs"]["model"][0]]["inputs"]["unet_name"]

    assert unet_of(first) == "wan2.2_t2v_high_noise_14B_fp16.safetensors"
    assert unet_of(second) == "wan2.2_t2v_low_noise_14B_fp16.safetensors"
