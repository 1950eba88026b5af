"""Every bundled UI-format workflow loads in the real ComfyUI frontend (headless Chromium) with no
missing or broken node, and queued from the page it runs to completion on the server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows"
UI_WORKFLOWS = sorted(p for p in WORKFLOWS_DIR.glob("*.json") if not p.name.endswith("_api.json"))
FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
RUN_TIMEOUT_S = 600


def wait_for_new_prompt(server, before: set[str], timeout: float) -> tuple[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [prompt_id for prompt_id in server.history() if prompt_id not in before]
        if new:
            return new[0], server.wait_history(new[0], timeout=max(1.0, deadline - time.monotonic()))
        queue = server.queue()
        if not queue.get("queue_running") and not queue.get("queue_pending"):
            time.sleep(0.5)  # it may be between the queue and the history; look once more
            if not [p for p in server.history() if p not in before]:
                raise AssertionError("the page queued nothing: no new prompt in /queue or /history")
        time.sleep(0.25)
    raise AssertionError(f"no new prompt finished within {timeout:.0f} s")


def test_ui_workflows_exist():
    assert UI_WORKFLOWS, f"no UI-format workflows in {WORKFLOWS_DIR}"


@pytest.mark.parametrize("workflow_path", UI_WORKFLOWS, ids=lambda p: p.name)
def test_ui_workflow_loads_and_runs(frontend, comfy_server, sample_index, comfy_harness, workflow_path,
                                    tmp_path):
    workflow = json.loads(workflow_path.read_text(encoding="utf-8"))
    frontend.load_workflow(workflow)

    nodes = frontend.graph_nodes()
    assert sorted(n["id"] for n in nodes) == sorted(n["id"] for n in workflow["nodes"]), "nodes lost on load"
    broken = [n for n in nodes if n["has_errors"] or not n["registered"]]
    assert not broken, f"nodes the frontend could not create (red, missing): {broken}"
    missing_dialogs = [t for t in frontend.dialog_texts() if "missing nodes" in t.lower()]
    assert not missing_dialogs, f"the frontend reports missing nodes: {missing_dialogs}"

    before = set(comfy_server.history())
    frontend.queue()
    node_errors = frontend.last_node_errors()
    assert not node_errors, f"the server rejected the queued graph: {node_errors}"
    prompt_id, entry = wait_for_new_prompt(comfy_server, before, RUN_TIMEOUT_S)
    frontend.page.wait_for_timeout(500)  # let the page draw the results before the screenshot
    frontend.page.screenshot(path=str(tmp_path / f"{workflow_path.stem}.png"))

    status = comfy_harness.history_status(entry)
    error = comfy_harness.history_error(entry)
    assert status == "success", f"{workflow_path.name} queued from the page ended {status!r}: {error}"
    assert frontend.last_execution_error() is None

    # The page sent every executable node of the workflow.
    sent = entry["prompt"][2]
    expected_ids = {str(n["id"]) for n in workflow["nodes"]
                    if n["type"] not in FRONTEND_ONLY_TYPES and n.get("mode", 0) == 0}
    assert set(sent) == expected_ids, f"prompt {prompt_id} has nodes {sorted(sent)}"
