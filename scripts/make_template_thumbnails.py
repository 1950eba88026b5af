"""Draw the Templates-dialog thumbnail of every UI-format workflow in workflows/: its card's description over a
small picture of its graph.

    python scripts/make_template_thumbnails.py [--check]

ComfyUI's Templates dialog (frontend 1.32.9) shows a custom node pack's workflow `workflows/<name>.json`
with the image `/api/workflow_templates/<pack>/<name>.jpg`, which ComfyUI serves from the same folder;
without it the card is blank. That dialog gives a pack's card no description but its file name, so the card's
description, written for a person, is drawn on the thumbnail: its place in the order and its line from
web/template_cards.json (the order web/searchpriors.js gives the cards), over the graph (the stage groups with
their titles, nodes as boxes, links as curves). A workflow added later needs its line there and this script
run again. `--check` writes nothing and exits 1 if a thumbnail or a card line is missing.
Needs Pillow (ComfyUI's requirements bring it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageColor, ImageDraw, ImageFont

WORKFLOWS_DIR = Path(__file__).resolve().parent.parent / "workflows"
TEMPLATE_CARDS = WORKFLOWS_DIR.parent / "web" / "template_cards.json"
CAPTION_HEIGHT = 112
CAPTION_BACKGROUND = (22, 22, 26)
FIRST_ACCENT = (76, 175, 80)       # the card to run first
SIZE = (512, 384)
MARGIN = 18
BACKGROUND = (32, 32, 36)
NODE_BODY = (53, 53, 58)
NODE_TITLE = (34, 34, 38)
PACK_ACCENT = (74, 128, 196)      # nodes of this pack
OTHER_ACCENT = (110, 110, 118)    # core nodes (previews, samplers)
TEXT = (225, 225, 230)
LINK_COLOURS = {"STRING": (120, 200, 120), "MOTION_INDEX": (220, 160, 70), "ATOMIZED_PROMPT": (200, 110, 200)}
LINK_DEFAULT = (150, 170, 220)
PACK_PREFIX = "SearchPriors_"


def ui_workflows(folder: Path = WORKFLOWS_DIR) -> list[Path]:
    """The files the Templates dialog lists: workflows/*.json (not workflows/api/)."""
    return sorted(folder.glob("*.json"))


def thumbnail_path(workflow: Path) -> Path:
    return workflow.with_suffix(".jpg")


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _fit(text: str, font, width: float, draw: ImageDraw.ImageDraw) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _curve(start: tuple[float, float], end: tuple[float, float], steps: int = 24) -> list[tuple[float, float]]:
    """A cubic Bezier from an output to an input, bent horizontally as the canvas draws links."""
    (x0, y0), (x3, y3) = start, end
    bend = max(abs(x3 - x0) * 0.5, 20)
    x1, y1, x2, y2 = x0 + bend, y0, x3 - bend, y3
    points = []
    for i in range(steps + 1):
        t = i / steps
        u = 1 - t
        points.append((u ** 3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t ** 3 * x3,
                       u ** 3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t ** 3 * y3))
    return points


def template_cards(path: Path = TEMPLATE_CARDS) -> list[dict]:
    """[{"name": workflow stem, "card": one line for a person}, ...] in the order the dialog shows them."""
    return json.loads(path.read_text(encoding="utf-8"))


def _wrap(text: str, font, width: float, draw: ImageDraw.ImageDraw) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line] if line else lines


def render(workflow: dict, card: str | None = None, step: int | None = None) -> Image.Image:
    """The thumbnail: the graph, with the card's line and its place in the order in a band at the bottom."""
    nodes = [n for n in workflow.get("nodes", []) if "pos" in n]
    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    graph_height = SIZE[1] - (CAPTION_HEIGHT if card else 0)
    if card:
        draw.rectangle((0, graph_height, SIZE[0], SIZE[1]), fill=CAPTION_BACKGROUND)
        font = _font(27)
        text_left = MARGIN
        if step is not None:
            accent = FIRST_ACCENT if step == 1 else PACK_ACCENT
            badge = (MARGIN, graph_height + 18, MARGIN + 64, graph_height + 82)
            draw.ellipse(badge, fill=accent)
            draw.text(((badge[0] + badge[2]) / 2, (badge[1] + badge[3]) / 2), str(step), font=_font(34), fill=TEXT,
                      anchor="mm")
            text_left = badge[2] + 16
        lines = _wrap(card, font, SIZE[0] - text_left - MARGIN, draw)[:3]
        line_height = 33
        y = graph_height + (CAPTION_HEIGHT - line_height * len(lines)) / 2 + line_height / 2
        for line in lines:
            draw.text((text_left, y), line, font=font, fill=TEXT, anchor="lm")
            y += line_height
    if not nodes:
        return image
    boxes_of = [(n["pos"][0], n["pos"][1], *n.get("size", [300, 100])) for n in nodes]
    boxes_of += [tuple(g["bounding"]) for g in workflow.get("groups", [])]
    left = min(b[0] for b in boxes_of)
    top = min(b[1] for b in boxes_of)
    right = max(b[0] + b[2] for b in boxes_of)
    bottom = max(b[1] + b[3] for b in boxes_of)
    scale = min((SIZE[0] - 2 * MARGIN) / max(right - left, 1), (graph_height - 2 * MARGIN) / max(bottom - top, 1))
    offset_x = (SIZE[0] - (right - left) * scale) / 2
    offset_y = (graph_height - (bottom - top) * scale) / 2

    group_font = _font(15)
    for group in workflow.get("groups", []):
        x, y, w, h = group["bounding"]
        x0, y0 = offset_x + (x - left) * scale, offset_y + (y - top) * scale
        x1, y1 = x0 + w * scale, y0 + h * scale
        colour = ImageColor.getrgb(_long_hex(group.get("color", "#3f789e")))
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(c * 0.35 + b * 0.65) for c, b in zip(colour, BACKGROUND)),
                       outline=colour, width=1)
        draw.text((x0 + 3, y0 + 2), _fit(group.get("title", "").split(":")[0], group_font, x1 - x0 - 6, draw),
                  font=group_font, fill=TEXT)

    def box(node) -> tuple[float, float, float, float]:
        x, y = node["pos"][0], node["pos"][1]
        w, h = node.get("size", [300, 100])
        return (offset_x + (x - left) * scale, offset_y + (y - top) * scale,
                offset_x + (x - left + w) * scale, offset_y + (y - top + h) * scale)

    title_height = max(6, int(30 * scale))
    font = _font(max(13, int(title_height * 0.6)))
    boxes = {n["id"]: box(n) for n in nodes}

    for link in workflow.get("links", []):
        _, origin, origin_slot, target, target_slot, kind = link[:6]
        if origin not in boxes or target not in boxes:
            continue
        _, oy0, ox1, _ = boxes[origin]
        tx0, ty0, _, _ = boxes[target]
        start = (ox1, oy0 + title_height + (origin_slot + 0.5) * title_height * 0.8)
        end = (tx0, ty0 + title_height + (target_slot + 0.5) * title_height * 0.8)
        draw.line(_curve(start, end), fill=LINK_COLOURS.get(kind, LINK_DEFAULT), width=max(2, int(3 * scale)))

    for node in nodes:
        x0, y0, x1, y1 = boxes[node["id"]]
        accent = PACK_ACCENT if str(node.get("type", "")).startswith(PACK_PREFIX) else OTHER_ACCENT
        radius = max(3, int(8 * scale))
        draw.rounded_rectangle((x0, y0, x1, y1), radius=radius, fill=NODE_BODY, outline=accent, width=2)
        draw.rounded_rectangle((x0, y0, x1, y0 + title_height), radius=radius, fill=NODE_TITLE, outline=accent,
                               width=2)
        if title_height >= 16:
            title = str(node.get("title") or node.get("type", ""))
            draw.text((x0 + 5, y0 + title_height / 2), _fit(title, font, x1 - x0 - 10, draw), font=font,
                      fill=TEXT, anchor="lm")
    return image


def _long_hex(colour: str) -> str:
    """'#8A8' -> '#88AA88' (LiteGraph's group colours are often short)."""
    if len(colour) == 4:
        return "#" + "".join(c * 2 for c in colour[1:])
    return colour


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report missing thumbnails")
    args = parser.parse_args(argv)
    missing = []
    cards = {c["name"]: (step, c["card"]) for step, c in enumerate(template_cards(), 1)}
    for path in ui_workflows():
        target = thumbnail_path(path)
        if path.stem not in cards:
            missing.append(f"{path.stem} in {TEMPLATE_CARDS.name}")
        if args.check:
            if not target.is_file():
                missing.append(target.name)
            continue
        step, card = cards.get(path.stem, (None, None))
        render(json.loads(path.read_text(encoding="utf-8")), card, step).save(target, "JPEG", quality=85,
                                                                              optimize=True)
        print(f"wrote {target.relative_to(WORKFLOWS_DIR.parent)}")
    if missing:
        print("missing: " + ", ".join(missing) + "; run scripts/make_template_thumbnails.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
