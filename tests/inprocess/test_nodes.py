"""The pack's nodes called in-process with ComfyUI's real modules (schema, execute, errors, Cancel)."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "sample_data", "sample_library", "library.csv")


def run(node_cls, **inputs):
    out = node_cls.execute(**inputs)
    return out.args, out.ui


def test_extension_lists_every_node_with_prefixed_ids(pack_nodes):
    import comfyui_searchpriors

    extension = asyncio.run(comfyui_searchpriors.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    ids = [n.define_schema().node_id for n in nodes]
    assert ids[:4] == ["SearchPriors_PromptAtomizer", "SearchPriors_MotionIndexBuilder",
                       "SearchPriors_MotionIndexLoader", "SearchPriors_MotionRetriever"]
    assert {"SearchPriors_ModelScopeLoader", "SearchPriors_DiffusersSchedulerSigmas",
            "SearchPriors_ReferenceFrames",
            "SearchPriors_DDIMVideoInvert",
            "SearchPriors_GaussianNoiseMix",
            "SearchPriors_HybridSemanticGuider",
            "SearchPriors_HybridSemanticSampler",
            "SearchPriors_ReferenceRewriter"} <= set(ids)
    assert len(ids) == len(set(ids))
    retriever = pack_nodes.MotionRetriever.define_schema()
    assert [i.id for i in retriever.inputs] == ["atomized", "index", "mode", "top_k", "t_total", "t_mot", "t_atr",
                                                "alpha", "beta", "gamma", "min_keep", "thresholds", "ranking", "pool"]
    assert [bool(getattr(i, "optional", False)) for i in retriever.inputs] == [False] * 11 + [True, True, True]
    from comfyui_searchpriors.retrieval.search import DEFAULT_RANKING, DEFAULT_THRESHOLDS

    defaults = {i.id: i.default for i in retriever.inputs[2:]}
    assert defaults == {"mode": "search_t2v", "top_k": 5, **DEFAULT_THRESHOLDS,
                        "alpha": 1.0, "beta": 1.0, "gamma": 0.5, "min_keep": 10, "thresholds": "custom",
                        "ranking": DEFAULT_RANKING, "pool": 1000}
    assert retriever.inputs[-3].options == ["custom", "paper", "calibrated"]
    assert retriever.inputs[-2].options == ["paper", "video_support", "pool_video_support"]
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
    # the paper's thresholds one click away: the preset replaces the three widgets
    common = dict(atomized=atomized, index=index, mode="search_t2v", top_k=5, alpha=1.0, beta=1.0, gamma=0.5,
                  min_keep=2)
    (by_widgets, _, refs_widgets, _), _ = run(pack_nodes.MotionRetriever, t_total=0.3, t_mot=0.9, t_atr=0.4, **common)
    (by_preset, _, refs_preset, report), _ = run(pack_nodes.MotionRetriever, t_total=-1.0, t_mot=-1.0, t_atr=-1.0,
                                                 thresholds="paper", **common)
    (loose, _, _, _), _ = run(pack_nodes.MotionRetriever, t_total=-1.0, t_mot=-1.0, t_atr=-1.0, **common)
    assert refs_preset == refs_widgets and by_preset.rounds == by_widgets.rounds != loose.rounds
    assert "thresholds from the preset paper: t_total 0.3, t_mot 0.9, t_atr 0.4" in report
    # the ranking is chosen on the node: the paper's Eq. 9, or with the video's support (its own column)
    (paper, _, _, paper_report), _ = run(pack_nodes.MotionRetriever, t_total=0.3, t_mot=0.9, t_atr=0.4,
                                         ranking="paper", **common)
    (support, _, _, support_report), _ = run(pack_nodes.MotionRetriever, t_total=0.3, t_mot=0.9, t_atr=0.4,
                                             ranking="video_support", **common)
    assert paper.params.ranking == "paper" and support.params.ranking == "video_support"
    assert "support" not in paper_report and "| units | support |" in support_report
    assert all("video" in h.parts for h in support.hits) and not any("video" in h.parts for h in paper.hits)
    # the nearest-captions ranking, its pool size on the node: the three nearest captions only
    (pooled, _, _, pooled_report), _ = run(pack_nodes.MotionRetriever, t_total=0.3, t_mot=0.9, t_atr=0.4,
                                           ranking="pool_video_support", pool=3, **common)
    (nearest, _, _, _), _ = run(pack_nodes.MotionRetriever, t_total=0.3, t_mot=0.9, t_atr=0.4,
                                **{**common, "mode": "pos", "top_k": 3})
    assert pooled.params.pool == 3 and pooled.rounds[0] == ("nearest 5 by sentence similarity", 5, 5)
    assert "nearest 5 by sentence similarity" in pooled_report and all("verb" in h.parts for h in pooled.hits)
    assert pooled.best.caption == "a dog catches a frisbee in the air"
    assert {h.row for h in nearest.hits} <= {h.row for h in pooled.hits}


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


def test_builder_lock_timeout_widget_fails_fast_while_another_build_publishes(built, pack_nodes, comfy):
    from comfyui_searchpriors.retrieval.index_files import IndexBusyError, WriterLock

    schema = pack_nodes.MotionIndexBuilder.define_schema()
    assert [i.id for i in schema.inputs][-2:] == ["videos_folder", "lock_timeout"]   # new input at the end
    library = comfy / "input" / "searchpriors_sample" / "locked.csv"
    library.write_text("video,caption\nl0.mp4,a kite flies over the hill\n")
    folder = str(comfy / "models" / "motion_index" / "sample")
    with WriterLock(folder, None):   # another writer (a flock on its own descriptor, as another process has)
        with pytest.raises(IndexBusyError, match="Another build is writing the motion index"):
            run(pack_nodes.MotionIndexBuilder, library="searchpriors_sample/locked.csv", format="auto",
                index_name="sample", spacy_model="en_core_web_sm", sentence_model="all-MiniLM-L6-v2",
                videos_folder="", lock_timeout=0)
    (index, report), _ = run(pack_nodes.MotionIndexBuilder, library="searchpriors_sample/locked.csv", format="auto",
                             index_name="sample", spacy_model="en_core_web_sm", sentence_model="all-MiniLM-L6-v2",
                             videos_folder="", lock_timeout=0)
    assert "1 added" in report


def test_a_node_with_a_bad_schema_is_left_out_and_the_others_load(pack_nodes, caplog):
    from comfy_api.v0_0_2 import io

    class Broken(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="SearchPriors_Broken", display_name="Broken", category="test",
                             inputs=[io.Int.Input("same")], outputs=[io.Int.Output("same")])

        @classmethod
        def execute(cls, same):
            return io.NodeOutput(same)

    good = pack_nodes.loadable_nodes([pack_nodes.PromptAtomizer, Broken, pack_nodes.MotionRetriever])
    assert good == [pack_nodes.PromptAtomizer, pack_nodes.MotionRetriever]
    assert "Broken" in caplog.text and "unique" in caplog.text
    assert pack_nodes.loadable_nodes() == pack_nodes.NODES  # every shipped node's schema is valid
