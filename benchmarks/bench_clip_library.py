"""Cut + frame-sampling throughput of the clip library builder, the pack's detector against PySceneDetect,
and the predicted build time of a 1,000-clip folder from its parts.

Reels (cached under ``bench_out/clip_library/``):
  toy:  ``--toy-clips`` (default 200) toy-world clips played back to back (128x128, 8 fps; 199 joins, each a
        cut of known time). Shots are 1 s long, so every detector gets a minimum shot length of 0.4 s.
  real: the videos under ``../shared/data/videos`` (skipped when absent) cut into 2 s pieces, shuffled so no
        two pieces of one video touch, resampled to 640x360 at 25 fps and played back to back (cuts at the
        joins; camera motion, zooms and cartoon footage inside the pieces).
  files: the same real videos as they are (their own sizes and rates), for throughput only.

Detectors (each on one thread per process; the machine's cores stay free for the decoder's own threads):
  pack:        ``distill.shots.detect_shots(frames_per_shot=0)`` (cut only);
  pack+frames: the same with 8 frames per shot sampled at 448 px (what the builder runs);
  sd-content / sd-adaptive: PySceneDetect's ContentDetector (threshold 27) and AdaptiveDetector (defaults)
        with min_scene_len = 0.4 s, on its PyAV backend (same decoder as the pack) and auto downscale.
        Skipped with a message when ``scenedetect`` (and opencv) are not installed:
        ``pip install scenedetect opencv-python-headless``.

Throughput is seconds of video per second of wall time (best of ``--repeat``); precision/recall count a found
cut as right within half a frame of a join (toy) or 0.1 s (real). The prediction of a 1,000-clip build adds
cut+sampling (measured here, on the real files), captioning (``--caption-clips-per-s``: shots per second of
the GPU captioner, from benchmarks/bench_captioner_gpu.py; without it, the CPU toy captioner's rate measured
here) and indexing (captions per second of ``build_index`` with MiniLM, measured here on toy captions).

    python benchmarks/bench_clip_library.py [--quick] [--caption-clips-per-s 2.5] [--clip-seconds 10]

Writes ``bench_out/bench_clip_library.json``, prints a table and a ``SUMMARY`` line.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import time
import warnings
from pathlib import Path

import numpy as np

import _common as C

OUT = C.BENCH_OUT / "clip_library"
MIN_SHOT_S = 0.4


def _helper(name: str):
    return C.load_test_helper(name)


def real_videos() -> list[str]:
    root = C.shared_data_dir() / "videos"
    return sorted(glob.glob(str(root / "**" / "*.mp4"), recursive=True)) if root.is_dir() else []


def real_reel(path: Path, videos: list[str], piece_s: float = 2.0, fps: int = 25, size=(640, 360)) -> list[float]:
    """Pieces of the real videos, shuffled (no two of one video side by side), resampled, back to back."""
    import av

    pieces = []
    for v, video in enumerate(videos):
        with av.open(video) as container:
            stream = container.streams.video[0]
            frames, times = [], []
            for frame in container.decode(stream):
                times.append(float(frame.time or 0.0))
                frames.append(frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray())
        t0, t_end = times[0], times[-1]
        grid = np.arange(t0, t_end, 1.0 / fps)
        picked = [frames[min(int(np.searchsorted(times, t, side="right")) - 1, len(frames) - 1)] for t in grid]
        per = int(piece_s * fps)
        pieces += [(v, picked[a:a + per]) for a in range(0, len(picked) - per + 1, per)]
    rng = random.Random(0)
    order: list = []
    while pieces:   # greedy shuffle: never the same video twice in a row
        rng.shuffle(pieces)
        nxt = next((p for p in pieces if not order or p[0] != order[-1][0]), pieces[0])
        pieces.remove(nxt)
        order.append(nxt)
    frames, joins, t = [], [], 0.0
    for k, (v, part) in enumerate(order):
        if k and order[k - 1][0] != v:
            joins.append(round(t, 6))
        frames.extend(part)
        t += len(part) / fps
    _helper("shot_clips").write_frames(str(path), frames, fps=fps)
    return joins


def duration_of(path: str) -> float:
    from comfyui_searchpriors.distill.video_frames import probe_video

    info = probe_video(path)
    return float(info.duration or 0.0)


def run_pack(path: str, frames: int):
    from comfyui_searchpriors.distill.shots import detect_shots

    result = detect_shots(path, frames_per_shot=frames)
    return result.cut_times()


def run_scenedetect(path: str, kind: str):
    from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

    video = open_video(path, backend="pyav")
    fps = float(video.frame_rate)
    min_len = max(1, int(round(MIN_SHOT_S * fps)))
    manager = SceneManager()
    manager.add_detector(ContentDetector(min_scene_len=min_len) if kind == "content"
                         else AdaptiveDetector(min_scene_len=min_len))
    manager.detect_scenes(video)
    with warnings.catch_warnings():   # get_seconds is deprecated in 0.7 and still the 0.6 spelling
        warnings.simplefilter("ignore")
        return [s[0].get_seconds() for s in manager.get_scene_list()[1:]]


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def detectors(have_sd: bool):
    out = {"pack": lambda p: run_pack(p, 0), "pack+frames": lambda p: run_pack(p, 8)}
    if have_sd:
        out["sd-content"] = lambda p: run_scenedetect(p, "content")
        out["sd-adaptive"] = lambda p: run_scenedetect(p, "adaptive")
    return out


def index_rate(count: int) -> float:
    """Captions per second of build_index with the default models (toy captions, fresh index)."""
    import csv
    import shutil
    import tempfile

    from comfyui_searchpriors.retrieval.index import build_index
    from comfyui_searchpriors.retrieval.library import LibraryEntry

    with open(C.REPO / "sample_data" / "toy_world" / "library.csv", newline="") as fh:
        captions = [r["caption"] for r in csv.DictReader(fh)]
    entries = [LibraryEntry(f"c{i}", f"{captions[i % len(captions)]} (take {i // len(captions)})", None)
               for i in range(count)]
    nlp, model, _ = C.load_models()
    folder = tempfile.mkdtemp(prefix="bench_clip_index_")
    try:
        t = time.perf_counter()
        build_index(folder, entries, nlp, model)
        return count / (time.perf_counter() - t)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def toy_caption_rate(paths: list[str]) -> float:
    """Shots per second of the toy captioner (the CPU stand-in when no GPU rate is given)."""
    from comfyui_searchpriors.retrieval.captioner import ToyCaptioner

    reader = _helper("shot_clips")
    shots = [reader.read_frames(p) for p in paths]
    captioner = ToyCaptioner("toy")
    t = time.perf_counter()
    captioner.caption(shots, "describe", batch_size=8)
    return len(shots) / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 toy clips, one repeat, real reel skipped")
    parser.add_argument("--toy-clips", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--caption-clips-per-s", type=float, default=None,
                        help="shots per second of the GPU captioner (bench_captioner_gpu.py); default: measured toy")
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="mean length of a clip in the 1,000-clip folder")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.quick:
        args.toy_clips, args.repeat = 40, 1
    OUT.mkdir(parents=True, exist_ok=True)
    shot_clips = _helper("shot_clips")
    toy_paths = shot_clips.toy_clip_paths(args.toy_clips, seed=1)
    toy = OUT / f"toy_{args.toy_clips}.mp4"
    toy_joins_file = toy.with_suffix(".json")
    if not toy.is_file() or not toy_joins_file.is_file():
        toy_joins_file.write_text(json.dumps(shot_clips.concat_toy_clips(str(toy), toy_paths)))
    reels = {"toy": (str(toy), json.loads(toy_joins_file.read_text()), 0.5 / 8)}
    videos = real_videos()
    if videos and not args.quick:
        real = OUT / "real_reel.mp4"
        real_joins = real.with_suffix(".json")
        if not real.is_file() or not real_joins.is_file():
            real_joins.write_text(json.dumps(real_reel(real, videos)))
        reels["real"] = (str(real), json.loads(real_joins.read_text()), 0.1)
    elif not videos:
        print(f"real reel skipped: no videos under {C.shared_data_dir() / 'videos'}")
    try:
        import scenedetect  # noqa: F401
        have_sd = True
    except ImportError:
        have_sd = False
        print("PySceneDetect columns skipped: pip install scenedetect opencv-python-headless")

    rows, results = [], {}
    for reel, (path, joins, tol) in reels.items():
        seconds = duration_of(path)
        for name, fn in detectors(have_sd).items():
            wall, cuts = timed(lambda: fn(path), args.repeat)
            _, precision, recall = shot_clips.match_cuts(cuts, joins, tolerance=tol)
            results[f"{reel}/{name}"] = dict(video_s=seconds, wall_s=wall, rate=seconds / wall, cuts=len(cuts),
                                             joins=len(joins), precision=precision, recall=recall)
            rows.append((reel, name, f"{seconds:.1f}", f"{wall:.2f}", f"{seconds / wall:.0f}", len(joins), len(cuts),
                         f"{precision:.3f}", f"{recall:.3f}"))
    if videos and not args.quick:
        total_s = sum(duration_of(v) for v in videos)
        for name, fn in detectors(have_sd).items():
            wall, cuts = timed(lambda: [fn(v) for v in videos], args.repeat)
            results[f"files/{name}"] = dict(video_s=total_s, wall_s=wall, rate=total_s / wall)
            rows.append(("files", name, f"{total_s:.1f}", f"{wall:.2f}", f"{total_s / wall:.0f}", "-", "-", "-", "-"))
    print(C.table(["reel", "detector", "video s", "wall s", "video s/s", "joins", "cuts", "precision", "recall"], rows))

    # the 1,000-clip folder, from the parts
    sampling = results.get("files/pack+frames", results["toy/pack+frames"])["rate"]
    shots_per_clip = max(1.0, args.clip_seconds / 4.0)   # stock footage: a shot every ~4 s (assumed)
    caption_rate = args.caption_clips_per_s
    caption_source = "given (GPU)"
    if caption_rate is None:
        caption_rate = toy_caption_rate(toy_paths[:40])
        caption_source = "toy captioner, CPU"
    indexing = index_rate(400 if args.quick else 2000)
    clips = 1000
    cut_s = clips * args.clip_seconds / sampling
    caption_s = clips * shots_per_clip / caption_rate
    index_s = clips * shots_per_clip / indexing
    total = cut_s + caption_s + index_s
    prediction = dict(clips=clips, clip_seconds=args.clip_seconds, shots_per_clip=shots_per_clip,
                      cut_and_sample_rate=sampling, caption_shots_per_s=caption_rate, caption_source=caption_source,
                      index_captions_per_s=indexing, cut_s=cut_s, caption_s=caption_s, index_s=index_s, total_s=total)
    print(f"\n1,000 clips of {args.clip_seconds:g} s ({shots_per_clip:g} shots each): cut+sample {cut_s / 60:.1f} min "
          f"({sampling:.0f} s of video/s), caption {caption_s / 60:.1f} min ({caption_rate:.2f} shots/s, "
          f"{caption_source}), index {index_s / 60:.1f} min ({indexing:.0f} captions/s): {total / 60:.1f} min "
          f"in all (captioning runs after cutting, one clip at a time)")
    C.write_result("bench_clip_library", dict(results=results, prediction=prediction))
    toy_pack, toy_sd = results["toy/pack"], results.get("toy/sd-adaptive")
    real_pack, real_sd = results.get("real/pack"), results.get("real/sd-content")
    parts = [f"toy P/R {toy_pack['precision']:.2f}/{toy_pack['recall']:.2f} at {toy_pack['rate']:.0f} s/s"]
    if toy_sd:
        parts.append(f"PySceneDetect adaptive {toy_sd['precision']:.2f}/{toy_sd['recall']:.2f} at {toy_sd['rate']:.0f} s/s")
    if real_pack:
        parts.append(f"real P/R {real_pack['precision']:.2f}/{real_pack['recall']:.2f}"
                     + (f" (content {real_sd['precision']:.2f}/{real_sd['recall']:.2f})" if real_sd else ""))
    if "files/pack+frames" in results:
        f = results["files/pack+frames"]
        parts.append(f"cut+8 frames on real files {f['rate']:.0f} s of video/s"
                     + (f" (PySceneDetect content cut only {results['files/sd-content']['rate']:.0f})"
                        if "files/sd-content" in results else ""))
    parts.append(f"1,000 clips predicted {total / 60:.0f} min")
    print("SUMMARY bench_clip_library: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
