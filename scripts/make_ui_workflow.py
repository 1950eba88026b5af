"""Write the UI-format (drag and drop) twin of an API-format workflow, using a server's /object_info.

    python scripts/make_ui_workflow.py --server http://127.0.0.1:8188 workflows/api/x.json workflows/x.json

Widget values follow each node's input order; sockets become links; nodes are laid out left to right
by their depth in the graph. The bundled UI workflows were made this way and are checked by the browser
test, which loads each in the real frontend. Then run scripts/make_template_thumbnails.py for its card.
"""

from __future__ import annotations

import argparse
import json
import urllib.request

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def convert(api: dict, object_info: dict) -> dict:
    ids = {key: i for i, key in enumerate(api, 1)}
    depth: dict[str, int] = {}

    def node_depth(key: str) -> int:
        if key not in depth:
            ups = [v[0] for v in api[key]["inputs"].values() if isinstance(v, list) and len(v) == 2]
            depth[key] = 1 + max((node_depth(u) for u in ups), default=-1)
        return depth[key]

    links, nodes, column_fill = [], [], {}
    outputs_links: dict[tuple[str, int], list[int]] = {}
    for key, node in api.items():
        info = object_info[node["class_type"]]
        order = info.get("input_order", {})
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        names = order.get("required", []) + order.get("optional", [])
        inputs, widgets = [], []
        for name in names:
            spec = specs[name]
            value = node["inputs"].get(name)
            linked = isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if _is_widget(spec):
                # A widget keeps its place in widgets_values even when a link feeds it (the frontend shows it
                # as an input socket then); a seed widget's "control after generate" takes the next place.
                widgets.append(options.get("default") if linked or value is None else value)
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
        col = node_depth(key)
        row = column_fill.get(col, 0)
        column_fill[col] = row + 1
        nodes.append({
            "id": ids[key], "type": node["class_type"], "pos": [40 + 560 * col, 40 + 380 * row],
            "size": [520, 260] if node["class_type"] == "PreviewAny" else [380, 120 + 26 * len(widgets)], "flags": {}, "order": 0, "mode": 0,
            "inputs": inputs, "outputs": [], "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets, "title": node.get("_meta", {}).get("title", info.get("display_name")),
            "_key": key,
        })
    for order_no, n in enumerate(sorted(nodes, key=lambda n: node_depth(n["_key"]))):
        n["order"] = order_no
    for n in nodes:
        info = object_info[api[n["_key"]]["class_type"]]
        out_names = info.get("output_name", info.get("output", []))
        n["outputs"] = [{"name": out_names[i], "type": t, "links": outputs_links.get((n["_key"], i), []),
                         "slot_index": i} for i, t in enumerate(info.get("output", []))]
        del n["_key"]
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("api_json")
    parser.add_argument("ui_json")
    args = parser.parse_args()
    with urllib.request.urlopen(f"{args.server}/object_info") as resp:
        object_info = json.load(resp)
    with open(args.api_json, encoding="utf-8") as fh:
        api = json.load(fh)
    with open(args.ui_json, "w", encoding="utf-8") as fh:
        json.dump(convert(api, object_info), fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
