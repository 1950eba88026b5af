"""The ``searchpriors`` command: build a motion index, search it, atomize prompts, outside ComfyUI.

    searchpriors index build --library PATH [--format auto|csv|jsonl|webvid|msrvtt] --out DIR [--lock-timeout S]
    searchpriors index build-distributed --library PATH --out DIR (--scheduler ADDRESS | --workers N)
                                                                (the same build spread over a Dask cluster)
    searchpriors index upgrade --index DIR [--compress-min N]   (current format; coarse index for large ones)
    searchpriors index clips --folder DIR --captioner MODEL_DIR --out DIR   (cut, caption and index a folder of videos)
    searchpriors search --index DIR [--mode search_t2v|pos] [--k K] [--json] PROMPT
    searchpriors search --index DIR --queries FILE --json       (one prompt per line -> one JSON per line)
    searchpriors atomize [--json] PROMPT
    searchpriors atomize --queries FILE --json

Errors print one message to stderr and exit with status 2 (bad input), 75 (the index stayed locked by another
build longer than --lock-timeout: try again later) or 1 (anything else). With
``--queries`` a prompt that fails does not stop the batch: its line of output is a JSON object
``{"prompt": ..., "error": ...}`` (with ``--json``; else an ``error:`` line) in its place, the others go on,
a summary goes to stderr, and the exit status is 0 when every prompt succeeded, 3 when some failed.
``index build-distributed`` exits with 3 when some shards failed (the rest is published; run it again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from .atomizer import MAX_PROMPT_CHARS
from ..errors import SearchPriorsError
from .library import FORMATS

EXIT_BAD_INPUT = 2
EXIT_BUSY = 75  # sysexits' EX_TEMPFAIL: nothing wrong with the input, try again later
EXIT_SOME_FAILED = 3  # --queries: some prompts failed (each has an error line in its place)


def _queries(path: str) -> list[str]:
    if path == "-":
        text = sys.stdin.read()
    elif os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    else:
        raise SearchPriorsError(f"Queries file '{path}' does not exist: give a text file with one prompt per line.")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _encoder_device(name: str) -> str:
    """``--device``: auto = the first GPU when torch sees one, else the CPU."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _models(args, manifest: Optional[dict] = None, device: str = "cpu"):
    from .models import DEFAULT_SENTENCE_MODEL, DEFAULT_SPACY_MODEL, load_sentence_model, load_spacy

    sentence = args.sentence_model or (manifest["sentence_model"].rsplit("/", 1)[0] if manifest else None)
    spacy_name = args.spacy_model
    if spacy_name is None and manifest:
        # recorded as "<lang>_<name>@<version>"; the package name is the part before '@'
        spacy_name = manifest["spacy_model"].split("@", 1)[0]
    nlp = load_spacy(spacy_name or DEFAULT_SPACY_MODEL)
    return nlp, load_sentence_model(sentence or DEFAULT_SENTENCE_MODEL, device=device)


def cmd_index_build(args) -> int:
    from .index import build_index
    from .library import file_fingerprint, read_library

    entries, report = read_library(args.library, args.format, args.videos)
    print(report.summary(), file=sys.stderr)
    nlp, encoder = _models(args, device=_encoder_device(args.device))
    source = {"path": os.path.abspath(args.library), "format": report.format,
              "sha256_32": file_fingerprint(args.library)}
    build = build_index(args.out, entries, nlp, encoder, progress=_progress_line(), source=source,
                        segment_size=args.segment_size,
                        parse_helper={"auto": None, "on": True, "off": False}[args.parse_helper],
                        parse_helpers=args.parse_helpers, lock_timeout=args.lock_timeout)
    print(file=sys.stderr)
    print(build.summary())
    return 0


def _progress_line():
    last = [-1]

    def progress(done: int, total: int) -> None:
        step = max(total // 20, 1)
        if done == total or done // step != last[0]:
            last[0] = done // step
            print(f"\rindexing {done}/{total}", end="", file=sys.stderr, flush=True)

    return progress


def cmd_index_build_distributed(args) -> int:
    from .distributed import build_index_distributed, local_cluster, require_dask
    from .library import file_fingerprint, read_library

    distributed = require_dask()
    if not args.verbose:  # Dask's own log lines (workers closing); a failed shard is in the summary
        import logging

        logging.getLogger("distributed").setLevel(logging.ERROR)
    if args.shard_size < 1:
        raise SearchPriorsError(f"--shard-size must be at least 1, got {args.shard_size}.")
    entries, report = read_library(args.library, args.format, args.videos)
    print(report.summary(), file=sys.stderr)
    nlp, encoder = _models(args)  # the driver's copies: the index's model identities (workers load their own)
    source = {"path": os.path.abspath(args.library), "format": report.format,
              "sha256_32": file_fingerprint(args.library)}
    cluster = None
    if args.scheduler:
        client = distributed.Client(args.scheduler, timeout=args.connect_timeout)
    else:
        cluster, client = local_cluster(args.workers)
    try:
        print(f"cluster: {len(client.scheduler_info().get('workers', {}))} workers at "
              f"{client.scheduler.address}", file=sys.stderr)
        build = build_index_distributed(args.out, entries, nlp, encoder, client, shard_size=args.shard_size,
                                        device=args.device, parse_helpers=args.worker_parse_helpers,
                                        source=source, resources={"GPU": 1} if args.gpu_resource else None,
                                        progress=_progress_line(), lock_timeout=args.lock_timeout)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    print(file=sys.stderr)
    print(build.summary())
    return EXIT_SOME_FAILED if build.failures else 0


def cmd_index_upgrade(args) -> int:
    from .coarse import upgrade_index

    print(upgrade_index(args.index, compress_min_rows=args.compress_min, nlist=args.nlist,
                        lock_timeout=args.lock_timeout, log=lambda text: print(text, file=sys.stderr)))
    return 0


def _report_batch(kind: str, total: int, failed: int) -> int:
    """The batch's stderr summary line and exit status (0 all good, 3 some failed)."""
    print(f"searchpriors {kind}: {total - failed} of {total} prompts done, {failed} failed"
          + (" (error lines in their place)" if failed else ""), file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


ECHO_CHARS = 2000  # an error line echoes at most this much of its prompt (an oversized one is cut short)


def _error_line(prompt: str, error: Exception, as_json: bool) -> str:
    if as_json:
        line = {"prompt": prompt if len(prompt) <= ECHO_CHARS else prompt[:ECHO_CHARS] + "...", "error": str(error)}
        if len(prompt) > ECHO_CHARS:
            line["prompt_chars"] = len(prompt)
        return json.dumps(line, ensure_ascii=False)
    return f"error: {prompt[:200]!r}: {error}"


def cmd_index_clips(args) -> int:
    from .captioner import DEFAULT_CAPTION_PROMPT, load_captioner
    from .clip_library import ClipSettings, build_clip_library

    captioner = load_captioner(args.captioner, device=args.device)
    nlp, encoder = _models(args)

    def progress(done: int, total: int) -> None:
        print(f"\rclips {done}/{total}", end="", file=sys.stderr, flush=True)

    settings = ClipSettings(frames_per_shot=args.frames_per_shot, threshold=args.cut_threshold,
                            ratio=args.cut_ratio, min_shot_s=args.min_shot_seconds)
    report = build_clip_library(args.folder, args.out, captioner, nlp, encoder,
                                prompt=args.prompt or DEFAULT_CAPTION_PROMPT, settings=settings,
                                batch_size=args.batch_size, progress=progress, lock_timeout=args.lock_timeout)
    print(file=sys.stderr)
    print(report.summary())
    return 0


def cmd_search(args) -> int:
    from .embedding import atomize, atomize_many
    from .index import load_index, read_manifest
    from .search import SearchParams, search

    manifest = read_manifest(args.index)
    index = load_index(args.index)
    nlp, encoder = _models(args, manifest)
    params = SearchParams(mode=args.mode, top_k=args.k, ranking=args.ranking, pool=args.pool).validate()
    if not args.queries:
        result = search(index, atomize(args.prompt, nlp, encoder, args.max_chars), params)
        print(json.dumps(result.to_json(), ensure_ascii=False) if args.json else result.report())
        return 0
    prompts = _queries(args.queries)
    failed = 0
    for prompt, atomized in zip(prompts, atomize_many(prompts, nlp, encoder, args.max_chars)):
        try:
            if isinstance(atomized, Exception):
                raise atomized
            result = search(index, atomized, params)
            line = json.dumps(result.to_json(), ensure_ascii=False) if args.json else result.report()
        except Exception as exc:  # one prompt's failure never stops the batch
            failed += 1
            line = _error_line(prompt, exc, args.json)
        print(line, flush=True)
    return _report_batch("search", len(prompts), failed)


def cmd_atomize(args) -> int:
    from .embedding import atomize, atomize_many

    nlp, encoder = _models(args)
    if not args.queries:
        atomized = atomize(args.prompt, nlp, encoder, args.max_chars)
        print(json.dumps(atomized.to_json(with_vectors=args.vectors), ensure_ascii=False) if args.json
              else atomized.describe())
        return 0
    prompts = _queries(args.queries)
    failed = 0
    for prompt, atomized in zip(prompts, atomize_many(prompts, nlp, encoder, args.max_chars)):
        if isinstance(atomized, Exception):
            failed += 1
            line = _error_line(prompt, atomized, args.json)
        elif args.json:
            line = json.dumps(atomized.to_json(with_vectors=args.vectors), ensure_ascii=False)
        else:
            line = atomized.describe()
        print(line, flush=True)
    return _report_batch("atomize", len(prompts), failed)


def _max_chars(value: str) -> Optional[int]:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or a positive number of characters")
    return number or None


def _quiet_libraries() -> None:
    """Keeps library chatter off stderr: faiss' instruction-set probe ("Could not load library with AVX512
    support") and transformers' "Loading weights" bars. ``--verbose`` leaves them on."""
    import logging

    logging.getLogger("faiss").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="searchpriors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true",
                        help="show the libraries' own messages and progress bars on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_max_chars(p):
        p.add_argument("--max-chars", type=_max_chars, default=MAX_PROMPT_CHARS, metavar="N",
                       help=f"refuse prompts longer than N characters before parsing (default {MAX_PROMPT_CHARS:,}; "
                            f"0 = no limit)")

    def add_models(p):
        p.add_argument("--spacy-model", default=None, help="spaCy package or folder (default en_core_web_sm)")
        p.add_argument("--sentence-model", default=None,
                       help="Sentence-Transformers name or folder (default all-MiniLM-L6-v2)")

    index = sub.add_parser("index", help="motion index commands")
    index_sub = index.add_subparsers(dest="index_command", required=True)
    build = index_sub.add_parser("build", help="build or extend a motion index from a captioned library")
    build.add_argument("--library", required=True, help="CSV, JSONL, WebVid CSV or MSR-VTT JSON")
    build.add_argument("--format", default="auto", choices=FORMATS)
    build.add_argument("--out", required=True, help="index folder (created; extended if it exists)")
    build.add_argument("--videos", default=None, help="folder of the video files (default: the library's)")
    build.add_argument("--segment-size", type=int, default=20000, help="captions per committed segment")
    build.add_argument("--parse-helper", default="auto", choices=("auto", "on", "off"),
                       help="parse in a helper process while embedding (auto: from 2,000 new captions on 2+ CPUs)")
    build.add_argument("--parse-helpers", type=int, default=None, metavar="N",
                       help="how many helper processes parse (default: every core but one when the encoder is on "
                            "a GPU, about a fifth of the cores on the CPU, at least one)")
    build.add_argument("--device", default="auto", help="the sentence encoder's torch device: auto (a GPU when "
                                                        "there is one), cpu, cuda, cuda:1")
    build.add_argument("--lock-timeout", type=float, default=600.0, metavar="SECONDS",
                       help="while another build (CLI or ComfyUI) holds the index's lock, wait this long for it "
                            "(default 600; 0 = fail at once). The lock is held only while publishing, not while "
                            "embedding, so builds run side by side and the index gets the union of their captions")
    add_models(build)
    build.set_defaults(func=cmd_index_build)

    dist = index_sub.add_parser("build-distributed",
                                help="the same build spread over a Dask cluster: workers parse and embed shards "
                                     "of the library (pip install comfyui-searchpriors[distributed])")
    dist.add_argument("--library", required=True, help="CSV, JSONL, WebVid CSV or MSR-VTT JSON")
    dist.add_argument("--format", default="auto", choices=FORMATS)
    dist.add_argument("--out", required=True, help="index folder, at the same path on every worker (a shared "
                                                   "file system with file locks); created; extended if it exists")
    dist.add_argument("--videos", default=None, help="folder of the video files (default: the library's)")
    where = dist.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="a running Dask scheduler (tcp://host:8786); workers started with "
                            "`dask worker ADDRESS --nthreads 1`")
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="no scheduler: a local cluster of N worker processes on this machine (default: one "
                            "per core)")
    dist.add_argument("--shard-size", type=int, default=20000, metavar="N",
                      help="captions per task (and per segment); a crashed worker loses at most one shard")
    dist.add_argument("--device", default="auto", help="the workers' encoder device: auto (a GPU when the worker "
                                                       "has one), cpu, cuda")
    dist.add_argument("--worker-parse-helpers", type=int, default=0, metavar="N",
                      help="parse helper processes per worker (for GPU workers with spare cores; default 0)")
    dist.add_argument("--gpu-resource", action="store_true",
                      help="each task needs the Dask resource GPU=1 (workers started with --resources GPU=1)")
    dist.add_argument("--connect-timeout", type=float, default=30.0, metavar="SECONDS",
                      help="how long to try reaching --scheduler")
    dist.add_argument("--lock-timeout", type=float, default=600.0, metavar="SECONDS",
                      help="wait this long for the index's lock while another build publishes (0 = fail at once)")
    add_models(dist)
    dist.set_defaults(func=cmd_index_build_distributed)

    upgrade = index_sub.add_parser("upgrade", help="bring an existing index to the current format: checksums, and "
                                                   "from --compress-min captions on the coarse index of "
                                                   "memory-bounded search (see docs/scale.md)")
    upgrade.add_argument("--index", required=True, help="index folder")
    upgrade.add_argument("--compress-min", type=int, default=None, metavar="N",
                         help="captions from which the index is searched compressed (default 500,000 or "
                              "SEARCHPRIORS_COMPRESS_MIN)")
    upgrade.add_argument("--nlist", type=int, default=None, help="k-means lists of the coarse index (default ~sqrt(N))")
    upgrade.add_argument("--lock-timeout", type=float, default=600.0, metavar="SECONDS",
                         help="wait this long while a build holds the index (0 = fail at once)")
    upgrade.set_defaults(func=cmd_index_upgrade)

    clips = index_sub.add_parser("clips", help="cut a folder of videos into shots, caption them and index them "
                                               "(incremental: a rerun does only new or changed clips)")
    clips.add_argument("--folder", required=True, help="folder of videos (mp4, webm, mov, mkv; subfolders too)")
    clips.add_argument("--out", required=True, help="index folder (created; extended if it exists)")
    clips.add_argument("--captioner", required=True, metavar="MODEL_DIR",
                       help="vision-language model folder (Qwen2.5-VL, Qwen2-VL, Florence-2, or the toy captioner)")
    clips.add_argument("--prompt", default=None, help="what the captioner is asked (default: one subject, its "
                                                      "motion, its object)")
    clips.add_argument("--device", default="cpu", help="torch device of the captioner (cpu, cuda, cuda:1)")
    clips.add_argument("--frames-per-shot", type=int, default=8, help="frames sampled evenly from each shot")
    clips.add_argument("--cut-threshold", type=float, default=0.015,
                       help="least mean frame difference (0..1) that can be a cut")
    clips.add_argument("--cut-ratio", type=float, default=3.0,
                       help="a cut's frame difference over the mean of its neighbours")
    clips.add_argument("--min-shot-seconds", type=float, default=0.4, help="no cut closer than this to the last one")
    clips.add_argument("--batch-size", type=int, default=4, help="shots captioned at once")
    clips.add_argument("--lock-timeout", type=float, default=600.0, metavar="SECONDS",
                       help="wait this long while another build holds the index (0 = fail at once)")
    add_models(clips)
    clips.set_defaults(func=cmd_index_clips)

    search = sub.add_parser("search", help="rank library videos for a prompt")
    search.add_argument("--index", required=True)
    search.add_argument("--mode", default="search_t2v", choices=("search_t2v", "pos"))
    search.add_argument("--k", type=int, default=5)
    from .search import DEFAULT_POOL, DEFAULT_RANKING, RANKINGS

    search.add_argument("--ranking", default=DEFAULT_RANKING, choices=RANKINGS,
                        help=f"search_t2v's ranking (default {DEFAULT_RANKING}; see docs/nodes.md, Motion Retriever)")
    search.add_argument("--pool", type=int, default=DEFAULT_POOL, metavar="N",
                        help=f"pool_video_support: the N captions nearest to the prompt it ranks (default {DEFAULT_POOL})")
    search.add_argument("--json", action="store_true", help="one JSON object per prompt")
    search.add_argument("--queries", default=None, help="file with one prompt per line ('-' = stdin)")
    search.add_argument("prompt", nargs="?", default=None)
    add_max_chars(search)
    add_models(search)
    search.set_defaults(func=cmd_search)

    atom = sub.add_parser("atomize", help="show a prompt's atomized units")
    atom.add_argument("--json", action="store_true")
    atom.add_argument("--vectors", action="store_true", help="include the vectors in --json output")
    atom.add_argument("--queries", default=None, help="file with one prompt per line ('-' = stdin)")
    atom.add_argument("prompt", nargs="?", default=None)
    add_max_chars(atom)
    add_models(atom)
    atom.set_defaults(func=cmd_atomize)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) in ("search", "atomize") and not args.queries and args.prompt is None:
        print("searchpriors: error: give a PROMPT or --queries FILE", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.verbose:
        _quiet_libraries()
    from .index_files import IndexBusyError

    try:
        return args.func(args)
    except IndexBusyError as exc:
        print(f"searchpriors: busy: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except SearchPriorsError as exc:
        print(f"searchpriors: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("searchpriors: interrupted; the published index is unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
