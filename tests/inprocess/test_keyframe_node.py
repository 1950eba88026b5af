"""Keyframe Extractor called in-process with ComfyUI's modules: schema, validation and fingerprint contracts,
the tiny GroundingDINO loaded from models/grounding-dino/ through ComfyUI's memory manager, a moving square
followed by a stub detector, bad input, Cancel."""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import torch

from comfyui_searchpriors.retrieval.errors import SearchPriorsError

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _helper(name):
    return harness.load_test_helper(name)


tiny_gd = _helper("tiny_grounding_dino")
WIDGETS = dict(keyframe_count=4, width=32, height=32, box_threshold=0.35, text_threshold=0.25, keep_together=True,
               full_frame_above=0.9)


@pytest.fixture(scope="module")
def node(pack_nodes):
    from comfyui_searchpriors.nodes.keyframe_nodes import KeyframeExtractor

    return KeyframeExtractor


@pytest.fixture(scope="module")
def detector(comfy, node):
    """The tiny GroundingDINO in models/grounding-dino/tiny (ComfyUI's models folder of the tests)."""
    torch.set_num_threads(1)
    from comfyui_searchpriors.nodes import keyframe_nodes

    root = keyframe_nodes.detector_roots()[0]
    os.makedirs(root, exist_ok=True)
    tiny_gd.save_tiny_grounding_dino(os.path.join(root, "tiny"))
    return "tiny"


def basis(i, d=8):
    v = np.zeros(d, np.float32)
    v[i] = 1.0
    return v


def role_vectors(*units):
    return np.stack([np.stack([basis(i) if i is not None else np.zeros(8, np.float32) for i in u]) for u in units])


def atomized_prompt():
    """An ATOMIZED_PROMPT of "a boy rides a bicycle" with hand-made orthonormal role vectors."""
    from comfyui_searchpriors.retrieval.atomizer import Unit
    from comfyui_searchpriors.retrieval.embedding import AtomizedPrompt

    return AtomizedPrompt(text="a boy rides a bicycle", units=[Unit("ride", "boy", "bicycle")], core_index=0,
                          v_total=basis(7), unit_vectors=role_vectors((0, 1, 2)), sentence_model="test/8",
                          spacy_model="test")


def retrieval_of(*entries, video_path=None):
    """A RETRIEVAL as MotionRetriever returns it; each entry (caption, units, vectors)."""
    from comfyui_searchpriors.retrieval.search import Hit, Retrieval, SearchParams

    hits = [Hit(rank=r, row=r - 1, video_id=f"v{r}", caption=caption, video_path=video_path, score=1.0 / r,
                parts={"cosine": 1.0 / r}, units=units, unit_vectors=vectors)
            for r, (caption, units, vectors) in enumerate(entries, 1)]
    return Retrieval(prompt="a boy rides a bicycle", mode="search_t2v", params=SearchParams(), hits=hits,
                     index_count=len(hits), index_name="test")


def man_on_bike():
    from comfyui_searchpriors.retrieval.atomizer import Unit

    return ("a man rides a bike and a dog barks", [Unit("ride", "man", "bike"), Unit("bark", "dog", None)],
            role_vectors((0, 3, 2), (4, 5, None)))


SQUARE = 8


def square_frames(num=12, h=48, w=64):
    """A white square on grey, visible in frames 3..8 and moving right 4 px a frame."""
    frames = torch.full((num, h, w, 3), 0.1)
    for f in range(3, min(9, num)):
        x = 4 + 4 * (f - 3)
        frames[f, 20:20 + SQUARE, x:x + SQUARE] = 0.95
    return frames


class BrightBoxDetector:
    def __init__(self):
        self.captions = None

    def detect(self, images, captions, box_threshold, text_threshold):
        self.captions = list(captions)
        out = []
        for img in images:
            ys, xs = torch.nonzero(img.mean(-1) > 0.5, as_tuple=True)
            if len(xs) == 0:
                out.append((np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)))
            else:
                box = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
                out.append((np.array([box], float), np.array([0.8]), np.array([0])))
        return out


# ------------------------------------------------------------------------------------------------- tests

def test_schema_sockets_in_order(node):
    schema = node.define_schema()
    assert schema.node_id == "SearchPriors_KeyframeExtractor" and schema.category == "SearchPriors/search_t2v"
    assert schema.display_name == "Keyframe Extractor (Search-T2V)"
    assert [i.id for i in schema.inputs] == ["atomized", "retrieval", "frames", "detector", "keyframe_count", "width",
                                             "height", "box_threshold", "text_threshold", "keep_together",
                                             "full_frame_above", "rank", "search_whole_clip", "scan_fps"]
    assert [bool(getattr(i, "optional", False)) for i in schema.inputs] == [False] * 11 + [True] * 3
    assert [o.id for o in schema.outputs] == ["keyframes", "preview", "segment"]


def test_validate_inputs_names_only_the_detector_so_its_message_shows_once(node, monkeypatch):
    """ComfyUI files a validator's message once per input the validator names, and range-checks the number
    widgets itself when they are not named: so only the detector is named, and execute checks the numbers."""
    import inspect

    from comfyui_searchpriors.nodes import keyframe_nodes

    assert list(inspect.signature(node.validate_inputs).parameters) == ["detector"]
    assert "put a GroundingDINO folder in models/grounding-dino/" in node.validate_inputs(detector="")
    assert "pick one from the list" in node.validate_inputs(detector="../etc")
    assert "No detector 'absent'" in node.validate_inputs(detector="absent")
    monkeypatch.setattr(keyframe_nodes, "detector_choices", lambda: [])
    with pytest.raises(SearchPriorsError, match="put a GroundingDINO folder in models/grounding-dino/"):
        node.validate_inputs()   # an empty list sends no value: raised, so that the message is what shows
    for name, value, words in (("keyframe_count", 0, "keyframe_count is 0, below its minimum of 1"),
                               ("full_frame_above", 1.5, "full_frame_above is 1.5, above its maximum of 1"),
                               ("box_threshold", float("nan"), "box_threshold is nan")):
        with pytest.raises(SearchPriorsError, match=words):
            node.execute(atomized=None, retrieval=None, frames=None, detector="x", **{**WIDGETS, name: value})


def test_detector_listed_validated_and_fingerprinted(node, detector):
    from comfyui_searchpriors.nodes.keyframe_nodes import detector_choices

    assert detector in detector_choices()
    assert node.validate_inputs(detector=detector) is True
    first = node.fingerprint_inputs(detector=detector)
    assert first == node.fingerprint_inputs(detector=detector, rank=2)
    assert math.isnan(node.fingerprint_inputs(detector="absent"))
    assert math.isnan(node.fingerprint_inputs())


def test_tiny_grounding_dino_through_the_node(node, detector):
    import comfy.model_management as mm
    from comfyui_searchpriors.nodes import keyframe_nodes

    torch.manual_seed(0)
    frames = torch.rand(6, 40, 48, 3)
    keyframes, preview, segment = node.execute(atomized_prompt(), retrieval_of(man_on_bike()), frames, detector,
                                               **{**WIDGETS, "box_threshold": 0.0, "text_threshold": 0.0}).args
    assert keyframes.shape == (4, 32, 32, 3) and keyframes.dtype == torch.float32
    assert preview.ndim == 4 and preview.shape[0] == 1 and preview.shape[-1] == 3
    assert "captions from matched units of the entry: man . bike ." in segment
    assert "matched: entry [man -ride-> bike] ~ prompt [boy -ride-> bicycle] (similarity 2.000)" in segment
    # every sampled frame has boxes at threshold 0, so the segment is the whole clip
    assert "segment: frames 0-5 of 6" in segment and "keyframes: frames 0, 2, 3, 5" in segment
    # loaded once, held by ComfyUI's memory manager
    (patcher, _, kind), = keyframe_nodes._LOADED.values()
    assert kind == "transformers" and any(m.model is patcher for m in mm.current_loaded_models)
    node.execute(atomized_prompt(), retrieval_of(man_on_bike()), frames, detector, **WIDGETS)
    assert next(iter(keyframe_nodes._LOADED.values()))[0] is patcher


def test_moving_square_with_a_stub_detector(node, monkeypatch):
    from comfyui_searchpriors.nodes import keyframe_nodes

    stub = BrightBoxDetector()
    monkeypatch.setattr(keyframe_nodes, "load_detector", lambda path: stub)
    monkeypatch.setattr(keyframe_nodes, "detector_path", lambda name: name)
    frames = square_frames()
    keyframes, preview, segment = node.execute(atomized_prompt(), retrieval_of(man_on_bike()), frames, "stub",
                                               **WIDGETS).args
    assert stub.captions == ["man", "bike"]
    assert "segment: frames 3-8 of 12" in segment and "keyframes: frames 3, 5, 6, 8" in segment
    centres = [torch.nonzero(k.mean(-1) > 0.5)[:, 1].float().mean().item() for k in keyframes]
    assert centres == sorted(centres) and centres[-1] - centres[0] > 8      # the crop follows the square
    # the region: union x 4-32, y 20-28; 10% margin: 33.6x9.6; squared: 34x34 around (18, 24)
    assert "region: x 1-35, y 7-41 (34x34 of 64x48, key region)" in segment
    # nothing in the frames: evenly spaced full frames and a warning
    _, _, empty = node.execute(atomized_prompt(), retrieval_of(man_on_bike()), torch.zeros(12, 48, 64, 3), "stub",
                               **WIDGETS).args
    assert "warning: nothing detected ('man', 'bike')" in empty and "keyframes: frames 0, 4, 7, 11" in empty


def test_bad_input_messages(node, monkeypatch):
    from comfyui_searchpriors.nodes import keyframe_nodes
    from comfyui_searchpriors.retrieval.atomizer import Unit
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    monkeypatch.setattr(keyframe_nodes, "load_detector", lambda path: BrightBoxDetector())
    monkeypatch.setattr(keyframe_nodes, "detector_path", lambda name: name)
    retrieval = retrieval_of(man_on_bike())
    with pytest.raises(SearchPriorsError, match="gives 3 frames but 4 keyframes.*frame_count"):
        node.execute(atomized_prompt(), retrieval, square_frames(3), "stub", **WIDGETS)
    with pytest.raises(SearchPriorsError, match="rank 2 is out of range: the retrieval has 1 entries"):
        node.execute(atomized_prompt(), retrieval, square_frames(), "stub", **WIDGETS, rank=2)
    with pytest.raises(SearchPriorsError, match=r"IMAGE batch \[frames, height, width, 3\]"):
        node.execute(atomized_prompt(), retrieval, torch.zeros(4, 8, 8), "stub", **WIDGETS)
    # no matched units: the prompt's own nouns, with a warning
    unrelated = ("a cat sits on a mat", [Unit("sit", "cat", "mat")], role_vectors((5, 6, 7)))
    _, _, text = node.execute(atomized_prompt(), retrieval_of(unrelated), square_frames(), "stub", **WIDGETS).args
    assert "captions from the prompt's own nouns (fallback): boy . bicycle ." in text
    assert "warning: no unit of the entry's caption matches a unit of the prompt" in text


def test_missing_or_unknown_detector_is_a_clear_error(node, comfy):
    from comfyui_searchpriors.distill.grounding import DetectorError
    from comfyui_searchpriors.nodes import keyframe_nodes

    root = keyframe_nodes.detector_roots()[0]
    os.makedirs(os.path.join(root, "half"), exist_ok=True)
    with open(os.path.join(root, "half", "config.json"), "w") as fh:
        fh.write('{"model_type": "grounding-dino"}')
    with pytest.raises(DetectorError, match="'half' lacks the weights"):
        node.execute(atomized_prompt(), retrieval_of(man_on_bike()), square_frames(), "half", **WIDGETS)
    with pytest.raises(DetectorError, match="No detector 'nothing'"):
        node.execute(atomized_prompt(), retrieval_of(man_on_bike()), square_frames(), "nothing", **WIDGETS)


def test_cancel_stops_detection(node, monkeypatch):
    import comfy.model_management as mm
    from comfyui_searchpriors.nodes import keyframe_nodes

    stub = BrightBoxDetector()
    monkeypatch.setattr(keyframe_nodes, "load_detector", lambda path: stub)
    monkeypatch.setattr(keyframe_nodes, "detector_path", lambda name: name)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            node.execute(atomized_prompt(), retrieval_of(man_on_bike()), square_frames(), "stub", **WIDGETS)
    finally:
        mm.interrupt_current_processing(False)
    assert stub.captions is None   # stopped before the first batch


# ------------------------------------------------------------------------------------------------ whole clip

LATE_FPS, LATE_FRAMES, LATE_FIRST, LATE_LAST = 10, 80, 56, 75   # the square moves only in 5.6-7.5 s of 8 s


def late_motion_pixels(i, width, height):
    """Grey frames; from frame 56 to 75 a white square crosses the frame left to right (2 px a frame)."""
    img = np.full((height, width, 3), 26, dtype=np.uint8)
    if LATE_FIRST <= i <= LATE_LAST:
        x = 4 + 2 * (i - LATE_FIRST)
        img[20:20 + SQUARE, x:x + SQUARE] = 242
    return img


def test_the_segment_is_found_over_the_whole_clip_when_the_motion_is_late(node, monkeypatch, tmp_path):
    """The default frames (16 from 0 s) never show the square; the whole-clip scan finds it at 5.6-7.5 s."""
    from comfyui_searchpriors.nodes import keyframe_nodes

    clips = _helper("video_clips")
    path = clips.write_clip(tmp_path / "late.mp4", LATE_FRAMES, fps=LATE_FPS, width=64, height=48,
                            pixels=late_motion_pixels)
    stub = BrightBoxDetector()
    monkeypatch.setattr(keyframe_nodes, "load_detector", lambda p: stub)
    monkeypatch.setattr(keyframe_nodes, "detector_path", lambda name: name)
    first_two_seconds = torch.from_numpy(np.stack([late_motion_pixels(i, 64, 48) for i in range(16)])).float() / 255
    retrieval = retrieval_of(man_on_bike(), video_path=path)
    keyframes, preview, segment = node.execute(atomized_prompt(), retrieval, first_two_seconds, "stub",
                                               **WIDGETS, scan_fps=4.0).args
    assert "scanned the whole clip (8.00 s" in segment and "32 frames at 4 fps" in segment
    start, end = (float(v) for v in re.search(r"= ([0-9.]+)-([0-9.]+) s of the clip", segment).groups())
    assert LATE_FIRST / LATE_FPS - 0.25 <= start <= LATE_FIRST / LATE_FPS + 0.25, segment
    assert LATE_LAST / LATE_FPS - 0.25 <= end <= LATE_LAST / LATE_FPS + 0.1, segment
    assert keyframes.shape == (4, 32, 32, 3) and preview.shape[0] == 1
    # every keyframe comes from the segment: the square is in each, and moves right from one to the next
    xs = []
    for k in keyframes:
        bright = torch.nonzero(k.mean(-1) > 0.5)
        assert len(bright) > 0, segment
        xs.append(bright[:, 1].float().mean().item())
    assert xs == sorted(xs) and xs[-1] - xs[0] > 4, xs
    # off: only the given frames are searched, and they hold nothing
    _, _, inside = node.execute(atomized_prompt(), retrieval, first_two_seconds, "stub", **WIDGETS,
                                search_whole_clip=False).args
    assert "warning: nothing detected" in inside and "scanned" not in inside
    # an entry without a local video falls back to the frames, and says so
    _, _, fallback = node.execute(atomized_prompt(), retrieval_of(man_on_bike()), first_two_seconds, "stub",
                                  **WIDGETS).args
    assert "searched inside the 'frames' input only: the library names no video file" in fallback


def test_scan_memory_stays_bounded_on_a_long_clip(tmp_path):
    """A clip longer than the scan's frame budget is scanned at a lower rate, still from end to end."""
    from comfyui_searchpriors.distill.video_frames import scan_clip

    clips = _helper("video_clips")
    path = clips.write_clip(tmp_path / "long.mp4", 300, fps=10, width=32, height=24)
    scan = scan_clip(path, fps=5.0, max_frames=16)
    assert len(scan.times) <= 16 and scan.frames.shape[0] == len(scan.times)
    assert scan.times[0] == 0.0 and scan.times[-1] >= 30.0 - 2 * scan.interval   # the end of the 30 s is reached
    steps = np.diff(scan.times)
    assert np.allclose(steps, scan.interval) and scan.interval == pytest.approx(3.2)   # 0.2 s doubled 4 times
    # frame k is the source frame on screen at k * interval: the clip's frames carry their own index
    assert [clips.frame_index(f.numpy()) for f in scan.frames] == [32 * k for k in range(len(scan.times))]
