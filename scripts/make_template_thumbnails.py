"""Draw the Templates-dialog thumbnail of every UI-format workflow in workflows/: its card's description over a
strip of what the workflow puts out, from a real run of the same pipeline in the toy world.

    python scripts/make_template_thumbnails.py [--check] [--cache DIR] [--refresh]

ComfyUI's Templates dialog (frontend 1.32.9) shows a custom node pack's workflow `workflows/<name>.json`
with the image `/api/workflow_templates/<pack>/<name>.jpg`, which ComfyUI serves from the same folder;
without it the card is blank. That dialog gives a pack's card no description but its file name, so the card's
description, written for a person, is drawn on the thumbnail: its place in the order and its line from
web/template_cards.json (the order web/searchpriors.js gives the cards), under a strip of the result:

- retrieval cards (build_sample_index, search_t2v_retrieval): the frames of the clips the pack's index finds
  for a prompt in the toy world's 288-clip library (sample_data/toy_world);
- POS cards (pos_*, clip_library_pos): the found clip, base sampling and POS sampling of the trained toy model
  (sample_data/models/searchpriors-toy-t2v) on a held-out prompt, as `make serve`'s toy_world_pos runs them;
- search-then-tune cards: the found clip, base and the VMC-tuned model; motion_lora_apply: the tuned LoRA on
  another prompt;
- pos_rewrite: its prompt and the rewrite it puts out (backend 'manual'), as text.

Cards whose workflow needs a real model say so on the image ("toy-world result of this pipeline; needs <model>
for real videos"). The toy runs (tests/toy_world_harness.py, scripts/comfy_server.py's TOY_SETTINGS) are
deterministic and are cached by pipeline under <SEARCHPRIORS_CACHE>/thumbnail_strips/, so one run serves every
card of that pipeline; a workflow with no pipeline here gets a picture of its graph. A workflow added later needs
its line in web/template_cards.json, its entry in CARD_RESULTS and this script run again. `--check` writes
nothing and exits 1 if a thumbnail, a card line or a CARD_RESULTS entry is missing.
Needs Pillow and numpy; the toy runs need the pack's virtual environment (torch, ComfyUI, the sentence model).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
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


def render(workflow: dict, card: str | None = None, step: int | None = None, result: dict | None = None
           ) -> Image.Image:
    """The thumbnail: the result strip (``result``, see card_result) or else the graph, with the card's line and
    its place in the order in a band at the bottom."""
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
    if result is not None:
        _draw_result(image, draw, result, graph_height)
        return image
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


# ------------------------------------------------------------------------------- results of the toy world

REPO = WORKFLOWS_DIR.parent
STRIP_VERSION = 1          # bump when a pipeline below changes what it computes (invalidates the cache)
SEED = 0
RETRIEVAL_HITS = 3
# card -> (toy pipeline whose result it shows, the real model its workflow needs or None)
CARD_RESULTS = {
    "build_sample_index": ("retrieval", None),
    "search_t2v_retrieval": ("retrieval", None),
    "pos_rewrite": ("rewrite", None),
    "pos_modelscope": ("pos", "ModelScope 1.7B"),
    "clip_library_pos": ("pos", "ModelScope 1.7B"),
    "pos_wan21": ("pos", "Wan 2.1 1.3B"),
    "pos_wan22_a14b": ("pos", "Wan 2.2 A14B"),
    "pos_hunyuan15": ("pos", "HunyuanVideo 1.5"),
    "pos_ltxv": ("pos", "LTX-Video 0.9.5"),
    "search_then_tune": ("tune", "ModelScope 1.7B"),
    "search_then_tune_wan21": ("tune", "Wan 2.1 1.3B"),
    "motion_lora_apply": ("lora_apply", "ModelScope 1.7B"),
}
PIPELINES_OF = {"retrieval": ("retrieval",), "pos": ("retrieval", "pos"), "tune": ("retrieval", "tune"),
                "lora_apply": ("retrieval", "tune"), "rewrite": ()}
LABEL_WIDTH = 92
FRAME_GAP = 2
RESULT_TEXT = (235, 235, 240)
MUTED = (165, 165, 175)
NOTE = (240, 190, 90)


def _comfy_server():
    name = "searchpriors_comfy_server"   # the one copy tests, benchmarks and scripts share
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "comfy_server.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def default_cache() -> Path:
    return _comfy_server().cache_dir() / "thumbnail_strips"


def _settings() -> dict:
    server = _comfy_server()
    return {"version": STRIP_VERSION, "seed": SEED, "prompt": server.TOY_PROMPT, "lora_prompt": server.TOY_LORA_PROMPT,
            "hits": RETRIEVAL_HITS, **server.TOY_SETTINGS}


def _cache_file(cache: Path, pipeline: str) -> Path:
    key = hashlib.sha256(json.dumps(_settings(), sort_keys=True).encode()).hexdigest()[:12]
    return cache / f"{pipeline}-{key}.npz"


def _save_rows(path: Path, rows: list[tuple[str, object]]) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(partial, labels=np.array(json.dumps([label for label, _ in rows])),
                        **{f"row{i}": frames for i, (_, frames) in enumerate(rows)})
    partial.replace(path)


def _load_rows(path: Path) -> list[tuple[str, object]]:
    import numpy as np

    with np.load(path) as data:
        labels = json.loads(str(data["labels"]))
        return [(label, data[f"row{i}"]) for i, label in enumerate(labels)]


def _uint8(video) -> object:
    import numpy as np

    array = video.detach().cpu().float().clamp(0, 1).numpy() if hasattr(video, "detach") else np.asarray(video)
    return (np.asarray(array)[..., :3] * 255 + 0.5).astype(np.uint8)


def run_toy_pipelines(needed: set[str], cache: Path, refresh: bool = False) -> dict[str, list]:
    """{pipeline: [(row label, frames uint8 [F, 64, 64, 3])]} for 'retrieval', 'pos', 'tune' in ``needed``,
    read from ``cache`` or run once here (the toy model through the pack's own functions) and cached."""
    out, todo = {}, []
    for name in sorted(needed):
        path = _cache_file(cache, name)
        if path.is_file() and not refresh:
            out[name] = _load_rows(path)
        else:
            todo.append(name)
    if not todo:
        return out
    import tempfile

    harness = _comfy_server().load_test_helper("toy_world_harness")
    harness.use_comfyui(cpu=True)
    import torch

    torch.manual_seed(SEED)
    settings = _settings()
    prompt = settings["prompt"]
    with tempfile.TemporaryDirectory() as tmp:
        retriever = harness.WorldRetriever(Path(tmp) / "toy_index")
        hits = [retriever.search(prompt, rank=r) for r in range(1, RETRIEVAL_HITS + 1)]
        clips = [retriever.frames(hit.video_path) for hit in hits]
    reference = clips[0]
    if "retrieval" in todo:
        out["retrieval"] = [(f"#{r} {hit.score:.2f}|{hit.caption}", _uint8(clip))
                            for r, (hit, clip) in enumerate(zip(hits, clips), 1)]
    found = (f"found clip|{hits[0].caption}", _uint8(reference))
    if "pos" in todo or "tune" in todo:
        pipe = harness.ToyPipeline(steps=int(settings["steps"]), cfg=float(settings["cfg"]))
        base = pipe.base(prompt, SEED).video
        if "pos" in todo:
            inverted = pipe.invert(reference)
            pos = pipe.pos(prompt, SEED, inverted, float(settings["eta"]), gamma=float(settings["gamma"])).video
            out["pos"] = [found, ("base", _uint8(base)), (f"POS|eta {settings['eta']}", _uint8(pos))]
        if "tune" in todo:
            tuned, _, _ = pipe.tune(reference, hits[0].caption, steps=int(settings["tune_steps"]),
                                    lr=float(settings["tune_lr"]), rank=int(settings["tune_rank"]), seed=SEED)
            lora_prompt = settings["lora_prompt"]
            out["tune"] = [found, ("base", _uint8(base)),
                           (f"tuned|VMC {settings['tune_steps']} steps", _uint8(pipe.base(prompt, SEED, tuned).video)),
                           (f"base|{lora_prompt}", _uint8(pipe.base(lora_prompt, SEED).video)),
                           (f"with LoRA|{lora_prompt}", _uint8(pipe.base(lora_prompt, SEED, tuned).video))]
    for name in todo:
        _save_rows(_cache_file(cache, name), out[name])
    return out


def with_probe_readings(strips: dict[str, list]) -> dict[str, list]:
    """The generated rows' labels with the motion the toy world's probe (distill/toy_probe.py) reads in them,
    so a card says which way the shape went (a wrong direction too)."""
    from comfyui_searchpriors.distill import toy_probe

    def read(label: str, frames) -> str:
        head, _, tail = label.partition("|")
        return f"{head}|probe: {toy_probe.probe(frames).motion}" + (f" / {tail}" if tail else "")

    return {name: rows if name == "retrieval" else [(read(label, frames), frames) for label, frames in rows]
            for name, rows in strips.items()}


def card_result(name: str, strips: dict[str, list]) -> dict | None:
    """What the card of workflow ``name`` shows: {"title", "rows": [(label, frames)], "text": [lines], "note"}."""
    if name not in CARD_RESULTS:
        return None
    pipeline, model = CARD_RESULTS[name]
    settings = _settings()
    prompt = settings["prompt"]
    note = f"toy-world result of this pipeline; needs {model} for real videos" if model else ""
    if pipeline == "rewrite":
        graph = json.loads((WORKFLOWS_DIR / "api" / f"{name}.json").read_text(encoding="utf-8"))
        rewriter = next(n["inputs"] for n in graph.values() if n["class_type"] == "SearchPriors_ReferenceRewriter")
        return {"title": "Reference Rewriter (backend 'manual')",
                "text": [("prompt", rewriter["prompt"]), ("rewritten", rewriter["manual_rewrite"])], "note": ""}
    if pipeline == "retrieval":
        return {"title": f"toy world: clips found for \"{prompt}\"", "rows": strips["retrieval"], "note": note}
    if pipeline == "pos":
        return {"title": f"\"{prompt}\" (held out)", "rows": strips["pos"], "note": note}
    rows = strips["tune"]
    if pipeline == "tune":
        return {"title": f"\"{prompt}\" (held out)", "rows": rows[:3], "note": note}
    lora_prompt = settings["lora_prompt"]
    return {"title": f"the tuned motion LoRA on \"{lora_prompt}\"",
            "rows": [(label.replace(f" / {lora_prompt}", "").replace(f"|{lora_prompt}", "|"), frames)
                     for label, frames in rows[3:]], "note": note}


def _draw_result(image: Image.Image, draw: ImageDraw.ImageDraw, result: dict, height: int) -> None:
    """The strip: a title line, one row of frames per video (label left), the honesty note at the bottom."""
    import numpy as np

    title_font, label_font, small_font = _font(16), _font(15), _font(11)
    draw.text((MARGIN / 2, 6), _fit(result["title"], title_font, SIZE[0] - MARGIN, draw), font=title_font,
              fill=RESULT_TEXT)
    top, bottom = 28, height - (22 if result.get("note") else 6)
    if result.get("note"):
        draw.text((SIZE[0] / 2, height - 11), _fit(result["note"], small_font, SIZE[0] - 8, draw), font=small_font,
                  fill=NOTE, anchor="mm")
    if "text" in result:
        font, y = _font(19), top + 10
        for label, text in result["text"]:
            draw.text((MARGIN, y), label + ":", font=label_font, fill=MUTED)
            y += 20
            for line in _wrap(text, font, SIZE[0] - 2 * MARGIN - 10, draw)[:4]:
                draw.text((MARGIN + 10, y), line, font=font, fill=RESULT_TEXT)
                y += 24
            y += 10
        return
    rows = result["rows"]
    frames = max(len(f) for _, f in rows)
    cell = int(min((SIZE[0] - LABEL_WIDTH - 6) / frames - FRAME_GAP, (bottom - top) / len(rows) - FRAME_GAP))
    left = SIZE[0] - 4 - frames * (cell + FRAME_GAP)
    row_height = (bottom - top) / len(rows)
    for r, (label, video) in enumerate(rows):
        y = int(top + r * row_height + (row_height - cell) / 2)
        head, _, tail = label.partition("|")
        draw.text((6, y + 2), _fit(head, label_font, left - 10, draw), font=label_font, fill=RESULT_TEXT)
        for k, line in enumerate(_wrap(tail, small_font, left - 10, draw)[: max(0, (cell - 18) // 12)]):
            draw.text((6, y + 20 + 12 * k), line, font=small_font, fill=MUTED)
        for f, frame in enumerate(video):
            tile = Image.fromarray(np.asarray(frame, dtype=np.uint8)).resize((cell, cell), Image.NEAREST)
            image.paste(tile, (left + f * (cell + FRAME_GAP), y))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report missing thumbnails and card entries")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the toy runs are cached (default <SEARCHPRIORS_CACHE>/thumbnail_strips)")
    parser.add_argument("--refresh", action="store_true", help="run the toy pipelines again, ignoring the cache")
    args = parser.parse_args(argv)
    missing = []
    cards = {c["name"]: (step, c["card"]) for step, c in enumerate(template_cards(), 1)}
    paths = ui_workflows()
    for path in paths:
        if path.stem not in cards:
            missing.append(f"{path.stem} in {TEMPLATE_CARDS.name}")
        if path.stem not in CARD_RESULTS:
            missing.append(f"{path.stem} in CARD_RESULTS")
        if args.check and not thumbnail_path(path).is_file():
            missing.append(thumbnail_path(path).name)
    if not args.check:
        needed = {p for path in paths if path.stem in CARD_RESULTS for p in PIPELINES_OF[CARD_RESULTS[path.stem][0]]}
        strips = run_toy_pipelines(needed, args.cache or default_cache(), args.refresh) if needed else {}
        strips = with_probe_readings(strips) if strips else strips
        for path in paths:
            target = thumbnail_path(path)
            step, card = cards.get(path.stem, (None, None))
            image = render(json.loads(path.read_text(encoding="utf-8")), card, step, card_result(path.stem, strips))
            partial = target.with_name(target.stem + ".partial.jpg")
            image.save(partial, "JPEG", quality=88, optimize=True)
            partial.replace(target)
            print(f"wrote {target.relative_to(WORKFLOWS_DIR.parent)}")
    if missing:
        print("missing: " + ", ".join(missing) + "; run scripts/make_template_thumbnails.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
