"""A strip PNG of toy-world videos for the README: one row per video (base | POS | tuned), its frames side by
side, upscaled with nearest neighbour so the 64x64 frames stay crisp, each row labelled with what the toy
world's probe (distill/toy_probe.py) reads in it.

    python scripts/make_toy_strip.py out/toy_base.mp4 out/toy_pos.mp4 out/toy_tuned.mp4 \
        --labels base POS tuned --title '"a red circle moves up" (held out)' --out docs/images/toy_world_strip.png

`make run` (scripts/run_demo.py) writes out/toy_world_strip.png this way from the videos it saved.
Needs numpy, Pillow, PyAV and torch (the probe): the pack's virtual environment has them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZE = 64           # the toy world's frames
SCALE = 2           # nearest-neighbour upscale of each frame
GAP = 4             # pixels between frames and rows
LABEL_WIDTH = 150   # the label column, left of each row


def _probe_module():
    from comfy_server import load_by_path  # this file's folder is sys.path[0] (run directly or by run_demo.py)

    return load_by_path("searchpriors_toy_probe", REPO / "distill" / "toy_probe.py")


def render_strip(rows, title: str = "", scale: int = SCALE):
    """rows: [(label, frames uint8 [F, 64, 64, 3], lines under the label)] -> a PIL image."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    frames = max(len(f) for _, f, _ in rows)
    cell = SIZE * scale
    top = 22 if title else GAP
    width = LABEL_WIDTH + frames * (cell + GAP)
    height = top + len(rows) * (cell + GAP)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((GAP, 5), title, fill=(0, 0, 0), font=font)
    for r, (label, video, lines) in enumerate(rows):
        y = top + r * (cell + GAP)
        draw.text((GAP, y + 4), label, fill=(0, 0, 0), font=font)
        for i, line in enumerate(lines):
            draw.text((GAP, y + 22 + 14 * i), line, fill=(70, 70, 70), font=font)
        for f, frame in enumerate(video):
            big = np.repeat(np.repeat(np.asarray(frame, dtype=np.uint8), scale, axis=0), scale, axis=1)
            image.paste(Image.fromarray(big), (LABEL_WIDTH + f * (cell + GAP), y))
    return image


def write_strip(videos, out, title: str = "", scale: int = SCALE) -> Path:
    """videos: [(label, mp4 path)]. Reads each at 64x64, probes it, writes the strip PNG to ``out``."""
    probe = _probe_module()
    rows = []
    for label, path in videos:
        frames = probe.read_video_file(path, size=SIZE)
        reading = probe.probe(frames)
        rows.append((label, frames, [f"probe: {reading.colour} {reading.shape}", f"motion: {reading.motion}"]))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    # a palette of 256 colours: the frames hold few, and the README image stays small
    render_strip(rows, title, scale).quantize(colors=256).save(partial, format="PNG", optimize=True)
    partial.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+", type=Path, help="mp4 files of the toy world, one row each")
    parser.add_argument("--labels", nargs="+", help="a label per video (default: the file names)")
    parser.add_argument("--title", default="", help="a line above the rows (the prompt)")
    parser.add_argument("--scale", type=int, default=SCALE, help="nearest-neighbour upscale (default 2)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "toy_world_strip.png")
    args = parser.parse_args(argv)
    labels = args.labels or [v.stem for v in args.videos]
    if len(labels) != len(args.videos):
        parser.error(f"{len(args.videos)} videos but {len(labels)} labels")
    out = write_strip(list(zip(labels, args.videos)), args.out, args.title, args.scale)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
