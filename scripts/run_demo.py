"""The demo: a real ComfyUI server with this pack, the sample motion index built in it, and the bundled
Search-T2V retrieval workflow run through POST /prompt; prints the ranked results from /history. Then the toy
world (DESIGN.md "The toy world"): a small ModelScope-family model trained here on coloured shapes in known
motions (sample_data/models/searchpriors-toy-t2v, 64x64, 8 frames) and the world's 288-clip library indexed by
Motion Index Builder. For one held-out prompt (a shape and motion the model never saw together in training) it
runs base sampling, POS (workflows/api/pos_modelscope.json: the retrieved world clip DDIM-inverted and mixed
into the start noise) and search-then-tune (workflows/api/search_then_tune.json: keyframes, a VMC motion LoRA
tuned on the clip, sampling), then reuses the saved LoRA on another prompt (workflows/api/motion_lora_apply.json).
Each video is saved to out/ and read back by the toy world's probe (distill/toy_probe.py: colour, shape,
motion); out/toy_world_strip.png shows base | POS | tuned frame by frame. The bundled workflows keep their
defaults for the real ModelScope model; the demo sets the toy model's folder, size and steps at load time.
For real videos put text-to-video-ms-1.7b or zeroscope_v2_576w into models/diffusers/ (README).

    python scripts/run_demo.py [--via workflow|cli] [--prompt TEXT] [--toy-prompt TEXT] [--keep]

Run it with the virtual environment that scripts/setup_env.sh made (`make run` does both). Exits 0 when
every retriever in the workflow produced a ranking and every toy-world workflow saved its video, 1 otherwise
(the server log's tail is printed and its base directory kept).
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
    parser.add_argument("--toy-prompt", default=harness.TOY_PROMPT,
                        help=f"the toy world prompt for base, POS and tuned (default {harness.TOY_PROMPT!r})")
    parser.add_argument("--lora-prompt", default=harness.TOY_LORA_PROMPT,
                        help=f"the prompt the saved motion LoRA is reused on (default {harness.TOY_LORA_PROMPT!r})")
    parser.add_argument("--steps", type=int, default=harness.TOY_SETTINGS["steps"], help="DDIM sampling steps")
    parser.add_argument("--tune-steps", type=int, default=harness.TOY_SETTINGS["tune_steps"], help="VMC tuning steps")
    parser.add_argument("--strip", type=Path, default=REPO / "out" / "toy_world_strip.png",
                        help="where the base | POS | tuned strip PNG goes (default out/toy_world_strip.png)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the server (default 1: the toy model's small ops run faster so)")
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


load_by_path = harness.load_by_path   # a module of the pack by file path (the root never goes on sys.path)


def asked_for(prompt: str) -> tuple[str, str, str]:
    """(colour, shape, motion) a toy-world prompt asks for ("?" where it names none of the world's)."""
    world = load_by_path("searchpriors_toy_world", REPO / "distill" / "toy_world.py")
    text = f" {prompt.lower()} "
    found = [(m, p) for m, phrases in world.MOTION_PHRASES.items() for p in phrases if p in text]
    motion = found[0][0] if found else "?"
    if found:
        text = text.replace(found[0][1], " ")   # "moves in a circle" names no shape
    colour = next((c for c in world.COLOURS if f" {c} " in text), "?")
    shape = next((s for s in world.SHAPES if f" {s} " in text), "?")
    return colour, shape, motion


def probe_label(video: Path) -> tuple[str, str, str]:
    """(colour, shape, motion) that distill/toy_probe.py reads in an mp4 of the toy world."""
    probe = load_by_path("searchpriors_toy_probe", REPO / "distill" / "toy_probe.py")
    return probe.probe(probe.read_video_file(video, size=harness.TOY_SETTINGS["size"])).label


def probe_reading(video: Path, asked: tuple[str, str, str]) -> str:
    """What distill/toy_probe.py reads in a saved mp4 (colour, shape, motion), against what was asked."""
    label = probe_label(video)
    parts = [f"{part} {got} ({'ok' if got == want else f'asked {want}'})"
             for part, got, want in zip(("colour", "shape", "motion"), label, asked)]
    return ", ".join(parts)


class ToyDemo:
    """The toy world through the bundled workflows: base sampling, POS, search-then-tune, the LoRA reused."""

    def __init__(self, server, args):
        self.server, self.args = server, args
        self.settings = {"steps": args.steps, "tune_steps": args.tune_steps}
        self.videos: dict[str, Path] = {}      # row label -> the kept mp4
        self.readings: dict[str, str] = {}
        self.reference_motion: dict[str, str] = {}   # row label -> the motion of the clip it retrieved

    def prepare(self) -> None:
        started = step(f"linking the trained toy model (sample_data/models/{harness.TOY_T2V_FOLDER}) into "
                       f"models/diffusers/, a tiny random GroundingDINO into models/grounding-dino/")
        harness.install_toy_t2v(self.server)
        harness.install_tiny_grounding_dino(self.server)
        done(started)
        started = step("building the toy world's motion index over its 288 clips (sample_data/toy_world, "
                       f"Motion Index Builder -> {harness.TOY_WORLD_INDEX_NAME})")
        harness.build_toy_world_index(self.server, timeout=self.args.timeout)
        done(started)

    def run(self, label: str, graph: dict, what: str, asked: tuple[str, str, str]) -> dict | None:
        started = step(f"{label}: {what}")
        entry = run_workflow(self.server, graph, self.args.timeout, started)
        if entry is None:
            return None
        kept = keep_saved_video(self.server, graph, entry, f"toy_{label.lower().replace(' ', '_')}")
        if kept is None:
            return None
        self.videos[label] = kept
        self.readings[label] = probe_reading(kept, asked)
        print(f"    probe reads: {self.readings[label]}", flush=True)
        return entry

    def print_reference(self, label: str, report: str, asked: tuple[str, str, str]) -> None:
        """The probe's reading of the retrieved world clip a workflow used (named in its report)."""
        import re

        found = re.search(r"\btoy\d{5}\b", report)
        path = (self.server.input_dir / harness.TOY_WORLD_INPUT_FOLDER / "videos" / f"{found.group(0)}.mp4"
                if found else None)
        if path is None or not path.is_file():
            return
        self.reference_motion[label] = probe_label(path)[2]
        reading = probe_reading(path, asked)
        self.readings[f"{label} reference"] = f"{reading} [{path.name}]"
        print(f"    the retrieved reference clip {path.name}: probe reads {reading}", flush=True)

    def main(self) -> bool:
        self.prepare()
        prompt, s = self.args.toy_prompt, {**harness.TOY_SETTINGS, **self.settings}
        asked = asked_for(prompt)
        size = f"{s['frames']} frames of {s['size']}x{s['size']}, {s['steps']} DDIM steps, cfg {s['cfg']}"
        world = load_by_path("searchpriors_toy_world", REPO / "distill" / "toy_world.py")
        held_out = (asked[1], asked[2]) in world.HELD_OUT
        print(f"\nToy world prompt: {prompt!r} (asks for colour {asked[0]}, shape {asked[1]}, motion {asked[2]}"
              + ("; a held-out pair: the model never saw this shape with this motion in training)" if held_out
                 else ")"), flush=True)
        pos = harness.toy_world_graph(harness.load_json(harness.POS_MODELSCOPE_WORKFLOW), prompt, **self.settings)
        if self.run("base", harness.base_sampling_graph(pos), f"plain sampling, {size}", asked) is None:
            return False
        entry = self.run("POS", pos, f"{harness.POS_MODELSCOPE_WORKFLOW.name}: the retrieved world clip inverted "
                                     f"and mixed at eta {s['eta']}, {size}", asked)
        if entry is None:
            return False
        texts = print_reports(pos, entry, ("Retrieval table", "Reference frames info", "Inversion report"))
        self.print_reference("POS", texts.get("Reference frames info", ""), asked)
        tune = harness.toy_world_graph(harness.load_json(harness.SEARCH_THEN_TUNE_WORKFLOW), prompt, **self.settings)
        entry = self.run("tuned", tune, f"{harness.SEARCH_THEN_TUNE_WORKFLOW.name}: VMC motion LoRA on the retrieved "
                                        f"clip ({s['tune_steps']} steps), then sampling, {size}", asked)
        if entry is None:
            return False
        texts = print_reports(tune, entry, ("Segment", "VMC report", "Saved motion LoRA"))
        self.print_reference("tuned", texts.get("Segment", ""), asked)
        lora_name = texts.get("Saved motion LoRA", "").strip()
        if not lora_name:
            print("error: search_then_tune reported no saved motion LoRA", file=sys.stderr)
            return False
        new_prompt = self.args.lora_prompt
        apply = harness.toy_world_graph(harness.load_json(harness.MOTION_LORA_APPLY_WORKFLOW), new_prompt,
                                        lora_name=lora_name, **self.settings)
        if self.run("LoRA reused", apply, f"{harness.MOTION_LORA_APPLY_WORKFLOW.name}: {lora_name} on "
                                          f"{new_prompt!r}, {size}", asked_for(new_prompt)) is None:
            return False
        print(f"\n--- what the probe (distill/toy_probe.py) reads in each video, {prompt!r} ---")
        for label, reading in self.readings.items():
            extra = f" [prompt {new_prompt!r}]" if label == "LoRA reused" else ""
            print(f"{label:>15}: {reading}{extra}")
        strip = load_by_path("searchpriors_make_toy_strip", REPO / "scripts" / "make_toy_strip.py")
        rows = [(label, self.videos[label]) for label in ("base", "POS", "tuned")]
        title = f"\"{prompt}\"{' (a held-out pair)' if held_out else ''}, {s['steps']} DDIM steps, seed 42"
        if "POS" in self.reference_motion:
            title += f"; the retrieved clip moves {self.reference_motion['POS']}"
        out = strip.write_strip(rows, self.args.strip, title=title)
        print(f"\nStrip (base | POS | tuned, {s['frames']} frames each): {out}")
        return True


def print_reports(graph: dict, entry: dict, titles: tuple[str, ...]) -> dict[str, str]:
    """Prints the first lines of the graph's Preview as Text nodes with these titles; their texts by title."""
    texts = {}
    for node_id, node in graph.items():
        if node["class_type"] == "PreviewAny" and node_title(graph, node_id) in titles:
            text = "\n".join(harness.history_texts(entry, node_id)).rstrip()
            texts[node_title(graph, node_id)] = text
            print(f"\n--- {node_title(graph, node_id)} ---\n" + "\n".join(text.splitlines()[:12]))
    return texts


def keep_saved_video(server, graph: dict, entry: dict, name: str) -> Path | None:
    """Copies the video the graph's Save Video node wrote out of the server's throw-away base directory to
    out/<name>.mp4."""
    save = next(k for k, v in graph.items() if v["class_type"] == "SaveVideo")
    files = entry["outputs"].get(save, {}).get("images", [])
    if len(files) != 1:
        print(f"error: Save Video (node {save}) saved {len(files)} files", file=sys.stderr)
        return None
    kept = REPO / "out" / f"{name}.mp4"
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(server.output_dir / files[0].get("subfolder", "") / files[0]["filename"], kept)
    print(f"    saved video: {kept.relative_to(REPO)}", flush=True)
    return kept


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = str(args.threads)
    server = harness.ComfyServer(env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
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
            succeeded = ToyDemo(server, args).main()
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
