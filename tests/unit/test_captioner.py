"""Clip captioner: family detection, tiny random models of the real transformers VLM classes (processors and
tokenizers included, saved and loaded through load_captioner), batching, per-shot errors, the memory bound,
the toy family on the toy world's clips, and captions the atomizer reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from comfyui_searchpriors.retrieval import captioner as cap
from comfyui_searchpriors.retrieval.atomizer import parse_doc, verb_forms_of
from comfyui_searchpriors.retrieval.errors import SearchPriorsError

from .conftest import load_test_module

tiny_vlms = load_test_module("tiny_vlms")


@pytest.fixture(scope="module")
def vlm_folders(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("vlm")
    return {family: write(str(root / family)) for family, write in tiny_vlms.WRITERS.items()}


def _shots(seed=0):
    rng = np.random.default_rng(seed)
    # different sizes and lengths in one batch (padding), one long shot (sampling)
    return [[rng.integers(0, 256, (48 + 8 * i, 72 - 4 * i, 3), dtype=np.uint8) for _ in range(2 + 3 * i)]
            for i in range(4)]


def test_unknown_family_names_the_folder_and_the_supported_families(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(SearchPriorsError, match=r"'.*m' holds a model of family 'llama'.*qwen2_5_vl.*florence2.*toy"):
        cap.load_captioner(str(tmp_path / "m"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SearchPriorsError, match="has no config.json.*models/vlm"):
        cap.load_captioner(str(tmp_path / "empty"))
    with pytest.raises(SearchPriorsError, match="does not exist"):
        cap.load_captioner(str(tmp_path / "absent"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(SearchPriorsError, match="not readable JSON"):
        cap.load_captioner(str(tmp_path / "bad"))


def test_folder_listing_and_lookup(tmp_path, vlm_folders):
    import os

    root = os.path.dirname(vlm_folders["florence2"])
    assert {"florence2", "qwen2_5_vl"} <= set(cap.list_captioner_folders([root, str(tmp_path / "none")]))
    assert cap.find_captioner_folder("florence2", [str(tmp_path), root]) == vlm_folders["florence2"]
    with pytest.raises(SearchPriorsError, match="No captioner folder 'nope'"):
        cap.find_captioner_folder("nope", [root])
    with pytest.raises(SearchPriorsError, match="not a folder name"):
        cap.find_captioner_folder("../x", [root])


@pytest.mark.parametrize("family", ["qwen2_5_vl", "florence2"])
def test_batched_equals_one_at_a_time_and_bad_shots_get_their_own_error(vlm_folders, family):
    c = cap.load_captioner(vlm_folders[family], max_new_tokens=5)
    assert c.family == family
    shots = _shots()
    shots.insert(1, [])                                                   # no frames
    shots.insert(3, [np.zeros((8, 8, 3), dtype=np.float32)])              # wrong dtype
    progress = []
    batched = c.caption(shots, "describe the motion", batch_size=3, on_progress=lambda d, t: progress.append((d, t)))
    single = [c.caption([s], "describe the motion", batch_size=1)[0] for s in shots]
    assert len(batched) == len(shots)
    assert isinstance(batched[1], SearchPriorsError) and "no frames" in str(batched[1])
    assert isinstance(batched[3], SearchPriorsError) and "uint8" in str(batched[3])
    texts = [b for b in batched if isinstance(b, str)]
    assert len(texts) == 4 and all(texts)
    assert [str(b) for b in batched] == [str(s) for s in single]
    assert progress == [(3, 6), (6, 6)]


def test_a_failing_batch_is_retried_shot_by_shot(vlm_folders, monkeypatch):
    c = cap.load_captioner(vlm_folders["qwen2_5_vl"], max_new_tokens=3)
    shots = _shots()
    real = c._caption_batch
    calls = []

    def flaky(prepared, prompt):
        calls.append(len(prepared))
        if any(p[0].shape[0] == 64 for p in prepared):      # shot 2 (frames 64 pixels high) always fails
            raise RuntimeError("out of memory")
        return real(prepared, prompt)

    monkeypatch.setattr(c, "_caption_batch", flaky)
    out = c.caption(shots, "describe", batch_size=4)
    assert calls == [4, 1, 1, 1, 1]
    assert isinstance(out[2], RuntimeError)
    assert [isinstance(o, str) for o in out] == [True, True, False, True]


def test_memory_bound_frames_sampled_and_scaled_before_the_processor(vlm_folders):
    c = cap.load_captioner(vlm_folders["qwen2_5_vl"], max_frames=4, max_side=64, max_new_tokens=2)
    huge = [np.full((1080, 1920, 3), i, dtype=np.uint8) for i in range(40)]
    frames = c.prepare(huge)
    assert len(frames) == 4 and all(max(f.shape[:2]) <= 64 for f in frames)
    assert [int(f[0, 0, 0]) for f in frames] == [0, 13, 26, 39]       # evenly spread, ends included
    small = c.prepare([f[:108, :192] for f in huge])
    inputs = c.processor(text=["x <|vision_start|><|video_pad|><|vision_end|>"], videos=[np.stack(frames)],
                         return_tensors="pt")
    inputs_small = c.processor(text=["x <|vision_start|><|video_pad|><|vision_end|>"], videos=[np.stack(small)],
                               return_tensors="pt")
    # 1080p frames cost what a 108x192 crop costs: the tokens depend on max_side, not on the source size
    assert inputs["pixel_values_videos"].shape == inputs_small["pixel_values_videos"].shape
    assert isinstance(c.caption([huge], "describe")[0], str)
    f = cap.load_captioner(vlm_folders["florence2"], max_new_tokens=2)
    assert len(f.prepare(huge)) == 1 and int(f.prepare(huge)[0][0, 0, 0]) == 20    # the middle frame


def test_florence_uses_caption_task_tokens():
    assert cap.FlorenceCaptioner.task("<DETAILED_CAPTION>") == "<DETAILED_CAPTION>"
    assert cap.FlorenceCaptioner.task(cap.DEFAULT_CAPTION_PROMPT) == "<CAPTION>"


def test_bad_arguments_are_clear(vlm_folders):
    c = cap.load_captioner(vlm_folders["florence2"])
    with pytest.raises(SearchPriorsError, match="prompt is empty"):
        c.caption(_shots(), "   ")
    with pytest.raises(SearchPriorsError, match="batch_size"):
        c.caption(_shots(), "x", batch_size=0)
    with pytest.raises(SearchPriorsError, match="max_frames"):
        cap.load_captioner(vlm_folders["florence2"], max_frames=0)


def test_toy_family_captions_the_toy_worlds_clips(tmp_path):
    import torch

    from comfyui_searchpriors.distill import toy_world as tw

    c = cap.load_captioner(cap.write_toy_captioner(str(tmp_path / "toy")))
    assert c.family == "toy"
    specs = tw.sample_specs(8, seed=5)
    clips = (tw.render(specs) * 255).round().to(torch.uint8).numpy()
    shots = [list(v) for v in clips] + [[np.full((64, 64, 3), 128, dtype=np.uint8)] * 8]
    out = c.caption(shots, cap.DEFAULT_CAPTION_PROMPT, batch_size=4)
    for spec, text in zip(specs, out):
        assert text == f"the {spec.colour} {spec.shape} {tw.MOTION_PHRASES[spec.motion][cap.TOY_PHRASE[spec.motion]]}"
    assert isinstance(out[-1], SearchPriorsError) and "no object" in str(out[-1])


@pytest.mark.parametrize("raw, clean", [
    ("The video shows a man riding a bicycle down a street.", "a man riding a bicycle down a street"),
    ('"A brown dog runs across a sandy beach."', "A brown dog runs across a sandy beach"),
    ("In this video, a woman throws a ball to a child.\n", "a woman throws a ball to a child"),
    ("A cat jumps. Then it sleeps.", "A cat jumps. Then it sleeps."),
])
def test_clean_caption(raw, clean):
    assert cap.clean_caption(raw) == clean


@pytest.mark.parametrize("raw, unit", [
    # answers in the shape the default prompt asks for, and the toy family's: one subject, its motion, its object
    ("The video shows a man riding a bicycle down a street.", ("ride", "man", "bicycle")),
    ("A brown dog runs across a sandy beach.", ("run", "dog", "beach")),
    ("a woman throws a ball to a child", ("throw", "woman", "ball")),
])
def test_captions_in_the_prompts_shape_atomize_into_subject_motion_object(nlp, raw, unit):
    parsed = parse_doc(nlp(cap.clean_caption(raw)), verb_forms_of(nlp))
    assert (parsed.core.motion, parsed.core.actor, parsed.core.recipient) == unit
    assert "subject" in cap.DEFAULT_CAPTION_PROMPT and "moves" in cap.DEFAULT_CAPTION_PROMPT


def test_toy_captions_are_phrased_the_way_the_atomizer_reads_them(nlp):
    from comfyui_searchpriors.distill import toy_world as tw

    verb_forms = verb_forms_of(nlp)
    read = 0
    combos = [(c, s, m) for c in tw.COLOURS for s in tw.SHAPES for m in tw.MOTIONS]
    for colour, shape, motion in combos:
        core = parse_doc(nlp(cap.toy_caption(colour, shape, motion)), verb_forms).core
        read += bool(core.motion and core.actor and core.actor.endswith(shape))
    assert read >= 0.9 * len(combos)      # each motion's first phrase after "a": 88 of 144
