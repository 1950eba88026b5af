"""`make serve`: the set-up ComfyUI with this pack, on 127.0.0.1, in the foreground until Ctrl-C.

    python scripts/serve.py [--port N] [--base-dir DIR] [--fresh]

Open the printed URL in a browser. ComfyUI's folders (input, models, output, user) live in a base
directory that is kept between runs (default ~/.cache/comfyui-searchpriors/serve), so a motion index
built once is there next time; the sample library is copied to its input folder, where the bundled
workflows look. The toy world comes ready too (DESIGN.md "The toy world"): the trained toy text-to-video model
(sample_data/models/searchpriors-toy-t2v, 64x64, 8 frames) linked into models/diffusers/ (the ModelScope
loader lists it), the world's 288-clip library in input/searchpriors_toy_world/ with its motion index
searchpriors_toy_world (built on the first start), and the POS and search-then-tune workflows set for them
(toy model, world index, 8 frames of 64x64, 20 steps, eta 1.0) in the Workflows sidebar as toy_world_pos and
toy_world_search_then_tune. The DiT workflows get demo variants there too (toy_world_pos_wan21,
toy_world_pos_wan22_a14b, toy_world_search_then_tune_wan21 on the Wan toy; demo_random_pos_hunyuan15 and
demo_random_pos_ltxv on tiny random models, whose video is noise), on demo files under demo names and the
demo-only nodes of scripts/demo_nodes.py. The bundled templates keep their defaults for the real models. The
server's log goes to <base>/comfyui.log. Run it with the virtual environment that scripts/setup_env.sh made
(`make serve` does both).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

import comfy_server as harness  # this file's folder is sys.path[0]; the repository root is never put there


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("SEARCHPRIORS_PORT", "0")) or None,
                        help="port on 127.0.0.1 (default: SEARCHPRIORS_PORT, else a free one)")
    parser.add_argument("--base-dir", type=Path, default=harness.CACHE_DIR / "serve",
                        help="ComfyUI's base directory (input, models, output, user), kept between runs")
    parser.add_argument("--fresh", action="store_true",
                        help="empty the base directory first (indexes built there are deleted)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the server (default: torch's choice; 1 suits the toy model on a "
                             "small shared CPU)")
    return parser.parse_args(argv)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # `kill` stops the server the same way as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fresh and args.base_dir.exists():
        shutil.rmtree(args.base_dir)
    args.base_dir.mkdir(parents=True, exist_ok=True)
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)} if args.threads else None
    server = harness.ComfyServer(args.base_dir, port=args.port, startup_timeout=300.0, env=env)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    print(f"Starting ComfyUI ({server.comfyui_dir}) with ComfyUI-SearchPriors; log: {server.log_path}", flush=True)
    try:
        harness.install_toy_t2v(server)
        harness.install_demo_nodes(server)   # the demo text encoder and VAE loader of the DiT demo variants
        harness.install_demo_models(server)  # the Wan toy and the random HunyuanVideo 1.5 / LTX-Video, demo names
        server.start()
        harness.install_sample_library(server)
        # the search-then-tune workflow needs a GroundingDINO; on the world's clips it keeps the full frame,
        # so the tiny random one of the tests stands in until a real one is in models/grounding-dino/
        harness.install_tiny_grounding_dino(server)
        if harness.build_toy_world_index(server):
            print(f"  built the toy world's motion index {harness.TOY_WORLD_INDEX_NAME} (288 clips)", flush=True)
        harness.install_toy_clips(server)   # reels of world clips + the toy captioner (toy_world_clips_pos)
        workflows = harness.write_toy_world_user_workflows(server)
        demos = harness.write_demo_user_workflows(server)
        print(f"\n  ComfyUI is ready: {server.url}\n", flush=True)
        print("  First visit: the Templates dialog opens. Pick Extensions -> ComfyUI-SearchPriors, run\n"
              "  build_sample_index once (Run), then open search_t2v_retrieval and Run.\n"
              f"  The toy world: the Workflows sidebar (W) has {', '.join(w.stem for w in workflows)}: the trained\n"
              f"  toy model ({harness.TOY_T2V_FOLDER}) and the world's index ({harness.TOY_WORLD_INDEX_NAME}), prompt\n"
              f"  {harness.TOY_PROMPT!r}; Run makes a 64x64, 8-frame video of the shape moving.\n"
              f"  The DiT workflows at demo size, in the same sidebar:\n  {', '.join(w.stem for w in demos)}:\n"
              "  toy_world_*wan*: the Wan toy (17 frames of 128, 1-2 minutes a run on 2 CPU cores; for\n"
              "  pos_wan22_a14b both experts are the toy);\n"
              "  demo_random_*: tiny random models, so their video is noise (it shows the graph runs). The\n"
              "  templates pos_wan21, pos_hunyuan15, ... name the real model files: their notes say where to get them.\n"
              "  Stop the server with Ctrl-C.\n", flush=True)
        code = server.wait()
        print(f"ComfyUI exited with code {code}; log tail:\n{server.log_tail(30)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ComfyUI ...", flush=True)
        return 0
    except harness.ComfyServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
