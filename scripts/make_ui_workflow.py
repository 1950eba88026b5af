"""Write the UI-format (drag and drop) twin of an API-format workflow, using a server's /object_info.

    python scripts/make_ui_workflow.py --server http://127.0.0.1:8188 workflows/api/x.json workflows/x.json
    python scripts/make_ui_workflow.py --start-server --all      # every bundled workflow, on a server of its own

Widget values follow each node's input order; sockets become links. Node ids are 1.. in the API file's
order. Nodes are grouped by stage (STAGES: search, reference, rewrite, tune, invert, mix, sample, save, by
node class; a preview goes with the node that feeds it), each stage a titled group, laid out left to right;
a Markdown note from scripts/workflow_notes.py (what the graph does, the settings that matter, the model
files and where they go) comes first, and the workflow opens (extra.ds) on the note at a zoom where the
frontend draws titles and widgets. The bundled UI workflows were made this way and are checked by the
browser test, which loads each in the real frontend. Then run scripts/make_template_thumbnails.py for the
cards.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
WORKFLOWS_DIR = SCRIPTS_DIR.parent / "workflows"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


# Stages, in the order they are laid out left to right: (key, group title, group colour).
STAGES = [
    ("settings", "Prompt and size", "#3f789e"),
    ("models", "Models (files: see the note)", "#444"),
    ("index", "Build the index", "#8A8"),
    ("search", "Search: atomize the prompt, rank the clips", "#8A8"),
    ("reference", "Reference: frames of the retrieved clip", "#8AA"),
    ("rewrite", "Rewrite the prompt (POS SPR)", "#a1309b"),
    ("encode", "Encode the prompts", "#88A"),
    ("tune", "Tune: VMC motion LoRA", "#A88"),
    ("invert", "Invert the reference (DDIM)", "#b06634"),
    ("mix", "Mix the start noise", "#b58b2a"),
    ("sample", "Sample", "#3f789e"),
    ("save", "Decode and save", "#444"),
]
STAGE_OF_TYPE = {
    "PrimitiveStringMultiline": "settings", "PrimitiveInt": "settings", "PrimitiveFloat": "settings",
    "SearchPriors_ModelScopeLoader": "models", "SearchPriors_LoadMotionLoRA": "models", "UNETLoader": "models",
    "CLIPLoader": "models", "DualCLIPLoader": "models", "VAELoader": "models", "CheckpointLoaderSimple": "models",
    "ModelSamplingSD3": "models", "SearchPriorsDemo_ToyTextEncoderLoader": "models", "SearchPriorsDemo_VAELoader": "models",
    "SearchPriors_MotionIndexBuilder": "index", "SearchPriors_ClipLibraryBuilder": "index",
    "SearchPriors_PromptAtomizer": "search", "SearchPriors_MotionIndexLoader": "search",
    "SearchPriors_MotionRetriever": "search",
    "SearchPriors_ReferenceFrames": "reference", "SearchPriors_KeyframeExtractor": "reference",
    "VAEEncode": "reference", "SearchPriors_EncodeKeyframes": "reference",
    "SearchPriors_ReferenceRewriter": "rewrite",
    "CLIPTextEncode": "encode", "LTXVConditioning": "encode",
    "SearchPriors_DiffusersSchedulerSigmas": "invert", "BasicScheduler": "invert", "LTXVScheduler": "invert",
    "SearchPriors_DDIMVideoInvert": "invert",
    "SearchPriors_GaussianNoiseMix": "mix",
    "SearchPriors_VMCTemporalLoRA": "tune", "SearchPriors_SaveMotionLoRA": "tune",
    "VAEDecode": "save", "CreateVideo": "save", "SaveVideo": "save",
}
# Previews sit in the stage of the node that feeds them; anything else samples.
PREVIEW_TYPES = {"PreviewAny", "PreviewImage"}
# Pack nodes that send text to the page: web/searchpriors.js adds a report box, which widens and lengthens them.
REPORT_NODES = {"SearchPriors_MotionRetriever", "SearchPriors_DDIMVideoInvert", "SearchPriors_GaussianNoiseMix",
                "SearchPriors_ReferenceRewriter", "SearchPriors_SaveMotionLoRA"}
NOTE_TYPE, NOTE_TITLE, NOTE_SIZE = "MarkdownNote", "Read me: what this workflow does", (500, 760)
GAP_X, GAP_Y, PAD, GROUP_TITLE, GROUP_GAP, ORIGIN = 50, 40, 24, 56, 70, (40, 40)
# The opening view (extra.ds): 100 %, on the note and the first stages, below the page's top bars and right of
# its side bar; the rest is a pan to the right. The frontend draws titles and widgets from 8 px / 14 px = 0.57
# (1.32.9; empty boxes below), but a note's text is 10 px at 100 % (Comfy.TextareaWidget.FontSize), so less
# would not read.
VIEW_SCALE, VIEW_MARGIN = 1.0, (80, 140)


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def stage_of(api: dict, key: str, seen: tuple = ()) -> str:
    """The stage of one API node: by its class, a preview by what feeds it."""
    node = api[key]
    if node["class_type"] in PREVIEW_TYPES:
        ups = [v[0] for v in node["inputs"].values() if _is_link(v) and v[0] not in seen]
        return stage_of(api, ups[0], (*seen, key)) if ups else "sample"
    return STAGE_OF_TYPE.get(node["class_type"], "sample")


def _node_size(class_type: str, title: str, slots: int, outputs: int, widgets: dict, specs: dict) -> list[int]:
    """A size at least what the frontend computes for the node (it enlarges a smaller one on load, which
    would push it over its neighbour), with room for a report box where the node shows one."""
    if class_type in PREVIEW_TYPES:
        return [520, 260]
    multiline = {name for name, spec in specs.items()
                 if spec[0] == "STRING" and len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("multiline")}
    # one more widget row for a seed's "control after generate"
    height = 40 + 22 * max(slots, outputs) + 26 * (len(widgets) + 1) + 70 * len(multiline & set(widgets))
    # a long title or a long choice (a file name) widens the node: about 7.5 px a character at 100 %
    width = max([400, 8 * len(title) + 60] + [int(7.5 * (len(name) + len(str(value)))) + 90
                                              for name, value in widgets.items() if name not in multiline])
    if class_type in REPORT_NODES:
        return [max(width, 560), height + 260]
    return [width, height]


def convert(api: dict, object_info: dict, note: str | None = None) -> dict:
    """The UI workflow of an API workflow: nodes with ids 1.. in the API file's order, grouped by stage (STAGES),
    laid out left to right, a Markdown note first when ``note`` is given, and an opening view that reads."""
    ids = {key: i for i, key in enumerate(api, 1)}
    links, nodes = [], []
    outputs_links: dict[tuple[str, int], list[int]] = {}
    for key, node in api.items():
        info = object_info[node["class_type"]]
        order = info.get("input_order", {})
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        names = order.get("required", []) + order.get("optional", [])
        inputs, widgets, widget_names = [], [], {}
        for name in names:
            spec = specs[name]
            value = node["inputs"].get(name)
            linked = _is_link(value)
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if _is_widget(spec):
                # A widget keeps its place in widgets_values even when a link feeds it (the frontend shows it
                # as an input socket then); a seed widget's "control after generate" takes the next place.
                widgets.append(options.get("default") if linked or value is None else value)
                widget_names[name] = widgets[-1]
                if options.get("control_after_generate"):
                    widgets.append("fixed")
                if not linked:
                    continue
            slot = {"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO", "link": None}
            if _is_widget(spec):
                slot["widget"] = {"name": name}
            if linked:
                link_id = len(links) + 1
                src, src_slot = value
                src_type = object_info[api[src]["class_type"]]["output"][src_slot]
                links.append([link_id, ids[src], src_slot, ids[key], len(inputs), src_type])
                outputs_links.setdefault((src, src_slot), []).append(link_id)
                slot["link"] = link_id
            inputs.append(slot)
        title = node.get("_meta", {}).get("title", info.get("display_name"))
        nodes.append({
            "id": ids[key], "type": node["class_type"], "pos": [0, 0],
            "size": _node_size(node["class_type"], title, sum(1 for i in inputs if "widget" not in i),
                               len(info.get("output", [])), widget_names, specs),
            "flags": {}, "order": 0, "mode": 0,
            "inputs": inputs, "outputs": [], "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets, "title": title, "_key": key,
        })
    depth: dict[str, int] = {}

    def node_depth(key: str) -> int:
        if key not in depth:
            ups = [v[0] for v in api[key]["inputs"].values() if _is_link(v)]
            depth[key] = 1 + max((node_depth(u) for u in ups), default=-1)
        return depth[key]

    for order_no, n in enumerate(sorted(nodes, key=lambda n: (node_depth(n["_key"]), n["id"]))):
        n["order"] = order_no
    groups = _lay_out(api, nodes, with_note=note is not None)
    for n in nodes:
        info = object_info[api[n["_key"]]["class_type"]]
        out_names = info.get("output_name", info.get("output", []))
        n["outputs"] = [{"name": out_names[i], "type": t, "links": outputs_links.get((n["_key"], i), []),
                         "slot_index": i} for i, t in enumerate(info.get("output", []))]
        del n["_key"]
    if note is not None:
        nodes.insert(0, {
            # its title bar is drawn above pos, level with the groups' titles
            "id": len(api) + 1, "type": NOTE_TYPE, "pos": [ORIGIN[0], ORIGIN[1] + 36], "size": list(NOTE_SIZE), "flags": {},
            "order": len(api), "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [note], "title": NOTE_TITLE, "color": "#432", "bgcolor": "#653"})
    view = {"scale": VIEW_SCALE, "offset": [round(VIEW_MARGIN[0] / VIEW_SCALE - ORIGIN[0], 1),
                                            round(VIEW_MARGIN[1] / VIEW_SCALE - ORIGIN[1], 1)]}
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": groups, "config": {}, "extra": {"ds": view}, "version": 0.4}


def _lay_out(api: dict, nodes: list[dict], with_note: bool) -> list[dict]:
    """Places the nodes stage by stage: each stage a titled group, its nodes in columns by their depth inside
    the stage (a preview under the node it shows), the groups side by side from left to right after the note. Returns the groups."""
    by_key = {n["_key"]: n for n in nodes}
    stage = {key: stage_of(api, key) for key in api}
    local: dict[str, int] = {}

    def local_depth(key: str) -> int:
        if key not in local:
            ups = [v[0] for v in api[key]["inputs"].values() if _is_link(v) and stage[v[0]] == stage[key]]
            if api[key]["class_type"] in PREVIEW_TYPES and ups:   # under the node it shows, not a column further
                local[key] = local_depth(ups[0])
            else:
                local[key] = 1 + max((local_depth(u) for u in ups), default=-1)
        return local[key]

    groups = []
    x = ORIGIN[0] + (NOTE_SIZE[0] + GROUP_GAP if with_note else 0)
    for stage_key, title, colour in STAGES:
        members = [key for key in api if stage[key] == stage_key]
        if not members:
            continue
        columns: dict[int, list[str]] = {}
        for key in members:
            columns.setdefault(local_depth(key), []).append(key)
        left, height = x + PAD, 0
        for col in sorted(columns):
            y = ORIGIN[1] + GROUP_TITLE
            width = max(by_key[k]["size"][0] for k in columns[col])
            for key in columns[col]:
                by_key[key]["pos"] = [left, y]
                y += by_key[key]["size"][1] + GAP_Y
            height = max(height, y - GAP_Y - ORIGIN[1])
            left += width + GAP_X
        group_width = left - GAP_X + PAD - x
        groups.append({"id": len(groups) + 1, "title": title, "bounding": [x, ORIGIN[1], group_width, height + PAD],
                       "color": colour, "font_size": 24, "flags": {}})
        x += group_width + GROUP_GAP
    return groups


def _notes() -> dict[str, str]:
    """scripts/workflow_notes.py's NOTES, loaded by path (scripts/ is no package; comfy_server.py loads this file
    by path too)."""
    # comfy_server.py is loaded already when it loaded this file (by tests as searchpriors_comfy_server, by the
    # scripts as comfy_server); run directly, this file's folder is sys.path[0]
    harness = sys.modules.get("searchpriors_comfy_server") or sys.modules.get("comfy_server")
    if harness is None:
        import comfy_server as harness
    return harness.load_by_path("searchpriors_workflow_notes", SCRIPTS_DIR / "workflow_notes.py").NOTES


def write(api_path: Path, ui_path: Path, object_info: dict) -> None:
    api = json.loads(api_path.read_text(encoding="utf-8"))
    ui_path.write_text(json.dumps(convert(api, object_info, _notes().get(ui_path.stem)), indent=1) + "\n",
                       encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="a running ComfyUI with the pack, e.g. http://127.0.0.1:8188")
    where.add_argument("--start-server", action="store_true",
                       help="start one (scripts/comfy_server.py's ComfyServer) for the run")
    parser.add_argument("--all", action="store_true", help="every workflows/api/<name>.json to workflows/<name>.json")
    parser.add_argument("api_json", nargs="?")
    parser.add_argument("ui_json", nargs="?")
    args = parser.parse_args()
    if args.all == bool(args.api_json or args.ui_json) or (not args.all and not args.ui_json):
        parser.error("give either --all or API_JSON UI_JSON")
    pairs = ([(p, WORKFLOWS_DIR / p.name) for p in sorted((WORKFLOWS_DIR / "api").glob("*.json"))] if args.all
             else [(Path(args.api_json), Path(args.ui_json))])
    server = None
    try:
        if args.start_server:
            sys.path.insert(0, str(SCRIPTS_DIR))
            from comfy_server import ComfyServer
            server = ComfyServer().start()
            object_info = server.object_info()
        else:
            with urllib.request.urlopen(f"{args.server}/object_info") as resp:
                object_info = json.load(resp)
        for api_path, ui_path in pairs:
            write(api_path, ui_path, object_info)
            print(f"wrote {ui_path}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
