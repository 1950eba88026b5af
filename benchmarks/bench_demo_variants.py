"""How long each workflow `make serve` offers in its Workflows sidebar takes at its demo size, through a real
server, and what the probe reads in its video: the demo variants of the five DiT workflows (scripts/comfy_server.py
DEMO_USER_WORKFLOWS: the Wan toy, and tiny random HunyuanVideo 1.5 / LTX-Video) beside the baseline, the toy world's
ModelScope POS workflow (toy_world_pos), in one run on one server.

    python benchmarks/bench_demo_variants.py [--only NAME ...] [--threads N]

Each graph is what the sidebar's workflow sends (the API graph before the UI conversion), queued once through
POST /prompt on a server that has already loaded the text models (the index build warms them); seconds are the
prompt's wall time, model loading included (a user's first Run). The probe (distill/toy_probe.py) reads colour,
shape and motion of each saved video (the prompt: "a red square moves to the left", for the Wan toy "a blue square
moves to the left"; for the random models the reading is of noise). Writes bench_out/bench_demo_variants.json, prints a table and a SUMMARY line. CPU only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common as C


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="variant names (default: the baseline and all five)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the server")
    parser.add_argument("--base-dir", type=Path, default=None, help="server base directory (default: a temporary one)")
    args = parser.parse_args(argv)
    h = C.harness()
    probe = C.load_by_path("searchpriors_toy_probe", C.REPO / "distill" / "toy_probe.py")
    names = args.only or ["toy_world_pos", *h.DEMO_USER_WORKFLOWS]
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)} if args.threads else None
    base = args.base_dir or Path(tempfile.mkdtemp(prefix="bench-demo-"))
    server = h.ComfyServer(base, startup_timeout=300, env=env)
    h.install_toy_t2v(server)
    h.install_demo_nodes(server)
    t0 = time.monotonic()
    h.install_demo_models(server)
    setup = {"demo_models_s": time.monotonic() - t0}
    rows, results = [], []
    with server:
        h.install_tiny_grounding_dino(server)
        t0 = time.monotonic()
        h.build_toy_world_index(server)
        setup["toy_world_index_s"] = time.monotonic() - t0
        for name in names:
            if name == "toy_world_pos":
                graph, model = h.toy_world_graph(h.load_json(h.POS_MODELSCOPE_WORKFLOW)), "ModelScope toy (baseline)"
                s = h.TOY_SETTINGS
            else:
                bundled, key = h.DEMO_USER_WORKFLOWS[name]
                graph = h.demo_graph(h.load_json(h.API_WORKFLOWS_DIR / f"{bundled}.json"), key)
                model, s = key, h.DEMO_SETTINGS[key]
            t0 = time.monotonic()
            entry = server.run_prompt(graph, timeout=1800)
            seconds = time.monotonic() - t0
            status = h.history_status(entry)
            result = {"name": name, "model": model, "frames": s["frames"], "size": s["size"], "steps": s["steps"],
                      "seconds": round(seconds, 1), "status": status}
            if status == "success":
                frames = h.saved_video_frames(server, entry, graph)
                save = next(k for k, v in graph.items() if v["class_type"] == "SaveVideo")
                item = entry["outputs"][save]["images"][0]
                path = server.output_dir / item.get("subfolder", "") / item["filename"]
                reading = probe.probe(probe.read_video_file(path, size=64))
                result.update(saved=f"{len(frames)} x {frames[0].shape[1]}x{frames[0].shape[0]}",
                              probe=f"{reading.colour} {reading.shape} {reading.motion}")
            else:
                result["error"] = (h.history_error(entry) or {}).get("exception_message", "")[:200]
            results.append(result)
            rows.append([name, model, f"{s['frames']} x {s['size']}", s["steps"], result["seconds"],
                         result.get("saved", status), result.get("probe", result.get("error", ""))])
            print(f"  {name}: {result['seconds']} s {status}", flush=True)
    print(C.table(["workflow", "model", "frames x size", "steps", "seconds", "saved", "probe reads"], rows,
                  title="make serve's sidebar workflows at demo size (one prompt each, model loading included)"))
    summary = "; ".join(f"{r['name']} {r['seconds']} s" + ("" if r["status"] == "success" else " FAILED")
                        for r in results)
    C.write_result("bench_demo_variants", {"results": results, "setup": setup, "environment": C.environment()})
    print(f"SUMMARY demo variants: {summary}; demo models written in {setup['demo_models_s']:.1f} s")
    return 0 if all(r["status"] == "success" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
