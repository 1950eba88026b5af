"""Readers for captioned video libraries: generic CSV / JSONL, WebVid CSV, MSR-VTT annotation JSON, OpenVid-1M
CSV and Panda-70M CSV, as they are published.

Entries may be shots inside longer videos: ``start_s`` / ``end_s`` (seconds; None = from the start / to the
end). Generic CSV / JSONL take them from ``start_s`` / ``end_s`` columns (also ``start`` / ``end``,
``start_time`` / ``end_time``, or one ``timestamp`` column holding a pair); Panda-70M gives each video a list
of clip timestamps and captions (one entry per clip, on the whole downloaded video); MSR-VTT's own clips
(``video123.mp4``) are used whole, and where only the source video is there (named by its YouTube id) its
``start time`` / ``end time`` mark the clip. Times are seconds or ``H:MM:SS.mmm``.

Every reader yields ``LibraryEntry`` rows (video id, caption, local video path or None) and fills a
``LibraryReport``: rows it could not read (with line numbers) and entries whose video file is absent. A
captions-only library (no local videos, as for benchmarks) is allowed; the report says how many entries
lack a video. A library with missing columns is an error that names the columns found and expected.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from ..errors import SearchPriorsError

FORMATS = ("auto", "csv", "jsonl", "webvid", "msrvtt", "openvid", "panda70m")
VIDEO_COLUMNS = ("video", "video_path", "path", "file", "filename", "video_file")
CAPTION_COLUMNS = ("caption", "text", "name", "description", "prompt")
ID_COLUMNS = ("video_id", "videoid", "id")
WEBVID_COLUMNS = ("videoid", "name", "page_dir")
START_COLUMNS = ("start_s", "start", "start_time", "start_sec", "begin", "begin_s")
END_COLUMNS = ("end_s", "end", "end_time", "end_sec", "stop")
TIMESTAMP_COLUMNS = ("timestamp", "timestamps", "span")
PANDA_COLUMNS = ("videoid", "timestamp", "caption")
OPENVID_MARKS = ("aesthetic score", "motion score", "temporal consistency score")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif")


@dataclass(frozen=True)
class LibraryEntry:
    video_id: str
    caption: str
    video_path: Optional[str]   # absolute path, or None when the library names no file
    start_s: Optional[float] = None   # the shot inside the file, seconds; None: from the start
    end_s: Optional[float] = None     # ... None: to the end

    @property
    def key(self) -> tuple[str, str]:
        return (self.video_id, self.caption)


@dataclass
class LibraryReport:
    path: str
    format: str
    rows: int = 0
    bad_rows: list[tuple[int, str]] = field(default_factory=list)   # (line, why)
    missing_videos: int = 0
    first_missing: list[str] = field(default_factory=list)

    def note_missing(self, entry: LibraryEntry) -> None:
        self.missing_videos += 1
        if len(self.first_missing) < 3:
            self.first_missing.append(entry.video_id)

    def summary(self) -> str:
        parts = [f"{self.rows} entries read from {os.path.basename(self.path)} ({self.format})"]
        if self.bad_rows:
            shown = ", ".join(f"line {n}: {why}" for n, why in self.bad_rows[:3])
            parts.append(f"{len(self.bad_rows)} unreadable rows skipped ({shown})")
        if self.missing_videos:
            parts.append(f"{self.missing_videos} entries have no local video file "
                         f"(e.g. {', '.join(self.first_missing)}); they can be retrieved but not used "
                         f"as a video source")
        return "; ".join(parts)


def file_fingerprint(path: str) -> str:
    """Content hash of a library file (names a build, decides whether staged work can be resumed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def detect_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        return "msrvtt"
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            header = next(csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ","), [])
        names = {h.strip().lower() for h in header}
        if set(PANDA_COLUMNS) <= names:
            return "panda70m"
        if {"video", "caption"} <= names and names & set(OPENVID_MARKS):
            return "openvid"
        return "webvid" if set(WEBVID_COLUMNS) <= names else "csv"
    raise SearchPriorsError(
        f"Cannot tell the library format of '{os.path.basename(path)}' from its extension: use a .csv, "
        f".jsonl or MSR-VTT .json file, or choose the format explicitly.")


def _pick(columns: list[str], wanted: tuple[str, ...]) -> Optional[str]:
    lower = {c.strip().lower(): c for c in columns}
    for name in wanted:
        if name in lower:
            return lower[name]
    return None


_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")


def parse_time(value) -> Optional[float]:
    """Seconds from a number, "12.5", "0:01:02.500" or "01:02"; None for an empty value. A bad value (text,
    negative, NaN, inf) raises ValueError naming it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        clock = _CLOCK.match(text)
        if clock:
            h, m, sec = clock.groups()
            seconds = int(h or 0) * 3600 + int(m) * 60 + float(sec)
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"time {text!r} is not seconds or H:MM:SS") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"time {value!r} is not a finite number of seconds >= 0")
    return seconds


def parse_span(start, end) -> tuple[Optional[float], Optional[float]]:
    """(start_s, end_s) checked: end after start."""
    a, b = parse_time(start), parse_time(end)
    if a is not None and b is not None and b <= a:
        raise ValueError(f"end {b:g} s is not after start {a:g} s")
    return a, b


def parse_timestamp(value) -> tuple[Optional[float], Optional[float]]:
    """A ``timestamp`` cell: "[start, end]", "start-end" (seconds) or a pair of clock strings."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    pair = value
    if isinstance(value, str):
        text = value.strip()
        try:
            pair = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pair = re.split(r"\s*(?:,|\s-\s|-(?=\d))\s*", text.strip("[]()"))
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise ValueError(f"timestamp {value!r} is not a [start, end] pair")
    return parse_span(*pair)


def _resolve_video(root: str, value: str) -> str:
    return os.path.normpath(value if os.path.isabs(value) else os.path.join(root, value))


class _Reader:
    def __init__(self, path: str, fmt: str, videos_root: Optional[str]):
        self.path = os.path.abspath(path)
        self.root = os.path.abspath(videos_root) if videos_root else os.path.dirname(self.path)
        self.report = LibraryReport(self.path, fmt)

    def entry(self, video_id: str, caption: str, video_value: Optional[str], start_s: Optional[float] = None,
              end_s: Optional[float] = None) -> Optional[LibraryEntry]:
        caption = " ".join(str(caption).split())
        if not caption:
            return None
        path = _resolve_video(self.root, video_value) if video_value else None
        if path is not None and not os.path.isfile(path):
            path = None
        entry = LibraryEntry(str(video_id), caption, path, start_s, end_s)
        if path is None:
            self.report.note_missing(entry)
        self.report.rows += 1
        return entry


def _check_columns(path: str, columns: list[str], need: dict[str, tuple[str, ...]]) -> dict[str, str]:
    found = {role: _pick(columns, names) for role, names in need.items()}
    missing = [role for role, col in found.items() if col is None]
    if missing:
        wanted = "; ".join(f"{role}: one of {', '.join(need[role])}" for role in missing)
        raise SearchPriorsError(
            f"Library '{os.path.basename(path)}' lacks required columns ({wanted}); it has "
            f"{', '.join(columns) or 'no header'}. Rename the columns or choose the right format.")
    return found


def _read_csv(r: _Reader) -> Iterator[LibraryEntry]:
    delimiter = "\t" if r.path.lower().endswith(".tsv") else ","
    with open(r.path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        cols = _check_columns(r.path, list(reader.fieldnames or []),
                              {"caption": CAPTION_COLUMNS, "video": VIDEO_COLUMNS})
        id_col = _pick(list(reader.fieldnames or []), ID_COLUMNS)
        time_cols = _time_columns(list(reader.fieldnames or []))
        for row in reader:
            line = reader.line_num
            if None in row or any(row.get(c) is None for c in cols.values()):
                r.report.bad_rows.append((line, "wrong number of fields"))
                continue
            try:
                start_s, end_s = _row_times(row, time_cols)
            except ValueError as exc:
                r.report.bad_rows.append((line, str(exc)))
                continue
            video = row[cols["video"]].strip()
            vid = (row.get(id_col) or "").strip() if id_col else ""
            vid = vid or Path(video).stem or f"row{line}"
            entry = r.entry(vid, row[cols["caption"]], video or None, start_s, end_s)
            if entry is None:
                r.report.bad_rows.append((line, "empty caption"))
                continue
            yield entry


def _time_columns(columns: list[str]) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(start, end, timestamp) column names present, or None each."""
    return _pick(columns, START_COLUMNS), _pick(columns, END_COLUMNS), _pick(columns, TIMESTAMP_COLUMNS)


def _row_times(row: dict, cols) -> tuple[Optional[float], Optional[float]]:
    start_col, end_col, stamp_col = cols
    if start_col or end_col:
        return parse_span(row.get(start_col) if start_col else None, row.get(end_col) if end_col else None)
    if stamp_col:
        return parse_timestamp(row.get(stamp_col))
    return None, None


def _read_jsonl(r: _Reader) -> Iterator[LibraryEntry]:
    with open(r.path, encoding="utf-8", errors="replace") as fh:
        checked = False
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                r.report.bad_rows.append((line_no, f"invalid JSON ({exc.msg})"))
                continue
            if not isinstance(obj, dict):
                r.report.bad_rows.append((line_no, "not a JSON object"))
                continue
            if not checked:
                _check_columns(r.path, list(obj), {"caption": CAPTION_COLUMNS, "video": VIDEO_COLUMNS})
                checked = True
            cap_key, vid_key = _pick(list(obj), CAPTION_COLUMNS), _pick(list(obj), VIDEO_COLUMNS)
            if cap_key is None or vid_key is None or not isinstance(obj.get(cap_key), str):
                r.report.bad_rows.append((line_no, "missing caption or video field"))
                continue
            try:
                start_s, end_s = _row_times(obj, _time_columns(list(obj)))
            except ValueError as exc:
                r.report.bad_rows.append((line_no, str(exc)))
                continue
            video = str(obj.get(vid_key) or "").strip()
            id_key = _pick(list(obj), ID_COLUMNS)
            vid = str(obj.get(id_key) or "").strip() if id_key else ""
            entry = r.entry(vid or Path(video).stem or f"line{line_no}", obj[cap_key], video or None, start_s, end_s)
            if entry is None:
                r.report.bad_rows.append((line_no, "empty caption"))
                continue
            yield entry


def _read_webvid(r: _Reader) -> Iterator[LibraryEntry]:
    with open(r.path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.DictReader(fh)
        cols = _check_columns(r.path, list(reader.fieldnames or []),
                              {"videoid": ("videoid",), "name": ("name",), "page_dir": ("page_dir",)})
        for row in reader:
            line = reader.line_num
            vid, name, page = (row.get(cols[k]) for k in ("videoid", "name", "page_dir"))
            if not vid or name is None or page is None or None in row:
                r.report.bad_rows.append((line, "missing videoid, name or page_dir"))
                continue
            # the layout WebVid download scripts write: <root>/<page_dir>/<videoid>.mp4
            entry = r.entry(vid.strip(), name, os.path.join(page.strip(), f"{vid.strip()}.mp4"))
            if entry is None:
                r.report.bad_rows.append((line, "empty caption"))
                continue
            yield entry


def _read_msrvtt(r: _Reader) -> Iterator[LibraryEntry]:
    try:
        with open(r.path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SearchPriorsError(f"Library '{os.path.basename(r.path)}' is not valid JSON ({exc}). "
                                f"Use the MSR-VTT annotation file (train_val_videodatainfo.json).") from exc
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise SearchPriorsError(
            f"Library '{os.path.basename(r.path)}' is not an MSR-VTT annotation file: it needs a "
            f"'sentences' list of {{video_id, caption}} objects.")
    sources = _msrvtt_sources(r, data.get("videos"))
    for n, sentence in enumerate(data["sentences"]):
        if not isinstance(sentence, dict) or not sentence.get("video_id") or not isinstance(sentence.get("caption"), str):
            r.report.bad_rows.append((n + 1, "sentence without video_id or caption"))
            continue
        vid = str(sentence["video_id"])
        video, start_s, end_s = f"{vid}.mp4", None, None
        if not os.path.isfile(_resolve_video(r.root, video)) and vid in sources:
            video, start_s, end_s = sources[vid]      # the clip inside its source video
        entry = r.entry(vid, sentence["caption"], video, start_s, end_s)
        if entry is None:
            r.report.bad_rows.append((n + 1, "empty caption"))
            continue
        yield entry


def _msrvtt_sources(r: _Reader, videos) -> dict[str, tuple[str, float, float]]:
    """video_id -> (source file, start, end) for MSR-VTT clips whose source video (named by its YouTube id,
    any video extension) is under the videos root; MSR-VTT's own clip files take precedence (see above)."""
    out: dict[str, tuple[str, float, float]] = {}
    if not isinstance(videos, list):
        return out
    for v in videos:
        if not isinstance(v, dict) or not v.get("video_id") or not v.get("url"):
            continue
        match = re.search(r"(?:v=|youtu\.be/)([A-Za-z0-9_-]{6,})", str(v["url"]))
        if not match:
            continue
        source = next((match.group(1) + ext for ext in VIDEO_EXTENSIONS
                       if os.path.isfile(os.path.join(r.root, match.group(1) + ext))), None)
        if source is None:
            continue
        try:
            start_s, end_s = parse_span(v.get("start time"), v.get("end time"))
        except ValueError:
            continue
        out[str(v["video_id"])] = (source, start_s, end_s)
    return out


def _video_file(root: str, stem: str) -> str:
    """``stem`` with the first video extension found under root (.mp4 when none is: reported missing)."""
    for ext in VIDEO_EXTENSIONS:
        if os.path.isfile(os.path.join(root, stem + ext)):
            return stem + ext
    return stem + ".mp4"


def _read_panda(r: _Reader) -> Iterator[LibraryEntry]:
    """Panda-70M: one row per video (videoID, url, timestamp, caption, matching_score) whose timestamp and
    caption cells are lists, one item per clip; each clip becomes an entry on the whole video
    ``<root>/<videoID>.mp4`` with its times, id ``<videoID>_<k>``."""
    with open(r.path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.DictReader(fh)
        cols = _check_columns(r.path, list(reader.fieldnames or []),
                              {"videoID": ("videoid",), "timestamp": ("timestamp",), "caption": ("caption",)})
        for row in reader:
            line = reader.line_num
            vid = (row.get(cols["videoID"]) or "").strip()
            try:
                stamps = ast.literal_eval((row.get(cols["timestamp"]) or "").strip())
                captions = ast.literal_eval((row.get(cols["caption"]) or "").strip())
            except (ValueError, SyntaxError):
                r.report.bad_rows.append((line, "timestamp or caption is not a list"))
                continue
            if isinstance(captions, str):
                captions = [captions]
                stamps = [stamps]
            if not vid or not isinstance(stamps, (list, tuple)) or not isinstance(captions, (list, tuple)) \
                    or len(stamps) != len(captions):
                r.report.bad_rows.append((line, "videoID missing or timestamps and captions differ in number"))
                continue
            video = _video_file(r.root, vid)
            for k, (stamp, caption) in enumerate(zip(stamps, captions)):
                try:
                    start_s, end_s = parse_timestamp(stamp)
                except ValueError as exc:
                    r.report.bad_rows.append((line, f"clip {k}: {exc}"))
                    continue
                entry = r.entry(f"{vid}_{k}", str(caption), video, start_s, end_s)
                if entry is None:
                    r.report.bad_rows.append((line, f"clip {k}: empty caption"))
                    continue
                yield entry


_READERS = {"csv": _read_csv, "jsonl": _read_jsonl, "webvid": _read_webvid, "msrvtt": _read_msrvtt,
            "openvid": _read_csv, "panda70m": _read_panda}


def read_library(path: str, fmt: str = "auto", videos_root: Optional[str] = None) -> tuple[list[LibraryEntry], LibraryReport]:
    """Read a whole library file; raises ``SearchPriorsError`` when nothing usable is in it."""
    if fmt not in FORMATS:
        raise SearchPriorsError(f"Unknown library format '{fmt}': choose one of {', '.join(FORMATS)}.")
    if not os.path.isfile(path):
        raise SearchPriorsError(f"Library file '{path}' does not exist: give the path of a .csv, .jsonl "
                                f"or MSR-VTT .json caption file.")
    if fmt == "auto":
        fmt = detect_format(path)
    reader = _Reader(path, fmt, videos_root)
    try:
        entries = list(_READERS[fmt](reader))
    except UnicodeDecodeError as exc:
        raise SearchPriorsError(f"Library '{os.path.basename(path)}' is not UTF-8 text ({exc}).") from exc
    except csv.Error as exc:
        raise SearchPriorsError(f"Library '{os.path.basename(path)}' is not a readable CSV file ({exc}).") from exc
    if not entries:
        detail = f" ({reader.report.summary()})" if reader.report.bad_rows else ""
        raise SearchPriorsError(f"Library '{os.path.basename(path)}' has no readable captions{detail}: "
                                f"check the file and its format ('{fmt}').")
    return entries, reader.report
