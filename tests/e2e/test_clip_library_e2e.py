"""The clip library workflow on a real server: the toy world's reels cut, captioned by the toy captioner and
indexed by Clip Library Builder, then POS from the nearest shot (clip_library_pos set for the toy model, as
`make serve` sets it in toy_world_clips_pos); a second run is cached (the folder did not change)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def toy_clips(comfy_server, comfy_harness, toy_clip_reels):
    comfy_harness.install_toy_t2v(comfy_server)
    return comfy_server


def test_index_my_clips_then_pos_on_the_toy_reels(toy_clips, comfy_harness):
    graph = comfy_harness.toy_clips_graph(comfy_harness.load_json(comfy_harness.CLIP_LIBRARY_POS_WORKFLOW), steps=4)
    # an index of its own: the browser test may have indexed the same reels in this server already
    builders = [n for n in graph.values() if n["class_type"] == "SearchPriors_ClipLibraryBuilder"]
    assert len(builders) == 1
    builders[0]["inputs"]["index_name"] = "e2e_clip_library_first_run"
    entry = toy_clips.run_prompt(graph, timeout=400)
    comfy_harness.assert_success(entry, "clip library POS on the toy reels")
    shots = sum(comfy_harness.TOY_REELS.values())
    report = "\n".join(comfy_harness.history_texts(entry, "36"))
    assert f"{len(comfy_harness.TOY_REELS)} clips ({len(comfy_harness.TOY_REELS)} cut and captioned" in report, report
    assert f"{shots} captioned shots in the library" in report, report
    # the prompt's pair (a red square moving left) is the first shot of reel_a: it is the reference
    info = "\n".join(comfy_harness.history_texts(entry, "32"))
    assert f"{comfy_harness.TOY_CLIPS_INPUT_FOLDER}/reel_a.mp4" in info, info
    frames = comfy_harness.saved_video_frames(toy_clips, entry, graph)
    assert len(frames) == 8 and frames[0].shape == (64, 64, 3)
    again = toy_clips.run_prompt(graph, timeout=300)
    comfy_harness.assert_success(again, "the same graph again")
    cached = {str(n) for kind, body in again["status"]["messages"] if kind == "execution_cached"
              for n in body.get("nodes", [])}
    assert {"3", "15"} <= cached, cached   # the builder and the inversion: the folder did not change
