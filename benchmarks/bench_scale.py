"""Memory-bounded search at 1M and 10M captions (issue 26): a synthetic caption library, build throughput,
resident memory, p50/p99 per mode and recall@10 against the exact ranking; baseline (the exact, in-memory
index) side by side where it fits in memory.

The library: captions written by a generator from its own vocabulary (~110 actors, ~100 motion verbs,
~140 objects, ~60 places) in the sentence shapes of real caption sets ("a man is cooking pasta in a
kitchen", "people are dancing on a stage", "a dog runs across a field", "there is a woman singing", two
clauses with "while", no-verb "a red car on a road", ...). No caption of a real set is copied. The generator
knows each caption's units (motion lemma, actor, recipient), so nothing is parsed: the distinct phrases
(a few hundred) are embedded once with the real all-MiniLM-L6-v2, and each caption's sentence vector is
COMPOSED, normalise(1.0 actor + 1.3 verb + 0.7 object + 0.4 place + 0.35 shape + noise), because
embedding 10M captions would take ~10 hours here. ``--real-vectors`` embeds every caption with MiniLM
instead (at 100k: ~3-5 minutes) so that the two can be compared.

Queries: ``--queries`` (default 100) held-out captions of the same generator (another seed), atomized with
the real spaCy and MiniLM. Each measurement runs in a fresh child process (``--child``), so resident memory
(VmRSS after loading and after searching, VmHWM: the peak) is that of loading and searching alone.

Rows, per size: "exact" = today's path (every vector in memory; at 10M it would need ~16 GB: not run)
and "compressed" = coarse.py (after ``coarse.upgrade_index``). recall@10: the compressed top-10 against the
exact top-10 (exact reference: the in-memory index where it fits, else the compressed index with every
list probed and every candidate set decided exactly, which the unit tests show equals the exact ranking).

Usage: ``python benchmarks/bench_scale.py --quick`` (100k, composed vectors, ~5-10 minutes on 2 cores),
``python benchmarks/bench_scale.py --sizes 1000000`` (~25 min), ``--sizes 10000000`` (hours, ~25 GB of
disk: run once). Work folder ``--work`` (default bench_out/scale, removed at the end unless ``--keep``).
``--prepare-only`` writes the libraries and their coarse index under ``--work`` and stops; ``--reuse`` measures
them again (and re-uses a 10M run's all-lists reference, ``reference-N.json``), e.g. after a change to search.

Reported per size: resident memory after searching split into anonymous and file-backed pages, the peak,
p50/p99 per mode, recall@10, sentence vectors read per search, and search_t2v per query class (verb or not,
actor or not, fail-safe in the reference's rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _common as C

ACTORS = ("man woman boy girl person child kid baby guy lady player team chef cook singer dancer band crowd "
          "student teacher doctor nurse soldier police officer driver rider swimmer runner skier surfer "
          "skateboarder cyclist climber boxer wrestler gymnast athlete couple family group audience host "
          "reporter anchor actor actress character cartoon puppet robot dog puppy cat kitten horse cow sheep "
          "goat pig bird parrot duck chicken fish shark dolphin whale monkey elephant lion tiger bear deer "
          "rabbit mouse snake turtle frog spider insect butterfly car truck bus train plane boat bike "
          "motorcycle helicopter tractor drone camera judge coach fan worker farmer fisherman hunter priest "
          "musician drummer guitarist pianist rapper comedian magician artist painter model bride groom "
          "grandmother grandfather mother father son daughter").split()
ADJECTIVES = "young old little small big tall blonde asian african american funny happy angry red blue black white".split()
# lemma, -ing form, 3rd person, takes an object
VERBS = [(v, g, s, t == "t") for v, g, s, t in (w.split("/") for w in (
    "run/running/runs/i walk/walking/walks/i dance/dancing/dances/i sing/singing/sings/t cook/cooking/cooks/t "
    "play/playing/plays/t ride/riding/rides/t drive/driving/drives/t jump/jumping/jumps/i swim/swimming/swims/i "
    "talk/talking/talks/i speak/speaking/speaks/i eat/eating/eats/t drink/drinking/drinks/t throw/throwing/throws/t "
    "catch/catching/catches/t kick/kicking/kicks/t hit/hitting/hits/t push/pushing/pushes/t pull/pulling/pulls/t "
    "carry/carrying/carries/t climb/climbing/climbs/t fly/flying/flies/i fall/falling/falls/i slide/sliding/slides/i "
    "skate/skating/skates/i ski/skiing/skis/i surf/surfing/surfs/i fight/fighting/fights/t chase/chasing/chases/t "
    "feed/feeding/feeds/t wash/washing/washes/t cut/cutting/cuts/t chop/chopping/chops/t stir/stirring/stirs/t "
    "pour/pouring/pours/t mix/mixing/mixes/t bake/baking/bakes/t fry/frying/fries/t slice/slicing/slices/t "
    "paint/painting/paints/t draw/drawing/draws/t write/writing/writes/t read/reading/reads/t "
    "build/building/builds/t fix/fixing/fixes/t open/opening/opens/t close/closing/closes/t "
    "hold/holding/holds/t show/showing/shows/t explain/explaining/explains/t demonstrate/demonstrating/demonstrates/t "
    "hug/hugging/hugs/t kiss/kissing/kisses/t touch/touching/touches/t pet/petting/pets/t "
    "shoot/shooting/shoots/t score/scoring/scores/t dribble/dribbling/dribbles/t serve/serving/serves/t "
    "swing/swinging/swings/t lift/lifting/lifts/t bounce/bouncing/bounces/t roll/rolling/rolls/i "
    "spin/spinning/spins/i turn/turning/turns/i wave/waving/waves/i clap/clapping/claps/i laugh/laughing/laughs/i "
    "cry/crying/cries/i smile/smiling/smiles/i sleep/sleeping/sleeps/i sit/sitting/sits/i stand/standing/stands/i "
    "lie/lying/lies/i crawl/crawling/crawls/i race/racing/races/i march/marching/marches/i "
    "perform/performing/performs/t practice/practicing/practices/t exercise/exercising/exercises/i "
    "stretch/stretching/stretches/i dive/diving/dives/i row/rowing/rows/t paddle/paddling/paddles/t "
    "sail/sailing/sails/i hike/hiking/hikes/i jog/jogging/jogs/i sprint/sprinting/sprints/i "
    "kneel/kneeling/kneels/i bow/bowing/bows/i point/pointing/points/i type/typing/types/t "
    "record/recording/records/t film/filming/films/t interview/interviewing/interviews/t "
    "review/reviewing/reviews/t sell/selling/sells/t buy/buying/buys/t pack/packing/packs/t "
    "unbox/unboxing/unboxes/t assemble/assembling/assembles/t repair/repairing/repairs/t "
    "clean/cleaning/cleans/t sweep/sweeping/sweeps/t plant/planting/plants/t dig/digging/digs/t "
    "shake/shaking/shakes/t brush/brushing/brushes/t comb/combing/combs/t").split())]
OBJECTS = ("ball football basketball soccer ball tennis ball guitar piano drum violin microphone song food pasta "
           "soup salad pizza cake bread egg vegetable meat chicken rice noodle sandwich burger fruit apple "
           "banana orange tomato potato onion carrot sauce dough batter water coffee tea wine beer car bike "
           "horse skateboard surfboard kite boat rope ladder box bag bottle cup plate bowl knife pan pot oven "
           "table chair door window wall fence tree flower plant garden hair makeup dress shirt shoe hat "
           "phone computer laptop keyboard screen camera video game toy doll puppy cat dog baby child bird "
           "fish paper book letter picture painting sign card gift present house car engine tire wheel "
           "weight bar racket bat club stick sword gun bow arrow snow sand rock stone wave water balloon "
           "bubble candle fire light lamp tool hammer nail brick wood metal glass paint brush pencil pen").split()
PLACES = ("in a kitchen|on a stage|on the beach|in a park|on a field|in a gym|in a pool|on a road|on the street|"
          "in a room|in a studio|in a classroom|in an office|on a court|in the snow|in the water|in the forest|"
          "on a mountain|in the desert|at night|in the rain|on a bed|on a couch|at a table|in a garden|in a yard|"
          "in a car|on a boat|on a bridge|in a city|in a store|in a restaurant|at a party|at a concert|"
          "in a field|on a track|in a race|on tv|on a show|in a game|in a video game|in a cartoon|in a movie|"
          "in front of a crowd|in front of a camera|outside|indoors|on the grass|on ice|in a river|in a lake|"
          "in the sky|in a cage|at a zoo|on a farm|in a church|in a hospital|in a parking lot").split("|")
SHAPES = ("a {A} is {V} {O} {P}|{As} are {V} {O} {P}|a {A} {Vs} {O} {P}|there is a {A} {V} {O}|"
          "someone is {V} {O} {P}|a video of a {A} {V} {O}|a {A} is {V} {O} while a {A2} is {V2} {O2}|"
          "a {adj} {A} is {V} {O}|the {A} is {V} {O} {P}|a {A} and a {A2} are {V} {O} {P}|"
          "a clip of {As} {V} {P}|a {O1} {P}|a {adj} {O1} is shown {P}|{As} {V} {O} {P}").split("|")


def plural(word: str) -> str:
    irregular = {"man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice",
                 "fish": "fish", "sheep": "sheep", "police": "police", "deer": "deer"}
    if word in irregular:
        return irregular[word]
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


class Generator:
    """Captions and their units from integer draws (vectorised per chunk)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        # Zipf-like frequencies, as in real caption sets (a few verbs and actors are very common)
        self.p_actor = self._zipf(len(ACTORS))
        self.p_verb = self._zipf(len(VERBS))
        self.p_obj = self._zipf(len(OBJECTS))

    def _zipf(self, n: int) -> np.ndarray:
        w = 1.0 / np.arange(1, n + 1) ** 0.9
        w = w[self.rng.permutation(n)]
        return w / w.sum()

    def draw(self, n: int) -> dict:
        r = self.rng
        return {"shape": r.integers(0, len(SHAPES), n), "a": r.choice(len(ACTORS), n, p=self.p_actor),
                "a2": r.choice(len(ACTORS), n, p=self.p_actor), "v": r.choice(len(VERBS), n, p=self.p_verb),
                "v2": r.choice(len(VERBS), n, p=self.p_verb), "o": r.choice(len(OBJECTS), n, p=self.p_obj),
                "o2": r.choice(len(OBJECTS), n, p=self.p_obj), "p": r.integers(0, len(PLACES), n),
                "adj": r.integers(0, len(ADJECTIVES), n)}

    @staticmethod
    def caption(d: dict, i: int) -> tuple[str, list[tuple]]:
        """Caption i of draw d and its units [(motion lemma, actor, recipient)], core first."""
        shape = SHAPES[int(d["shape"][i])]
        a, a2 = ACTORS[int(d["a"][i])], ACTORS[int(d["a2"][i])]
        v, v2 = VERBS[int(d["v"][i])], VERBS[int(d["v2"][i])]
        o, o2 = OBJECTS[int(d["o"][i])], OBJECTS[int(d["o2"][i])]
        obj = f"a {o}" if v[3] else ""
        obj2 = f"a {o2}" if v2[3] else ""
        text = shape.format(A=a, As=plural(a), A2=a2, V=v[1], Vs=v[2], V2=v2[1], O=obj, O2=obj2,
                            P=PLACES[int(d["p"][i])], adj=ADJECTIVES[int(d["adj"][i])], O1=o)
        text = " ".join(text.split())
        if "{O1}" in shape:
            units = [(None, o, None)]
        else:
            actor = None if shape.startswith("someone") else a
            units = [(v[0], actor, o if v[3] else None)]
            if "{V2}" in shape:
                units.append((v2[0], a2, o2 if v2[3] else None))
            elif "{A2}" in shape:
                units.append((v[0], a2, o if v[3] else None))
        return text, units


def phrase_list() -> list[str]:
    return sorted(set(ACTORS) | set(OBJECTS) | {v[0] for v in VERBS})


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# ------------------------------------------------------------------------------------------- writing

def write_library(folder: Path, n: int, seed: int, segment_size: int, real_vectors: bool) -> dict:
    from comfyui_searchpriors.retrieval.embedding import encode, sentence_model_identity
    from comfyui_searchpriors.retrieval.index import FORMAT, MANIFEST, VERSION, _write_segment_files, write_json_atomic
    from comfyui_searchpriors.retrieval.library import LibraryEntry
    from comfyui_searchpriors.retrieval.models import spacy_identity

    nlp, model, _ = C.load_models()
    phrases = phrase_list()
    pid = {p: i for i, p in enumerate(phrases)}
    pvec = encode(model, phrases)
    places = encode(model, PLACES)
    shapes = encode(model, [s.split("{")[0] or s.split("}")[-1] or "video" for s in SHAPES])
    dim = pvec.shape[1]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    gen = Generator(seed)
    noise_rng = np.random.default_rng(seed + 1)
    segments, started, encode_s = [], time.perf_counter(), 0.0
    for ordinal, start in enumerate(range(0, n, segment_size), 1):
        m = min(segment_size, n - start)
        d = gen.draw(m)
        entries, unit_rows, offsets, core = [], [], [0], []
        texts = []
        for i in range(m):
            text, units = Generator.caption(d, i)
            texts.append(text)
            entries.append(LibraryEntry(f"syn{start + i:08d}", text, None))
            for u in units:
                unit_rows.append([pid[x] if x is not None else -1 for x in u])
            core.append(offsets[-1])
            offsets.append(offsets[-1] + len(units))
        units = np.array(unit_rows, dtype=np.int32).reshape(-1, 3)
        if real_vectors:
            t0 = time.perf_counter()
            vecs = encode(model, texts)
            encode_s += time.perf_counter() - t0
        else:
            cu = units[np.array(core)]
            zero = np.zeros((1, dim), np.float32)
            table = np.concatenate([pvec, zero])
            vecs = (1.0 * table[cu[:, 1]] + 1.3 * table[cu[:, 0]] + 0.7 * table[cu[:, 2]]
                    + 0.4 * places[d["p"]] + 0.35 * shapes[d["shape"]]
                    + 0.09 * noise_rng.standard_normal((m, dim), dtype=np.float32))
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        segments.append(_write_segment_files(str(folder), f"seg-{ordinal:06d}-synthetic", entries,
                                             vecs.astype(np.float32), phrases, pvec, units,
                                             np.array(offsets, np.int64), np.array(core, np.int32), dim))
        if ordinal % 5 == 0 or start + m == n:
            rate = (start + m) / (time.perf_counter() - started)
            log(f"  wrote {start + m}/{n} captions ({rate:,.0f} captions/s)")
    manifest = {"format": FORMAT, "version": VERSION, "sentence_model": sentence_model_identity(model),
                "spacy_model": spacy_identity(nlp), "dim": dim, "segments": segments, "count": n,
                "missing_videos": n, "sources": [], "synthetic": {"n": n, "seed": seed, "real_vectors": real_vectors}}
    write_json_atomic(str(folder / MANIFEST), manifest)
    seconds = time.perf_counter() - started
    return {"n": n, "seconds": seconds, "captions_per_s": n / seconds, "encode_s": encode_s,
            "vectors": "MiniLM" if real_vectors else "composed", "phrases": len(phrases),
            "disk_gb": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e9}


def note_written(folder: Path, wrote: dict, upgrade: dict | None = None) -> None:
    """What --reuse needs to know about a library written here (beside the index, not inside it)."""
    (folder.parent / f"{folder.name}.written.json").write_text(json.dumps({"written": wrote, "upgrade": upgrade}))


def reusable(folder: Path, n: int, real_vectors: bool) -> dict | None:
    """The note of a complete library of n captions in folder (and its coarse index, if it still matches)."""
    note, manifest = folder.parent / f"{folder.name}.written.json", folder / "manifest.json"
    if not (note.exists() and manifest.exists()):
        return None
    kept, man = json.loads(note.read_text()), json.loads(manifest.read_text())
    syn = man.get("synthetic") or {}
    if syn.get("n") != n or bool(syn.get("real_vectors")) != real_vectors:
        return None
    if not man.get("coarse"):
        kept["upgrade"] = None
    return kept


def queries(count: int, seed: int) -> list[str]:
    gen = Generator(seed)
    d = gen.draw(count)
    return [Generator.caption(d, i)[0] for i in range(count)]


# ------------------------------------------------------------------------------------------- children

def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    """One measurement in this fresh process: load (compressed or exact), search every query in both modes."""
    import pickle

    from comfyui_searchpriors.retrieval import coarse
    from comfyui_searchpriors.retrieval.index import load_index
    from comfyui_searchpriors.retrieval.search import SearchParams, search

    with open(args.atomized, "rb") as fh:
        atomized = pickle.load(fh)
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    limit = 1 if args.child in ("compressed", "reference-all-lists") else 1 << 62
    index = load_index(args.index, compress_min=limit)
    load_s = time.perf_counter() - t0
    if args.child == "reference-all-lists":
        coarse.NPROBE_POS = coarse.NPROBE_T2V = coarse.NPROBE_SUBSET = index.sentence_index.nlist
        coarse.EXACT_SUBSET = coarse.WALK_ROWS = 1 << 62
        coarse.POS_RERANK = 100
        uncertified = exact_pool_reference(index)
    rss_load = _status_mb("VmRSS")
    out = {"kind": args.child, "load_s": load_s, "rss_base_mb": base, "rss_after_load_mb": rss_load, "modes": {}}
    read_before = index.sentence_vectors().rows_read if index.compressed else 0
    for mode in ("search_t2v", "pos"):
        params = SearchParams(mode=mode, top_k=10, ranking=args.ranking)   # default paper: Eq. 9, the issue's
        search(index, atomized[0], params)   # warm-up: derived arrays, first page reads
        times, rows, rounds = [], [], []
        for a in atomized:
            t0 = time.perf_counter()
            r = search(index, a, params)
            times.append((time.perf_counter() - t0) * 1e3)
            rows.append([h.row for h in r.hits])
            rounds.append([list(x) for x in r.rounds])
        out["modes"][mode] = {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
                              "rows": rows, "ms": times, "rounds": rounds}
        if index.compressed:   # sentence vectors read from disk per search (the rest come from the codes)
            out["modes"][mode]["vectors_read"] = (index.sentence_vectors().rows_read - read_before) / len(atomized)
            read_before = index.sentence_vectors().rows_read
    if args.child == "reference-all-lists":
        out["pool_uncertified"] = len(uncertified)
    out["rss_after_search_mb"] = _status_mb("VmRSS")
    out["vmhwm_mb"] = _status_mb("VmHWM")
    out["rss_anon_mb"] = _status_mb("RssAnon")
    out["rss_file_mb"] = _status_mb("RssFile")
    print("RESULT " + json.dumps(out), flush=True)


def exact_pool_reference(index) -> list:
    """The reference child's pool for the pool_video_support ranking: the exact top-``size`` by sentence similarity
    over every list (the best 20 x size rows by 8-bit similarity, all read and re-scored exactly). A query's pool is
    certified exact when the last fetched row's 8-bit similarity is below the size-th exact one minus twice the code
    bound; the returned list collects the queries where it is not."""
    from comfyui_searchpriors.retrieval import search as S

    uncertified: list = []

    def pool(index, q, size):
        fetched = S._coarse_top(index, q, max(20 * size, 100), index.sentence_index.nlist)
        exact = S._dot64(index.sentence_vectors(), fetched, q)
        order = np.lexsort((fetched, -exact))[:size]
        if len(fetched) < index.count and S._approx_of(index, q, fetched).min() >= \
                exact[order[-1]] - 2 * S._code_bound(index, q):
            uncertified.append(len(uncertified))
        return fetched[order], exact[order]

    S.compressed_pool = pool
    return uncertified


def run_child(kind: str, index: Path, atomized: Path, ranking: str = "paper", timeout: float = 7200) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    done = subprocess.run([sys.executable, __file__, "--child", kind, "--index", str(index), "--atomized",
                           str(atomized), "--ranking", ranking], capture_output=True, text=True, timeout=timeout,
                          env=env)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child {kind} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def recall(got: list, want: list) -> float:
    return float(np.mean([len(set(g) & set(w)) / max(len(w), 1) for g, w in zip(got, want)])) if got else float("nan")


def query_classes(atomized: list, rounds: list) -> list[str]:
    """Each query's search_t2v class: verb / no verb, actor or not, and '/fail-safe' when a round of the
    reference search kept more than passed."""
    out = []
    for a, r in zip(atomized, rounds):
        core = a.units[a.core_index] if a.units else None
        name = ("verb" if core is not None and core.motion else "no verb") + \
            (" + actor" if core is not None and core.actor else "")
        out.append(name + (" / fail-safe" if any(passed < kept for _, kept, passed in r) else ""))
    return out


def class_rows(n: int, classes: list[str], comp: dict, ref: dict) -> list[list[str]]:
    """search_t2v per query class: count, p50 / p99 of the compressed index, recall@10 against ref."""
    out = []
    got, want, ms = (comp["modes"]["search_t2v"]["rows"], ref["modes"]["search_t2v"]["rows"],
                     comp["modes"]["search_t2v"]["ms"])
    for name in sorted(set(classes)) + ["all"]:
        idx = [i for i, c in enumerate(classes) if name in ("all", c)]
        t = [ms[i] for i in idx]
        out.append([f"{n:,}", name, str(len(idx)), f"{np.percentile(t, 50):.1f}", f"{np.percentile(t, 99):.1f}",
                    f"{max(t):.1f}", f"{recall([got[i] for i in idx], [want[i] for i in idx]):.3f}"])
    return out


# ------------------------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k captions only")
    ap.add_argument("--sizes", default=None, help="comma-separated caption counts (default 1000000,10000000)")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--segment-size", type=int, default=200_000)
    ap.add_argument("--real-vectors", action="store_true", help="embed every caption with MiniLM (slow)")
    ap.add_argument("--exact-limit", type=int, default=2_000_000,
                    help="largest size measured with the exact in-memory baseline too")
    ap.add_argument("--work", default=str(C.BENCH_OUT / "scale"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse a library already written under --work (same size and seed) and its coarse index; "
                         "implies --keep")
    ap.add_argument("--prepare-only", action="store_true",
                    help="write the libraries (and their coarse index) under --work and stop; implies --keep")
    ap.add_argument("--ranking", default="paper",
                    help="search_t2v's ranking (default paper: Eq. 9, what the issue's targets were set for; "
                         "pool_video_support is the Motion Retriever's default)")
    ap.add_argument("--child", default=None)
    ap.add_argument("--index", default=None)
    ap.add_argument("--atomized", default=None)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.reuse or args.prepare_only:
        args.keep = True
    import pickle

    from comfyui_searchpriors.retrieval.coarse import upgrade_index
    from comfyui_searchpriors.retrieval.embedding import atomize

    sizes = [100_000] if args.quick else [int(s) for s in (args.sizes or "1000000,10000000").split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    nlp, model, _ = C.load_models()
    prompts = queries(args.queries, seed=777)
    atomized = [atomize(p, nlp, model) for p in prompts]
    atom_path = work / "atomized.pkl"
    atom_path.write_bytes(pickle.dumps(atomized))
    del nlp, model
    results, rows = [], []
    for n in sizes:
        folder = work / f"lib-{n}"
        kept = reusable(folder, n, args.real_vectors) if args.reuse else None
        if kept:
            wrote = kept["written"]
            log(f"reusing the library in {folder} (written at {wrote['captions_per_s']:,.0f} captions/s)")
        else:
            log(f"writing {n} synthetic captions to {folder} ({'MiniLM' if args.real_vectors else 'composed'} vectors)")
            wrote = write_library(folder, n, seed=1, segment_size=args.segment_size, real_vectors=args.real_vectors)
            note_written(folder, wrote)
            log(f"  {wrote['captions_per_s']:,.0f} captions/s, {wrote['disk_gb']:.1f} GB on disk")
        if kept and kept.get("upgrade"):
            upgrade_text, upgrade_s = kept["upgrade"]["text"], kept["upgrade"]["seconds"]
            log(f"  reusing its coarse index ({upgrade_text})")
        else:
            log("  upgrade (coarse index) ...")
            t0 = time.perf_counter()
            upgrade_text = upgrade_index(str(folder), compress_min_rows=1, log=log)
            upgrade_s = time.perf_counter() - t0
            note_written(folder, wrote, {"text": upgrade_text, "seconds": upgrade_s})
            log(f"  {upgrade_text}")
        if args.prepare_only:
            continue
        comp = run_child("compressed", folder, atom_path, args.ranking)
        if n <= args.exact_limit:
            exact = run_child("exact", folder, atom_path, args.ranking)
            ref, ref_kind = exact, "exact in memory"
        else:
            exact = None
            # --reuse: the reference of the same library, queries and ranking
            saved = work / (f"reference-{n}.json" if args.ranking == "paper" else f"reference-{n}-{args.ranking}.json")
            if args.reuse and saved.exists() and json.loads(saved.read_text()).get("queries") == prompts:
                ref = json.loads(saved.read_text())["reference"]
                log(f"  reusing the all-lists reference in {saved}")
            else:
                ref = run_child("reference-all-lists", folder, atom_path, args.ranking)
                saved.write_text(json.dumps({"queries": prompts, "reference": ref}))
            ref_kind = "all lists probed"
            if args.ranking != "paper":
                log(f"  reference pools not certified exact: {ref.get('pool_uncertified', 'n/a')} of {len(prompts)}")
        res = {"n": n, "write": wrote, "upgrade_s": upgrade_s, "upgrade": upgrade_text, "compressed": comp,
               "exact": exact, "reference": ref_kind}
        for mode in ("search_t2v", "pos"):
            res[f"recall_{mode}"] = recall(comp["modes"][mode]["rows"], ref["modes"][mode]["rows"])
        res["classes"] = class_rows(n, query_classes(atomized, ref["modes"]["search_t2v"]["rounds"]), comp, ref)
        if ref_kind != "exact in memory":
            res["reference_p50"] = {m: ref["modes"][m]["p50"] for m in ("search_t2v", "pos")}
        results.append(res)
        for label, r in (("exact (today)", exact), ("compressed", comp)):
            if r is None:
                rows.append([f"{n:,}", label, "not run (~16 GB of vectors)", "", "", "", "", "", "", ""])
                continue
            rows.append([f"{n:,}", label, f"{r['load_s']:.1f}", f"{r['rss_after_search_mb']:,.0f}",
                         f"{r['rss_anon_mb']:,.0f} / {r['rss_file_mb']:,.0f}", f"{r['vmhwm_mb']:,.0f}",
                         f"{r['modes']['search_t2v']['p50']:.1f} / {r['modes']['search_t2v']['p99']:.1f}",
                         f"{r['modes']['pos']['p50']:.1f} / {r['modes']['pos']['p99']:.1f}",
                         "1.000" if r is exact else f"{res['recall_search_t2v']:.3f}",
                         "1.000" if r is exact else f"{res['recall_pos']:.3f}"])
        log(f"  n={n}: recall@10 t2v {res['recall_search_t2v']:.3f}, pos {res['recall_pos']:.3f} vs {ref_kind}")
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if not results:
        log(f"libraries prepared under {work} (--prepare-only)")
        return
    print()
    print(C.table(["captions", "index", "load s", "RSS MB", "anon / file MB", "peak MB", "t2v p50/p99 ms",
                   "pos p50/p99 ms",
                   "R@10 t2v", "R@10 pos"], rows,
                  title=f"scale ({'MiniLM' if args.real_vectors else 'composed'} sentence vectors, search_t2v ranking "
                        f"{args.ranking}, {args.queries} "
                        f"queries, top-10; RSS after searching, peak = VmHWM)"))
    print()
    print(C.table(["captions", "search_t2v query class", "queries", "p50 ms", "p99 ms", "max ms", "R@10"],
                  [row for r in results for row in r["classes"]],
                  title="search_t2v of the compressed index per query class (class from the reference's rounds)"))
    for r in results:
        reads = {m: r["compressed"]["modes"][m].get("vectors_read") for m in ("search_t2v", "pos")}
        print(f"{r['n']:,}: the compressed index read {reads['search_t2v']:.0f} (search_t2v) and {reads['pos']:.0f} (pos) "
              f"sentence vectors per search (the warm-up included)")
        w = r["write"]
        print(f"{r['n']:,}: library written at {w['captions_per_s']:,.0f} captions/s (no parsing: synthetic units; "
              f"{w['disk_gb']:.1f} GB), coarse index {r['upgrade_s']:.0f} s; recall reference: {r['reference']}")
    C.write_result("bench_scale" + ("_real" if args.real_vectors else ""), {"results": results, "quick": args.quick},
                   quick=args.quick)
    last = results[-1]
    c = last["compressed"]
    print(f"SUMMARY scale: {last['n']:,} captions ({'MiniLM' if args.real_vectors else 'composed'} vectors, search_t2v "
          f"ranking {args.ranking}): "
          f"RSS {c['rss_after_search_mb']:,.0f} MB (anon {c['rss_anon_mb']:,.0f}, file {c['rss_file_mb']:,.0f}, "
          f"peak {c['vmhwm_mb']:,.0f}); search_t2v p50 {c['modes']['search_t2v']['p50']:.1f} ms "
          f"p99 {c['modes']['search_t2v']['p99']:.1f} ms R@10 {last['recall_search_t2v']:.3f}; pos p50 "
          f"{c['modes']['pos']['p50']:.1f} ms p99 {c['modes']['pos']['p99']:.1f} ms R@10 {last['recall_pos']:.3f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
