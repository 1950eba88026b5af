"""VMC settings on the Wan toy (issue 22): does any setting of steps, lr, rank, targets or loss lift held-out motion?

    python benchmarks/sweep_toy_wan_vmc.py [--prompts 6] [--seeds 3] [--budget-s 250]
        [--configs 200:1e-3:8:qkv:vmc_abs,400:3e-3:16:qkv:vmc_abs,...]

Each config is steps:lr:rank:targets:loss. For every held-out prompt of the toy world the reference is a world clip
of the prompt's motion in another colour (as bench_toy_wan_gpu.py), each config tunes a motion LoRA on it through the
node's own call (``train_motion_lora``, checkpointing off: the toy is small), and the tuned MODEL samples the prompt
with the same seeds as the base; the probe reads the motion. Stops starting new prompts after --budget-s and counts
only prompts every row finished. Needs CUDA (--cpu runs it slowly). Prints a table and a SUMMARY line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_toy_wan_gpu import toy_wan_harness  # noqa: E402

DEFAULT_CONFIGS = ("200:1e-3:8:qkv:vmc_abs,400:3e-3:16:qkv:vmc_abs,400:3e-3:16:qkv:eq10_pairs,"
                   "400:3e-3:16:qkv+out:eq10_pairs,800:1e-2:16:qkv+out:eq10_pairs")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS)
    ap.add_argument("--budget-s", type=float, default=250.0)
    ap.add_argument("--cpu", action="store_true", help="run without CUDA (slow: for checking the script)")
    args = ap.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]

    import torch

    if not torch.cuda.is_available() and not args.cpu:
        print("skipped: sweep_toy_wan_vmc needs CUDA (--cpu runs it on the CPU, slowly)")
        return 0
    harness = toy_wan_harness(torch)
    from comfyui_searchpriors.distill import toy_probe

    pipe = harness.ToyWanPipeline(steps=20)
    hits: dict[str, list[bool]] = {"base": []}
    t_start = time.perf_counter()
    for k, prompt, shape, colour, motion, ref, caption in harness.held_out_references(pipe, args.prompts):
        if time.perf_counter() - t_start > args.budget_s:
            break
        row = {"base": [toy_probe.probe(pipe.base(prompt, s).video.cpu()).motion == motion for s in range(args.seeds)]}
        for config in configs:
            steps, lr, rank, targets, loss = config.split(":")
            tuned, _, _ = pipe.tune(ref, caption, loss=loss, steps=int(steps), lr=float(lr), rank=int(rank),
                                    targets=targets)
            row[config] = [toy_probe.probe(pipe.base(prompt, s, model=tuned).video.cpu()).motion == motion
                           for s in range(args.seeds)]
        for name, values in row.items():   # a prompt counts only once every row has it
            hits.setdefault(name, []).extend(values)
        print(f"[{time.perf_counter() - t_start:5.0f} s] {prompt!r}: " +
              ", ".join(f"{name} {sum(v)}/{len(v)}" for name, v in row.items()), flush=True)

    print(f"\n{'row (steps:lr:rank:targets:loss)':40s} {'motion':>8s} {'n':>4s}")
    for name, values in hits.items():
        print(f"{name:40s} {sum(values) / max(1, len(values)):8.3f} {len(values):4d}")
    base = sum(hits["base"]) / max(1, len(hits["base"]))
    best = max(((sum(v) / max(1, len(v)), name) for name, v in hits.items() if name != "base"), default=(float("nan"), "-"))
    print(f"SUMMARY sweep_toy_wan_vmc: base motion {base:.3f}; best VMC setting {best[1]} {best[0]:.3f}; "
          f"n = {len(hits['base'])} videos a row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
