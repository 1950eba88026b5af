"""The toy world's table: base sampling vs POS vs search-then-tune, measured by the probe.

    python benchmarks/bench_toy_world.py            # the full table (CPU, about 20-30 minutes on 2 cores)
    python benchmarks/bench_toy_world.py --quick    # held-out prompts only, fewer rows (CPU, a few minutes)

What runs is what the bundled workflows run, in-process on ComfyUI's objects (tests/toy_world_harness.py):
the trained toy model (sample_data/models/searchpriors-toy-t2v) through the pack's ModelScope loader; the
reference clip retrieved from the world library (sample_data/toy_world, 288 clips, every pair) by the pack's
index in POS mode (caption similarity, Eq. 3) and decoded by Reference Video Frames' decoder; POS = DDIM Video
Invert (empty prompt) + Gaussian Noise Mix (Eq. 4) + hybrid guider; search-then-tune = VMC motion LoRA on the
retrieved clip with its caption (both losses), then plain sampling with the tuned MODEL. The probe
(distill/toy_probe.py, 1.000 on ground-truth clips) reads colour, shape and motion of every video.

Rows:
- base: plain sampling.
- POS (retrieved), eta from the paper's ModelScope value (0.2) and a sweep; the rewriter is not used (no
  language model here), so the rewritten prompt equals the original and gamma has no effect.
- POS (oracle reference): a ground-truth clip of the prompt's own (shape, colour, motion); separates
  retrieval errors from POS.
- control: POS with a wrong reference (the opposite motion); "follows ref" is how often the video takes the
  reference's motion (it should, if POS transfers motion).
- POS with the clip Search-T2V's retrieval (search_t2v mode, motion units) finds.
- search-then-tune: Search-T2V's clip (search_t2v mode), its 8 frames as the keyframes (no detector weights
  here: the Keyframe Extractor is not in the loop), VMC with vmc_abs and eq10_pairs and its caption, then
  plain sampling with the tuned MODEL; POS + tuned LoRA.

Wan rows (``--families``, default both): the Wan-architecture toy (scripts/train_toy_world.py --family wan,
sample_data/models/searchpriors-toy-wan: ComfyUI's WanModel and Wan 2.1 VAE, 17 frames at 128) on the held-out
prompts: base, POS with Search-T2V's clip, VMC-tuned on that clip (Wan's self-attention), and in the full run
the oracle reference, the wrong-reference control and POS + tuned (see ``wan_rows``).

Held-out prompts are the (shape, motion) pairs the model never saw in training, the papers' "motions the model
renders badly"; in-distribution prompts are pairs it saw. These numbers are about our implementation of the
methods on a 64x64, 8-frame toy model trained here, not about ZeroScope or Wan at scale.

Prints a table and a SUMMARY line; writes bench_out/toy_world.json (bench_out/toy_world_quick.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common  # noqa: E402  (benchmarks/ helpers; the repository root itself never goes on sys.path)


def load_harness():
    """tests/toy_world_harness.py, loaded once by file path (the loader every test helper goes through)."""
    return _common.load_test_helper("toy_world_harness")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="held-out prompts, fewer rows and steps (CPU, minutes)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per set (default 12; quick 6)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per prompt (default 4; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default 20; quick 12)")
    parser.add_argument("--vmc-steps", type=int, default=None, help="VMC steps (default 100; quick 40)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this size)")
    parser.add_argument("--families", default="modelscope,wan",
                        help="toy models to run: modelscope (UNet3D) and/or wan (WanModel; skipped with a message "
                             "when sample_data/models/searchpriors-toy-wan is absent)")
    args = parser.parse_args(argv)
    families = {f.strip() for f in args.families.split(",") if f.strip()}
    quick = args.quick
    n_prompts = args.prompts or (6 if quick else 12)
    n_seeds = args.seeds or (1 if quick else 4)
    steps = args.steps or (12 if quick else 20)
    vmc_steps = args.vmc_steps or (40 if quick else 100)

    harness = load_harness()
    harness.use_comfyui(cpu=True)
    import torch

    torch.set_num_threads(args.threads)
    from comfyui_searchpriors.distill import toy_probe, toy_world as tw

    t_start = time.perf_counter()
    pipe = harness.ToyPipeline(steps=steps)
    if "wan" in families and not harness.TOY_WAN.is_dir():
        print(f"wan rows skipped: no Wan toy model at {harness.TOY_WAN} (scripts/train_toy_world.py --family wan)")
        families.discard("wan")
    if "modelscope" not in families:
        parser.error("--families must include modelscope: its loop finds the references for every row")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        retriever = harness.WorldRetriever(Path(tmp) / "toy_index")
        index_s = time.perf_counter() - t0
        sets = {"held-out": tw.held_out_prompts(n_prompts, seed=0)}
        if not quick:
            sets["in-dist"] = tw.in_distribution_prompts(n_prompts, seed=0)
        results: dict[str, dict] = {}
        refs: dict[tuple, dict] = {}

        def add(row: str, set_name: str, video, prompt_row, seconds: float, ref_motion: str | None = None):
            p = toy_probe.probe(video)
            _, shape, colour, motion = prompt_row
            r = results.setdefault((row, set_name), {"motion": [], "colour": [], "shape": [], "seconds": [],
                                                     "follows_ref": []})
            r["motion"].append(p.motion == motion)
            r["colour"].append(p.colour == colour)
            r["shape"].append(p.shape == shape)
            r["seconds"].append(seconds)
            if ref_motion is not None:
                r["follows_ref"].append(p.motion == ref_motion)

        for set_name, rows in sets.items():
            for k, prow in enumerate(rows):
                prompt, shape, colour, motion = prow
                hit = retriever.search(prompt, mode="pos")          # POS Eq. 3: caption similarity
                hit_t2v = retriever.search(prompt, mode="search_t2v")  # Search-T2V Eqs. 6-9: motion units
                ref, ref_t2v = retriever.frames(hit.video_path), retriever.frames(hit_t2v.video_path)
                ref_probe, ref_t2v_probe = toy_probe.probe(ref), toy_probe.probe(ref_t2v)
                refs[(set_name, k)] = {"prompt": prompt, "retrieved_pos": hit.caption,
                                       "retrieved_pos_motion": ref_probe.motion,
                                       "pos_right_motion": ref_probe.motion == motion,
                                       "retrieved_search_t2v": hit_t2v.caption,
                                       "retrieved_search_t2v_motion": ref_t2v_probe.motion,
                                       "search_t2v_right_motion": ref_t2v_probe.motion == motion}
                oracle, _ = harness.world_clip(shape, colour, motion, seed=1000 + k)
                wrong_motion = harness.OPPOSITE[motion]
                wrong, _ = harness.world_clip(shape, colour, wrong_motion, seed=2000 + k)
                t0 = time.perf_counter()
                inv = pipe.invert(ref, key=hit.video_path)
                inv_s = time.perf_counter() - t0
                inv_t2v = pipe.invert(ref_t2v, key=hit_t2v.video_path)
                inv_oracle = pipe.invert(oracle)
                inv_wrong = pipe.invert(wrong)
                tuned = {}
                if set_name == "held-out":   # search-then-tune: VMC on the Search-T2V clip with its caption
                    losses = ("vmc_abs",) if quick else ("vmc_abs", "eq10_pairs")
                    for loss in losses:
                        tuned[loss] = pipe.tune(ref_t2v, hit_t2v.caption, loss=loss, steps=vmc_steps)
                for seed in range(n_seeds):
                    g = pipe.base(prompt, seed)
                    add("base", set_name, g.video, prow, g.seconds)
                    etas = (1.0,) if quick else (0.2, 0.5, 1.0, 2.0)
                    for eta in etas:
                        g = pipe.pos(prompt, seed, inv, eta)
                        add(f"POS pos-retrieved eta {eta}", set_name, g.video, prow, g.seconds + inv_s)
                    g = pipe.pos(prompt, seed, inv_t2v, 1.0)
                    add("POS search_t2v-retrieved eta 1.0", set_name, g.video, prow, g.seconds + inv_s)
                    if not quick:
                        g = pipe.pos(prompt, seed, inv_oracle, 1.0)
                        add("POS oracle ref eta 1.0", set_name, g.video, prow, g.seconds + inv_s)
                    g = pipe.pos(prompt, seed, inv_wrong, 1.0)
                    add("control: POS wrong ref eta 1.0", set_name, g.video, prow, g.seconds + inv_s, wrong_motion)
                    for loss, (model, curve, tune_s) in tuned.items():
                        g = pipe.base(prompt, seed, model=model)
                        add(f"tuned VMC {loss} ({vmc_steps} steps)", set_name, g.video, prow, g.seconds + tune_s)
                        if loss == "vmc_abs":
                            g = pipe.pos(prompt, seed, inv_t2v, 1.0, model=model)
                            add(f"POS eta 1.0 + tuned VMC {loss}", set_name, g.video, prow,
                                g.seconds + tune_s + inv_s)
                print(f"[{time.perf_counter() - t_start:6.0f} s] {set_name} {k + 1}/{len(rows)}: {prompt!r} "
                      f"-> pos {hit.caption!r} ({ref_probe.motion}), search_t2v {hit_t2v.caption!r} "
                      f"({ref_t2v_probe.motion})", flush=True)
                if set_name == "held-out":
                    refs[(set_name, k)]["search_t2v_clip"] = (ref_t2v_probe.shape, ref_t2v_probe.colour,
                                                              ref_t2v_probe.motion, hit_t2v.caption)
        if "wan" in families:
            wan_rows(harness, sets["held-out"], refs, add, steps, vmc_steps, n_seeds, quick, t_start)

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    table_rows, data_rows = [], []
    for (row, set_name), r in results.items():
        item = {"row": row, "set": set_name, "n": len(r["motion"]), "motion": mean(r["motion"]),
                "colour": mean(r["colour"]), "shape": mean(r["shape"]), "follows_ref": mean(r["follows_ref"]),
                "seconds_per_video": statistics.median(r["seconds"])}
        data_rows.append(item)
        table_rows.append((set_name, row, item["n"], item["motion"], item["colour"], item["shape"],
                           item["follows_ref"], item["seconds_per_video"]))
    print(_common.table(["set", "row", "n", "motion", "colour", "shape", "follows ref", "s/video"], table_rows,
                        title=f"toy world: {steps} DDIM steps, cfg {pipe.cfg}, {n_seeds} seed(s) per prompt"))
    retrieved_right = mean([v["pos_right_motion"] for v in refs.values()])
    t2v_right = mean([v["search_t2v_right_motion"] for v in refs.values()])
    print(f"retrieved reference shows the prompt's motion: pos mode {retrieved_right:.3f}, search_t2v mode "
          f"{t2v_right:.3f} of {len(refs)} prompts (index built in {index_s:.1f} s)")

    def get(row, set_name="held-out"):
        for item in data_rows:
            if item["row"] == row and item["set"] == set_name:
                return item
        return None

    base, pos = get("base"), get("POS pos-retrieved eta 1.0")
    oracle = get("POS oracle ref eta 1.0")
    tuned, ctrl = get(f"tuned VMC vmc_abs ({vmc_steps} steps)"), get("control: POS wrong ref eta 1.0")
    summary = (f"SUMMARY toy world{' (quick)' if quick else ''}: held-out base motion {base['motion']:.3f}, "
               f"POS motion {pos['motion']:.3f}"
               + (f" (oracle reference {oracle['motion']:.3f})" if oracle else "") +
               f", tuned motion {tuned['motion']:.3f}, "
               f"wrong-ref follows ref {ctrl['follows_ref']:.3f}; colour kept base {base['colour']:.3f} / "
               f"POS {pos['colour']:.3f} / tuned {tuned['colour']:.3f}, shape kept base {base['shape']:.3f} / "
               f"POS {pos['shape']:.3f} / tuned {tuned['shape']:.3f}; retrieved clip has the right motion: pos mode "
               f"{retrieved_right:.3f}, search_t2v mode {t2v_right:.3f}; {time.perf_counter() - t_start:.0f} s")
    wan_base, wan_pos = get("wan base"), get("wan POS search_t2v-retrieved eta 1.0")
    wan_tuned = get(f"wan tuned VMC vmc_abs ({vmc_steps} steps)")
    if wan_base and wan_pos and wan_tuned:
        summary += (f"; Wan toy held-out motion: base {wan_base['motion']:.3f}, POS {wan_pos['motion']:.3f}, "
                    f"tuned {wan_tuned['motion']:.3f} (colour {wan_base['colour']:.3f}/{wan_pos['colour']:.3f}/"
                    f"{wan_tuned['colour']:.3f}, shape {wan_base['shape']:.3f}/{wan_pos['shape']:.3f}/"
                    f"{wan_tuned['shape']:.3f})")
    print(summary)
    out = _common.write_result("toy_world", {"rows": data_rows, "references": [{"set": s, "k": k, **v} for (s, k), v
                                                                                in refs.items()],
                                             "settings": {"steps": steps, "cfg": pipe.cfg, "seeds": n_seeds,
                                                          "prompts": n_prompts, "vmc_steps": vmc_steps},
                                             "summary": summary, "environment": _common.environment()},
                               quick=quick)
    print(f"wrote {out}")
    return 0


def wan_rows(harness, prompts, refs, add, steps, vmc_steps, n_seeds, quick, t_start) -> None:
    """The Wan-architecture toy's rows on the held-out prompts: base, POS with Search-T2V's clip, tuned (VMC on
    that clip), and (full run) the oracle reference, the wrong-reference control and POS + tuned. The retrieved
    clip is the one the ModelScope rows used (search_t2v mode), rendered again at the Wan toy's 17 frames and
    128 pixels from what the probe reads in it (shape, colour, motion): the library's mp4s have 8 frames."""
    pipe = harness.ToyWanPipeline(steps=steps)
    for k, prow in enumerate(prompts):
        prompt, shape, colour, motion = prow
        r_shape, r_colour, r_motion, caption = refs[("held-out", k)]["search_t2v_clip"]
        ref = pipe.reference(r_shape, r_colour, r_motion, seed=3000 + k)
        t0 = time.perf_counter()
        inv = pipe.invert(ref)
        inv_s = time.perf_counter() - t0
        tuned, _, tune_s = pipe.tune(ref, caption, loss="vmc_abs", steps=vmc_steps)
        extra = {}
        if not quick:
            wrong_motion = harness.OPPOSITE[motion]
            extra["oracle"] = pipe.invert(pipe.reference(shape, colour, motion, seed=4000 + k))
            extra["wrong"] = (pipe.invert(pipe.reference(shape, colour, wrong_motion, seed=5000 + k)), wrong_motion)
        for seed in range(n_seeds):
            g = pipe.base(prompt, seed)
            add("wan base", "held-out", g.video, prow, g.seconds)
            g = pipe.pos(prompt, seed, inv, 1.0)
            add("wan POS search_t2v-retrieved eta 1.0", "held-out", g.video, prow, g.seconds + inv_s)
            g = pipe.base(prompt, seed, model=tuned)
            add(f"wan tuned VMC vmc_abs ({vmc_steps} steps)", "held-out", g.video, prow, g.seconds + tune_s)
            if not quick:
                g = pipe.pos(prompt, seed, extra["oracle"], 1.0)
                add("wan POS oracle ref eta 1.0", "held-out", g.video, prow, g.seconds + inv_s)
                g = pipe.pos(prompt, seed, extra["wrong"][0], 1.0)
                add("wan control: POS wrong ref eta 1.0", "held-out", g.video, prow, g.seconds + inv_s,
                    extra["wrong"][1])
                g = pipe.pos(prompt, seed, inv, 1.0, model=tuned)
                add("wan POS eta 1.0 + tuned VMC vmc_abs", "held-out", g.video, prow, g.seconds + tune_s + inv_s)
        print(f"[{time.perf_counter() - t_start:6.0f} s] wan held-out {k + 1}/{len(prompts)}: {prompt!r} "
              f"-> reference {r_colour} {r_shape} {r_motion}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
