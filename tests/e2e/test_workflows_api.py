"""The bundled workflows, in API format, run to completion on a real server through POST /prompt, and
bad input ends as a readable error on the node while the server keeps serving."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

# UI format in workflows/ (what ComfyUI's Templates dialog lists), API format under workflows/api/ with the
# same base name (a subfolder the Templates dialog does not list).
WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows"
API_WORKFLOWS = sorted((WORKFLOWS_DIR / "api").glob("*.json"))
# Generation workflows need model files: test_pos_workflows.py, test_search_then_tune.py and
# test_motion_lora_apply.py run them with the tiny model.
NEEDS_MODELS = {"pos_modelscope.json", "pos_wan21.json", "search_then_tune.json", "motion_lora_apply.json"}
NEEDS_MODELS |= {"pos_wan22_a14b.json", "pos_hunyuan15.json", "pos_ltxv.json"}   # POS on DiT models: test_pos_workflows.py
NEEDS_MODELS |= {"search_then_tune_wan21.json"}   # test_search_then_tune_wan.py
NEEDS_MODELS |= {"clip_library_pos.json"}   # a VLM captioner and ModelScope: test_clip_library_e2e.py (toy world)
UI_WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.json"))
# Frontend-only nodes that never reach the API format.
FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def nodes_of_type(graph: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in graph.items() if node.get("class_type") == class_type]


def test_ui_and_api_formats_are_where_they_belong():
    """Only UI-format graphs (a dict with "nodes") in workflows/, only API-format ones in workflows/api/."""
    for path in UI_WORKFLOWS:
        assert isinstance(load(path).get("nodes"), list), f"{path.name} in workflows/ is not a UI-format graph"
    for path in API_WORKFLOWS:
        assert all(isinstance(n, dict) and "class_type" in n for n in load(path).values()), \
            f"api/{path.name} is not an API-format graph"
    assert not [p.name for p in UI_WORKFLOWS if p.stem.endswith("_api")], "API files belong in workflows/api/"


def test_every_ui_workflow_has_a_template_thumbnail():
    """The Templates dialog shows workflows/<name>.jpg on the card (scripts/make_template_thumbnails.py)."""
    for ui_path in UI_WORKFLOWS:
        thumbnail = ui_path.with_suffix(".jpg")
        assert thumbnail.is_file(), f"{ui_path.name} has no {thumbnail.name}: run scripts/make_template_thumbnails.py"
        assert thumbnail.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumbnail.name} is not a JPEG"


def test_every_ui_workflow_has_a_card_line_a_note_and_stage_groups():
    """web/template_cards.json gives each card its line and place (build_sample_index first); each UI workflow
    (scripts/make_ui_workflow.py) has one note, titled stage groups and an opening view that draws titles."""
    cards = json.loads((WORKFLOWS_DIR.parent / "web" / "template_cards.json").read_text(encoding="utf-8"))
    assert sorted(c["name"] for c in cards) == sorted(p.stem for p in UI_WORKFLOWS)
    assert cards[0]["name"] == "build_sample_index" and all(c["card"].strip() for c in cards)
    for ui_path in UI_WORKFLOWS:
        workflow = load(ui_path)
        notes = [n for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote")]
        assert len(notes) == 1 and "**Settings that matter**" in notes[0]["widgets_values"][0], ui_path.name
        assert workflow["groups"] and all(g["title"] for g in workflow["groups"]), ui_path.name
        assert workflow["extra"]["ds"]["scale"] >= 0.6, ui_path.name


def test_every_ui_workflow_has_an_api_twin():
    assert UI_WORKFLOWS, f"no UI workflows in {WORKFLOWS_DIR}"
    for ui_path in UI_WORKFLOWS:
        api_path = WORKFLOWS_DIR / "api" / ui_path.name
        assert api_path.exists(), f"{ui_path.name} has no API-format twin api/{api_path.name}"
        ui_types = {node["type"] for node in load(ui_path)["nodes"]} - FRONTEND_ONLY_TYPES
        api_types = {node["class_type"] for node in load(api_path).values()}
        assert ui_types == api_types, f"{ui_path.name} and {api_path.name} use different nodes"


@pytest.mark.parametrize("workflow", [p for p in API_WORKFLOWS if p.name not in NEEDS_MODELS], ids=lambda p: p.name)
def test_api_workflow_completes(comfy_server, sample_index, comfy_harness, workflow):
    entry = comfy_server.run_prompt(load(workflow), timeout=600)
    comfy_harness.assert_success(entry, workflow.name)
    assert entry.get("outputs"), f"{workflow.name} finished with no UI outputs"


def test_retrieval_workflow_ranks_the_sample_library(comfy_server, sample_index, comfy_harness):
    graph = load(comfy_harness.RETRIEVAL_WORKFLOW)
    entry = comfy_server.run_prompt(graph, timeout=600)
    comfy_harness.assert_success(entry, comfy_harness.RETRIEVAL_WORKFLOW.name)

    retrievers = nodes_of_type(graph, "SearchPriors_MotionRetriever")
    assert retrievers, "the retrieval workflow has no MotionRetriever"
    for node_id in retrievers:
        report = "\n".join(comfy_harness.history_texts(entry, node_id))
        assert graph[node_id]["inputs"]["mode"] in report, f"retriever {node_id} report: {report!r}"
        # A ranked table: its first row, and a caption from the sample library.
        assert " 1 " in report and "sample0" in report, f"retriever {node_id} shows no ranking: {report!r}"

    # The reference captions reach a preview: non-empty, one caption per line.
    caption_previews = [
        node_id for node_id, node in graph.items()
        if node["class_type"] == "PreviewAny"
        and node["inputs"].get("source", [None])[0] in retrievers
        and node["inputs"]["source"][1] == 2  # the reference_captions output
    ]
    assert caption_previews, "no preview of the reference captions in the retrieval workflow"
    captions = "\n".join(comfy_harness.history_texts(entry, caption_previews[0])).strip()
    assert captions, "the reference captions are empty"
    assert all(line.strip() for line in captions.splitlines())


def helper_processes(parent: int) -> list[str]:
    """Command lines of running parse helpers (retrieval/parse_worker.py) whose parent is ``parent``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if "parse_worker.py" in cmdline and ppid == parent:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_sample_build_parsed_in_a_helper_that_is_gone_afterwards(comfy_server, sample_index, comfy_harness):
    """The session's server runs with SEARCHPRIORS_PARSE_HELPER_MIN=1 (tests/conftest.py): the builder
    parses in a helper process inside the real ComfyUI, says so, and leaves no process behind."""
    graph = load(comfy_harness.BUILD_INDEX_WORKFLOW)
    report = "\n".join(text for node_id in nodes_of_type(graph, "PreviewAny")
                       for text in comfy_harness.history_texts(sample_index, node_id))
    assert "captions parsed in a helper process" in report, report
    assert "failed" not in report, report
    if Path("/proc/self/stat").exists():
        assert helper_processes(comfy_server.pid) == []


def run_expecting_error(server, harness, graph: dict) -> dict:
    try:
        entry = server.run_prompt(graph, timeout=300)
    except harness.PromptRejected as rejected:
        pytest.fail(f"expected the node to raise while running, but validation rejected the prompt: "
                    f"{rejected}", pytrace=False)
    assert harness.history_status(entry) == "error", f"expected an error, got {entry.get('status')!r}"
    error = harness.history_error(entry)
    assert error is not None, f"no execution_error message in {entry.get('status')!r}"
    return error


@pytest.mark.parametrize("case", ["empty_prompt", "missing_index"])
def test_bad_input_fails_on_the_node_and_the_server_keeps_serving(comfy_server, sample_index,
                                                                  comfy_harness, case):
    good = load(comfy_harness.RETRIEVAL_WORKFLOW)
    bad = copy.deepcopy(good)
    if case == "empty_prompt":
        (node_id,) = nodes_of_type(bad, "SearchPriors_PromptAtomizer")
        bad[node_id]["inputs"]["prompt"] = "   "
        expected_node, expected_words = "SearchPriors_PromptAtomizer", ["empty"]
    else:
        (node_id,) = nodes_of_type(bad, "SearchPriors_MotionIndexLoader")
        bad[node_id]["inputs"]["index_name"] = "no_such_index_xyz"
        expected_node, expected_words = "SearchPriors_MotionIndexLoader", ["no_such_index_xyz"]

    error = run_expecting_error(comfy_server, comfy_harness, bad)
    assert error["node_type"] == expected_node
    assert error["node_id"] == node_id
    message = error["exception_message"]
    for word in expected_words:
        assert word in message.lower() or word in message, f"message does not name the problem: {message!r}"
    assert "Traceback" not in message

    # The server is still serving: a good graph runs next (a new prompt, so nothing comes from the cache).
    assert comfy_server.running
    (atomizer_id,) = nodes_of_type(good, "SearchPriors_PromptAtomizer")
    good[atomizer_id]["inputs"]["prompt"] = f"A dog runs across a beach ({case})"
    entry = comfy_server.run_prompt(good, timeout=600)
    comfy_harness.assert_success(entry, "the good graph after a failed one")
