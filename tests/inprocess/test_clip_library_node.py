"""Clip Library Builder in-process: the toy world's joined clips indexed with the toy captioner, then retrieved."""

from __future__ import annotations

import csv
import os

import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shot_clips():
    return harness.load_test_helper("shot_clips")


def run(node_cls, **inputs):
    out = node_cls.execute(**inputs)
    return out.args


@pytest.fixture(scope="module")
def toy_setup(comfy, pack_nodes):
    from comfyui_searchpriors.retrieval.captioner import write_toy_captioner

    shot_clips = _shot_clips()
    clips = comfy / "input" / "my_toy_clips"
    paths = shot_clips.toy_clip_paths(8, seed=12)   # joins all found (recall is measured in test_shots.py)
    shot_clips.concat_toy_clips(str(clips / "reel.mp4"), paths[:5])
    shot_clips.concat_toy_clips(str(clips / "more" / "reel2.mp4"), paths[5:])
    write_toy_captioner(str(comfy / "models" / "vlm" / "toy"))
    return clips, paths


def build(pack_nodes, **overrides):
    inputs = dict(clips_folder="my_toy_clips", index_name="toy_clips", captioner="toy", prompt="describe",
                  spacy_model="en_core_web_sm", sentence_model="all-MiniLM-L6-v2")
    inputs.update(overrides)
    return run(pack_nodes.ClipLibraryBuilder, **inputs)


def test_builder_indexes_every_shot_with_toy_captions_and_the_retriever_finds_them(toy_setup, pack_nodes, comfy):
    clips, paths = toy_setup
    assert "toy" in pack_nodes.ClipLibraryBuilder.define_schema().inputs[2].options
    index, library, report = build(pack_nodes)
    assert index.count == 8, report
    assert "2 clips (2 cut and captioned)" in report and "8 captioned shots" in report
    assert library == str(comfy / "models" / "motion_index" / "toy_clips" / "clip_library" / "library.csv")
    entries = index.entries(range(index.count))
    assert sorted(e.video_id for e in entries)[:2] == ["more/reel2.mp4#0.00-1.00", "more/reel2.mp4#1.00-2.00"]
    truth = {}   # the toy world's own colour and shape of each clip, in play order
    with open(os.path.join(TESTS, "..", "sample_data", "toy_world", "library.csv"), newline="") as fh:
        spec = {row["video"].split("/")[-1]: f"{row['colour']} {row['shape']}" for row in csv.DictReader(fh)}
    for name, part in (("reel.mp4", paths[:5]), ("more/reel2.mp4", paths[5:])):
        for k, clip in enumerate(part):
            truth[f"{name}#{k}.00-{k + 1}.00"] = spec[os.path.basename(clip)]
    assert sorted(truth) == sorted(e.video_id for e in entries)
    assert all(truth[e.video_id] in e.caption for e in entries), [(e.video_id, e.caption) for e in entries]
    (atomized, _units) = run(pack_nodes.PromptAtomizer, prompt=entries[0].caption, spacy_model="en_core_web_sm",
                             sentence_model="all-MiniLM-L6-v2")
    (result, best_video, _refs, _rep) = run(pack_nodes.MotionRetriever, atomized=atomized, index=index, mode="pos",
                                            top_k=3, t_total=0.3, t_mot=0.9, t_atr=0.4, alpha=1.0, beta=1.0,
                                            gamma=0.5, min_keep=10)
    assert result.best.caption == entries[0].caption and os.path.isfile(best_video)
    # a rerun is incremental: nothing to cut or caption
    _, _, again = build(pack_nodes)
    assert "0 cut and captioned, 2 unchanged" in again


@pytest.mark.parametrize("folder, message", [
    ("../elsewhere", "contains '..'"),
    ("/", "outside ComfyUI's input, output, user and models folders"),
    ("no_such_folder", "does not exist"),
])
def test_bad_clips_folders_are_refused_with_the_fix(toy_setup, pack_nodes, folder, message):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError, match=message):
        build(pack_nodes, clips_folder=folder, index_name="never")


def test_validate_names_an_empty_captioner_list(pack_nodes, comfy, monkeypatch):
    from comfyui_searchpriors.nodes.comfy_internals import glue as comfy_glue

    monkeypatch.setattr(comfy_glue, "captioner_choices", lambda: [])
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError, match="No captioner in models/vlm yet"):
        pack_nodes.ClipLibraryBuilder.validate_inputs(captioner=None)
