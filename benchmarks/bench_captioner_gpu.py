"""Clip captioning throughput at real model size with random weights (cost and memory do not depend on the
weights' values): clips per second and peak VRAM, batched against one clip at a time, in one process.

Models (``tests/tiny_vlms.py`` builds them from the published shapes, with processor and tokenizer, saves
them to a folder and the pack loads them through ``retrieval.captioner.load_captioner``):
  qwen2_5_vl: Qwen2.5-VL-3B-Instruct's shapes (36 layers of 2048, vision 32 x 1280), bf16; a clip is 8 frames
              at --side x --side (default 448: 256 video tokens per pair of frames, 1,024 per clip);
  florence2:  Florence-2-large's shapes (DaViT 256..2048, BART 12+12 x 1024), bf16; one 768x768 frame a clip.
Every row generates exactly --new-tokens tokens per clip (end-of-text is switched off: random weights would
stop at arbitrary lengths), greedy, as the captioner does.

    python3 benchmarks/bench_captioner_gpu.py --device cuda [--family all|qwen2_5_vl|florence2]
                                             [--clips 32] [--batch 8] [--new-tokens 32] [--side 448]
    python3 benchmarks/bench_captioner_gpu.py --quick      # tiny models on the CPU: checks the script runs

Prints a table and one ``SUMMARY bench_captioner_gpu:`` line; writes bench_out/bench_captioner_gpu.json.
Needs torch and transformers (with Qwen2_5_VLForConditionalGeneration / Florence2ForConditionalGeneration);
the pack is imported from this checkout.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import tempfile
import time
import types
from pathlib import Path

import _common as C  # noqa: E402 (the script's own folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
BENCH_OUT = REPO / "bench_out"
GIB = 1024 ** 3


def log(msg: str) -> None:
    print(msg, flush=True)


def pack_module(name: str):
    """comfyui_searchpriors.<name>, from this checkout when the pack is not installed."""
    try:
        return importlib.import_module(f"comfyui_searchpriors.{name}")
    except ImportError:
        pkg = types.ModuleType("comfyui_searchpriors")
        pkg.__path__ = [str(REPO)]
        sys.modules["comfyui_searchpriors"] = pkg
        return importlib.import_module(f"comfyui_searchpriors.{name}")


def tiny_vlms():
    return C.load_test_helper("tiny_vlms")


def clips(n: int, frames: int, side: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (frames, side, side, 3), dtype=np.uint8)
    return [[np.roll(f, k, axis=1) for f in base] for k in range(n)]


def measure(torch, captioner, shots, batch: int, prompt: str) -> dict:
    cuda = captioner.device.type == "cuda"
    captioner.caption(shots[:batch], prompt, batch_size=batch)          # warm-up (kernels, allocator)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = captioner.caption(shots, prompt, batch_size=batch)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    # Random weights may decode to special tokens only: an empty caption still cost its --new-tokens steps.
    errors = [o for o in out if isinstance(o, Exception) and "empty caption" not in str(o)]
    if errors:
        raise RuntimeError(f"{len(errors)} clips failed, first: {errors[0]!r}")
    return {"batch": batch, "clips": len(shots), "seconds": seconds, "clips_per_s": len(shots) / seconds,
            "peak_vram_gib": torch.cuda.max_memory_allocated() / GIB if cuda else 0.0}


def run_family(torch, family: str, args, workdir: str) -> list[dict]:
    cap = pack_module("retrieval.captioner")
    writer = tiny_vlms().WRITERS[family]
    size = "tiny" if args.quick else "real"
    folder = str(Path(workdir) / family)
    t0 = time.perf_counter()
    build_device = args.device if args.device.startswith("cuda") else "cpu"
    writer(folder, size=size, dtype=torch.bfloat16 if size == "real" else None, device=build_device)
    log(f"{family}: {size} random model written in {time.perf_counter() - t0:.1f} s")
    captioner = cap.load_captioner(folder, device=args.device, max_side=args.side, max_frames=args.frames,
                                   max_new_tokens=args.new_tokens)
    params = sum(p.numel() for p in captioner.model.parameters())
    gen = captioner.model.generation_config
    gen.eos_token_id = None                 # always --new-tokens tokens: comparable rows
    gen.min_new_tokens = args.new_tokens
    frames = 1 if family == "florence2" else args.frames
    side = 768 if (family == "florence2" and not args.quick) else args.side
    shots = clips(args.clips, frames, side)
    rows = []
    for batch in (1, args.batch):
        row = measure(torch, captioner, shots, batch, cap.DEFAULT_CAPTION_PROMPT)
        row.update(family=family, params_b=params / 1e9, frames=frames, side=side)
        rows.append(row)
        log(f"  batch {batch}: {row['clips_per_s']:.2f} clips/s, peak {row['peak_vram_gib']:.1f} GiB")
    del captioner
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--family", default="all", choices=["all", "qwen2_5_vl", "florence2"])
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="tiny models on the CPU, few clips (checks the script)")
    ap.add_argument("--workdir", default=None, help="where the random model folders go (default: a temp dir)")
    args = ap.parse_args(argv)
    import torch

    if args.quick:
        args.device, args.clips, args.batch, args.new_tokens, args.side = "cpu", 4, 2, 4, 56
        torch.set_num_threads(1)
    elif args.device.startswith("cuda") and not torch.cuda.is_available():
        log("skipped: --device cuda but CUDA is not available (use --quick for the CPU check)")
        return 0
    families = ["qwen2_5_vl", "florence2"] if args.family == "all" else [args.family]
    import transformers

    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        for family in families:
            rows.extend(run_family(torch, family, args, workdir))
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    log("")
    log(f"{'family':<12} {'params':>7} {'frames':>6} {'side':>5} {'batch':>5} {'clips/s':>8} {'s/clip':>7} "
        f"{'peak GiB':>8}")
    for r in rows:
        log(f"{r['family']:<12} {r['params_b']:>6.2f}B {r['frames']:>6} {r['side']:>5} {r['batch']:>5} "
            f"{r['clips_per_s']:>8.2f} {1 / r['clips_per_s']:>7.3f} {r['peak_vram_gib']:>8.1f}")
    parts = []
    for family in families:
        one, many = [r for r in rows if r["family"] == family]
        parts.append(f"{family} {many['clips_per_s']:.2f} clips/s at batch {many['batch']} "
                     f"({many['clips_per_s'] / one['clips_per_s']:.2f}x one at a time), peak "
                     f"{many['peak_vram_gib']:.1f} GiB")
    C.write_result("bench_captioner_gpu", {"device": device, "transformers": transformers.__version__,
                                           "torch": torch.__version__, "quick": args.quick,
                                           "new_tokens": args.new_tokens, "rows": rows},
                   out=BENCH_OUT / "bench_captioner_gpu.json")
    log(f"SUMMARY bench_captioner_gpu: {device}, {args.new_tokens} new tokens a clip: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
