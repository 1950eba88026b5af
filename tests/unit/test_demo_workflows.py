"""make serve's demo variants of the DiT workflows (scripts/comfy_server.py demo_graph, install_demo_models;
scripts/demo_nodes.py's toy text encoder): demo files under demo names only, the bundled files untouched, sizes the
VAEs take, a note per variant that says what the model is."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

FILE_INPUTS = ("unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "ckpt_name")


def bundled_files(graph: dict) -> set[str]:
    return {v for node in graph.values() for k, v in node["inputs"].items() if k in FILE_INPUTS}


@pytest.mark.parametrize("name", sorted(harness.DEMO_USER_WORKFLOWS))
def test_a_demo_variant_names_only_demo_files_and_the_toy_world(name):
    bundled, model = harness.DEMO_USER_WORKFLOWS[name]
    path = harness.API_WORKFLOWS_DIR / f"{bundled}.json"
    before = path.read_text(encoding="utf-8")
    real = bundled_files(json.loads(before))
    graph = harness.demo_graph(harness.load_json(path), model)
    assert path.read_text(encoding="utf-8") == before   # the template keeps the real names
    kinds = {node["class_type"] for node in graph.values()}
    assert not kinds & {"CLIPLoader", "DualCLIPLoader"} and harness.DEMO_TEXT_NODE in kinds
    files = bundled_files(graph)
    assert files and all(f.startswith("searchpriors-demo-") for f in files), files
    assert not files & real
    assert ("random" in model) == all("-random-" in f for f in files)
    if model == "random_hunyuan15":   # ComfyUI builds this VAE at full size: the demo loader reads the file's widths
        assert harness.DEMO_VAE_NODE in kinds and "VAELoader" not in kinds
    ints = {node["_meta"]["title"]: node["inputs"]["value"] for node in graph.values()
            if node["class_type"] == "PrimitiveInt"}
    frames = [v for t, v in ints.items() if "rames" in t]
    step = 8 if model == "random_ltxv" else 4   # LTX-Video's VAE takes 8k+1 frames, Wan's and HunyuanVideo's 4k+1
    assert frames and all((f - 1) % step == 0 for f in frames), ints
    for node in graph.values():
        if node["class_type"] == "SearchPriors_MotionIndexLoader":
            assert node["inputs"]["index_name"] == harness.TOY_WORLD_INDEX_NAME
        if node["class_type"] == "PrimitiveStringMultiline":
            assert node["inputs"]["value"] == (harness.TOY_WAN_PROMPT if model == "toy_wan" else harness.TOY_PROMPT)


def test_each_variant_has_a_note_that_says_what_the_model_is(comfy_harness):
    notes = comfy_harness.load_by_path("searchpriors_workflow_notes",
                                       harness.REPO_ROOT / "scripts" / "workflow_notes.py").DEMO_NOTES
    assert set(notes) == set(harness.DEMO_USER_WORKFLOWS)
    for name, (bundled, model) in harness.DEMO_USER_WORKFLOWS.items():
        assert f"**{bundled}**" in notes[name]   # where the real workflow is
        assert ("the video is noise" in notes[name]) == model.startswith("random"), name
        prompt = harness.DEMO_SETTINGS[model].get("prompt", harness.TOY_PROMPT)
        assert f'"{prompt}"' in notes[name], name   # the note names the prompt the graph sends
    assert "Both experts are the Wan toy" in notes["toy_world_pos_wan22_a14b"]


def test_each_toy_world_workflow_has_a_note_naming_its_bundled_workflow(comfy_harness):
    notes = comfy_harness.load_by_path("searchpriors_workflow_notes",
                                       harness.REPO_ROOT / "scripts" / "workflow_notes.py").TOY_NOTES
    assert set(notes) == set(harness.TOY_USER_WORKFLOWS)
    for name, api_path in harness.TOY_USER_WORKFLOWS.items():
        assert f"**{api_path.stem}**" in notes[name], name
        assert "searchpriors-toy-t2v" in notes[name] and "searchpriors_toy_world" in notes[name]


def test_install_demo_models_links_the_wan_toy_under_demo_names(tmp_path):
    server = SimpleNamespace(models_dir=tmp_path / "models")
    for name in harness.DEMO_RANDOM_FILES:   # already written: no maker process is started
        (server.models_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (server.models_dir / name).write_bytes(b"x")
    stale = server.models_dir / "diffusion_models" / harness.DEMO_TOY_WAN_T2V
    stale.symlink_to(tmp_path / "elsewhere.safetensors")
    paths = harness.install_demo_models(server)
    assert len(paths) == 5 and all(p.name.startswith("searchpriors-demo-") for p in paths)
    for name, source in harness.DEMO_LINKS.items():
        assert (server.models_dir / name).resolve() == source.resolve() and source.is_file()


def test_the_demo_text_encoder_is_the_toy_clip_zero_padded(comfy_harness):
    pytest.importorskip("transformers")
    import torch

    nodes = comfy_harness.load_by_path("searchpriors_demo_nodes", harness.REPO_ROOT / "scripts" / "demo_nodes.py")
    folder = str(harness.TOY_T2V_DIR)
    wan = nodes.ToyTextEncoder(folder, "wan")
    (cond, extra), = wan.encode_from_tokens_scheduled(wan.tokenize("a red square moves to the left"))
    assert cond.shape == (1, 77, 4096) and "attention_mask" not in extra
    assert torch.count_nonzero(cond[..., 64:]) == 0 and torch.count_nonzero(cond[..., :64]) > 0
    (other, _), = wan.encode_from_tokens_scheduled(wan.tokenize("a blue circle moves up"))
    assert not torch.equal(cond, other)
    (again, _), = wan.encode_from_tokens_scheduled(wan.tokenize("a red square moves to the left"))
    assert torch.equal(cond, again)
    (ltxv, ltxv_extra), = nodes.ToyTextEncoder(folder, "ltxv").encode_from_tokens_scheduled("x")
    assert ltxv.shape == (1, 77, 4096) and ltxv_extra["attention_mask"].shape == (1, 77)
    (hunyuan, _), = nodes.ToyTextEncoder(folder, "hunyuan_video_15").encode_from_tokens_scheduled("x")
    assert hunyuan.shape == (1, 77, 3584)
    assert Path(folder, "text_encoder", "config.json").is_file()
