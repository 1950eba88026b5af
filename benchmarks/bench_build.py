"""Index build throughput on this machine: the build's ways side by side with the batched bounds.

On the same N captions (the first N of MSR-VTT train+val when ../shared/data is there, else N synthetic
captions from a small grammar; default 5,000, ``--quick`` 1,000), models loaded and warmed up first, each
row timed alone in this process (rows run in the order below, ``--rounds R`` times interleaved; the median
seconds are reported):

  bounds (each stage alone, batched):
  (p1)  spaCy's ``nlp.pipe`` alone, one process (batch 256; the pack's pipeline without NER);
  (p1') the pack's parse alone (``atomizer.parse_texts``: ``nlp.pipe`` plus the recovery rule's second parses);
  (pN)  spaCy's ``nlp.pipe`` with ``n_process`` = every core;
  (e)   the sentence encoder alone on the distinct captions (``embedding.encode``: one token length per batch,
        every torch thread), the bound that a build on the CPU approaches;
  (t)   the tokenizer alone (``embedding.token_lengths``; the part of the encoding that stays on the CPU when
        the encoder runs on a GPU);
  builds (``index.build_index`` into a fresh folder; phrases, segment files and manifest included):
  (b0)  everything in this process (``parse_helper=False``);
  (b1)  one parse helper process (what 2 cores get by default);
  (b2)  two parse helper processes;
  (d2)  ``distributed.build_index_distributed`` on a local Dask cluster of 2 worker processes (1 thread
        each), shards of N/4 captions; the cluster's start and the workers' model loading are excluded (a
        warm-up build on other captions first).

``captions/s`` is N over the median seconds; ``vs (e)`` is the row's rate over the encoder-alone rate;
``load`` the highest 1-minute load average seen after the row's runs (this machine is shared: torch's
threads slow down badly when other processes hold the cores, so compare rows of one run only).
Results: ``bench_out/bench_build.json`` (``--quick``: ``bench_build.quick.json``). ``--no-distributed``
skips (d2) (it needs ``dask[distributed]``). The GPU side (an encoder-only bound with plain transformers)
is ``benchmarks/bench_build_gpu.py``.

Usage: ``python benchmarks/bench_build.py [--quick] [--n N] [--rounds R] [--no-distributed]``
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time

import _common as C

NAME = "bench_build"


def synthetic_captions(n: int, seed: int = 0) -> list[str]:
    """Captions in MSR-VTT's shapes (subject, verb phrase, object, place) when the real ones are absent."""
    rng = random.Random(seed)
    subjects = ["a man", "a woman", "a girl", "two boys", "a dog", "a cat", "a chef", "a crowd", "a player",
                "someone", "a person", "a group of people", "a baby", "a car", "a bird", "the singer"]
    verbs = ["is riding", "is cooking", "throws", "kicks", "is playing", "is talking to", "is chasing",
             "is cutting", "drives", "is dancing with", "catches", "is painting", "pushes", "is feeding"]
    objects = ["a horse", "a ball", "pasta", "a guitar", "the camera", "a mouse", "paper", "a bike", "a friend",
               "vegetables", "a frisbee", "a wall", "a stroller", "the ducks"]
    places = ["", " on the beach", " in a kitchen", " at night", " on stage", " in the park", " on a road",
              " in the snow", " outside", " in a room"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(places)}"
            for _ in range(n)]


def load_captions(n: int):
    """(entries, where from): the first n MSR-VTT captions, or synthetic ones."""
    from comfyui_searchpriors.retrieval.library import LibraryEntry

    root = C.shared_data_dir()
    path = root / C.MSRVTT_REL
    if path.is_file():
        captions = C.load_msrvtt(path)
        return [c.entry for c in captions[:n]], f"first {n} MSR-VTT train+val captions"
    texts = synthetic_captions(n)
    return [LibraryEntry(f"s{i}", t, None) for i, t in enumerate(texts)], f"{n} synthetic captions (no ../shared/data)"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 captions, one round")
    parser.add_argument("--n", type=int, default=None, help="captions (default 5,000; --quick 1,000)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 1)")
    parser.add_argument("--no-distributed", action="store_true", help="skip the local Dask cluster row")
    args = parser.parse_args()
    n = args.n or (1000 if args.quick else 5000)
    rounds = args.rounds or 1

    from comfyui_searchpriors.retrieval.atomizer import parse_texts
    from comfyui_searchpriors.retrieval.embedding import encode, token_lengths
    from comfyui_searchpriors.retrieval.index import build_index

    entries, origin = load_captions(n)
    texts = [e.caption for e in entries]
    distinct = list(dict.fromkeys(texts))
    nlp, model, load_s = C.load_models()
    cpus = os.cpu_count() or 1
    print(f"{origin} ({len(distinct)} distinct); {cpus} CPUs; models loaded in {load_s:.1f} s; "
          f"load average {os.getloadavg()[0]:.1f}")
    encode(model, distinct[:200])           # warm-up
    list(parse_texts(nlp, texts[:200]))
    work = tempfile.mkdtemp(prefix="bench_build_")

    def build(helpers):
        folder = os.path.join(work, f"idx-{time.perf_counter_ns()}")
        kwargs = {"parse_helper": False} if helpers == 0 else {"parse_helper": True, "parse_helpers": helpers}
        return lambda: build_index(folder, entries, nlp, model, **kwargs)

    rows = [
        ("p1", "spaCy nlp.pipe alone, 1 process", lambda: list(nlp.pipe(texts, batch_size=256))),
        ("p1'", "the pack's parse alone (parse_texts), 1 process", lambda: list(parse_texts(nlp, texts))),
        ("pN", f"spaCy nlp.pipe, n_process={cpus}", lambda: list(nlp.pipe(texts, batch_size=256, n_process=cpus))),
        ("e", "sentence encoder alone (distinct captions)", lambda: encode(model, distinct)),
        ("t", "tokenizer alone (distinct captions)", lambda: token_lengths(model, distinct)),
        ("b0", "build_index, no helper", None),
        ("b1", "build_index, 1 parse helper", None),
        ("b2", "build_index, 2 parse helpers", None),
    ]
    client = cluster = None
    if not args.no_distributed:
        try:
            from comfyui_searchpriors.retrieval import distributed as dist

            cluster, client = dist.local_cluster(workers=2)
            warm = [type(entries[0])(f"warm{i}", t, None) for i, t in enumerate(synthetic_captions(40, seed=1))]
            dist.build_index_distributed(os.path.join(work, "warm"), warm, nlp, model, client, shard_size=20)
            rows.append(("d2", "distributed build, local Dask cluster of 2 workers", None))
        except ImportError as exc:
            print(f"(d2) skipped: {exc}")
    seconds: dict[str, list[float]] = {key: [] for key, _, _ in rows}
    loads: dict[str, list[float]] = {key: [] for key, _, _ in rows}   # 1-minute load average after each run
    try:
        for r in range(rounds):
            for key, label, fn in rows:
                if key.startswith("b"):
                    fn = build(int(key[1]))
                elif key == "d2":
                    folder = os.path.join(work, f"dist-{r}")
                    fn = lambda: dist.build_index_distributed(folder, entries, nlp, model, client,  # noqa: E731
                                                              shard_size=max(1, n // 4))
                seconds[key].append(timed(fn))
                loads[key].append(os.getloadavg()[0])
                print(f"round {r + 1}: ({key}) {label}: {seconds[key][-1]:.1f} s (load {loads[key][-1]:.1f})",
                      flush=True)
    finally:
        if client is not None:
            client.close()
            cluster.close()
        shutil.rmtree(work, ignore_errors=True)

    median = {key: statistics.median(v) for key, v in seconds.items()}
    per_row_n = {"e": len(distinct), "t": len(distinct)}
    rate = {key: per_row_n.get(key, n) / s for key, s in median.items()}
    enc_rate = rate["e"]
    table_rows = [(f"({key}) {label}", median[key], rate[key], rate[key] / enc_rate, max(loads[key]))
                  for key, label, _ in rows]
    print()
    print(C.table(["way", "median s", "captions/s", "vs (e)", "load"], table_rows,
                  title=f"Build throughput, {origin}, {cpus} CPUs, {rounds} round(s)"))
    best_build = max((k for k in rate if k.startswith(("b", "d"))), key=lambda k: rate[k])
    summary = (f"SUMMARY build: best {best_build} {rate[best_build]:.0f} captions/s = "
               f"{rate[best_build] / enc_rate:.2f}x encoder-alone ({enc_rate:.0f}/s); no helper "
               f"{rate['b0']:.0f}/s, 1 helper {rate['b1']:.0f}/s, 2 helpers {rate['b2']:.0f}/s"
               + (f", Dask 2 workers {rate['d2']:.0f}/s" if "d2" in rate else "")
               + f"; spaCy pipe alone {rate['p1']:.0f}/s (1 proc), {rate['pN']:.0f}/s ({cpus} procs); "
               f"tokenizer {rate['t']:.0f}/s; {cpus} CPUs, n={n}")
    C.write_result(NAME, {"environment": C.environment(), "origin": origin, "n": n, "distinct": len(distinct),
                          "rounds": rounds, "seconds": seconds, "load_average": loads, "median_s": median,
                          "captions_per_s": rate,
                          "summary": summary}, quick=args.quick)
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
