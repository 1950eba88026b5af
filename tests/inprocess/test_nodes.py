"""The pack's nodes called in-process with ComfyUI's real modules (schema, execute, errors, Cancel)."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "sample_library", "library.csv")


def run(node_cls, **inputs):
    out = node_cls.execute(**inputs)
    return out.args, out.ui


def test_extension_lists_every_node_with_prefixed_ids(pack_nodes):
    import comfyui_searchpriors

    extension = asyncio.run(comfyui_searchpriors.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    ids = [n.define_schema().node_id for n in nodes]
    assert ids == ["SearchPriors_PromptAtomizer", "SearchPriors_MotionIndexBuilder",
                   "SearchPriors_MotionIndexLoader", "SearchPriors_MotionRetriever"]
    retriever = pack_nodes.MotionRetriever.define_schema()
    assert [i.id for i in retriever.inputs] == ["atomized", "index", "mode", "top_k", "t_total", "t_mot", "t_atr",
                                                "alpha", "beta", "gamma", "min_keep"]
    defaults = {i.id: i.default for i in retriever.inputs[2:]}
    assert defaults == {"mode": "search_t2v", "top_k": 5, "t_total": 0.3, "t_mot": 0.9, "t_atr": 0.4,
                        "alpha": 1.0, "beta": 1.0, "gamma": 0.5, "min_keep": 10}
    atomizer = pack_nodes.PromptAtomizer.define_schema()
    spacy_input = next(i for i in atomizer.inputs if i.id == "spacy_model")
    assert "en_core_web_sm" in spacy_input.options


@pytest.fixture(scope="module")
def built(comfy, pack_nodes):
    target = comfy / "input" / "searchpriors_sample"
    target.mkdir(exist_ok=True)
    shutil.copy(SAMPLE, target / "library.csv")
    (index, report), ui = run(pack_nodes.MotionIndexBuilder, library="searchpriors_sample/library.csv",
                              format="auto", index_name="sample", spacy_model="en_core_web_sm",
                              sentence_model="all-MiniLM-L6-v2", videos_folder="")
    return index, report


def test_builder_writes_under_models_and_reports(built, comfy):
    index, report = built
    assert index.count == 40
    assert os.path.isfile(comfy / "models" / "motion_index" / "sample" / "manifest.json")
    assert "40 entries have no local video" in report


def test_atomize_load_retrieve(built, pack_nodes):
    (atomized, units), _ = run(pack_nodes.PromptAtomizer, prompt="A dog catches a frisbee",
                               spacy_model="en_core_web_sm", sentence_model="all-MiniLM-L6-v2")
    assert units == "[core] dog -catch-> frisbee"
    (index, summary), _ = run(pack_nodes.MotionIndexLoader, index_name="sample")
    assert "40 captions" in summary
    before = atomized.v_total.copy()
    (result, best_video, references, report), ui = run(
        pack_nodes.MotionRetriever, atomized=atomized, index=index, mode="search_t2v", top_k=3, t_total=0.3,
        t_mot=0.9, t_atr=0.4, alpha=1.0, beta=1.0, gamma=0.5, min_keep=10)
    assert result.best.caption == "a dog catches a frisbee in the air"
    assert references.splitlines()[0] == "a dog catches a frisbee in the air" and len(references.splitlines()) == 3
    assert best_video == ""  # the sample library ships no video files
    assert "no local video" in report and ui.as_dict()["text"] == (report,)
    assert (atomized.v_total == before).all()  # inputs are never changed in place


@pytest.mark.parametrize("library, message", [
    ("../../etc/passwd", "contains '..'"),
    ("/etc/passwd", "outside ComfyUI's input, output, user and models folders"),
    ("missing.csv", "does not exist"),
])
def test_builder_refuses_bad_paths(pack_nodes, comfy, library, message):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError, match=message):
        run(pack_nodes.MotionIndexBuilder, library=library, format="auto", index_name="x",
            spacy_model="en_core_web_sm", sentence_model="all-MiniLM-L6-v2", videos_folder="")


@pytest.mark.parametrize("name, message", [("../evil", "not allowed"), ("absent", "No motion index named 'absent'")])
def test_loader_errors(pack_nodes, comfy, name, message):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError, match=message):
        run(pack_nodes.MotionIndexLoader, index_name=name)


def test_cancel_mid_build_keeps_the_published_index(built, pack_nodes, comfy):
    import comfy.model_management as mm

    library = comfy / "input" / "searchpriors_sample" / "more.csv"
    library.write_text("video,caption\n" + "".join(f"m{i}.mp4,a robot number {i} dances\n" for i in range(30)))
    manifest = comfy / "models" / "motion_index" / "sample" / "manifest.json"
    before = manifest.read_bytes()
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(pack_nodes.MotionIndexBuilder, library="searchpriors_sample/more.csv", format="auto",
                index_name="sample", spacy_model="en_core_web_sm", sentence_model="all-MiniLM-L6-v2",
                videos_folder="")
    finally:
        mm.interrupt_current_processing(False)
    assert manifest.read_bytes() == before
    (index, report), _ = run(pack_nodes.MotionIndexBuilder, library="searchpriors_sample/more.csv", format="auto",
                             index_name="sample", spacy_model="en_core_web_sm", sentence_model="all-MiniLM-L6-v2",
                             videos_folder="")
    assert index.count == 70 and "30 added" in report


def test_atomizer_inputs_keep_their_order_new_ones_optional_at_the_end(pack_nodes):
    schema = pack_nodes.PromptAtomizer.define_schema()
    assert [i.id for i in schema.inputs] == ["prompt", "spacy_model", "sentence_model", "one_prompt_per_line",
                                             "max_prompt_chars"]
    assert all(i.optional for i in schema.inputs[3:]) and not any(i.optional for i in schema.inputs[:3])
    assert schema.inputs[4].default == 2000


def test_atomizer_one_prompt_per_line_reports_each_line(pack_nodes):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    prompt = "two kangaroos box playfully, animated style\nСобака бежит по пляжу\n\n" + "a dog runs " * 30 + "\ncats fight"
    (atomized, units), _ = run(pack_nodes.PromptAtomizer, prompt=prompt, spacy_model="en_core_web_sm",
                               sentence_model="all-MiniLM-L6-v2", one_prompt_per_line=True, max_prompt_chars=200)
    lines = units.splitlines()
    assert atomized.text == "two kangaroos box playfully, animated style" and atomized.modifiers == ["animated style"]
    assert lines[0] == "line 1: two kangaroos box playfully, animated style"
    assert "[core] kangaroo -box-> (recovered: noun-after-plural-subject)" in lines[1]
    assert any(x.startswith("line 2: error: The prompt does not look like English") for x in lines)
    assert any(x.startswith("line 3: error: The prompt is too long: 329 characters, more than the limit of 200") for x in lines)
    assert any(x.startswith("line 4: cats fight") for x in lines)
    assert lines[-1].startswith("2 of 4 lines atomized, 2 failed")
    with pytest.raises(SearchPriorsError, match="No line of the prompt could be atomized"):
        run(pack_nodes.PromptAtomizer, prompt="Собака бежит\n   \n一只熊猫", spacy_model="en_core_web_sm",
            sentence_model="all-MiniLM-L6-v2", one_prompt_per_line=True)


def test_atomizer_refuses_an_oversized_prompt_before_parsing(pack_nodes, monkeypatch):
    from comfyui_searchpriors.nodes import prompt_nodes
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    monkeypatch.setattr(prompt_nodes, "load_spacy", lambda *a, **k: pytest.fail("loaded a model for an oversized prompt"))
    with pytest.raises(SearchPriorsError, match="too long: 1,200,000 characters, more than the limit of 2,000"):
        run(pack_nodes.PromptAtomizer, prompt="a" * 1_200_000, spacy_model="en_core_web_sm",
            sentence_model="all-MiniLM-L6-v2")
