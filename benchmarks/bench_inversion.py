"""Reconstruction error of DDIM Video Invert vs steps and refine iterations, for an eps and a flow model.

For every model x cfg x steps x refine_iterations: invert a smooth video-like latent with the node's code
path (``nodes.comfy_internals.inversion_sampler.invert_latent``: core CFGGuider + the inversion SAMPLER), regenerate from
the noise with core euler on the same sigmas from an empty latent (what SamplerCustomAdvanced does with a
NOISE), and report ``|x_rec - x| / |x|`` in the VAE latent space, the inversion's model calls and time.

Models are the tests' tiny random ones (tests/tiny_models.py), real ComfyUI MODELs:
  - eps: frames-as-batch [16, 4, 16, 16], SD linear beta schedule (the ModelScope family's convention);
  - wan (flow, shift 1): Wan 2.1 from a state dict (dim 128, 2 layers), latent [1, 16, 4, 16, 16];
  - wan (flow, shift 8): the same with Wan's default shift (cfg 1 only), to show why shift 1 inverts better.
cfg 1 uses no negative (the paper); cfg 5 uses a random negative prompt for inversion and regeneration.
Random weights make the numbers a property of this code and these sizes, not of trained models.

Usage: python benchmarks/bench_inversion.py [--device cpu|cuda] [--quick]
Writes bench_out/bench_inversion.json (``--quick``: .quick.json) and prints a table and one SUMMARY line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _common as C

COMFYUI = C.comfyui_dir()   # COMFYUI_PATH, SEARCHPRIORS_COMFYUI, else the set-up's copy (scripts/comfy_server.py)


def load_comfy(device: str):
    if not os.path.isfile(os.path.join(COMFYUI, "folder_paths.py")):
        print(f"skipped: ComfyUI not found at {COMFYUI} (set COMFYUI_PATH)")
        sys.exit(0)
    if COMFYUI not in sys.path:
        sys.path.insert(0, COMFYUI)
    import comfy.cli_args

    comfy.cli_args.args.cpu = device == "cpu"


def load_tiny_models():
    return C.load_test_helper("tiny_models")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="10 and 20 steps, eps and wan shift 1, cfg 1 only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (tiny ops: 1 is fastest)")
    args = parser.parse_args()
    load_comfy(args.device)
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    import comfy.model_management
    import comfy.samplers
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3
    from comfyui_searchpriors.nodes.comfy_internals.inversion_sampler import invert_latent

    tiny = load_tiny_models()
    wan = tiny.load_tiny_wan21(seed=0)
    models = {
        "eps": (tiny.load_tiny_eps(seed=0), tiny.smooth_video_latent((16, 4, 16, 16), seed=1), tiny.eps_conditioning),
        "wan shift 1": (ModelSamplingSD3().patch(wan, 1.0)[0], tiny.smooth_video_latent((1, 16, 4, 16, 16), seed=1),
                        tiny.wan_conditioning),
        "wan shift 8": (wan, tiny.smooth_video_latent((1, 16, 4, 16, 16), seed=1), tiny.wan_conditioning),
    }
    steps_list = [10, 20] if args.quick else [10, 20, 50]
    iterations = [0, 1, 3]
    cfgs = [1.0] if args.quick else [1.0, 5.0]
    if args.quick:
        models.pop("wan shift 8")
    rows, records = [], []
    started = time.perf_counter()
    for name, (model, latent, conditioning) in models.items():
        empty, negative = conditioning(100), conditioning(101)
        sampling = model.get_model_object("model_sampling")
        for cfg in cfgs:
            if cfg != 1.0 and name == "wan shift 8":
                continue
            for steps in steps_list:
                sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", steps).cpu()
                for refine in iterations:
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        outcome = invert_latent(model, latent, empty, sigmas, refine, cfg=cfg,
                                                negative=None if cfg == 1.0 else negative, check_reconstruction=True)
                    if args.device == "cuda":
                        torch.cuda.synchronize()
                    seconds = time.perf_counter() - t0
                    record = {"model": name, "kind": outcome.kind, "cfg": cfg, "steps": steps,
                              "refine_iterations": refine, "relative_error": outcome.reconstruction_error,
                              "max_residual": outcome.result.max_residual, "model_calls": outcome.result.model_calls,
                              "seconds_with_reconstruction": seconds, "latent": list(latent.shape)}
                    records.append(record)
                    rows.append([name, f"{cfg:g}", steps, refine, f"{outcome.reconstruction_error:.2e}",
                                 "n/a" if refine == 0 else f"{outcome.result.max_residual:.1e}",
                                 outcome.result.model_calls, f"{seconds:.2f}"])
    wall = time.perf_counter() - started
    print(C.table(["model", "cfg", "steps", "refine", "rel. error", "max residual", "calls", "s"], rows,
                  title=f"DDIM Video Invert reconstruction (euler regeneration, device {args.device})"))

    def error(name, cfg, steps, refine):
        for r in records:
            if (r["model"], r["cfg"], r["steps"], r["refine_iterations"]) == (name, cfg, steps, refine):
                return r["relative_error"]
        return float("nan")

    bits = []
    for name in models:
        bits.append(f"{name} 20 steps cfg 1: {error(name, 1.0, 20, 0):.1e} -> {error(name, 1.0, 20, 1):.1e} -> "
                    f"{error(name, 1.0, 20, 3):.1e} (refine 0/1/3)")
    summary = "SUMMARY inversion: " + "; ".join(bits) + f"; wall {wall:.0f} s on {args.device}"
    print(summary)
    device_name = (torch.cuda.get_device_name() if args.device == "cuda" else "cpu")
    path = C.write_result("bench_inversion", {
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "device": device_name,
        "environment": C.environment(), "wall_seconds": wall, "rows": records, "summary": summary,
        "torch_device": str(comfy.model_management.get_torch_device()),
    }, quick=args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
