"""GPU benchmark of VMC motion tuning on Wan (ComfyUI's WanModel) at real sizes with random weights (cost and
memory do not depend on the values of the weights). Needs CUDA; on a machine without it, prints "skipped: ..."
and exits 0 (``--tiny`` runs every path on the CPU with a tiny model; its numbers mean nothing).

The pack's own entry is called as the VMC Temporal LoRA node calls it (``nodes.comfy_internals.motion_lora.train_motion_lora``,
the MODEL loaded to the GPU by ComfyUI's memory manager), under ``torch.inference_mode()`` as the executor runs
nodes. bf16, rank 32, targets q/k/v of every block's self-attention, loss vmc_abs, the reference caption as a
[1, 512, 4096] text state. Side by side in one run, each against one forward of the same batch (``apply_model``
without gradients, median of 5):

- Wan 2.1 1.3B (dim 1536, 30 blocks), 832x480x33 (latent [1, 16, 9, 60, 104]): every gradient checkpointing mode
  (distill.vmc.CHECKPOINT_MODES on a DiT: compiled, the node's default = compiled blocks, AOTAutograd keeping
  what is costly to recompute under a memory budget; all = whole blocks recomputed; outer = every block
  recomputed except its attention kernel, whose outputs are kept; outermost = that on every other block; off =
  nothing). Targets (issue 22, node defaults): a step <= 3.6x one forward, peak <= 10 GiB.
- Wan 2.2 5B (dim 3072, 30 blocks, 48-channel latent) at 1280x704x33 (latent [1, 48, 9, 44, 80]) and one Wan 2.2
  A14B expert (dim 5120, 40 blocks) at 832x480x33, node defaults: step time and peak, reported.

Seconds per step = median of the timed steps after ``--warmup``; peak VRAM = the whole call (weights, adapters,
optimizer state, activations). ``--what-if`` adds Wan 2.1 rows for other choices of what each block recomputes
(``WHAT_IF``: only the FFN, FFN + cross-attention, mixes with whole blocks), which the node does not offer.

``--whole wan21,wan22_5b``: the generation side of search-then-tune on an emulated ``--card-gib`` (24) GiB card, as
bench_vmc_gpu.py does for ZeroScope: load (weights on the host), the Keyframe Extractor's GroundingDINO on the
reference frames, Encode Keyframes through the model's own VAE (random Wan 2.1 / 2.2 VAE of the real sizes), VMC
Temporal LoRA with the node's defaults for ``--whole-steps``, KSampler with the tuned MODEL (uni_pc, simple; 30
steps cfg 6 for Wan 2.1, 20 steps cfg 5 for Wan 2.2 5B, as ComfyUI's templates), VAE Decode; each stage's time and
peak. The text encoder is left out (random [1, 512, 4096] states).

    python benchmarks/bench_vmc_wan_gpu.py [--steps 6] [--warmup 2] [--parts wan21,wan22_5b,a14b|none] [--what-if]
        [--whole wan21,wan22_5b] [--whole-steps 400] [--card-gib 24] [--tiny]

Prints a table and one ``SUMMARY`` line; writes bench_out/bench_vmc_wan_gpu.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_pos_gpu import bare_nodes_package, free_all, log, random_wan_on_device, use_comfyui, with_flow_shift
from bench_vmc_gpu import (StagedRun, detector_folder, emulated_card, import_pack, keyframe_stage, sample_and_decode,
                           timed_tuning)

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
# --whole: (width, height, frames, VAE, flow shift, sampling steps, cfg) as ComfyUI's own templates run each model
WHOLE = {"wan21": (832, 480, 33, "2.1", 8.0, 30, 6.0), "wan22_5b": (1280, 704, 33, "2.2", 8.0, 20, 5.0)}
TINY_WHOLE = (48, 32, 9, "2.1-tiny", 8.0, 2, 5.0)


def random_wan_vae(torch, version: str):
    """ComfyUI's Wan VAE (2.1: 16 channels, 8x space; 2.2: 48 channels, 16x) as core VAELoader makes it, from a
    state dict of random weights (ComfyUI picks the class from the keys, as for the real files)."""
    import math

    import comfy.ldm.wan.vae
    import comfy.ldm.wan.vae2_2
    import comfy.sd

    cls, config = ((comfy.ldm.wan.vae2_2.WanVAE, {"dim": 160, "z_dim": 48}) if version == "2.2" else
                   (comfy.ldm.wan.vae.WanVAE, {"dim": 16 if version.endswith("tiny") else 96, "z_dim": 16}))
    with torch.device("meta"):
        skeleton = cls(dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True],
                       dropout=0.0, **config)
    generator = torch.Generator().manual_seed(2)
    state = {}
    for name, tensor in skeleton.state_dict().items():
        value = torch.empty(tuple(tensor.shape))
        if name.endswith("bias"):
            value.zero_()
        elif name.endswith("gamma"):
            value.fill_(1.0)
        else:
            value.normal_(0.0, 1.0 / math.sqrt(max(1, math.prod(tensor.shape[1:]))), generator=generator)
        state[name] = value
    return comfy.sd.VAE(sd=state)


def whole_run(torch, name: str, args, facts: dict) -> dict:
    """The generation side of search-then-tune on Wan, on an emulated card of ``args.card_gib`` with ComfyUI's own
    loading and offloading: load (model weights on the host, as a loader leaves them), the Keyframe Extractor's
    detector on the reference frames, Encode Keyframes (the model's VAE), VMC Temporal LoRA (node defaults,
    ``--whole-steps``), KSampler with the tuned MODEL, VAE Decode. Text encoding (umt5-xxl, run and offloaded before
    the diffusion model loads) is left out: the text states are random [1, 512, 4096]."""
    from comfyui_searchpriors.nodes.comfy_internals.motion_lora import encode_keyframes, train_motion_lora

    label, dims, _ = TINY if args.tiny else PARTS[name]
    width, height, frames, vae_version, shift, sample_steps, cfg = TINY_WHOLE if args.tiny else WHOLE[name]
    steps = 2 if args.tiny else args.whole_steps
    dtype = torch.float32 if args.tiny else torch.bfloat16
    free_all(torch)
    out: dict = {"part": name, "label": label, "stages": {}, "vmc_steps": steps, "sample_steps": sample_steps,
                 "size": f"{width}x{height}x{frames}", "card_gib": args.card_gib}
    try:
        ballast, ballast_bytes = emulated_card(torch, args.card_gib)
    except MemoryError as exc:
        return {**out, "error": str(exc), "seconds": 0.0, "peak_gib": 0.0}
    generator = torch.Generator().manual_seed(3)
    context = torch.randn(1, 8 if args.tiny else 512, 4096, generator=generator)
    positive, negative = [[context, {}]], [[torch.zeros_like(context), {}]]
    run = StagedRun(torch, out, ballast_bytes)
    model = vae = tuned = None
    try:
        with run.stage("load (weights on the host)"):
            model = with_flow_shift(random_wan_on_device(torch, seed=0, dims=dims, dtype=dtype, device="cpu"), shift)
            vae = random_wan_vae(torch, vae_version)
        reference = torch.rand(frames, height, width, 3, generator=generator)   # Reference Video Frames' IMAGE
        with run.stage("Keyframe Extractor (GroundingDINO)"):
            pixels, _ = keyframe_stage(args, reference, frames, width, height)
        with run.stage("Encode Keyframes (VAE)"):
            latent = encode_keyframes(vae, pixels)
        out["latent"] = list(latent.shape)
        with run.stage("VMC Temporal LoRA"):
            tuned, _, losses, stopped = train_motion_lora(model, {"samples": latent}, positive, steps=steps)
        out["vmc_s_per_step"] = out["stages"]["VMC Temporal LoRA"][0] / max(1, len(losses))
        out["vmc_stopped"] = stopped
        sample_and_decode(run, tuned, vae, positive, negative, {"samples": torch.zeros_like(latent)}, sample_steps,
                          cfg, "uni_pc", "simple")
    except Exception as exc:  # not fitting the emulated card is a result
        run.failed(exc)
    run.finish()
    model = vae = tuned = None  # noqa: F841
    free_all(torch)
    del ballast
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    for stage_name, (seconds, peak) in out["stages"].items():
        log(f"  {label} whole run, {stage_name}: {seconds:.1f} s, peak {peak:.2f} GiB")
    return out


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


# --what-if: other ways to choose what a DiT block recomputes, measured beside the modes (not offered on the node).
# Each maps the blocks to (module to checkpoint, keep attention outputs): only the FFN of every block; the FFN and
# the cross-attention; the FFN, with whole blocks (attention kept) every 3rd block; FFN + cross-attention, with
# whole blocks every 4th.
WHAT_IF = {
    "ffn": lambda blocks: [(b.ffn, False) for b in blocks],
    "ffn+cross": lambda blocks: [(m, False) for b in blocks for m in (b.ffn, b.cross_attn)],
    "ffn, block/3": lambda blocks: [(b, True) if i % 3 == 0 else (b.ffn, False) for i, b in enumerate(blocks)],
    "ffn+cross, block/4": lambda blocks: [p for i, b in enumerate(blocks) for p in (
        [(b, True)] if i % 4 == 0 else [(b.ffn, False), (b.cross_attn, False)])],
}


def what_if_tuning(torch, model, latent, context, args, choose) -> dict:
    """timed_tuning with distill.vmc's choice of checkpointed DiT modules replaced by ``choose(blocks)``."""
    from comfyui_searchpriors.distill import vmc

    original = vmc._dit_blocks_to_wrap
    vmc._dit_blocks_to_wrap = lambda network, mode: choose(list(network.blocks))
    try:
        return timed_tuning(torch, model, {"samples": latent}, [[context, {}]], args.steps, args.warmup, 32, "qkv",
                            "outer")
    finally:
        vmc._dit_blocks_to_wrap = original


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
        # the default is not the first row: the first tuning call of a process pays for growing the allocator's pool
        default = vmc_default()
        modes = ["all", "outer", "compiled", "outermost", "off"] if name == "wan21" else ["outer", default]
        for mode in modes:
            result = timed_tuning(torch, model, {"samples": latent}, [[context, {}]], args.steps, args.warmup, 32,
                                  "qkv", mode)
            result.update(part=name, label=label, mode=mode, forward_s=forward,
                          ratio=result["s_per_step"] / forward if forward else float("nan"))
            rows.append(result)
            log_row(label, mode, forward, result)
        for mode, choose in (WHAT_IF.items() if args.what_if and name == "wan21" else ()):
            result = what_if_tuning(torch, model, latent, context, args, choose)
            result.update(part=name, label=label, mode=f"what-if: {mode}", forward_s=forward,
                          ratio=result["s_per_step"] / forward if forward else float("nan"))
            rows.append(result)
            log_row(label, mode, forward, result)
    del model
    free_all(torch)


def vmc_default() -> str:
    from comfyui_searchpriors.distill import vmc

    return vmc.DEFAULT_CHECKPOINTING


def log_row(label, mode, forward, result) -> None:
    log(f"{label}, {mode}: {result['s_per_step']:.3f} s/step = {result['ratio']:.2f}x a forward ({forward:.3f} s), "
        f"peak {result['peak_gib']:.2f} GiB" + (f"  {result['error']}" if "error" in result else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed tuning steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed tuning steps before them")
    parser.add_argument("--parts", default="wan21,wan22_5b,a14b")
    parser.add_argument("--tiny", action="store_true", help="smoke run on the CPU with a tiny model")
    parser.add_argument("--what-if", action="store_true",
                        help="also Wan 2.1's rows for other choices of what a block recomputes (WHAT_IF)")
    parser.add_argument("--whole", default="",
                        help="comma-separated parts (wan21, wan22_5b) to run the whole search-then-tune generation side "
                             "for, on an emulated --card-gib card; 'none' for the step rows only")
    parser.add_argument("--whole-steps", type=int, default=400, help="VMC steps of the whole run (node default 400)")
    parser.add_argument("--card-gib", type=float, default=24.0, help="GPU size the whole run is confined to (0: all)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "searchpriors-bench-gpu"))
    parser.add_argument("--out", default=str(BENCH_OUT / "bench_vmc_wan_gpu.json"))
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip() and p.strip() != "none"]
    wholes = [p.strip() for p in args.whole.split(",") if p.strip() and p.strip() != "none"]
    if [p for p in parts if p not in PARTS] or [p for p in wholes if p not in WHOLE]:
        parser.error(f"--parts: choose from {', '.join(PARTS)}; --whole from {', '.join(WHOLE)}")
    import torch

    if args.tiny:
        args.steps, args.warmup, parts, wholes = 2, 1, parts[:1], wholes[:1]
        args.out = args.out.replace(".json", ".tiny.json")
    elif not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark measures GPU time and VRAM)")
        return 0
    else:
        torch.backends.cuda.enable_cudnn_sdp(False)  # its backward fails on small heads (seen on the H200)
    use_comfyui(torch)
    import comfy.sd  # noqa: F401 (ComfyUI's models and torchvision first: a stand-in PyAV imported before them breaks
    #                  torchvision's import on a machine without PyAV)
    log(f"pack: {import_pack()}")
    bare_nodes_package()
    facts = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
             "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "steps": args.steps,
             "warmup": args.warmup}
    rows: list = []
    for part in parts:
        run_part(torch, part, args, rows, facts)
    wholes_out = []
    if wholes:
        args.detector_folder = detector_folder(args, facts)
        wholes_out = [whole_run(torch, name, args, facts) for name in wholes]

    print(f"\n{'model, size':44s} {'mode':28s} {'s/step':>8s} {'forward':>8s} {'ratio':>6s} {'peak GiB':>9s}")
    for r in rows:
        print(f"{r['label']:44s} {r['mode']:28s} {r['s_per_step']:8.3f} {r['forward_s']:8.3f} {r['ratio']:6.2f} "
              f"{r['peak_gib']:9.2f}" + ("  " + r["error"][:60] if "error" in r else ""))
    default = next((r for r in rows if r["mode"] == vmc_default() and r["part"] == "wan21"), None)
    summary = ["SUMMARY vmc_wan:"]
    if default is not None and not args.tiny:
        ok = default["ratio"] <= TARGET_RATIO and default["peak_gib"] <= TARGET_PEAK_GIB and "error" not in default
        summary.append(f"Wan 2.1 1.3B node defaults {default['ratio']:.2f}x a forward (target <= {TARGET_RATIO}), "
                       f"peak {default['peak_gib']:.2f} GiB (target <= {TARGET_PEAK_GIB}): "
                       f"{'met' if ok else 'MISSED'};")
    for r in rows:
        if r["part"] != "wan21" and not args.tiny:
            summary.append(f"{r['label']}, {r['mode']}: {r['s_per_step']:.2f} s/step, {r['ratio']:.2f}x, peak {r['peak_gib']:.1f} GiB;")
    for w in wholes_out:
        print(f"\nwhole search-then-tune generation side, {w['label']}, on an emulated "
              f"{w['card_gib']:g} GiB card ({w['vmc_steps']} VMC steps, {w['sample_steps']} sampling steps):")
        for stage, (seconds, peak) in w["stages"].items():
            print(f"  {stage:40s} {seconds:8.1f} s  peak {peak:6.2f} GiB")
        print(f"  {'whole':40s} {w['seconds']:8.1f} s  peak {w['peak_gib']:6.2f} GiB" +
              (f"  FAILED: {w['error']}" if "error" in w else ""))
        if not args.tiny:
            fits = "error" not in w and w["peak_gib"] <= w["card_gib"]
            summary.append(f"whole run {w['label']} on {w['card_gib']:g} GiB: "
                           f"{'fits' if fits else 'DOES NOT FIT'}, peak {w['peak_gib']:.1f} GiB, {w['seconds']:.0f} s "
                           f"({w['vmc_steps']} VMC steps at {w.get('vmc_s_per_step', float('nan')):.2f} s);")
    if args.tiny:
        summary.append("tiny CPU smoke run, every path ran")
    print(" ".join(summary))
    C.write_result("bench_vmc_wan_gpu", {"facts": facts, "rows": rows, "whole": wholes_out}, out=args.out,
                   unknown_as_str=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
