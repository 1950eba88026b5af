"""Every node of the pack, with its inputs missing or empty, over the API of a server that has no motion
index yet: the answer is the pack's message or ComfyUI's own naming of the input, never a Python error
from the node's contract methods (validate_inputs, fingerprint_inputs), and the server keeps serving.

The nodes are read from /object_info (every id with the pack's prefix), so nodes added later are covered.
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.e2e

PACK_PREFIX = "SearchPriors_"
# What a broken contract method looks like in an answer or in the log.
PYTHON_ERRORS = re.compile(r"TypeError|KeyError|AttributeError|IndexError|positional argument|Traceback")
PACK_ERROR = "SearchPriorsError"   # the pack's own exception class


def is_pack_error(exception_type: str) -> bool:
    """SearchPriorsError or one of its subclasses, which live in the pack's modules (DiffusersFolderError...)."""
    name = str(exception_type or "")
    return name.endswith(PACK_ERROR) or (("SearchPriors" in name or "searchpriors" in name) and name.endswith("Error"))
NO_INDEX_YET = "No motion index yet: build one with Motion Index Builder first"
WIDGET_TYPES = {"STRING", "INT", "FLOAT", "BOOLEAN", "COMBO"}


def pack_nodes(server) -> dict:
    return {name: info for name, info in server.object_info(refresh=True).items() if name.startswith(PACK_PREFIX)}


def input_kind(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def empty_inputs(info: dict) -> dict:
    """Every widget input at its empty value: '' for text and dropdowns, the default for numbers.
    Sockets (other nodes' outputs) stay unconnected."""
    values = {}
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind = input_kind(spec)
            if kind in ("STRING", "COMBO"):
                values[name] = ""
            elif kind in WIDGET_TYPES:
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                values[name] = options.get("default", 0)
    return values


def graph_of(node_id: str, info: dict, inputs: dict) -> dict:
    """The node alone, with a Preview as Text on its first output so that the prompt has an output."""
    graph = {"1": {"class_type": node_id, "inputs": inputs}}
    if info.get("output"):
        graph["2"] = {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    return graph


def problems_in_validation(answer: dict) -> list[str]:
    """Errors in a /prompt answer that are not a clear message: Python errors, foreign exceptions."""
    bad = []
    for node_error in (answer.get("node_errors") or {}).values():
        for error in node_error.get("errors", []):
            text = f"{error.get('message')}: {error.get('details')}"
            exception_type = (error.get("extra_info") or {}).get("exception_type", "")
            if PYTHON_ERRORS.search(text) or (exception_type and not is_pack_error(exception_type)):
                bad.append(f"{node_error.get('class_type')}: {text} ({exception_type})")
    return bad


def submit(server, harness, graph: dict) -> tuple[str, dict]:
    """('rejected', /prompt answer) or ('ran', /history entry)."""
    status, answer = server.post_json("/prompt", {"prompt": graph, "client_id": server.client_id})
    if status == 400:
        return "rejected", answer
    assert status == 200, f"POST /prompt answered {status}: {answer!r}"
    bad = problems_in_validation(answer)
    assert not bad, f"validation errors that are not messages: {bad}"
    return "ran", server.wait_history(answer["prompt_id"], timeout=300)


def check_answer(server, harness, node_id: str, graph: dict) -> str:
    """Submits; returns the messages the user would read; fails on a Python error anywhere."""
    outcome, answer = submit(server, harness, graph)
    if outcome == "rejected":
        bad = problems_in_validation(answer)
        assert not bad, f"{node_id}: validation errors that are not messages: {bad}"
        messages = [f"{e.get('message')}: {e.get('details')}"
                    for ne in (answer.get("node_errors") or {}).values() for e in ne.get("errors", [])]
        assert messages or answer.get("error"), f"{node_id}: rejected without a reason: {answer!r}"
        return "\n".join(messages) or str(answer.get("error"))
    status = harness.history_status(answer)
    if status == "error":
        error = harness.history_error(answer) or {}
        assert is_pack_error(error.get("exception_type", "")), \
            f"{node_id} failed with a Python error, not a message: {error.get('exception_type')}: " \
            f"{error.get('exception_message')}"
        return error.get("exception_message", "")
    return ""


def test_the_pack_has_nodes(bare_server):
    assert pack_nodes(bare_server), "no SearchPriors_ nodes in /object_info"


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_every_pack_node_answers_missing_and_empty_inputs_with_a_message(bare_server, comfy_harness, case):
    log_before = len(bare_server.log_text())
    failures = []
    for node_id, info in sorted(pack_nodes(bare_server).items()):
        inputs = {} if case == "missing" else empty_inputs(info)
        try:
            check_answer(bare_server, comfy_harness, node_id, graph_of(node_id, info, inputs))
        except AssertionError as failure:
            failures.append(str(failure))
    assert not failures, "\n".join(failures)
    new_log = bare_server.log_text()[log_before:]
    broken = [line for line in new_log.splitlines() if "missing" in line and "argument" in line]
    assert not broken, f"a contract method was called without its arguments: {broken}"
    assert bare_server.running


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_index_loader_with_no_index_says_build_one_first(bare_server, comfy_harness, case):
    """The first-run case of the issue: the loader's list is empty (the frontend then sends no value)."""
    info = pack_nodes(bare_server)["SearchPriors_MotionIndexLoader"]
    inputs = {} if case == "missing" else {"index_name": ""}
    message = check_answer(bare_server, comfy_harness, "SearchPriors_MotionIndexLoader",
                           graph_of("SearchPriors_MotionIndexLoader", info, inputs))
    assert NO_INDEX_YET in message, message


def test_search_graph_without_an_index_names_the_fix(bare_server, comfy_harness):
    """Atomizer + loader (empty list) + retriever over the API, as the frontend sends it: rejected with the
    pack's message on the loader, not a TypeError, and nothing reported as a success."""
    graph = {
        "1": {"class_type": "SearchPriors_PromptAtomizer",
              "inputs": {"prompt": "A dog runs", "spacy_model": "en_core_web_sm", "sentence_model": "all-MiniLM-L6-v2"}},
        "2": {"class_type": "SearchPriors_MotionIndexLoader", "inputs": {}},
        "3": {"class_type": "SearchPriors_MotionRetriever",
              "inputs": {"atomized": ["1", 0], "index": ["2", 0], "mode": "search_t2v", "top_k": 5, "t_total": 0.3,
                         "t_mot": 0.9, "t_atr": 0.4, "alpha": 1.0, "beta": 1.0, "gamma": 0.5, "min_keep": 10}},
    }
    status, answer = bare_server.post_json("/prompt", {"prompt": graph, "client_id": bare_server.client_id})
    assert status == 400, f"expected the prompt to be rejected, got {status}: {answer!r}"
    assert not problems_in_validation(answer), answer
    loader_errors = answer["node_errors"]["2"]["errors"]
    assert any(NO_INDEX_YET in e["details"] for e in loader_errors), loader_errors


def test_each_problem_is_reported_once_on_the_input_it_concerns(comfy_server):
    """Issue 19: the Keyframe Extractor's missing detector was reported once per input (detector, keyframe_count,
    width, ...), Reference Video Frames' memory-budget refusal eight times. ComfyUI files a validator's message
    once per input the validator names: the Keyframe Extractor names only its detector, Reference Video Frames
    only the three inputs that decide its memory budget."""
    graph = {
        "1": {"class_type": "SearchPriors_ReferenceFrames",
              "inputs": {"frame_count": 4096, "width": 8192, "height": 8192, "start_seconds": 0.0, "stride": 1,
                         "fps": 8.0, "crop": "center", "rank": 1, "video_path": "x.mp4"}},
        "2": {"class_type": "SearchPriors_KeyframeExtractor",
              "inputs": {"atomized": ["3", 0], "retrieval": ["4", 0], "frames": ["1", 0], "detector": "absent-detector",
                         "keyframe_count": 8, "width": 256, "height": 256, "box_threshold": 0.35,
                         "text_threshold": 0.25, "keep_together": True, "full_frame_above": 0.7, "rank": 1}},
        "3": {"class_type": "SearchPriors_PromptAtomizer", "inputs": {"prompt": "a dog runs"}},
        "4": {"class_type": "SearchPriors_MotionRetriever", "inputs": {"atomized": ["3", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    status, answer = comfy_server.post_json("/prompt", {"prompt": graph, "client_id": comfy_server.client_id})
    assert status == 400, answer
    errors = answer.get("node_errors", {})
    detector = [e for e in errors.get("2", {}).get("errors", []) if "absent-detector" in e.get("details", "")]
    assert [e["extra_info"]["input_name"] for e in detector] == ["detector"], errors.get("2")
    budget = [e for e in errors.get("1", {}).get("errors", []) if "needs about" in e.get("details", "")]
    assert sorted(e["extra_info"]["input_name"] for e in budget) == ["frame_count", "height", "width"], errors.get("1")
    assert comfy_server.running
