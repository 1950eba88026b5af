"""GPU benchmark of VMC motion tuning (Search-T2V Sec. 4.3) at ZeroScope-576w size with random weights (cost and
memory do not depend on the values of the weights). Needs CUDA; on a machine without it, prints "skipped: ..."
and exits 0.

The pack's own entry is called as the VMC Temporal LoRA node calls it (``nodes.comfy_internals.motion_lora.train_motion_lora``:
the native MODEL of ``load_modelscope_folder``, loaded to the GPU by ComfyUI's memory manager, training under
``torch.inference_mode(False)`` inside the node), outside ComfyUI's executor but under ``torch.inference_mode()``
as the executor runs nodes. bf16, 24 keyframes at 576x320 (latents [24, 4, 40, 72]), rank 32, loss vmc_abs.

Short runs (``--warmup`` + ``--steps`` steps each; seconds per step = median of the timed steps; peak VRAM
= the whole node call: model weights, adapters, optimizer state, activations). ``lora_<mode>``: LoRA on the
temporal q/k/v with gradient checkpointing ``<mode>`` (distill.vmc.CHECKPOINT_MODES: all = every transformer /
resnet / temporal-conv block recomputed, outer = those of the two highest-resolution levels, outermost = the
highest only, off = none); ``full_<mode>``: full fine-tuning of the temporal q/k/v (as the VMC code).
Targets (issue 9, on an H200), for the node's default mode: peak <= 12 GiB at <= 0.40 s/step.

``--whole``: the generation side of the search-then-tune run on an emulated 24 GiB card (a ballast tensor
takes the rest of the GPU, so ComfyUI's memory manager and VAE batching see what a 24 GiB card would and an
allocation beyond it fails): the Keyframe Extractor's work on 24 reference frames at 576x320 (a GroundingDINO
of grounding-dino-tiny's sizes with random weights, loaded through ComfyUI's memory manager: detection,
segment and region, crops), VAE Encode of the 24 keyframes, VMC Temporal LoRA with the node's defaults (400
steps), 50-step sampling with the tuned MODEL (core KSampler, ddim / ddim_uniform, cfg 9), VAE Decode.
Retrieval (CPU text search over the index) and caption matching are not part of it. Target: the run fits in 24 GiB
(the paper's RTX 4090 claim). It is skipped with a message when the short runs predict it would not end
within ``--budget-s`` of the script's start.

    python benchmarks/bench_vmc_gpu.py [--steps 20] [--warmup 3] [--configs lora_all,lora_outer,...]
                                       [--whole] [--budget-s 450] [--tiny]

Prints a table and one ``SUMMARY`` line; writes bench_out/bench_vmc_gpu.json. ComfyUI is found through
COMFYUI_PATH (else the set-up's copy); the pack is imported as ``comfyui_searchpriors`` (made importable
through a temporary link to this checkout when it is not on the path).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_pos_gpu import GIB, Meter as PosMeter, ensure_folder, free_all, log, use_comfyui  # the script's own folder is on sys.path

import _common as C  # noqa: E402 (the script's own folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
BENCH_OUT = REPO / "bench_out"
PROMPT = "a corgi running on the beach at sunset"
CONFIGS = {  # name: (targets, gradient checkpointing mode: distill.vmc.CHECKPOINT_MODES)
    "lora_all": ("qkv", "all"),
    "lora_outer": ("qkv", "outer"),
    "lora_outermost": ("qkv", "outermost"),
    "lora_off": ("qkv", "off"),
    "full_all": ("full_qkv", "all"),
    "full_outer": ("full_qkv", "outer"),
    "full_off": ("full_qkv", "off"),
}
DEFAULT_CONFIGS = "lora_all,lora_outer,lora_outermost,lora_off,full_outer"
TARGET_PEAK_GIB, TARGET_S_PER_STEP, TARGET_WHOLE_GIB = 12.0, 0.40, 24.0


def import_pack() -> str:
    """Make this checkout importable as ``comfyui_searchpriors`` (an installed or linked copy elsewhere, e.g. an
    editable install of another checkout, would otherwise be measured): through a link in a temp dir when
    the name does not already resolve here. Returns the package's folder."""
    import importlib.util

    spec = importlib.util.find_spec("comfyui_searchpriors")
    if spec is None or spec.origin is None or Path(spec.origin).resolve().parent != REPO:
        holder = Path(tempfile.gettempdir()) / f"searchpriors-bench-pkg-{os.getuid() if hasattr(os, 'getuid') else 0}"
        holder.mkdir(exist_ok=True)
        link = holder / "comfyui_searchpriors"
        if link.is_symlink() and link.resolve() != REPO:
            link.unlink()
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        sys.path.insert(0, str(holder))
    import comfyui_searchpriors

    return str(Path(comfyui_searchpriors.__file__).resolve().parent)


class Meter(PosMeter):
    """bench_pos_gpu's Meter with the ballast tensor of an emulated smaller card left out of the peaks, and the
    allocator's peak reserved memory too."""

    def __init__(self, torch, ballast_bytes: int = 0):
        super().__init__(torch)
        self.ballast = ballast_bytes

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.peak_gib = max(0.0, self.peak_gib - self.ballast / GIB) if self.cuda else 0.0
        self.reserved_gib = (self.torch.cuda.max_memory_reserved() - self.ballast) / GIB if self.cuda else 0.0


class StepClock:
    """The node's ``on_step`` callback: per-step wall time (CUDA-synchronised) and the peak VRAM of the whole
    call and of the timed steps alone (peak statistics are reset after the warm-up steps)."""

    def __init__(self, torch, warmup: int):
        self.torch, self.warmup = torch, warmup
        self.cuda = torch.cuda.is_available()
        self.durations: list[float] = []
        self.losses: list[float] = []
        self.warmup_peak = 0

    def start(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.last = self.begin = time.perf_counter()

    def __call__(self, done: int, total: int, loss: float) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
        now = time.perf_counter()
        self.durations.append(now - self.last)
        self.losses.append(loss)
        self.last = now
        if done == self.warmup and self.cuda:
            self.warmup_peak = self.torch.cuda.max_memory_allocated()
            self.torch.cuda.reset_peak_memory_stats()

    def finish(self) -> dict:
        if self.cuda:
            self.torch.cuda.synchronize()
        steady = self.torch.cuda.max_memory_allocated() if self.cuda else 0
        timed = self.durations[self.warmup:] or self.durations
        return {
            "call_s": time.perf_counter() - self.begin,
            "s_per_step": statistics.median(timed) if timed else float("nan"),
            "mean_s_per_step": statistics.fmean(timed) if timed else float("nan"),
            "first_step_s": self.durations[0] if self.durations else float("nan"),
            "peak_gib": max(self.warmup_peak, steady) / GIB,
            "steady_peak_gib": steady / GIB,
            "reserved_gib": self.torch.cuda.max_memory_reserved() / GIB if self.cuda else 0.0,
            "steps_done": len(self.durations),
            "loss_first_last": [self.losses[0], self.losses[-1]] if self.losses else [],
        }


def timed_tuning(torch, model, keyframes, conditioning, steps: int, warmup: int, rank: int, targets: str,
                 checkpointing: str) -> dict:
    """The node's training call, timed per step by a StepClock; an error (an OOM: the node's VMCError says so)
    is a result here, not a crash."""
    from comfyui_searchpriors.nodes.comfy_internals.motion_lora import train_motion_lora

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    clock = StepClock(torch, warmup)
    clock.start()
    try:
        _, motion_lora, _, stopped = train_motion_lora(
            model, keyframes, conditioning, steps=warmup + steps, lr=1e-4, rank=rank, targets=targets,
            loss="vmc_abs", seed=0, gradient_checkpointing=checkpointing, caption=PROMPT, on_step=clock)
        result = clock.finish()
        result["stopped"] = stopped
        result["adapter_params_m"] = round(sum(v.numel() for v in motion_lora["state_dict"].values()) / 1e6, 2)
    except Exception as exc:
        result = clock.finish()
        result["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return result


def short_runs(args, torch, model, keyframes, conditioning, rows: list, facts: dict) -> None:
    for name in args.configs:
        targets, checkpointing = CONFIGS[name]
        result = timed_tuning(torch, model, keyframes, conditioning, args.steps, args.warmup, args.rank, targets,
                              checkpointing)
        if "error" in result:
            log(f"{name}: {result['error']}")
        result.update(name=name, targets=targets, gradient_checkpointing=checkpointing)
        rows.append(result)
        log(f"{name}: {result['s_per_step']:.3f} s/step, peak {result['peak_gib']:.2f} GiB "
            f"(timed steps {result['steady_peak_gib']:.2f}), call {result['call_s']:.1f} s")
    facts["short_run_steps"] = {"warmup": args.warmup, "timed": args.steps, "rank": args.rank}


def detector_folder(args, facts: dict) -> str:
    """A GroundingDINO folder of grounding-dino-tiny's sizes with random weights (tests/tiny_grounding_dino.py;
    the tiny test model with --tiny), written once into the work dir."""
    from bench_pos_gpu import load_test_helper

    size = "tiny" if args.tiny else "real"
    folder = os.path.join(args.workdir, f"grounding-dino-{size}-random")
    if not os.path.isdir(folder):
        start = time.perf_counter()
        partial = folder + ".partial"
        load_test_helper("tiny_grounding_dino").save_random_grounding_dino(partial, size)
        os.replace(partial, folder)
        facts["detector_write_s"] = round(time.perf_counter() - start, 1)
        log(f"wrote the {size}-size GroundingDINO folder in {facts['detector_write_s']} s")
    return folder


def keyframe_stage(args, reference, frames: int, width: int, height: int):
    """What the Keyframe Extractor node runs after matching captions: the detector loaded through ComfyUI's
    memory manager, detection on the sampled frames, segment and region, crops. Random weights detect noise
    (often nothing: then evenly spaced full frames), which costs the same."""
    from comfyui_searchpriors.distill.grounding import (DEFAULT_BOX_THRESHOLD, DEFAULT_TEXT_THRESHOLD,
                                                        run_detection)
    from comfyui_searchpriors.distill.keyframes import crop_keyframes, plan_keyframes
    from comfyui_searchpriors.nodes.keyframe_nodes import load_detector

    captions = ["man", "bike"]
    detector = load_detector(args.detector_folder)
    detections = run_detection(detector, reference, captions, DEFAULT_BOX_THRESHOLD, DEFAULT_TEXT_THRESHOLD)
    plan = plan_keyframes(detections, frames, (reference.shape[1], reference.shape[2]), frames, (width, height),
                          captions)
    boxes = sum(len(d.boxes) for d in detections)
    return crop_keyframes(reference, plan, width, height), {"frames_detected": len(detections), "boxes": boxes}


def emulated_card(torch, card_gib: float):
    """(ballast tensor or None, its bytes): a tensor that takes all of the GPU but ``card_gib``, so ComfyUI's memory
    manager and VAE batching see what a card of that size would, and an allocation beyond it fails. MemoryError
    when the GPU has not that much free."""
    if not torch.cuda.is_available() or card_gib <= 0:
        return None, 0
    free, total = torch.cuda.mem_get_info()
    ballast_bytes = max(0, int(total - card_gib * GIB))
    if ballast_bytes > free:
        raise MemoryError(f"cannot emulate a {card_gib} GiB card: only {free / GIB:.1f} GiB free")
    ballast = torch.empty(ballast_bytes, dtype=torch.uint8, device="cuda") if ballast_bytes else None
    log(f"whole run on an emulated {card_gib} GiB card (ballast {ballast_bytes / GIB:.1f} GiB of "
        f"{total / GIB:.1f}; ComfyUI now sees {torch.cuda.mem_get_info()[0] / GIB:.1f} GiB free)")
    return ballast, ballast_bytes


class StagedRun:
    """A whole run's stages, each timed with its peak VRAM (the emulated card's ballast left out) into
    ``out["stages"]``; ``with run.stage(name):`` one stage. ``run.failed(exc)`` records the first error (not fitting
    the emulated card is a result); ``run.finish()`` adds the wall time and the peak of all stages."""

    def __init__(self, torch, out: dict, ballast_bytes: int):
        self.torch, self.out, self.ballast = torch, out, ballast_bytes
        self.current = "start"
        self.wall = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    @contextlib.contextmanager
    def stage(self, name: str):
        self.current = name
        with Meter(self.torch, self.ballast) as m:
            yield m
        self.out["stages"][name] = (m.seconds, m.peak_gib)

    def failed(self, exc: BaseException) -> None:
        self.out["error"] = f"{self.current}: {type(exc).__name__}: {str(exc)[:300]}"
        log(f"whole run failed in {self.out['error']}")

    def finish(self) -> dict:
        if self.torch.cuda.is_available():
            self.torch.cuda.synchronize()
        self.out["seconds"] = time.perf_counter() - self.wall
        self.out["peak_gib"] = max([p for _, p in self.out["stages"].values()], default=0.0)
        return self.out


def sample_and_decode(run: StagedRun, tuned, vae, positive, negative, empty: dict, steps: int, cfg: float,
                      sampler: str, scheduler: str) -> None:
    """The last two stages of a whole run: KSampler with the tuned MODEL, then VAE Decode."""
    import nodes as comfy_nodes

    with run.stage("KSampler (tuned MODEL)"):
        samples = comfy_nodes.common_ksampler(tuned, 0, steps, cfg, sampler, scheduler, positive, negative,
                                              empty)[0]["samples"]
    with run.stage("VAE Decode"):
        video = vae.decode(samples)
    run.out["video_shape"] = list(video.shape)


def whole_run(args, torch, folder: str, facts: dict) -> dict:
    """VAE Encode -> VMC Temporal LoRA (node defaults) -> KSampler with the tuned MODEL -> VAE Decode, on an
    emulated card of ``args.card_gib`` (ballast tensor); each stage's time and peak VRAM."""
    from comfyui_searchpriors.nodes.comfy_internals.modelscope_model import load_modelscope_folder
    from comfyui_searchpriors.nodes.comfy_internals.motion_lora import train_motion_lora

    frames, height, width = (4, 64, 64) if args.tiny else (24, 320, 576)
    steps, sample_steps = (2, 2) if args.tiny else (args.whole_steps, args.sample_steps)
    free_all(torch)
    try:
        ballast, ballast_bytes = emulated_card(torch, args.card_gib)
    except MemoryError as exc:
        return {"error": str(exc), "stages": {}, "seconds": 0.0, "peak_gib": 0.0, "card_gib": args.card_gib,
                "vmc_steps": 0, "sample_steps": 0}
    out: dict = {"card_gib": args.card_gib if ballast_bytes else None, "stages": {}, "vmc_steps": steps,
                 "sample_steps": sample_steps}
    generator = torch.Generator("cpu").manual_seed(0)
    run = StagedRun(torch, out, ballast_bytes)
    model = clip = vae = tuned = None
    try:
        with run.stage("load + text encode"):
            model, clip, vae = load_modelscope_folder(folder, dtype="fp32" if args.tiny else "bf16")
            positive = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
            negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        reference = torch.rand(frames, height, width, 3, generator=generator)  # Reference Video Frames' IMAGE
        with run.stage("Keyframe Extractor (GroundingDINO)"):
            pixels, out["detector"] = keyframe_stage(args, reference, frames, width, height)
        with run.stage("VAE Encode"):
            keyframes = {"samples": vae.encode(pixels)}
        with run.stage("VMC Temporal LoRA"):
            tuned, _, losses, stopped = train_motion_lora(model, keyframes, positive, steps=steps, caption=PROMPT)
        out["vmc_s_per_step"] = out["stages"]["VMC Temporal LoRA"][0] / max(1, len(losses))
        out["vmc_stopped"] = stopped
        sample_and_decode(run, tuned, vae, positive, negative,
                          {"samples": torch.zeros(frames, 4, height // 8, width // 8)}, sample_steps, 9.0, "ddim",
                          "ddim_uniform")
    except Exception as exc:  # not fitting the emulated card is a result
        run.failed(exc)
    run.finish()
    model = clip = vae = tuned = None  # noqa: F841
    free_all(torch)
    del ballast
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed tuning steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed tuning steps before them")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help=f"comma-separated, of {', '.join(CONFIGS)}; 'none' for the whole run only")
    parser.add_argument("--whole", action="store_true",
                        help="also the whole generation-side run (400 x the default mode's s/step plus about a minute); "
                             "skipped when it would overrun --budget-s")
    parser.add_argument("--whole-steps", type=int, default=400, help="VMC steps of the whole run (node default)")
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--card-gib", type=float, default=TARGET_WHOLE_GIB,
                        help="GPU size the whole run is confined to (0: the whole GPU)")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="the whole run is skipped when it is predicted to end later than this after the start")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run of every path with the tiny model (runs on the CPU; its numbers mean nothing)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "searchpriors-bench-gpu"))
    parser.add_argument("--out", default=str(BENCH_OUT / "bench_vmc_gpu.json"))
    args = parser.parse_args(argv)
    args.configs = [] if args.configs.strip() in ("", "none") else [c.strip() for c in args.configs.split(",")]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown --configs {unknown}; choose from {', '.join(CONFIGS)}")

    started = time.perf_counter()
    import torch

    if args.tiny:
        args.steps, args.warmup = 2, 1
        args.out = args.out.replace(".json", ".tiny.json")
    elif not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark measures GPU time and VRAM)")
        return 0
    use_comfyui(torch)
    pack = import_pack()
    log(f"pack: {pack}")
    from comfyui_searchpriors.distill.vmc import DEFAULT_CHECKPOINTING as DEFAULT_MODE

    default_row = f"lora_{DEFAULT_MODE}"

    os.makedirs(args.workdir, exist_ok=True)
    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    facts: dict = {"device": device_name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                   "dtype": "fp32" if args.tiny else "bf16", "size": "tiny" if args.tiny else "zeroscope-576w",
                   "keyframes": [4, 4, 8, 8] if args.tiny else [24, 4, 40, 72], "pack": pack}
    if cuda:
        facts["gpu_total_gib"] = round(torch.cuda.mem_get_info()[1] / GIB, 1)
    rows: list = []
    whole = None
    # ComfyUI runs every node under inference mode; the training entry leaves it itself, as in the node.
    with torch.inference_mode():
        folder = ensure_folder(args, facts)
        if args.configs:
            from comfyui_searchpriors.nodes.comfy_internals.modelscope_model import load_modelscope_folder

            start = time.perf_counter()
            model, clip, _vae = load_modelscope_folder(folder, dtype="fp32" if args.tiny else "bf16")
            conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
            facts["load_s"] = round(time.perf_counter() - start, 1)
            facts["unet_params_m"] = round(sum(p.numel() for p in model.model.diffusion_model.parameters()) / 1e6, 1)
            shape = facts["keyframes"]
            latents = torch.randn(*shape, generator=torch.Generator("cpu").manual_seed(0))
            short_runs(args, torch, model, {"samples": latents}, conditioning, rows, facts)
            model = clip = _vae = None  # noqa: F841
            free_all(torch)
        if args.whole:
            elapsed = time.perf_counter() - started
            per_step = next((r["s_per_step"] for r in rows if r["name"] == default_row and "error" not in r), None)
            predicted = None if per_step is None else \
                args.whole_steps * per_step * 1.1 + args.sample_steps * 0.3 + facts.get("load_s", 30.0) + 25
            facts["whole_predicted_s"] = None if predicted is None else round(predicted)
            if predicted is not None and not args.tiny and elapsed + predicted > args.budget_s:
                log(f"whole run skipped: predicted {predicted:.0f} s after {elapsed:.0f} s exceeds --budget-s "
                    f"{args.budget_s:.0f} (run it alone: --configs none --whole)")
                facts["whole_skipped"] = f"predicted {predicted:.0f} s, {elapsed:.0f} s already used"
            else:
                args.detector_folder = detector_folder(args, facts)
                whole = whole_run(args, torch, folder, facts)

    log(f"\n{'tuning run (' + str(args.steps) + ' timed steps)':<44} {'s/step':>7} {'peak GiB':>9} "
        f"{'timed-steps peak':>17} {'reserved':>9}")
    for r in rows:
        note = f"  ERROR {r['error'][:60]}" if "error" in r else ""
        label = f"{r['name']} ({r['targets']}, checkpointing {r['gradient_checkpointing']})"
        log(f"{label:<44} {r['s_per_step']:>7.3f} {r['peak_gib']:>9.2f} {r['steady_peak_gib']:>17.2f} "
            f"{r['reserved_gib']:>9.2f}{note}")
    if whole:
        where = f"emulated {whole['card_gib']:g} GiB card" if whole["card_gib"] else "whole device"
        title = f"whole run ({whole['vmc_steps']} VMC steps, {whole['sample_steps']} sampling steps, {where})"
        log(f"\n{title:<72} {'s':>7} {'peak GiB':>9}")
        for stage, (seconds, peak) in whole["stages"].items():
            log(f"  {stage:<70} {seconds:>7.1f} {peak:>9.2f}")
        log(f"  {'total':<70} {whole['seconds']:>7.1f} {whole['peak_gib']:>9.2f}"
            + (f"  FAILED {whole['error']}" if "error" in whole else ""))

    on_h200 = "H200" in device_name
    verdict = "" if on_h200 else (" (targets are for an H200: reference only here)" if cuda else
                                  " (CPU smoke run: the numbers mean nothing)")
    summary = []
    lora = next((r for r in rows if r["name"] == default_row), None)
    if lora and "error" not in lora:
        peak_ok, time_ok = lora["peak_gib"] <= TARGET_PEAK_GIB, lora["s_per_step"] <= TARGET_S_PER_STEP
        facts["targets"] = {"tuning_peak_met": peak_ok, "tuning_s_per_step_met": time_ok, "on_h200": on_h200}
        summary.append(f"LoRA qkv, checkpointing '{DEFAULT_MODE}' (node default) {lora['s_per_step']:.3f} s/step (target <= {TARGET_S_PER_STEP}: "
                       f"{'met' if time_ok else 'NOT met'}), peak {lora['peak_gib']:.2f} GiB (target <= "
                       f"{TARGET_PEAK_GIB:g}: {'met' if peak_ok else 'NOT met'}){verdict}")
    elif lora:
        summary.append(f"LoRA qkv, checkpointing '{DEFAULT_MODE}' failed: {lora['error'][:80]}")
    for r in rows:
        if r is not lora:
            summary.append(f"{r['name']} " + (f"{r['s_per_step']:.3f} s/step, {r['peak_gib']:.2f} GiB"
                                             if "error" not in r else "failed"))
    if whole:
        fits = "error" not in whole and whole["peak_gib"] <= TARGET_WHOLE_GIB
        facts.setdefault("targets", {})["whole_run_fits_24gib"] = fits
        card = f"an emulated {whole['card_gib']:g} GiB card" if whole["card_gib"] else "the unconfined device"
        summary.append(f"whole run {whole['seconds']:.0f} s, peak {whole['peak_gib']:.2f} GiB on {card} (target <= "
                       f"{TARGET_WHOLE_GIB:g}: {'met' if fits else 'NOT met'})")
    elif args.whole:
        summary.append("whole run skipped (time budget)")
    facts["wall_s"] = round(time.perf_counter() - started, 1)
    log(f"SUMMARY vmc gpu ({device_name}, {facts['date']}): " + "; ".join(summary) + f"; wall {facts['wall_s']} s")
    C.write_result("bench_vmc_gpu", {"rows": rows, "whole": whole, "facts": facts}, out=args.out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
