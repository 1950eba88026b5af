"""The demo: a real ComfyUI server with this pack, the sample motion index built in it, and the bundled
Search-T2V retrieval workflow run through POST /prompt; prints the ranked results from /history. Then POS
end to end: the bundled ModelScope/ZeroScope POS workflow (workflows/api/pos_modelscope.json) on a tiny
random model over a library of real clips (../shared/data/videos when present, else short clips drawn
here), saved as an mp4 by core Save Video; then the search-then-tune workflow (workflows/api/
search_then_tune.json: keyframes by a tiny random GroundingDINO, VMC tuning, the motion LoRA saved, sampling
from the inverted keyframes) over the same clips, and the saved motion LoRA reused on a new prompt
(workflows/api/motion_lora_apply.json: Load Motion LoRA, the one-node Hybrid Semantic Sampler). The tiny model shows the plumbing: its video is noise. For real
videos put text-to-video-ms-1.7b or zeroscope_v2_576w into models/diffusers/ (README).

    python scripts/run_demo.py [--via workflow|cli] [--prompt TEXT] [--keep]

Run it with the virtual environment that scripts/setup_env.sh made (`make run` does both). Exits 0 when
every retriever in the workflow produced a ranking, 1 otherwise (the server log's tail is printed and
its base directory kept).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import comfy_server as harness  # this file's folder is sys.path[0]; the repository root is never put there

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--via", choices=["workflow", "cli"], default="workflow",
                        help="build the sample index with the bundled build workflow (default) or the CLI")
    parser.add_argument("--prompt", help="the text to search for, instead of the workflow's own")
    parser.add_argument("--keep", action="store_true", help="keep the server's base directory and log")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for each prompt")
    parser.add_argument("--skip-pos", action="store_true", help="retrieval only, no POS or search-then-tune generation")
    return parser.parse_args(argv)


def step(message: str) -> float:
    print(f"==> {message}", flush=True)
    return time.monotonic()


def done(started: float, detail: str = "") -> None:
    print(f"    done in {time.monotonic() - started:.1f} s{(': ' + detail) if detail else ''}", flush=True)


def run_workflow(server, graph: dict, timeout: float, started: float) -> dict | None:
    """Runs an API graph; its /history entry, or None after printing the node's error."""
    entry = server.run_prompt(graph, timeout=timeout)
    status = harness.history_status(entry)
    done(started, status)
    if status == "success":
        return entry
    error = harness.history_error(entry) or {}
    print(f"error in {error.get('node_type')} (node {error.get('node_id')}): "
          f"{error.get('exception_message', '').strip()}", file=sys.stderr)
    return None


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


def drawn_clips(folder: Path) -> list[tuple[Path, str, str]]:
    """Three 3-second clips of moving shapes (PyAV), for machines without ../shared/data."""
    import av
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    specs = [("red_square_right.mp4", "a red square moves to the right", (220, 40, 40), (1, 0)),
             ("blue_square_down.mp4", "a blue square falls down", (40, 80, 220), (0, 1)),
             ("green_square_diagonal.mp4", "a green square slides across the frame", (40, 200, 90), (1, 1))]
    clips = []
    for name, caption, colour, (dx, dy) in specs:
        path = folder / name
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=8)
            stream.width = stream.height = 128
            stream.pix_fmt = "yuv420p"
            for i in range(24):
                frame = np.full((128, 128, 3), 30, dtype=np.uint8)
                x, y = 8 + dx * 3 * i, 8 + dy * 3 * i
                frame[y:y + 32, x:x + 32] = colour
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        clips.append((path, name, caption))
    return clips


def run_pos(server, timeout: float) -> bool:
    """POS on the tiny model: clip index, the bundled ModelScope workflow at demo size, the saved mp4."""
    videos = REPO / ".." / "shared" / "data" / "videos"
    clips = harness.shared_clips(videos.resolve())
    source = "../shared/data/videos"
    if not clips:
        clips, source = drawn_clips(server.base_dir / "drawn_clips"), "clips drawn by the demo"
    started = step(f"building the clip index over {len(clips)} clips ({source})")
    harness.install_clip_library(server, clips)
    harness.build_clip_index(server, timeout=timeout)
    done(started)
    started = step("writing the tiny random ModelScope-family model (models/diffusers/tiny-t2v)")
    harness.install_tiny_t2v(server)
    done(started)
    graph = harness.pos_at_test_size(harness.load_json(harness.POS_MODELSCOPE_WORKFLOW), frames=8, size=64, steps=10)
    started = step(f"running {harness.POS_MODELSCOPE_WORKFLOW.name} (8 frames of 64x64, 10 steps, tiny model)")
    entry = run_workflow(server, graph, timeout, started)
    if entry is None:
        return False
    for node_id, node in graph.items():
        if node["class_type"] == "PreviewAny":
            title = node_title(graph, node_id)
            if title in ("Retrieval table", "Inversion report", "Rewriter report"):
                text = "\n".join(harness.history_texts(entry, node_id)).rstrip()
                print(f"\n--- {title} ---\n" + "\n".join(text.splitlines()[:12]))
    return keep_saved_video(server, graph, entry)


def keep_saved_video(server, graph: dict, entry: dict) -> bool:
    """Copies the video the graph's Save Video node wrote out of the server's throw-away base directory."""
    save = next(k for k, v in graph.items() if v["class_type"] == "SaveVideo")
    files = entry["outputs"].get(save, {}).get("images", [])
    for item in files:
        kept = REPO / "out" / item["filename"]
        kept.parent.mkdir(exist_ok=True)
        shutil.copyfile(server.output_dir / item.get("subfolder", "") / item["filename"], kept)
        print(f"\nSaved video: {kept}")
    print("(the tiny random model shows the plumbing, its frames are noise: see the README for real models)")
    return bool(files)


def run_search_then_tune(server, timeout: float) -> bool:
    """Search-then-tune on the tiny model and a tiny random GroundingDINO, over the clip index run_pos built:
    keyframes, a few VMC tuning steps, the motion LoRA saved, sampling from the inverted keyframes."""
    started = step("writing a tiny random GroundingDINO (models/grounding-dino/"
                   f"{harness.TINY_GROUNDING_DINO_FOLDER})")
    harness.install_tiny_grounding_dino(server)
    done(started)
    graph = harness.search_then_tune_at_test_size(harness.load_json(harness.SEARCH_THEN_TUNE_WORKFLOW), frames=8,
                                                  size=64, tune_steps=10, sample_steps=10)
    started = step(f"running {harness.SEARCH_THEN_TUNE_WORKFLOW.name} (8 keyframes of 64x64, 10 tuning steps, "
                   f"10 sampling steps, tiny models)")
    entry = run_workflow(server, graph, timeout, started)
    if entry is None:
        return False
    lora_name = None
    for node_id, node in graph.items():
        if node["class_type"] == "PreviewAny" and node_title(graph, node_id) in ("Segment", "VMC report",
                                                                                 "Saved motion LoRA"):
            text = "\n".join(harness.history_texts(entry, node_id)).rstrip()
            print(f"\n--- {node_title(graph, node_id)} ---\n" + "\n".join(text.splitlines()[:12]))
            if node_title(graph, node_id) == "Saved motion LoRA":
                lora_name = text.strip()
    return keep_saved_video(server, graph, entry) and run_motion_lora_apply(server, timeout, lora_name)


def run_motion_lora_apply(server, timeout: float, lora_name) -> bool:
    """The motion LoRA search-then-tune saved, reused on the workflow's new prompt (motion_lora_apply.json)."""
    if not lora_name:
        print("error: search_then_tune reported no saved motion LoRA", file=sys.stderr)
        return False
    graph = harness.motion_lora_apply_at_test_size(harness.load_json(harness.MOTION_LORA_APPLY_WORKFLOW), lora_name,
                                                   frames=8, size=64, steps=10)
    started = step(f"running {harness.MOTION_LORA_APPLY_WORKFLOW.name} with {lora_name} (8 frames of 64x64, "
                   f"10 steps, tiny model)")
    entry = run_workflow(server, graph, timeout, started)
    return entry is not None and keep_saved_video(server, graph, entry)


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
        entry = run_workflow(server, graph, args.timeout, started)
        if entry is None:
            return 1
        succeeded = print_results(graph, entry)
        if not succeeded:
            print("error: a retriever produced no ranking", file=sys.stderr)
            return 1
        if not args.skip_pos:
            succeeded = run_pos(server, args.timeout) and run_search_then_tune(server, args.timeout)
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
