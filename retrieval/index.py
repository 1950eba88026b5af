"""The motion index on disk: every caption's sentence vector, atomized units and metadata.

Layout of an index folder::

    manifest.json             published state: format, models, segment list with each file's size and
                              CRC-32 (replaced atomically; the segment list only ever grows)
    seg-<build>-0001/         one immutable segment per build chunk, named by the build that wrote it
        sentences.faiss       faiss IndexFlatIP of normalised sentence vectors (n, d)
        phrases.json/.npy     distinct role phrases of the segment and their vectors (p, d)
        units.npy             (u, 3) int32 phrase ids of motion, actor, recipient; -1 = missing role
        unit_offsets.npy      (n + 1) int64: caption i owns units [off[i], off[i+1])
        core.npy              (n,) int32 index of the core unit within the segment, -1 = no unit
        entries.sqlite        row -> video_id, caption, video_path, start_s, end_s (shot times in seconds,
                              NULL = the whole file; older segments lack the two columns)
    staging-<build>.json      segments finished by a build, not yet published
    .lock, .build-<build>.lock  the writers' lock and each running build's liveness lock (index_files.py)

Builds are atomic, resumable and safe to run side by side (processes, ComfyUI instances, the CLI):

- A build writes its segments without any lock: each in a ``_tmp-`` folder, renamed when complete and
  then listed in the build's own ``staging-<build>.json``. Names carry the build's id, so they never collide.
- Publishing takes the writers' lock (``index_files.WriterLock``), re-reads the manifest, drops the
  captions that a build published meanwhile (keyed by video id + caption; a segment that loses rows is
  rewritten without them), appends the segments and replaces ``manifest.json`` in one step, so two
  concurrent builds end with the union of their captions, each once.
- Readers take no lock: they read the manifest once and then only files it names. Published segments are
  never changed or removed (the list only grows), so a reader holding an older manifest always finds its
  files, and every file is checked against its recorded size and CRC-32 when loaded.
- A crash, Cancel, kill or full disk leaves the published index as it was. The next build takes over the
  staged segments of builds that are no longer running (their liveness lock is free) and, after
  publishing, removes leftovers that no manifest or staging file lists and no running build owns.

Manifest version 1 (before checksums) still loads, unchecked; the next build into such an index records
the checksums of its segments and writes version 2.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from .atomizer import parse_texts
from .embedding import BATCH_TOKENS, PhraseTable, embedding_dim, encode_batch, length_batches, sentence_model_identity
from . import index_files as files
from ..errors import MotionIndexError, SearchPriorsError
from .library import LibraryEntry
from .models import spacy_identity
from .parse_worker import EncoderThreads, ParseWorker, start_parse_worker

FORMAT = "comfyui-searchpriors/motion-index"
VERSION = 3          # 2: per-file checksums in the manifest, per-build staging files; 3: may name a coarse index
                     # (coarse.py: compressed search at or above coarse.COMPRESS_MIN captions)
MANIFEST = "manifest.json"
STAGING = "staging.json"   # the single staging file of version-1 builds (taken over like any other)
SEGMENT_FILES = ("sentences.faiss", "phrases.json", "phrases.npy", "units.npy", "unit_offsets.npy",
                 "core.npy", "entries.sqlite")

Progress = Callable[[int, int], None]
CLIP_LIBRARY_DIR = "clip_library"   # the clip library builder's state and library file (clip_library.py)
RETIRED_GRACE_S = 3600.0            # segments replaced by remove_entries stay on disk this long for older readers


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover
        from ..errors import MissingDependencyError

        raise MissingDependencyError("faiss-cpu", "The motion index") from exc
    return faiss


def write_json_atomic(path: str, data, owner: Optional[str] = None) -> None:
    """Replace ``path`` in one step (temp file + rename); ``owner``: the build id in the temp file's name,
    so that orphan clean-up can tell whether its writer still runs."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{owner or 'x'}-{uuid.uuid4().hex[:6]}"
    files.write_bytes(tmp, json.dumps(data, indent=1).encode("utf-8"), folder)
    files.fault_point("json-temp")
    try:
        os.replace(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    files.fsync_dir(folder)


def _read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MotionIndexError(f"{what} '{path}' is corrupt ({exc}): rebuild the index into a new folder.") from exc


# ----------------------------------------------------------------------------------------------- reading

@dataclass
class Segment:
    name: str
    count: int


def read_manifest(folder: str) -> dict:
    """The published manifest, validated; raises ``MotionIndexError`` with the fix."""
    if not os.path.isdir(folder):
        raise MotionIndexError(f"No motion index at '{folder}': build one first (MotionIndexBuilder node, "
                               f"or `searchpriors index build --library FILE --out {folder}`).")
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise MotionIndexError(f"'{folder}' is not a motion index (it has no {MANIFEST}): choose a folder "
                               f"made by MotionIndexBuilder or `searchpriors index build`.")
    manifest = _read_json(path, "Index manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MotionIndexError(f"'{folder}' holds a {MANIFEST} that is not a ComfyUI-SearchPriors motion "
                               f"index: choose another folder, or build an index into a new one.")
    if int(manifest.get("version", 0)) > VERSION:
        raise MotionIndexError(f"The index at '{folder}' was written by a newer ComfyUI-SearchPriors "
                               f"(format {manifest.get('version')}); update the pack to read it.")
    return manifest


def _check_segment(folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    missing = [f for f in SEGMENT_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise MotionIndexError(f"The index at '{folder}' is damaged: segment {name} lacks "
                               f"{', '.join(missing)}. Rebuild it into a new folder.")
    return path


class _SegmentArrays(NamedTuple):
    sentence_index: object
    texts: list
    phrases: np.ndarray
    units: np.ndarray
    offsets: np.ndarray
    core: np.ndarray


def _read_segment(folder: str, item: dict, dim: int, check_entries: bool = True,
                  full_vectors: bool = True) -> _SegmentArrays:
    """One segment's arrays, each file checked against the manifest's size and CRC-32 when recorded
    (version-1 segments carry none), then checked for consistency. ``full_vectors=False``: the sentence
    vectors are memory-mapped, not read (checked by size and header only; ``coarse.flat_vectors``)."""
    faiss = _faiss()
    name = item["name"]
    path = _check_segment(folder, name)
    sums = item.get("files") or {}

    def data(fname: str) -> bytes:
        return files.read_checked(os.path.join(path, fname), sums.get(fname), folder, f"{name}/{fname}")

    try:
        raw = {fname: data(fname) for fname in SEGMENT_FILES
               if fname != "entries.sqlite" and (full_vectors or fname != "sentences.faiss")}
        if check_entries and sums.get("entries.sqlite"):
            data("entries.sqlite")  # read lazily by searches; checked once here
        if full_vectors:
            seg_index = faiss.deserialize_index(np.frombuffer(raw["sentences.faiss"], dtype=np.uint8))
        else:
            seg_index = _mapped_vectors(folder, path, name, dim, sums.get("sentences.faiss"))
        texts = json.loads(raw["phrases.json"].decode("utf-8"))
        phrases, units, offsets, core = (np.load(io.BytesIO(raw[f]), allow_pickle=False)
                                         for f in ("phrases.npy", "units.npy", "unit_offsets.npy", "core.npy"))
    except MotionIndexError:
        raise
    except (OSError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise MotionIndexError(f"The index at '{folder}' is damaged: segment {name} could not be read "
                               f"({exc}). Rebuild it into a new folder.") from exc
    n = seg_index.ntotal if full_vectors else len(seg_index)
    consistent = ((not full_vectors or seg_index.d == dim) and isinstance(texts, list) and phrases.shape == (len(texts), dim)
                  and units.ndim == 2 and units.shape[1] == 3 and offsets.shape == (n + 1,) and core.shape == (n,)
                  and n == int(item.get("count", n)) and offsets[-1] == len(units)
                  and (units.size == 0 or (units.max() < len(texts) and units.min() >= -1))
                  and all(isinstance(t, str) for t in texts))
    if not consistent:
        raise MotionIndexError(f"The index at '{folder}' is damaged: segment {name} has inconsistent "
                               f"arrays. Rebuild it into a new folder.")
    return _SegmentArrays(seg_index, texts, phrases, units, offsets, core)


def _mapped_vectors(folder: str, path: str, name: str, dim: int, expected: Optional[dict]) -> np.ndarray:
    from .coarse import flat_vectors

    file = os.path.join(path, "sentences.faiss")
    if expected and os.path.getsize(file) != expected.get("size"):
        raise MotionIndexError(f"The index at '{folder}' is damaged: {name}/sentences.faiss does not match the "
                               f"manifest's size. Rebuild the index into a new folder.")
    return flat_vectors(file, dim, f"{name}/sentences.faiss", folder)


@dataclass
class MotionIndex:
    """A loaded index: flat arrays over all segments, ready for ``search.search``."""

    folder: str
    manifest: dict
    sentence_index: object          # faiss.IndexFlatIP with every sentence vector; compressed: the coarse index
    phrases: np.ndarray             # (P + 1, d); last row is the zero vector of a missing role
    phrase_texts: list[str]
    units: np.ndarray               # (U, 3) int32 into phrases; missing = P
    unit_offsets: np.ndarray        # (N + 1,) int32 (int64 past 2**31 units)
    core_units: np.ndarray          # (N,) global unit index, -1 = none; as unit_offsets
    segments: list[Segment] = field(default_factory=list)
    _segment_starts: np.ndarray = None
    # compressed (coarse.py): the sentence vectors memory-mapped from the segments (``sentence_index`` is
    # then the coarse IVF-SQ8 index); None: in memory inside ``sentence_index``
    vectors: object = None
    load_notes: list = field(default_factory=list)

    @property
    def compressed(self) -> bool:
        return self.vectors is not None

    @property
    def count(self) -> int:
        return int(self.sentence_index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def sentence_model(self) -> str:
        return self.manifest["sentence_model"]

    @property
    def spacy_model(self) -> str:
        return self.manifest["spacy_model"]

    @property
    def missing_id(self) -> int:
        return len(self.phrases) - 1

    def sentence_vectors(self) -> np.ndarray:
        """Zero-copy (N, d) view of the vectors inside the faiss index (compressed: ``coarse.SegmentVectors``,
        read on demand from the memory-mapped segment files)."""
        if self.vectors is not None:
            return self.vectors
        faiss = _faiss()
        n, d = self.count, self.sentence_index.d
        if n == 0:
            return np.zeros((0, d), dtype=np.float32)
        return faiss.rev_swig_ptr(self.sentence_index.get_xb(), n * d).reshape(n, d)

    def _memo(self, key, make):
        """Arrays derived from the index on first use and kept for the life of this load."""
        cache = self.__dict__.setdefault("_derived", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def core_role_ids(self, role: int) -> np.ndarray:
        """Phrase id of each caption's core-unit role (0 motion, 1 actor, 2 recipient)."""
        def make():
            ids = np.full(self.count, self.missing_id, dtype=self.units.dtype)
            has = self.core_units >= 0
            ids[has] = self.units[self.core_units[has], role]
            return ids
        return self._memo(("ids", role), make)

    def core_role_distinct(self, role: int) -> np.ndarray:
        """The distinct phrase ids that are some caption's core-unit role (far fewer than captions)."""
        return self._memo(("distinct", role), lambda: np.unique(self.core_role_ids(role)))

    def core_role_groups(self, role: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Captions grouped by core-role phrase: rows ``perm[starts[d]:ends[d]]`` have phrase distinct[d]."""
        def make():
            ids = self.core_role_ids(role)
            perm = np.argsort(ids, kind="stable").astype(_small_int(self.count), copy=False)
            sorted_ids = ids[perm]
            distinct = self.core_role_distinct(role)
            return (perm, np.searchsorted(sorted_ids, distinct, side="left"),
                    np.searchsorted(sorted_ids, distinct, side="right"))
        return self._memo(("groups", role), make)

    def core_role_block(self, role: int) -> np.ndarray:
        """float64 vectors of ``core_role_distinct(role)``."""
        return self._memo(("block", role), lambda: self.phrases[self.core_role_distinct(role)].astype(np.float64))

    def video_groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Captions grouped by video id: (video number of each row, perm, starts); video v's rows are
        ``perm[starts[v]:starts[v + 1]]``. Read once per load from the segments' entries tables."""
        def make():
            numbers: dict[str, int] = {}
            of_row = np.empty(self.count, dtype=np.int64)
            for seg, start in zip(self.segments, self._segment_starts.tolist()):
                path = os.path.join(self.folder, seg.name, "entries.sqlite")
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    ids = [numbers.setdefault(v, len(numbers))
                           for (v,) in con.execute("SELECT video_id FROM entries ORDER BY row")]
                finally:
                    con.close()
                of_row[start:start + len(ids)] = ids
            perm = np.argsort(of_row, kind="stable")
            return of_row, perm, np.searchsorted(of_row[perm], np.arange(len(numbers) + 1))
        return self._memo(("videos",), make)

    def entries(self, rows: Sequence[int]) -> list[LibraryEntry]:
        """Metadata of the given global rows, in order."""
        out: list[Optional[LibraryEntry]] = [None] * len(rows)
        by_segment: dict[int, list[tuple[int, int]]] = {}
        for pos, row in enumerate(rows):
            seg = int(np.searchsorted(self._segment_starts, row, side="right") - 1)
            by_segment.setdefault(seg, []).append((pos, int(row - self._segment_starts[seg])))
        for seg, items in by_segment.items():
            path = os.path.join(self.folder, self.segments[seg].name, "entries.sqlite")
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                columns = _entry_columns(con)
                for pos, local in items:
                    hit = con.execute(f"SELECT {columns} FROM entries WHERE row = ?", (local,)).fetchone()
                    if hit is None:
                        raise MotionIndexError(f"The index at '{self.folder}' is damaged: row {local} of "
                                               f"segment {self.segments[seg].name} is missing. Rebuild it.")
                    out[pos] = LibraryEntry(*hit)
            finally:
                con.close()
        return out  # type: ignore[return-value]

    def summary(self) -> str:
        m = self.manifest
        text = (f"motion index '{os.path.basename(os.path.normpath(self.folder))}': {self.count} captions, "
                f"{len(self.units)} units, {len(self.phrases) - 1} phrases; sentence model "
                f"{m['sentence_model']}, spaCy {m['spacy_model']}")
        if m.get("missing_videos"):
            text += f"; {m['missing_videos']} entries without a local video"
        return text


def _small_int(largest: int):
    """int32 when every value (at most ``largest``) fits in it, else int64."""
    return np.int32 if largest < 2**31 - 1 else np.int64


def load_index(folder: str, compress_min: Optional[int] = None, log=None) -> MotionIndex:
    """Load and validate a published index (staged, unpublished segments are ignored). At or above
    ``compress_min`` captions (default ``coarse.COMPRESS_MIN``) it loads compressed (see coarse.py)."""
    from . import coarse

    faiss = _faiss()
    folder = os.path.abspath(folder)
    manifest = read_manifest(folder)
    dim = int(manifest["dim"])
    compressed = sum(int(s.get("count", 0)) for s in manifest.get("segments", [])) >= coarse.compress_min(compress_min)
    maps = []
    sentence_index = faiss.IndexFlatIP(dim)
    # Segments each carry the phrases they use; the loaded index keeps one row per distinct phrase text
    # (at 1M captions in 50 segments: 26.5k rows instead of 398k), and units are re-pointed at it.
    phrase_blocks, phrase_texts, unit_blocks, offset_blocks, core_blocks = [], [], [], [], []
    phrase_ids: dict[str, int] = {}
    segments, starts = [], []
    n_total = u_total = 0
    for item in manifest.get("segments", []):
        name = item["name"]
        seg_index, texts, phrases, units, offsets, core = _read_segment(folder, item, dim,
                                                                        full_vectors=not compressed)
        n = len(seg_index) if compressed else seg_index.ntotal
        if compressed:
            maps.append(seg_index)
        elif n:
            sentence_index.add(faiss.rev_swig_ptr(seg_index.get_xb(), n * dim).reshape(n, dim))
        known = len(phrase_ids)
        remap = np.array([phrase_ids.setdefault(t, len(phrase_ids)) for t in texts] + [-1], dtype=np.int64)
        fresh = np.flatnonzero(remap[:-1] >= known)  # first appearance of these texts
        if len(fresh):
            phrase_blocks.append(phrases[fresh])
            phrase_texts.extend(texts[i] for i in fresh)
        unit_blocks.append(remap.astype(_small_int(len(phrase_ids)))[units])  # a missing role (-1): the trailing -1
        offset_blocks.append(offsets[:-1].astype(np.int64) + u_total)
        core_blocks.append(np.where(core >= 0, core.astype(np.int64) + u_total, -1))
        segments.append(Segment(name, n))
        starts.append(n_total)
        n_total += n
        u_total += len(units)
        del seg_index, units, offsets, core
    p_total = len(phrase_ids)
    phrases = np.concatenate(phrase_blocks + [np.zeros((1, dim), np.float32)], axis=0).astype(np.float32)
    # int32 where the counts allow (always, below 2**31 units): half the memory of int64 at millions of captions
    units = np.concatenate(unit_blocks, axis=0).astype(_small_int(p_total), copy=False) if unit_blocks \
        else np.zeros((0, 3), np.int32)
    del unit_blocks
    units[units < 0] = p_total
    offsets = np.concatenate(offset_blocks + [np.array([u_total], np.int64)]).astype(_small_int(u_total), copy=False)
    core = np.concatenate(core_blocks).astype(_small_int(u_total), copy=False) if core_blocks else np.zeros(0, np.int32)
    del offset_blocks, core_blocks
    vectors, notes = None, []
    if compressed:
        vectors = coarse.SegmentVectors(maps, dim)
        sentence_index = coarse.coarse_for(folder, manifest, vectors, notes, log)
    return MotionIndex(folder=folder, manifest=manifest, sentence_index=sentence_index, phrases=phrases,
                       phrase_texts=phrase_texts, units=units, unit_offsets=offsets, core_units=core,
                       segments=segments, _segment_starts=np.array(starts or [0], dtype=np.int64),
                       vectors=vectors, load_notes=notes)


def index_fingerprint(folder: str) -> str:
    """Changes whenever a build publishes (for ComfyUI's cache)."""
    path = os.path.join(folder, MANIFEST)
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return f"{stat.st_mtime_ns}-{stat.st_size}"


# ----------------------------------------------------------------------------------------------- writing

@dataclass
class BuildReport:
    folder: str
    added: int = 0
    skipped_existing: int = 0
    resumed: int = 0
    total: int = 0
    phrases_embedded: int = 0
    seconds: float = 0.0
    missing_videos: int = 0
    parse_helper: str = "not used"
    parse_helpers: int = 0              # helper processes started
    concurrent_duplicates: int = 0      # captions a concurrent build published first (kept once)
    orphans_removed: list[str] = field(default_factory=list)
    lock_waited: float = 0.0            # seconds waiting for the writers' lock to publish
    lock_held: float = 0.0              # seconds holding it (merge, manifest, clean-up)
    notes: list[str] = field(default_factory=list)
    _ordinal: int = 0                   # segments written by this build

    def published(self, manifest: dict, started: float) -> "BuildReport":
        """The totals of the manifest a build published, and its seconds since ``started`` (perf_counter)."""
        self.total = manifest["count"]
        self.missing_videos = manifest["missing_videos"]
        self.seconds = time.perf_counter() - started
        return self

    def summary(self) -> str:
        text = (f"index '{self.folder}': {self.total} captions ({self.added} added"
                + (f", {self.resumed} resumed from an interrupted build" if self.resumed else "")
                + (f", {self.skipped_existing} already indexed" if self.skipped_existing else "")
                + f") in {self.seconds:.1f} s; {self.phrases_embedded} distinct phrases embedded")
        if self.parse_helper == "used":
            text += ("; captions parsed in a helper process while this one embedded them" if self.parse_helpers <= 1
                     else f"; captions parsed in {self.parse_helpers} helper processes while this one embedded them")
        if self.missing_videos:
            text += f"; {self.missing_videos} entries in the index have no local video file"
        notes = list(self.notes)
        if self.concurrent_duplicates:
            notes.append(f"{self.concurrent_duplicates} captions were also added by a build that ran at the same "
                         f"time; they are in the index once.")
        if self.lock_waited >= 1.0:
            notes.append(f"Waited {self.lock_waited:.1f} s for another build to finish publishing.")
        if self.orphans_removed:
            shown = ", ".join(self.orphans_removed[:5]) + (", ..." if len(self.orphans_removed) > 5 else "")
            notes.append(f"Removed {len(self.orphans_removed)} leftovers of interrupted builds ({shown}).")
        return "\n".join([text] + notes)


def _segment_keys(path: str) -> list[tuple[str, str]]:
    """(video id, caption) of a segment's rows, in row order."""
    con = sqlite3.connect(f"file:{os.path.join(path, 'entries.sqlite')}?mode=ro", uri=True)
    try:
        return list(con.execute("SELECT video_id, caption FROM entries ORDER BY row"))
    finally:
        con.close()


def _entry_columns(con) -> str:
    """The SELECT list of an entries table: segments written before shots had times lack start_s / end_s,
    which then read as NULL (the whole file)."""
    have = {row[1] for row in con.execute("PRAGMA table_info(entries)")}
    times = "start_s, end_s" if {"start_s", "end_s"} <= have else "NULL, NULL"
    return f"video_id, caption, video_path, {times}"


def _segment_entries(path: str) -> list[LibraryEntry]:
    con = sqlite3.connect(f"file:{os.path.join(path, 'entries.sqlite')}?mode=ro", uri=True)
    try:
        rows = con.execute(f"SELECT {_entry_columns(con)} FROM entries ORDER BY row")
        return [LibraryEntry(*row) for row in rows]
    finally:
        con.close()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _entries_bytes(entries: Sequence[LibraryEntry]) -> bytes:
    con = sqlite3.connect(":memory:")
    try:
        con.execute("CREATE TABLE entries (row INTEGER PRIMARY KEY, video_id TEXT NOT NULL, "
                    "caption TEXT NOT NULL, video_path TEXT, start_s REAL, end_s REAL)")
        con.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                        ((i, e.video_id, e.caption, e.video_path, e.start_s, e.end_s)
                         for i, e in enumerate(entries)))
        con.commit()
        return bytes(con.serialize())
    finally:
        con.close()


def _segment_name(ordinal: int, build_id: Optional[str]) -> str:
    return f"seg-{build_id}-{ordinal:04d}" if build_id else f"seg-{ordinal:06d}-{uuid.uuid4().hex[:8]}"


def _write_segment_files(folder: str, name: str, entries: Sequence[LibraryEntry], sentence_vectors: np.ndarray,
                         texts: list[str], phrase_vectors: np.ndarray, units: np.ndarray, offsets: np.ndarray,
                         core: np.ndarray, dim: int) -> dict:
    """Write one segment under ``_tmp-<name>`` (each file fsynced, its checksum kept) and rename it into
    place; returns its manifest entry. On an error the temporary folder is removed."""
    faiss = _faiss()
    index = faiss.IndexFlatIP(dim)
    if len(sentence_vectors):
        index.add(np.ascontiguousarray(sentence_vectors, dtype=np.float32))
    blobs = {
        "sentences.faiss": faiss.serialize_index(index).tobytes(),
        "phrases.json": json.dumps(texts).encode("utf-8"),
        "phrases.npy": _npy_bytes(np.ascontiguousarray(phrase_vectors, dtype=np.float32).reshape(-1, dim)),
        "units.npy": _npy_bytes(np.asarray(units, dtype=np.int32).reshape(-1, 3)),
        "unit_offsets.npy": _npy_bytes(np.asarray(offsets, dtype=np.int64)),
        "core.npy": _npy_bytes(np.asarray(core, dtype=np.int32)),
        "entries.sqlite": _entries_bytes(entries),
    }
    tmp = os.path.join(folder, f"_tmp-{name}")
    os.mkdir(tmp)
    try:
        sums = {}
        for fname in SEGMENT_FILES:
            sums[fname] = files.write_bytes(os.path.join(tmp, fname), blobs[fname], folder)
            files.fault_point("segment-file")
        files.fsync_dir(tmp)
        files.fault_point("segment-complete")
        os.rename(tmp, os.path.join(folder, name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files.fsync_dir(folder)
    files.fault_point("segment-renamed")
    return {"name": name, "count": len(entries), "missing_videos": sum(e.video_path is None for e in entries),
            "files": sums}


def _write_segment(folder: str, ordinal: int, entries: Sequence[LibraryEntry], sentence_vectors: np.ndarray,
                   parsed: Sequence, table: PhraseTable, build_id: Optional[str] = None) -> dict:
    """A segment from parsed captions and their sentence vectors (phrase vectors from ``table``)."""
    local: dict[str, int] = {}
    unit_rows, offsets, core = [], [0], []
    for p in parsed:
        for unit in p.units:
            unit_rows.append([local.setdefault(x, len(local)) if x is not None else -1 for x in unit.roles()])
        core.append(p.core_index if p.units else -1)
        offsets.append(offsets[-1] + len(p.units))
    texts = list(local)
    all_vectors = table.vectors()
    phrase_vectors = all_vectors[[table.ids[t] for t in texts]] if texts else np.zeros((0, table.dim), np.float32)
    starts = np.array(offsets[:-1], dtype=np.int64)
    core_arr = np.array([s + c if c >= 0 else -1 for s, c in zip(starts, core)], dtype=np.int32)
    return _write_segment_files(folder, _segment_name(ordinal, build_id), entries, sentence_vectors, texts,
                                phrase_vectors, np.array(unit_rows, dtype=np.int32).reshape(-1, 3),
                                np.array(offsets, dtype=np.int64), core_arr, table.dim)


def _filter_segment(folder: str, item: dict, keep: Sequence[bool], name: str, dim: int) -> dict:
    """A new segment holding only the kept rows of ``item`` (the rows a concurrent build published first)."""
    faiss = _faiss()
    seg = _read_segment(folder, item, dim, check_entries=False)
    rows = np.flatnonzero(np.asarray(keep, dtype=bool))
    n = seg.sentence_index.ntotal
    vectors = (faiss.rev_swig_ptr(seg.sentence_index.get_xb(), n * dim).reshape(n, dim)[rows] if n
               else np.zeros((0, dim), np.float32))
    unit_blocks, offsets, core = [], [0], []
    for r in rows:
        a, b = int(seg.offsets[r]), int(seg.offsets[r + 1])
        unit_blocks.append(seg.units[a:b])
        core.append(int(seg.core[r]) - a + offsets[-1] if seg.core[r] >= 0 else -1)
        offsets.append(offsets[-1] + b - a)
    units = np.concatenate(unit_blocks, axis=0) if unit_blocks else np.zeros((0, 3), np.int32)
    used = np.unique(units[units >= 0])
    remap = np.full(len(seg.texts) + 1, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    units = remap[units]  # -1 (missing role) picks the trailing -1
    entries = _segment_entries(os.path.join(folder, item["name"]))
    return _write_segment_files(folder, name, [entries[r] for r in rows], vectors, [seg.texts[i] for i in used],
                                seg.phrases[used], units, np.array(offsets, np.int64), np.array(core, np.int32), dim)


# --------------------------------------------------------------------------------- the folder shared by builds

_OWNED_NAME = re.compile(r"^(?:_tmp-)?seg-([0-9a-f]{12})-\d+$")    # segment (or its temp folder) of one build
_STAGING_NAME = re.compile(r"^staging-([0-9a-f]{12})\.json$")
# temp file of a JSON replacement: "<name>.tmp-<build id or x>-<random>"; version 1 wrote "<name>.tmp-<8 hex>"
_JSON_TEMP = re.compile(r"^(?:manifest|staging)[^/]*\.json\.tmp-(?:([0-9a-f]{12}|x)-|[0-9a-f]{8}$)")
_BUILD_LOCK = re.compile(r"^\.build-([0-9a-f]{12})\.lock(?:\.tmp)?$")


def _staging_path(folder: str, build_id: str) -> str:
    return os.path.join(folder, f"staging-{build_id}.json")


def _staging_files(folder: str) -> list[tuple[str, Optional[str]]]:
    """(path, build id) of every staging file; the id is None for a version-1 ``staging.json``."""
    out = []
    for entry in os.scandir(folder):
        match = _STAGING_NAME.match(entry.name)
        if match:
            out.append((entry.path, match.group(1)))
        elif entry.name == STAGING:
            out.append((entry.path, None))
    return out


def _read_staging(path: str) -> Optional[dict]:
    try:
        data = _read_json(path, "Build state")
    except (MotionIndexError, OSError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("segments"), list) else None


def _is_ours(name: str) -> bool:
    """Names that builds put into an index folder (a concurrent first build may not have published yet)."""
    return (name.startswith((".", "seg-", "_tmp-seg-", "staging", MANIFEST)) or name == CLIP_LIBRARY_DIR)


def _open_folder(folder: str) -> None:
    if os.path.isdir(folder):
        if not os.path.isfile(os.path.join(folder, MANIFEST)) and any(not _is_ours(e.name) for e in os.scandir(folder)):
            raise MotionIndexError(f"'{folder}' exists, is not empty and is not a motion index; it is left "
                                   f"untouched. Choose a new index name or an empty folder.")
    else:
        os.makedirs(folder, exist_ok=True)


def _current_manifest(folder: str, sentence_id: str, spacy_id: str, dim: int) -> dict:
    """The published manifest checked against the models, or a new empty one (not written)."""
    if os.path.isfile(os.path.join(folder, MANIFEST)):
        manifest = read_manifest(folder)
        if manifest["sentence_model"] != sentence_id or manifest["spacy_model"] != spacy_id:
            raise MotionIndexError(
                f"The index at '{folder}' was built with sentence model {manifest['sentence_model']} and "
                f"spaCy {manifest['spacy_model']}, not {sentence_id} / {spacy_id}: choose those models, or "
                f"build into a new index folder.")
        return manifest
    return {"format": FORMAT, "version": VERSION, "sentence_model": sentence_id, "spacy_model": spacy_id,
            "dim": dim, "segments": [], "count": 0, "missing_videos": 0, "sources": []}


def _take_over_interrupted(folder: str, build_id: str, sentence_id: str, spacy_id: str,
                           keep: Sequence[dict] = ()) -> list[dict]:
    """With the writers' lock held: the staged segments of builds that no longer run (same models) become
    this build's; their staging files go. This build's staging file is written first (listing ``keep``, what
    it had staged already, and the segments taken), so a crash in between leaves the segments listed twice
    (harmless: they are merged by name) but never unlisted. Returns the segments taken (``keep`` excluded)."""
    kept = {seg["name"] for seg in keep}
    taken: dict[str, dict] = {}
    done: list[tuple[str, Optional[str]]] = []
    for path, owner in _staging_files(folder):
        if owner == build_id or (owner is not None and files.build_is_live(folder, owner)):
            continue
        state = _read_staging(path)
        if state is not None and (state.get("sentence_model") != sentence_id or state.get("spacy_model") != spacy_id):
            continue  # another model pair's work; not ours to take
        for seg in (state or {}).get("segments", []):
            if (isinstance(seg, dict) and "name" in seg and seg["name"] not in kept
                    and os.path.isdir(os.path.join(folder, seg["name"]))):
                taken.setdefault(seg["name"], seg)
        done.append((path, owner))
    if taken:
        write_json_atomic(_staging_path(folder, build_id), {"build": build_id, "sentence_model": sentence_id,
                                                            "spacy_model": spacy_id,
                                                            "segments": list(keep) + list(taken.values())},
                          owner=build_id)
    for path, owner in done:
        for stale in (path, files.build_lock_path(folder, owner) if owner else None):
            if stale:
                try:
                    os.remove(stale)
                except FileNotFoundError:
                    pass
    return list(taken.values())


def _clean_orphans(folder: str, manifest: dict, build_id: str, started: float) -> list[str]:
    """With the writers' lock held, after publishing: remove segments and temporary files that neither the
    manifest nor any staging file lists and that no running build owns. Files of the version-1 layout,
    whose owner cannot be asked, only when they are older than this build."""
    listed = {s["name"] for s in manifest["segments"]}
    listed.update(_retired_in_grace(manifest))
    for path, _ in _staging_files(folder):
        listed.update(s.get("name") for s in (_read_staging(path) or {}).get("segments", []) if isinstance(s, dict))
    live: dict[str, bool] = {}

    def owner_runs(owner: str) -> bool:
        if owner == build_id:
            return False  # this build: everything it still needs is listed by now
        if owner not in live:
            live[owner] = files.build_is_live(folder, owner)
        return live[owner]

    def older(entry) -> bool:
        try:
            return entry.stat(follow_symlinks=False).st_mtime < started
        except OSError:
            return False

    removed = []
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith(("seg-", "_tmp-seg-")) and entry.is_dir(follow_symlinks=False) and name not in listed:
            match = _OWNED_NAME.match(name)
            if (owner_runs(match.group(1)) if match else not older(entry)):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(name)
        elif _JSON_TEMP.match(name) or _BUILD_LOCK.match(name):
            owner = (_JSON_TEMP.match(name) or _BUILD_LOCK.match(name)).group(1)
            if owner in ("x", None):  # no build id to ask: only when older than this build
                if not older(entry):
                    continue
            elif owner_runs(owner) or (name.endswith(".lock") and os.path.exists(_staging_path(folder, owner))):
                continue  # a running build, or a dead one whose staged work the next build takes over
            if name.endswith(".tmp") and files.lock_is_held(entry.path):
                continue  # a build being born
            try:
                os.remove(entry.path)
            except OSError:
                continue
            if not name.startswith("."):
                removed.append(name)
    if removed:
        files.fsync_dir(folder)
    return sorted(removed)


# Captions per chunk handed to a parse helper, and chunks each helper may hold at once: small enough that this
# process can take the last chunks back when it runs out of encoding, large enough to keep it busy.
PARSE_CHUNK = 256
HELPER_QUEUE = 4
# A helper takes ~1.5 s to start (the time to parse ~800 captions); below this many new captions it is not
# used. SEARCHPRIORS_PARSE_HELPER=0 turns it off; SEARCHPRIORS_PARSE_HELPER_MIN changes the threshold.
HELPER_MIN_CAPTIONS = 2000
# Share of the cores that parses when the encoder runs on the CPU: spaCy parses ~700 captions/s per core,
# MiniLM encodes ~200/s per core (benchmarks/README.md), so about 1 core in 4.5 keeps the parse up with it.
CPU_PARSE_SHARE = 0.22


def auto_parse_helpers(model, cpus: Optional[int] = None) -> int:
    """How many parse helper processes a build starts: with the encoder on a GPU, every core but this
    process's (parsing is then the slow stage); on the CPU, the parse's share of the cores (at least one)."""
    cpus = cpus or os.cpu_count() or 1
    if cpus < 2:
        return 0
    device = str(getattr(model, "device", "cpu"))
    if not device.startswith("cpu"):
        return cpus - 1
    return max(1, min(cpus - 1, round(cpus * CPU_PARSE_SHARE)))


def _parse_and_encode(texts: Sequence[str], nlp, model, helpers: Sequence[ParseWorker],
                      progress: Callable[[float], None], batch_tokens: int):
    """Parses and sentence vectors of ``texts``. Parse chunks go to the ``helpers`` (if any) while this
    process encodes, in batches of equal token length (``embedding.length_batches``: no padding); chunks no
    helper has been given when encoding is done are parsed here, and so are those of a helper that failed
    (or handed to the others)."""
    n = len(texts)
    vectors = np.empty((n, embedding_dim(model)), dtype=np.float32)
    parsed: list = [None] * n
    bounds = [(a, min(a + PARSE_CHUNK, n)) for a in range(0, n, PARSE_CHUNK)]
    pending = deque(range(len(bounds)))
    batches = deque(length_batches(model, texts, batch_tokens))
    encoded = parsed_count = 0

    def chunk(cid: int) -> list[str]:
        return list(texts[bounds[cid][0]:bounds[cid][1]])

    def place(results) -> None:
        nonlocal parsed_count
        for cid, items in results:
            a, b = bounds[cid]
            parsed[a:b] = items
            parsed_count += b - a

    with EncoderThreads() as threads:
        while True:
            while pending:  # one chunk at a time to the least loaded helper, up to HELPER_QUEUE each
                usable = [h for h in helpers if h.usable]
                helper = min(usable, key=lambda h: len(h.outstanding), default=None)
                if helper is None or len(helper.outstanding) >= HELPER_QUEUE:
                    break
                cid = pending.popleft()
                helper.submit(cid, chunk(cid))
            for helper in helpers:
                if helper.usable:
                    place(helper.poll())
                if not helper.usable:  # its chunks come back here
                    pending.extend(helper.take_back())
            busy = [h for h in helpers if h.busy]
            if not batches and not pending and not busy:
                break
            threads.spare(len(busy))
            if batches:
                rows = batches.popleft()
                vectors[rows] = encode_batch(model, [texts[i] for i in rows])
                encoded += len(rows)
            elif pending:
                cid = pending.pop()
                place([(cid, list(parse_texts(nlp, chunk(cid))))])
            else:
                place(busy[0].wait(timeout=0.5 if len(busy) == 1 else 0.05))
            progress((0.7 * encoded + 0.3 * parsed_count) / n)
    return parsed, vectors


class _CaptionCache:
    """Parses and embeds each distinct caption once per build (libraries repeat captions: MSR-VTT has
    118,145 distinct in 140,200)."""

    def __init__(self, dim: int, limit: int = 200_000):
        self.dim = dim
        self.limit = limit
        self.known: dict[str, tuple] = {}   # caption -> (parse, vector), bounded by ``limit``

    def process(self, captions: Sequence[str], nlp, sentence_model, table: PhraseTable,
                progress: Callable[[float], None], batch_tokens: int, helpers: Sequence[ParseWorker] = ()):
        new = [c for c in dict.fromkeys(captions) if c not in self.known]
        parsed_new, vectors_new = _parse_and_encode(new, nlp, sentence_model, helpers, progress, batch_tokens)
        table.add(sentence_model, [x for p in parsed_new for x in p.phrases()], batch_tokens)
        fresh = dict(zip(new, zip(parsed_new, vectors_new)))
        lookup = lambda c: fresh.get(c) or self.known[c]  # noqa: E731
        parsed = [lookup(c)[0] for c in captions]
        vectors = np.stack([lookup(c)[1] for c in captions]) if captions else np.zeros((0, self.dim), np.float32)
        room = self.limit - len(self.known)
        if room > 0:
            self.known.update(list(fresh.items())[:room])
        progress(1.0)
        return parsed, vectors


def _start_helpers(nlp, model, total: int, parse_helper: Optional[bool], count: Optional[int],
                   report: "BuildReport") -> list[ParseWorker]:
    """The build's parse helpers: ``count`` of them (None: ``auto_parse_helpers``), when ``parse_helper`` is
    True, or None and there are at least HELPER_MIN_CAPTIONS new captions and two or more CPUs."""
    if parse_helper is None:
        try:
            least = int(os.environ.get("SEARCHPRIORS_PARSE_HELPER_MIN", HELPER_MIN_CAPTIONS))
        except ValueError:
            least = HELPER_MIN_CAPTIONS
        parse_helper = (total >= least and (os.cpu_count() or 1) >= 2
                        and os.environ.get("SEARCHPRIORS_PARSE_HELPER", "1") != "0")
    if not parse_helper or total == 0:
        return []
    count = auto_parse_helpers(model) if count is None else int(count)
    if parse_helper is True and count < 1:
        count = 1
    helpers: list[ParseWorker] = []
    for _ in range(max(0, count)):
        helper, report.parse_helper = start_parse_worker(nlp)
        if helper is None:
            break
        helpers.append(helper)
    if helpers:
        report.parse_helper = "used"
        report.parse_helpers = len(helpers)
    return helpers


def _close_helpers(helpers: Sequence[ParseWorker], report: "BuildReport") -> None:
    failures = []
    for helper in helpers:
        helper.close()
        if helper.failure:
            failures.append(helper.failure)
    if failures:
        if len(helpers) == 1:
            report.parse_helper = f"failed ({failures[0]}); its captions were parsed in this process"
        else:
            report.parse_helper = (f"failed ({len(failures)} of {len(helpers)}: {failures[0]}); their captions "
                                   f"were parsed by the others or in this process")
        report.notes.append(f"Parse helper process {report.parse_helper}.")


def _publish(folder: str, build_id: str, staged: list[dict], start_names: set, known_keys: set,
             sentence_id: str, spacy_id: str, dim: int, source: Optional[dict], legacy_sums: dict,
             lock_timeout: Optional[float], started: float, report: "BuildReport") -> dict:
    """Merge this build's staged segments into the manifest as it is now, under the writers' lock."""
    with files.WriterLock(folder, lock_timeout) as lock:
        report.lock_waited = lock.waited
        files.fault_point("publish-locked")
        current = _current_manifest(folder, sentence_id, spacy_id, dim)
        names_now = {s["name"] for s in current["segments"]}
        known = set(known_keys)
        for seg in current["segments"]:  # published by other builds since this one started
            if seg["name"] not in start_names:
                known.update(_segment_keys(os.path.join(folder, seg["name"])))
        fresh, superseded = [], []
        for seg in staged:
            if seg["name"] in names_now:
                continue  # published by a build that died before it could remove its staging file
            keys = _segment_keys(os.path.join(folder, seg["name"]))
            keep = []
            for key in keys:
                keep.append(key not in known)
                known.add(key)
            kept = sum(keep)
            report.concurrent_duplicates += len(keys) - kept
            if kept == len(keys):
                fresh.append(seg)
                continue
            superseded.append(seg["name"])
            if kept:
                report._ordinal += 1
                fresh.append(_filter_segment(folder, seg, keep, _segment_name(report._ordinal, build_id), dim))
        manifest = dict(current)
        manifest["version"] = VERSION
        manifest["segments"] = [dict(s, files=s.get("files") or legacy_sums.get(s["name"]))
                                if legacy_sums.get(s["name"]) else s for s in current["segments"]] + fresh
        manifest["count"] = sum(int(s["count"]) for s in manifest["segments"])
        manifest["missing_videos"] = sum(int(s.get("missing_videos", 0)) for s in manifest["segments"])
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if source:
            manifest["sources"] = [s for s in current.get("sources", [])
                                   if s.get("path") != source.get("path")] + [source]
        write_json_atomic(os.path.join(folder, MANIFEST), manifest, owner=build_id)
        files.fault_point("manifest-replaced")
        try:
            os.remove(_staging_path(folder, build_id))
        except FileNotFoundError:
            pass
        files.fault_point("staging-removed")
        for name in superseded:  # never published: no reader can hold them
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        report.orphans_removed = _clean_orphans(folder, manifest, build_id, started)
        report.lock_held = time.monotonic() - lock.acquired
    report.added = sum(int(s["count"]) for s in fresh)
    return manifest


def _verified_keys(folder: str, seg: dict, dim: int) -> list[tuple[str, str]]:
    """The keys of a staged segment taken over from another build, after checking its files."""
    _read_segment(folder, seg, dim)
    return _segment_keys(os.path.join(folder, seg["name"]))


DEFAULT_LOCK_TIMEOUT = 600.0


def build_index(folder: str, entries: Sequence[LibraryEntry], nlp, sentence_model, *,
                progress: Optional[Progress] = None, source: Optional[dict] = None,
                segment_size: int = 20000, batch_tokens: int = BATCH_TOKENS,
                parse_helper: Optional[bool] = None, parse_helpers: Optional[int] = None,
                lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT) -> BuildReport:
    """Add ``entries`` to the index at ``folder`` (created if needed); atomic, resumable, and safe beside
    other builds of the same index (see the module docstring).

    ``progress(done, total)`` is called after every batch (``batch_tokens`` tokens of captions of one length,
    see ``embedding.length_batches``); it may raise to cancel. On any exception the
    published index is unchanged and finished segments are kept for the next build. ``parse_helper``: parse
    in a helper process while this one embeds (see ``parse_worker.py``); None = when there are at least
    ``HELPER_MIN_CAPTIONS`` new captions (or SEARCHPRIORS_PARSE_HELPER_MIN), two or more CPUs, and
    SEARCHPRIORS_PARSE_HELPER is not 0; ``parse_helpers``: how many (None: ``auto_parse_helpers``, every
    core but one when the encoder is on a GPU). ``lock_timeout``: seconds to wait for the writers' lock while another
    build holds it (None: no limit, 0: fail at once with ``index_files.IndexBusyError``); it is held only
    while taking over interrupted work and while publishing.
    """
    folder = os.path.abspath(folder)
    with files.os_errors_as_index_errors(folder):
        return _build(folder, entries, nlp, sentence_model, progress, source, segment_size, batch_tokens,
                      parse_helper, lock_timeout, parse_helpers)


class _BuildPlan(NamedTuple):
    manifest: dict                       # the published manifest when the build started
    start_names: set                     # its segment names
    published: set                       # keys of its captions
    legacy_sums: dict                    # checksums of version-1 segments, recorded at publishing
    staging: dict                        # this build's staging state (segments taken over so far)
    todo: list                           # the entries still to index, each key once


def _plan_build(folder: str, build_id: str, entries: Sequence[LibraryEntry], sentence_id: str, spacy_id: str,
                dim: int, lock_timeout: Optional[float], report: "BuildReport") -> _BuildPlan:
    """Take over interrupted builds' staged segments and list what is left to do (``_build``, and the
    distributed build's driver, ``retrieval.distributed``)."""
    with files.WriterLock(folder, lock_timeout):
        manifest = _current_manifest(folder, sentence_id, spacy_id, dim)
        staged_segments = _take_over_interrupted(folder, build_id, sentence_id, spacy_id)
    start_names = {s["name"] for s in manifest["segments"]}

    published: set[tuple[str, str]] = set()
    legacy_sums: dict[str, dict] = {}
    for seg in manifest["segments"]:
        path = _check_segment(folder, seg["name"])
        published.update(_segment_keys(path))
        if not seg.get("files"):  # version 1: record what is there, once
            legacy_sums[seg["name"]] = {f: files.file_checksum(os.path.join(path, f)) for f in SEGMENT_FILES}
    staged: set[tuple[str, str]] = set()
    usable = []
    for seg in staged_segments:
        if seg["name"] in start_names:
            usable.append(seg)
            continue
        try:
            if not seg.get("files"):  # staged by a version-1 build
                seg = dict(seg, files={f: files.file_checksum(os.path.join(folder, seg["name"], f))
                                       for f in SEGMENT_FILES})
            staged.update(_verified_keys(folder, seg, dim))
            usable.append(seg)
        except (MotionIndexError, OSError) as exc:
            report.notes.append(f"Staged segment {seg['name']} of an interrupted build was damaged and is "
                                f"redone ({exc}).")
    staging = {"build": build_id, "sentence_model": sentence_id, "spacy_model": spacy_id, "segments": usable}
    if len(usable) != len(staged_segments):
        write_json_atomic(_staging_path(folder, build_id), staging, owner=build_id)
    report.resumed = len(staged - published)
    seen = published | staged
    todo: list[LibraryEntry] = []
    for entry in entries:
        if entry.key in published:
            report.skipped_existing += 1
        elif entry.key not in seen:
            seen.add(entry.key)
            todo.append(entry)
    return _BuildPlan(manifest, start_names, published, legacy_sums, staging, todo)


def _open_build(folder: str, sentence_id: str, spacy_id: str, dim: int) -> "files.BuildClaim":
    _open_folder(folder)
    if os.path.isfile(os.path.join(folder, MANIFEST)):
        _current_manifest(folder, sentence_id, spacy_id, dim)  # wrong models: say so before taking anything
    return files.BuildClaim(folder)


def _build(folder, entries, nlp, sentence_model, progress, source, segment_size, batch_tokens, parse_helper,
           lock_timeout, parse_helpers=None) -> BuildReport:
    started, started_wall = time.perf_counter(), time.time()
    dim = embedding_dim(sentence_model)
    sentence_id, spacy_id = sentence_model_identity(sentence_model), spacy_identity(nlp)
    claim = _open_build(folder, sentence_id, spacy_id, dim)
    try:
        report = BuildReport(folder)
        plan = _plan_build(folder, claim.id, entries, sentence_id, spacy_id, dim, lock_timeout, report)
        staging, todo = plan.staging, plan.todo

        table = PhraseTable(dim)
        cache = _CaptionCache(dim)
        total = len(todo)
        if progress:
            progress(0, total)
        helpers = _start_helpers(nlp, sentence_model, total, parse_helper, parse_helpers, report)
        try:
            for seg_start in range(0, total, segment_size):
                chunk = todo[seg_start:seg_start + segment_size]
                captions = [e.caption for e in chunk]

                def chunk_progress(fraction: float) -> None:
                    if progress:
                        progress(seg_start + int(len(chunk) * min(fraction, 1.0)), total)

                parsed, vectors = cache.process(captions, nlp, sentence_model, table, chunk_progress,
                                                batch_tokens=batch_tokens, helpers=helpers)
                report._ordinal += 1
                seg = _write_segment(folder, report._ordinal, chunk, vectors, parsed, table, build_id=claim.id)
                staging["segments"].append(seg)
                write_json_atomic(_staging_path(folder, claim.id), staging, owner=claim.id)
                files.fault_point("staging-written")
        finally:
            _close_helpers(helpers, report)
        report.phrases_embedded = len(table)

        manifest = _publish(folder, claim.id, staging["segments"], plan.start_names, plan.published, sentence_id,
                            spacy_id, dim, source, plan.legacy_sums, lock_timeout, started_wall, report)
    finally:
        claim.release()
    return report.published(manifest, started)


# ------------------------------------------------------------------------------------------------ removal

def _retired_in_grace(manifest: dict) -> set:
    """Segments that a removal replaced less than ``RETIRED_GRACE_S`` ago (a reader may still hold them)."""
    now = time.time()
    return {r["name"] for r in manifest.get("retired", [])
            if isinstance(r, dict) and "name" in r and now - float(r.get("at", 0)) < RETIRED_GRACE_S}


@dataclass
class RemoveReport:
    folder: str
    removed: int = 0
    segments_rewritten: int = 0
    total: int = 0

    def summary(self) -> str:
        return (f"index '{self.folder}': {self.removed} captions removed ({self.segments_rewritten} segments "
                f"rewritten), {self.total} left")


def remove_entries(folder: str, keys, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT) -> RemoveReport:
    """Remove the captions whose (video id, caption) is in ``keys`` from the published index at ``folder``.

    Under the writers' lock: each segment holding such rows is replaced by a new segment without them (or
    dropped when nothing is left) and the manifest is replaced in one step, so readers see the old or the new
    index. The replaced segments are listed under ``retired`` and kept ``RETIRED_GRACE_S`` seconds for readers
    that loaded the older manifest (a search reads entries.sqlite lazily); a later publish or removal deletes
    them. A crash before the manifest is replaced leaves the index as it was (the new segments are leftovers
    that the next build removes). Keys that are not in the index are ignored."""
    folder = os.path.abspath(folder)
    drop = {(str(v), str(c)) for v, c in keys}
    report = RemoveReport(folder)
    if not drop or not os.path.isfile(os.path.join(folder, MANIFEST)):
        return report
    with files.os_errors_as_index_errors(folder):
        claim = files.BuildClaim(folder)
        try:
            with files.WriterLock(folder, lock_timeout):
                manifest = read_manifest(folder)
                dim, ordinal = int(manifest["dim"]), 0
                kept_segments, retired = [], []
                for seg in manifest.get("segments", []):
                    keep = [k not in drop for k in _segment_keys(_check_segment(folder, seg["name"]))]
                    if all(keep):
                        kept_segments.append(seg)
                        continue
                    report.removed += len(keep) - sum(keep)
                    report.segments_rewritten += 1
                    retired.append(seg["name"])
                    if any(keep):
                        ordinal += 1
                        kept_segments.append(_filter_segment(folder, seg, keep, _segment_name(ordinal, claim.id), dim))
                if retired:
                    still = _retired_in_grace(manifest)
                    new = dict(manifest, version=VERSION, segments=kept_segments,
                               count=sum(int(s["count"]) for s in kept_segments),
                               missing_videos=sum(int(s.get("missing_videos", 0)) for s in kept_segments),
                               retired=[r for r in manifest.get("retired", []) if r.get("name") in still]
                               + [{"name": name, "at": time.time()} for name in retired],
                               updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                    write_json_atomic(os.path.join(folder, MANIFEST), new, owner=claim.id)
                    files.fault_point("manifest-replaced")
                    _clean_orphans(folder, new, claim.id, time.time())
                    manifest = new
                report.total = int(manifest.get("count", 0))
        finally:
            claim.release()
    return report


def require_models_match(index: MotionIndex, sentence_model_id: str, spacy_model_id: str) -> None:
    """An index can only be searched with vectors from the models that built it."""
    if index.sentence_model != sentence_model_id:
        raise SearchPriorsError(
            f"The motion index was built with sentence model {index.sentence_model}, but the prompt was "
            f"embedded with {sentence_model_id}: choose {index.sentence_model.rsplit('/', 1)[0]} in "
            f"PromptAtomizer, or rebuild the index with {sentence_model_id.rsplit('/', 1)[0]}.")
    if index.spacy_model != spacy_model_id:
        raise SearchPriorsError(
            f"The motion index was built with spaCy model {index.spacy_model}, but the prompt was parsed "
            f"with {spacy_model_id}: choose the same spaCy model in PromptAtomizer, or rebuild the index.")
