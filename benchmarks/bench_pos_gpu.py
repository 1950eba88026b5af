"""GPU benchmark of POS generation at real model sizes (random weights: cost and memory do not depend on the
values of the weights). Needs CUDA; on a machine without it, prints "skipped: ..." and exits 0.

Part 1, ZeroScope-576w size (1.7B-parameter UNet3D, OpenCLIP-H text encoder, SD VAE), bf16, 24 frames at
576x320, 50 steps, cfg 9, side by side in one process:
  (a) plain diffusers ``TextToVideoSDPipeline`` (DDIM, latents out: decoding is left out of every row);
  (b) the same folder through the pack's native loader and core KSampler (``nodes.common_ksampler``, sampler
      ddim, scheduler ddim_uniform), and through core custom sampling with the diffusers DDIM timesteps
      (``SearchPriors_DiffusersSchedulerSigmas``), the path that reproduces the pipeline exactly;
  (c) POS: invert the encoded reference video (50 steps, empty prompt, cfg 1: no CFG batch), mix (Eq. 4,
      eta 0.2) and hybrid sampling (gamma 0.04, cfg 9) with the diffusers timesteps.
  Targets: (b) time <= 1.05x of (a) and peak VRAM no higher; (c) <= 1.6x of plain native sampling.
  (b) and (c) run twice by default, on the same loaded model: with the loader's FewRowsGroupNorm
  (distill/group_norm.py) and with PyTorch's GroupNorm put back (``--group-norm parallel|torch|both``).
Part 2, Wan 2.1 T2V 1.3B size (dim 1536, 30 layers), bf16, 832x480, 33 frames (latent 16x9x60x104), core
  SamplerCustomAdvanced's way (guider.sample) with CFGGuider + RandomNoise against the pack's hybrid
  guider + mixed NOISE, same sigmas and sampler, interleaved rounds. Target: POS sampling <= 1.02x.
Part 3 (``--part wan22``), Wan 2.2 A14B size: two experts of WanModel's 14B config (dim 5120, 40 layers, 40 heads,
  ffn 13824; random bf16 weights made on the GPU), shift 8, 832x480x33 (latent 16x9x60x104), 20 simple steps,
  cfg 5, boundary 0.875 (k = 11 high-noise steps), euler, side by side in one process:
  (a) plain two-stage sampling: core CFGGuider on the high expert for sigmas[:k+1] with RandomNoise, then on the
      low expert for sigmas[k:] without noise (SplitSigmas + two SamplerCustomAdvanced);
  (b) hybrid two-stage sampling alone: the same with the pack's hybrid guider (full_sigmas, gamma 0.1) and the
      Eq. 4 NOISE; target <= 1.02x of (a);
  (c) POS in all: invert a random reference latent through both experts (20 steps, empty prompt, cfg 1, no
      refinement), mix (eta 0.2) and (b); target <= 1.6x of (a). The VAE is left out (no Wan VAE weights).

    python benchmarks/bench_pos_gpu.py [--part all|zeroscope|wan|wan22] [--steps 50] [--wan-steps 20]
                                    [--rounds 3] [--wan22-rounds 1] [--group-norm both]

Prints a table and one ``SUMMARY`` line; writes bench_out/bench_pos_gpu.json. ComfyUI is found through
COMFYUI_PATH (else the set-up's copy); the pack is imported as ``comfyui_searchpriors``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_OUT = REPO / "bench_out"
COMFYUI = importlib.import_module("_common").comfyui_dir()  # as scripts/comfy_server.py finds it
PROMPT = "a corgi running on the beach at sunset"
REWRITTEN = "a fluffy corgi happily running along a sunny sandy beach at golden sunset, waves behind"
GIB = 1024 ** 3


def log(msg: str) -> None:
    print(msg, flush=True)


def load_test_helper(name: str):
    """tests/<name>.py by file path (tests/ is never on sys.path), once: _common's ``load_test_helper``."""
    return importlib.import_module("_common").load_test_helper(name)


class Meter:
    """Wall time (CUDA-synchronised) and peak allocated VRAM of one block (0 on the CPU smoke run)."""

    def __init__(self, torch):
        self.torch = torch
        self.cuda = torch.cuda.is_available()

    def __enter__(self):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
        self.peak_gib = self.torch.cuda.max_memory_allocated() / GIB if self.cuda else 0.0


def use_comfyui(torch) -> None:
    """ComfyUI importable, with its defaults (GPU, normal VRAM); on a machine without CUDA (the --tiny smoke
    run) in CPU mode with one torch thread. Before comfy.model_management is first imported."""
    if COMFYUI not in sys.path:
        sys.path.insert(0, COMFYUI)
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True  # read when model_management is imported
        torch.set_num_threads(1)


def free_all(torch) -> None:
    import comfy.model_management as mm

    mm.unload_all_models()
    mm.soft_empty_cache(True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def ensure_folder(args, facts: dict) -> str:
    """The random-weight ModelScope-family folder under --workdir (ZeroScope-576w size, or tiny with --tiny),
    written once (about 70 s at full size) and reused by every GPU benchmark."""
    from comfyui_searchpriors.distill.synthetic_t2v import write_t2v_folder

    size = "tiny" if args.tiny else "zeroscope"
    folder = os.path.join(args.workdir, f"{size}-random")
    if not os.path.isdir(folder):
        start = time.perf_counter()
        write_t2v_folder(folder, size, "fp32" if args.tiny else "fp16")
        facts["folder_write_s"] = round(time.perf_counter() - start, 1)
        log(f"wrote the {size}-size folder in {facts['folder_write_s']} s ({folder})")
    return folder


def zeroscope_part(args, torch, rows: list, facts: dict) -> None:
    from diffusers import TextToVideoSDPipeline

    from comfyui_searchpriors.distill.group_norm import use_few_rows_group_norm
    from comfyui_searchpriors.nodes.comfy_internals.modelscope_model import load_modelscope_folder

    frames, height, width, steps, cfg = (4, 64, 64, 3, 9.0) if args.tiny else (24, 320, 576, args.steps, 9.0)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = ensure_folder(args, facts)

    generator = torch.Generator("cpu").manual_seed(0)
    init_5d = torch.randn(1, 4, frames, height // 8, width // 8, generator=generator)
    init_frames = init_5d[0].permute(1, 0, 2, 3).contiguous()  # frames as batch [F, 4, h, w]

    # (a) diffusers
    pipe = TextToVideoSDPipeline.from_pretrained(folder, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)

    def run_pipe(n_steps):
        return pipe(PROMPT, num_frames=frames, height=height, width=width, num_inference_steps=n_steps,
                    guidance_scale=cfg, latents=init_5d.to(device, dtype), output_type="latent").frames

    run_pipe(2)  # warm-up
    diffusers_times = []
    for _ in range(args.rounds):
        with Meter(torch) as m:
            run_pipe(steps)
        diffusers_times.append(m.seconds)
        diffusers_peak = m.peak_gib
    pipe = None  # noqa: F841 (frees the pipeline before the native rows)
    free_all(torch)

    # (b) native, (c) POS: once per GroupNorm kind asked for (the loader's FewRowsGroupNorm and/or PyTorch's)
    model, clip, vae = load_modelscope_folder(folder, dtype="fp32" if args.tiny else "bf16")
    kinds = ["parallel", "torch"] if args.group_norm == "both" else [args.group_norm]
    base = statistics.median(diffusers_times)
    rows.append(("ZeroScope (a) diffusers TextToVideoSDPipeline", base, diffusers_peak, 1.0, None))
    facts["zeroscope_rounds"] = {"diffusers": diffusers_times}
    for kind in kinds:  # the loader made them FewRowsGroupNorm; 'torch' puts PyTorch's class back
        use_few_rows_group_norm(model.model.diffusion_model, parallel=kind == "parallel")
        native_and_pos(args, torch, model, clip, vae, init_frames, generator, kind, base, rows, facts)
    model = clip = vae = None  # noqa: F841
    free_all(torch)


def native_and_pos(args, torch, model, clip, vae, init_frames, generator, kind, base, rows, facts):
    import comfy.samplers
    import nodes as comfy_nodes

    from comfyui_searchpriors.nodes.comfy_internals.hybrid_guider import make_guider as make_hybrid_guider
    from comfyui_searchpriors.nodes.comfy_internals.inversion_sampler import invert_latent
    from comfyui_searchpriors.nodes.comfy_internals.modelscope_model import modelscope_ddim_sigmas
    from comfyui_searchpriors.nodes.comfy_internals.noise_objects import MixedInvertedNoise

    frames, height, width = init_frames.shape[0], init_frames.shape[2] * 8, init_frames.shape[3] * 8
    steps, cfg = (3, 9.0) if args.tiny else (args.steps, 9.0)
    positive = clip.encode_from_tokens_scheduled(clip.tokenize(PROMPT))
    rewritten = clip.encode_from_tokens_scheduled(clip.tokenize(REWRITTEN))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    empty = torch.zeros(frames, 4, height // 8, width // 8)
    ddim_sigmas = modelscope_ddim_sigmas(model, steps)

    def run_ksampler(n_steps):
        return comfy_nodes.common_ksampler(model, 0, n_steps, cfg, "ddim", "ddim_uniform", positive, negative,
                                           {"samples": empty.clone()}, disable_noise=False)[0]["samples"]

    def run_custom(sigmas, noise, guider):
        return guider.sample(noise.clone(), empty.clone(), comfy.samplers.sampler_object("ddim"), sigmas, seed=0,
                             disable_pbar=True)

    plain_guider = comfy.samplers.CFGGuider(model)
    plain_guider.set_conds(positive, negative)
    plain_guider.set_cfg(cfg)
    run_ksampler(2)
    run_custom(modelscope_ddim_sigmas(model, 2), init_frames, plain_guider)  # warm-up
    ksampler_times, custom_times = [], []
    for _ in range(args.rounds):
        with Meter(torch) as m:
            run_ksampler(steps)
        ksampler_times.append(m.seconds)
        ksampler_peak = m.peak_gib
        with Meter(torch) as m:
            run_custom(ddim_sigmas, init_frames, plain_guider)
        custom_times.append(m.seconds)
        custom_peak = m.peak_gib

    # (c) POS: a random reference video, encoded once (VAE encode timed on its own)
    video = torch.rand(frames, height, width, 3, generator=generator)
    with Meter(torch) as m:
        reference = vae.encode(video)
    facts[f"zeroscope_vae_encode_s_{kind}"] = round(m.seconds, 2)
    # warm-up, as every other path gets one: the first batch-1 call picks its convolution kernels and memory
    invert_latent(model, reference, negative, modelscope_ddim_sigmas(model, 2), refine_iterations=0, cfg=1.0)
    pos_times, invert_times, refined_times = [], [], []
    for _ in range(args.rounds):
        with Meter(torch) as m:
            with Meter(torch) as mi:
                outcome = invert_latent(model, reference, negative, ddim_sigmas, refine_iterations=0, cfg=1.0)
            noise = MixedInvertedNoise(outcome.noise, 0.2, seed=0)
            guider = make_hybrid_guider(model, rewritten, positive, negative, cfg, 0.04)
            run_custom(ddim_sigmas, noise.generate_noise({"samples": empty}), guider)
        pos_times.append(m.seconds)
        invert_times.append(mi.seconds)
        pos_peak = m.peak_gib
    with Meter(torch) as m:
        invert_latent(model, reference, negative, ddim_sigmas, refine_iterations=1, cfg=1.0)
    refined_times.append(m.seconds)

    plain = statistics.median(custom_times)
    tag = f" [GroupNorm: {kind}]"
    rows += [
        ("ZeroScope (b) native MODEL + core KSampler (ddim, ddim_uniform)" + tag, statistics.median(ksampler_times),
         ksampler_peak, statistics.median(ksampler_times) / base, None),
        ("ZeroScope (b') native MODEL + diffusers DDIM sigmas (custom sampling)" + tag, plain, custom_peak,
         plain / base, 1.0),
        ("ZeroScope (c) POS: invert 50 (cfg 1) + mix + hybrid sampling" + tag, statistics.median(pos_times), pos_peak,
         statistics.median(pos_times) / base, statistics.median(pos_times) / plain),
        ("ZeroScope     of which inversion alone" + tag, statistics.median(invert_times), None,
         None, statistics.median(invert_times) / plain),
        ("ZeroScope     inversion with 1 refine iteration" + tag, refined_times[0], None, None, refined_times[0] / plain),
    ]
    facts["zeroscope_rounds"][kind] = {
        "ksampler": ksampler_times, "custom": custom_times, "pos": pos_times, "invert": invert_times,
        "invert_refine1": refined_times, "pos_over_plain_per_round": [p / c for p, c in zip(pos_times, custom_times)]}
    log(f"GroupNorm {kind}: plain {[round(t, 2) for t in custom_times]} s, inversion {[round(t, 2) for t in invert_times]} s, "
        f"POS {[round(t, 2) for t in pos_times]} s, refine-1 inversion {refined_times[0]:.2f} s")


def wan_part(args, torch, rows: list, facts: dict) -> None:
    import comfy.model_management
    import comfy.samplers
    import comfy.sd

    from comfyui_searchpriors.nodes.comfy_internals.hybrid_guider import make_guider as make_hybrid_guider
    from comfyui_searchpriors.nodes.comfy_internals.noise_objects import MixedInvertedNoise, SeededRandomNoise

    tiny = load_test_helper("tiny_models")
    start = time.perf_counter()
    dims = dict(dim=128, ffn_dim=256, num_layers=2) if args.tiny else dict(dim=1536, ffn_dim=8960, num_layers=30)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    state = tiny.tiny_wan21_state_dict(seed=0, **dims)
    state = {k: v.to(dtype) for k, v in state.items()}
    model = comfy.sd.load_diffusion_model_state_dict(state, model_options={"dtype": dtype})
    del state
    facts["wan_params_m"] = round(sum(p.numel() for p in model.model.diffusion_model.parameters()) / 1e6, 1)
    facts["wan_build_s"] = round(time.perf_counter() - start, 1)
    positive = tiny.wan_conditioning(1, tokens=24)
    rewritten = tiny.wan_conditioning(2, tokens=30)
    negative = tiny.wan_conditioning(3, tokens=12)
    latent = torch.zeros(1, 16, 3, 8, 8) if args.tiny else torch.zeros(1, 16, 9, 480 // 8, 832 // 8)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", args.wan_steps)
    inverted = torch.randn(latent.shape, generator=torch.Generator().manual_seed(5))
    sampler = comfy.samplers.sampler_object("euler")

    def core():
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(5.0)
        noise = SeededRandomNoise(0).generate_noise({"samples": latent})
        return guider.sample(noise, latent.clone(), sampler, sigmas, seed=0, disable_pbar=True)

    def pos():
        guider = make_hybrid_guider(model, rewritten, positive, negative, 5.0, 0.5)
        noise = MixedInvertedNoise(inverted, 0.5, seed=0).generate_noise({"samples": latent})
        return guider.sample(noise, latent.clone(), sampler, sigmas, seed=0, disable_pbar=True)

    comfy.model_management.load_models_gpu([model])
    core()  # warm-up
    pos()
    core_times, pos_times, ratios = [], [], []
    for _ in range(args.rounds):
        with Meter(torch) as m:
            core()
        core_times.append(m.seconds)
        core_peak = m.peak_gib
        with Meter(torch) as m:
            pos()
        pos_times.append(m.seconds)
        pos_peak = m.peak_gib
        ratios.append(pos_times[-1] / core_times[-1])
    base = statistics.median(core_times)
    rows += [
        (f"Wan 2.1 1.3B core CFGGuider + RandomNoise ({args.wan_steps} steps)", base, core_peak, None, 1.0),
        (f"Wan 2.1 1.3B POS hybrid guider + mixed NOISE ({args.wan_steps} steps)", statistics.median(pos_times),
         pos_peak, None, statistics.median(ratios)),
    ]
    facts.update(wan_rounds={"core": core_times, "pos": pos_times, "ratios": ratios},
                 wan_s_per_step=round(base / args.wan_steps, 4))
    model = None  # noqa: F841
    free_all(torch)


def bare_nodes_package() -> None:
    """``comfyui_searchpriors.nodes`` as a bare package, so that its submodules import without the package's
    ``__init__`` (which registers every node and imports comfy_api, whose video types need PyAV: the GPU
    machine's image has none). A no-op once the real package is imported."""
    import types

    import comfyui_searchpriors  # noqa: F401 (the parent package: distill, retrieval)

    if "comfyui_searchpriors.nodes" not in sys.modules:
        try:
            import av  # noqa: F401
            return  # everything the real package needs is there
        except ImportError:
            pass
        package = types.ModuleType("comfyui_searchpriors.nodes")
        package.__path__ = [str(REPO / "nodes")]
        package.__package__ = "comfyui_searchpriors.nodes"
        sys.modules["comfyui_searchpriors.nodes"] = package


def random_wan_on_device(torch, seed: int, dims: dict, dtype, device):
    """A WanModel (t2v) of ``dims`` as a native MODEL, its random weights drawn on ``device`` (14B parameters in
    bf16 are 28 GB: drawing them on the host in fp32 would take minutes)."""
    import math

    import comfy.ldm.wan.model
    import comfy.ops
    import comfy.sd

    with torch.device("meta"):
        sizes = {"in_dim": 16, "out_dim": 16, **dims}   # Wan 2.2 5B: 48-channel latents
        skeleton = comfy.ldm.wan.model.WanModel(model_type="t2v", num_heads=dims["dim"] // 128, text_dim=4096,
                                                operations=comfy.ops.disable_weight_init, **sizes)
    generator = torch.Generator(device).manual_seed(seed)
    state = {}
    for name, tensor in skeleton.state_dict().items():
        shape = tuple(tensor.shape)
        value = torch.empty(shape, device=device, dtype=torch.float32)
        if name.endswith("bias"):
            value.normal_(0.0, 0.02, generator=generator)
        elif "norm" in name and len(shape) == 1:
            value.normal_(1.0, 0.05, generator=generator)
        elif "modulation" in name:
            value.normal_(0.0, 1.0 / math.sqrt(dims["dim"]), generator=generator)
        else:
            value.normal_(0.0, 1.0 / math.sqrt(max(1, math.prod(shape[1:]))), generator=generator)
        state[name] = value.to(dtype)
        del value
    del skeleton
    model = comfy.sd.load_diffusion_model_state_dict(state, model_options={"dtype": dtype})
    del state
    return model


def with_flow_shift(model, shift: float):
    """What core ModelSamplingSD3 does (the Wan 2.2 template: shift 8 on both experts), without importing
    comfy_extras (its import chain needs PyAV)."""
    import comfy.model_sampling

    class ModelSamplingAdvanced(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    sampling = ModelSamplingAdvanced(model.model.model_config)
    sampling.set_parameters(shift=shift, multiplier=1000)
    patched = model.clone()
    patched.add_object_patch("model_sampling", sampling)
    return patched


def wan22_part(args, torch, rows: list, facts: dict) -> None:
    """Wan 2.2 A14B size: plain two-stage sampling vs hybrid two-stage vs POS in all (see the module doc)."""
    import comfy.model_management
    import comfy.samplers

    bare_nodes_package()
    from comfyui_searchpriors.nodes.comfy_internals.hybrid_guider import make_guider as make_hybrid_guider
    from comfyui_searchpriors.nodes.comfy_internals.inversion_sampler import expert_split, invert_latent, sample_two_stage
    from comfyui_searchpriors.nodes.comfy_internals.noise_objects import MixedInvertedNoise, SeededRandomNoise

    tiny = load_test_helper("tiny_models")
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)  # the GPU machine's notes: cuDNN's SDPA misbehaves there
    dims = dict(dim=128, ffn_dim=256, num_layers=2) if args.tiny else dict(dim=5120, ffn_dim=13824, num_layers=40)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    device = "cuda" if torch.cuda.is_available() else "cpu"
    steps, cfg, boundary, gamma, eta = args.wan_steps, 5.0, 0.875, 0.1, 0.2
    start = time.perf_counter()
    high = with_flow_shift(random_wan_on_device(torch, 1, dims, dtype, device), 8.0)
    low = with_flow_shift(random_wan_on_device(torch, 2, dims, dtype, device), 8.0)
    free_all(torch)
    comfy.model_management.load_models_gpu([high, low])
    facts["wan22_build_s"] = round(time.perf_counter() - start, 1)
    facts["wan22_params_b_each"] = round(sum(p.numel() for p in low.model.diffusion_model.parameters()) / 1e9, 2)
    log(f"built two {facts['wan22_params_b_each']} B experts in {facts['wan22_build_s']} s")
    positive = tiny.wan_conditioning(1, tokens=24)
    rewritten = tiny.wan_conditioning(2, tokens=30)
    negative = tiny.wan_conditioning(3, tokens=12)   # also the empty prompt of the inversion
    latent = torch.zeros(1, 16, 3, 8, 8) if args.tiny else torch.zeros(1, 16, 9, 480 // 8, 832 // 8)
    reference = torch.randn(latent.shape, generator=torch.Generator().manual_seed(11)) * 0.5
    sigmas = comfy.samplers.calculate_sigmas(low.get_model_object("model_sampling"), "simple", steps).cpu()
    k = expert_split(high.get_model_object("model_sampling"), sigmas, boundary)
    facts["wan22_boundary_step"] = k
    sampler = comfy.samplers.sampler_object("euler")

    def plain():
        noise = SeededRandomNoise(0).generate_noise({"samples": latent})
        return sample_two_stage(low, high, noise, latent.clone(), positive, negative, cfg, sigmas, k)

    def hybrid(noise):
        first = make_hybrid_guider(high, rewritten, positive, negative, cfg, gamma, full_sigmas=sigmas)
        mid = first.sample(noise, latent.clone(), sampler, sigmas[:k + 1], seed=0, disable_pbar=True)
        second = make_hybrid_guider(low, rewritten, positive, negative, cfg, gamma, full_sigmas=sigmas)
        return second.sample(torch.zeros_like(mid), mid, sampler, sigmas[k:], seed=0, disable_pbar=True)

    def hybrid_alone():
        return hybrid(MixedInvertedNoise(reference, eta, seed=0).generate_noise({"samples": latent}))

    def pos_in_all(timing: dict):
        with Meter(torch) as mi:
            outcome = invert_latent(low, reference, negative, sigmas, refine_iterations=0, cfg=1.0, high_model=high,
                                    boundary=boundary)
        timing["invert"] = mi.seconds
        return hybrid(MixedInvertedNoise(outcome.noise, eta, seed=0).generate_noise({"samples": latent}))

    warm = sigmas[-3:] if not args.tiny else sigmas  # a short warm-up of every path (kernels, allocator)
    invert_latent(low, reference, negative, torch.cat([sigmas[:2], sigmas[-2:]]), 0, high_model=high,
                  boundary=boundary)
    sample_two_stage(low, high, SeededRandomNoise(0).generate_noise({"samples": latent}), latent.clone(), positive,
                     negative, cfg, torch.cat([sigmas[:2], warm]), 1)
    times = {"plain": [], "hybrid": [], "pos": [], "invert": []}
    peaks = {}
    for _ in range(args.wan22_rounds):
        for name, run in (("plain", plain), ("hybrid", hybrid_alone), ("pos", None)):
            timing: dict = {}
            with Meter(torch) as m:
                pos_in_all(timing) if name == "pos" else run()
            times[name].append(m.seconds)
            peaks[name] = m.peak_gib
            if name == "pos":
                times["invert"].append(timing["invert"])
            log(f"wan22 {name}: {m.seconds:.2f} s, peak {m.peak_gib:.2f} GiB")
    base = statistics.median(times["plain"])
    label = f"Wan 2.2 A14B size, 2 experts, 832x480x33, {steps} steps, cfg {cfg:g}, k = {k}"
    rows += [
        (f"{label}: (a) plain two-stage (CFGGuider x2)", base, peaks["plain"], None, 1.0),
        (f"{label}: (b) hybrid two-stage + Eq. 4 NOISE", statistics.median(times["hybrid"]), peaks["hybrid"], None,
         statistics.median(times["hybrid"]) / base),
        (f"{label}: (c) POS in all (invert 2 experts + mix + (b))", statistics.median(times["pos"]), peaks["pos"],
         None, statistics.median(times["pos"]) / base),
        (f"{label}:     of which inversion ({steps} calls, cfg 1)", statistics.median(times["invert"]), None, None,
         statistics.median(times["invert"]) / base),
    ]
    facts["wan22_rounds"] = times
    low = high = None  # noqa: F841
    free_all(torch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "zeroscope", "wan", "wan22"], default="all")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--wan-steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wan22-rounds", type=int, default=1,
                        help="rounds of the Wan 2.2 A14B part (one round of its three ways is about 3 minutes)")
    parser.add_argument("--group-norm", choices=["parallel", "torch", "both"], default="both",
                        help="the native rows with the loader's FewRowsGroupNorm (parallel), PyTorch's GroupNorm, or both "
                             "one after the other (same loaded model)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run of every path with tiny models (runs on the CPU; its numbers mean nothing)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "searchpriors-bench-gpu"))
    parser.add_argument("--out", default=str(BENCH_OUT / "bench_pos_gpu.json"))
    args = parser.parse_args(argv)

    import torch

    if args.tiny:
        args.steps, args.wan_steps, args.rounds = 3, 4, 1
        args.out = args.out.replace(".json", ".tiny.json")
    elif not torch.cuda.is_available():
        print("skipped: no CUDA device (this benchmark measures GPU time and VRAM)")
        return 0
    use_comfyui(torch)

    os.makedirs(args.workdir, exist_ok=True)
    rows: list = []
    facts: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
                   "date": time.strftime("%Y-%m-%d"), "dtype": "bf16"}
    wall = time.perf_counter()
    # ComfyUI runs every node under inference mode; outside it, a VAE or model call on weights that require
    # grad would keep its whole autograd graph alive (measured: 29 GiB after one VAE encode).
    with torch.inference_mode():
        if args.part in ("all", "zeroscope"):
            zeroscope_part(args, torch, rows, facts)
        if args.part in ("all", "wan"):
            wan_part(args, torch, rows, facts)
        if args.part in ("all", "wan22"):
            wan22_part(args, torch, rows, facts)

    log(f"\n{'way':<100} {'s':>7} {'peak GiB':>9} {'vs diffusers':>13} {'vs plain native':>16}")
    for name, seconds, peak, vs_diff, vs_plain in rows:
        fmt = lambda v, f: (f.format(v) if v is not None else "")  # noqa: E731
        log(f"{name:<100} {seconds:>7.2f} {fmt(peak, '{:.2f}'):>9} {fmt(vs_diff, '{:.3f}x'):>13} "
            f"{fmt(vs_plain, '{:.3f}x'):>16}")
    summary = []
    zs = [r for r in rows if r[0].startswith("ZeroScope (b) ")]
    pos_rows = [r for r in rows if r[0].startswith("ZeroScope (c)")]
    for b, pos in zip(zs, pos_rows):  # one pair per GroupNorm kind
        a = rows[0]
        kind = b[0][b[0].index("[GroupNorm"):]
        summary.append(f"{kind} ZeroScope native KSampler {b[3]:.3f}x diffusers (target <= 1.05), peak {b[2]:.2f} vs "
                       f"{a[2]:.2f} GiB; POS {pos[4]:.3f}x plain native (target <= 1.6)")
    wan = [r for r in rows if r[0].startswith("Wan 2.1") and "POS" in r[0]]
    if wan:
        summary.append(f"Wan 1.3B POS sampling {wan[0][4]:.3f}x core (target <= 1.02)")
    a14 = {r[0].split(": ")[-1][:3]: r for r in rows if r[0].startswith("Wan 2.2 A14B")}
    if a14:
        summary.append(f"Wan 2.2 A14B two experts: POS in all {a14['(c)'][4]:.3f}x plain two-stage (target <= 1.6), "
                       f"hybrid sampling {a14['(b)'][4]:.3f}x (target <= 1.02), plain {a14['(a)'][1]:.1f} s, "
                       f"peak {a14['(c)'][2]:.1f} GiB")
    facts["wall_s"] = round(time.perf_counter() - wall, 1)
    log(f"SUMMARY pos gpu ({facts['device']}, {facts['date']}): " + "; ".join(summary) + f"; wall {facts['wall_s']} s")
    importlib.import_module("_common").write_result("bench_pos_gpu", {"rows": rows, "facts": facts}, out=args.out,
                                                    indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
