"""Parse captions in helper processes while the main process embeds them (used by ``index.build_index``,
and by ``embedding.atomize_many`` for large ``--queries`` batches: ``submit(..., prompts=True)`` runs
``atomizer.parse_prompts``, the in-process batch parse, with errors sent back in place).

On a small machine the sentence encoder and the spaCy parser compete for the same cores. Running the parse
in a helper process, with the encoder one thread short while the helper is busy, keeps every core working
on a different stage instead of taking turns: the build's time approaches the embedding's. A build starts
several helpers when the cores allow (``index.auto_parse_helpers``: every core but one when the encoder runs
on a GPU, where the parse is the slow stage), each fed its own chunks.

The helper is a plain ``python retrieval/parse_worker.py`` child, started by file path (not through
``multiprocessing``, which would re-import ComfyUI's ``main.py`` in the child, and not by package name, which
is not importable when the pack is a cloned ``custom_nodes`` folder). It loads the same spaCy pipeline from
the same place (``models.load_spacy`` records it) and runs ``atomizer.parse_texts``, the same code as the
in-process path, so the parses are identical. Messages are JSON lines on its stdin / stdout. The helper
hides ``torch`` from spaCy when the pipeline does not need it (importing it would double the start-up).

Anything wrong with the helper (it cannot start, cannot load the model, dies) is not an error of the build:
its unfinished chunks are parsed in-process and the build report says so.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Optional

# Components of spaCy's own that run on numpy; a pipeline made only of these never needs torch.
NUMPY_COMPONENTS = frozenset({"tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "ner", "senter",
                              "morphologizer", "trainable_lemmatizer", "sentencizer", "entity_ruler"})
START_TIMEOUT_S = 120.0   # to load the spaCy model
STALL_TIMEOUT_S = 120.0   # between replies while it holds chunks (one chunk takes well under a second)


# ------------------------------------------------------------------------------------- wire format

def parsed_to_wire(parsed) -> list:
    return [parsed.text, [list(u.roles()) + [u.rule] for u in parsed.units], parsed.core_index, parsed.fallback,
            list(parsed.notes), list(parsed.modifiers)]


def result_to_wire(result) -> list:
    """A ``parse_prompts`` item: a parse, or a prompt's error as ``["error", message]``."""
    return ["error", str(result)] if isinstance(result, Exception) else parsed_to_wire(result)


def parsed_from_wire(data: list):
    from .atomizer import ParsedPrompt, Unit
    from ..errors import SearchPriorsError

    if data and data[0] == "error" and len(data) == 2:  # a parse's first field is its text: never this pair
        return SearchPriorsError(data[1])
    text, units, core_index, fallback, notes, *rest = data
    modifiers = list(rest[0]) if rest else []
    return ParsedPrompt(text, [Unit(*u) for u in units], int(core_index), fallback, list(notes), modifiers)


# ------------------------------------------------------------------------------------- main side

def spacy_source(nlp) -> Optional[dict]:
    """How a helper loads the same pipeline, or None (a pipeline built in code cannot be re-loaded)."""
    source = getattr(nlp, "searchpriors_source", None)
    if not isinstance(source, dict):
        return None
    pipes = {name for name, _ in nlp.components}
    factories = {nlp.get_pipe_meta(name).factory for name in pipes}
    return dict(source, hide_torch=factories <= NUMPY_COMPONENTS)


def start_parse_worker(nlp) -> "tuple[Optional[ParseWorker], str]":
    """A helper for ``nlp``, or None and why not (pipeline built in code, cannot start, turned off)."""
    source = spacy_source(nlp)
    if source is None:
        return None, "not used (the spaCy pipeline was not loaded from a folder or package)"
    try:
        return ParseWorker(source), "used"
    except OSError as exc:
        return None, f"failed to start ({exc}); parsed in this process"


class EncoderThreads:
    """While parse helpers are busy the encoder runs one thread short per busy helper (torch only, at least
    one thread), so that the stages share the cores instead of taking turns; the thread count is restored
    on exit."""

    def __enter__(self):
        self.torch = sys.modules.get("torch")
        self.default = self.torch.get_num_threads() if self.torch is not None else 1
        self.current = self.default
        return self

    def spare(self, busy_helpers: int) -> None:
        want = max(1, self.default - max(0, int(busy_helpers)))
        if self.torch is not None and want != self.current:
            self.torch.set_num_threads(want)
            self.current = want

    def spare_one(self, spare: bool) -> None:
        self.spare(1 if spare else 0)

    def __exit__(self, *exc):
        self.spare(0)


class ParseWorker:
    """One helper process; ``submit`` chunks of captions, collect parses with ``poll`` / ``wait``.

    ``failure`` is None while the helper is usable, else a one-line reason; chunks it still held are then
    returned by ``take_back`` for the caller to parse itself.
    """

    def __init__(self, source: dict):
        self.failure: Optional[str] = None
        self.outstanding: set[int] = set()  # chunk ids handed over and not answered yet
        self._replies: "queue.Queue[Optional[dict]]" = queue.Queue()
        self._ready = False
        self._last_activity = time.monotonic()
        cmd = [sys.executable, os.path.abspath(__file__)]
        if source.get("hide_torch"):
            cmd.append("--hide-torch")
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                      text=True, encoding="utf-8", bufsize=1)
        self._reader = threading.Thread(target=self._read, name="searchpriors-parse-reader", daemon=True)
        self._reader.start()
        self._send({"op": "load", "kind": source["kind"], "location": source["location"],
                    "exclude": list(source.get("exclude", ()))})

    def _read(self) -> None:
        try:
            for line in self._proc.stdout:
                try:
                    self._replies.put(json.loads(line))
                except ValueError:
                    self._replies.put({"op": "error", "message": f"unreadable reply {line[:80]!r}"})
        finally:
            self._replies.put(None)  # end of stream

    def _send(self, message: dict) -> None:
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError) as exc:
            self._fail(f"the parse helper stopped reading ({exc})")

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self._kill()

    @property
    def usable(self) -> bool:
        return self.failure is None

    @property
    def busy(self) -> bool:
        return self.usable and bool(self.outstanding)

    def submit(self, chunk_id: int, texts: list[str], prompts: bool = False, max_chars: Optional[int] = None) -> None:
        """Hand over a chunk: library captions (``atomizer.parse_texts``) or, with ``prompts``, user prompts
        (``atomizer.parse_prompts``: validated, language-checked, errors in place)."""
        if not self.outstanding:
            self._last_activity = time.monotonic()
        self.outstanding.add(chunk_id)
        message = {"op": "parse", "id": chunk_id, "texts": texts}
        if prompts:
            message.update(prompts=True, max_chars=max_chars)
        self._send(message)

    def _handle(self, reply: Optional[dict], out: list) -> None:
        self._last_activity = time.monotonic()
        if reply is None:
            try:
                code = self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = "unknown"
            self._fail(f"the parse helper exited (code {code})")
        elif reply.get("op") == "ready":
            self._ready = True
        elif reply.get("op") == "parsed" and reply.get("id") in self.outstanding:
            self.outstanding.discard(reply["id"])
            out.append((reply["id"], [parsed_from_wire(d) for d in reply["items"]]))
        else:
            self._fail(str(reply.get("message") or f"unexpected reply {reply!r}"))

    def poll(self) -> list[tuple[int, list]]:
        """Parses that have arrived, without waiting."""
        out: list = []
        while self.usable:
            try:
                reply = self._replies.get_nowait()
            except queue.Empty:
                break
            self._handle(reply, out)
        self._check_alive()
        return out

    def wait(self, timeout: float = 1.0) -> list[tuple[int, list]]:
        """Block up to ``timeout`` seconds for the next reply (then drain what else has arrived)."""
        out: list = []
        if self.usable:
            try:
                self._handle(self._replies.get(timeout=timeout), out)
            except queue.Empty:
                pass
            out.extend(self.poll())
        return out

    def _check_alive(self) -> None:
        quiet = time.monotonic() - self._last_activity
        if not self.usable:
            return
        if not self._ready and quiet > START_TIMEOUT_S:
            self._fail(f"the parse helper did not load the spaCy model within {START_TIMEOUT_S:.0f} s")
        elif self._ready and self.outstanding and quiet > STALL_TIMEOUT_S:
            self._fail(f"the parse helper did not answer for {STALL_TIMEOUT_S:.0f} s")

    def take_back(self) -> list[int]:
        """Ids of the chunks a failed helper still held (for the caller to parse)."""
        chunks = sorted(self.outstanding)
        self.outstanding.clear()
        return chunks

    def _kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        """Stop the helper: politely when it is idle, at once when it still holds chunks (cancel, error)."""
        if self._proc.poll() is None and self.usable and not self.outstanding:
            self._send({"op": "stop"})
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


# ------------------------------------------------------------------------------------- helper side

def _load_pipeline(message: dict):
    import importlib

    exclude = list(message.get("exclude", ()))
    if message["kind"] == "folder":
        import spacy

        return spacy.load(message["location"], exclude=exclude)
    return importlib.import_module(message["location"]).load(exclude=exclude)


def serve(atomizer, stdin, stdout) -> int:
    """The helper's loop: a ``load`` message, then ``parse`` messages until ``stop`` or end of input."""
    def reply(message: dict) -> None:
        stdout.write(json.dumps(message) + "\n")
        stdout.flush()

    nlp = None
    for line in stdin:
        message = json.loads(line)
        op = message.get("op")
        try:
            if op == "load":
                nlp = _load_pipeline(message)
                reply({"op": "ready"})
            elif op == "parse" and message.get("prompts"):  # the same functions as in the main process
                reply({"op": "parsed", "id": message["id"], "items": [
                    result_to_wire(r) for r in atomizer.parse_prompts(nlp, message["texts"], message.get("max_chars"))]})
            elif op == "parse":
                reply({"op": "parsed", "id": message["id"],
                       "items": [parsed_to_wire(p) for p in atomizer.parse_texts(nlp, message["texts"])]})
            elif op == "stop":
                break
            else:
                reply({"op": "error", "message": f"unknown request {op!r}"})
        except Exception as exc:  # reported to the main process, which parses the chunk itself
            reply({"op": "error", "message": f"{type(exc).__name__}: {exc}"})
            return 1
    return 0


def _main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    # Started by file path: do not let this folder's modules (index, search, models...) shadow others.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    if "--hide-torch" in sys.argv:
        sys.modules["torch"] = None  # spaCy's numpy pipelines never need it; importing it costs seconds
    # Protocol on a private copy of stdout; anything else printed goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdin.reconfigure(encoding="utf-8")
    import importlib.util

    import types

    # The pack's folder as a bare parent package (its __init__ is not run: it belongs to ComfyUI), so that the
    # retrieval modules' imports of the pack's root (``..errors``) resolve in this process too.
    parent = "_searchpriors_parse_pack"
    pack = types.ModuleType(parent)
    pack.__path__ = [os.path.dirname(here)]
    sys.modules[parent] = pack
    name = f"{parent}.retrieval"
    spec = importlib.util.spec_from_file_location(name, os.path.join(here, "__init__.py"),
                                                  submodule_search_locations=[here])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    atomizer = importlib.import_module(f"{name}.atomizer")
    return serve(atomizer, sys.stdin, protocol)


if __name__ == "__main__":
    sys.exit(_main())
