"""The Wan-architecture toy on a GPU: base vs POS vs VMC (all blocks / the 'temporal' half), enough videos to tell.

    python benchmarks/bench_toy_wan_gpu.py [--prompts 12] [--seeds 4] [--vmc-steps 200] [--budget-s 240]

bench_toy_world.py runs these rows on the CPU at 1 seed per prompt (n = 6); this runs them where they are cheap.
The model is sample_data/models/searchpriors-toy-wan (ComfyUI's WanModel and Wan 2.1 VAE, 17 frames at 128)
through tests/toy_world_harness.py's ToyWanPipeline, the same calls as the CPU benchmark. The reference of each
held-out prompt is a world clip of the prompt's motion in another colour (what Search-T2V's retrieval returns on
these prompts: the right motion for 6 of 6 in bench_toy_world --quick; retrieval itself needs spaCy and faiss,
which the GPU machine lacks). Rows: base; POS (eta 1); POS with a clip of the opposite motion (control: does the
video follow the reference?); VMC vmc_abs on all blocks. The probe (distill/toy_probe.py) reads every video. (A row tuning only
the half of the blocks whose attention looks most across frames, Follow-Your-Motion-style, was measured here on
2026-12-03 and equalled the all-blocks row: the choice was not kept; docs/toy_world.md.)

Stops starting new prompts after --budget-s and reports what it finished (n per row). Without CUDA it prints
"skipped" and exits 0, unless --cpu (a smoke run: --cpu --prompts 1 --seeds 1 --vmc-steps 2 --steps 3). Prints a table and a SUMMARY line; writes
bench_out/toy_wan_gpu.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common  # noqa: E402
from bench_vmc_gpu import import_pack  # noqa: E402

ROWS = ("base", "POS eta 1.0", "control: POS, opposite-motion clip", "VMC vmc_abs, all blocks")


def load_harness():
    """tests/toy_world_harness.py, loaded once by file path (the loader every test helper goes through)."""
    return _common.load_test_helper("toy_world_harness")


def toy_wan_harness(torch):
    """The pack and the toy harness, set up for the Wan toy on this machine: ComfyUI's models imported before
    anything imports PyAV (a stand-in PyAV, as on the GPU machine, breaks torchvision's import otherwise); on CUDA
    without cuDNN attention (its backward fails on small heads: torch 2.11, H200), on the CPU one torch thread."""
    import_pack()
    harness = load_harness()
    harness.use_comfyui(cpu=not torch.cuda.is_available())
    import comfy.sd  # noqa: F401

    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)
    else:
        torch.set_num_threads(1)
    return harness


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20, help="sampling steps")
    ap.add_argument("--vmc-steps", type=int, default=200)
    ap.add_argument("--budget-s", type=float, default=240.0, help="start no new prompt after this many seconds")
    ap.add_argument("--cpu", action="store_true", help="run without CUDA (slow: for checking the script)")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.cpu:
        print("skipped: bench_toy_wan_gpu needs CUDA (--cpu runs it on the CPU, slowly)")
        return 0

    harness = toy_wan_harness(torch)
    from comfyui_searchpriors.distill import toy_probe

    t_start = time.perf_counter()
    pipe = harness.ToyWanPipeline(steps=args.steps)
    results = {row: {"motion": [], "colour": [], "shape": [], "follows_ref": []} for row in ROWS}
    done = 0
    for k, prompt, shape, colour, motion, ref, caption in harness.held_out_references(pipe, args.prompts):
        if time.perf_counter() - t_start > args.budget_s:
            break
        wrong_motion = harness.OPPOSITE[motion]
        inv = pipe.invert(ref)
        inv_wrong = pipe.invert(pipe.reference(shape, colour, wrong_motion, seed=5000 + k))
        tuned_all, _, _ = pipe.tune(ref, caption, loss="vmc_abs", steps=args.vmc_steps)
        for seed in range(args.seeds):
            videos = {ROWS[0]: pipe.base(prompt, seed), ROWS[1]: pipe.pos(prompt, seed, inv, 1.0),
                      ROWS[2]: pipe.pos(prompt, seed, inv_wrong, 1.0),
                      ROWS[3]: pipe.base(prompt, seed, model=tuned_all)}
            for row, g in videos.items():
                p = toy_probe.probe(g.video.cpu())
                r = results[row]
                r["motion"].append(p.motion == motion)
                r["colour"].append(p.colour == colour)
                r["shape"].append(p.shape == shape)
                if row == ROWS[2]:
                    r["follows_ref"].append(p.motion == wrong_motion)
        done += 1
        print(f"[{time.perf_counter() - t_start:6.0f} s] {k + 1}/{args.prompts} {prompt!r}: " + ", ".join(
            f"{row.split(',')[0] if row.startswith('control') else row} {sum(results[row]['motion'])}/"
            f"{len(results[row]['motion'])}" for row in ROWS), flush=True)

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    table = {row: {key: mean(v) for key, v in r.items()} | {"n": len(r["motion"])} for row, r in results.items()}
    print(f"\nWan toy, held-out prompts, {done} prompts x {args.seeds} seeds, {args.steps} steps, VMC "
          f"{args.vmc_steps} steps")
    print(f"{'row':<40} {'n':>3} {'motion':>7} {'colour':>7} {'shape':>6} {'follows ref':>11}")
    for row, t in table.items():
        follows = f"{t['follows_ref']:.3f}" if t["follows_ref"] == t["follows_ref"] else "-"
        print(f"{row:<40} {t['n']:>3} {t['motion']:>7.3f} {t['colour']:>7.3f} {t['shape']:>6.3f} {follows:>11}")
    summary = (f"SUMMARY toy wan gpu: held-out motion base {table[ROWS[0]]['motion']:.3f}, POS "
               f"{table[ROWS[1]]['motion']:.3f} (opposite-motion clip followed {table[ROWS[2]]['follows_ref']:.3f}), "
               f"VMC {table[ROWS[3]]['motion']:.3f}; "
               f"n = {table[ROWS[0]]['n']} per row; {time.perf_counter() - t_start:.0f} s")
    print(summary)
    out = _common.write_result("toy_wan_gpu", {"rows": table, "settings": vars(args), "summary": summary,
                                               "environment": _common.environment()})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
