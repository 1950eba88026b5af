"""A motion index build spread over the workers of a Dask cluster (optional: ``pip install
comfyui-searchpriors[distributed]``, i.e. ``dask[distributed]``).

The driver (``build_index_distributed``) does what ``index.build_index`` does around the work: it claims a
build of the index folder, takes over interrupted builds' staged segments and lists the captions still to
index (``index._plan_build``). It cuts those into shards and hands each shard to a worker as one task
(``build_shard``). A worker is a build of its own in the index's format and protocol: it claims a build id
(``index_files.BuildClaim``: a liveness lock), parses and embeds its shard with the same code as a local
build (``index._CaptionCache``: spaCy parse, sentence and phrase vectors), writes its segments (``seg-<its
id>-NNNN``, checked files, renamed into place) and lists them in its own ``staging-<its id>.json``, then
ends its claim. When every task has ended the driver takes the workers' staged segments over like those of
any interrupted build (``index._take_over_interrupted``, under the writers' lock) and publishes them all in
one step through the index's lock-safe merge (``index._publish``: keys deduplicated against what other
builds published meanwhile, manifest replaced atomically).

So a worker that crashes loses at most its own shard: segments it had not listed are leftovers that the
next publish removes, segments it had listed are published by this driver or taken over by the next build,
and the captions of its lost shard are simply still to do, so running the same build again finishes them.
The published index is never half-written. Every worker must see the index folder at the same path (one
machine, or a shared file system with working ``flock``, such as NFSv4 or Lustre) and have the pack and the
same models installed; the driver checks each worker's model identities against its own.

Workers need no GPU; one with a GPU encodes there (``device="auto"``). Each task holds one worker thread;
start CPU workers with one thread each (``dask worker ADDRESS --nthreads 1``) and GPU workers one per GPU
(``CUDA_VISIBLE_DEVICES=i dask worker ADDRESS --nthreads 1``), giving GPU workers parse helper processes
(``parse_helpers``) for the cores beside them.

Dask rather than Ray (measured here, benchmarks/README.md): ``dask[distributed]`` installs 45 MB with its
dependencies against 592 MB for ``ray[data]``, starts a two-worker local cluster in 1.1 s against 6.7 s, and
runs on plain Python processes that this pack's tests can start and kill on a 2-core machine.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from . import index as ix
from . import index_files as files
from .embedding import BATCH_TOKENS, PhraseTable, embedding_dim, sentence_model_identity
from ..errors import MissingDependencyError, MotionIndexError, SearchPriorsError
from .library import LibraryEntry
from .models import spacy_identity

# Test hook: SEARCHPRIORS_DIST_FAULT=<shard>:<step> in the driver's environment makes the worker that runs
# that shard stop like a power cut at index_files fault point <step> (a worker process killed mid-shard).
SHARD_FAULT_ENV = "SEARCHPRIORS_DIST_FAULT"
DEFAULT_SHARD_SIZE = 20000


def require_dask():
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError("dask[distributed]", "The distributed index build "
                                     "(pip install comfyui-searchpriors[distributed])") from exc
    return distributed


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the driver's models, and what their identities must be."""

    spacy_location: str          # package name or pipeline folder (``models.load_spacy``)
    spacy_id: str
    sentence_name: str           # model name or folder (``models.load_sentence_model``)
    sentence_id: str
    device: str = "auto"         # the workers' encoder device: auto (a GPU when the worker has one), cpu, cuda
    encoder: Optional[bytes] = None  # an encoder object, pickled (cloudpickle), sent instead of loading by name

    @classmethod
    def of(cls, nlp, sentence_model, device: str = "auto", ship_encoder: bool = False) -> "ModelSpec":
        """``ship_encoder``: send ``sentence_model`` itself (pickled) to the workers, for an encoder that is
        not a Sentence-Transformers model they can load by name (a small one: it travels with every task)."""
        source = getattr(nlp, "searchpriors_source", None)
        name = getattr(sentence_model, "searchpriors_name", None)
        if not isinstance(source, dict) or not name:
            raise SearchPriorsError("A distributed build needs models loaded by name or folder "
                                    "(models.load_spacy / models.load_sentence_model), so that workers can load "
                                    "the same ones.")
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise SearchPriorsError(f"device '{device}' is not one of auto, cpu, cuda, cuda:N.")
        encoder = None
        if ship_encoder:  # pickled here, unpickled inside the task: a failure is that task's error, not the worker's
            import cloudpickle

            encoder = cloudpickle.dumps(sentence_model)
        return cls(source["location"], spacy_identity(nlp), name, sentence_model_identity(sentence_model), device,
                   encoder)


def _worker_models(spec: ModelSpec):
    from .models import load_sentence_model, load_spacy

    nlp = load_spacy(spec.spacy_location)
    if spec.encoder is not None:
        import pickle

        model = pickle.loads(spec.encoder)
    else:
        device = spec.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_sentence_model(spec.sentence_name, device=device)
    got = (spacy_identity(nlp), sentence_model_identity(model))
    if got != (spec.spacy_id, spec.sentence_id):
        raise MotionIndexError(f"Worker {platform.node()} loads models {got[1]} / {got[0]}, not the driver's "
                               f"{spec.sentence_id} / {spec.spacy_id}: install the same models on every worker.")
    return nlp, model


def build_shard(folder: str, shard: int, entries: Sequence[LibraryEntry], spec: ModelSpec,
                segment_size: int = DEFAULT_SHARD_SIZE, batch_tokens: int = BATCH_TOKENS,
                parse_helpers: int = 0, fault: Optional[str] = None) -> dict:
    """A worker's task: parse, embed and stage one shard of captions as segments of the index at ``folder``
    (a build of its own: claim, segments, staging file; no publishing). Returns what it staged. ``fault``:
    the tests' ``SHARD_FAULT_ENV`` step for this shard."""
    started = time.perf_counter()
    if fault:
        os.environ[files.FAULT_ENV] = fault
        files._fault_hits.clear()
    nlp, model = _worker_models(spec)
    dim = embedding_dim(model)
    claim = files.BuildClaim(folder)
    report = ix.BuildReport(folder)
    try:
        staging = {"build": claim.id, "sentence_model": spec.sentence_id, "spacy_model": spec.spacy_id,
                   "segments": [], "shard": shard}
        table, cache = PhraseTable(dim), ix._CaptionCache(dim)
        helpers = ix._start_helpers(nlp, model, len(entries), bool(parse_helpers), parse_helpers, report)
        try:
            for a in range(0, len(entries), segment_size):
                chunk = list(entries[a:a + segment_size])
                parsed, vectors = cache.process([e.caption for e in chunk], nlp, model, table, lambda f: None,
                                                batch_tokens=batch_tokens, helpers=helpers)
                report._ordinal += 1
                staging["segments"].append(ix._write_segment(folder, report._ordinal, chunk, vectors, parsed, table,
                                                             build_id=claim.id))
                ix.write_json_atomic(ix._staging_path(folder, claim.id), staging, owner=claim.id)
                files.fault_point("staging-written")
        finally:
            ix._close_helpers(helpers, report)
    finally:
        claim.release()
    return {"shard": shard, "build": claim.id, "segments": staging["segments"], "captions": len(entries),
            "phrases": len(table), "seconds": time.perf_counter() - started, "device": str(model.device)
            if hasattr(model, "device") else "cpu", "worker": platform.node(), "notes": report.notes}


@dataclass
class ShardFailure:
    shard: int
    captions: int
    error: str


@dataclass
class DistributedReport:
    build: "object"                     # index.BuildReport of the driver (counts, publish timings, notes)
    shards: int = 0
    shards_done: int = 0
    failures: list[ShardFailure] = field(default_factory=list)
    workers: int = 0
    still_missing: int = 0              # captions of failed shards that are not in the index
    devices: list[str] = field(default_factory=list)
    shard_seconds: list[float] = field(default_factory=list)

    def summary(self) -> str:
        text = self.build.summary()
        extra = (f"{self.shards} shards on {self.workers} workers ({', '.join(sorted(set(self.devices))) or 'none'})"
                 f": {self.shards_done} done")
        if self.failures:
            extra += (f", {len(self.failures)} failed ({self.still_missing} of their captions not indexed yet"
                      + ("; run the same build again to finish them" if self.still_missing else
                         ": the workers had staged them before failing")
                      + f"). First error: shard {self.failures[0].shard}: {self.failures[0].error}")
        return f"{text}\n{extra}"


def build_index_distributed(folder: str, entries: Sequence[LibraryEntry], nlp, sentence_model, client, *,
                            shard_size: int = DEFAULT_SHARD_SIZE, segment_size: Optional[int] = None,
                            batch_tokens: int = BATCH_TOKENS, device: str = "auto", parse_helpers: int = 0,
                            ship_encoder: bool = False,
                            source: Optional[dict] = None, resources: Optional[dict] = None,
                            progress: Optional[Callable[[int, int], None]] = None,
                            lock_timeout: Optional[float] = ix.DEFAULT_LOCK_TIMEOUT) -> DistributedReport:
    """Add ``entries`` to the index at ``folder`` with the workers of the Dask ``client`` (see the module
    docstring). ``nlp`` and ``sentence_model`` are the driver's models (loaded by name, as the workers load
    them; their identities are the index's). A shard that fails (its worker died, its task raised) is
    reported, the others are published; running the same build again indexes what is missing.
    ``ship_encoder``: see ``ModelSpec.of``. ``resources``: Dask resources each task needs (e.g.
    ``{"GPU": 1}`` for workers started with ``--resources GPU=1``). ``progress(done, total)`` after each
    finished shard; it may raise to cancel (the published index is unchanged; shards that workers finish are
    taken over by the next build).
    ``lock_timeout``: as ``index.build_index``'s (None: wait as long as it takes)."""
    distributed = require_dask()
    if shard_size < 1:
        raise SearchPriorsError(f"shard_size must be at least 1, got {shard_size}.")
    folder = os.path.abspath(folder)
    spec = ModelSpec.of(nlp, sentence_model, device, ship_encoder)
    dim = embedding_dim(sentence_model)
    started, started_wall = time.perf_counter(), time.time()
    with files.os_errors_as_index_errors(folder):
        claim = ix._open_build(folder, spec.sentence_id, spec.spacy_id, dim)
        try:
            build = ix.BuildReport(folder)
            report = DistributedReport(build)
            plan = ix._plan_build(folder, claim.id, entries, spec.sentence_id, spec.spacy_id, dim, lock_timeout,
                                  build)
            todo = plan.todo
            shards = [todo[a:a + shard_size] for a in range(0, len(todo), shard_size)]
            report.shards = len(shards)
            report.workers = len(client.scheduler_info().get("workers", {}))
            if progress:
                progress(0, len(todo))
            # At most one shard per worker thread in flight (more are handed out as shards finish), so a worker
            # that dies holds one shard, not a queue of them; a cluster that grows gets more at once.
            waiting = list(range(len(shards)))
            futures: dict = {}
            fault_shard, _, fault_step = os.environ.get(SHARD_FAULT_ENV, "").partition(":")
            running = [distributed.as_completed()]

            def hand_out() -> None:
                slots = max(1, sum(client.nthreads().values()))
                while waiting and sum(not f.done() for f in futures) < slots:
                    i = waiting.pop(0)
                    future = client.submit(build_shard, folder, i, shards[i], spec, segment_size or shard_size,
                                           batch_tokens, parse_helpers, fault_step if fault_shard == str(i) else None,
                                           key=f"searchpriors-shard-{claim.id}-{i}",
                                           resources=resources, pure=False)
                    futures[future] = i
                    running[0].add(future)

            done_captions = 0
            order: dict[str, tuple] = {}   # segment name -> (shard, position): published in the library's order
            try:
                while waiting:  # (a round ends when every shard handed out has ended; more may wait)
                    running[0] = distributed.as_completed()
                    hand_out()
                    for future in running[0]:
                        i = futures[future]
                        try:
                            result = future.result()
                            report.shards_done += 1
                            order.update({seg["name"]: (i, k) for k, seg in enumerate(result["segments"])})
                            report.devices.append(result["device"])
                            report.shard_seconds.append(result["seconds"])
                            build.phrases_embedded += result["phrases"]
                            build.notes.extend(result["notes"])
                        except Exception as exc:  # this shard only: the others go on
                            report.failures.append(ShardFailure(i, len(shards[i]), f"{type(exc).__name__}: {exc}"))
                        done_captions += len(shards[i])
                        if progress:
                            progress(done_captions, len(todo))
                        hand_out()
            except BaseException:
                waiting.clear()
                client.cancel(list(futures))
                raise
            report.failures.sort(key=lambda f: f.shard)
            # Every task has ended: its staging file is that of a build that no longer runs. Take them over
            # (and any other interrupted build's), then publish like a local build.
            with files.WriterLock(folder, lock_timeout):
                taken = ix._take_over_interrupted(folder, claim.id, spec.sentence_id, spec.spacy_id,
                                                  keep=plan.staging["segments"])
            taken.sort(key=lambda seg: order.get(seg["name"], (len(shards), 0)))
            staged = list(plan.staging["segments"]) + taken
            manifest = ix._publish(folder, claim.id, staged, plan.start_names, plan.published, spec.sentence_id,
                                   spec.spacy_id, dim, source, plan.legacy_sums, lock_timeout, started_wall, build)
            if report.failures:
                report.still_missing = _still_missing(folder, manifest, plan.start_names,
                                                      [shards[f.shard] for f in report.failures])
        finally:
            claim.release()
    build.published(manifest, started)
    return report


def _still_missing(folder: str, manifest: dict, start_names: set, shards: Sequence[Sequence[LibraryEntry]]) -> int:
    """How many captions of ``shards`` the published index lacks (only segments added since the start are read)."""
    keys = {e.key for shard in shards for e in shard}
    for seg in manifest["segments"]:
        if seg["name"] not in start_names and keys:
            keys.difference_update(ix._segment_keys(os.path.join(folder, seg["name"])))
    return len(keys)


def local_cluster(workers: Optional[int] = None, threads_per_worker: int = 1):
    """A Dask cluster of worker processes on this machine and a client of it (close both when done)."""
    distributed = require_dask()
    workers = workers or max(1, os.cpu_count() or 1)
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                                       dashboard_address=None)
    return cluster, distributed.Client(cluster)
