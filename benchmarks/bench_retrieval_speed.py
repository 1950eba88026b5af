"""Index build throughput, query latency at ~140k and 1M captions, and exactness of the fast ranking path.

a. Build throughput (captions/s) on the same N MSR-VTT captions (the first N of the file; default 5000,
   ``--quick`` 500), models warmed up first; rows (i)-(ii') run interleaved in 3 rounds (``--quick`` 1).
   This machine's speed drifts by 10-20 % over minutes, so each row's ratio to (i) is taken within a round
   (the two runs are a minute apart) and the median over rounds is reported, beside the median and
   fastest seconds and the fastest-against-fastest ratio:
   (i)   baseline: batched sentence embedding alone of every caption, Sentence-Transformers' own
         ``model.encode(captions, batch_size=128, normalize_embeddings=True)`` (it sorts by characters
         and pads each batch to its longest caption);
   (i')  the same on the distinct captions only (build_index embeds each distinct caption once; MSR-VTT
         repeats captions, so this is a stricter baseline);
   (i'') the pack's ``embedding.encode`` of every caption alone: batches of one token length each (no
         padding), the encoder build_index uses; the strictest baseline;
   (ii)  the pack's ``index.build_index`` into a fresh temporary folder (parse + sentence and phrase vectors
         + segment files + manifest), as a user runs it: parse helper process on "auto";
   (ii') the same with ``parse_helper=False`` (everything in this process);
   (iii) a naive per-caption loop: for each caption ``atomizer.parse_text``, encode the sentence
         alone, encode each role phrase alone; then the same arrays are written (``index._write_segment``
         and a manifest). It runs on the first ``--naive-n`` captions only (default 200, ``--quick`` 50),
         because it is slow; its throughput is per caption of that subset.
   Target: (ii) >= 0.8 x (i); (ii) / (i') and (ii) / (i'') are printed beside it. A breakdown of the work
   is measured separately on the same captions, each step alone in this process: spaCy parse
   (``atomizer.parse_texts``), sentence encode of the distinct captions (``embedding.encode``), encode of
   the distinct role phrases, and writing the segment.

b. Query latency, per query, p50/p95 in ms, of ``search.search()`` alone (atomizing excluded; it is
   timed separately with ``embedding.atomize`` per prompt), for both modes, at two index sizes:
   - "msrvtt": the MSR-VTT train+val index of the quality benchmark (19 captions per video, ~133k; the
     held-out caption of every video is excluded), reused from ``bench_out/cache/`` or built there;
   - "synthetic": 1,000,000 synthetic captions (``--quick``: 20,000). Embedding 1M new strings would take
     about an hour on this machine, so captions are synthesised at the array level by recombining parts of
     real indexed captions: synthetic caption j draws two real rows a and b (uniformly, seeded); it takes
     all units of a (so a's core motion phrase, recipient and other units) but the core unit's actor phrase
     is b's core actor (None if b has none); its sentence vector is normalise(v_a + v_b); its text says
     how it was made. Phrase vectors are the real ones (``PhraseTable.seed`` with the real index's phrase
     texts and vectors). It is written as a real index folder with ``index._write_segment`` in segments
     of 20,000 captions (``build_index``'s default segment size) and a manifest in ``build_index``'s
     format, and loaded with ``index.load_index``; cached under ``bench_out/cache/``.
   Peak RSS (``resource.getrusage(...).ru_maxrss``) of loading each index is measured in a process that
   does nothing else: a child forked from a small helper process started before any model is loaded
   (ru_maxrss is inherited over fork/exec; see ``rss_server``); reported as the peak after ``load_index``
   and its rise over the child's baseline (Python, numpy, faiss and the index module imported).
   Queries: the 10 prompts of ``prompts/search_t2v_prompts.txt`` plus 90 held-out MSR-VTT captions
   (``--quick``: 10). Target:
   search_t2v p50 <= 100 ms at 1M. One warm-up search per mode and index is excluded from the
   percentiles and reported as "first search".

c. Exactness: the fast path's top-10 rows (``search.search``) against the literal implementation in
   ``tests/reference_ranking.py`` (``search_t2v`` / ``pos`` over ``captions_from_index(index)``), with the
   same parameters, for the 10 paper prompts + 20 MSR-VTT queries at ~133k, and for the 10 paper prompts
   at 1M (``--no-literal-1m`` skips the latter; it takes a few minutes).

``--whole-library`` runs only (i) and (ii) of part a, once each, on every MSR-VTT caption (140,200; about
16 minutes), and writes ``bench_out/bench_retrieval_speed_whole_library.json``. ``--build-only`` runs part a
alone (about 5 minutes) and writes ``bench_out/bench_retrieval_speed_build.json``.

Usage: ``python benchmarks/bench_retrieval_speed.py [--quick] [--rebuild] [--build-only | --skip-build |
--whole-library]`` (``--rebuild``: rebuild the
cached MSR-VTT index, e.g. after retrieval/ changed; the scripts warn when the cache was built by other
code). Results: ``bench_out/bench_retrieval_speed.json`` (``--quick``: ``...speed.quick.json``). Needs
../shared/data (or SEARCHPRIORS_SHARED_DATA); without it the script prints "skipped: ..." and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _common as C

NAME = "bench_retrieval_speed"
SYNTH_VERSION = "recombine-v1"
MODES = ("search_t2v", "pos")
NEAR_TIE = 1e-6
EMBED_BATCH = 128  # rows per batch of the Sentence-Transformers baseline


def st_encode(model, texts):
    """The baseline: Sentence-Transformers' batched encode, as a user would call it."""
    return model.encode(list(texts), batch_size=EMBED_BATCH, convert_to_numpy=True, normalize_embeddings=True,
                        show_progress_bar=False)


# ------------------------------------------------------------------------------------------ RSS probe
#
# ru_maxrss is a high-water mark that Linux carries over fork() and execve(): a probe started from this
# (large) process would report at least this process's RSS. So a small server process is started before
# any model or index is loaded, and each probe is a child forked from it: its ru_maxrss starts at the
# server's small footprint (numpy, faiss and the index module imported) and rises only by what
# ``load_index`` needs.

def _proc_status_mb(key: str) -> float:
    """A memory line of /proc/self/status ("VmHWM", "VmRSS") in MB; NaN where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def rss_server() -> int:
    """Subprocess mode: for each folder read from stdin, fork, load it, print one JSON line of RSS."""
    import faiss  # noqa: F401  (imported before the baseline so that it is not counted)

    from comfyui_searchpriors.retrieval.index import load_index

    for line in sys.stdin:
        folder = line.strip()
        if not folder:
            break
        pid = os.fork()
        if pid == 0:
            try:
                base = C.maxrss_mb()
                t0 = time.perf_counter()
                index = load_index(folder)
                load_s = time.perf_counter() - t0
                out = {"baseline_maxrss_mb": base, "after_load_maxrss_mb": C.maxrss_mb(),
                       "after_load_vmhwm_mb": _proc_status_mb("VmHWM"), "load_s": load_s, "count": index.count}
            except Exception as exc:  # reported to the parent
                out = {"error": repr(exc)}
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
            os._exit(0)
        os.waitpid(pid, 0)
    return 0


class RssProbe:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--rss-server"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def measure(self, folder: Path) -> dict:
        self.proc.stdin.write(f"{folder}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the RSS probe process ended unexpectedly")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"RSS probe failed: {out['error']}")
        return out

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


# ------------------------------------------------------------------------------------------ a. build

def bench_build(captions, n: int, naive_n: int, nlp, model, log, rounds: int = 3) -> dict:
    from comfyui_searchpriors.retrieval.atomizer import parse_text, parse_texts, verb_forms_of
    from comfyui_searchpriors.retrieval.embedding import (PhraseTable, embedding_dim, encode,
                                                          sentence_model_identity)
    from comfyui_searchpriors.retrieval.index import (FORMAT, MANIFEST, VERSION, _write_segment, build_index,
                                                      load_index, write_json_atomic)
    from comfyui_searchpriors.retrieval.models import spacy_identity

    entries = [c.entry for c in captions[:n]]
    texts = [e.caption for e in entries]
    dim = embedding_dim(model)
    tmp_root = C.BENCH_OUT / f"tmp-build-{os.getpid()}"
    shutil.rmtree(tmp_root, ignore_errors=True)
    tmp_root.mkdir(parents=True)
    res: dict = {"n": n, "distinct_captions": len(set(texts)), "naive_n": naive_n}
    try:
        # warm-up (first calls allocate and load kernels; the first build imports faiss and sqlite3)
        encode(model, texts[:128])
        st_encode(model, texts[:128])
        build_index(str(tmp_root / "warm-up"), entries[:64], nlp, model, parse_helper=False)
        distinct = list(dict.fromkeys(texts))

        def timed(label, run):
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            out = run()
            seconds = time.perf_counter() - t0
            log(f"  {label}: {n} captions in {seconds:.1f} s (load {load:.2f} before)")
            return seconds, load, out

        def build(helper):
            def run():
                folder = tmp_root / f"built-{helper}-{len(os.listdir(tmp_root))}"
                return folder, build_index(str(folder), entries, nlp, model, parse_helper=helper)
            return run

        runs = {"embed_only": lambda: st_encode(model, texts),
                "embed_distinct": lambda: st_encode(model, distinct),
                "embed_pack": lambda: encode(model, texts),
                "build_index": build(None),
                "build_in_process": build(False)}
        timings: dict = {key: [] for key in runs}
        last: dict = {}
        for rnd in range(rounds):  # interleaved rounds: this machine's speed drifts by 10-20 % in minutes
            for key, run in runs.items():
                seconds, load, last[key] = timed(f"round {rnd + 1} {key}", run)
                timings[key].append({"seconds": seconds, "loadavg_1m_before": load})
        base = [t["seconds"] for t in timings["embed_only"]]
        for key in runs:
            secs = [t["seconds"] for t in timings[key]]
            median = statistics.median(secs)
            # throughput over (i)'s in the same round, then the median over rounds
            vs_i = [b / t for b, t in zip(base, secs)]
            res[key] = {"seconds": median, "fastest_s": min(secs), "captions_per_s": n / median,
                        "vs_embed_only": statistics.median(vs_i), "vs_embed_only_rounds": vs_i,
                        "rounds": timings[key]}
            if key.startswith("build"):
                report = last[key][1]
                res[key].update(indexed=report.total, phrases_embedded=report.phrases_embedded,
                                parse_helper=report.parse_helper)
        built_folder = last["build_index"][0]

        # where build_index spends its time, measured step by step on the same captions
        row = {t: i for i, t in enumerate(distinct)}
        t0 = time.perf_counter()
        parsed_distinct = list(parse_texts(nlp, distinct))
        t_parse = time.perf_counter() - t0
        parsed = [parsed_distinct[row[t]] for t in texts]
        phrases = list(dict.fromkeys(x for p in parsed_distinct for x in p.phrases()))
        t0 = time.perf_counter()
        table = PhraseTable(dim)
        table.add(model, phrases)
        t_phr = time.perf_counter() - t0
        t0 = time.perf_counter()
        distinct_vectors = encode(model, distinct)
        t_embed = time.perf_counter() - t0
        vectors = distinct_vectors[[row[t] for t in texts]]
        t0 = time.perf_counter()
        (tmp_root / "parts").mkdir()
        _write_segment(str(tmp_root / "parts"), 1, entries, vectors, parsed, table)
        t_write = time.perf_counter() - t0
        res["breakdown"] = {"spacy_parse_s": t_parse, "sentence_encode_s": t_embed, "phrase_encode_s": t_phr,
                            "distinct_phrases": len(phrases), "write_segment_s": t_write,
                            "sum_s": t_parse + t_embed + t_phr + t_write}
        log(f"        breakdown: parse {t_parse:.1f} s, sentence encode {t_embed:.1f} s, "
            f"{len(phrases)} phrases encode {t_phr:.1f} s, write {t_write:.2f} s")

        # (iii) naive per-caption loop
        sub = entries[:naive_n]
        verb_forms = verb_forms_of(nlp)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        n_vectors, n_parsed, n_phrase = [], [], {}
        for e in sub:
            p = parse_text(nlp, e.caption, verb_forms)  # modifiers split off, then parsed
            n_vectors.append(encode(model, [e.caption])[0])
            for x in p.phrases():
                n_phrase[x] = encode(model, [x])[0]
            n_parsed.append(p)
        folder = tmp_root / "naive"
        folder.mkdir()
        ntable = PhraseTable(dim)
        keys = list(n_phrase)
        ntable.seed(keys, np.stack([n_phrase[k] for k in keys]) if keys else np.zeros((0, dim), np.float32))
        seg = _write_segment(str(folder), 1, sub, np.stack(n_vectors), n_parsed, ntable)
        write_json_atomic(str(folder / MANIFEST), {
            "format": FORMAT, "version": VERSION, "sentence_model": sentence_model_identity(model),
            "spacy_model": spacy_identity(nlp), "dim": dim, "segments": [seg], "count": seg["count"],
            "missing_videos": seg["missing_videos"], "sources": []})
        t_naive = time.perf_counter() - t0
        res["naive_loop"] = {"n": len(sub), "seconds": t_naive, "captions_per_s": len(sub) / t_naive,
                             "loadavg_1m_before": load}
        log(f"  (iii) naive loop: {len(sub)} captions in {t_naive:.1f} s")

        # the naive index and build_index's must hold the same parses and (nearly) the same vectors
        built, naive = load_index(str(built_folder)), load_index(str(folder))
        row_of = {}
        for i, e in enumerate(built.entries(list(range(built.count)))):
            row_of.setdefault(e.key, i)
        bv, nv = built.sentence_vectors(), naive.sentence_vectors()
        same_parse, max_diff = 0, 0.0
        for i, e in enumerate(naive.entries(list(range(naive.count)))):
            j = row_of[e.key]
            nu = [[naive.phrase_texts[x] if x != naive.missing_id else None for x in naive.units[u]]
                  for u in range(naive.unit_offsets[i], naive.unit_offsets[i + 1])]
            bu = [[built.phrase_texts[x] if x != built.missing_id else None for x in built.units[u]]
                  for u in range(built.unit_offsets[j], built.unit_offsets[j + 1])]
            core_n = naive.core_units[i] - naive.unit_offsets[i]
            core_b = built.core_units[j] - built.unit_offsets[j]
            same_parse += nu == bu and core_n == core_b
            max_diff = max(max_diff, float(np.abs(bv[j] - nv[i]).max()))
        res["naive_vs_build_index"] = {"rows": naive.count, "identical_parses": int(same_parse),
                                       "max_abs_sentence_vector_diff": max_diff}
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    build_s = [t["seconds"] for t in res["build_index"]["rounds"]]
    res["ratio_build_over_embed"] = res["build_index"]["vs_embed_only"]
    for key, suffix in (("embed_distinct", "_distinct"), ("embed_pack", "_pack")):
        res["ratio_build_over_embed" + suffix] = statistics.median(
            [t["seconds"] / b for t, b in zip(res[key]["rounds"], build_s)])
    res["ratio_build_over_embed_fastest"] = res["embed_only"]["fastest_s"] / res["build_index"]["fastest_s"]
    return res


def print_build(b: dict) -> str:
    """Part a's table and notes; returns its piece of the SUMMARY line."""
    def row(label, key):
        r = b[key]
        return [label, b["n"], r["seconds"], r["fastest_s"], r["captions_per_s"], r["vs_embed_only"]]

    nl = b["naive_loop"]
    rows_a = [row("(i) Sentence-Transformers encode alone, every caption (batch 128)", "embed_only"),
              row(f"(i') the same, only the {b['distinct_captions']} distinct captions", "embed_distinct"),
              row("(i'') the pack's encode alone (one token length per batch), every caption", "embed_pack"),
              row("(ii) build_index (parse helper: auto)", "build_index"),
              row("(ii') build_index, parsed in-process", "build_in_process"),
              [f"(iii) naive per-caption loop (first {nl['n']})", nl["n"], nl["seconds"], nl["seconds"],
               nl["captions_per_s"], nl["captions_per_s"] / b["embed_only"]["captions_per_s"]]]
    rounds = len(b["build_index"]["rounds"])
    print(C.table(["method", "captions", "median s", "fastest s", "captions/s", "x (i)"], rows_a,
                  title=f"a. Build throughput ({b['n']} MSR-VTT captions, {b['distinct_captions']} distinct; "
                        f"{rounds} interleaved rounds; x (i): median over rounds of the row's throughput over "
                        f"(i)'s in the same round)"))
    ratio = b["ratio_build_over_embed"]
    per_round = ", ".join(f"{x:.2f}" for x in b["build_index"]["vs_embed_only_rounds"])
    print(f"   build_index / encode-alone = {ratio:.2f} (target >= 0.80: {'met' if ratio >= 0.8 else 'MISSED'}; "
          f"rounds: {per_round}; fastest against fastest: {b['ratio_build_over_embed_fastest']:.2f}); against (i') "
          f"distinct captions only: {b['ratio_build_over_embed_distinct']:.2f}; against (i'') the pack's own "
          f"encode alone: {b['ratio_build_over_embed_pack']:.2f}; parse helper: {b['build_index']['parse_helper']}")
    bd = b["breakdown"]
    print(f"   breakdown (measured separately, distinct captions): spaCy parse {bd['spacy_parse_s']:.1f} s, "
          f"sentence encode {bd['sentence_encode_s']:.1f} s, phrase encode {bd['phrase_encode_s']:.1f} s "
          f"({bd['distinct_phrases']} distinct phrases), write segment {bd['write_segment_s']:.2f} s; "
          f"sum {bd['sum_s']:.1f} s vs build_index {b['build_index']['seconds']:.1f} s")
    nv = b["naive_vs_build_index"]
    print(f"   naive index vs build_index: {nv['identical_parses']}/{nv['rows']} identical parses, "
          f"max sentence-vector diff {nv['max_abs_sentence_vector_diff']:.1e}")
    print()
    return (f"build {b['build_index']['captions_per_s']:.0f}/s = {ratio:.2f}x encode-alone "
            f"({b['embed_only']['captions_per_s']:.0f}/s; median of {rounds} rounds; "
            f"{b['ratio_build_over_embed_distinct']:.2f}x on distinct captions only, "
            f"{b['ratio_build_over_embed_pack']:.2f}x the pack's own encode)")


def whole_library(captions, nlp, model, result: dict, wall0: float, log, partial: bool = False) -> int:
    """``--whole-library``: Sentence-Transformers' encode alone (baseline (i)) and build_index (as a user
    runs it) on every MSR-VTT caption, one run each, side by side; the build throughput target at library
    scale."""
    from comfyui_searchpriors.retrieval.index import build_index

    entries = [c.entry for c in captions]
    texts = [e.caption for e in entries]
    n = len(texts)
    st_encode(model, texts[:128])  # warm-up
    tmp_root = C.BENCH_OUT / f"tmp-whole-{os.getpid()}"
    shutil.rmtree(tmp_root, ignore_errors=True)
    try:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        st_encode(model, texts)
        t_embed = time.perf_counter() - t0
        log(f"  (i)  encode alone: {n} captions in {t_embed:.1f} s (load {load:.2f} before)")
        load2 = os.getloadavg()[0]
        t0 = time.perf_counter()
        report = build_index(str(tmp_root / "built"), entries, nlp, model)
        t_build = time.perf_counter() - t0
        log(f"  (ii) build_index: {n} captions in {t_build:.1f} s (load {load2:.2f} before)")
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    ratio = t_embed / t_build
    result["whole_library"] = {
        "captions": n, "distinct_captions": len(set(texts)), "indexed": report.total,
        "embed_only": {"seconds": t_embed, "captions_per_s": n / t_embed, "loadavg_1m_before": load},
        "build_index": {"seconds": t_build, "captions_per_s": n / t_build, "loadavg_1m_before": load2,
                        "parse_helper": report.parse_helper, "phrases_embedded": report.phrases_embedded},
        "ratio_build_over_embed": ratio}
    print()
    print(C.table(["method", "captions", "seconds", "captions/s", "x (i)"],
                  [["(i) Sentence-Transformers encode alone, every caption (batch 128)", n, t_embed,
                    n / t_embed, 1.0],
                   [f"(ii) build_index (parse helper: {report.parse_helper})", n, t_build, n / t_build, ratio]],
                  title=f"a. Build throughput on the whole MSR-VTT train+val ({n} captions, "
                        f"{len(set(texts))} distinct, {report.total} indexed)"))
    summary = (f"SUMMARY speed (whole library): build {n / t_build:.0f}/s = {ratio:.3f}x encode-alone "
               f"({n / t_embed:.0f}/s; target >= 0.80: {'met' if ratio >= 0.8 else 'MISSED'}); "
               f"wall {time.perf_counter() - wall0:.0f} s")
    result["summary"] = summary
    out = C.write_result(NAME + "_whole_library", result, quick=partial)  # --n: keep the full run's file
    print(f"results: {out.relative_to(C.REPO)}")
    print(summary)
    return 0


# ------------------------------------------------------------------------------------------ synthetic

def synthetic_index(real_folder: Path, n: int, seed: int, segment_size: int, log) -> tuple[Path, dict]:
    """Recombine the real index into ``n`` synthetic captions (see the module docstring); cached."""
    from comfyui_searchpriors.retrieval.atomizer import ParsedPrompt, Unit
    from comfyui_searchpriors.retrieval.embedding import PhraseTable
    from comfyui_searchpriors.retrieval.index import MANIFEST, _write_segment, load_index, write_json_atomic
    from comfyui_searchpriors.retrieval.library import LibraryEntry

    prefix = f"synthetic-{n}-{SYNTH_VERSION}-s{seed}-g{segment_size}-"
    folder = C.CACHE / f"{prefix}{real_folder.name}-{C.manifest_hash(real_folder)}"
    info_path = folder.with_name(folder.name + ".build.json")
    if (folder / MANIFEST).is_file() and info_path.is_file():
        log(f"reusing cached synthetic index {folder.relative_to(C.REPO)}")
        info = json.loads(info_path.read_text(encoding="utf-8"))
        info["cached"] = True
        return folder, info
    for old in C.CACHE.glob(prefix + "*"):  # made from an earlier build of the real index
        if old.name != folder.name and old.name != info_path.name:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log(f"writing synthetic index of {n} captions to {folder.relative_to(C.REPO)} ...")
    t_start = time.perf_counter()
    real = load_index(str(real_folder))
    n_real, missing = real.count, real.missing_id
    texts = real.phrase_texts
    V = real.sentence_vectors()

    def txt(pid):
        return None if pid == missing else texts[pid]

    units_txt = [Unit(*(txt(int(x)) for x in row)) for row in real.units]
    offsets = real.unit_offsets
    core_local = np.where(real.core_units >= 0, real.core_units - offsets[:-1], -1)
    core_actor = real.core_role_ids(1)
    table = PhraseTable(real.dim)
    table.seed(texts, real.phrases[:-1])
    rng = np.random.default_rng(seed)
    a_rows = rng.integers(0, n_real, n)
    b_rows = rng.integers(0, n_real, n)
    manifest = {k: real.manifest[k] for k in ("format", "version", "sentence_model", "spacy_model", "dim")}
    manifest.update({"segments": [], "count": 0, "missing_videos": 0, "sources": [],
                     "synthetic": {"from": real_folder.name, "n": n, "seed": seed, "method": SYNTH_VERSION}})
    for ordinal, start in enumerate(range(0, n, segment_size), 1):
        stop = min(start + segment_size, n)
        a, b = a_rows[start:stop], b_rows[start:stop]
        vecs = V[a].astype(np.float32) + V[b]
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        parsed, entries = [], []
        for k in range(stop - start):
            ra, rb, j = int(a[k]), int(b[k]), start + k
            units = units_txt[offsets[ra]:offsets[ra + 1]]
            c = int(core_local[ra])
            if c >= 0:
                u = units[c]
                units = list(units)
                units[c] = Unit(u.motion, txt(int(core_actor[rb])), u.recipient)
                what = units[c].describe()
            else:
                what = "(no units)"
            text = f"synthetic {j}: {what} [units of row {ra}, actor of row {rb}]"
            parsed.append(ParsedPrompt(text, units, max(c, 0)))
            entries.append(LibraryEntry(f"syn{j:07d}", text, None))
        manifest["segments"].append(_write_segment(str(folder), ordinal, entries, vecs, parsed, table))
        if ordinal % 10 == 0:
            log(f"  {stop}/{n}")
    manifest["count"] = n
    manifest["missing_videos"] = n
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json_atomic(str(folder / MANIFEST), manifest)
    info = {"n": n, "seconds": time.perf_counter() - t_start, "segment_size": segment_size, "seed": seed,
            "from": real_folder.name}
    info_path.write_text(json.dumps(info, indent=1), encoding="utf-8")
    info["cached"] = False
    del real, V
    gc.collect()
    return folder, info


# ------------------------------------------------------------------------------------------ b./c.

def bench_latency(folder: Path, atomized, params_by_mode, probe: RssProbe, log) -> dict:
    from comfyui_searchpriors.retrieval.index import load_index
    from comfyui_searchpriors.retrieval.search import search

    rss = probe.measure(folder)
    t0 = time.perf_counter()
    index = load_index(str(folder))
    load_s = time.perf_counter() - t0
    out = {"folder": folder.name, "count": index.count, "phrase_rows": int(len(index.phrases)),
           "distinct_phrases": len(set(index.phrase_texts)), "units": int(len(index.units)),
           "load_s": load_s, "load_rss": rss, "modes": {}}
    log(f"  {index.summary()}; loaded in {load_s:.1f} s; peak RSS of loading (subprocess) "
        f"{rss['after_load_maxrss_mb']:.0f} MB (baseline {rss['baseline_maxrss_mb']:.0f} MB)")
    results = {}
    rss_before = _proc_status_mb("VmRSS")
    for mode in MODES:
        params = params_by_mode[mode]
        t0 = time.perf_counter()
        search(index, atomized[0], params)
        first = (time.perf_counter() - t0) * 1e3
        times, rows, cands = [], [], []
        for a in atomized:
            t0 = time.perf_counter()
            r = search(index, a, params)
            times.append((time.perf_counter() - t0) * 1e3)
            rows.append([h.row for h in r.hits])
            if r.rounds:
                cands.append({"rounds": [list(x) for x in r.rounds]})
        out["modes"][mode] = {"first_search_ms": first, "search_ms": C.percentiles(times), "times_ms": times,
                              "rounds": cands}
        results[mode] = rows
        p = out["modes"][mode]["search_ms"]
        log(f"    {mode}: p50 {p['p50']:.1f} ms, p95 {p['p95']:.1f} ms (first {first:.0f} ms)")
    cache = index.__dict__.get("_derived", {})
    out["search_cache_mb"] = sum(getattr(v, "nbytes", 0) for v in cache.values()) / 2**20
    out["rss_rise_while_searching_mb"] = _proc_status_mb("VmRSS") - rss_before
    log(f"    arrays cached on the index by searching: {out['search_cache_mb']:.0f} MB; process RSS rose "
        f"{out['rss_rise_while_searching_mb']:.0f} MB while searching")
    return out, index, results


def literal_check(index, atomized, fast_rows, labels, rr, params_by_mode, log, what: str) -> dict:
    """Compare the fast path's top-k rows with tests/reference_ranking.py over the same index."""
    t0 = time.perf_counter()
    captions = rr.captions_from_index(index)
    prep_s = time.perf_counter() - t0
    log(f"  literal reference at {what}: captions_from_index in {prep_s:.1f} s")
    out = {"captions_from_index_s": prep_s, "modes": {}}
    for mode in MODES:
        p = params_by_mode[mode]
        same, details, t_mode = 0, [], time.perf_counter()
        for a, fast, label in zip(atomized, fast_rows[mode], labels):
            prompt = rr.caption_from_atomized(a)
            if mode == "search_t2v":
                lit = rr.search_t2v(captions, prompt, top_k=p.top_k, t_total=p.t_total, t_mot=p.t_mot,
                                    t_atr=p.t_atr, alpha=p.alpha, beta=p.beta, gamma=p.gamma, min_keep=p.min_keep)
                lit_rows = [i for i, _ in lit]
                lit_scores = [parts["score"] for _, parts in lit]
            else:
                lit = rr.pos(captions, prompt, top_k=p.top_k)
                lit_rows = [i for i, _ in lit]
                lit_scores = [s for _, s in lit]
            ok = lit_rows == list(fast)
            same += ok
            if not ok:
                # score both lists with the literal implementation: a gap of ~1e-7 at every rank means
                # the lists differ only in the order or choice of (near-)tied captions
                if mode == "search_t2v":
                    dim = len(prompt.v_total)
                    fast_scores = [rr.score(captions[i], prompt, p.alpha, p.beta, p.gamma, dim)["score"] for i in fast]
                else:
                    fast_scores = [rr.cosine(captions[i].v_total, prompt.v_total) for i in fast]
                gap = max(abs(x - y) for x, y in zip(fast_scores, lit_scores)) if len(fast_scores) == len(lit_scores) \
                    else float("inf")
                details.append({"query": label, "fast": list(fast), "literal": lit_rows, "literal_scores": lit_scores,
                                "literal_scores_of_fast_rows": fast_scores, "max_rankwise_score_gap": gap})
        secs = time.perf_counter() - t_mode
        near = sum(d["max_rankwise_score_gap"] <= NEAR_TIE for d in details)
        out["modes"][mode] = {"identical": same, "queries": len(labels), "mismatches": details, "seconds": secs,
                              "mismatches_within_near_tie": near}
        log(f"    {mode}: top-{p.top_k} identical: {same}/{len(labels)} (literal took {secs:.0f} s)"
            + (f"; of the {len(details)} others, {near} differ only among captions whose literal scores are "
               f"within {NEAR_TIE:g} rank by rank" if details else ""))
    del captions
    gc.collect()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--n", type=int, default=None, help="captions for the build benchmark (default 5000)")
    ap.add_argument("--naive-n", type=int, default=None, help="captions for the naive loop (default 200)")
    ap.add_argument("--synthetic-n", type=int, default=None, help="synthetic index size (default 1,000,000)")
    ap.add_argument("--no-literal-1m", action="store_true", help="skip the literal check at the synthetic index")
    ap.add_argument("--skip-build", action="store_true", help="skip part a")
    ap.add_argument("--build-only", action="store_true", help="only part a")
    ap.add_argument("--whole-library", action="store_true",
                    help="only: (i) and (ii) of part a once each on every MSR-VTT caption (~16 min; --n limits)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached MSR-VTT index (and the synthetic one)")
    ap.add_argument("--rss-server", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_server:
        return rss_server()
    root = C.require_shared_data(C.MSRVTT_REL, C.PROMPTS_REL)
    probe = RssProbe()  # before any model or index is loaded (see rss_server)
    try:
        return run(args, root, probe)
    finally:
        probe.close()


def run(args, root, probe: RssProbe) -> int:
    quick = args.quick
    n_build = args.n or (500 if quick else 5000)
    naive_n = args.naive_n or (50 if quick else 200)
    n_synth = args.synthetic_n or (20_000 if quick else 1_000_000)
    n_heldout_latency = 10 if quick else 90
    n_heldout_exact = 5 if quick else 20
    wall0 = time.perf_counter()
    log = print

    from comfyui_searchpriors.retrieval.embedding import atomize
    from comfyui_searchpriors.retrieval.search import SearchParams

    env = C.environment()
    rr = C.load_reference()
    nlp, model, model_s = C.load_models()
    captions = C.load_msrvtt(root / C.MSRVTT_REL)
    prompts = C.paper_prompts(root)
    log(f"models loaded in {model_s:.1f} s; {len(captions)} MSR-VTT captions; load average {os.getloadavg()[0]:.2f}")
    result = {"benchmark": NAME, "quick": quick, "environment": env}
    if args.whole_library:
        return whole_library(captions[:args.n] if args.n else captions, nlp, model, result, wall0, log,
                             partial=bool(args.n))

    # ---------------------------------------------------------------- a
    if not args.skip_build:
        log(f"a. build throughput on the first {n_build} MSR-VTT captions")
        result["build"] = bench_build(captions, n_build, naive_n, nlp, model, log, rounds=1 if quick else 3)

    if args.build_only:
        print()
        summary = "SUMMARY speed (build only): " + print_build(result["build"])
        result["summary"] = summary
        out = C.write_result(NAME + "_build", result, quick=quick)
        print(f"results: {out.relative_to(C.REPO)}")
        print(summary)
        return 0

    # ---------------------------------------------------------------- b
    queries, rest = C.heldout_split(captions, 100 if quick else None)
    real_folder, real_build = C.cached_index("msrvtt-heldout", rest, nlp, model, log, rebuild=args.rebuild)
    synth_folder, synth_build = synthetic_index(real_folder, n_synth, seed=0, segment_size=20000, log=log)
    step = max(1, len(queries) // n_heldout_latency)
    held = [q.entry.caption for q in queries[::step][:n_heldout_latency]]
    query_texts = prompts + held
    labels = [f"paper: {p}" for p in prompts] + [f"msrvtt {q.video_id}: {q.entry.caption}"
                                                  for q in queries[::step][:n_heldout_latency]]
    atomize(query_texts[0], nlp, model)  # warm-up
    atomized, atomize_ms = [], []
    for t in query_texts:
        t0 = time.perf_counter()
        atomized.append(atomize(t, nlp, model))
        atomize_ms.append((time.perf_counter() - t0) * 1e3)
    result["atomize_ms"] = C.percentiles(atomize_ms)
    # the same with one torch thread: with two threads on two busy cores a one-sentence encode can wait
    # for a descheduled worker thread at every barrier
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        atomize(query_texts[0], nlp, model)
        one = []
        for t in query_texts:
            t0 = time.perf_counter()
            atomize(t, nlp, model)
            one.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(threads)
    result["atomize_ms_1_thread"] = C.percentiles(one)
    result["atomize_threads_default"] = threads
    result["queries"] = labels
    log(f"b. query latency: {len(query_texts)} queries ({len(prompts)} paper prompts + {len(held)} held-out "
        f"MSR-VTT captions); atomize p50 {result['atomize_ms']['p50']:.1f} ms, "
        f"p95 {result['atomize_ms']['p95']:.1f} ms")
    params_by_mode = {m: SearchParams(mode=m, top_k=10) for m in MODES}
    result["params"] = {m: vars(p) for m, p in params_by_mode.items()}
    latency, exact = {}, {}
    n_exact = len(prompts) + n_heldout_exact

    log(f" index 'msrvtt' ({real_folder.name})")
    latency["msrvtt"], index, rows = bench_latency(real_folder, atomized, params_by_mode, probe, log)
    latency["msrvtt"]["build"] = real_build
    exact["msrvtt"] = literal_check(index, atomized[:n_exact], {m: rows[m][:n_exact] for m in MODES},
                                    labels[:n_exact], rr, params_by_mode, log, f"{index.count} captions")
    del index
    gc.collect()

    log(f" index 'synthetic' ({synth_folder.name})")
    latency["synthetic"], index, rows = bench_latency(synth_folder, atomized, params_by_mode, probe, log)
    latency["synthetic"]["build"] = synth_build
    if args.no_literal_1m:
        exact["synthetic"] = {"skipped": "--no-literal-1m"}
    else:
        n_p = len(prompts)
        exact["synthetic"] = literal_check(index, atomized[:n_p], {m: rows[m][:n_p] for m in MODES},
                                           labels[:n_p], rr, params_by_mode, log, f"{index.count} captions")
    del index
    gc.collect()
    result["latency"], result["exactness"] = latency, exact

    # ---------------------------------------------------------------- report
    print()
    summary_bits = []
    if "build" in result:
        summary_bits.append(print_build(result["build"]))
    rows_b = []
    for name, lat in latency.items():
        for mode in MODES:
            p = lat["modes"][mode]["search_ms"]
            rows_b.append([f"{name} ({lat['count']:,})", mode, p["p50"], p["p95"], p["mean"],
                           lat["modes"][mode]["first_search_ms"],
                           f"{lat['load_rss']['after_load_maxrss_mb']:.0f} "
                           f"(+{lat['load_rss']['after_load_maxrss_mb'] - lat['load_rss']['baseline_maxrss_mb']:.0f})",
                           lat["load_rss"]["load_s"]])
    print(C.table(["index", "mode", "p50 ms", "p95 ms", "mean ms", "first ms", "load peak RSS MB (+rise)", "load s"],
                  rows_b,
                  title=f"b. search() latency per query ({len(query_texts)} queries, top_k=10; atomize excluded)"))
    a_ms = result["atomize_ms"]
    a1 = result["atomize_ms_1_thread"]
    print(f"   atomize (embedding.atomize, per prompt): p50 {a_ms['p50']:.1f} ms, p95 {a_ms['p95']:.1f} ms with "
          f"{result['atomize_threads_default']} torch threads; p50 {a1['p50']:.1f} ms, p95 {a1['p95']:.1f} ms "
          f"with 1 torch thread")
    for name, lat in latency.items():
        print(f"   {name}: {lat['count']:,} captions, {lat['units']:,} units, {lat['phrase_rows'] - 1:,} phrase rows "
              f"loaded ({lat['distinct_phrases']:,} distinct texts); searching cached {lat['search_cache_mb']:.0f} MB "
              f"of arrays on the index (process RSS +{lat['rss_rise_while_searching_mb']:.0f} MB)")
    if latency["msrvtt"]["build"].get("stale_code"):
        print("   warning: the cached MSR-VTT index was built by other code of retrieval/ (--rebuild rebuilds it)")
    syn = latency["synthetic"]["modes"]["search_t2v"]["search_ms"]["p50"]
    print(f"   search_t2v p50 at {latency['synthetic']['count']:,}: {syn:.1f} ms (target <= 100 ms: "
          f"{'met' if syn <= 100 else 'MISSED'})")
    summary_bits.append(f"search_t2v p50 {latency['msrvtt']['modes']['search_t2v']['search_ms']['p50']:.1f} ms "
                        f"@{latency['msrvtt']['count'] // 1000}k, {syn:.1f} ms "
                        f"@{latency['synthetic']['count'] // 1000}k; "
                        f"pos p50 {latency['synthetic']['modes']['pos']['search_ms']['p50']:.1f} ms "
                        f"@{latency['synthetic']['count'] // 1000}k")
    print()
    rows_c = []
    for name, ex in exact.items():
        if "modes" not in ex:
            rows_c.append([name, "-", ex.get("skipped", "skipped"), "-", "-"])
            continue
        for mode in MODES:
            m = ex["modes"][mode]
            rows_c.append([f"{name} ({latency[name]['count']:,})", mode,
                           f"top-10 identical: {m['identical']}/{m['queries']}",
                           f"{m['mismatches_within_near_tie']}/{m['queries'] - m['identical']}", m["seconds"]])
            summary_bits.append(f"{name} {mode} {m['identical']}/{m['queries']}")
    print(C.table(["index", "mode", "fast path vs literal Eqs. 6-9 / Eq. 3", f"others within {NEAR_TIE:g}",
                   "literal s"], rows_c,
                  title="c. Exactness of the fast path against tests/reference_ranking.py"))
    for name, ex in exact.items():
        for mode in MODES:
            for d in ex.get("modes", {}).get(mode, {}).get("mismatches", [])[:3]:
                print(f"   mismatch {name}/{mode}: {d['query']} (max rank-wise literal score gap "
                      f"{d['max_rankwise_score_gap']:.1e})\n     fast    {d['fast']}\n     literal {d['literal']}")
    wall = time.perf_counter() - wall0
    result["wall_s"] = wall
    result["loadavg_at_end"] = list(os.getloadavg())
    summary = "SUMMARY speed: " + "; ".join(summary_bits) + f"; wall {wall:.0f} s"
    result["summary"] = summary
    out = C.write_result(NAME, result, quick=quick)
    print(f"results: {out.relative_to(C.REPO)}")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
