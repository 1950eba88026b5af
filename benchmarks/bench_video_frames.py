"""Peak memory and time of taking 16 reference frames at 256x256: the pack's decoder vs the naive way.

Clips (generated with PyAV, H.264, cached under ``bench_out/video_frames/``; frame i encodes i in its grey
levels, so both ways are checked to pick the same source frames):
  a. "1080p": 1920x1080, 30 fps, 10 s (300 frames), a keyframe every 2 s; 16 frames with stride 2 from 3 s
     (the keyframe at 2 s is where decoding starts).
  b. "hour": 1920x1080, 1 fps, 3600 s (one hour), a keyframe every 10 s; 16 frames (stride 1) from 1803 s
     (so 3 frames after the keyframe are decoded and skipped). ``--quick``: 600 s, from 303 s.

Ways, each in a fresh subprocess whose peak RSS (``VmHWM`` of /proc/self/status) is read at the end:
  decoder: ``distill.video_frames.read_reference_frames`` (seek to the keyframe before the start, decode
           forward, libswscale scales only the chosen frames to 256 px, stop after the last one);
  naive:   decode every frame of the file to a full-size RGB array (``frame.to_ndarray(format="rgb24")``),
           keep them all, then pick the same frames and resize them with torch (area) + centre crop. This
           is what loading a whole video as an IMAGE batch costs. It runs under a memory budget
           (``--naive-budget-mb``, default 3000): when its arrays would pass it, it stops and reports the
           frames it held, and the projected total (frames in file x W x H x 3 bytes).
Both subprocesses import torch, PyAV and the pack first; that baseline RSS is reported too. Time is the
wall time of the call (the decoder: best of 3 runs in its process; the first run is also reported).
Writes ``bench_out/bench_video_frames.json``, prints a table and a ``SUMMARY`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _common as C

CLIPS = {
    "1080p": dict(width=1920, height=1080, fps=30, seconds=10, gop_seconds=2, start=3.0, stride=2),
    "hour": dict(width=1920, height=1080, fps=1, seconds=3600, gop_seconds=10, start=1803.0, stride=1),
}
QUICK_HOUR = dict(seconds=600, start=303.0)
COUNT, SIZE = 16, 256


def vm_hwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return C.maxrss_mb()


# ---------------------------------------------------------------------------------------------- clips

def _luma_for(index: int, width: int, height: int, base: np.ndarray) -> np.ndarray:
    """A yuv420p picture: a textured background (so the codec has real work) with two index patches."""
    y = base.copy()
    shift = (index * 37) % width
    y[:, :] = np.roll(base, shift, axis=1)
    ph, pw = height // 4, width // 4
    # video-range luma (16..235): level k is 20 + 6k, k < 32
    y[ph:2 * ph, pw:2 * pw] = 20 + 6 * (index % 32)
    y[ph:2 * ph, 2 * pw:3 * pw] = 20 + 6 * ((index // 32) % 32)
    y[2 * ph:3 * ph, pw:3 * pw] = 20 + 6 * (index // 1024)
    return y


def clip_index(rgb: np.ndarray, src_w: int, src_h: int, scale: float = 1.0, x0: int = 0, y0: int = 0) -> int:
    """The index a generated frame encodes. ``rgb`` is the source frame scaled by ``scale`` and cut at
    (x0, y0) (a centre crop), or the full-size frame with the defaults."""
    ph, pw = src_h // 4, src_w // 4

    def level(top, bottom, left, right):
        rows = slice(round(top * scale) - y0, round(bottom * scale) - y0)
        cols = slice(round(left * scale) - x0, round(right * scale) - x0)
        box = rgb[rows, cols, 1]
        luma = float(box.astype(np.float64).mean()) * 219 / 255 + 16   # grey RGB back to video-range luma
        return int(round((luma - 20) / 6))

    low = level(ph + ph // 4, 2 * ph - ph // 4, pw + pw // 4, 2 * pw - pw // 4)
    mid = level(ph + ph // 4, 2 * ph - ph // 4, 2 * pw + pw // 4, 3 * pw - pw // 4)
    high = level(2 * ph + ph // 4, 3 * ph - ph // 4, pw + pw // 4, 3 * pw - pw // 4)
    return high * 1024 + mid * 32 + low


def write_clip(path: Path, width: int, height: int, fps: int, seconds: int, gop_seconds: int, **_) -> None:
    import av

    tmp = path.with_suffix(".tmp.mp4")
    rng = np.random.default_rng(0)
    base = (96 + 32 * np.sin(np.linspace(0, 12 * np.pi, width))[None, :]
            + rng.integers(-12, 12, (height, width))).clip(16, 235).astype(np.uint8)
    chroma = np.full((height // 2, width), 128, np.uint8)
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        gop = max(1, fps * gop_seconds)
        stream.options = {"preset": "ultrafast", "crf": "28", "g": str(gop), "keyint_min": str(gop)}
        for i in range(fps * seconds):
            plane = np.concatenate([_luma_for(i, width, height, base), chroma], axis=0)
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    os.replace(tmp, path)


def clip_path(name: str, spec: dict) -> Path:
    folder = C.BENCH_OUT / "video_frames"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{spec['width']}x{spec['height']}_{spec['fps']}fps_{spec['seconds']}s.mp4"
    if not path.is_file():
        t = time.perf_counter()
        print(f"writing {path.name} ...", flush=True)
        write_clip(path, **spec)
        print(f"  {time.perf_counter() - t:.1f} s, {path.stat().st_size / 2**20:.1f} MiB", flush=True)
    return path


# -------------------------------------------------------------------------------------------- workers

def worker_decoder(path: str, start: float, stride: int) -> dict:
    import av  # noqa: F401  (the same imports as the naive process, before the baseline)
    import torch  # noqa: F401

    from comfyui_searchpriors.distill.video_frames import probe_video, read_reference_frames, target_geometry

    baseline = vm_hwm_mb()
    times, result = [], None
    for _ in range(3):
        t = time.perf_counter()
        result = read_reference_frames(path, COUNT, SIZE, SIZE, start_seconds=start, stride=stride)
        times.append(time.perf_counter() - t)
    peak = vm_hwm_mb()
    info = probe_video(path)
    sw, sh, x0, y0 = target_geometry(info.width, info.height, SIZE, SIZE, "center")
    pixels = (result.frames.numpy() * 255).round()
    content = [clip_index(f, info.width, info.height, sw / info.width, x0, y0) for f in pixels]
    assert content == result.source_indices, (content, result.source_indices)   # timestamps and pixels agree
    return {"baseline_mb": baseline, "peak_mb": peak, "seconds": min(times), "first_seconds": times[0],
            "frames_decoded": result.decoded, "source_indices": result.source_indices,
            "shape": list(result.frames.shape), "complete": True}


def worker_naive(path: str, start: float, stride: int, budget_mb: float) -> dict:
    import av
    import torch
    import torch.nn.functional as F

    import comfyui_searchpriors.distill.video_frames  # noqa: F401  (same imports as the decoder's process)

    baseline = vm_hwm_mb()
    t = time.perf_counter()
    frames, times, held, complete = [], [], 0, True
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        total = stream.frames
        fps = float(stream.average_rate)
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")
            if (held + rgb.nbytes) / 2**20 > budget_mb:
                complete = False
                break
            frames.append(rgb)
            times.append(float(frame.time))
            held += rgb.nbytes
    out = {"baseline_mb": baseline, "frames_held": len(frames), "held_mb": held / 2**20, "complete": complete,
           "projected_mb": total * frames[0].nbytes / 2**20 if frames else None, "frames_in_file": total}
    if complete:
        first = next(i for i, ts in enumerate(times) if ts > start + 1e-3 / fps) - 1
        picked = [frames[max(first, 0) + k * stride] for k in range(COUNT)]
        batch = torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).float().div(255)
        h, w = batch.shape[2:]
        scale = SIZE / min(h, w)
        batch = F.interpolate(batch, size=(round(h * scale), round(w * scale)), mode="area")
        y, x = (batch.shape[2] - SIZE) // 2, (batch.shape[3] - SIZE) // 2
        batch = batch[:, :, y:y + SIZE, x:x + SIZE].permute(0, 2, 3, 1).contiguous()
        out["source_indices"] = [clip_index(p, w, h) for p in picked]
        out["shape"] = list(batch.shape)
    out["seconds"] = time.perf_counter() - t
    out["frames_decoded"] = len(frames) + (0 if complete else 1)
    out["peak_mb"] = vm_hwm_mb()
    return out


def run_worker(way: str, path: Path, spec: dict, budget_mb: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", way, "--path", str(path), "--start", str(spec["start"]),
           "--stride", str(spec["stride"]), "--naive-budget-mb", str(budget_mb)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{way} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 10-minute 'hour' clip instead of an hour")
    parser.add_argument("--naive-budget-mb", type=float, default=3000.0)
    parser.add_argument("--worker", choices=["decoder", "naive"])
    parser.add_argument("--path")
    parser.add_argument("--start", type=float)
    parser.add_argument("--stride", type=int)
    args = parser.parse_args()
    if args.worker:
        if args.worker == "decoder":
            result = worker_decoder(args.path, args.start, args.stride)
        else:
            result = worker_naive(args.path, args.start, args.stride, args.naive_budget_mb)
        print(json.dumps(result))
        return

    started = time.perf_counter()
    specs = {k: dict(v) for k, v in CLIPS.items()}
    if args.quick:
        specs["hour"].update(QUICK_HOUR)
    rows, results = [], {}
    for name, spec in specs.items():
        path = clip_path(name, spec)
        expected = [int(round(spec["start"] * spec["fps"])) + k * spec["stride"] for k in range(COUNT)]
        for way in ("decoder", "naive"):
            r = run_worker(way, path, spec, args.naive_budget_mb)
            if r.get("complete"):
                assert r["source_indices"] == expected, (name, way, r["source_indices"], expected)
                assert r["shape"] == [COUNT, SIZE, SIZE, 3]
            results[f"{name}/{way}"] = {**r, "clip": path.name, "clip_spec": spec}
            note = "" if r.get("complete") else (f"stopped at the {args.naive_budget_mb:.0f} MB budget after "
                                                 f"{r['frames_held']} of {r['frames_in_file']} frames; all would "
                                                 f"need {r['projected_mb'] / 1024:.1f} GiB")
            rows.append([name, way, round(r["baseline_mb"]), round(r["peak_mb"]),
                         round(r["peak_mb"] - r["baseline_mb"]), r["frames_decoded"], r["seconds"], note])
        print(C.table(["clip", "way", "baseline MB", "peak MB", "rise MB", "frames decoded", "seconds", "note"],
                      rows[-2:]), flush=True)
    print()
    print(C.table(["clip", "way", "baseline MB", "peak MB", "rise MB", "frames decoded", "seconds", "note"], rows,
                  title=f"{COUNT} frames at {SIZE}x{SIZE}: peak RSS (VmHWM) per fresh process"))
    a_dec, a_naive = results["1080p/decoder"], results["1080p/naive"]
    h_dec, h_naive = results["hour/decoder"], results["hour/naive"]
    if h_naive["complete"]:
        hour_naive = f"naive {h_naive['peak_mb']:.0f} MB in {h_naive['seconds']:.1f} s"
    else:
        hour_naive = (f"naive over its {args.naive_budget_mb:.0f} MB budget "
                      f"(needs {h_naive['projected_mb'] / 1024:.1f} GiB)")
    summary = (f"SUMMARY video_frames: 1080p 10 s clip: decoder peak {a_dec['peak_mb']:.0f} MB "
               f"(+{a_dec['peak_mb'] - a_dec['baseline_mb']:.0f}) in {a_dec['seconds']:.2f} s vs naive "
               f"{a_naive['peak_mb']:.0f} MB (+{a_naive['peak_mb'] - a_naive['baseline_mb']:.0f}) in "
               f"{a_naive['seconds']:.1f} s; {specs['hour']['seconds'] // 60} min 1080p clip from "
               f"{specs['hour']['start']:.0f} s: decoder peak {h_dec['peak_mb']:.0f} MB "
               f"(+{h_dec['peak_mb'] - h_dec['baseline_mb']:.0f}) in {h_dec['seconds']:.2f} s "
               f"({h_dec['frames_decoded']} frames decoded), {hour_naive}")
    print(summary)
    path = C.write_result("bench_video_frames", {"results": results, "summary": summary, "quick": args.quick,
                                                 "environment": C.environment(),
                                                 "date": time.strftime("%Y-%m-%d", time.gmtime()),
                                                 "run_seconds": time.perf_counter() - started}, quick=args.quick)
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
