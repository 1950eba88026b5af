"""What `make run` and `make serve` set up for the toy world, on a real server: the trained toy model
(sample_data/models/searchpriors-toy-t2v) in the ModelScope loader's list, the world's index in the index
loader's, the bundled POS workflow set for them (scripts/comfy_server.py toy_world_graph) drawing the prompt's
colour and shape as the probe reads them, and the UI workflows `make serve` puts in the Workflows sidebar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def toy_world(comfy_server, comfy_harness):
    comfy_harness.install_toy_t2v(comfy_server)
    comfy_harness.build_toy_world_index(comfy_server)
    return comfy_server


def probe_module():
    return harness.load_by_path("searchpriors_toy_probe", REPO / "distill" / "toy_probe.py")


def options(server, node_class: str, name: str) -> list:
    spec = server.object_info(node_class)["input"]["required"][name]
    return spec[0] if isinstance(spec[0], list) else list(spec[1].get("options", []))


def test_the_server_lists_the_toy_model_and_the_world_index(toy_world, comfy_harness):
    assert comfy_harness.TOY_T2V_FOLDER in options(toy_world, "SearchPriors_ModelScopeLoader", "folder")
    assert comfy_harness.TOY_WORLD_INDEX_NAME in options(toy_world, "SearchPriors_MotionIndexLoader", "index_name")
    # a second call finds the library unchanged and its index there: nothing is rebuilt
    assert comfy_harness.build_toy_world_index(toy_world) is False


def test_base_and_pos_on_the_toy_model_draw_the_prompts_shape(toy_world, comfy_harness):
    probe = probe_module()
    pos = comfy_harness.toy_world_graph(comfy_harness.load_json(comfy_harness.POS_MODELSCOPE_WORKFLOW), steps=10)
    for what, graph in (("base", comfy_harness.base_sampling_graph(pos)), ("POS", pos)):
        entry = toy_world.run_prompt(graph, timeout=300)
        comfy_harness.assert_success(entry, f"toy world {what}")
        frames = comfy_harness.saved_video_frames(toy_world, entry, graph)
        assert len(frames) == 8 and frames[0].shape == (64, 64, 3), (what, len(frames), frames[0].shape)
        reading = probe.probe(probe.read_video_file(_saved_path(toy_world, entry, graph), size=64))
        assert (reading.colour, reading.shape) == ("red", "square"), (what, reading.label)
    info = "\n".join(comfy_harness.history_texts(entry, "32"))   # Reference frames info of pos_modelscope
    assert f"{comfy_harness.TOY_WORLD_INPUT_FOLDER}/videos/toy" in info, info


def _saved_path(server, entry, graph) -> Path:
    save = next(k for k, v in graph.items() if v["class_type"] == "SaveVideo")
    item = entry["outputs"][save]["images"][0]
    return server.output_dir / item.get("subfolder", "") / item["filename"]


def test_serve_writes_toy_world_ui_workflows(toy_world, comfy_harness):
    written = comfy_harness.write_toy_world_user_workflows(toy_world)
    assert [p.name for p in written] == ["toy_world_pos.json", "toy_world_search_then_tune.json",
                                         "toy_world_clips_pos.json"]
    listed = toy_world.get_json("/userdata?dir=workflows")
    for path in written:
        assert path.name in listed
        ui = json.loads(path.read_text(encoding="utf-8"))
        loaders = [n for n in ui["nodes"] if n["type"] == "SearchPriors_ModelScopeLoader"]
        assert loaders and loaders[0]["widgets_values"][:2] == [comfy_harness.TOY_T2V_FOLDER, "fp32"]
        index = [n for n in ui["nodes"] if n["type"] == "SearchPriors_MotionIndexLoader"]
        builder = [n for n in ui["nodes"] if n["type"] == "SearchPriors_ClipLibraryBuilder"]
        if builder:   # toy_world_clips_pos indexes the toy reels itself
            assert builder[0]["widgets_values"][:3] == [comfy_harness.TOY_CLIPS_INPUT_FOLDER,
                                                        comfy_harness.TOY_CLIPS_INDEX_NAME,
                                                        comfy_harness.TOY_CAPTIONER_FOLDER]
        else:
            assert index[0]["widgets_values"] == [comfy_harness.TOY_WORLD_INDEX_NAME]
        notes = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
        assert notes and notes[0]["widgets_values"][0].startswith("## Toy world: "), path.name
    # the bundled templates keep their defaults for the real ModelScope model
    bundled = comfy_harness.load_json(comfy_harness.POS_MODELSCOPE_WORKFLOW)
    assert bundled["24"]["inputs"]["folder"] == "text-to-video-ms-1.7b"
