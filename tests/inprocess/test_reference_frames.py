"""Reference Video Frames called in-process with ComfyUI's modules: retrieval and path sources, confinement,
validation and fingerprint contracts, Cancel."""

from __future__ import annotations

import math
import os

import pytest

from comfyui_searchpriors.retrieval.errors import SearchPriorsError

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
clips = harness.load_test_helper("video_clips")

WIDGETS = dict(frame_count=4, width=32, height=24, start_seconds=1.0, stride=2, fps=8.0, crop="center")


def indices(frames) -> list[int]:
    return [clips.frame_index(f.numpy()) for f in frames]


@pytest.fixture(scope="module")
def node(pack_nodes):
    from comfyui_searchpriors.nodes.reference_frames_nodes import ReferenceFrames

    return ReferenceFrames


@pytest.fixture(scope="module")
def videos(comfy):
    """Two clips under ComfyUI's input folder (30 frames at 10 fps) and one outside every ComfyUI folder."""
    folder = comfy / "input" / "refclips"
    folder.mkdir(exist_ok=True)
    a = clips.write_clip(folder / "a.mp4", 30, fps=10)
    b = clips.write_clip(folder / "b.mp4", 30, fps=10, width=48, height=48)
    outside = comfy.parent / "outside_clips"
    outside.mkdir(exist_ok=True)
    c = clips.write_clip(outside / "c.mp4", 30, fps=10)
    return {"a": a, "b": b, "outside": c}


def retrieval_of(paths):
    """A RETRIEVAL as MotionRetriever returns it: ``search()``'s Retrieval with one Hit per entry."""
    from comfyui_searchpriors.retrieval.search import Hit, Retrieval, SearchParams

    hits = [Hit(rank=r, row=r - 1, video_id=f"v{r}", caption=f"caption number {r}", video_path=p, score=1.0 / r,
                parts={"cosine": 1.0 / r}) for r, p in enumerate(paths, 1)]
    return Retrieval(prompt="a test", mode="pos", params=SearchParams(mode="pos"), hits=hits, index_count=len(hits),
                     index_name="test")


def test_schema_sockets_in_order(node):
    schema = node.define_schema()
    assert schema.node_id == "SearchPriors_ReferenceFrames" and schema.category == "SearchPriors/video"
    assert [i.id for i in schema.inputs] == ["frame_count", "width", "height", "start_seconds", "stride", "fps",
                                             "crop", "retrieval", "rank", "video_path"]
    assert [bool(getattr(i, "optional", False)) for i in schema.inputs] == [False] * 7 + [True] * 3
    assert {i.id: i.default for i in schema.inputs if i.id in ("frame_count", "width", "height", "stride")} == \
        {"frame_count": 16, "width": 256, "height": 256, "stride": 1}
    assert [o.id for o in schema.outputs] == ["frames", "info", "caption"]


def test_video_path_relative_to_input(node, videos):
    frames, info, caption = node.execute(**WIDGETS, video_path="refclips/a.mp4").args
    assert frames.shape == (4, 24, 32, 3) and indices(frames) == [10, 12, 14, 16]
    assert caption == ""
    assert "a.mp4" in info and "10.000 fps" in info and "64x48" in info and "source frames 10, 12, 14, 16" in info


def test_absolute_path_inside_comfy_folders_is_allowed(node, videos):
    frames, _, _ = node.execute(**WIDGETS, video_path=videos["b"]).args
    assert indices(frames) == [10, 12, 14, 16]


def test_retrieval_rank_picks_the_entry(node, videos):
    retrieval = retrieval_of([videos["a"], videos["b"]])
    frames, info, caption = node.execute(**{**WIDGETS, "stride": 0, "fps": 5.0}, retrieval=retrieval, rank=2).args
    assert caption == "caption number 2" and "rank 2" in info and "b.mp4" in info
    assert indices(frames) == [10, 12, 14, 16]
    frames, _, caption = node.execute(**WIDGETS, retrieval=retrieval).args   # rank defaults to the best
    assert caption == "caption number 1"


def test_retrieval_paths_come_from_the_users_index(node, videos):
    """A library may keep its videos anywhere; only typed paths are confined."""
    frames, _, _ = node.execute(**WIDGETS, retrieval=retrieval_of([videos["outside"]]), rank=1).args
    assert frames.shape[0] == 4


@pytest.mark.parametrize("paths, rank, words", [
    ([None, "x"], 1, ["rank 1", "v1", "caption number 1", "no local video", "Ranks with a local video: 2"]),
    ([None], 1, ["no local video", "No entry of this retrieval has one"]),
    (["a", "b"], 3, ["rank 3 is out of range", "2 entries", "top_k"]),
    ([], 1, ["no entries"]),
])
def test_retrieval_errors_name_the_entry(node, videos, paths, rank, words):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    paths = [videos[p] if p in ("a", "b") else (videos["a"] if p == "x" else None) for p in paths]
    with pytest.raises(SearchPriorsError) as err:
        node.execute(**WIDGETS, retrieval=retrieval_of(paths), rank=rank)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_retrieval_video_deleted_since_indexing(node, comfy, videos, tmp_path):
    gone = str(tmp_path / "gone.mp4")
    with pytest.raises(ValueError, match="no longer exists"):
        node.execute(**WIDGETS, retrieval=retrieval_of([gone]), rank=1)


@pytest.mark.parametrize("inputs, words", [
    (dict(), "No video given"),
    (dict(video_path="   "), "No video given"),
    (dict(video_path="refclips/a.mp4", retrieval="R"), "not both"),
    (dict(video_path="../../etc/passwd"), "contains '..'"),
    (dict(video_path="refclips/../../x.mp4"), "contains '..'"),
    (dict(video_path="/etc/passwd"), "outside ComfyUI's input, output, user and models folders"),
    (dict(video_path="OUTSIDE"), "outside ComfyUI's input, output, user and models folders"),
    (dict(video_path="refclips/none.mp4"), "does not exist"),
    (dict(video_path="refclips"), "not a file"),
])
def test_source_errors(node, videos, inputs, words):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    inputs = dict(inputs)
    if inputs.get("retrieval") == "R":
        inputs["retrieval"] = retrieval_of([videos["a"]])
    if inputs.get("video_path") == "OUTSIDE":
        inputs["video_path"] = videos["outside"]
    with pytest.raises(SearchPriorsError, match=words.replace("'", ".").replace("(", r"\(")):
        node.execute(**WIDGETS, **inputs)


def test_file_errors_reach_the_node(node, comfy, videos):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    (comfy / "input" / "refclips" / "text.mp4").write_text("not a video")
    with pytest.raises(SearchPriorsError, match="not a readable video file"):
        node.execute(**WIDGETS, video_path="refclips/text.mp4")
    with pytest.raises(SearchPriorsError, match="too short.*frame_count 10 or less"):
        node.execute(**{**WIDGETS, "frame_count": 20}, video_path="refclips/a.mp4")


def test_validate_inputs_checks_the_memory_budget_on_the_three_inputs_that_decide_it(node, videos):
    """Named: frame_count, width, height only (ComfyUI files a validator's message once per named input and
    checks the others itself); the rest is checked when the node runs."""
    import inspect

    assert list(inspect.signature(node.validate_inputs).parameters) == ["frame_count", "width", "height"]
    assert node.validate_inputs() is True
    assert node.validate_inputs(frame_count=16, width=256, height=256) is True
    assert node.validate_inputs(frame_count=None, width=256, height=256) is True   # linked: checked when it runs
    assert "frame_count is 0, below its minimum of 1" in node.validate_inputs(frame_count=0)
    assert "width is -8, below its minimum of 8" in node.validate_inputs(width=-8)
    assert "4096 frames at 8192x8192 needs about" in node.validate_inputs(frame_count=4096, width=8192, height=8192)
    with pytest.raises(SearchPriorsError, match="Unknown crop mode"):
        node.execute(**{**WIDGETS, "crop": "zoom"}, video_path="refclips/a.mp4")
    with pytest.raises(SearchPriorsError, match="fps, which must be above 0"):
        node.execute(**{**WIDGETS, "stride": 0, "fps": 0.0}, video_path="refclips/a.mp4")


def test_fingerprint_by_path_size_and_mtime(node, videos):
    assert node.fingerprint_inputs() == node.fingerprint_inputs(rank=3)   # a linked retrieval: constant
    first = node.fingerprint_inputs(**WIDGETS, video_path="refclips/a.mp4")
    assert first == node.fingerprint_inputs(video_path="refclips/a.mp4")
    assert first[0] == videos["a"]
    st = os.stat(videos["a"])
    os.utime(videos["a"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert node.fingerprint_inputs(video_path="refclips/a.mp4") != first
    assert node.fingerprint_inputs(video_path="refclips/b.mp4") != first
    by_retrieval = node.fingerprint_inputs(retrieval=retrieval_of([videos["a"], videos["b"]]), rank=2)
    assert by_retrieval == node.fingerprint_inputs(video_path="refclips/b.mp4")
    for bad in ("../x.mp4", "/etc/passwd", "refclips/none.mp4"):
        value = node.fingerprint_inputs(video_path=bad)
        assert isinstance(value, float) and math.isnan(value)   # re-run so the error shows on the node


def test_cancel_stops_decoding(node, videos):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            node.execute(**WIDGETS, video_path="refclips/a.mp4")
    finally:
        mm.interrupt_current_processing(False)
    frames, _, _ = node.execute(**WIDGETS, video_path="refclips/a.mp4").args
    assert frames.shape[0] == 4


def test_retrieval_from_the_real_retriever(pack_nodes, comfy, videos, node):
    """Index a library of the two clips, retrieve in pos mode, and take the best entry's frames."""
    library = comfy / "input" / "refclips" / "library.csv"
    library.write_text("video,caption\na.mp4,a dog runs across a green field\nb.mp4,a red car drives on a road\n"
                       "missing.mp4,a dog sleeps on a sofa\n")
    index, _ = pack_nodes.MotionIndexBuilder.execute(
        library="refclips/library.csv", format="auto", index_name="refclips", spacy_model="en_core_web_sm",
        sentence_model="all-MiniLM-L6-v2", videos_folder="").args
    atomized, _ = pack_nodes.PromptAtomizer.execute(prompt="a car driving down a road", spacy_model="en_core_web_sm",
                                                    sentence_model="all-MiniLM-L6-v2").args
    retrieval = pack_nodes.MotionRetriever.execute(atomized=atomized, index=index, mode="pos", top_k=3, t_total=0.3,
                                                   t_mot=0.9, t_atr=0.4, alpha=1.0, beta=1.0, gamma=0.5,
                                                   min_keep=10).args[0]
    assert retrieval.best.caption == "a red car drives on a road"
    frames, info, caption = node.execute(**WIDGETS, retrieval=retrieval, rank=1).args
    assert caption == "a red car drives on a road" and "b.mp4" in info and frames.shape == (4, 24, 32, 3)
    no_video = next(h.rank for h in retrieval.hits if h.video_path is None)
    with pytest.raises(ValueError, match="a dog sleeps on a sofa"):
        node.execute(**WIDGETS, retrieval=retrieval, rank=no_video)


def test_a_symbolic_link_out_of_the_input_folder_is_refused(node, comfy, videos):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    link = comfy / "input" / "refclips" / "link.mp4"
    if not link.exists():
        os.symlink(videos["outside"], link)
    with pytest.raises(SearchPriorsError, match="symbolic link .* outside ComfyUI's input, output, user and models"):
        node.execute(**WIDGETS, video_path="refclips/link.mp4")
    folder_link = comfy / "input" / "outside_folder"
    if not folder_link.exists():
        os.symlink(os.path.dirname(videos["outside"]), folder_link)
    with pytest.raises(SearchPriorsError, match="symbolic link"):
        node.execute(**WIDGETS, video_path="outside_folder/c.mp4")
    # a link that stays inside ComfyUI's folders is followed
    inside = comfy / "input" / "refclips" / "inside_link.mp4"
    if not inside.exists():
        os.symlink(videos["a"], inside)
    frames, info, _ = node.execute(**WIDGETS, video_path="refclips/inside_link.mp4").args
    assert frames.shape[0] == 4 and os.path.realpath(videos["a"]) in info


def test_custom_nodes_is_not_an_allowed_root(node, comfy, pack_nodes):
    import folder_paths

    from comfyui_searchpriors.nodes.comfy_internals import glue as comfy_glue
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    custom = os.path.realpath(folder_paths.get_folder_paths("custom_nodes")[0])
    assert all(os.path.commonpath([custom, root]) != root for root in comfy_glue.allowed_roots())
    with pytest.raises(SearchPriorsError, match="outside ComfyUI's input, output, user and models folders"):
        comfy_glue.resolve_user_path(os.path.join(custom, "example_node.py.example"), str(comfy / "input"),
                                     "Video path")


def test_a_nul_byte_is_named_as_such(node, videos):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError) as refused:
        node.execute(**WIDGETS, video_path="refclips/a.mp4\x00.txt")
    assert "NUL character" in str(refused.value) and "'..'" not in str(refused.value)


def test_memory_budget_refused_on_validation_and_execute(node, pack_nodes, videos, monkeypatch):
    from comfyui_searchpriors.distill import memory_budget as mb

    monkeypatch.setenv(mb.BUDGET_ENV, "64")
    message = node.validate_inputs(frame_count=24, width=8192, height=8192)
    assert "24 frames at 8192x8192 needs about 23,040 MiB" in message and "(64 MiB)" in message
    with pytest.raises(mb.MemoryBudgetError, match="needs about"):
        node.execute(**{**WIDGETS, "frame_count": 16, "width": 1024, "height": 1024}, video_path="refclips/a.mp4")
    keyframes = pack_nodes.KeyframeExtractor
    # the Keyframe Extractor's validator names only its detector (one message there); its budget is checked
    # when it runs, before any crop is made
    with pytest.raises(mb.MemoryBudgetError, match="8 keyframes at 4096x4096 needs about"):
        keyframes.execute(atomized=None, retrieval=None, frames=None, detector="x", keyframe_count=8, width=4096,
                          height=4096)


def test_a_retrieved_shot_inside_a_longer_file(node, videos):
    """start_seconds counts from the shot's start; frames past its end are not used; a clear refusal."""
    import dataclasses

    retrieval = retrieval_of([videos["a"]])
    retrieval.hits[0] = dataclasses.replace(retrieval.hits[0], start_s=1.0, end_s=2.0)
    frames, info, _ = node.execute(**{**WIDGETS, "frame_count": 3, "stride": 2, "start_seconds": 0.2},
                                   retrieval=retrieval).args
    assert indices(frames) == [12, 14, 16] and "shot 1-2 s of the file" in info
    with pytest.raises(SearchPriorsError, match="does not fit in the shot.*1.00 s long"):
        node.execute(**{**WIDGETS, "frame_count": 11, "stride": 1, "start_seconds": 0.0}, retrieval=retrieval)
