"""The POS rewriter end to end in a real ComfyUI: atomize, retrieve in 'pos' mode over the sample index,
rewrite through a chat-completions server on 127.0.0.1 that this test runs; the API key (in the server's
environment, named by the widget) reaches that chat server and nowhere else: not /history, not the saved
workflow, not the PNG metadata. Re-queuing never calls the language model again."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]
WORKFLOW = TESTS.parent / "workflows" / "api" / "pos_rewrite.json"
ANSWER = 'Rewritten: "A cheerful panda rides a shiny bicycle past the Eiffel Tower on a sunny day."\n\nHope it helps!'
CLEAN = "A cheerful panda rides a shiny bicycle past the Eiffel Tower on a sunny day."


def _fake_server_module():
    return harness.load_test_helper("fake_chat_server")


@pytest.fixture()
def chat():
    with _fake_server_module().FakeChatServer({"content": ANSWER}) as srv:
        yield srv


def preview_of(graph: dict, node: str, output: int) -> str:
    return next(k for k, v in graph.items() if v["class_type"] == "PreviewAny" and v["inputs"]["source"] == [node, output])


def rewrite_graph(base_url: str, key_env: str) -> dict:
    graph = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    rewriter = graph["4"]["inputs"]
    rewriter.update(backend="openai_compatible", base_url=base_url, model="loopback-model", api_key_env=key_env,
                    manual_rewrite="")
    graph["90"] = {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}}     # the reference captions
    graph["91"] = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
    graph["92"] = {"class_type": "SaveImage", "inputs": {"images": ["91", 0], "filename_prefix": "rewriter_e2e"}}
    return graph


def ui_workflow(graph: dict) -> dict:
    """What the frontend saves with a queued prompt: every node with its widget values."""
    return {"nodes": [{"id": int(k), "type": v["class_type"],
                       "widgets_values": [x for x in v["inputs"].values() if not isinstance(x, list)]}
                      for k, v in graph.items()]}


def queue(server, harness, graph: dict) -> dict:
    status, answer = server.post_json("/prompt", {"prompt": graph, "client_id": server.client_id,
                                                  "extra_data": {"extra_pnginfo": {"workflow": ui_workflow(graph)}}})
    assert status == 200, answer
    entry = server.wait_history(answer["prompt_id"], timeout=600)
    harness.assert_success(entry, "the rewriter graph")
    return entry


def test_atomize_retrieve_rewrite_through_loopback_and_the_key_stays_secret(comfy_server, sample_index,
                                                                            comfy_harness, chat, e2e_api_key):
    key_env, key = e2e_api_key
    graph = rewrite_graph(chat.base_url, key_env)
    entry = queue(comfy_server, comfy_harness, graph)

    rewritten = "\n".join(comfy_harness.history_texts(entry, preview_of(graph, "4", 0)))
    instruction = "\n".join(comfy_harness.history_texts(entry, preview_of(graph, "4", 1)))
    report = "\n".join(comfy_harness.history_texts(entry, preview_of(graph, "4", 2)))
    references = [ln for ln in "\n".join(comfy_harness.history_texts(entry, "90")).splitlines() if ln.strip()]
    assert rewritten.strip() == CLEAN
    assert len(references) == 5
    expected_refs = ", ".join(" ".join(r.split()).rstrip(" .;,") for r in references)
    assert instruction.strip() == (
        f"Let me give you 5 examples: {expected_refs}, rewrite the sentence A panda rides a bicycle past the "
        f"Eiffel Tower without changing the meaning of the original sentence to a maximum of 20 words, "
        f"imitating/combining the adjectives, adverbs or sentence patterns from the 5 examples above")
    assert "check: passed" in report and f"environment variable {key_env}" in report

    (request,) = chat.requests
    assert request["body"]["messages"] == [{"role": "user", "content": instruction.strip()}]
    assert request["body"]["model"] == "loopback-model"
    assert request["headers"]["Authorization"] == f"Bearer {key}"    # the key did travel, to the chat server only

    # Nowhere else: the whole /history, the graph as queued, the PNG's metadata, the server's log.
    history = json.dumps(comfy_server.history())
    assert key not in history and key_env in history
    assert key not in json.dumps(graph)
    images = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    assert images, "SaveImage wrote nothing"
    png = (comfy_server.output_dir / images[0].get("subfolder", "") / images[0]["filename"]).read_bytes()
    assert key_env.encode() in png and b"SearchPriors_ReferenceRewriter" in png   # metadata holds the graph...
    assert key.encode() not in png                                                  # ...but never the key
    assert key not in comfy_server.log_text()

    # Re-queued as is: ComfyUI's cache; after the server's caches are reset: the rewriter's own cache.
    queue(comfy_server, comfy_harness, graph)
    status, _ = comfy_server.post_json("/free", {"free_memory": True})
    assert status == 200
    time.sleep(1.5)  # the worker applies the flag between prompts
    again = queue(comfy_server, comfy_harness, copy.deepcopy(graph))
    report_again = "\n".join(comfy_harness.history_texts(again, preview_of(graph, "4", 2)))
    assert "answer from the cache" in report_again, report_again
    assert len(chat.requests) == 1
    assert "\n".join(comfy_harness.history_texts(again, preview_of(graph, "4", 0))).strip() == CLEAN
    cache_file = comfy_server.user_dir / "searchpriors" / "rewrite_cache.json"
    assert cache_file.is_file() and key not in cache_file.read_text(encoding="utf-8")


def test_rewriter_error_is_on_the_node_and_names_the_fix(comfy_server, sample_index, comfy_harness, chat,
                                                         e2e_api_key):
    key_env, key = e2e_api_key
    chat.default = {"status": 401, "raw": json.dumps({"error": {"message": f"Incorrect API key {key}"}}).encode()}
    graph = rewrite_graph(chat.base_url, key_env)
    graph["4"]["inputs"]["seed"] = 401
    graph["4"]["inputs"]["cache"] = "memory"
    entry = comfy_server.run_prompt(graph, timeout=600)
    assert comfy_harness.history_status(entry) == "error"
    error = comfy_harness.history_error(entry)
    assert error["node_type"] == "SearchPriors_ReferenceRewriter"
    assert "HTTP 401" in error["exception_message"] and "api_key_env" in error["exception_message"]
    assert key not in json.dumps(comfy_server.history())
    assert comfy_server.running


def _secret_parts(value: str) -> list[str]:
    """The value and each part of it around a control character: none may appear anywhere."""
    return [p for p in [value.strip()] + value.replace("\r", "\n").split("\n") if len(p) >= 8]


def _assert_nowhere(comfy_server, values) -> None:
    history = json.dumps(comfy_server.history())
    log = comfy_server.log_text()
    saved = b"".join(p.read_bytes() for p in comfy_server.output_dir.rglob("*") if p.is_file())
    cache = comfy_server.user_dir / "searchpriors" / "rewrite_cache.json"
    cached = cache.read_text(encoding="utf-8") if cache.is_file() else ""
    for value in values:
        for part in _secret_parts(value):
            assert part not in history and part not in log and part not in cached, part
            assert part.encode() not in saved, part


def _failed_on_the_rewriter(comfy_server, comfy_harness, graph) -> str:
    entry = comfy_server.run_prompt(graph, timeout=600)
    assert comfy_harness.history_status(entry) == "error"
    error = comfy_harness.history_error(entry)
    assert error["node_type"] == "SearchPriors_ReferenceRewriter", error
    assert comfy_server.running
    return error["exception_message"]


def _refused_at_validation(comfy_server, graph) -> str:
    """The rewriter's validation error for ``graph`` (ComfyUI still runs the graph's other outputs, if any)."""
    status, answer = comfy_server.post_json("/prompt", {"prompt": graph, "client_id": comfy_server.client_id})
    errors = answer.get("node_errors") or {}
    assert "4" in errors, answer
    if status == 200:
        comfy_server.wait_history(answer["prompt_id"], timeout=600)
    assert comfy_server.running
    return json.dumps(errors["4"])


def test_a_crlf_key_is_sent_stripped_and_shown_nowhere(comfy_server, sample_index, comfy_harness, chat,
                                                        e2e_secrets):
    name = "SEARCHPRIORS_E2E_CRLF_API_KEY"
    key = e2e_secrets[name]
    graph = rewrite_graph(chat.base_url, name)
    graph["4"]["inputs"].update(seed=1310, cache="memory")
    queue(comfy_server, comfy_harness, graph)
    (request,) = chat.requests
    assert request["headers"]["Authorization"] == f"Bearer {key.strip()}"
    _assert_nowhere(comfy_server, [key])


def test_a_key_with_a_control_character_inside_is_refused_by_name(comfy_server, sample_index, comfy_harness, chat,
                                                                 e2e_secrets):
    name = "SEARCHPRIORS_E2E_BROKEN_API_KEY"
    graph = rewrite_graph(chat.base_url, name)
    graph["4"]["inputs"].update(seed=1311, cache="memory")
    message = _refused_at_validation(comfy_server, graph)
    assert name in message and "control character" in message
    assert chat.requests == []
    _assert_nowhere(comfy_server, [e2e_secrets[name]])


def test_a_workflow_cannot_name_another_secret(comfy_server, sample_index, comfy_harness, chat, e2e_secrets):
    graph = rewrite_graph(chat.base_url, "HF_TOKEN")
    graph["4"]["inputs"].update(seed=1312, cache="memory")
    message = _refused_at_validation(comfy_server, graph)     # refused before the graph runs
    assert "HF_TOKEN" in message and "SEARCHPRIORS_ALLOWED_KEY_VARS" in message
    assert chat.requests == []
    _assert_nowhere(comfy_server, [e2e_secrets["HF_TOKEN"]])


def test_a_redirect_does_not_take_the_key_along(comfy_server, sample_index, comfy_harness, chat, e2e_api_key):
    key_env, key = e2e_api_key
    with _fake_server_module().FakeChatServer({"content": ANSWER}) as elsewhere:
        chat.default = {"status": 302, "headers": {"Location": elsewhere.base_url + "/chat/completions"}}
        graph = rewrite_graph(chat.base_url, key_env)
        graph["4"]["inputs"].update(seed=1313, cache="memory")
        message = _failed_on_the_rewriter(comfy_server, comfy_harness, graph)
        assert "redirect (HTTP 302)" in message and "not followed" in message
        assert elsewhere.requests == [] and len(chat.requests) == 1
    _assert_nowhere(comfy_server, [key])
