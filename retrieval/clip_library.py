"""A folder of your own clips as the library: cut into shots, caption each shot, index them, incrementally.

``build_clip_library(clips_root, index_folder, captioner, nlp, sentence_model)``:

1. **Scan** ``clips_root`` and its subfolders for videos (``CLIP_EXTENSIONS``; hidden folders skipped).
2. **Decide what changed** against the builder's state (``<index>/clip_library/state.sqlite``): a clip whose
   size and modification time are as recorded is unchanged (fast path); otherwise its content hash (SHA-256)
   decides; a clip built with other settings (cut settings, frames per shot, captioner, prompt) is redone.
   Clips that failed before are tried again.
3. **Each new or changed clip** is cut into shots with frames sampled per shot (``distill/shots.py``: one
   streaming decode at small size, memory bounded whatever its length or resolution), each shot captioned,
   and the clip's row and its shots' rows are committed to the state in one SQLite transaction. So a crash,
   kill or Cancel loses at most the clip in progress, and the next run picks up from there. A clip that
   cannot be read (not a video, damaged, no frames) or whose shots cannot be captioned gets its own error
   row; the others go on.
4. **Publish** (at the end, and every ``publish_every`` clips): the captioned shots of every clip now in the folder are added to the motion index (the
   index's own atomic, lock-safe ``build_index``; shots already indexed are skipped), then the captions of
   clips that were deleted or changed are removed from it (``index.remove_entries``), and the library file
   (``<index>/clip_library/library.csv``: video_id, video, caption, start_s, end_s, source, shot) is replaced
   atomically. A run that stops before this step leaves the published index as it was.

Each shot's video id is ``<path relative to the clips folder>#<start_s>-<end_s>`` (seconds, 2 decimals):
stable across runs and unique. Two builders on one index at once: the second waits ``lock_timeout`` seconds
for the first, then stops with a message.

Pure logic (no ComfyUI import): the node and the CLI pass the folder, the models and a progress callback.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from . import index_files as files
from ..errors import SearchPriorsError
from .index import CLIP_LIBRARY_DIR, DEFAULT_LOCK_TIMEOUT, build_index, remove_entries
from .library import LibraryEntry

CLIP_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv")
STATE_FILE = "state.sqlite"
LIBRARY_FILE = "library.csv"
LIBRARY_COLUMNS = ("video_id", "video", "caption", "start_s", "end_s", "source", "shot")
HASH_BLOCK = 1 << 20

Progress = Callable[[int, int], None]


class ClipLibraryError(SearchPriorsError):
    """Bad input to the clip library builder; the message names the input and the fix."""


@dataclass(frozen=True)
class ClipFile:
    relpath: str      # '/'-separated, relative to the clips folder
    path: str
    size: int
    mtime_ns: int


@dataclass
class ClipSettings:
    """What decides a clip's shots and captions; a clip built with other settings is redone."""
    frames_per_shot: int = 8
    sample_long_side: int = 448
    threshold: float = 0.015
    ratio: float = 3.0
    min_shot_s: float = 0.4
    prompt: str = ""
    captioner: str = ""          # family and folder name of the captioner

    def check(self) -> None:
        """Refuse bad settings before any clip is read (else every clip would fail the same way)."""
        from ..distill.shots import CutSettings

        if isinstance(self.frames_per_shot, bool) or not isinstance(self.frames_per_shot, int) \
                or not 1 <= self.frames_per_shot <= 256:
            raise ClipLibraryError(f"frames_per_shot must be a whole number from 1 to 256, got {self.frames_per_shot!r}.")
        if isinstance(self.sample_long_side, bool) or not isinstance(self.sample_long_side, int) \
                or not 16 <= self.sample_long_side <= 4096:
            raise ClipLibraryError(f"sample_long_side must be 16 to 4096 pixels, got {self.sample_long_side!r}.")
        try:
            cut = CutSettings(threshold=float(self.threshold), ratio=float(self.ratio), min_shot_s=float(self.min_shot_s))
        except (TypeError, ValueError) as exc:
            raise ClipLibraryError(f"cut settings must be numbers ({exc}).") from exc
        cut.check()

    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclass
class ClipReport:
    folder: str
    index_folder: str
    clips: int = 0
    unchanged: int = 0
    processed: int = 0
    shots_added: int = 0
    deleted: int = 0
    redone_settings: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)       # (clip, why)
    shot_errors: list[tuple[str, str]] = field(default_factory=list)  # (video id, why)
    shots_total: int = 0
    seconds_of_video: float = 0.0
    seconds: float = 0.0
    index_summary: str = ""
    removed_from_index: int = 0
    library_path: str = ""

    def summary(self) -> str:
        lines = [f"clips folder '{self.folder}': {self.clips} clips ({self.processed} cut and captioned"
                 + (f", {self.unchanged} unchanged" if self.unchanged else "")
                 + (f", {self.redone_settings} redone for new settings" if self.redone_settings else "")
                 + (f", {self.deleted} deleted since the last run" if self.deleted else "")
                 + f"); {self.shots_total} captioned shots in the library, {self.shots_added} new "
                 f"({self.seconds_of_video:.1f} s of video read in {self.seconds:.1f} s)"]
        if self.errors:
            shown = "; ".join(f"{c}: {why}" for c, why in self.errors[:5])
            lines.append(f"{len(self.errors)} clips failed and are left out (tried again next run): {shown}"
                         + (" ..." if len(self.errors) > 5 else ""))
        if self.shot_errors:
            shown = "; ".join(f"{v}: {why}" for v, why in self.shot_errors[:3])
            lines.append(f"{len(self.shot_errors)} shots could not be captioned: {shown}"
                         + (" ..." if len(self.shot_errors) > 3 else ""))
        if self.index_summary:
            lines.append(self.index_summary)
        if self.removed_from_index:
            lines.append(f"{self.removed_from_index} captions of deleted or changed clips removed from the index.")
        if self.library_path:
            lines.append(f"library file: {self.library_path}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ scanning

def check_clips_folder(folder: str) -> str:
    if not isinstance(folder, str) or not folder.strip():
        raise ClipLibraryError("The clips folder is empty: give a folder of videos (mp4, webm, mov, mkv).")
    folder = os.path.abspath(folder)
    if not os.path.exists(folder):
        raise ClipLibraryError(f"Clips folder '{folder}' does not exist: give a folder of videos "
                               f"({', '.join(CLIP_EXTENSIONS)}).")
    if not os.path.isdir(folder):
        raise ClipLibraryError(f"'{folder}' is a file, not a folder: give the folder that holds the videos "
                               f"(subfolders are read too).")
    return folder


def scan_clips(folder: str) -> list[ClipFile]:
    """Every video file under ``folder`` (nested; hidden files and folders skipped), sorted by path."""
    folder = check_clips_folder(folder)
    found: list[ClipFile] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or not name.lower().endswith(CLIP_EXTENSIONS):
                continue
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not os.path.isfile(path):
                continue
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            found.append(ClipFile(rel, path, int(st.st_size), int(st.st_mtime_ns)))
    return found


def content_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def shot_id(relpath: str, start_s: float, end_s: float) -> str:
    return f"{relpath}#{start_s:.2f}-{end_s:.2f}"


def make_entry(video_id: str, caption: str, path: Optional[str], start_s: Optional[float],
               end_s: Optional[float]) -> LibraryEntry:
    """A library entry for a shot: its video file and its start and end times."""
    return LibraryEntry(video_id, caption, path, start_s=start_s, end_s=end_s)


# ------------------------------------------------------------------------------------------------ the state

class ClipState:
    """The builder's per-clip state in SQLite: every clip's hash, settings, status and shots, and the keys
    it ever published to the index. Each clip is one transaction."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, STATE_FILE)
        self.con = sqlite3.connect(self.path, timeout=30)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        with self.con:
            self.con.execute("CREATE TABLE IF NOT EXISTS clips (relpath TEXT PRIMARY KEY, size INTEGER, "
                             "mtime_ns INTEGER, sha256 TEXT, settings TEXT, status TEXT, error TEXT, "
                             "duration REAL, updated REAL)")
            self.con.execute("CREATE TABLE IF NOT EXISTS shots (relpath TEXT, shot INTEGER, video_id TEXT, "
                             "start_s REAL, end_s REAL, caption TEXT, error TEXT, PRIMARY KEY (relpath, shot))")
            self.con.execute("CREATE TABLE IF NOT EXISTS published (video_id TEXT, caption TEXT, "
                             "PRIMARY KEY (video_id, caption))")

    def close(self) -> None:
        self.con.close()

    def clips(self) -> dict[str, tuple]:
        rows = self.con.execute("SELECT relpath, size, mtime_ns, sha256, settings, status FROM clips")
        return {r[0]: r[1:] for r in rows}

    def touch(self, clip: ClipFile) -> None:
        with self.con:
            self.con.execute("UPDATE clips SET size = ?, mtime_ns = ? WHERE relpath = ?",
                             (clip.size, clip.mtime_ns, clip.relpath))

    def record(self, clip: ClipFile, sha: Optional[str], settings: str, status: str, error: Optional[str],
               duration: float, shots: Sequence[tuple]) -> None:
        """One clip's outcome, all or nothing. ``shots``: (shot, video_id, start_s, end_s, caption, error)."""
        with self.con:
            self.con.execute("DELETE FROM shots WHERE relpath = ?", (clip.relpath,))
            self.con.executemany("INSERT INTO shots VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 [(clip.relpath, *s) for s in shots])
            self.con.execute("INSERT OR REPLACE INTO clips VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (clip.relpath, clip.size, clip.mtime_ns, sha, settings, status, error, duration,
                              time.time()))

    def forget(self, relpaths: Sequence[str]) -> None:
        with self.con:
            for rel in relpaths:
                self.con.execute("DELETE FROM shots WHERE relpath = ?", (rel,))
                self.con.execute("DELETE FROM clips WHERE relpath = ?", (rel,))

    def captioned_shots(self) -> list[tuple]:
        """(relpath, shot, video_id, start_s, end_s, caption) of every captioned shot, in path order."""
        return list(self.con.execute("SELECT relpath, shot, video_id, start_s, end_s, caption FROM shots "
                                     "WHERE caption IS NOT NULL ORDER BY relpath, shot"))

    def published(self) -> set[tuple[str, str]]:
        return set(self.con.execute("SELECT video_id, caption FROM published"))

    def set_published(self, keys: set[tuple[str, str]]) -> None:
        with self.con:
            self.con.execute("DELETE FROM published")
            self.con.executemany("INSERT INTO published VALUES (?, ?)", sorted(keys))


# ------------------------------------------------------------------------------------------------ building

def _write_library_csv(path: str, root: str, rows: Sequence[tuple]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LIBRARY_COLUMNS)
    for rel, shot, vid, start, end, caption in rows:
        writer.writerow([vid, os.path.join(root, *rel.split("/")), caption, f"{start:.3f}", f"{end:.3f}", rel, shot])
    folder = os.path.dirname(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    files.write_bytes(tmp, buffer.getvalue().encode("utf-8"), folder)
    os.replace(tmp, path)
    files.fsync_dir(folder)


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def build_clip_library(clips_root: str, index_folder: str, captioner, nlp, sentence_model, *,
                       prompt: Optional[str] = None, settings: Optional[ClipSettings] = None,
                       batch_size: int = 4, progress: Optional[Progress] = None,
                       lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
                       detect=None, publish_every: int = 100) -> ClipReport:
    """Cut, caption and index the clips under ``clips_root`` into the motion index at ``index_folder``
    (see the module docstring). ``captioner``: an object with ``caption(shots, prompt, batch_size)`` ->
    one str or exception per shot and a ``family`` (``retrieval.captioner``). ``progress(done, total)``:
    clips done out of clips to do; called often (also within a clip) and may raise to cancel, which
    keeps every finished clip. ``detect``: the shot detector (``distill.shots.detect_shots`` by default).
    ``publish_every``: during a long build, publish to the index after every this many clips (0: at the end only),
    so a large folder becomes searchable as it goes."""
    started = time.perf_counter()
    clips_root = check_clips_folder(clips_root)
    index_folder = os.path.abspath(index_folder)
    inside = os.path.commonpath([clips_root, index_folder])
    if inside in (clips_root, index_folder):
        raise ClipLibraryError(f"The clips folder '{clips_root}' and the index folder '{index_folder}' must not "
                               f"contain each other: keep the videos outside models/motion_index.")
    clips = scan_clips(clips_root)
    settings = settings or ClipSettings()
    settings.check()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ClipLibraryError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")
    if prompt is None:
        from .captioner import DEFAULT_CAPTION_PROMPT
        prompt = DEFAULT_CAPTION_PROMPT
    settings = dataclasses.replace(settings, prompt=prompt, captioner=_captioner_name(captioner))
    if detect is None:
        from ..distill.shots import detect_shots as detect
    report = ClipReport(clips_root, index_folder, clips=len(clips))
    state_folder = os.path.join(index_folder, CLIP_LIBRARY_DIR)
    try:
        os.makedirs(state_folder, exist_ok=True)
    except OSError as exc:
        raise files.translate_os_error(exc, index_folder) or exc
    lock = files.WriterLock(state_folder, lock_timeout)   # one clip builder per index at a time
    try:
        lock.__enter__()
    except files.IndexBusyError as exc:
        raise ClipLibraryError(f"Another clip library build is running into '{index_folder}' and did not finish "
                               f"within {lock_timeout:g} s; nothing was changed. Run again when it is done.") from exc
    try:
        state = ClipState(state_folder)
        try:
            _build(clips_root, index_folder, state_folder, clips, state, captioner, nlp, sentence_model, prompt,
                   settings, batch_size, progress, lock_timeout, detect, report, publish_every)
        finally:
            state.close()
    finally:
        lock.__exit__(None, None, None)
    report.seconds = time.perf_counter() - started
    return report


def _captioner_name(captioner) -> str:
    family = getattr(captioner, "family", type(captioner).__name__)
    folder = getattr(captioner, "folder", "")
    return f"{family}:{os.path.basename(os.path.normpath(folder)) if folder else ''}"


def _build(clips_root, index_folder, state_folder, clips, state, captioner, nlp, sentence_model, prompt, settings,
           batch_size, progress, lock_timeout, detect, report: ClipReport, publish_every: int = 0) -> None:
    if not clips:   # before anything is forgotten: a wrong folder must not empty the state
        raise ClipLibraryError(f"No video files ({', '.join(CLIP_EXTENSIONS)}) in '{clips_root}' or its "
                               f"subfolders: put the clips there, or choose the folder that holds them.")
    known = state.clips()
    present = {c.relpath for c in clips}
    gone = sorted(set(known) - present)
    report.deleted = len(gone)
    state.forget(gone)
    key = settings.key()
    todo: list[tuple[ClipFile, Optional[str]]] = []
    for clip in clips:
        old = known.get(clip.relpath)
        if old is not None and old[4] == "ok" and old[3] == key:
            if (old[0], old[1]) == (clip.size, clip.mtime_ns):
                report.unchanged += 1
                continue
            try:
                sha = content_hash(clip.path)
            except OSError:
                todo.append((clip, None))   # its own error row when it is processed
                continue
            if sha == old[2]:
                state.touch(clip)
                report.unchanged += 1
                continue
            todo.append((clip, sha))
        else:
            if old is not None and old[4] == "ok" and old[3] != key:
                report.redone_settings += 1
            todo.append((clip, None))
    total = len(todo)
    if progress:
        progress(0, total)
    for done, (clip, sha) in enumerate(todo):
        _one_clip(clip, sha, state, captioner, prompt, settings, batch_size, detect, report,
                  (lambda *_: progress(done, total)) if progress else None)
        if publish_every and (done + 1) % publish_every == 0 and done + 1 < total and state.captioned_shots():
            _publish(clips_root, index_folder, state_folder, state, nlp, sentence_model, lock_timeout, report)
        if progress:
            progress(done + 1, total)

    if not state.captioned_shots():
        broken = f" ({'; '.join(f'{c}: {w}' for c, w in report.errors[:3])})" if report.errors else ""
        raise ClipLibraryError(f"No shots found in the {len(clips)} clips of '{clips_root}'{broken}: nothing was "
                               f"indexed. Check that the files play in a video player and that the captioner "
                               f"works on them.")
    _publish(clips_root, index_folder, state_folder, state, nlp, sentence_model, lock_timeout, report)


def _publish(clips_root, index_folder, state_folder, state, nlp, sentence_model, lock_timeout, report) -> None:
    """Every captioned shot of the clips in the state into the index, the shots of deleted and changed clips out
    of it, and the library file replaced (also every ``publish_every`` clips during a long build)."""
    rows = state.captioned_shots()
    report.shots_total = len(rows)
    entries = [make_entry(vid, caption, os.path.join(clips_root, *rel.split("/")), start, end)
               for rel, _, vid, start, end, caption in rows]
    build = build_index(index_folder, entries, nlp, sentence_model, progress=None, lock_timeout=lock_timeout,
                        source={"path": clips_root, "format": "clip_library"})
    report.shots_added += build.added
    wanted = {e.key for e in entries}
    stale = state.published() - wanted
    removed = remove_entries(index_folder, stale, lock_timeout=lock_timeout) if stale else None
    report.removed_from_index += removed.removed if removed else 0
    state.set_published(wanted)
    report.index_summary = build.summary() if removed is None else f"{build.summary()}\n{removed.summary()}"
    report.library_path = os.path.join(state_folder, LIBRARY_FILE)
    _write_library_csv(report.library_path, clips_root, rows)


def _one_clip(clip: ClipFile, sha: Optional[str], state: ClipState, captioner, prompt: str, settings: ClipSettings,
              batch_size: int, detect, report: ClipReport, check: Optional[Progress]) -> None:
    from ..distill.shots import CutSettings

    key = settings.key()
    try:
        sha = sha or content_hash(clip.path)
        found = detect(clip.path, frames_per_shot=settings.frames_per_shot,
                       sample_long_side=settings.sample_long_side,
                       settings=CutSettings(threshold=settings.threshold, ratio=settings.ratio,
                                            min_shot_s=settings.min_shot_s), progress=check)
    except SearchPriorsError as exc:
        _clip_failed(clip, sha, key, state, report, _error_text(exc))
        return
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        _clip_failed(clip, sha, key, state, report, f"could not be read ({_error_text(exc)})")
        return
    report.seconds_of_video += found.duration
    results = captioner.caption([s.frames for s in found.shots], prompt, batch_size=batch_size)
    if check:
        check(0, 0)
    rows, failed = [], 0
    for shot, result in zip(found.shots, results):
        vid = shot_id(clip.relpath, shot.start_s, shot.end_s)
        if isinstance(result, BaseException) or not isinstance(result, str) or not result.strip():
            why = _error_text(result) if isinstance(result, BaseException) else "empty caption"
            rows.append((shot.index, vid, shot.start_s, shot.end_s, None, why))
            report.shot_errors.append((vid, why))
            failed += 1
        else:
            rows.append((shot.index, vid, shot.start_s, shot.end_s, " ".join(result.split()), None))
    status = "ok" if not failed else "error"
    error = None if not failed else f"{failed} of {len(rows)} shots could not be captioned"
    if failed:
        report.errors.append((clip.relpath, error))
    state.record(clip, sha, key, status, error, found.duration, rows)
    report.processed += 1


def _clip_failed(clip, sha, key, state, report, why: str) -> None:
    report.errors.append((clip.relpath, why))
    state.record(clip, sha, key, "error", why, 0.0, [])
    report.processed += 1
