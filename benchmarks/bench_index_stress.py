"""Stress run of the motion index: N writers and M readers on one index for a bounded time, with random
SIGKILLs of writers; at the end every caption of every successful build must be in the index exactly once
and no reader may have seen an error.

    python benchmarks/bench_index_stress.py [--seconds 120] [--writers 3] [--readers 2] [--batch 40]

Writers (2-4) take turns between the two ways a user builds: the ``searchpriors index build`` CLI (one
process per build, models loaded each time) and an "in-process" writer (one long-lived process that loads
the models once, as a ComfyUI server does, and forks a child per job that calls ``build_index``; kills hit
that child, so a kill costs the build and not the model loading). Every job is a
JSONL library of ``--batch`` new MSR-VTT captions (unique video ids) plus ``--shared`` entries drawn from a
small common pool, so concurrent builds often add the same (video id, caption): those must end up in the
index once. Segments are small (``--segment-size``) so that each build writes several.

Every child runs with one torch/OpenMP thread (many processes share few cores). Readers (M, no torch: the
prompt is atomized once by the CLI and handed to them) loop: ``load_index``, read
every row's entry, check that no (video id, caption) appears twice and that the count never goes down, run
a ``search_t2v`` search. Any exception is a reader error.

A share of the in-process builds (``--fault-rate``) end themselves with ``os._exit`` at a random write step
(``SEARCHPRIORS_INDEX_FAULT``), so that some deaths land inside segment, staging and manifest writes, not
only while embedding (where most of a build's time goes). A killer sends SIGKILL to a random writer that is
building (after ``--kill-min``..``--kill-max`` seconds);
the killed job goes back to the queue (its staged segments are taken over by the next build), and the index
is loaded and checked right after each kill ("kills survived"). After ``--seconds`` no new job starts,
builds in flight finish, and one last CLI build runs (it takes over what killed builds left and removes
orphans). Then the index is checked against the jobs that succeeded.

Prints writes, reads, kills survived, captions lost (must be 0), a per-writer table and a ``SUMMARY`` line;
writes ``bench_out/bench_index_stress.json``. Needs ../shared/data (MSR-VTT captions), else exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import _common  # the script's own folder is on sys.path

PROMPT = "a man rides a horse on the beach"
CLI = [sys.executable, "-m", "comfyui_searchpriors.retrieval.cli"]


# ----------------------------------------------------------------------------------------------- workers

def writer_worker(index: str, segment_size: int) -> None:
    """In-process writer: a process that holds the models (as a ComfyUI server does) and forks one child per
    job that calls ``build_index``; the killer kills that child, so a kill costs the build, not the models.
    Job paths come on stdin; events go to stdout, one line each."""
    from comfyui_searchpriors.retrieval.index import build_index
    from comfyui_searchpriors.retrieval.library import read_library
    from comfyui_searchpriors.retrieval.models import load_sentence_model, load_spacy

    nlp, encoder = load_spacy(_common.SPACY_MODEL), load_sentence_model(_common.SENTENCE_MODEL)
    print("ready", flush=True)
    from comfyui_searchpriors.retrieval.index_files import FAULT_ENV, FAULT_EXIT

    for line in sys.stdin:
        job, _, fault = line.strip().partition("\t")
        if not job:
            continue
        entries, _ = read_library(job)
        pid = os.fork()
        if pid == 0:  # the build
            code = 0
            if fault:  # die at this write step, as a power cut would
                os.environ[FAULT_ENV] = fault
            try:
                print(f"start {job} {os.getpid()}", flush=True)
                t0 = time.perf_counter()
                report = build_index(index, entries, nlp, encoder, segment_size=segment_size, parse_helper=False,
                                     lock_timeout=600)
                info = {"added": report.added, "dup": report.concurrent_duplicates, "resumed": report.resumed,
                        "orphans": len(report.orphans_removed), "s": time.perf_counter() - t0,
                        "lock_waited": report.lock_waited, "lock_held": report.lock_held}
                print(f"ok {job} {json.dumps(info)}", flush=True)
            except BaseException as exc:  # noqa: BLE001 - reported to the coordinator
                print(f"fail {job} {type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            print(f"killed {job} {os.WTERMSIG(status)}", flush=True)
        elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == FAULT_EXIT:
            print(f"died {job} {fault}", flush=True)


def reader_worker(index: str, prompt_json: str, stop: str, out: str, pause: float) -> None:
    import numpy as np

    from comfyui_searchpriors.retrieval.atomizer import Unit
    from comfyui_searchpriors.retrieval.embedding import AtomizedPrompt
    from comfyui_searchpriors.retrieval.index import load_index
    from comfyui_searchpriors.retrieval.search import SearchParams, search

    p = json.loads(Path(prompt_json).read_text())
    units = [Unit(u["motion"], u["actor"], u["recipient"]) for u in p["units"]]
    atomized = AtomizedPrompt(text=p["prompt"], units=units,
                              core_index=p["core"], v_total=np.array(p["v_total"], np.float32),
                              unit_vectors=np.array(p["unit_vectors"], np.float32),
                              sentence_model=p["sentence_model"], spacy_model=p["spacy_model"], fallback=p["fallback"])
    params = SearchParams(mode="search_t2v", top_k=5).validate()
    reads, errors, last, seconds = 0, [], -1, []
    while not os.path.exists(stop):
        t0 = time.perf_counter()
        try:
            loaded = load_index(index)
            keys = [(e.video_id, e.caption) for e in loaded.entries(range(loaded.count))]
            if len(set(keys)) != len(keys):
                raise AssertionError(f"{len(keys) - len(set(keys))} captions twice in an index of {len(keys)}")
            if loaded.count < last:
                raise AssertionError(f"the count went down from {last} to {loaded.count}")
            last = loaded.count
            search(loaded, atomized, params)
            reads += 1
            seconds.append(time.perf_counter() - t0)
            time.sleep(pause)  # leave the writers some CPU on a small machine
        except Exception as exc:  # noqa: BLE001 - what the benchmark counts
            errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)
    Path(out).write_text(json.dumps({"reads": reads, "errors": errors, "last_count": last,
                                     "median_read_s": float(np.median(seconds)) if seconds else None}))


# ----------------------------------------------------------------------------------------------- coordinator

class Writer:
    def __init__(self, wid: int, kind: str):
        self.wid, self.kind = wid, kind
        self.proc: subprocess.Popen | None = None
        self.job: str | None = None
        self.building = False
        self.ready = kind == "cli"
        self.events: deque = deque()
        self.ok = self.killed = self.failed = self.added = self.dup = self.orphans = 0
        self.build_seconds: list[float] = []
        self.lock_held: list[float] = []     # in-process builds report how long they held the writers' lock
        self.lock_waited: list[float] = []
        self.job_started = 0.0
        self.child = 0          # in-process writer: pid of the build child
        self.kill_pending = False
        self.died = 0           # in-process builds that ended themselves at a write step (--fault-rate)
        self.failures: list[str] = []

    def pump(self, stream, tag):
        for line in stream:
            self.events.append((tag, line.rstrip("\n")))


CHILDREN: list[subprocess.Popen] = []   # killed on the way out, whatever happens


def start_process(cmd, env, stdin=False) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, bufsize=1)
    CHILDREN.append(proc)
    return proc


def attach(writer: Writer, proc: subprocess.Popen) -> None:
    writer.proc = proc
    for stream, tag in ((proc.stdout, "out"), (proc.stderr, "err")):
        threading.Thread(target=writer.pump, args=(stream, tag), daemon=True).start()


def check_index(folder: str) -> tuple[list, str | None]:
    from comfyui_searchpriors.retrieval.index import load_index

    try:
        index = load_index(folder)
        keys = [(e.video_id, e.caption) for e in index.entries(range(index.count))]
    except Exception as exc:  # noqa: BLE001
        return [], f"{type(exc).__name__}: {exc}"
    if len(keys) != len(set(keys)):
        return keys, f"{len(keys) - len(set(keys))} captions twice"
    return keys, None


def leftovers(folder: str) -> list[str]:
    from comfyui_searchpriors.retrieval.index import read_manifest

    listed = {s["name"] for s in read_manifest(folder)["segments"]}
    return sorted(n for n in os.listdir(folder) if n not in listed and n not in ("manifest.json", ".lock"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="how long new jobs are started (default 120)")
    ap.add_argument("--writers", type=int, default=3, choices=(2, 3, 4))
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=24, help="new captions per job")
    ap.add_argument("--shared", type=int, default=6, help="entries per job drawn from a pool shared by all jobs")
    ap.add_argument("--segment-size", type=int, default=8)
    ap.add_argument("--kill-min", type=float, default=4.0, help="seconds between kills: at least")
    ap.add_argument("--kill-max", type=float, default=10.0, help="seconds between kills: at most")
    ap.add_argument("--fault-rate", type=float, default=0.15,
                    help="share of in-process builds that end themselves (os._exit) at a random write step")
    ap.add_argument("--read-pause", type=float, default=0.2, help="seconds a reader sleeps between reads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for the index and jobs (default: a temporary one)")
    ap.add_argument("--worker", choices=("writer", "reader"), help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    ap.add_argument("--prompt-json", help=argparse.SUPPRESS)
    ap.add_argument("--stop", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "writer":
        writer_worker(args.index, args.segment_size)
        return 0
    if args.worker == "reader":
        reader_worker(args.index, args.prompt_json, args.stop, args.out, args.read_pause)
        return 0

    data = _common.require_shared_data(_common.MSRVTT_REL)
    rng = random.Random(args.seed)
    sentences = json.loads((data / _common.MSRVTT_REL).read_text())["sentences"]
    pairs = list(dict.fromkeys((s["video_id"], " ".join(s["caption"].split()))
                               for s in sentences if s["caption"].strip()))
    rng.shuffle(pairs)
    shared_pool = pairs[:300]
    fresh = iter(pairs[300:])
    work = Path(args.work or tempfile.mkdtemp(prefix="searchpriors-stress-"))
    if work.exists() and args.work:
        shutil.rmtree(work)
    (work / "jobs").mkdir(parents=True)
    index = str(work / "index")
    env = dict(os.environ)
    env.setdefault("SEARCHPRIORS_PARSE_HELPER", "0")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # many processes on few cores: one thread each
        env.setdefault(var, "1")

    from comfyui_searchpriors.retrieval.library import read_library

    job_keys: dict[str, set] = {}
    counter = [0]

    def new_job(n_new: int) -> str:
        counter[0] += 1
        rows = [next(fresh) for _ in range(n_new)] + rng.sample(shared_pool, min(args.shared, n_new))
        path = work / "jobs" / f"job-{counter[0]:04d}.jsonl"
        path.write_text("".join(json.dumps({"video_id": v, "video": f"{v}.mp4", "caption": c}) + "\n" for v, c in rows))
        job_keys[str(path)] = {e.key for e in read_library(str(path))[0]}
        return str(path)

    # in-process writers load their models (as a running ComfyUI has them loaded); meanwhile the CLI seeds the
    # index and atomizes the readers' prompt
    kinds = ["inproc", "cli", "inproc", "cli"][:args.writers]
    writers = [Writer(i, k) for i, k in enumerate(kinds)]

    def start_inproc(w: Writer) -> None:
        w.ready, w.events = False, deque()
        attach(w, start_process([sys.executable, __file__, "--worker", "writer", "--index", index,
                                 "--segment-size", str(args.segment_size)], env, stdin=True))

    for w in writers:
        if w.kind == "inproc":
            start_inproc(w)
    t_setup = time.perf_counter()
    seed_job = new_job(args.batch)
    seed = start_process(CLI + ["index", "build", "--library", seed_job, "--out", index, "--segment-size",
                                str(args.segment_size), "--parse-helper", "off"], env)
    prompt_json = work / "prompt.json"
    atom = subprocess.run(CLI + ["atomize", "--json", "--vectors", PROMPT], env=env, capture_output=True, text=True)
    if atom.returncode != 0:
        print(atom.stderr)
        return 1
    prompt_json.write_text(atom.stdout)
    seed_out, seed_err = seed.communicate()
    if seed.returncode != 0:
        print(seed_err)
        return 1
    succeeded: list[str] = [seed_job]
    for w in writers:
        while w.kind == "inproc" and not w.ready:
            while w.events:
                tag, line = w.events.popleft()
                w.ready = w.ready or (tag == "out" and line == "ready")
            if w.proc.poll() is not None:
                print(f"in-process writer {w.wid} did not start (exit {w.proc.returncode})")
                return 1
            time.sleep(0.05)
    print(f"set-up {time.perf_counter() - t_setup:.1f} s (seed index of {len(job_keys[seed_job])} captions)",
          flush=True)

    stop = str(work / "stop-readers")
    readers = [subprocess.Popen([sys.executable, __file__, "--worker", "reader", "--index", index, "--prompt-json",
                                 str(prompt_json), "--stop", stop, "--out", str(work / f"reader-{i}.json"),
                                 "--read-pause", str(args.read_pause)], env=env)
               for i in range(args.readers)]
    CHILDREN.extend(readers)
    queue: deque = deque()
    kills, deaths, kills_survived, survive_failures = 0, 0, 0, []
    from comfyui_searchpriors.retrieval.index_files import FAULT_STEPS
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    next_kill = t0 + rng.uniform(args.kill_min, args.kill_max)
    next_note = t0 + 15

    def finish(w: Writer, ok: bool, info: dict | None = None, why: str = "") -> None:
        if ok:
            w.ok += 1
            succeeded.append(w.job)
            if info:
                w.added += info.get("added", 0)
                w.dup += info.get("dup", 0)
                w.orphans += info.get("orphans", 0)
                if "lock_held" in info:
                    w.lock_held.append(info["lock_held"])
                    w.lock_waited.append(info["lock_waited"])
            w.build_seconds.append(time.monotonic() - w.job_started)
        else:
            w.failed += 1
            w.failures.append(why[-300:])
            queue.append(w.job)
        w.job, w.building = None, False

    while True:
        now = time.monotonic()
        accepting = now < deadline
        for w in writers:
            while w.events:
                tag, line = w.events.popleft()
                if w.kind == "cli" and tag == "err" and "indexing" in line:
                    w.building = True
                elif w.kind == "cli" and tag == "out" and " captions (" in line:
                    w.last_summary = line
                elif w.kind == "inproc" and tag == "out":
                    word, _, rest = line.partition(" ")
                    if word == "ready":
                        w.ready = True
                    elif word == "start":
                        w.building, w.child = True, int(rest.rsplit(" ", 1)[1])
                    elif word in ("killed", "died"):  # the build child, killed below / at a write step
                        if word == "died":
                            w.died += 1
                            deaths += 1
                            queue.append(w.job)
                        w.job, w.building, w.kill_pending = None, False, False
                        _, problem = check_index(index)
                        if problem is None:
                            kills_survived += 1
                        else:
                            survive_failures.append(problem)
                    elif word in ("ok", "fail"):
                        if w.kill_pending:  # it had finished before the kill landed: no kill after all
                            w.kill_pending, w.killed, kills = False, w.killed - 1, kills - 1
                            if w.job in queue:
                                queue.remove(w.job)
                        if word == "ok":
                            finish(w, True, json.loads(rest.split(" ", 1)[1]))
                        else:
                            finish(w, False, why=rest)
                elif tag == "err" and w.kind == "cli":
                    w.last_err = line
            if w.kind == "cli" and w.proc is not None and w.proc.poll() is not None:
                time.sleep(0.05)  # let the pumps drain
                rc = w.proc.returncode
                if rc == 0:
                    summary = getattr(w, "last_summary", "")
                    added = int(summary.split("(")[1].split(" added")[0]) if " added" in summary else 0
                    finish(w, True, {"added": added})
                elif rc == -signal.SIGKILL:
                    w.job, w.building = None, False
                else:
                    finish(w, False, why=f"rc {rc}: {getattr(w, 'last_err', '')}")
                w.proc = None
            if w.kind == "inproc" and w.proc is not None and w.proc.poll() is not None:
                if w.proc.returncode != -signal.SIGKILL:
                    w.failures.append(f"worker exited {w.proc.returncode}")
                if w.job:
                    queue.append(w.job)
                w.job, w.building, w.proc = None, False, None
                if accepting:
                    start_inproc(w)
            if accepting and w.job is None and (w.kind == "cli" or (w.proc is not None and w.ready)):
                w.job = queue.popleft() if queue else new_job(args.batch)
                w.job_started = time.monotonic()
                if w.kind == "cli":
                    w.last_summary = ""
                    attach(w, start_process(CLI + ["index", "build", "--library", w.job, "--out", index,
                                                   "--segment-size", str(args.segment_size), "--parse-helper", "off",
                                                   "--lock-timeout", "600"], env))
                else:
                    fault = ""
                    if rng.random() < args.fault_rate:
                        fault = f"{rng.choice(FAULT_STEPS)}:{rng.randint(1, 2)}"
                    w.proc.stdin.write(f"{w.job}\t{fault}\n")
                    w.proc.stdin.flush()
        if accepting and now >= next_kill:
            victims = [w for w in writers if w.building and w.proc is not None and w.proc.poll() is None]
            if victims:
                victim = rng.choice(victims)
                victim.killed += 1
                kills += 1
                queue.append(victim.job)  # to be built again: the next build takes over what it staged
                if victim.kind == "inproc":
                    try:
                        os.kill(victim.child, signal.SIGKILL)  # its worker reports "killed"; checked then
                    except ProcessLookupError:
                        pass
                    victim.building, victim.kill_pending = False, True
                else:
                    victim.proc.send_signal(signal.SIGKILL)
                    if victim.proc.wait() != -signal.SIGKILL:  # it had exited already: no kill after all
                        victim.killed, kills = victim.killed - 1, kills - 1
                        queue.pop()
                        next_kill = now + 0.2
                        continue
                    victim.proc = None
                    victim.job, victim.building = None, False
                    _, problem = check_index(index)
                    if problem is None:
                        kills_survived += 1
                    else:
                        survive_failures.append(problem)
                next_kill = time.monotonic() + rng.uniform(args.kill_min, args.kill_max)
            else:
                next_kill = now + 0.2
        if now >= next_note:
            print(f"  {now - t0:5.0f} s: {sum(w.ok for w in writers)} builds ok, {kills} kills, queue {len(queue)}",
                  flush=True)
            next_note = now + 15
        busy = [w for w in writers if w.job is not None]
        if not accepting and not busy:
            break
        if not accepting and now > deadline + 240:
            for w in busy:
                w.proc.kill()
            print("builds in flight did not finish in 240 s after the deadline; killed", flush=True)
            break
        time.sleep(0.02)
    for w in writers:
        if w.kind == "inproc" and w.proc is not None:
            w.proc.stdin.close()
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
    timed = time.monotonic() - t0

    # one last build: takes over what killed builds staged, removes orphans
    final_job = new_job(4)
    final = subprocess.run(CLI + ["index", "build", "--library", final_job, "--out", index, "--segment-size",
                                  str(args.segment_size), "--parse-helper", "off"], env=env, capture_output=True,
                           text=True)
    if final.returncode == 0:
        succeeded.append(final_job)
    Path(stop).touch()
    reader_results = []
    for i, r in enumerate(readers):
        r.wait(timeout=120)
        reader_results.append(json.loads((work / f"reader-{i}.json").read_text()))

    keys, problem = check_index(index)
    present = set(keys)
    required = set().union(*(job_keys[j] for j in succeeded))
    lost = required - present
    left = leftovers(index)
    reads = sum(r["reads"] for r in reader_results)
    reader_errors = [e for r in reader_results for e in r["errors"]]
    writes = sum(w.ok for w in writers)
    orphans = sum(w.orphans for w in writers)
    stops = kills + deaths

    def median(values):
        return f"{sorted(values)[len(values) // 2]:.2f}" if values else "-"

    rows = [[f"{w.wid} ({'CLI' if w.kind == 'cli' else 'in-process'})", w.ok, w.killed,
             w.died if w.kind == "inproc" else "-", w.failed, w.added, w.dup, w.orphans if w.kind == "inproc" else "-",
             median(w.build_seconds), median(w.lock_waited), f"{max(w.lock_held):.3f}" if w.lock_held else "-"]
            for w in writers]
    print(_common.table(["writer", "builds ok", "SIGKILLed", "died at a write step", "failed", "captions added",
                         "dup. dropped", "orphans removed", "median build s", "median lock wait s",
                         "max lock held s"], rows))
    print(f"writes (successful builds) {writes} + seed + final; reads {reads} by {args.readers} readers "
          f"(reader errors {len(reader_errors)}); kills {stops} ({kills} SIGKILL, {deaths} at a write step), "
          f"survived {kills_survived}; captions in index {len(keys)}, required {len(required)}, lost {len(lost)}, "
          f"twice {len(keys) - len(present)}; leftover files {len(left)}; final build "
          f"{'ok' if final.returncode == 0 else 'FAILED'}")
    for failure in [f for w in writers for f in w.failures][:5] + reader_errors[:5] + survive_failures[:5]:
        print("  problem:", failure)
    if final.returncode != 0:
        print(final.stderr[-2000:])
    ok = (not lost and problem is None and not reader_errors and stops == kills_survived and final.returncode == 0
          and not left)
    summary = (f"SUMMARY index stress: {timed:.0f} s, {args.writers} writers ({kinds.count('cli')} CLI, "
               f"{kinds.count('inproc')} in-process), {args.readers} readers: {writes} writes, {reads} reads, "
               f"{kills_survived}/{stops} kills survived ({kills} SIGKILL, {deaths} at a write step), "
               f"{len(lost)} captions lost, {len(keys) - len(present)} twice, {len(reader_errors)} reader errors, "
               f"{orphans} orphans removed, {len(left)} leftovers; {'PASS' if ok else 'FAIL'}")
    print(summary)
    _common.write_result("bench_index_stress", {
        "environment": {"python": sys.version.split()[0], "cpus": os.cpu_count(),
                        "loadavg_at_end": list(os.getloadavg()),
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "index", "prompt_json", "stop", "out")},
        "seconds": timed, "writes": writes, "reads": reads, "kills": kills, "write_step_deaths": deaths,
        "kills_survived": kills_survived, "orphans_removed": orphans,
        "captions_in_index": len(keys), "captions_required": len(required), "captions_lost": len(lost),
        "captions_twice": len(keys) - len(present), "reader_errors": reader_errors[:50], "leftovers": left,
        "index_problem": problem, "final_build_ok": final.returncode == 0, "pass": ok,
        "writers": [{"id": w.wid, "kind": w.kind, "ok": w.ok, "killed": w.killed, "failed": w.failed,
                     "died_at_write_step": w.died, "added": w.added, "duplicates_dropped": w.dup,
                     "orphans_removed": w.orphans,
                     "build_seconds": w.build_seconds, "lock_held_s": w.lock_held, "lock_waited_s": w.lock_waited,
                     "failures": w.failures[:10]} for w in writers],
        "readers": reader_results, "summary": summary,
    })
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for child in CHILDREN:
            if child.poll() is None:
                child.kill()
