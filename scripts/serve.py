"""`make serve`: the set-up ComfyUI with this pack, on 127.0.0.1, in the foreground until Ctrl-C.

    python scripts/serve.py [--port N] [--base-dir DIR] [--fresh]

Open the printed URL in a browser. ComfyUI's folders (input, models, output, user) live in a base
directory that is kept between runs (default ~/.cache/comfyui-searchpriors/serve), so a motion index
built once is there next time; the sample library is copied to its input folder, where the bundled
workflows look. The server's log goes to <base>/comfyui.log. Run it with the virtual environment that
scripts/setup_env.sh made (`make serve` does both).
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
    return parser.parse_args(argv)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # `kill` stops the server the same way as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fresh and args.base_dir.exists():
        shutil.rmtree(args.base_dir)
    args.base_dir.mkdir(parents=True, exist_ok=True)
    server = harness.ComfyServer(args.base_dir, port=args.port, startup_timeout=300.0)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    print(f"Starting ComfyUI ({server.comfyui_dir}) with ComfyUI-SearchPriors; log: {server.log_path}", flush=True)
    try:
        server.start()
        harness.install_sample_library(server)
        print(f"\n  ComfyUI is ready: {server.url}\n", flush=True)
        print("  First visit: the Templates dialog opens. Pick Extensions -> ComfyUI-SearchPriors, run\n"
              "  build_sample_index once (Run), then open search_t2v_retrieval and Run.\n"
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
