"""GPU benchmark: the UNet3D's GroupNorms with PyTorch's kernel vs the pack's FewRowsGroupNorm
(distill/group_norm.py), at ZeroScope-576w size with random weights, bf16, 24 frames at 576x320 (latents
24 x 40 x 72), inference mode. Needs CUDA; without it prints "skipped: ..." and exits 0 (``--tiny``: a CPU
smoke run with the tiny UNet3D and the parallel path forced; its numbers mean nothing).

Part 1, every distinct GroupNorm input of one forward at batch 1 and 2 (shapes caught with hooks):
milliseconds per call, PyTorch's ``F.group_norm`` vs ``parallel_group_norm``, and the largest difference.
Part 2, the whole UNet forward (what a sampler step and an inversion step cost) at batch 1 and 2 with
PyTorch's GroupNorm and with FewRowsGroupNorm, interleaved rounds, and the batch-1 / batch-2 time ratio
(the inversion's share of POS, see bench_pos_gpu.py).

    python benchmarks/bench_group_norm_gpu.py [--rounds 5] [--tiny]

Prints two tables and one ``SUMMARY`` line; writes bench_out/bench_group_norm_gpu.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import _common as C  # noqa: E402 (the script's own folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
BENCH_OUT = REPO / "bench_out"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=str(BENCH_OUT / "bench_group_norm_gpu.json"))
    args = parser.parse_args(argv)
    import torch
    import torch.nn.functional as F

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("skipped: no CUDA device (this benchmark measures GPU time)")
        return 0
    from bench_vmc_gpu import import_pack

    import_pack()
    from diffusers import UNet3DConditionModel

    from comfyui_searchpriors.distill import group_norm as gn
    from comfyui_searchpriors.distill.synthetic_t2v import SIZES

    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    size = "tiny" if args.tiny else "zeroscope"
    frames, h, w = (4, 8, 8) if args.tiny else (24, 40, 72)
    if args.tiny:
        gn.FewRowsGroupNorm.require_cuda = False
        gn.MIN_ROW = 0  # tiny rows: force the parallel path so the smoke run exercises it
        torch.set_num_threads(1)
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet3DConditionModel(**SIZES[size]["unet"]).to(dtype).eval()
    for p in unet.parameters():
        p.data.normal_(0, 0.02)
    norms = [m for m in unet.modules() if type(m) is torch.nn.GroupNorm]
    context_dim = SIZES[size]["unet"]["cross_attention_dim"]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def inputs(b):
        g = torch.Generator(device).manual_seed(b)
        return (torch.randn(b, 4, frames, h, w, device=device, generator=g).to(dtype),
                torch.full((b,), 500, device=device),
                torch.randn(b, 77, context_dim, device=device, generator=g).to(dtype))

    def set_pack(on: bool):
        gn.use_few_rows_group_norm(unet, parallel=on)

    def forward_s(b, n):
        x, t, c = inputs(b)
        unet(x, t, encoder_hidden_states=c)
        sync()
        start = time.perf_counter()
        for _ in range(n):
            unet(x, t, encoder_hidden_states=c)
        sync()
        return (time.perf_counter() - start) / n

    facts = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
             "date": time.strftime("%Y-%m-%d"), "size": size, "latent": [frames, h, w], "group_norms": len(norms)}
    micro, forward = [], {}
    with torch.inference_mode():
        # part 1: distinct GroupNorm inputs
        seen = {}
        for b in (1, 2):
            def catch(m, a, b=b):  # returns None: a pre-hook's return value would replace the inputs
                seen.setdefault((b, tuple(a[0].shape), m.num_groups), (m, a[0].clone()))

            hooks = [m.register_forward_pre_hook(catch) for m in norms]
            x, t, c = inputs(b)
            unet(x, t, encoder_hidden_states=c)
            for hk in hooks:
                hk.remove()
        reps = 3 if args.tiny else 20
        for (b, shape, groups), (m, x) in sorted(seen.items(), key=lambda kv: (kv[0][0], -kv[1][1].numel())):
            if shape[0] * groups >= gn.ROWS or x[0].numel() // groups < gn.MIN_ROW:
                continue  # FewRowsGroupNorm leaves these to PyTorch's kernel (enough rows, or short ones)
            calls = {"pytorch": lambda: F.group_norm(x, groups, m.weight, m.bias, m.eps),
                     "pack": lambda: gn.parallel_group_norm(x, groups, m.weight, m.bias, m.eps)}
            times = {}
            for name, call in calls.items():
                call()
                sync()
                start = time.perf_counter()
                for _ in range(reps):
                    call()
                sync()
                times[name] = (time.perf_counter() - start) / reps * 1e3
            diff = float((calls["pack"]().float() - calls["pytorch"]().float()).abs().max())
            micro.append({"batch": b, "shape": list(shape), "pytorch_ms": times["pytorch"], "pack_ms": times["pack"],
                          "max_abs_diff": diff})
        # part 2: whole forwards, interleaved
        n = 1 if args.tiny else 5
        for b in (1, 2):
            forward[b] = {"pytorch": [], "pack": []}
        for _ in range(args.rounds):
            for b in (1, 2):
                for name, on in (("pytorch", False), ("pack", True)):
                    set_pack(on)
                    forward[b][name].append(forward_s(b, n))
        set_pack(False)
        ref = unet(*inputs(1)[:2], encoder_hidden_states=inputs(1)[2]).sample
        set_pack(True)
        out = unet(*inputs(1)[:2], encoder_hidden_states=inputs(1)[2]).sample
        facts["forward_b1_max_abs_diff"] = float((out.float() - ref.float()).abs().max())
        facts["forward_b1_ref_max"] = float(ref.float().abs().max())

    print(f"\n{'GroupNorm input (whole-video norms)':<40} {'PyTorch ms':>11} {'pack ms':>9} {'speed-up':>9} "
          f"{'max |diff|':>11}")
    for r in micro:
        print(f"{'b' + str(r['batch']) + ' ' + 'x'.join(map(str, r['shape'])):<40} {r['pytorch_ms']:>11.3f} "
              f"{r['pack_ms']:>9.3f} {r['pytorch_ms'] / max(r['pack_ms'], 1e-9):>8.2f}x {r['max_abs_diff']:>11.3g}")
    med = {b: {k: statistics.median(v) for k, v in forward[b].items()} for b in forward}
    print(f"\n{'UNet3D forward (median of ' + str(args.rounds) + ' rounds)':<40} {'PyTorch GN ms':>14} "
          f"{'pack GN ms':>11} {'speed-up':>9}")
    for b in (1, 2):
        print(f"{'batch ' + str(b):<40} {med[b]['pytorch'] * 1e3:>14.1f} {med[b]['pack'] * 1e3:>11.1f} "
              f"{med[b]['pytorch'] / med[b]['pack']:>8.3f}x")
    ratio_before = med[1]["pytorch"] / med[2]["pytorch"]
    ratio_after = med[1]["pack"] / med[2]["pack"]
    print(f"batch-1 / batch-2 time: {ratio_before:.3f} with PyTorch's GroupNorm, {ratio_after:.3f} with the pack's")
    print(f"SUMMARY group norm gpu ({facts['device']}, {facts['date']}): UNet3D forward b1 "
          f"{med[1]['pytorch'] / med[1]['pack']:.3f}x, b2 {med[2]['pytorch'] / med[2]['pack']:.3f}x faster; "
          f"b1/b2 {ratio_before:.3f} -> {ratio_after:.3f}; forward max |diff| {facts['forward_b1_max_abs_diff']:.3g} "
          f"(outputs up to {facts['forward_b1_ref_max']:.3g})")
    out_path = args.out.replace(".json", ".tiny.json") if args.tiny else args.out
    C.write_result("bench_group_norm_gpu", {"micro": micro, "forward": forward, "facts": facts}, out=out_path,
                   indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
