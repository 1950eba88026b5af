"""The motion index on disk: every caption's sentence vector, atomized units and metadata.

Layout of an index folder::

    manifest.json          published state: format, models, segment list (replaced atomically)
    staging.json           segments finished by an interrupted build, not yet published
    seg-000001-ab12cd34/   one immutable segment per build chunk
        sentences.faiss    faiss IndexFlatIP of normalised sentence vectors (n, d)
        phrases.json/.npy  distinct role phrases of the segment and their vectors (p, d)
        units.npy          (u, 3) int32 phrase ids of motion, actor, recipient; -1 = missing role
        unit_offsets.npy   (n + 1) int64: caption i owns units [off[i], off[i+1])
        core.npy           (n,) int32 index of the core unit within the segment, -1 = no unit
        entries.sqlite     row -> video_id, caption, video_path

Builds are atomic and resumable: a segment is written in a temporary folder and renamed when complete;
finished segments are listed in ``staging.json`` until the build ends, when ``manifest.json`` is
replaced in one step. A crash or Cancel leaves the published index as it was, and the next build with
the same models picks up the staged segments. Adding captions adds segments; nothing is rebuilt. Entries
are keyed by (video id, caption): a library entry already indexed is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from .atomizer import parse_texts
from .embedding import BATCH_TOKENS, PhraseTable, embedding_dim, encode_batch, length_batches, sentence_model_identity
from .errors import MotionIndexError, SearchPriorsError
from .library import LibraryEntry
from .models import spacy_identity
from .parse_worker import ParseWorker, spacy_source

FORMAT = "comfyui-searchpriors/motion-index"
VERSION = 1
MANIFEST = "manifest.json"
STAGING = "staging.json"
SEGMENT_FILES = ("sentences.faiss", "phrases.json", "phrases.npy", "units.npy", "unit_offsets.npy",
                 "core.npy", "entries.sqlite")

Progress = Callable[[int, int], None]


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover
        from .errors import MissingDependencyError

        raise MissingDependencyError("faiss-cpu", "The motion index") from exc
    return faiss


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str, data) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


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


@dataclass
class MotionIndex:
    """A loaded index: flat arrays over all segments, ready for ``search.search``."""

    folder: str
    manifest: dict
    sentence_index: object          # faiss.IndexFlatIP with every sentence vector
    phrases: np.ndarray             # (P + 1, d); last row is the zero vector of a missing role
    phrase_texts: list[str]
    units: np.ndarray               # (U, 3) int64 into phrases; missing = P
    unit_offsets: np.ndarray        # (N + 1,)
    core_units: np.ndarray          # (N,) global unit index, -1 = none
    segments: list[Segment] = field(default_factory=list)
    _segment_starts: np.ndarray = None

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
        """Zero-copy (N, d) view of the vectors inside the faiss index."""
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
            ids = np.full(self.count, self.missing_id, dtype=np.int64)
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
            perm = np.argsort(ids, kind="stable")
            sorted_ids = ids[perm]
            distinct = self.core_role_distinct(role)
            return (perm, np.searchsorted(sorted_ids, distinct, side="left"),
                    np.searchsorted(sorted_ids, distinct, side="right"))
        return self._memo(("groups", role), make)

    def core_role_block(self, role: int) -> np.ndarray:
        """float64 vectors of ``core_role_distinct(role)``."""
        return self._memo(("block", role), lambda: self.phrases[self.core_role_distinct(role)].astype(np.float64))

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
                for pos, local in items:
                    hit = con.execute("SELECT video_id, caption, video_path FROM entries WHERE row = ?",
                                      (local,)).fetchone()
                    if hit is None:
                        raise MotionIndexError(f"The index at '{self.folder}' is damaged: row {local} of "
                                               f"segment {self.segments[seg].name} is missing. Rebuild it.")
                    out[pos] = LibraryEntry(hit[0], hit[1], hit[2])
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


def load_index(folder: str) -> MotionIndex:
    """Load and validate a published index (staged, unpublished segments are ignored)."""
    faiss = _faiss()
    folder = os.path.abspath(folder)
    manifest = read_manifest(folder)
    dim = int(manifest["dim"])
    sentence_index = faiss.IndexFlatIP(dim)
    # Segments each carry the phrases they use; the loaded index keeps one row per distinct phrase text
    # (at 1M captions in 50 segments: 26.5k rows instead of 398k), and units are re-pointed at it.
    phrase_blocks, phrase_texts, unit_blocks, offset_blocks, core_blocks = [], [], [], [], []
    phrase_ids: dict[str, int] = {}
    segments, starts = [], []
    n_total = u_total = 0
    for item in manifest.get("segments", []):
        name = item["name"]
        path = _check_segment(folder, name)
        try:
            seg_index = faiss.read_index(os.path.join(path, "sentences.faiss"))
            texts = _read_json(os.path.join(path, "phrases.json"), "Phrase list")
            phrases = np.load(os.path.join(path, "phrases.npy"))
            units = np.load(os.path.join(path, "units.npy"))
            offsets = np.load(os.path.join(path, "unit_offsets.npy"))
            core = np.load(os.path.join(path, "core.npy"))
        except (OSError, ValueError, RuntimeError) as exc:
            raise MotionIndexError(f"The index at '{folder}' is damaged: segment {name} could not be read "
                                   f"({exc}). Rebuild it into a new folder.") from exc
        n = seg_index.ntotal
        consistent = (seg_index.d == dim and phrases.shape == (len(texts), dim) and units.ndim == 2
                      and units.shape[1] == 3 and offsets.shape == (n + 1,) and core.shape == (n,)
                      and n == int(item.get("count", n)) and offsets[-1] == len(units)
                      and (units.size == 0 or (units.max() < len(texts) and units.min() >= -1))
                      and all(isinstance(t, str) for t in texts))
        if not consistent:
            raise MotionIndexError(f"The index at '{folder}' is damaged: segment {name} has inconsistent "
                                   f"arrays. Rebuild it into a new folder.")
        if n:
            sentence_index.add(faiss.rev_swig_ptr(seg_index.get_xb(), n * dim).reshape(n, dim))
        known = len(phrase_ids)
        remap = np.array([phrase_ids.setdefault(t, len(phrase_ids)) for t in texts] + [-1], dtype=np.int64)
        fresh = np.flatnonzero(remap[:-1] >= known)  # first appearance of these texts
        if len(fresh):
            phrase_blocks.append(phrases[fresh])
            phrase_texts.extend(texts[i] for i in fresh)
        unit_blocks.append(remap[units])  # a missing role (-1) picks the trailing -1
        offset_blocks.append(offsets[:-1].astype(np.int64) + u_total)
        core_blocks.append(np.where(core >= 0, core.astype(np.int64) + u_total, -1))
        segments.append(Segment(name, n))
        starts.append(n_total)
        n_total += n
        u_total += len(units)
    p_total = len(phrase_ids)
    phrases = np.concatenate(phrase_blocks + [np.zeros((1, dim), np.float32)], axis=0).astype(np.float32)
    units = np.concatenate(unit_blocks, axis=0) if unit_blocks else np.zeros((0, 3), np.int64)
    units[units < 0] = p_total
    offsets = np.concatenate(offset_blocks + [np.array([u_total], np.int64)])
    core = np.concatenate(core_blocks) if core_blocks else np.zeros(0, np.int64)
    return MotionIndex(folder=folder, manifest=manifest, sentence_index=sentence_index, phrases=phrases,
                       phrase_texts=phrase_texts, units=units, unit_offsets=offsets, core_units=core,
                       segments=segments, _segment_starts=np.array(starts or [0], dtype=np.int64))


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
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"index '{self.folder}': {self.total} captions ({self.added} added"
                + (f", {self.resumed} resumed from an interrupted build" if self.resumed else "")
                + (f", {self.skipped_existing} already indexed" if self.skipped_existing else "")
                + f") in {self.seconds:.1f} s; {self.phrases_embedded} distinct phrases embedded")
        if self.parse_helper == "used":
            text += "; captions parsed in a helper process while this one embedded them"
        if self.missing_videos:
            text += f"; {self.missing_videos} entries in the index have no local video file"
        return "\n".join([text] + self.notes)


def _segment_keys(path: str) -> Iterable[tuple[str, str]]:
    con = sqlite3.connect(f"file:{os.path.join(path, 'entries.sqlite')}?mode=ro", uri=True)
    try:
        yield from con.execute("SELECT video_id, caption FROM entries")
    finally:
        con.close()


def _write_segment(folder: str, ordinal: int, entries: Sequence[LibraryEntry], sentence_vectors: np.ndarray,
                   parsed: Sequence, table: PhraseTable) -> dict:
    faiss = _faiss()
    name = f"seg-{ordinal:06d}-{uuid.uuid4().hex[:8]}"
    tmp = os.path.join(folder, f"_tmp-{name}")
    os.makedirs(tmp)
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
    units = np.array(unit_rows, dtype=np.int32).reshape(-1, 3)
    starts = np.array(offsets[:-1], dtype=np.int64)
    core_arr = np.array([s + c if c >= 0 else -1 for s, c in zip(starts, core)], dtype=np.int32)
    index = faiss.IndexFlatIP(table.dim)
    if len(sentence_vectors):
        index.add(np.ascontiguousarray(sentence_vectors, dtype=np.float32))
    faiss.write_index(index, os.path.join(tmp, "sentences.faiss"))
    with open(os.path.join(tmp, "phrases.json"), "w", encoding="utf-8") as fh:
        json.dump(texts, fh)
    np.save(os.path.join(tmp, "phrases.npy"), np.ascontiguousarray(phrase_vectors, dtype=np.float32))
    np.save(os.path.join(tmp, "units.npy"), units)
    np.save(os.path.join(tmp, "unit_offsets.npy"), np.array(offsets, dtype=np.int64))
    np.save(os.path.join(tmp, "core.npy"), core_arr)
    con = sqlite3.connect(os.path.join(tmp, "entries.sqlite"))
    try:
        con.execute("CREATE TABLE entries (row INTEGER PRIMARY KEY, video_id TEXT NOT NULL, "
                    "caption TEXT NOT NULL, video_path TEXT)")
        con.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)",
                        ((i, e.video_id, e.caption, e.video_path) for i, e in enumerate(entries)))
        con.commit()
    finally:
        con.close()
    for fname in SEGMENT_FILES:
        with open(os.path.join(tmp, fname), "rb+") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(folder, name))
    _fsync_dir(folder)
    return {"name": name, "count": len(entries), "missing_videos": sum(e.video_path is None for e in entries)}


def _prepare_folder(folder: str, sentence_id: str, spacy_id: str, dim: int) -> tuple[dict, dict]:
    """The published manifest (or a new one) and the staging state, checked against the models."""
    if os.path.isdir(folder) and os.path.isfile(os.path.join(folder, MANIFEST)):
        manifest = read_manifest(folder)
        if manifest["sentence_model"] != sentence_id or manifest["spacy_model"] != spacy_id:
            raise MotionIndexError(
                f"The index at '{folder}' was built with sentence model {manifest['sentence_model']} and "
                f"spaCy {manifest['spacy_model']}, not {sentence_id} / {spacy_id}: choose those models, or "
                f"build into a new index folder.")
    elif os.path.isdir(folder) and any(not e.name.startswith(".") for e in os.scandir(folder)):
        raise MotionIndexError(f"'{folder}' exists, is not empty and is not a motion index; it is left "
                               f"untouched. Choose a new index name or an empty folder.")
    else:
        os.makedirs(folder, exist_ok=True)
        manifest = {"format": FORMAT, "version": VERSION, "sentence_model": sentence_id,
                    "spacy_model": spacy_id, "dim": dim, "segments": [], "count": 0, "missing_videos": 0,
                    "sources": []}
    staging_path = os.path.join(folder, STAGING)
    staging = {"sentence_model": sentence_id, "spacy_model": spacy_id, "segments": []}
    if os.path.isfile(staging_path):
        try:
            old = _read_json(staging_path, "Build state")
        except MotionIndexError:
            old = None
        if (isinstance(old, dict) and old.get("sentence_model") == sentence_id
                and old.get("spacy_model") == spacy_id):
            staging["segments"] = [s for s in old.get("segments", [])
                                   if os.path.isdir(os.path.join(folder, s["name"]))]
    for entry in os.scandir(folder):  # leftovers of a crash inside a segment write
        if entry.is_dir() and entry.name.startswith("_tmp-seg-"):
            shutil.rmtree(entry.path, ignore_errors=True)
    return manifest, staging


# Captions per chunk handed to the parse helper, and chunks it may hold at once: small enough that this
# process can take the last chunks back when it runs out of encoding, large enough to keep it busy.
PARSE_CHUNK = 256
HELPER_QUEUE = 4
# A helper takes ~1.5 s to start (the time to parse ~800 captions); below this many new captions it is not
# used. SEARCHPRIORS_PARSE_HELPER=0 turns it off; SEARCHPRIORS_PARSE_HELPER_MIN changes the threshold.
HELPER_MIN_CAPTIONS = 2000


class _EncoderThreads:
    """While the parse helper is busy the encoder runs one thread short (torch only), so that the two stages
    share the cores instead of taking turns; the thread count is restored on exit."""

    def __enter__(self):
        self.torch = sys.modules.get("torch")
        self.default = self.torch.get_num_threads() if self.torch is not None else 1
        self.current = self.default
        return self

    def spare_one(self, spare: bool) -> None:
        want = max(1, self.default - 1) if spare else self.default
        if self.torch is not None and want != self.current:
            self.torch.set_num_threads(want)
            self.current = want

    def __exit__(self, *exc):
        self.spare_one(False)


def _parse_and_encode(texts: Sequence[str], nlp, model, helper: Optional[ParseWorker],
                      progress: Callable[[float], None], batch_tokens: int):
    """Parses and sentence vectors of ``texts``. Parse chunks go to ``helper`` (if any) while this process
    encodes, in batches of equal token length (``embedding.length_batches``: no padding); chunks the helper
    has not been given when encoding is done are parsed here, and so are those of a helper that failed."""
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

    with _EncoderThreads() as threads:
        while True:
            if helper is not None:
                if helper.usable:
                    while pending and len(helper.outstanding) < HELPER_QUEUE:
                        cid = pending.popleft()
                        helper.submit(cid, chunk(cid))
                    place(helper.poll())
                if not helper.usable:  # its chunks come back here
                    pending.extend(helper.take_back())
            waiting = helper is not None and helper.busy
            if not batches and not pending and not waiting:
                break
            threads.spare_one(waiting)
            if batches:
                rows = batches.popleft()
                vectors[rows] = encode_batch(model, [texts[i] for i in rows])
                encoded += len(rows)
            elif pending:
                cid = pending.pop()
                place([(cid, list(parse_texts(nlp, chunk(cid))))])
            else:
                place(helper.wait(timeout=0.5))
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
                progress: Callable[[float], None], batch_tokens: int, helper: Optional[ParseWorker] = None):
        new = [c for c in dict.fromkeys(captions) if c not in self.known]
        parsed_new, vectors_new = _parse_and_encode(new, nlp, sentence_model, helper, progress, batch_tokens)
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


def _start_helper(nlp, total: int, parse_helper: Optional[bool], report: "BuildReport") -> Optional[ParseWorker]:
    if parse_helper is None:
        try:
            least = int(os.environ.get("SEARCHPRIORS_PARSE_HELPER_MIN", HELPER_MIN_CAPTIONS))
        except ValueError:
            least = HELPER_MIN_CAPTIONS
        parse_helper = (total >= least and (os.cpu_count() or 1) >= 2
                        and os.environ.get("SEARCHPRIORS_PARSE_HELPER", "1") != "0")
    if not parse_helper or total == 0:
        return None
    source = spacy_source(nlp)
    if source is None:
        report.parse_helper = "not used (the spaCy pipeline was not loaded from a folder or package)"
        return None
    try:
        helper = ParseWorker(source)
    except OSError as exc:
        report.parse_helper = f"failed to start ({exc}); parsed in this process"
        return None
    report.parse_helper = "used"
    return helper


def build_index(folder: str, entries: Sequence[LibraryEntry], nlp, sentence_model, *,
                progress: Optional[Progress] = None, source: Optional[dict] = None,
                segment_size: int = 20000, batch_tokens: int = BATCH_TOKENS,
                parse_helper: Optional[bool] = None) -> BuildReport:
    """Add ``entries`` to the index at ``folder`` (created if needed); atomic and resumable.

    ``progress(done, total)`` is called after every batch (``batch_tokens`` tokens of captions of one length,
    see ``embedding.length_batches``); it may raise to cancel. On any exception the
    published index is unchanged and finished segments are kept for the next build. ``parse_helper``: parse
    in a helper process while this one embeds (see ``parse_worker.py``); None = when there are at least
    ``HELPER_MIN_CAPTIONS`` new captions (or SEARCHPRIORS_PARSE_HELPER_MIN), two or more CPUs, and
    SEARCHPRIORS_PARSE_HELPER is not 0.
    """
    started = time.perf_counter()
    folder = os.path.abspath(folder)
    dim = embedding_dim(sentence_model)
    sentence_id, spacy_id = sentence_model_identity(sentence_model), spacy_identity(nlp)
    manifest, staging = _prepare_folder(folder, sentence_id, spacy_id, dim)
    report = BuildReport(folder)

    published: set[tuple[str, str]] = set()
    for seg in manifest["segments"]:
        published.update(_segment_keys(_check_segment(folder, seg["name"])))
    staged: set[tuple[str, str]] = set()
    for seg in staging["segments"]:
        staged.update(_segment_keys(os.path.join(folder, seg["name"])))
    report.resumed = len(staged - published)
    seen = published | staged
    todo: list[LibraryEntry] = []
    for entry in entries:
        if entry.key in published:
            report.skipped_existing += 1
        elif entry.key not in seen:
            seen.add(entry.key)
            todo.append(entry)

    table = PhraseTable(dim)
    cache = _CaptionCache(dim)
    ordinal = len(manifest["segments"]) + len(staging["segments"])
    total = len(todo)
    if progress:
        progress(0, total)
    helper = _start_helper(nlp, total, parse_helper, report)
    try:
        for seg_start in range(0, total, segment_size):
            chunk = todo[seg_start:seg_start + segment_size]
            captions = [e.caption for e in chunk]

            def chunk_progress(fraction: float) -> None:
                if progress:
                    progress(seg_start + int(len(chunk) * min(fraction, 1.0)), total)

            parsed, vectors = cache.process(captions, nlp, sentence_model, table, chunk_progress,
                                            batch_tokens=batch_tokens, helper=helper)
            ordinal += 1
            seg = _write_segment(folder, ordinal, chunk, vectors, parsed, table)
            staging["segments"].append(seg)
            write_json_atomic(os.path.join(folder, STAGING), staging)
    finally:
        if helper is not None:
            helper.close()
            if helper.failure:
                report.parse_helper = f"failed ({helper.failure}); its captions were parsed in this process"
                report.notes.append(f"Parse helper process {report.parse_helper}.")
    report.phrases_embedded = len(table)

    manifest = dict(manifest)
    manifest["segments"] = list(manifest["segments"]) + staging["segments"]
    manifest["count"] = sum(int(s["count"]) for s in manifest["segments"])
    manifest["missing_videos"] = sum(int(s.get("missing_videos", 0)) for s in manifest["segments"])
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if source:
        manifest["sources"] = [s for s in manifest.get("sources", []) if s.get("path") != source.get("path")] + [source]
    write_json_atomic(os.path.join(folder, MANIFEST), manifest)
    try:
        os.remove(os.path.join(folder, STAGING))
    except FileNotFoundError:
        pass
    report.added = total + report.resumed
    report.total = manifest["count"]
    report.missing_videos = manifest["missing_videos"]
    report.seconds = time.perf_counter() - started
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
