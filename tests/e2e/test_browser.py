"""The pack in the real ComfyUI frontend (headless Chromium), as a user meets it: the Templates dialog
lists every bundled workflow with a thumbnail, what to run first first, and each card loads its graph; every
bundled UI-format workflow opens readable (titles drawn at its opening zoom, its note and first stage on
screen, every node in a titled stage group, none over another) and loads with no missing or broken node
and, queued from the page, runs to completion with its result on each output node (a saved video of the
frames asked for, shown on the page; preview images; non-empty texts); the text
of the pack's nodes reads line by line; the search nodes added by hand on a server with no index yet
answer with the pack's message."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows"
UI_WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.json"))   # API-format twins live in workflows/api/
TEMPLATE_CARDS = json.loads((WORKFLOWS_DIR.parent / "web" / "template_cards.json").read_text(encoding="utf-8"))
PACK_FOLDER = "ComfyUI-SearchPriors"                   # the pack's folder name under custom_nodes
PACK_PREFIX = "SearchPriors_"
NO_INDEX_YET = "No motion index yet: build one with Motion Index Builder first"
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


# Generation workflows at test size, set on the page as a user would: (node type, title or None, widget); a
# callable value is read from the test's fixtures.
TEST_SIZE = {
    "pos_modelscope": {
        ("SearchPriors_ModelScopeLoader", None, "folder"): "tiny-t2v",
        ("SearchPriors_ModelScopeLoader", None, "dtype"): "fp32",
        ("PrimitiveInt", "Frames", "value"): 4,
        ("PrimitiveInt", "Width", "value"): 64,
        ("PrimitiveInt", "Height", "value"): 64,
        ("SearchPriors_DiffusersSchedulerSigmas", None, "steps"): 4,
        ("SearchPriors_DDIMVideoInvert", None, "steps"): 4,
        ("SearchPriors_MotionIndexLoader", None, "index_name"): "searchpriors_clips",
    },
    "search_then_tune": {
        ("SearchPriors_ModelScopeLoader", None, "folder"): "tiny-t2v",
        ("SearchPriors_ModelScopeLoader", None, "dtype"): "fp32",
        ("SearchPriors_MotionIndexLoader", None, "index_name"): "searchpriors_clips",
        ("PrimitiveInt", "Frames", "value"): 4,
        ("PrimitiveInt", "Keyframes", "value"): 4,
        ("PrimitiveInt", "Width", "value"): 64,
        ("PrimitiveInt", "Height", "value"): 64,
        ("SearchPriors_KeyframeExtractor", None, "detector"): "grounding-dino-tiny-test",
        ("SearchPriors_VMCTemporalLoRA", None, "steps"): 3,
        ("SearchPriors_VMCTemporalLoRA", None, "rank"): 4,
        ("SearchPriors_DiffusersSchedulerSigmas", None, "steps"): 3,
        ("SearchPriors_DDIMVideoInvert", None, "steps"): 3,
    },
    "motion_lora_apply": {
        ("SearchPriors_ModelScopeLoader", None, "folder"): "tiny-t2v",
        ("SearchPriors_ModelScopeLoader", None, "dtype"): "fp32",
        ("SearchPriors_LoadMotionLoRA", None, "lora_name"): lambda request: request.getfixturevalue("tiny_motion_lora"),
        ("PrimitiveInt", "Frames", "value"): 4,
        ("PrimitiveInt", "Width", "value"): 64,
        ("PrimitiveInt", "Height", "value"): 64,
        ("SearchPriors_HybridSemanticSampler", None, "steps"): 3,
    },
}
# Further session fixtures a generation workflow needs on the server before it is queued.
NEEDS_FIXTURES = {"search_then_tune": ("tiny_grounding_dino",), "motion_lora_apply": ("tiny_motion_lora",),
                  "clip_library_pos": ("toy_clip_reels",)}
# index my clips -> POS: pos_modelscope's sizes, the Clip Library Builder on the toy reels with the toy captioner
TEST_SIZE["clip_library_pos"] = {
    **{key: value for key, value in TEST_SIZE["pos_modelscope"].items() if key[0] != "SearchPriors_MotionIndexLoader"},
    ("SearchPriors_ClipLibraryBuilder", None, "clips_folder"): "searchpriors_toy_clips",
    ("SearchPriors_ClipLibraryBuilder", None, "index_name"): "searchpriors_toy_clips",
    ("SearchPriors_ClipLibraryBuilder", None, "captioner"): "toy",
}
# The DiT workflows name the real model files (Wan, HunyuanVideo 1.5, LTX-Video), which are not in this server: the
# bundled file is opened and checked, then its demo variant (what `make serve` puts in the Workflows sidebar: the Wan
# toy or a tiny random model under demo names, the demo-only text encoder; scripts/comfy_server.py
# DEMO_USER_WORKFLOWS) is loaded, set to test size on the page and queued. The bundled graphs also run with tiny
# models under the real file names through the API (test_pos_dit_e2e.py, test_pos_dit_more_e2e.py,
# test_search_then_tune_wan.py).
DEMO_VARIANTS = {bundled: name for name, (bundled, _model) in harness.DEMO_USER_WORKFLOWS.items()}
_SMALL = {("PrimitiveInt", "Width", "value"): 64, ("PrimitiveInt", "Height", "value"): 64}
_TINY = {**_SMALL, ("SearchPriors_DDIMVideoInvert", None, "steps"): 3}
DEMO_TEST_SIZE = {
    "toy_world_pos_wan21": {**_TINY, ("PrimitiveInt", "Frames", "value"): 5, ("BasicScheduler", None, "steps"): 3},
    "toy_world_pos_wan22_a14b": {**_TINY, ("PrimitiveInt", "Frames", "value"): 5,
                                 ("BasicScheduler", None, "steps"): 3},
    "toy_world_search_then_tune_wan21": {   # no inversion here: the tuned model samples from plain noise
        **_SMALL, ("PrimitiveInt", "Reference frames", "value"): 9,   # VMC's motion loss needs 3 latent frames
        ("PrimitiveInt", "Keyframes (4k+1 for Wan's VAE)", "value"): 9,
        ("SearchPriors_VMCTemporalLoRA", None, "steps"): 3, ("SearchPriors_VMCTemporalLoRA", None, "rank"): 4,
        ("KSampler", None, "steps"): 3},
    "demo_random_pos_hunyuan15": {**_TINY, ("PrimitiveInt", "Frames", "value"): 5, ("BasicScheduler", None, "steps"): 3},
    "demo_random_pos_ltxv": {**_TINY, ("PrimitiveInt", "Frames", "value"): 9, ("LTXVScheduler", None, "steps"): 3},
}


@pytest.fixture(scope="session")
def demo_workflows(comfy_server, comfy_harness, tiny_grounding_dino) -> dict:
    """{name: path} of the demo variants, written into the server's Workflows sidebar as `make serve` does, with the
    demo models, the toy text encoder's folder and the toy world's index in place."""
    comfy_harness.install_toy_t2v(comfy_server)
    comfy_harness.install_demo_models(comfy_server)
    comfy_harness.build_toy_world_index(comfy_server)
    return {path.stem: path for path in comfy_harness.write_demo_user_workflows(comfy_server)}


def set_widget(frontend, node_type: str, title, widget: str, value) -> None:
    changed = frontend.page.evaluate(
        """([type, title, name, value]) => {
            const nodes = window.app.graph._nodes.filter(n => n.type === type && (title === null || n.title === title));
            let count = 0;
            for (const node of nodes) {
                const w = (node.widgets || []).find(w => w.name === name);
                if (w) { w.value = value; if (w.callback) w.callback(value); count++; }
            }
            return count;
        }""", [node_type, title, widget, value])
    assert changed, f"no widget {widget!r} on a {node_type} node titled {title!r}"


def test_ui_workflows_exist():
    assert UI_WORKFLOWS, f"no UI-format workflows in {WORKFLOWS_DIR}"


@pytest.mark.parametrize("workflow_path", UI_WORKFLOWS, ids=lambda p: p.name)
def test_ui_workflow_loads_and_runs(frontend, comfy_server, sample_index, comfy_harness, demo_workflows, workflow_path,
                                    tmp_path, request):
    workflow = json.loads(workflow_path.read_text(encoding="utf-8"))
    if workflow_path.stem in TEST_SIZE:  # a generation workflow: the tiny model and the real-clip index
        request.getfixturevalue("tiny_t2v")
        request.getfixturevalue("clip_index")
    for fixture in NEEDS_FIXTURES.get(workflow_path.stem, ()):
        request.getfixturevalue(fixture)
    load_and_check(frontend, workflow, tmp_path / f"opening-{workflow_path.stem}.png")
    sizes = TEST_SIZE.get(workflow_path.stem, {})
    if workflow_path.stem in DEMO_VARIANTS:   # names the real model files: queue its demo variant
        name = DEMO_VARIANTS[workflow_path.stem]
        workflow = json.loads(demo_workflows[name].read_text(encoding="utf-8"))
        load_and_check(frontend, workflow, tmp_path / f"opening-{name}.png")
        sizes = DEMO_TEST_SIZE[name]
    for (node_type, title, widget), value in sizes.items():
        set_widget(frontend, node_type, title, widget, value(request) if callable(value) else value)

    before = set(comfy_server.history())
    frontend.queue()
    node_errors = frontend.last_node_errors()
    assert not node_errors, f"the server rejected the queued graph: {node_errors}"
    prompt_id, entry = wait_for_new_prompt(comfy_server, before, RUN_TIMEOUT_S)
    frontend.page.wait_for_timeout(1000)  # let the page draw the results before reading or the screenshot
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
    overlaps = overlapping_nodes(canvas_layout(frontend)["nodes"])
    assert not overlaps, f"nodes that grew over a neighbour with their results: {overlaps}"

    check_pack_text_reads_line_by_line(frontend, workflow, entry, comfy_harness)
    check_results_on_output_nodes(frontend, workflow, entry, comfy_server, comfy_harness,
                                  sizes)


def load_and_check(frontend, workflow: dict, screenshot: Path) -> None:
    """Loads a UI workflow into the page: every node created (none red or missing), readable at its opening zoom."""
    frontend.load_workflow(workflow)
    nodes = frontend.graph_nodes()
    assert sorted(n["id"] for n in nodes) == sorted(n["id"] for n in workflow["nodes"]), "nodes lost on load"
    broken = [n for n in nodes if n["has_errors"] or not n["registered"]]
    assert not broken, f"nodes the frontend could not create (red, missing): {broken}"
    missing_dialogs = [t for t in frontend.dialog_texts() if "missing nodes" in t.lower()]
    assert not missing_dialogs, f"the frontend reports missing nodes: {missing_dialogs}"
    check_readable_at_opening(frontend, workflow)
    frontend.page.screenshot(path=str(screenshot))


OUTPUT_TYPES = {"SaveVideo", "PreviewImage", "SaveImage", "PreviewAny"}


def shown_on_node(frontend, node_id: int) -> str:
    """Everything the page holds as a node's displayed output: the frontend's record of its outputs, its
    images and the sources of the <video>/<img> elements on the page, as one string to search."""
    return frontend.page.evaluate("""(id) => {
        const node = window.app.graph.getNodeById(id);
        const parts = [JSON.stringify(window.app.nodeOutputs?.[String(id)] ?? null)];
        for (const img of node?.imgs ?? []) parts.push(img.src);
        for (const el of document.querySelectorAll('video, img, source')) parts.push(el.currentSrc || el.src || '');
        return parts.join('\\n');
    }""", node_id)


def check_results_on_output_nodes(frontend, workflow: dict, entry: dict, server, harness, sizes: dict) -> None:
    """Each output node of the workflow has its result in /history and on the page: SaveVideo an mp4 of the
    frames and size asked for (read back), shown on the node; Preview Image / Save Image images shown on the
    node; Preview as Text a non-empty text."""
    # as many frames as asked for: the keyframes where a workflow has them (its start noise is the keyframes')
    frames = next((value for (kind, title, _), value in sizes.items()
                   if kind == "PrimitiveInt" and (title or "").startswith("Keyframes")),
                  sizes.get(("PrimitiveInt", "Frames", "value")))
    width, height = sizes.get(("PrimitiveInt", "Width", "value")), sizes.get(("PrimitiveInt", "Height", "value"))
    outputs = entry.get("outputs") or {}
    checked = []
    for node in workflow["nodes"]:
        kind, key = node["type"], str(node["id"])
        if kind not in OUTPUT_TYPES or node.get("mode", 0) != 0:
            continue
        name = f"{node.get('title') or kind} (node {key})"
        ui = outputs.get(key)
        assert ui, f"{name} has no output in /history: {sorted(outputs)}"
        if kind == "PreviewAny":
            texts = [t for t in harness.history_texts(entry, key) if t.strip()]
            assert texts, f"{name} shows no text: {ui}"
        elif kind == "SaveVideo":
            video = harness.saved_video_frames(server, entry, {key: {"class_type": "SaveVideo"}})
            assert video, f"{name} saved an mp4 with no frames"
            if frames is not None:
                assert len(video) == frames, f"{name} saved {len(video)} frames, the workflow asks for {frames}"
            if width is not None and height is not None:
                assert video[0].shape[:2] == (height, width), f"{name} saved frames of {video[0].shape}"
            files = ui.get("images", []) + ui.get("videos", []) + ui.get("gifs", [])
            shown = shown_on_node(frontend, node["id"])
            assert files[0]["filename"] in shown, f"{name}: the page does not show {files[0]['filename']}"
        else:
            images = ui.get("images", [])
            assert images, f"{name} put out no image: {ui}"
            shown = shown_on_node(frontend, node["id"])
            assert any(image["filename"] in shown for image in images), f"{name}: the page shows none of {images}"
        checked.append(kind)
    assert checked, "the workflow has no output node to read"


def canvas_layout(frontend) -> dict:
    """The canvas as the page has it: zoom, whether it draws in low quality (boxes without titles or widgets),
    the visible area in canvas units, and every node's and group's box (title bar included)."""
    return frontend.page.evaluate("""() => {
        const canvas = window.app.canvas, ds = canvas.ds, H = window.LiteGraph.NODE_TITLE_HEIGHT;
        const rect = canvas.canvas.getBoundingClientRect();
        return {scale: ds.scale, low_quality: canvas.low_quality,
                title_text_size: window.LiteGraph.NODE_TEXT_SIZE,
                view: [-ds.offset[0], -ds.offset[1], rect.width / ds.scale, rect.height / ds.scale],
                nodes: window.app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title,
                    box: [n.pos[0], n.pos[1] - H, n.size[0], n.size[1] + H]})),
                groups: window.app.graph.groups.map(g => ({title: g.title, box: [...g._bounding]}))};
    }""")


def _inside(inner, outer, slack: float = 1.0) -> bool:
    return (inner[0] >= outer[0] - slack and inner[1] >= outer[1] - slack
            and inner[0] + inner[2] <= outer[0] + outer[2] + slack and inner[1] + inner[3] <= outer[1] + outer[3] + slack)


def overlapping_nodes(nodes: list[dict]) -> list[tuple[str, str]]:
    def meet(a, b):
        return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
    return [(a["title"], b["title"]) for i, a in enumerate(nodes) for b in nodes[i + 1:] if meet(a["box"], b["box"])]


def check_readable_at_opening(frontend, workflow: dict) -> None:
    """At the zoom the workflow opens with (its saved view; 1600 x 1000 page) the frontend draws titles and
    widgets, the note and the first stage's group are on screen, every node sits in a titled stage group and
    none covers another (sizes as the frontend computes them on load)."""
    layout = canvas_layout(frontend)
    assert layout["scale"] == pytest.approx(workflow["extra"]["ds"]["scale"]), "the saved view was not restored"
    assert not layout["low_quality"], f"opens at {layout['scale']:.2f}, where the frontend draws no titles"
    assert layout["title_text_size"], "the page's LiteGraph has no NODE_TEXT_SIZE to size titles by"
    title_px = layout["title_text_size"] * layout["scale"]
    assert title_px >= 10, f"node titles are {title_px:.1f} px high at the opening zoom: not readable"
    view = layout["view"]
    on_screen = [n for n in layout["nodes"] if _inside(n["box"][:2] + [min(n["box"][2], 200), 30], view)]
    assert on_screen, "no node title on screen at opening"
    untitled = [n["id"] for n in on_screen if not (n["title"] or "").strip()]
    assert not untitled, f"nodes on screen with no title: {untitled}"
    notes = [n for n in layout["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert len(notes) == 1, "no note (or more than one) saying what the workflow does"
    assert layout["groups"] and all(g["title"] for g in layout["groups"]), "stages are not titled groups"
    assert _inside(notes[0]["box"][:2] + [notes[0]["box"][2], 60], view), "the note's title is off screen"
    first = min(layout["groups"], key=lambda g: g["box"][0])
    assert _inside(first["box"][:2] + [min(first["box"][2], 300), 40], view), f"{first['title']!r} is off screen"
    for node in layout["nodes"]:
        if node["type"] in ("Note", "MarkdownNote"):
            continue
        homes = [g["title"] for g in layout["groups"] if _inside(node["box"], g["box"])]
        assert len(homes) == 1, f"{node['title']!r} is in groups {homes}, not in one stage"
    overlaps = overlapping_nodes(layout["nodes"])
    assert not overlaps, f"nodes over one another at opening: {overlaps}"


def check_pack_text_reads_line_by_line(frontend, workflow: dict, entry: dict, harness) -> None:
    """Each Preview as Text fed by a pack node shows its text one line per line (Markdown would run single
    lines together), and each pack node that sends text shows it on the node."""
    links = {link[0]: link for link in workflow["links"]}
    types = {n["id"]: n["type"] for n in workflow["nodes"]}
    checked = 0
    for node in workflow["nodes"]:
        if node["type"] == "PreviewAny":
            link = links.get(node["inputs"][0]["link"])
            if link is None or not types[link[1]].startswith(PACK_PREFIX):
                continue
            text = "\n".join(harness.history_texts(entry, str(node["id"])))
            # compared with runs of spaces as one (the page keeps them as no-break spaces)
            lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
            if not lines or any(line.startswith("|") for line in lines):
                continue  # a table renders as a table; what matters here is plain lines
            shown = (frontend.preview_box(node["id"]) or {}).get("text", "")
            shown_lines = [" ".join(line.split()) for line in shown.splitlines() if line.strip()]
            assert shown_lines == lines, f"{node.get('title')}: the page shows {shown!r} for {text!r}"
            checked += 1
        elif node["type"].startswith(PACK_PREFIX) and harness.history_texts(entry, str(node["id"])):
            first = harness.history_texts(entry, str(node["id"]))[0].splitlines()[0]
            shown = frontend.markdown_texts(node["id"]).get("searchpriors_report", "")
            assert first.strip() in shown, f"{node.get('title')} does not show its report on the node: {shown!r}"
            checked += 1
    assert checked, "no pack text was checked on the page"


def test_templates_dialog_lists_and_loads_every_bundled_workflow(frontend, tmp_path):
    """Templates -> Extensions -> ComfyUI-SearchPriors: one card per UI workflow (none of the API files),
    each with a thumbnail that loads, and each card opens its graph."""
    failed_requests = []
    frontend.page.on("response", lambda r: r.status >= 400 and "workflow_templates" in r.url
                     and failed_requests.append(f"{r.status} {r.url}"))
    templates = frontend.server.get_json("/workflow_templates")
    assert sorted(templates.get(PACK_FOLDER, [])) == sorted(p.stem for p in UI_WORKFLOWS), templates

    for workflow_path in UI_WORKFLOWS:
        workflow = json.loads(workflow_path.read_text(encoding="utf-8"))
        frontend.open_templates()
        dialog = frontend.page.locator(".p-dialog").filter(has_text="Templates")
        dialog.get_by_text(PACK_FOLDER, exact=True).first.click()
        cards = frontend.page.locator("[data-testid^='template-workflow-']")
        cards.first.wait_for()
        shown = [c.get_attribute("data-testid").removeprefix("template-workflow-") for c in cards.all()]
        assert sorted(shown) == sorted(p.stem for p in UI_WORKFLOWS), f"cards shown: {shown}"
        # what to run first, first (web/searchpriors.js orders them as web/template_cards.json lists them)
        assert shown == [card["name"] for card in TEMPLATE_CARDS], f"cards in the order {shown}"
        card = frontend.page.locator(f"[data-testid='template-workflow-{workflow_path.stem}']")
        card.scroll_into_view_if_needed()   # the dialog loads a card's thumbnail when it comes into view
        frontend.page.wait_for_function(
            """(name) => { const img = document.querySelector(`[data-testid='template-workflow-${name}'] img`);
                           return img && img.complete && img.naturalWidth > 0; }""", arg=workflow_path.stem,
            timeout=30_000)
        frontend.page.screenshot(path=str(tmp_path / f"templates-{workflow_path.stem}.png"))
        card.click()
        frontend.page.wait_for_function(
            "(n) => window.app.graph._nodes.length === n", arg=len(workflow["nodes"]), timeout=30_000)
        loaded = sorted(n["type"] for n in frontend.graph_nodes())
        assert loaded == sorted(n["type"] for n in workflow["nodes"]), f"{workflow_path.name} loaded {loaded}"
        check_readable_at_opening(frontend, workflow)
        frontend.page.screenshot(path=str(tmp_path / f"template-loaded-{workflow_path.stem}.png"))
    assert not failed_requests, f"template requests that failed: {failed_requests}"


def test_search_nodes_added_by_hand_without_an_index_show_the_fix(bare_frontend, tmp_path):
    """A new user adds Prompt Atomizer, Motion Index Loader and Motion Retriever from the node library on a
    server with no index yet (the loader's list is empty) and queues: the page shows the pack's message,
    not a Python TypeError."""
    page = bare_frontend.page
    options = page.evaluate("""() => {
        const app = window.app, LG = window.LiteGraph;
        app.graph.clear();
        const atomizer = LG.createNode("SearchPriors_PromptAtomizer"); atomizer.pos = [50, 50]; app.graph.add(atomizer);
        const loader = LG.createNode("SearchPriors_MotionIndexLoader"); loader.pos = [50, 400]; app.graph.add(loader);
        const retriever = LG.createNode("SearchPriors_MotionRetriever"); retriever.pos = [600, 50];
        app.graph.add(retriever);
        atomizer.connect(0, retriever, 0);
        loader.connect(0, retriever, 1);
        return loader.widgets.find(w => w.name === "index_name").options.values;
    }""")
    assert options == [], f"the bare server lists indexes: {options}"
    page.evaluate("async () => { try { await window.app.queuePrompt(0, 1); } catch (e) {} }")
    page.wait_for_function("() => Object.keys(window.app.lastNodeErrors ?? {}).length > 0", timeout=60_000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "no-index.png"))
    errors = json.dumps(bare_frontend.last_node_errors())
    shown = "\n".join(bare_frontend.dialog_texts())
    assert NO_INDEX_YET in errors and NO_INDEX_YET in shown, f"errors: {errors}\ndialogs: {shown}"
    assert "TypeError" not in errors + shown and "positional argument" not in errors + shown


def test_a_pos_preset_fills_eta_and_gamma_on_every_pos_node(bare_frontend):
    """Picking the paper's ModelScope / UCF-101 row on the guider writes eta 0.2 into Gaussian Noise Mix and
    gamma 1.0 into the guider and the sampler; "custom" leaves the widgets free."""
    page = bare_frontend.page
    values = page.evaluate("""() => {
        const app = window.app, LG = window.LiteGraph;
        app.graph.clear();
        const made = {};
        for (const type of ["SearchPriors_GaussianNoiseMix", "SearchPriors_HybridSemanticGuider",
                            "SearchPriors_HybridSemanticSampler"]) {
            const node = LG.createNode(type); app.graph.add(node); made[type] = node;
        }
        const get = (type, name) => made[type].widgets.find(w => w.name === name);
        get("SearchPriors_GaussianNoiseMix", "eta").value = 3.0;
        const preset = get("SearchPriors_HybridSemanticGuider", "preset");
        const choice = preset.options.values.find(v => v.startsWith("ModelScope (UCF-101)"));
        preset.value = choice; preset.callback(choice);
        const after = {eta: get("SearchPriors_GaussianNoiseMix", "eta").value,
                       gamma: get("SearchPriors_HybridSemanticGuider", "gamma").value,
                       sampler_gamma: get("SearchPriors_HybridSemanticSampler", "gamma").value,
                       mix_preset: get("SearchPriors_GaussianNoiseMix", "preset").value, choice};
        const mixPreset = get("SearchPriors_GaussianNoiseMix", "preset");
        mixPreset.value = "custom"; mixPreset.callback("custom");
        get("SearchPriors_GaussianNoiseMix", "eta").value = 0.7;
        after.free_eta = get("SearchPriors_GaussianNoiseMix", "eta").value;
        after.guider_gamma_kept = get("SearchPriors_HybridSemanticGuider", "gamma").value;
        return after;
    }""")
    assert values["choice"] == "ModelScope (UCF-101): eta 0.2, gamma 1.0"
    assert (values["eta"], values["gamma"], values["sampler_gamma"]) == (0.2, 1.0, 1.0), values
    assert values["mix_preset"] == values["choice"]
    assert values["free_eta"] == 0.7 and values["guider_gamma_kept"] == 1.0
