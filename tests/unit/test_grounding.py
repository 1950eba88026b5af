"""GroundingDINO path: a tiny randomly initialised transformers GroundingDINO (with a BERT tokenizer built
from a small vocabulary) saved to a folder and loaded offline; folder layouts and their messages; unit
matching into detection captions."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from comfyui_searchpriors.distill import grounding
from comfyui_searchpriors.distill.grounding import (DetectorError, DetectorSource, TransformersGroundingDino,
                                                     find_source, list_detectors, load_original_detector,
                                                     load_transformers_detector, run_detection, sample_frames)
from comfyui_searchpriors.retrieval.atomizer import Unit
from comfyui_searchpriors.retrieval.errors import SearchPriorsError
from comfyui_searchpriors.retrieval.unit_matching import (clean_caption, detection_captions, match_units,
                                                           unit_similarity_matrix)

from .conftest import load_test_module

tiny_gd = load_test_module("tiny_grounding_dino")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_gd.save_tiny_grounding_dino(tmp_path_factory.mktemp("gd") / "grounding-dino-tiny-test")


def test_tiny_model_loads_offline_and_matches_the_processors_post_processing(tiny_folder):
    source = find_source(tiny_folder)
    assert source == DetectorSource("transformers", tiny_folder)
    model, processor = load_transformers_detector(tiny_folder)
    detector = TransformersGroundingDino(model, processor)
    torch.manual_seed(1)
    images = torch.rand(2, 40, 56, 3)
    captions = ["man", "mountain bike"]
    found = detector.detect(images, captions, box_threshold=0.0, text_threshold=0.0)
    assert len(found) == 2
    # the same inputs through the processor's own post-processing
    pixels = [(img * 255).round().to(torch.uint8).numpy() for img in images]
    inputs = processor(images=pixels, text=["man . mountain bike ."] * 2, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == [2, 6, 5, 13, 7, 5, 3]
    with torch.no_grad():
        outputs = model(**inputs)
    reference = processor.post_process_grounded_object_detection(outputs, inputs["input_ids"], threshold=0.0,
                                                                 text_threshold=0.0, target_sizes=[(40, 56)] * 2)
    probs = torch.sigmoid(outputs.logits)
    for i, (boxes, scores, labels) in enumerate(found):
        assert np.allclose(boxes, reference[i]["boxes"].numpy(), atol=1e-4)   # every query kept at 0
        assert np.all(scores <= reference[i]["scores"].numpy() + 1e-6)        # span max <= max over all tokens
        span_max = torch.stack([probs[i, :, 1:2].max(-1).values, probs[i, :, 3:5].max(-1).values], -1)
        assert np.array_equal(labels, span_max.argmax(-1).numpy())
        assert np.allclose(scores, span_max.max(-1).values.numpy(), atol=1e-6)
    # thresholds drop boxes: a box is kept when its caption score exceeds box_threshold
    cut = float(np.median(found[0][1]))
    kept = detector.detect(images[:1], captions, box_threshold=cut, text_threshold=0.0)[0]
    assert len(kept[1]) == int((found[0][1] > cut).sum()) and np.all(kept[1] > cut)


def test_run_detection_samples_frames_and_reports_progress(tiny_folder):
    model, processor = load_transformers_detector(tiny_folder)
    frames = torch.rand(5, 32, 32, 3)
    calls = []
    dets = run_detection(TransformersGroundingDino(model, processor), frames, ["dog"], 0.0, 0.0, max_frames=3,
                         batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert [d.frame for d in dets] == [0, 2, 4] and calls == [(0, 3), (2, 3), (3, 3)]
    assert all(len(d.scores) == 12 and set(d.labels.tolist()) == {0} for d in dets)
    assert sample_frames(100, 4) == [0, 33, 66, 99] and sample_frames(3, 4) == [0, 1, 2]


def test_captions_the_tokenizer_cannot_place_are_refused(tiny_folder):
    _, processor = load_transformers_detector(tiny_folder)
    with pytest.raises(DetectorError, match="split the captions"):
        grounding.caption_spans([2, 6, 3], processor.tokenizer, ["man"])   # no '.' after the caption


# ------------------------------------------------------------------------------------------------ layouts

def test_transformers_folder_missing_files_says_which(tmp_path):
    folder = tmp_path / "gd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "grounding-dino"}))
    with pytest.raises(DetectorError, match=r"lacks the weights \(model.safetensors\), the processor .* tokenizer"):
        find_source(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(DetectorError, match="holds a 'bert' model, not GroundingDINO"):
        find_source(str(folder))


def test_unknown_layout_says_what_is_expected_where(tmp_path):
    folder = tmp_path / "random"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"x")
    with pytest.raises(DetectorError, match=r"not a GroundingDINO folder of a known layout \(found: weights.bin\)"
                                            r".*models/grounding-dino/.*grounding-dino-tiny"):
        find_source(str(folder))
    with pytest.raises(DetectorError, match="No detector at"):
        find_source(str(tmp_path / "absent"))


def test_original_checkpoint_layouts_and_the_missing_extra(tmp_path):
    root = tmp_path / "grounding-dino"
    root.mkdir()
    (root / "groundingdino_swint_ogc.pth").write_bytes(b"0")
    with pytest.raises(DetectorError, match="has no config next to it"):
        find_source(str(root / "groundingdino_swint_ogc.pth"))
    (root / "GroundingDINO_SwinT_OGC.cfg.py").write_text("batch_size = 1\n")
    (root / "GroundingDINO_SwinB.cfg.py").write_text("batch_size = 1\n")
    (root / "groundingdino_swinb_cogcoor.pth").write_bytes(b"0")
    assert find_source(str(root / "groundingdino_swint_ogc.pth")).config.endswith("GroundingDINO_SwinT_OGC.cfg.py")
    assert find_source(str(root / "groundingdino_swinb_cogcoor.pth")).config.endswith("GroundingDINO_SwinB.cfg.py")
    sub = root / "swint"
    sub.mkdir()
    (sub / "model.pth").write_bytes(b"0")
    (sub / "GroundingDINO_SwinT_OGC.py").write_text("batch_size = 1\n")
    source = find_source(str(sub))
    assert source.kind == "original" and source.path.endswith("model.pth")
    assert list_detectors([str(root), str(tmp_path / "absent")]) == [
        "groundingdino_swinb_cogcoor.pth", "groundingdino_swint_ogc.pth", "swint"]
    try:
        import groundingdino  # noqa: F401
        pytest.skip("groundingdino-py is installed here")
    except ImportError:
        pass
    with pytest.raises(DetectorError, match=r"pip install comfyui-searchpriors\[groundingdino\]"):
        load_original_detector(source)


# ------------------------------------------------------------------------------------------ unit matching

def basis(i, d=8):
    v = np.zeros(d, np.float32)
    v[i] = 1.0
    return v


def vectors(*units):
    """(u, 3, d) from tuples of basis indices (None = missing role)."""
    return np.stack([np.stack([basis(i) if i is not None else np.zeros(8, np.float32) for i in u]) for u in units])


def test_each_prompt_unit_takes_its_best_entry_unit_core_first():
    entry = vectors((0, 1, 2), (3, 4, None), (0, 5, 6))
    prompt = vectors((3, 7, None), (0, 1, 6))
    sims = unit_similarity_matrix(entry, prompt)
    assert sims.tolist() == [[0, 2], [1, 0], [0, 2]]
    # core (prompt unit 1) first; its tie between entry units 0 and 2 goes to the earlier
    assert [(m.prompt_unit, m.entry_unit, m.similarity) for m in match_units(entry, prompt, core_index=1)] == \
        [(1, 0, 2.0), (0, 1, 1.0)]
    assert [m.entry_unit for m in match_units(entry, prompt, core_index=1, min_similarity=1.5)] == [0]


def test_matched_entry_nouns_become_captions():
    entry_units = [Unit("ride", "Man", "mountain bike"), Unit("wave", "woman", None), Unit("bark", "dog", "man")]
    entry = vectors((0, 1, 2), (3, 4, None), (5, 6, 1))
    prompt_units = [Unit("ride", "panda", "bicycle")]
    prompt = vectors((0, 7, 2))
    result = detection_captions(prompt_units, prompt, 0, entry_units, entry)
    assert result.source == "entry" and result.captions == ["man", "mountain bike"]
    assert result.roles == ["actor", "recipient"] and result.text() == "man . mountain bike ."
    assert result.warnings == [] and "similarity 2.000" in result.describe(entry_units, prompt_units)


def test_no_match_falls_back_to_the_prompts_nouns_with_a_warning():
    prompt_units = [Unit("throw", "hand", "ball"), Unit("run", "dog", None)]
    prompt = vectors((0, 1, 2), (3, 4, None))
    unrelated = detection_captions(prompt_units, prompt, 0, [Unit("sit", "cat", "mat")], vectors((5, 6, 7)))
    assert unrelated.source == "prompt" and unrelated.captions == ["hand", "ball", "dog"]
    assert "no unit of the entry's caption matches" in unrelated.warnings[0]
    bare = detection_captions(prompt_units, prompt, 1, [], None)
    assert bare.captions == ["dog", "hand", "ball"] and "carries no atomized units" in bare.warnings[0]
    with pytest.raises(SearchPriorsError, match="Nothing to detect"):
        detection_captions([Unit("rain", None, None)], vectors((0, None, None)), 0, [], None)


def test_captions_are_lower_case_without_separators():
    assert clean_caption("  The  Eiffel. Tower? ") == "the eiffel tower"
    assert os.path.basename(grounding.FOLDER_NAME) == "grounding-dino"
