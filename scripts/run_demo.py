"""The demo: a real ComfyUI server with this pack, the sample motion index built in it, and the bundled
Search-T2V retrieval workflow run through POST /prompt; prints the ranked results from /history.

    python scripts/run_demo.py [--via workflow|cli] [--prompt TEXT] [--keep]

Run it with the virtual environment that scripts/setup_env.sh made (`make run` does both). Exits 0 when
every retriever in the workflow produced a ranking, 1 otherwise (the server log's tail is printed and
its base directory kept).
"""

from __future__ import annotations

import argparse
import sys
import time

import comfy_server as harness  # this file's folder is sys.path[0]; the repository root is never put there


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--via", choices=["workflow", "cli"], default="workflow",
                        help="build the sample index with the bundled build workflow (default) or the CLI")
    parser.add_argument("--prompt", help="the text to search for, instead of the workflow's own")
    parser.add_argument("--keep", action="store_true", help="keep the server's base directory and log")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for each prompt")
    return parser.parse_args(argv)


def step(message: str) -> float:
    print(f"==> {message}", flush=True)
    return time.monotonic()


def done(started: float, detail: str = "") -> None:
    print(f"    done in {time.monotonic() - started:.1f} s{(': ' + detail) if detail else ''}", flush=True)


def node_title(graph: dict, node_id: str) -> str:
    node = graph[node_id]
    return (node.get("_meta") or {}).get("title") or node["class_type"]


def print_results(graph: dict, entry: dict) -> bool:
    """Prints each retriever's ranked table and the reference captions; False if a ranking is missing."""
    retrievers = [i for i, n in graph.items() if n["class_type"] == "SearchPriors_MotionRetriever"]
    ok = bool(retrievers)
    for node_id in retrievers:
        report = "\n".join(harness.history_texts(entry, node_id)).rstrip()
        print()
        print(f"--- {node_title(graph, node_id)} (node {node_id}, mode {graph[node_id]['inputs'].get('mode')}) ---")
        print(report or "(no report in /history)")
        ok = ok and bool(report)
    for node_id, node in graph.items():
        source = node["inputs"].get("source") if node["class_type"] == "PreviewAny" else None
        if isinstance(source, list) and source[0] in retrievers:
            text = "\n".join(harness.history_texts(entry, node_id)).rstrip()
            print()
            print(f"--- {node_title(graph, node_id)} ---")
            print(text or "(empty)")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = harness.ComfyServer()
    print(f"ComfyUI: {server.comfyui_dir}\nPython:  {server.python}\nBase:    {server.base_dir}", flush=True)
    succeeded = False
    try:
        started = step("starting ComfyUI (--cpu) with ComfyUI-SearchPriors linked in")
        server.start()
        done(started, server.url)

        started = step(f"building the sample motion index ({args.via})")
        harness.build_sample_index(server, via=args.via, timeout=args.timeout)
        done(started, str(server.models_dir / "motion_index" / harness.SAMPLE_INDEX_NAME))

        graph = harness.load_json(harness.RETRIEVAL_WORKFLOW)
        if args.prompt:
            for node in graph.values():
                if node["class_type"] == "SearchPriors_PromptAtomizer":
                    node["inputs"]["prompt"] = args.prompt
        prompts = [n["inputs"].get("prompt") for n in graph.values()
                   if n["class_type"] == "SearchPriors_PromptAtomizer"]
        started = step(f"running {harness.RETRIEVAL_WORKFLOW.name} for {prompts}")
        entry = server.run_prompt(graph, timeout=args.timeout)
        status = harness.history_status(entry)
        done(started, status)
        if status != "success":
            error = harness.history_error(entry) or {}
            print(f"error in {error.get('node_type')} (node {error.get('node_id')}): "
                  f"{error.get('exception_message', '').strip()}", file=sys.stderr)
            return 1
        succeeded = print_results(graph, entry)
        if not succeeded:
            print("error: a retriever produced no ranking", file=sys.stderr)
        return 0 if succeeded else 1
    except (harness.ComfyServerError, harness.PromptRejected, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        if succeeded and not args.keep:
            server.remove_base()
        else:
            print(f"\nServer base directory and log kept: {server.base_dir} ({server.log_path.name})")


if __name__ == "__main__":
    sys.exit(main())
