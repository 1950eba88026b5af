"""Threshold calibration (retrieval.calibration) and the shipped labelled pairs it reads."""

from __future__ import annotations

import os

import numpy as np
import pytest

from comfyui_searchpriors.retrieval.calibration import (LabelledPair, balanced_accuracy, calibrate, choose_threshold,
                                                        pair_cosines, read_pairs)
from comfyui_searchpriors.retrieval.errors import SearchPriorsError
from comfyui_searchpriors.retrieval.search import DEFAULT_THRESHOLDS, THRESHOLD_PRESETS, SearchParams

PAIRS = os.path.join(os.path.dirname(__file__), "..", "data", "role_synonym_pairs.tsv")


def test_the_labelled_set_has_both_roles_and_both_labels_in_lemma_form():
    pairs = read_pairs(PAIRS)
    for role in ("motion", "actor"):
        labels = [p.label for p in pairs if p.role == role]
        assert labels.count(1) >= 30 and labels.count(0) >= 30, role
    assert all(p.a == p.a.lower().strip() and p.b == p.b.lower().strip() and p.a != p.b for p in pairs)
    assert len({(p.role, p.a, p.b) for p in pairs}) == len(pairs)   # no pair twice


def test_choose_threshold_takes_the_middle_of_the_best_run():
    # positives at 0.8, 0.7; negatives at 0.5, 0.2: every threshold in (0.5, 0.7] separates them perfectly
    calib = choose_threshold([0.8, 0.7, 0.5, 0.2], [1, 1, 0, 0])
    assert calib.balanced_accuracy == 1.0 and calib.threshold == pytest.approx(0.61)
    # an overlap: one negative above one positive; balanced accuracy weighs the classes equally
    calib = choose_threshold([0.9, 0.6, 0.65, 0.1, 0.0, -0.2], [1, 1, 0, 0, 0, 0])
    assert calib.balanced_accuracy == pytest.approx(balanced_accuracy(np.array([0.9, 0.6, 0.65, 0.1, 0.0, -0.2]),
                                                                      np.array([1, 1, 0, 0, 0, 0]),
                                                                      calib.threshold)[0])
    assert 0.1 < calib.threshold <= 0.6 and calib.synonyms_passed == 1.0
    with pytest.raises(SearchPriorsError, match="both labels"):
        choose_threshold([0.5, 0.6], [1, 1])


def test_read_pairs_names_the_bad_line(tmp_path):
    bad = tmp_path / "pairs.tsv"
    bad.write_text("# header\nmotion\trun\tjog\t1\nverb\trun\tjog\t1\n", encoding="utf-8")
    with pytest.raises(SearchPriorsError, match="pairs.tsv:3: expected"):
        read_pairs(str(bad))


def test_pair_cosines_give_zero_for_a_word_without_a_vector():
    pairs = [LabelledPair("motion", "a", "b", 1), LabelledPair("motion", "a", "zzz", 0)]
    table = {"a": [1.0, 0.0], "b": [2.0, 2.0], "zzz": [0.0, 0.0]}
    cos = pair_cosines(pairs, lambda texts: np.array([table[t] for t in texts]))
    assert cos == pytest.approx([2 ** -0.5, 0.0])


def test_the_calibrated_preset_is_what_the_labelled_pairs_give_with_minilm(minilm):
    """The shipped thresholds are reproducible: the labelled set, embedded as the index embeds role phrases."""
    from comfyui_searchpriors.retrieval.embedding import encode

    result = calibrate(read_pairs(PAIRS), lambda texts: encode(minilm, texts))
    calibrated = THRESHOLD_PRESETS["calibrated"]
    assert (result["motion"].threshold, result["actor"].threshold) == (calibrated["t_mot"], calibrated["t_atr"])
    # and the paper's t_mot refuses every synonym verb pair in this space (why the preset exists)
    motion = [p for p in read_pairs(PAIRS) if p.role == "motion"]
    cos = pair_cosines(motion, lambda texts: encode(minilm, texts))
    assert max(c for c, p in zip(cos, motion) if p.label == 1) < THRESHOLD_PRESETS["paper"]["t_mot"]


def test_presets_and_defaults():
    assert THRESHOLD_PRESETS["paper"] == {"t_total": 0.3, "t_mot": 0.9, "t_atr": 0.4}   # Search-T2V Sec. 5.1
    params = SearchParams()
    assert {"t_total": params.t_total, "t_mot": params.t_mot, "t_atr": params.t_atr} == DEFAULT_THRESHOLDS
