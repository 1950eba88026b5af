"""Browser fixtures: Debian's headless Chromium driven by Playwright against the server's real frontend.

Playwright's own browser download cannot work here, so the system Chromium is used
(SEARCHPRIORS_CHROMIUM overrides /usr/bin/chromium).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("SEARCHPRIORS_CHROMIUM", "/usr/bin/chromium"))
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

    def markdown_texts(self, node_id: int) -> dict:
        """The text each Markdown box of a node shows, by widget name: read from the rendered DOM (a line
        break or a block element ends a line), not from the widget's value. innerText would depend on
        whether the node is on screen at the moment, so the lines are taken from the elements."""
        return self.page.evaluate(
            """(id) => {
                   const BLOCKS = new Set(['P', 'DIV', 'LI', 'TR', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'PRE']);
                   const lines = (el) => {
                       let out = '';
                       for (const child of el.childNodes) {
                           if (child.nodeType === Node.TEXT_NODE) out += child.textContent;
                           else if (child.nodeName === 'BR') out += '\\n';
                           else if (child.nodeType === Node.ELEMENT_NODE) {
                               out += lines(child);
                               if (BLOCKS.has(child.nodeName)) out += '\\n';
                           }
                       }
                       return out;
                   };
                   const node = window.app.graph.getNodeById(id);
                   const out = {};
                   for (const w of node?.widgets ?? []) {
                       if (!w.element?.classList?.contains('comfy-markdown')) continue;
                       out[w.name] = lines(w.element.querySelector('.ProseMirror') ?? w.element);
                   }
                   return out;
               }""", node_id)


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


# ---------------------------------------------------------------- POS: the tiny model and a real-clip index
def shared_videos() -> Path:
    root = os.environ.get("SEARCHPRIORS_SHARED_DATA") or str(Path(__file__).resolve().parents[3] / "shared" / "data")
    return Path(root) / "videos"


@pytest.fixture(scope="session")
def tiny_t2v(comfy_server, comfy_harness):
    """The tiny random ModelScope-family folder in the server's models/diffusers/tiny-t2v."""
    return comfy_harness.install_tiny_t2v(comfy_server)


@pytest.fixture(scope="session")
def clip_index(comfy_server, comfy_harness):
    """The real clips of ../shared/data/videos, copied into the server's input folder, as a motion index;
    returns [(file, caption)]."""
    clips = comfy_harness.shared_clips(shared_videos())
    if not clips:
        pytest.skip(f"../shared/data/videos not found (looked at {shared_videos()}); set SEARCHPRIORS_SHARED_DATA")
    rows = comfy_harness.install_clip_library(comfy_server, clips)
    comfy_harness.build_clip_index(comfy_server)
    return rows


@pytest.fixture(scope="session")
def tiny_grounding_dino(comfy_server, comfy_harness):
    """The tiny random GroundingDINO (tests/tiny_grounding_dino.py) in the server's models/grounding-dino/."""
    return comfy_harness.install_tiny_grounding_dino(comfy_server)


@pytest.fixture(scope="session")
def tiny_motion_lora(comfy_server, comfy_harness):
    """A motion LoRA for the tiny t2v model, tuned and saved through the server; its name under models/loras."""
    return comfy_harness.install_tiny_motion_lora(comfy_server)
