"""Reference Video Frames through POST /prompt on the real server: frames saved by core SaveImage, the info
text, and bad inputs failing on the node while the server keeps serving."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

pytestmark = pytest.mark.e2e

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
clips = harness.load_test_helper("video_clips")


@pytest.fixture(scope="module")
def clip_folder(comfy_server):
    folder = comfy_server.input_dir / "e2e_refclips"
    folder.mkdir(parents=True, exist_ok=True)
    clips.write_clip(folder / "count.mp4", 30, fps=10)
    clips.write_audio_only(folder / "tone.mp4")
    return folder


def graph(video_path: str, prefix: str, frame_count: int = 5) -> dict:
    return {
        "1": {"class_type": "SearchPriors_ReferenceFrames",
              "inputs": {"frame_count": frame_count, "width": 64, "height": 32, "start_seconds": 0.5, "stride": 3,
                         "fps": 8.0, "crop": "center", "rank": 1, "video_path": video_path}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
    }


def test_frames_are_saved_and_described(comfy_server, comfy_harness, clip_folder):
    from PIL import Image

    entry = comfy_server.run_prompt(graph("e2e_refclips/count.mp4", "refframes"), timeout=300)
    comfy_harness.assert_success(entry, "reference frames")
    images = entry["outputs"]["2"]["images"]
    assert len(images) == 5
    picked = []
    for image in images:
        with Image.open(comfy_server.output_dir / image.get("subfolder", "") / image["filename"]) as png:
            assert png.size == (64, 32)
            picked.append(clips.frame_index(np.asarray(png.convert("RGB"))))
    assert picked == [5, 8, 11, 14, 17]
    info = "\n".join(comfy_harness.history_texts(entry, "3"))
    assert "count.mp4" in info and "source frames 5, 8, 11, 14, 17" in info, info


@pytest.mark.parametrize("video_path, frame_count, words", [
    ("../../etc/passwd", 5, ["contains '..'"]),
    ("e2e_refclips/tone.mp4", 5, ["no video stream", "audio"]),
    ("e2e_refclips/count.mp4", 20, ["too short", "frame_count 9 or less"]),
    ("e2e_refclips/none.mp4", 5, ["does not exist"]),
])
def test_bad_input_fails_on_the_node(comfy_server, comfy_harness, clip_folder, video_path, frame_count, words):
    entry = comfy_server.run_prompt(graph(video_path, "bad", frame_count), timeout=300)
    assert comfy_harness.history_status(entry) == "error"
    error = comfy_harness.history_error(entry)
    assert error["node_type"] == "SearchPriors_ReferenceFrames" and error["node_id"] == "1"
    for word in words:
        assert word in error["exception_message"], error["exception_message"]
    assert comfy_server.running


def test_bad_widget_is_refused_on_the_node(comfy_server, comfy_harness, clip_folder):
    """The validator names only frame_count, width and height (the memory budget, refused when queued: see
    test_a_request_beyond_the_memory_budget_is_refused_before_running), since ComfyUI files its message once
    per input it names; ComfyUI 0.3.75 does not check a V3 combo's value itself, so a crop mode that is not in
    the list (only a hand-edited API graph can hold one) is refused when the node runs, on the node."""
    bad = graph("e2e_refclips/count.mp4", "refused")
    bad["1"]["inputs"]["crop"] = "zoom"
    entry = comfy_server.run_prompt(bad, timeout=120)
    assert comfy_harness.history_status(entry) == "error"
    error = comfy_harness.history_error(entry)
    assert error["node_id"] == "1" and "Unknown crop mode 'zoom'" in error["exception_message"]
    assert comfy_server.running


def test_a_symbolic_link_out_of_the_input_folder_is_refused_on_the_node(comfy_server, comfy_harness, tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"not read")
    link = comfy_server.input_dir / "link_out.mp4"
    if not link.is_symlink():
        os.symlink(outside, link)
    graph = {"1": {"class_type": "SearchPriors_ReferenceFrames",
                   "inputs": {"frame_count": 2, "width": 64, "height": 64, "start_seconds": 0.0, "stride": 1,
                              "fps": 8.0, "crop": "center", "video_path": "link_out.mp4"}},
             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
    entry = comfy_server.run_prompt(graph, timeout=120)
    assert comfy_harness.history_status(entry) == "error"
    message = comfy_harness.history_error(entry)["exception_message"]
    assert "symbolic link" in message and "outside ComfyUI's input, output, user and models folders" in message


def test_a_request_beyond_the_memory_budget_is_refused_before_running(comfy_server):
    graph = {"1": {"class_type": "SearchPriors_ReferenceFrames",
                   "inputs": {"frame_count": 4096, "width": 8192, "height": 8192, "start_seconds": 0.0, "stride": 1,
                              "fps": 8.0, "crop": "center", "video_path": "x.mp4"}},
             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
    status, answer = comfy_server.post_json("/prompt", {"prompt": graph, "client_id": comfy_server.client_id})
    assert status == 400 and "4096 frames at 8192x8192 needs about" in json.dumps(answer), answer
    assert "SEARCHPRIORS_MAX_ALLOC_MB" in json.dumps(answer)
