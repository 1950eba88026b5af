"""PromptAtomizer on benchmark-style prompts: motion recall, batch aborts, batch throughput, latency.

Prompts: ``tests/data/benchmark_style_prompts.tsv`` (320 prompts written for this project in the style of
public text-to-video benchmark lists, each labelled with its motion lemma(s) or '-') and the 10 prompts of
``../shared/data/prompts/search_t2v_prompts.txt`` (labels by line number in
``tests/data/search_t2v_prompts_labels.tsv``; the prompts stay in ../shared/data).

Reported:

- motion recall: among prompts labelled with a motion, the share whose atomized units hold every labelled
  lemma (a unit's motion, first word: "take off" counts as "take"); the misses are listed. Also the share
  of '-' prompts that got a motion anyway. Measured for this code and, with ``--before DIR`` (a folder
  holding a ``comfyui_searchpriors`` package of other code, e.g. a link to main's checkout), for that code
  in a subprocess.
- batch aborts: ``searchpriors atomize --queries FILE --json`` over every prompt plus a few bad lines;
  lines out must equal lines in (aborted = lines without an answer; 0 wanted). For ``--before``: the
  prompts that its ``atomize`` refuses, each of which stopped its batch (that code had no per-line errors).
- batch throughput: the ``--queries`` path (``cli.main(["atomize", "--queries", F, "--json"])``, output to
  a null sink) against the bound, spaCy's ``nlp.pipe`` over the same prompts plus the pack's batched
  ``embedding.encode`` of them, each on its own; interleaved rounds in one process (this machine's speed
  drifts), the ratio per round, median over rounds. The batch set: the labelled prompts, then MSR-VTT
  held-out query captions up to ``--n`` prompts (benchmark lists run to thousands of lines).
- p50 latency of one prompt (``embedding.atomize``, models loaded; the paper's 10 prompts and held-out
  MSR-VTT captions, 100 in all, each timed 3 times): this code and ``--before``'s, each in a fresh
  subprocess, alternated (B A B A B A), the median of each side's p50s. One torch thread throughout.

Usage: ``python benchmarks/bench_atomizer.py [--before DIR] [--n 2000] [--rounds 3] [--quick]``.
Results: ``bench_out/bench_atomizer.json``. Without ../shared/data the MSR-VTT filler and the paper prompts
are left out (the labelled prompts are in the repository).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

NAME = "bench_atomizer"
DATA = C.REPO / "tests" / "data"
LABELLED = DATA / "benchmark_style_prompts.tsv"
PAPER_LABELS = DATA / "search_t2v_prompts_labels.tsv"
BAD_LINES = ["Собака бежит по пляжу", "一只熊猫在埃菲尔铁塔前骑自行车", "a dog runs " * 400, "Ein Hund läuft schnell über die Straße"]


def read_tsv(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(line.split("\t"))
    return rows


def labelled_prompts() -> list[tuple[str, str, list[str]]]:
    """(source, prompt, motion lemmas) for every labelled prompt; lemmas empty for '-'."""
    out = [("benchmark_style", p, [] if lab.strip() == "-" else lab.strip().split("|")) for p, lab in read_tsv(LABELLED)]
    root = C.shared_data_dir()
    if (root / C.PROMPTS_REL).is_file():
        lines = (root / C.PROMPTS_REL).read_text(encoding="utf-8").splitlines()
        for number, lab in read_tsv(PAPER_LABELS):
            out.append(("search_t2v_paper", lines[int(number) - 1].strip(),
                        [] if lab.strip() == "-" else lab.strip().split("|")))
    return out


# ------------------------------------------------------------------------------------------ worker
# Runs in a subprocess against whichever comfyui_searchpriors its PYTHONPATH holds (this code or --before's).

def worker(prompts_file: str, latency_file: str, latency_n: int, repeats: int) -> dict:
    _set_threads()
    from comfyui_searchpriors.retrieval.embedding import atomize

    nlp, model, _ = C.load_models()
    rows = json.loads(Path(prompts_file).read_text(encoding="utf-8"))
    motions, refused = [], []
    for prompt, _ in rows:
        try:
            a = atomize(prompt, nlp, model)
            motions.append(sorted({u.motion.split()[0] for u in a.units if u.motion}))
        except Exception as exc:  # on code without per-line errors this stopped the whole batch
            motions.append(None)
            refused.append(f"{prompt[:80]}: {str(exc)[:90]}")
    timed = [p for p, _ in json.loads(Path(latency_file).read_text(encoding="utf-8"))][:latency_n]
    for p in timed[:5]:  # warm-up
        _safe(atomize, p, nlp, model)
    per_prompt = []
    for p in timed:
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ok = _safe(atomize, p, nlp, model)
            samples.append((time.perf_counter() - t0) * 1000)
        if ok:
            per_prompt.append(statistics.median(samples))
    return {"motions": motions, "refused": refused, "latency_ms": C.percentiles(per_prompt)}


def _set_threads() -> None:
    """One torch thread everywhere (both sides, bound and batch alike): on this shared 2-core machine two
    threads made a MiniLM call up to 10x slower under load, which would drown every comparison."""
    import torch

    torch.set_num_threads(int(os.environ.get("SEARCHPRIORS_BENCH_THREADS", "1")))


def _safe(fn, *args) -> bool:
    try:
        fn(*args)
        return True
    except Exception:
        return False


def run_worker(pythonpath: str, prompts_file: str, latency_file: str, latency_n: int, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    out = subprocess.run([sys.executable, __file__, "--worker", prompts_file, latency_file, str(latency_n), str(repeats)],
                         capture_output=True, text=True, env=env, cwd=str(C.REPO / "benchmarks"))
    if out.returncode != 0:
        raise SystemExit(f"worker for {pythonpath} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def recall(rows, motions) -> dict:
    with_motion = hits = no_motion = spurious = 0
    misses, spurious_list = [], []
    for (source, prompt, labels), got in zip(rows, motions):
        found = set(got or [])
        if labels:
            with_motion += 1
            if got is not None and all(x in found for x in labels):
                hits += 1
            else:
                misses.append({"source": source, "prompt": prompt, "labels": labels,
                               "got": "refused" if got is None else sorted(found)})
        else:
            no_motion += 1
            if found:
                spurious += 1
                spurious_list.append({"prompt": prompt, "got": sorted(found)})
    return {"with_motion": with_motion, "hits": hits, "recall": hits / max(1, with_motion), "misses": misses,
            "no_motion": no_motion, "spurious": spurious, "spurious_list": spurious_list}


# ------------------------------------------------------------------------------------------ throughput

def batch_set(rows, n: int) -> list[str]:
    prompts = [p for _, p, _ in rows]
    root = C.shared_data_dir()
    if len(prompts) < n and (root / C.MSRVTT_REL).is_file():
        captions = C.load_msrvtt(root / C.MSRVTT_REL)
        queries, _ = C.heldout_split(captions)
        seen = set(prompts)
        for q in queries:
            if len(prompts) >= n:
                break
            if q.entry.caption not in seen:
                seen.add(q.entry.caption)
                prompts.append(q.entry.caption)
    return prompts[:n]


def bench_throughput(prompts: list[str], nlp, model, rounds: int, log) -> dict:
    from comfyui_searchpriors.retrieval.cli import main as cli_main
    from comfyui_searchpriors.retrieval.embedding import encode

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.write("\n".join(prompts) + "\n")
        path = fh.name

    def queries_path():
        sink, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(err):
            code = cli_main(["atomize", "--queries", path, "--json"])
        return code, sink.getvalue().count("\n")

    def parse_alone():
        for _ in nlp.pipe(prompts):
            pass

    def encode_alone():
        encode(model, prompts)

    try:
        queries_path(), parse_alone(), encode_alone()  # warm-up
        timings = {"queries": [], "parse": [], "encode": []}
        lines_out = None
        for r in range(rounds):
            for key, fn in (("parse", parse_alone), ("encode", encode_alone), ("queries", queries_path)):
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                out = fn()
                seconds = time.perf_counter() - t0
                timings[key].append({"seconds": seconds, "loadavg_1m_before": load})
                if key == "queries":
                    lines_out = out
                log(f"  round {r + 1} {key}: {len(prompts)} prompts in {seconds:.2f} s (load {load:.2f})")
    finally:
        os.unlink(path)
    ratios = []
    for k in range(rounds):
        bound = timings["parse"][k]["seconds"] + timings["encode"][k]["seconds"]
        ratios.append(bound / timings["queries"][k]["seconds"])
    med = {key: statistics.median(t["seconds"] for t in v) for key, v in timings.items()}
    bound_s = med["parse"] + med["encode"]
    return {"n": len(prompts), "rounds": timings, "ratio_rounds": ratios, "ratio": statistics.median(ratios),
            "queries_s": med["queries"], "parse_s": med["parse"], "encode_s": med["encode"], "bound_s": bound_s,
            "queries_per_s": len(prompts) / med["queries"], "bound_per_s": len(prompts) / bound_s,
            "parse_per_s": len(prompts) / med["parse"], "encode_per_s": len(prompts) / med["encode"],
            "exit_code": lines_out[0] if lines_out else None, "lines_out": lines_out[1] if lines_out else None}


def batch_aborts(rows, log) -> dict:
    """Every labelled prompt plus bad lines through ``atomize --queries``: lines out == lines in?"""
    from comfyui_searchpriors.retrieval.cli import main as cli_main

    lines = [p for _, p, _ in rows]
    step = max(1, len(lines) // (len(BAD_LINES) + 1))
    for k, bad in enumerate(BAD_LINES):
        lines.insert((k + 1) * step + k, bad)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
        path = fh.name
    sink, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(err):
            code = cli_main(["atomize", "--queries", path, "--json"])
    finally:
        os.unlink(path)
    out = [json.loads(x) for x in sink.getvalue().splitlines()]
    errors = [i for i, o in enumerate(out) if "error" in o]
    in_place = all(("error" in out[i]) == (lines[i] in BAD_LINES) for i in range(min(len(out), len(lines))))
    res = {"lines_in": len(lines), "lines_out": len(out), "aborted": len(lines) - len(out), "error_lines": len(errors),
           "bad_lines_given": len(BAD_LINES), "errors_in_place": in_place, "exit_code": code,
           "stderr": err.getvalue().strip().splitlines()[-1:]}
    log(f"batch: {res['lines_in']} lines in ({len(BAD_LINES)} bad), {res['lines_out']} out, {res['error_lines']} "
        f"error lines (in place: {in_place}), exit {code}; {res['stderr']}")
    return res


# ------------------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default=None, help="folder with another comfyui_searchpriors (e.g. main's), for before/after")
    ap.add_argument("--n", type=int, default=2000, help="prompts in the throughput batch (default 2000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-n", type=int, default=100, help="prompts timed one by one (default 100)")
    ap.add_argument("--latency-runs", type=int, default=3, help="fresh processes per side, alternated (default 3)")
    ap.add_argument("--quick", action="store_true", help="500-prompt batch, 1 round, 30 latency prompts")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the batch throughput table (--n, --rounds); no recall, latency or result file")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], int(args.worker[2]), int(args.worker[3]))))
        return 0
    if args.quick:
        args.n, args.rounds, args.latency_n = 500, 1, 30
    _set_threads()
    if args.throughput_only:
        return _throughput_only(args)
    wall0 = time.perf_counter()
    env = C.environment()
    rows = labelled_prompts()
    print(f"{len(rows)} labelled prompts ({sum(1 for r in rows if r[2])} with a motion)")
    here = os.environ.get("PYTHONPATH", "")

    # the latency set: the paper's prompts, then held-out MSR-VTT captions (as in bench_retrieval_speed)
    latency_rows = [r for r in rows if r[0] == "search_t2v_paper"]
    latency_rows += [("msrvtt", p, []) for p in batch_set([], args.latency_n)]
    latency_rows = (latency_rows + rows)[:args.latency_n]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
        json.dump([[p, s] for s, p, _ in rows], fh)
        rows_file = fh.name
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
        json.dump([[p, s] for s, p, _ in latency_rows], fh)
        latency_file = fh.name
    sides = {"after": here}
    if args.before:
        sides = {"before": os.path.abspath(args.before), "after": here}
    results: dict = {k: {"latency_runs": []} for k in sides}
    try:
        for rep in range(args.latency_runs if args.before else 1):  # B A B A ...: the machine drifts
            for side, pp in sides.items():
                r = run_worker(pp, rows_file, latency_file, args.latency_n, 3)
                if rep == 0:
                    results[side]["recall"] = recall(rows, r["motions"])
                    results[side]["refused"] = r["refused"]
                results[side]["latency_runs"].append(r["latency_ms"])
                print(f"{side}: recall {results[side]['recall']['recall']:.3f}, p50 {r['latency_ms'].get('p50', 0):.1f} ms "
                      f"(run {rep + 1})")
    finally:
        os.unlink(rows_file)
        os.unlink(latency_file)
    for side in results:
        p50s = [x["p50"] for x in results[side]["latency_runs"] if "p50" in x]
        results[side]["latency_p50_ms"] = statistics.median(p50s) if p50s else None

    nlp, model, _ = C.load_models()
    aborts = batch_aborts(rows, print)
    prompts = batch_set(rows, args.n)
    print(f"throughput: {len(prompts)} prompts, {args.rounds} interleaved rounds")
    thr = bench_throughput(prompts, nlp, model, args.rounds, print)

    after = results["after"]
    rec = after["recall"]
    table_rows = [["motion recall (labelled prompts with a motion)", f"{rec['hits']}/{rec['with_motion']} = {rec['recall']:.3f}",
                   _before(results, lambda b: f"{b['recall']['hits']}/{b['recall']['with_motion']} = {b['recall']['recall']:.3f}")],
                  ["'-' prompts given a motion anyway", f"{rec['spurious']}/{rec['no_motion']}",
                   _before(results, lambda b: f"{b['recall']['spurious']}/{b['recall']['no_motion']}")],
                  ["prompts refused (each aborted a batch before)", len(after["refused"]),
                   _before(results, lambda b: len(b["refused"]))],
                  ["batch aborts (--queries, with 4 bad lines)", aborts["aborted"], ""],
                  ["p50 latency, one prompt (ms)", f"{after['latency_p50_ms']:.1f}",
                   _before(results, lambda b: f"{b['latency_p50_ms']:.1f}")]]
    print()
    print(C.table(["measure", "this code", "before"], table_rows, title="Atomizer on benchmark-style prompts"))
    print()
    print(_throughput_table(thr, args.rounds))
    print()
    print("misses:" if rec["misses"] else "misses: none")
    for m in rec["misses"]:
        print(f"  [{m['source']}] {m['prompt']!r}: labelled {m['labels']}, got {m['got']}")
    for s in rec["spurious_list"]:
        print(f"  motion on a '-' prompt: {s['prompt']!r} -> {s['got']}")
    wall = time.perf_counter() - wall0
    before_txt = ""
    if "before" in results:
        b = results["before"]
        before_txt = (f" (before {b['recall']['recall']:.3f}, {len(b['refused'])} refused)"
                      f"; p50 {after['latency_p50_ms']:.1f} ms vs {b['latency_p50_ms']:.1f} ms before")
    else:
        before_txt = f"; p50 {after['latency_p50_ms']:.1f} ms"
    summary = (f"SUMMARY atomizer: motion recall {rec['recall']:.3f} ({rec['hits']}/{rec['with_motion']}; target >= 0.97: "
               f"{'met' if rec['recall'] >= 0.97 else 'NOT met'}){before_txt}; batch aborts {aborts['aborted']}; "
               f"--queries {thr['queries_per_s']:.0f} prompts/s = {thr['ratio']:.2f}x the bound "
               f"({thr['bound_per_s']:.0f}/s; target >= 0.8: {'met' if thr['ratio'] >= 0.8 else 'NOT met'}); wall {wall:.0f} s")
    print(summary)
    path = C.write_result(NAME, {"environment": env, "labelled": len(rows), "results": results, "batch_aborts": aborts,
                                 "throughput": thr, "summary": summary, "wall_s": wall,
                                 "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, quick=args.quick)
    print(f"wrote {path}")
    return 0


def _throughput_table(thr: dict, rounds: int) -> str:
    return C.table(["way", "median s", "prompts/s", "vs bound"], [
        ["nlp.pipe alone", thr["parse_s"], thr["parse_per_s"], ""],
        ["pack's batched encode alone", thr["encode_s"], thr["encode_per_s"], ""],
        ["bound (parse + encode)", thr["bound_s"], thr["bound_per_s"], 1.0],
        ["atomize --queries --json", thr["queries_s"], thr["queries_per_s"], thr["ratio"]],
    ], title=f"Batch throughput, {thr['n']} prompts, median of {rounds} rounds (ratio per round: "
             f"{', '.join(f'{x:.2f}' for x in thr['ratio_rounds'])})")


def _throughput_only(args) -> int:
    nlp, model, _ = C.load_models()
    prompts = batch_set(labelled_prompts(), args.n)
    print(f"throughput: {len(prompts)} prompts, {args.rounds} interleaved rounds")
    thr = bench_throughput(prompts, nlp, model, args.rounds, print)
    print(_throughput_table(thr, args.rounds))
    print(f"SUMMARY atomizer throughput: --queries {thr['queries_per_s']:.0f} prompts/s = {thr['ratio']:.2f}x the "
          f"bound ({thr['bound_per_s']:.0f}/s; target >= 0.8: {'met' if thr['ratio'] >= 0.8 else 'NOT met'})")
    return 0


def _before(results, fn):
    return fn(results["before"]) if "before" in results else ""


if __name__ == "__main__":
    sys.exit(main())
