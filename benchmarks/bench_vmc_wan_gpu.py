"""GPU benchmark of VMC motion tuning on Wan (ComfyUI's WanModel) at real sizes with random weights (cost and
memory do not depend on the values of the weights). Needs CUDA; on a machine without it, prints "skipped: ..."
and exits 0 (``--tiny`` runs every path on the CPU with a tiny model; its numbers mean nothing).

The pack's own entry is called as the VMC Temporal LoRA node calls it (``nodes.comfy_internals.motion_lora.train_motion_lora``,
the MODEL loaded to the GPU by ComfyUI's memory manager), under ``torch.inference_mode()`` as the executor runs
nodes. bf16, rank 32, targets q/k/v of every block's self-attention, loss vmc_abs, the reference caption as a
[1, 512, 4096] text state. Side by side in one run, each against one forward of the same batch (``apply_model``
without gradients, median of 5):

- Wan 2.1 1.3B (dim 1536, 30 blocks), 832x480x33 (latent [1, 16, 9, 60, 104]): every gradient checkpointing mode
  (distill.vmc.CHECKPOINT_MODES on a DiT: all = whole blocks recomputed; outer, the node's default = every
  block recomputed except its attention kernel, whose outputs are kept; outermost = that on every other block;
  off = nothing). Targets (issue 22, node defaults): a step <= 3.6x one forward, peak <= 10 GiB.
- Wan 2.2 5B (dim 3072, 30 blocks, 48-channel latent) at 1280x704x33 (latent [1, 48, 9, 44, 80]) and one Wan 2.2
  A14B expert (dim 5120, 40 blocks) at 832x480x33, node defaults: step time and peak, reported.

Seconds per step = median of the timed steps after ``--warmup``; peak VRAM = the whole call (weights, adapters,
optimizer state, activations).

    python benchmarks/bench_vmc_wan_gpu.py [--steps 6] [--warmup 2] [--parts wan21,wan22_5b,a14b] [--tiny]

Prints a table and one ``SUMMARY`` line; writes bench_out/bench_vmc_wan_gpu.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench_pos_gpu import bare_nodes_package, free_all, log, random_wan_on_device, use_comfyui
from bench_vmc_gpu import import_pack, timed_tuning

import _common as C  # noqa: E402 (the script's own folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
BENCH_OUT = REPO / "bench_out"
TARGET_RATIO, TARGET_PEAK_GIB = 3.6, 10.0
PARTS = {  # name: (label, WanModel dims, latent shape [B, C, T, h, w])
    "wan21": ("Wan 2.1 1.3B, 832x480x33", {"dim": 1536, "ffn_dim": 8960, "num_layers": 30}, (1, 16, 9, 60, 104)),
    "wan22_5b": ("Wan 2.2 5B, 1280x704x33", {"dim": 3072, "ffn_dim": 14336, "num_layers": 30, "in_dim": 48,
                                             "out_dim": 48}, (1, 48, 9, 44, 80)),
    "a14b": ("Wan 2.2 A14B (one expert), 832x480x33", {"dim": 5120, "ffn_dim": 13824, "num_layers": 40},
             (1, 16, 9, 60, 104)),
}
TINY = ("tiny Wan (CPU smoke run)", {"dim": 128, "ffn_dim": 256, "num_layers": 2}, (1, 16, 3, 4, 6))


def one_forward_s(torch, model, latent, context, repeats: int) -> float:
    """Median wall time of one forward of the batch the tuning step sees (no gradients)."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model], force_full_load=True)
    device = model.load_device
    x = latent.to(device)
    sigma = torch.tensor([0.7], device=device)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.model.apply_model(x, sigma, c_crossattn=context.to(device))
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def run_part(torch, name: str, args, rows: list, facts: dict) -> None:
    label, dims, shape = TINY if args.tiny else PARTS[name]
    dtype = torch.float32 if args.tiny else torch.bfloat16
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    model = random_wan_on_device(torch, seed=0, dims=dims, dtype=dtype, device=device)
    facts[f"{name}_build_s"] = round(time.perf_counter() - start, 1)
    facts[f"{name}_model_class"] = type(model.model).__name__
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(shape, generator=g)
    context = torch.randn(1, 512 if not args.tiny else 8, 4096, generator=g)
    with torch.inference_mode():
        forward = one_forward_s(torch, model, latent, context, 2 if args.tiny else 5)
        modes = ["outer", "all", "outermost", "off"] if name == "wan21" else ["outer"]
        for mode in modes:
            result = timed_tuning(torch, model, {"samples": latent}, [[context, {}]], args.steps, args.warmup, 32,
                                  "qkv", mode)
            result.update(part=name, label=label, mode=mode, forward_s=forward,
                          ratio=result["s_per_step"] / forward if forward else float("nan"))
            rows.append(result)
            log(f"{label}, {mode}: {result['s_per_step']:.3f} s/step = {result['ratio']:.2f}x a forward "
                f"({forward:.3f} s), peak {result['peak_gib']:.2f} GiB" + (f"  {result['error']}" if "error" in result
                                                                            else ""))
    del model
    free_all(torch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed tuning steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed tuning steps before them")
    parser.add_argument("--parts", default="wan21,wan22_5b,a14b")
    parser.add_argument("--tiny", action="store_true", help="smoke run on the CPU with a tiny model")
    parser.add_argument("--out", default=str(BENCH_OUT / "bench_vmc_wan_gpu.json"))
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if [p for p in parts if p not in PARTS]:
        parser.error(f"--parts: choose from {', '.join(PARTS)}")
    import torch

    if args.tiny:
        args.steps, args.warmup, parts = 2, 1, parts[:1]
        args.out = args.out.replace(".json", ".tiny.json")
    elif not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark measures GPU time and VRAM)")
        return 0
    else:
        torch.backends.cuda.enable_cudnn_sdp(False)  # its backward fails on small heads (seen on the H200)
    use_comfyui(torch)
    log(f"pack: {import_pack()}")
    bare_nodes_package()
    facts = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
             "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "steps": args.steps,
             "warmup": args.warmup}
    rows: list = []
    for part in parts:
        run_part(torch, part, args, rows, facts)

    print(f"\n{'model, size':44s} {'mode':10s} {'s/step':>8s} {'forward':>8s} {'ratio':>6s} {'peak GiB':>9s}")
    for r in rows:
        print(f"{r['label']:44s} {r['mode']:10s} {r['s_per_step']:8.3f} {r['forward_s']:8.3f} {r['ratio']:6.2f} "
              f"{r['peak_gib']:9.2f}" + ("  " + r["error"][:60] if "error" in r else ""))
    default = next((r for r in rows if r["mode"] == "outer" and r["part"] == "wan21"), None)
    summary = ["SUMMARY vmc_wan:"]
    if default is not None and not args.tiny:
        ok = default["ratio"] <= TARGET_RATIO and default["peak_gib"] <= TARGET_PEAK_GIB and "error" not in default
        summary.append(f"Wan 2.1 1.3B node defaults {default['ratio']:.2f}x a forward (target <= {TARGET_RATIO}), "
                       f"peak {default['peak_gib']:.2f} GiB (target <= {TARGET_PEAK_GIB}): "
                       f"{'met' if ok else 'MISSED'};")
    for r in rows:
        if r["part"] != "wan21" and not args.tiny:
            summary.append(f"{r['label']}: {r['s_per_step']:.2f} s/step, {r['ratio']:.2f}x, peak {r['peak_gib']:.1f} GiB;")
    if args.tiny:
        summary.append("tiny CPU smoke run, every path ran")
    print(" ".join(summary))
    C.write_result("bench_vmc_wan_gpu", {"facts": facts, "rows": rows}, out=args.out, unknown_as_str=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
