"""scripts/make_template_thumbnails.py: every card shows a result strip (a toy-world run of its pipeline, labelled
with the real model its workflow needs), the strip's frames are the run's frames, and the cache round-trips.
The toy runs themselves are not made here (minutes of CPU); the rows are synthetic."""

from __future__ import annotations

import json
import os

import numpy as np

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "make_template_thumbnails.py")


def _script():
    return harness.load_by_path("searchpriors_make_template_thumbnails", SCRIPT)


def _solid_video(colours) -> np.ndarray:
    return np.stack([np.full((64, 64, 3), c, dtype=np.uint8) for c in colours])


def _strips():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (128, 0, 0),
               (0, 128, 0)]
    row = ("found clip|a red square", _solid_video(colours))
    return colours, {"retrieval": [row] * 3, "pos": [row] * 3, "tune": [row] * 5}


def test_every_bundled_workflow_has_a_result_and_real_model_cards_say_so():
    script = _script()
    _, strips = _strips()
    for path in script.ui_workflows():
        assert path.stem in script.CARD_RESULTS, f"{path.stem} has no entry in CARD_RESULTS"
        result = script.card_result(path.stem, strips)
        assert result["rows"] if "rows" in result else result["text"]
        model = script.CARD_RESULTS[path.stem][1]
        if model:
            assert result["note"].startswith("toy-world result of this pipeline") and model in result["note"]
    rewrite = script.card_result("pos_rewrite", strips)
    graph = json.loads((script.WORKFLOWS_DIR / "api" / "pos_rewrite.json").read_text(encoding="utf-8"))
    assert rewrite["text"][1][1] in json.dumps(graph), "pos_rewrite's card shows a rewrite its workflow does not"


def test_the_strip_shows_the_run_frames_in_order():
    script = _script()
    colours, strips = _strips()
    image = np.asarray(script.render({"nodes": []}, "a card", 1, script.card_result("pos_modelscope", strips)))
    assert image.shape[:2] == (script.SIZE[1], script.SIZE[0])
    strip = image[: script.SIZE[1] - script.CAPTION_HEIGHT]
    found = []
    for colour in colours:   # each frame's colour is on the picture, left to right in the frames' order
        hits = np.argwhere(np.abs(strip.astype(int) - colour).sum(-1) < 30)
        assert len(hits) > 3 * 100, f"frame of colour {colour} is not drawn"
        found.append(hits[:, 1].min())
    assert found == sorted(found)


def test_cached_rows_round_trip(tmp_path):
    script = _script()
    _, strips = _strips()
    path = tmp_path / "pos-x.npz"
    script._save_rows(path, strips["pos"])
    back = script._load_rows(path)
    assert [label for label, _ in back] == [label for label, _ in strips["pos"]]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(back, strips["pos"]))
    assert not list(tmp_path.glob("*.partial*"))
