"""Write toy-world clips to disk: mp4 files plus a captions CSV that Motion Index Builder reads.

    python scripts/make_toy_world.py --out sample_data/toy_world --count 288 --split library --cover --seed 0

Layout of the output folder (the layout of ``sample_data/sample_library``)::

    library.csv        video_id, video (relative to the CSV), caption, then the clip's spec columns
                       (split, shape, colour, motion, background, x0, y0, radius, speed, orbit, phase,
                       bg_level, bg_seed, template, phrase)
    videos/<id>.mp4    8 fps, H.264 (yuv420p) where the PyAV build has an encoder for it, else MPEG-4 Part 2;
                       the 64x64 frames upscaled 2x by nearest neighbour (``scale``), so that 4:2:0 chroma
                       subsampling keeps each world pixel's colour (at 64x64 a 10-pixel square's corners
                       round off in the chroma and it reads almost like a circle)
    world.json         what was asked for (count, split, seed, cover, size, frames, fps, codec)

Deterministic from the seed (same specs, same CSV; the encoder runs single-threaded so the mp4 bytes are the
same too). Atomic: everything is written into a hidden temporary folder next to the output and renamed into
place at the end, so a failure or an interrupt leaves no partial library (the temporary folder is removed).
Rendering and encoding spread over ``workers`` forked processes (contiguous slices of the clips).

Pure torch + numpy + PyAV; no ComfyUI import. Loadable by path (``scripts/make_toy_world.py``): then the
sibling ``toy_world.py`` is loaded by path too.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np


def _load_sibling(name: str):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    mod_name = f"searchpriors_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


try:
    from . import toy_world as tw
except ImportError:  # loaded by path, outside the package
    tw = _load_sibling("toy_world")

CSV_NAME = "library.csv"
VIDEO_DIR = "videos"
MANIFEST = "world.json"
SPEC_COLUMNS = ("split", "shape", "colour", "motion", "background", "x0", "y0", "radius", "speed", "orbit",
                "phase", "bg_level", "bg_seed", "template", "phrase")
COLUMNS = ("video_id", "video", "caption") + SPEC_COLUMNS
SPLITS = ("library", "train", "eval")
RENDER_BATCH = 64


class ToyWorldWriteError(RuntimeError):
    """The toy world could not be written; nothing was left at the output path."""


# ------------------------------------------------------------------------------------------- specs
def covering_specs(n: int, seed: int) -> list:
    """``n`` library specs cycling through every (shape, colour, motion) in a seeded order: with
    n >= 144 every combination is there (n // 144 or n // 144 + 1 times each)."""
    combos = list(itertools.product(tw.SHAPES, tuple(tw.COLOURS), tw.MOTIONS))
    rng = random.Random(f"toy-world/cover/{seed}")
    out = []
    while len(out) < n:
        order = combos[:]
        rng.shuffle(order)
        for shape, colour, motion in order[:n - len(out)]:
            out.append(tw.sample_spec(rng, "library", shape=shape, colour=colour, motion=motion))
    return out


def make_specs(n: int, seed: int, split: str = "library", cover: bool = False) -> list:
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    if cover:
        if split != "library":
            raise ValueError("--cover draws every (shape, colour, motion), which only the library split allows")
        return covering_specs(n, seed)
    return tw.sample_specs(n, seed, split)


def clip_ids(n: int, prefix: str = "toy") -> list[str]:
    width = max(5, len(str(max(n - 1, 0))))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def spec_row(spec, video_id: str, split: str) -> dict:
    row = spec.as_row()
    out = {"video_id": video_id, "video": f"{VIDEO_DIR}/{video_id}.mp4", "caption": row["caption"], "split": split}
    for key in SPEC_COLUMNS[1:]:
        value = row[key]
        out[key] = round(value, 6) if isinstance(value, float) else value
    return out


def spec_from_row(row: dict):
    """The ClipSpec of a CSV row written here (floats rounded to 6 decimals)."""
    kwargs = {}
    for f in tw.ClipSpec.__dataclass_fields__.values():
        value = row[f.name]
        if f.type in ("float", float):
            value = float(value)
        elif f.type in ("int", int):
            value = int(value)
        kwargs[f.name] = value
    return tw.ClipSpec(**kwargs)


# ------------------------------------------------------------------------------------------- video
def pick_codec() -> str:
    import av
    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - not in this build
            continue
    raise ToyWorldWriteError("this PyAV build has no H.264 or MPEG-4 encoder")


def encode_mp4(path: str, frames: np.ndarray, fps: int = 8, codec: Optional[str] = None, crf: int = 18) -> None:
    """Write uint8 frames [T, H, W, 3] (even H and W) as an mp4; through ``path``.part, renamed at the end."""
    import av
    codec = codec or pick_codec()
    part = path + ".part"
    t, h, w, _ = frames.shape
    try:
        with av.open(part, mode="w", format="mp4") as container:
            options = {"threads": "1"}
            if codec in ("libx264", "h264"):
                options.update({"crf": str(crf), "preset": "medium"})
            stream = container.add_stream(codec, rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            if codec == "mpeg4":
                stream.bit_rate = 400_000
            stream.thread_count = 1
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.remove(part)


def to_uint8(video) -> np.ndarray:
    """[..., 3] float 0..1 tensor or array -> uint8 numpy (rounded)."""
    arr = video.detach().cpu().numpy() if hasattr(video, "detach") else np.asarray(video)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of [..., H, W, 3] by an integer factor."""
    if scale == 1:
        return frames
    return np.repeat(np.repeat(frames, scale, axis=-3), scale, axis=-2)


def _write_slice(folder: str, specs: Sequence, ids: Sequence[str], fps: int, codec: str, crf: int, scale: int,
                 on_clip: Optional[Callable[[int], None]] = None) -> None:
    for start in range(0, len(specs), RENDER_BATCH):
        batch = specs[start:start + RENDER_BATCH]
        frames = upscale(to_uint8(tw.render(batch)), scale)
        for k, video in enumerate(frames):
            encode_mp4(os.path.join(folder, VIDEO_DIR, f"{ids[start + k]}.mp4"), video, fps, codec, crf)
            if on_clip is not None:
                on_clip(start + k)


def _child(folder, specs, ids, fps, codec, crf, scale, error_path) -> None:  # pragma: no cover - runs in a fork
    code = 0
    try:
        import torch
        torch.set_num_threads(1)
        _write_slice(folder, specs, ids, fps, codec, crf, scale)
    except BaseException:  # noqa: BLE001 - reported to the parent through the file
        with open(error_path, "w", encoding="utf-8") as fh:
            fh.write(traceback.format_exc())
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run_workers(folder, specs, ids, fps, codec, crf, scale, workers: int) -> None:
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    bounds = np.linspace(0, len(specs), workers + 1).round().astype(int)
    procs = []
    for w in range(workers):
        lo, hi = int(bounds[w]), int(bounds[w + 1])
        if hi <= lo:
            continue
        err = os.path.join(folder, f".worker{w}.error")
        p = ctx.Process(target=_child, args=(folder, specs[lo:hi], ids[lo:hi], fps, codec, crf, scale, err), daemon=True)
        p.start()
        procs.append((p, err))
    failures = []
    try:
        for p, err in procs:
            p.join()
            if p.exitcode != 0:
                detail = open(err, encoding="utf-8").read() if os.path.exists(err) else f"exit code {p.exitcode}"
                failures.append(detail)
    finally:
        for p, _ in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    if failures:
        raise ToyWorldWriteError("a writer process failed:\n" + failures[0])


# -------------------------------------------------------------------------------------------- write
@dataclass
class WriteReport:
    out: str
    count: int
    seconds: float
    codec: str
    bytes: int

    @property
    def clips_per_second(self) -> float:
        return self.count / max(self.seconds, 1e-9)

    def summary(self) -> str:
        return (f"{self.count} clips written to {self.out} in {self.seconds:.1f} s "
                f"({self.clips_per_second:.1f} clips/s, {self.codec}, {self.bytes / 1e6:.2f} MB)")


def write_world(out: str, count: int, seed: int = 0, split: str = "library", cover: bool = False,
                workers: int = 1, fps: int = 8, codec: Optional[str] = None, crf: int = 18, scale: int = 2,
                overwrite: bool = False, prefix: str = "toy",
                on_clip: Optional[Callable[[int], None]] = None) -> WriteReport:
    """Write ``count`` clips of ``split`` to the folder ``out`` atomically (see the module docstring).

    ``on_clip`` (single-process writes only) is called after each clip: tests use it to fail mid-way."""
    if count < 1:
        raise ValueError("count must be at least 1")
    if scale < 1:
        raise ValueError("scale must be at least 1")
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise ToyWorldWriteError(f"'{out}' exists: choose another folder or pass overwrite=True (--overwrite)")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    specs = make_specs(count, seed, split, cover)
    ids = clip_ids(count, prefix)
    codec = codec or pick_codec()
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        os.makedirs(os.path.join(tmp, VIDEO_DIR))
        workers = max(1, min(int(workers), count))
        if workers > 1 and on_clip is None and "fork" in __import__("multiprocessing").get_all_start_methods():
            _run_workers(tmp, specs, ids, fps, codec, crf, scale, workers)
        else:
            _write_slice(tmp, specs, ids, fps, codec, crf, scale, on_clip)
        with open(os.path.join(tmp, CSV_NAME), "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            for spec, vid in zip(specs, ids):
                writer.writerow(spec_row(spec, vid, split))
        manifest = {"format": "comfyui-searchpriors/toy-world", "count": count, "split": split, "seed": seed,
                    "cover": cover, "size": tw.SIZE, "frames": tw.FRAMES, "scale": scale,
                    "video_size": tw.SIZE * scale, "fps": fps, "codec": codec,
                    "crf": crf, "csv": CSV_NAME}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
            fh.write("\n")
        total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
        if os.path.exists(out):
            trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(trash, "old"))
            os.rename(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WriteReport(out=out, count=count, seconds=time.perf_counter() - started, codec=codec, bytes=total)


def read_world_csv(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Write toy-world clips (mp4) and a captions CSV for Motion Index Builder.")
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--count", type=int, default=1000, help="number of clips")
    parser.add_argument("--split", choices=SPLITS, default="library",
                        help="library/eval: every (shape, motion) pair; train: withholds the held-out pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cover", action="store_true",
                        help="cycle through every (shape, colour, motion) (library split only)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="writer processes")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--codec", default=None, help="PyAV encoder (default: libx264, else h264, else mpeg4)")
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality (lower is better)")
    parser.add_argument("--scale", type=int, default=2,
                        help="mp4 frames are the world's frames upscaled this many times (nearest): at 2 the "
                             "encoder's 4:2:0 chroma keeps every pixel's colour (small shapes keep their outline)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder (atomically)")
    args = parser.parse_args(argv)
    try:
        report = write_world(args.out, args.count, seed=args.seed, split=args.split, cover=args.cover,
                             workers=args.workers, fps=args.fps, codec=args.codec, crf=args.crf,
                             scale=args.scale, overwrite=args.overwrite)
    except (ToyWorldWriteError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
