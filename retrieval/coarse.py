"""Memory-bounded search for large indexes: sentence vectors read from disk on demand, a compressed coarse index.

Below ``COMPRESS_MIN`` captions (500,000; ``SEARCHPRIORS_COMPRESS_MIN`` or ``load_index(compress_min=...)``
change it) an index loads as it always has: every sentence vector as float32 in memory and every search
exact, bit for bit. At or above it:

- the sentence vectors stay in the segments' ``sentences.faiss`` files and are read with ``pread`` for the
  rows a search re-scores (``SegmentVectors``): they cost page cache, never this process's resident memory;
- a coarse index, faiss ``IndexIVFScalarQuantizer`` (8 bits per dimension, inner product, ``nlist`` k-means
  lists; ~d bytes per caption: 3.8 GB at 10M captions of 384 dims instead of 15.4 GB) answers the passes
  that would otherwise scan every vector, and its codes give every row's sentence similarity to within a
  bound e computed per prompt (``CodeScores``: ~0.011), so a decision is read exactly only for rows within
  e of it:
  * ``pos``: the best ``k * POS_RERANK`` rows of the probed lists (``NPROBE_POS`` of them); those within
    2e of the k-th are re-scored exactly (float64 of the float32 vectors) and ranked as the exact path ranks;
  * ``search_t2v``: the unit rounds are phrase look-ups (exact, as before); a sentence round over a
    candidate set of at most ``EXACT_SUBSET`` rows is decided from the codes of every row; a larger set
    among its rows in the ``NPROBE_SUBSET`` lists nearest to the prompt, and a sentence round over the whole
    index in the ``NPROBE_T2V`` nearest lists. A fail-safe inside the sentence round walks phrases as the exact path does, deciding at
    most ``WALK_ROWS`` rows from the codes. Of the candidates, only those whose Eq. 9 score (with the
    8-bit sentence similarity) is within 2e of the k-th best are read and scored exactly (paper ranking).
  So the top-k equals the exact ranking of the rows the coarse passes see; the compressed path can only
  miss captions in lists it did not probe (and, past ``WALK_ROWS``, in a fail-safe's walk);
  benchmarks/bench_scale.py measures recall@10 against the exact ranking.

The coarse index is saved in ``coarse-<id>/coarse.faiss`` and named in the manifest (``"coarse"``: its
folder, the segments it covers, their row count, its size and CRC-32); ``searchpriors index upgrade``
writes it (``upgrade_index``). Segments published after it are added to it in memory when the index loads;
an index without one (or with one that no longer matches) gets one built in memory on load, which at
millions of captions takes minutes: run the upgrade once.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
import uuid
import zlib
from typing import Optional, Sequence

import numpy as np

from ..errors import MotionIndexError, SearchPriorsError

COMPRESS_MIN = 500_000
NPROBE_POS = 64          # 48 gave recall@10 0.948 at 1M (benchmarks/README.md); 64 not re-measured
NPROBE_T2V = 64
NPROBE_SUBSET = 512      # search_t2v: lists searched for a candidate set too large to decide row by row (only
                         # its rows are scored: at 10M, 200k rows in 512 of 2048 lists cost ~30 ms, all lists ~100)
NPROBE_POOL = 192        # the pool_video_support ranking's pool (1,000 nearest captions) spans more lists than a
                         # top-10 (10M: 192 of 2,048 lists gave recall@10 0.983 against every list; 256 0.993 at 1.5x
                         # the time; 128 0.963)
POOL_FETCH = 2           # ... and takes the best POOL_FETCH * pool rows of the probed lists, by 8-bit similarity
POS_RERANK = 10          # pos re-scores the best k * POS_RERANK (at least 100) rows of the coarse pass exactly
EXACT_SUBSET = 40_000    # search_t2v candidate sets up to this size are decided exactly from the mapped vectors
LAZY_FROM = 1_000        # a sentence round with this many sure members reads its band rows only if they are shortlisted
WALK_ROWS = 100_000      # a fail-safe inside the sentence round decides at most this many rows from the codes
COARSE_FILE = "coarse.faiss"
_FLAT_HEADER = 45        # faiss IndexFlat serialisation: 'IxFI', d, ntotal, 2 dummies, is_trained, metric, size


def _faiss():
    from .index import _faiss as load

    return load()


def compress_min(value: Optional[int] = None) -> int:
    """The caption count from which an index loads compressed (argument, else environment, else default)."""
    if value is not None:
        return int(value)
    raw = os.environ.get("SEARCHPRIORS_COMPRESS_MIN")
    if raw:
        try:
            return int(raw)
        except ValueError:
            raise SearchPriorsError(f"SEARCHPRIORS_COMPRESS_MIN must be a whole number of captions, got '{raw}'.")
    return COMPRESS_MIN


def default_nlist(n: int) -> int:
    """k-means lists of the coarse index: about sqrt(n), 64 to 2048 (assigning 10M rows to 2048 lists
    takes a few minutes on 2 cores)."""
    return int(min(2048, max(64, round(np.sqrt(max(n, 1))))))


# ------------------------------------------------------------------------------------- mapped vectors

def flat_vectors(path: str, dim: int, label: str, folder: str) -> "FlatVectorFile":
    """The float32 (n, dim) vectors of a segment's ``sentences.faiss`` (an IndexFlatIP), read on demand."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(_FLAT_HEADER)
    except OSError as exc:
        raise MotionIndexError(f"The index at '{folder}' is damaged: {label} could not be read ({exc}). "
                               f"Rebuild it into a new folder.") from exc
    ok = len(head) == _FLAT_HEADER and head[:4] == b"IxFI"
    if ok:
        d, n = struct.unpack_from("<iq", head, 4)
        floats = struct.unpack_from("<Q", head, 37)[0]
        ok = d == dim and floats == n * d and size == _FLAT_HEADER + 4 * n * d
    if not ok:
        raise MotionIndexError(f"The index at '{folder}' is damaged: {label} is not a flat index of {dim}-dim "
                               f"vectors of the expected size. Rebuild it into a new folder.")
    return FlatVectorFile(path, n, dim, label, folder)


READ_THREADS = 8              # concurrent reads of scattered rows (a disk serves several at once)
PARALLEL_READS_FROM = 64      # runs of consecutive rows from which a read is spread over threads
MAX_OPEN_FILES = 256          # vector files kept open at once (an index of 20,000-caption segments has 500 per
                              # 10M captions); past it a file is opened for each read (the usual limit is 1024)
_POOL = None
_OPEN_LOCK = threading.Lock()
_OPEN_COUNT = 0


def _reader_pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="searchpriors-read")
    return _POOL


class FlatVectorFile:
    """One segment's vectors, read with ``pread`` at their offsets (not memory-mapped: pages of a mapping
    that a read touched would count as this process's resident memory for as long as it stays mapped, and
    after some hundreds of searches a 10M index's whole 15 GB of vectors would be resident; read like this
    they cost page cache only, shared and reclaimable). The file stays open (a segment replaced by a later
    build stays readable until this index is dropped, as a mapping would)."""

    def __init__(self, path: str, n: int, dim: int, label: str, folder: str):
        self.path, self.n, self.dim, self.label, self.folder = path, n, dim, label, folder
        self.row_bytes = 4 * dim
        self.fd = None

    def __len__(self) -> int:
        return self.n

    def __del__(self):
        global _OPEN_COUNT
        fd, self.fd = getattr(self, "fd", None), None
        if fd is not None:
            os.close(fd)
            with _OPEN_LOCK:
                _OPEN_COUNT -= 1

    def _open(self) -> tuple[int, bool]:
        """A descriptor of the file, and whether to close it after this read (past ``MAX_OPEN_FILES``)."""
        global _OPEN_COUNT
        if self.fd is not None:
            return self.fd, False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise MotionIndexError(f"The index at '{self.folder}' changed or is damaged: {self.label} could not be "
                                   f"opened ({exc}). Load the index again.") from exc
        with _OPEN_LOCK:
            if self.fd is None and _OPEN_COUNT < MAX_OPEN_FILES:
                self.fd, _OPEN_COUNT = fd, _OPEN_COUNT + 1
                return fd, False
        return fd, True

    def _read(self, fd: int, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], offset + done)
            if got <= 0:
                raise MotionIndexError(f"The index at '{self.folder}' is damaged: {self.label} ended early. "
                                       f"Rebuild it into a new folder.")
            done += got

    def read_slice(self, a: int, b: int, out: np.ndarray) -> None:
        """Rows a..b into ``out`` (a C-contiguous float32 (b - a, dim) array)."""
        if b > a:
            fd, close = self._open()
            try:
                self._read(fd, memoryview(out).cast("B"), _FLAT_HEADER + a * self.row_bytes)
            finally:
                if close:
                    os.close(fd)

    def read_rows(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Rows ``rows`` (ascending) into ``out``; consecutive rows are read in one call."""
        if len(rows) == 0:
            return
        view = memoryview(out).cast("B")
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        firsts = np.concatenate([[0], breaks]).tolist()
        lasts = np.concatenate([breaks, [len(rows)]]).tolist()
        starts = rows[firsts].tolist()
        rb = self.row_bytes

        fd, close = self._open()

        def read(k0: int, k1: int) -> None:
            for i, j, row in zip(firsts[k0:k1], lasts[k0:k1], starts[k0:k1]):
                self._read(fd, view[i * rb:j * rb], _FLAT_HEADER + row * rb)

        try:
            if len(firsts) < PARALLEL_READS_FROM:
                read(0, len(firsts))
            else:   # rows scattered over a file larger than the page cache are disk reads: several at once
                step = -(-len(firsts) // READ_THREADS)
                list(_reader_pool().map(lambda k: read(k, k + step), range(0, len(firsts), step)))
        finally:
            if close:
                os.close(fd)


class SegmentVectors:
    """All segments' sentence vectors as one read-only (N, d) float32 array: rows are read on demand
    (``FlatVectorFile``: no part of the files stays in this process's memory)."""

    def __init__(self, files: Sequence[FlatVectorFile], dim: int):
        self.maps = list(files)
        self.dim = dim
        counts = [len(m) for m in self.maps]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.shape = (int(self.starts[-1]), dim)
        self.dtype = np.dtype(np.float32)
        self.rows_read = 0

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            out = np.empty((max(stop - start, 0), self.dim), np.float32)
            for s, m in enumerate(self.maps):
                a, b = max(start, self.starts[s]), min(stop, self.starts[s + 1])
                if a < b:
                    m.read_slice(int(a - self.starts[s]), int(b - self.starts[s]), out[a - start:b - start])
            self.rows_read += len(out)
            return out
        rows = np.asarray(key, dtype=np.int64)
        if rows.ndim == 0:
            return self[slice(int(rows), int(rows) + 1)][0]
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError("row out of range")
        order = None
        if len(rows) > 1 and np.any(rows[1:] < rows[:-1]):
            order = np.argsort(rows, kind="stable")
            rows = rows[order]
        out = np.empty((len(rows), self.dim), np.float32)
        cuts = np.searchsorted(rows, self.starts)
        for s, m in enumerate(self.maps):
            a, b = int(cuts[s]), int(cuts[s + 1])
            if a < b:
                m.read_rows(rows[a:b] - self.starts[s], out[a:b])
        self.rows_read += len(rows)
        if order is not None:
            back = np.empty_like(out)
            back[order] = out
            out = back
        return out

    def chunks(self, size: int = 100_000):
        for start in range(0, len(self), size):
            yield start, self[start:start + size]

    def __array__(self, dtype=None, copy=None):
        out = self[0:len(self)]
        return out if dtype is None else out.astype(dtype)

    def __matmul__(self, q: np.ndarray) -> np.ndarray:
        return np.concatenate([c @ q for _, c in self.chunks()]) if len(self) else np.zeros(0, np.float32)


# --------------------------------------------------------------------------------------- coarse index

def build_coarse(vectors, nlist: Optional[int] = None, seed: int = 1234, log=None):
    """A trained faiss IndexIVFScalarQuantizer (8-bit, inner product) holding every row of ``vectors``
    (ids = rows)."""
    faiss = _faiss()
    n, dim = vectors.shape
    nlist = nlist or default_nlist(n)
    rng = np.random.default_rng(seed)
    take = min(n, max(50 * nlist, 50_000), 200_000)
    sample = np.ascontiguousarray(vectors[np.sort(rng.choice(n, take, replace=False))], dtype=np.float32)
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                        faiss.METRIC_INNER_PRODUCT, False)
    ivf.cp.seed = seed
    ivf.train(sample)
    extend_coarse(ivf, vectors, 0, log)
    return ivf


def extend_coarse(ivf, vectors, start: int, log=None) -> None:
    """Add rows ``start..`` of ``vectors`` to ``ivf`` (ids continue its row numbering)."""
    n = len(vectors)
    step = 200_000
    began = time.perf_counter()
    for a in range(start, n, step):
        ivf.add(np.ascontiguousarray(vectors[a:min(a + step, n)], dtype=np.float32))
        if log and (a // step) % 10 == 9:
            log(f"coarse index: {min(a + step, n)}/{n} rows in {time.perf_counter() - began:.0f} s")


class CodeScores:
    """8-bit approximations of the sentence similarity of a prompt with any rows of the coarse index, from
    the codes themselves (no vector is read), and a bound on their error.

    faiss's 8-bit scalar quantizer stores x_i as code c_i in [0, 255] with x_i ~ vmin_i + (c_i + 0.5) / 255
    * vdiff_i, so <q, x> ~ const + sum_i c_i w_i with w_i = q_i vdiff_i / 255, and for every value inside
    the trained range |x_i - x~_i| <= vdiff_i / 510: |<q, x> - approx| <= sum_i |q_i| vdiff_i / 510
    (``bound``; ~0.011 for MiniLM vectors, where the observed error is below 0.008). A value outside the
    range seen in training (k-means sample) is clipped and may err more: rare, and it can only move a row
    near a decision. Rows are found through the index's direct map (8 bytes per caption)."""

    def __init__(self, ivf):
        faiss = _faiss()
        base = faiss.downcast_index(ivf)
        trained = faiss.vector_to_array(base.sq.trained).astype(np.float64)
        d = base.d
        if base.sq.qtype != faiss.ScalarQuantizer.QT_8bit or len(trained) != 2 * d:
            raise SearchPriorsError("The coarse index is not an 8-bit scalar quantizer: run "
                                    "`searchpriors index upgrade` to rebuild it.")
        self.vmin, self.vdiff = trained[:d], trained[d:]
        if base.direct_map.type == faiss.DirectMap.NoMap:
            base.make_direct_map()
        n = base.ntotal
        self.where = faiss.rev_swig_ptr(base.direct_map.array.data(), n) if n else np.zeros(0, np.int64)
        lists = faiss.downcast_InvertedLists(base.invlists)
        self.codes = []
        for lst in range(base.nlist):
            size = lists.list_size(lst)
            self.codes.append(faiss.rev_swig_ptr(lists.get_codes(lst), size * d).reshape(size, d) if size
                              else np.zeros((0, d), np.uint8))
        self.index = base   # keeps the views' memory alive
        self.d = d

    def weights(self, q: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(w, const, bound) for the prompt vector q."""
        q = np.asarray(q, dtype=np.float64)
        w = q * self.vdiff / 255.0
        return w.astype(np.float32), float(q @ self.vmin + 0.5 * w.sum()), float(np.abs(q) @ self.vdiff / 510.0)

    def approx(self, rows: np.ndarray, q: np.ndarray, block: int = 65536) -> np.ndarray:
        """Approximate sentence similarity (float64) of each of ``rows`` (any order) with q."""
        rows = np.asarray(rows, dtype=np.int64)
        w, const, _ = self.weights(q)
        out = np.empty(len(rows), dtype=np.float64)
        if len(rows) == 0:
            return out
        where = self.where[rows]
        lists, offsets = where >> 32, where & 0xFFFFFFFF
        order = np.argsort(lists, kind="stable")
        sorted_lists = lists[order]
        bounds = np.flatnonzero(np.diff(sorted_lists)) + 1
        firsts = np.concatenate([[0], bounds]).tolist()
        lasts = np.concatenate([bounds, [len(rows)]]).tolist()
        for a, b in zip(firsts, lasts):
            sel = order[a:b]
            lst = int(sorted_lists[a])
            for c in range(0, len(sel), block):
                part = sel[c:c + block]
                out[part] = self.codes[lst][offsets[part]].astype(np.float32) @ w
        return out + const


def code_scores(index) -> CodeScores:
    """The ``CodeScores`` of a compressed index (made once per load)."""
    return index._memo(("code_scores",), lambda: CodeScores(index.sentence_index))


def _crc_file(path: str) -> dict:
    crc, size = 0, 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 24)
            if not block:
                break
            crc = zlib.crc32(block, crc)
            size += len(block)
    return {"size": size, "crc32": f"{crc & 0xFFFFFFFF:08x}"}


def read_coarse(folder: str, entry: dict):
    """The saved coarse index named by the manifest's ``coarse`` entry, checked against its size and CRC."""
    faiss = _faiss()
    path = os.path.join(folder, entry["name"], COARSE_FILE)
    expected = (entry.get("files") or {}).get(COARSE_FILE)
    try:
        got = _crc_file(path)
    except OSError as exc:
        raise MotionIndexError(f"The index at '{folder}' is damaged: {entry['name']}/{COARSE_FILE} could not be "
                               f"read ({exc}). Run `searchpriors index upgrade --index {folder}`.") from exc
    if expected and got != {"size": expected.get("size"), "crc32": expected.get("crc32")}:
        raise MotionIndexError(f"The index at '{folder}' is damaged: {entry['name']}/{COARSE_FILE} does not match "
                               f"the manifest. Run `searchpriors index upgrade --index {folder}` to rewrite it.")
    return faiss.read_index(path)


def coarse_for(folder: str, manifest: dict, vectors: SegmentVectors, notes: list, log=None):
    """The coarse index for the loaded segments: the saved one (extended by segments published after it),
    or one built now when there is none or it does not fit."""
    names = [s["name"] for s in manifest.get("segments", [])]
    entry = manifest.get("coarse")
    if isinstance(entry, dict):
        covered = list(entry.get("segments") or [])
        if covered == names[:len(covered)] and int(entry.get("rows", -1)) <= len(vectors):
            ivf = read_coarse(folder, entry)
            if ivf.ntotal == int(entry["rows"]) and ivf.d == vectors.dim:
                if ivf.ntotal < len(vectors):
                    extend_coarse(ivf, vectors, ivf.ntotal, log)
                    notes.append(f"{len(vectors) - int(entry['rows'])} captions published after the coarse index "
                                 f"was saved were added to it on load; `searchpriors index upgrade` saves them.")
                return ivf
        notes.append("the saved coarse index does not match the segments; it was rebuilt in memory")
    else:
        notes.append("the index has no saved coarse index; one was built in memory (`searchpriors index upgrade` "
                     "saves it, so that loading is fast)")
    return build_coarse(vectors, log=log)


def upgrade_index(folder: str, compress_min_rows: Optional[int] = None, nlist: Optional[int] = None,
                  lock_timeout: Optional[float] = 600.0, log=None) -> str:
    """One-command upgrade of an existing index to the current format: records checksums of version-1
    segments and, at or above the compression threshold, writes the coarse index and names it in the
    manifest (version 3). Safe beside readers and builds (the writers' lock; files renamed into place)."""
    from . import index as ix
    from . import index_files as files

    folder = os.path.abspath(folder)
    limit = compress_min(compress_min_rows)
    with files.WriterLock(folder, lock_timeout):
        manifest = ix.read_manifest(folder)
        changes = []
        segments = []
        for seg in manifest.get("segments", []):
            if not seg.get("files"):
                path = ix._check_segment(folder, seg["name"])
                seg = dict(seg, files={f: files.file_checksum(os.path.join(path, f)) for f in ix.SEGMENT_FILES})
                changes.append(f"checksums recorded for {seg['name']}")
            segments.append(seg)
        manifest = dict(manifest, segments=segments)
        count = sum(int(s["count"]) for s in segments)
        old = manifest.get("coarse")
        if count >= limit:
            dim = int(manifest["dim"])
            maps = [flat_vectors(os.path.join(folder, s["name"], "sentences.faiss"), dim, f"{s['name']}/sentences.faiss",
                                 folder) for s in segments]
            vectors = SegmentVectors(maps, dim)
            started = time.perf_counter()
            ivf = build_coarse(vectors, nlist=nlist, log=log)
            name = f"coarse-{uuid.uuid4().hex[:12]}"
            tmp = os.path.join(folder, f"_tmp-{name}")
            os.mkdir(tmp)
            try:
                _faiss().write_index(ivf, os.path.join(tmp, COARSE_FILE))
                with open(os.path.join(tmp, COARSE_FILE), "rb") as fh:
                    os.fsync(fh.fileno())
                sums = {COARSE_FILE: _crc_file(os.path.join(tmp, COARSE_FILE))}
                files.fsync_dir(tmp)
                os.rename(tmp, os.path.join(folder, name))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            files.fsync_dir(folder)
            manifest["coarse"] = {"name": name, "segments": [s["name"] for s in segments], "rows": count,
                                  "nlist": int(ivf.nlist), "kind": "IVF-SQ8", "files": sums}
            changes.append(f"coarse index {name} written ({count} captions, {ivf.nlist} lists, "
                           f"{sums[COARSE_FILE]['size'] / 2**20:.0f} MB, {time.perf_counter() - started:.0f} s)")
        elif old:
            manifest.pop("coarse")
            changes.append(f"below {limit} captions: the coarse index is not used and was dropped")
        manifest["version"] = ix.VERSION
        manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ix.write_json_atomic(os.path.join(folder, ix.MANIFEST), manifest)
        if isinstance(old, dict) and old.get("name") and old.get("name") != (manifest.get("coarse") or {}).get("name"):
            shutil.rmtree(os.path.join(folder, old["name"]), ignore_errors=True)
    if not changes:
        changes.append(f"already current ({count} captions, below the compression threshold of {limit})")
    return f"index '{folder}' upgraded to format {ix.VERSION}: " + "; ".join(changes)
