"""The pack on the newest tested ComfyUI frontend (1.58.1, served by the same ComfyUI 0.3.75 through
--front-end-root beside the pinned 1.32.9, which tests/e2e/test_browser.py covers in full): a focused subset
where the two frontends differ. The Search-T2V retrieval workflow, queued from the page in the classic canvas
and in "Nodes 2.0": Preview as Text (1.58: a 'preview_text' widget with a Plain text / Markdown switch) shows
the pack's text line by line in both modes, its ranking tables as tables in Markdown and as one readable line
per row in plain text; the Motion Retriever shows its report on the node; no node spreads over another; the
extension logs no error. Screenshots of what a user sees go to the test's tmp_path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "search_t2v_retrieval.json"
PACK_PREFIX = "SearchPriors_"
RUN_TIMEOUT_S = 300


def squash(line: str) -> str:
    return " ".join(line.split())


def shown_lines(text: str) -> list[str]:
    return [squash(line) for line in text.splitlines() if line.strip()]


def split_table(text: str) -> tuple[list[str], list[list[list[str]]]]:
    """(the lines outside tables, [table: [row: [cell]]]) of the pack's Markdown text, delimiter rows left out."""
    lines, tables, current = [], [], None
    for line in text.splitlines():
        if line.strip().startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = []
                tables.append(current)
            if not all(c and set(c) <= set(":-") for c in cells):
                current.append(cells)
        else:
            current = None
            if line.strip():
                lines.append(squash(line))
    return lines, tables


def wait_for_prompt(server, before: set[str]) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        new = [p for p in server.history() if p not in before]
        if new:
            return server.wait_history(new[0], timeout=max(1.0, deadline - time.monotonic()))
        time.sleep(0.25)
    raise AssertionError(f"no new prompt finished within {RUN_TIMEOUT_S} s")


def screenshot_nodes(frontend, path: Path, x: float, y: float) -> None:
    """A screenshot at 100 % with the canvas point (x, y) near the top left corner."""
    frontend.page.evaluate("""([x, y]) => { const ds = window.app.canvas.ds; ds.scale = 1;
        ds.offset[0] = 80 - x; ds.offset[1] = 60 - y; window.app.canvas.setDirty(true, true); }""", [x, y])
    frontend.page.wait_for_timeout(600)
    frontend.page.screenshot(path=str(path))


def overlapping_nodes(frontend, nodes_2: bool) -> list:
    """Pairs of nodes whose boxes on the page overlap: in "Nodes 2.0" each node's element (it grows with its
    content), in the classic canvas the graph's node boxes (title bar included)."""
    return frontend.page.evaluate(
        """(vue) => {
               const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
               const boxes = window.app.graph._nodes.map(n => {
                   if (vue) {
                       const r = document.querySelector(`.lg-node[data-node-id="${n.id}"]`).getBoundingClientRect();
                       return {id: n.id, l: r.left, t: r.top, r: r.right, b: r.bottom};
                   }
                   return {id: n.id, l: n.pos[0], t: n.pos[1] - title, r: n.pos[0] + n.size[0], b: n.pos[1] + n.size[1]};
               });
               const out = [];
               for (const a of boxes) for (const b of boxes) {
                   if (a.id < b.id && a.l < b.r - 1 && b.l < a.r - 1 && a.t < b.b - 1 && b.t < a.b - 1) out.push([a, b]);
               }
               return out;
           }""", nodes_2)


def check_plain_previews(frontend, previews: dict) -> None:
    for node_id, text in previews.items():
        box = frontend.preview_box(node_id)
        assert box and box["kind"] == "plain", f"node {node_id}: {box}"
        lines, tables = split_table(text)
        shown = shown_lines(box["text"])
        assert [line for line in shown if not line.startswith("#")] == lines, f"node {node_id}: {box['text']!r}"
        assert not any(line.startswith("|") for line in shown), f"node {node_id} shows raw pipes: {box['text']!r}"
        rows = [line for line in shown if line.startswith("#")]
        body = [row for table in tables for row in table[1:]]
        assert len(rows) == len(body), f"node {node_id}: {rows} for {body}"
        for line, cells in zip(rows, body):
            assert line.startswith(f"#{cells[0]} ") and all(squash(c) in line for c in cells), (line, cells)


@pytest.mark.parametrize("nodes_2", [False, True], ids=["classic", "nodes2"])
def test_retrieval_text_reads_right_on_the_newest_frontend(newest_frontend, comfy_harness, nodes_2, tmp_path):
    frontend = newest_frontend
    canvas = "nodes2" if nodes_2 else "classic"
    assert frontend.frontend_version() == comfy_harness.NEWEST_FRONTEND_VERSION
    frontend.set_nodes_2(nodes_2)
    workflow = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    frontend.load_workflow(workflow)
    broken = [n for n in frontend.graph_nodes() if n["has_errors"] or not n["registered"]]
    assert not broken, f"nodes the frontend could not create: {broken}"
    assert not overlapping_nodes(frontend, nodes_2), "the workflow's nodes overlap before it runs"

    before = set(frontend.server.history())
    frontend.queue()
    assert not frontend.last_node_errors()
    entry = wait_for_prompt(frontend.server, before)
    assert comfy_harness.history_status(entry) == "success", comfy_harness.history_error(entry)
    frontend.page.wait_for_timeout(1000)

    links = {link[0]: link for link in workflow["links"]}
    types = {n["id"]: n["type"] for n in workflow["nodes"]}
    previews = {n["id"]: "\n".join(comfy_harness.history_texts(entry, str(n["id"])))
                for n in workflow["nodes"] if n["type"] == "PreviewAny"
                and types[links[n["inputs"][0]["link"]][1]].startswith(PACK_PREFIX)}
    assert len(previews) == 4 and sum("|" in t for t in previews.values()) == 2, previews

    # Plain text (1.58's default): every line kept; a table row reads as one "#rank column: value, ..." line.
    # The classic canvas of 1.58.1 shows that text box with the switch on Markdown too.
    assert frontend.set_preview_mode(False) == 4
    check_plain_previews(frontend, previews)
    screenshot_nodes(frontend, tmp_path / f"plain-{canvas}.png", 1220, 40)
    frontend.set_preview_mode(True)
    if not nodes_2:
        check_plain_previews(frontend, previews)
    else:
        # Markdown: the same lines, one per line (not one paragraph), and the tables rendered as tables.
        for node_id, text in previews.items():
            box = frontend.preview_box(node_id)
            assert box and box["kind"] == "markdown", f"node {node_id}: {box}"
            lines, tables = split_table(text)
            shown = shown_lines(box["text"])
            table_lines = {squash(" ".join(row)) for table in box["tables"] for row in table}
            assert [line for line in shown if line not in table_lines] == lines, f"node {node_id}: {box['text']!r}"
            assert [[[squash(c) for c in row] for row in table] for table in box["tables"]] == \
                   [[[squash(c) for c in row] for row in table] for table in tables], f"node {node_id}: {box['tables']}"
    screenshot_nodes(frontend, tmp_path / f"markdown-{canvas}.png", 1220, 40)

    # 1.58 refills Preview as Text when outputs are restored wholesale; the pack's form stays.
    frontend.page.evaluate("() => { window.app.nodeOutputs = {...window.app.nodeOutputs}; }")
    frontend.page.wait_for_timeout(300)
    node_id, text = next((k, v) for k, v in previews.items() if "|" not in v)
    assert shown_lines(frontend.preview_box(node_id)["text"]) == split_table(text)[0]

    # The Motion Retrievers show their report (a table) on the node, and no node spreads over another.
    for node in workflow["nodes"]:
        if node["type"] == "SearchPriors_MotionRetriever":
            report = frontend.text_boxes(node["id"]).get("searchpriors_report")
            first = comfy_harness.history_texts(entry, str(node["id"]))[0].splitlines()[0]
            assert report and squash(first) in shown_lines(report["text"]), f"node {node['id']}: {report}"
            assert report["tables"] and len(report["tables"][0]) > 1, report
    screenshot_nodes(frontend, tmp_path / f"report-{canvas}.png", 600, 40)
    overlaps = overlapping_nodes(frontend, nodes_2)
    assert not overlaps, f"nodes spread over each other: {overlaps}"

    errors = [e for e in frontend.console_errors if "searchpriors" in e.lower()]
    assert not errors, f"the extension logged errors: {errors}"
