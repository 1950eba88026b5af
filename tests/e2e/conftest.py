"""Browser fixtures: Debian's headless Chromium driven by Playwright against the server's real frontend.

Playwright's own browser download cannot work here, so the system Chromium is used
(SEARCHPRIORS_CHROMIUM overrides /usr/bin/chromium).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

CHROMIUM = Path(os.environ.get("SEARCHPRIORS_CHROMIUM", "/usr/bin/chromium"))
TESTS_DIR = Path(__file__).resolve().parents[1]
# Without the networking flags Chromium keeps trying hosts that this closed network refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_READY_TIMEOUT_MS = 120_000


# Module scope, not session: while Playwright's sync API is open its event loop counts as running in this
# thread, and any later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def chromium(unavailable):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (requirements-dev.txt)")
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM}; run `make setup`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class FrontendPage:
    """One tab on the ComfyUI frontend, with what the page logged."""

    def __init__(self, page, server):
        self.page = page
        self.server = server
        self.console_errors: list[str] = []
        page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))
        page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))

    def open(self) -> None:
        self.page.goto(self.server.url + "/", wait_until="domcontentloaded")
        self.page.wait_for_function("() => window.app && window.app.graph", timeout=PAGE_READY_TIMEOUT_MS)
        self.close_dialogs()

    def close_dialogs(self) -> None:
        for _ in range(3):
            if not self.dialog_texts():
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(200)

    def dialog_texts(self) -> list[str]:
        return self.page.evaluate(
            "() => Array.from(document.querySelectorAll('[role=dialog], .p-dialog'))"
            "       .filter(d => d.offsetParent !== null || d.getClientRects().length)"
            "       .map(d => d.innerText)")

    def load_workflow(self, workflow: dict) -> None:
        self.page.evaluate("async (w) => { await window.app.loadGraphData(w); }", workflow)
        self.page.wait_for_timeout(500)  # dialogs open after the graph is configured

    def graph_nodes(self) -> list[dict]:
        return self.page.evaluate(
            """() => window.app.graph._nodes.map(n => ({
                   id: n.id, type: n.type, has_errors: !!n.has_errors,
                   registered: !!(window.LiteGraph?.registered_node_types?.[n.type] || n.constructor?.nodeData),
               }))""")

    def queue(self) -> None:
        self.page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")

    def last_node_errors(self) -> dict:
        return self.page.evaluate("() => window.app.lastNodeErrors ?? {}") or {}

    def last_execution_error(self):
        return self.page.evaluate("() => window.app.lastExecutionError ?? null")


    def open_templates(self) -> None:
        """Opens the Templates dialog (what a new user sees first) and waits for its cards."""
        self.close_dialogs()
        self.page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        self.page.locator("[data-testid^='template-workflow-']").first.wait_for(timeout=PAGE_READY_TIMEOUT_MS)

    def text_boxes(self, node_id: int) -> dict:
        """What each text box of a node shows, by widget name: {"kind": "markdown" or "plain", "text": the lines
        as shown, "tables": [[[cell, ...], ...], ...]}. Read from the rendered DOM of either frontend: 1.32.9's
        Markdown boxes (widget.element, a ProseMirror editor), 1.58.1's classic canvas (the same for Markdown
        widgets; its text preview, a Vue component in a DOM-widget container, is found by position, so the view
        is moved onto the node and back) and its "Nodes 2.0" mode (rows tagged data-widget-name in the node's
        element). A Markdown line ends at a line break or a block element; innerText would depend on whether
        the node is on screen at the moment, so the lines are taken from the elements. A plain-text box (1.58's
        Plain text mode) gives its value. A table's cells are given in "tables", not in the lines."""
        return self.page.evaluate(
            """async (id) => {
                   const BLOCKS = new Set(['P', 'DIV', 'LI', 'TR', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'PRE']);
                   const lines = (el) => {
                       let out = '';
                       for (const child of el.childNodes) {
                           if (child.nodeType === Node.TEXT_NODE) out += child.textContent;
                           else if (child.nodeName === 'BR') out += '\\n';
                           else if (child.nodeName === 'TABLE') out += '\\n';   // tables: read cell by cell
                           else if (child.nodeType === Node.ELEMENT_NODE) {
                               out += lines(child);
                               if (BLOCKS.has(child.nodeName)) out += '\\n';
                           }
                       }
                       return out;
                   };
                   const read = (el) => {
                       const box = el.querySelector('.ProseMirror, .comfy-markdown-content, textarea')
                           ?? (el.matches('textarea, .comfy-markdown-content') ? el : null)
                           ?? (el.classList.contains('comfy-markdown') ? el : null);
                       if (!box) return null;
                       if (box.tagName === 'TEXTAREA') return {kind: 'plain', text: box.value, tables: []};
                       const tables = [...box.querySelectorAll('table')].map(t => [...t.querySelectorAll('tr')]
                           .map(tr => [...tr.querySelectorAll('th, td')].map(c => c.textContent.trim())));
                       return {kind: 'markdown', text: lines(box), tables};
                   };
                   const frame = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
                   const app = window.app;
                   const node = app.graph.getNodeById(id);
                   const vueNode = document.querySelector(`.lg-node[data-node-id="${id}"]`);
                   const out = {};
                   let moved = null;
                   for (const w of node?.widgets ?? []) {
                       let el = null;
                       if (vueNode) el = vueNode.querySelector(`[data-widget-name="${CSS.escape(w.name)}"]`);
                       if (!el && w.element?.isConnected) el = w.element;
                       if (!el && !vueNode && w.type === 'textPreview') {
                           const ds = app.canvas.ds;
                           if (!moved) {
                               moved = {scale: ds.scale, offset: [...ds.offset]};
                               ds.scale = 1; ds.offset[0] = 100 - node.pos[0]; ds.offset[1] = 100 - node.pos[1];
                               app.canvas.setDirty(true, true); await frame();
                           }
                           const canvasBox = app.canvas.canvas.getBoundingClientRect();
                           const left = canvasBox.left + 100, top = canvasBox.top + 100;
                           el = [...document.querySelectorAll('.dom-widget')].find(d => {
                               const r = d.getBoundingClientRect();
                               return d.querySelector(`[aria-label="${CSS.escape(w.name)}"]`) && r.width > 0
                                   && r.left >= left - 2 && r.left <= left + node.size[0]
                                   && r.top >= top - 2 && r.top <= top + node.size[1];
                           }) ?? null;
                       }
                       const shown = el ? read(el) : null;
                       if (shown) out[w.name] = shown;
                   }
                   if (moved) {
                       app.canvas.ds.scale = moved.scale; app.canvas.ds.offset[0] = moved.offset[0];
                       app.canvas.ds.offset[1] = moved.offset[1]; app.canvas.setDirty(true, true);
                   }
                   return out;
               }""", node_id)

    def markdown_texts(self, node_id: int) -> dict:
        """The text each text box of a node shows, by widget name (text_boxes without the details)."""
        return {name: box["text"] for name, box in self.text_boxes(node_id).items()}

    def preview_box(self, node_id: int) -> dict | None:
        """What a Preview as Text node shows in its preview, whatever the frontend calls the widget (1.32.9:
        'preview', 1.58.1: 'preview_text'); None if it shows no text box."""
        boxes = self.text_boxes(node_id)
        return boxes.get("preview_text") or boxes.get("preview")

    def set_preview_mode(self, markdown: bool) -> int:
        """Sets every Preview as Text's Plain text / Markdown switch (frontend 1.58) as a click on it does;
        returns how many switches there were (0 on 1.32.9, which has none)."""
        count = self.page.evaluate(
            """(on) => {
                   let count = 0;
                   for (const node of window.app.graph._nodes) {
                       const w = node.widgets?.find(w => w.name === 'preview_mode');
                       if (!w) continue;
                       w.value = on; w.callback?.(on); count++;
                   }
                   window.app.graph.setDirtyCanvas(true, true);
                   return count;
               }""", markdown)
        self.page.wait_for_timeout(300)
        return count

    def set_nodes_2(self, enabled: bool) -> None:
        """Switches the canvas between classic and "Nodes 2.0" (the setting Comfy.VueNodes.Enabled)."""
        self.page.evaluate("async (on) => { await window.app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on); }",
                           enabled)
        self.page.wait_for_timeout(500)
        self.close_dialogs()

    def frontend_version(self) -> str:
        return self.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? ''")


@contextlib.contextmanager
def _open_frontend(chromium, server):
    """A fresh browser context with one tab on the server's frontend; closed on the way out."""
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    try:
        frontend_page = FrontendPage(context.new_page(), server)
        frontend_page.open()
        yield frontend_page
    finally:
        context.close()


@pytest.fixture
def frontend(chromium, comfy_server):
    with _open_frontend(chromium, comfy_server) as frontend_page:
        yield frontend_page


@pytest.fixture
def bare_frontend(chromium, bare_server):
    """The frontend of a server with no motion index yet (tests/conftest.py's bare_server)."""
    with _open_frontend(chromium, bare_server) as frontend_page:
        yield frontend_page


# --------------------------------------------- the newest frontend (1.58.1) served by the same ComfyUI 0.3.75
@pytest.fixture(scope="session")
def newest_server(tmp_path_factory, comfy_harness, unavailable):
    """A server with the pack that serves the newest tested frontend (scripts/setup_env.sh installs it beside
    the pinned one) through --front-end-root, with the sample motion index built."""
    root = comfy_harness.newest_frontend_root()
    if not (root / "index.html").is_file():
        unavailable(f"no frontend {comfy_harness.NEWEST_FRONTEND_VERSION} at {root}; run `make setup`")
    if not (comfy_harness.default_comfyui_dir() / "main.py").is_file():
        unavailable("no ComfyUI; run `make setup` or set COMFYUI_PATH")
    server = comfy_harness.ComfyServer(tmp_path_factory.mktemp("comfyui-newest"), front_end_root=root)
    server.start()
    try:
        server.set_setting("Comfy.TutorialCompleted", True)
        comfy_harness.build_sample_index(server, via="workflow")
        yield server
    finally:
        server.stop()
        print(f"\nComfyUI log (newest_server): {server.log_path}")


@pytest.fixture
def newest_frontend(chromium, newest_server):
    with _open_frontend(chromium, newest_server) as frontend_page:
        yield frontend_page


# ---------------------------------------------------------------- POS: the tiny model and a real-clip index
def shared_videos() -> Path:
    root = os.environ.get("SEARCHPRIORS_SHARED_DATA") or str(Path(__file__).resolve().parents[3] / "shared" / "data")
    return Path(root) / "videos"


@pytest.fixture(scope="session")
def tiny_t2v(comfy_server, comfy_harness):
    """The tiny random ModelScope-family folder in the server's models/diffusers/tiny-t2v."""
    return comfy_harness.install_tiny_t2v(comfy_server)


def toy_world_clips(per_motion: int) -> list[tuple[Path, str, str]]:
    """[(file, relative name, caption)] of sample_data/toy_world's library, ``per_motion`` clips of each motion."""
    import csv

    root = TESTS_DIR.parent / "sample_data" / "toy_world"
    taken: dict[str, int] = {}
    clips = []
    with open(root / "library.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if taken.get(row["motion"], 0) < per_motion:
                taken[row["motion"]] = taken.get(row["motion"], 0) + 1
                clips.append((root / row["video"], Path(row["video"]).name, row["caption"]))
    return clips


@pytest.fixture(scope="session")
def clip_index(comfy_server, comfy_harness):
    """The real clips of ../shared/data/videos, copied into the server's input folder, as a motion index;
    returns [(file, caption)]. Without ../shared (a fresh clone) the toy world's clips stand in
    (sample_data/toy_world: three of each motion), so the generation workflows still run end to end."""
    clips = comfy_harness.shared_clips(shared_videos()) or toy_world_clips(per_motion=3)
    rows = comfy_harness.install_clip_library(comfy_server, clips)
    comfy_harness.build_clip_index(comfy_server)
    return rows


@pytest.fixture(scope="session")
def toy_clip_reels(comfy_server, comfy_harness):
    """Reels of toy-world clips in <input>/searchpriors_toy_clips/ and the toy captioner in models/vlm/toy/ (what
    `make serve` installs for the clip library workflow)."""
    return comfy_harness.install_toy_clips(comfy_server)


@pytest.fixture(scope="session")
def tiny_grounding_dino(comfy_server, comfy_harness):
    """The tiny random GroundingDINO (tests/tiny_grounding_dino.py) in the server's models/grounding-dino/."""
    return comfy_harness.install_tiny_grounding_dino(comfy_server)


@pytest.fixture(scope="session")
def tiny_motion_lora(comfy_server, comfy_harness):
    """A motion LoRA for the tiny t2v model, tuned and saved through the server; its name under models/loras."""
    return comfy_harness.install_tiny_motion_lora(comfy_server)


# ------------------------------------------------- tiny models of ComfyUI's own classes under real file names


@pytest.fixture(scope="session")
def tests_module():
    """tests/<name>.py by file path, loaded once (tests/ is no package): tests_module("e2e_text_node")."""
    return harness.load_test_helper


@pytest.fixture(scope="session")
def install_tiny_models(comfy_server, comfy_harness):
    """install_tiny_models({path under models/: maker}) writes each file once (a maker returns a state dict, or
    (state dict, metadata)), builds the toy world's index and returns the session server. The makers run in this
    process with ComfyUI's source importable: tests/tiny_models.py builds ComfyUI's own classes."""
    import safetensors.torch

    comfyui = str(comfy_harness.default_comfyui_dir())
    if comfyui not in sys.path:
        sys.path.insert(0, comfyui)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True

    def install(files: dict):
        for name, make in files.items():
            target = comfy_server.models_dir / name
            if not target.exists():
                made = make()
                state, metadata = made if isinstance(made, tuple) else (made, None)
                target.parent.mkdir(parents=True, exist_ok=True)
                safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(target),
                                            metadata=metadata)
        comfy_harness.build_toy_world_index(comfy_server)
        return comfy_server

    return install
