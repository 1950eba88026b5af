"""A retrieval hit carries its entry's atomized units and role vectors (for the KeyframeExtractor's unit
matching), read from the index; the JSON form lists the units without vectors."""

from __future__ import annotations

import json

import numpy as np

from comfyui_searchpriors.retrieval.atomizer import parse_texts
from comfyui_searchpriors.retrieval.embedding import atomize, encode
from comfyui_searchpriors.retrieval.index import build_index, load_index
from comfyui_searchpriors.retrieval.library import LibraryEntry
from comfyui_searchpriors.retrieval.search import SearchParams, search
from comfyui_searchpriors.retrieval.unit_matching import detection_captions

CAPTIONS = ["a man rides a bicycle down a street and a dog chases a cat", "a woman throws a ball to a girl",
            "clouds over the mountains"]


def test_hits_carry_units_and_vectors_from_the_index(tmp_path, nlp, hash_encoder):
    build_index(str(tmp_path / "idx"), [LibraryEntry(f"v{i}", c, None) for i, c in enumerate(CAPTIONS)], nlp,
                hash_encoder, segment_size=2)
    index = load_index(str(tmp_path / "idx"))
    atomized = atomize("a boy rides a bicycle", nlp, hash_encoder)
    result = search(index, atomized, SearchParams(top_k=3, min_keep=3))
    parsed = {p.text: p for p in parse_texts(nlp, CAPTIONS)}
    for hit in result.hits:
        units = parsed[hit.caption].units
        assert hit.units == units and hit.unit_vectors.shape == (len(units), 3, index.dim)
        for unit, vectors in zip(hit.units, hit.unit_vectors):
            for phrase, vector in zip(unit.roles(), vectors):
                want = np.zeros(index.dim) if phrase is None else encode(hash_encoder, [phrase])[0]
                assert np.allclose(vector, want, atol=1e-6)
    data = json.loads(json.dumps(result.to_json()))
    first = data["hits"][0]
    assert "unit_vectors" not in first and first["units"][0] == {
        "motion": result.best.units[0].motion, "actor": result.best.units[0].actor,
        "recipient": result.best.units[0].recipient}
    best = result.best
    assert best.caption == CAPTIONS[0]
    matched = detection_captions(atomized.units, atomized.unit_vectors, atomized.core_index, best.units,
                                 best.unit_vectors)
    assert matched.source == "entry" and matched.captions == ["man", "bicycle"]


def test_directions_are_not_detection_targets():
    """"a red square moves to the right": the atomizer may take "right" as the recipient; the keyframe step
    detects the square only (a direction is where the motion goes, not an object to box)."""
    from comfyui_searchpriors.retrieval.atomizer import Unit
    from comfyui_searchpriors.retrieval.unit_matching import is_direction

    assert is_direction("right") and is_direction("the top left") and is_direction("up")
    assert not is_direction("square") and not is_direction("right hand") and not is_direction("ball")
    units = [Unit("move", "red square", "right"), Unit("roll", "ball", "the left")]
    vectors = np.ones((2, 3, 4), dtype=np.float32)
    matched = detection_captions(units, vectors, 0, [], None)
    assert matched.captions == ["red square", "ball"] and matched.roles == ["actor", "actor"]
