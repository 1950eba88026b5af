"""GPU benchmark: where POS's time goes inside ComfyUI, one UNet call at a time. ZeroScope-576w size with
random weights, bf16, 24 frames at 576x320, loaded through the pack's loader; each phase runs as the nodes
run it (DDIM Video Invert's ``invert_latent``, core CFGGuider sampling at cfg 9) and every call of the
diffusers UNet3D is bracketed by CUDA events from module hooks (no host waits added), so the table gives
the GPU time per call and the idle gap between calls (host-side cost the GPU waited for), and host clocks
in the same hooks give the host's time per call and between calls.

Phases, per GroupNorm kind (the loader's FewRowsGroupNorm, ``distill/group_norm.py``, and PyTorch's put back
on the same model), in alternating passes: the 50-step plain inversion (cfg 1: batch 1), 20 steps of cfg-9
sampling (batch 2), the plain inversion again, the inversion with one refine iteration; then a kernel profile
(torch.profiler) of 5 inversion steps of each kind.

    python benchmarks/bench_unet_calls_gpu.py [--passes 2] [--no-profile] [--tiny]

Needs CUDA; without it prints "skipped: ..." and exits 0 (``--tiny``: a CPU smoke run with the tiny model,
host clocks instead of CUDA events; its numbers mean nothing). Prints a table and one ``SUMMARY`` line;
writes bench_out/bench_unet_calls_gpu.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_pos_gpu import ensure_folder, log, use_comfyui  # the script's own folder is on sys.path
from bench_vmc_gpu import import_pack

import _common as C  # noqa: E402 (the script's own folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
BENCH_OUT = REPO / "bench_out"
KINDS = ("torch", "parallel")


class HostEvent:
    """torch.cuda.Event's two methods on the host clock (the CPU smoke run)."""

    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, other) -> float:
        return (other.t - self.t) * 1e3


class CallClock:
    """Start and end events around every forward of ``module``, recorded without waiting for the GPU."""

    def __init__(self, torch, module):
        self.torch, self.calls = torch, []
        self.make = (lambda: torch.cuda.Event(enable_timing=True)) if torch.cuda.is_available() else HostEvent
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._end)

    def _start(self, module, args):
        event = self.make()
        event.record()
        self.calls.append([event, None, time.perf_counter(), None])

    def _end(self, module, args, output):
        event = self.make()
        event.record()
        self.calls[-1][1] = event
        self.calls[-1][3] = time.perf_counter()

    def phase(self, fn) -> dict:
        """Runs ``fn`` and returns wall seconds, calls, GPU ms per call, the GPU's gaps between calls, and the host's
        time inside a call (launching it; it also waits when the launch queue is full) and between calls. When
        the host's two add up to the GPU's time per call, the GPU waits for the host (how the inversion was
        found host-bound: benchmarks/README.md)."""
        sync = self.torch.cuda.synchronize if self.torch.cuda.is_available() else (lambda: None)
        self.calls.clear()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        wall = time.perf_counter() - start
        gpu = [a.elapsed_time(b) for a, b, _, _ in self.calls]
        gaps = [self.calls[i][1].elapsed_time(self.calls[i + 1][0]) for i in range(len(self.calls) - 1)]
        host_in = [(end - start) * 1e3 for _, _, start, end in self.calls]
        host_between = [(self.calls[i + 1][2] - self.calls[i][3]) * 1e3 for i in range(len(self.calls) - 1)]
        return {"wall_s": round(wall, 3), "calls": len(gpu), "gpu_ms_median": round(statistics.median(gpu), 2),
                "gpu_ms_max": round(max(gpu), 2), "gap_ms_median": round(statistics.median(gaps), 2) if gaps else 0.0,
                "gap_ms_total": round(sum(gaps), 1), "host_ms_median": round(statistics.median(host_in), 2),
                "host_between_ms_median": round(statistics.median(host_between), 2) if host_between else 0.0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=2, help="alternating passes over the GroupNorm kinds")
    parser.add_argument("--no-profile", action="store_true", help="leave out the torch.profiler kernel tables")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "searchpriors-bench-gpu"))
    parser.add_argument("--out", default=str(BENCH_OUT / "bench_unet_calls_gpu.json"))
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.tiny:
        print("skipped: no CUDA device (this benchmark measures GPU time per UNet call)")
        return 0
    if args.tiny:
        args.out = args.out.replace(".json", ".tiny.json")
    use_comfyui(torch)
    import_pack()
    import comfy.model_management
    import comfy.samplers

    from comfyui_searchpriors.distill.group_norm import use_few_rows_group_norm
    from comfyui_searchpriors.nodes.comfy_internals.inversion_sampler import invert_latent
    from comfyui_searchpriors.nodes.comfy_internals.modelscope_model import load_modelscope_folder, modelscope_ddim_sigmas

    size = "tiny" if args.tiny else "zeroscope"
    frames, height, width = (4, 64, 64) if args.tiny else (24, 320, 576)
    invert_steps, sample_steps = (4, 3) if args.tiny else (50, 20)
    facts = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
             "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "size": size}
    folder = ensure_folder(args, facts)
    rows: list = []
    profiles: dict = {}
    with torch.inference_mode():
        model, clip, vae = load_modelscope_folder(folder, dtype="fp32" if args.tiny else "bf16")
        empty_prompt = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        prompt = clip.encode_from_tokens_scheduled(clip.tokenize("a corgi running on the beach"))
        generator = torch.Generator().manual_seed(0)
        reference = vae.encode(torch.rand(frames, height, width, 3, generator=generator))
        empty = torch.zeros(frames, 4, height // 8, width // 8)
        invert_sigmas = modelscope_ddim_sigmas(model, invert_steps)
        sample_sigmas = modelscope_ddim_sigmas(model, sample_steps)
        clock = CallClock(torch, model.model.diffusion_model)

        def use(kind):
            use_few_rows_group_norm(model.model.diffusion_model, parallel=kind == "parallel")

        def sample(sigmas):
            guider = comfy.samplers.CFGGuider(model)
            guider.set_conds(prompt, empty_prompt)
            guider.set_cfg(9.0)
            return guider.sample(torch.randn(empty.shape, generator=generator), empty.clone(),
                                 comfy.samplers.sampler_object("ddim"), sigmas, seed=0, disable_pbar=True)

        def invert(refine, sigmas=invert_sigmas):
            return invert_latent(model, reference, empty_prompt, sigmas, refine_iterations=refine, cfg=1.0)

        comfy.model_management.load_models_gpu([model])
        phases = [(f"inversion, {invert_steps} steps (batch 1)", "inversion", lambda: invert(0)),
                  (f"cfg-9 sampling, {sample_steps} steps (batch 2)", "sampling", lambda: sample(sample_sigmas)),
                  (f"inversion again, {invert_steps} steps", "inversion", lambda: invert(0)),
                  (f"inversion, refine 1 ({2 * invert_steps} calls)", "refine", lambda: invert(1))]
        for n in range(args.passes):
            for kind in KINDS if n % 2 == 0 else KINDS[::-1]:
                use(kind)
                invert(0, modelscope_ddim_sigmas(model, 3))  # warm-up of this kind's kernels
                sample(modelscope_ddim_sigmas(model, 2))
                for name, what, fn in phases:
                    row = clock.phase(fn)
                    rows.append(dict(row, kind=kind, run=n + 1, phase=name, what=what))
                    log(f"pass {n + 1} {kind:<8} {name:<40} {row}")
        if not args.no_profile:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            for kind in KINDS:
                use(kind)
                with profile(activities=activities) as prof:
                    invert(0, invert_sigmas[-6:])
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
                profiles[kind] = prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60)
                log(f"\n===== kernels of 5 inversion steps, GroupNorm {kind}\n{profiles[kind]}")
        use("parallel")  # as the loader left it

    log(f"\n{'GroupNorm':<9} {'pass':>4}  {'phase':<40} {'wall s':>7} {'calls':>5} {'GPU ms/call':>11} "
        f"{'gap ms (median)':>15} {'gaps ms (total)':>15} {'host ms/call':>12} {'host ms between':>15}")
    for r in rows:
        log(f"{r['kind']:<9} {r['run']:>4}  {r['phase']:<40} {r['wall_s']:>7.2f} {r['calls']:>5} "
            f"{r['gpu_ms_median']:>11.1f} {r['gap_ms_median']:>15.2f} {r['gap_ms_total']:>15.1f} "
            f"{r['host_ms_median']:>12.1f} {r['host_between_ms_median']:>15.1f}")

    def spread(kind, what, key):
        values = [r[key] for r in rows if r["kind"] == kind and r["what"] == what]
        return f"{min(values):.4g}-{max(values):.4g}" if values else "n/a"

    summary = "; ".join(
        f"{kind}: plain inversion {spread(kind, 'inversion', 'gpu_ms_median')} ms/call "
        f"({spread(kind, 'inversion', 'wall_s')} s), sampling {spread(kind, 'sampling', 'gpu_ms_median')} ms/call"
        for kind in KINDS)
    log(f"SUMMARY unet calls gpu ({facts['device']}, {facts['date']}): GroupNorm {summary}")
    C.write_result("bench_unet_calls_gpu", {"rows": rows, "facts": facts, "profiles": profiles}, out=args.out,
                   indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
