"""Starts a real ComfyUI server with this pack linked into it, for the demo and the end-to-end tests.

`ComfyServer` is a context manager: it makes a throw-away ComfyUI base directory (custom_nodes, input,
models, output, user, temp) with `custom_nodes/ComfyUI-SearchPriors` symlinked to this repository, starts
`main.py --cpu` on a free loopback port with the virtual environment's Python, waits until `/object_info`
answers, and always stops the server on the way out. The server's log is kept in the base directory.

This module imports nothing of the pack and nothing outside the standard library, so it can be loaded by
path from any interpreter (the tests import it with importlib; the repository root must never go on
sys.path, since its `nodes/` would shadow ComfyUI's own `nodes` module).

Where things are found (environment, then defaults that scripts/setup_env.sh also uses):
  COMFYUI_PATH or SEARCHPRIORS_COMFYUI   ComfyUI checkout (default ~/.cache/comfyui-searchpriors/comfyui-0.3.75)
  SEARCHPRIORS_VENV                      virtual environment (default ~/.cache/comfyui-searchpriors/venv)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_DIR_NAME = "ComfyUI-SearchPriors"


def cache_dir() -> Path:
    """SEARCHPRIORS_CACHE, else ~/.cache/comfyui-searchpriors: where scripts/setup_env.sh puts everything."""
    return Path(os.environ.get("SEARCHPRIORS_CACHE") or Path.home() / ".cache" / "comfyui-searchpriors").expanduser()


CACHE_DIR = cache_dir()

# Model hubs cannot be reached here and must never be tried behind a user's back.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


class ComfyServerError(RuntimeError):
    """The server did not start, died, or did not finish a prompt in time. Carries the log's tail."""


class PromptRejected(RuntimeError):
    """POST /prompt answered 400: the graph failed ComfyUI's validation before it ran."""

    def __init__(self, response: Mapping[str, Any]):
        self.response = dict(response)
        error = self.response.get("error") or {}
        parts = [str(error.get("message", "")), str(error.get("details", ""))]
        for node_id, node_error in (self.response.get("node_errors") or {}).items():
            for item in node_error.get("errors", []):
                parts.append(f"node {node_id} ({node_error.get('class_type')}): "
                             f"{item.get('message', '')}: {item.get('details', '')}")
        super().__init__("prompt rejected: " + " | ".join(p for p in parts if p))


def default_comfyui_dir() -> Path:
    """Where ComfyUI is, for the tests, the scripts and the benchmarks alike (they all ask this function), read
    as scripts/setup_env.sh reads it: COMFYUI_PATH (a checkout of your own, or the folder the GPU machine
    extracts), else SEARCHPRIORS_COMFYUI, else <SEARCHPRIORS_CACHE>/comfyui-0.3.75. An empty variable counts as
    unset, as in the shell script."""
    explicit = os.environ.get("COMFYUI_PATH") or os.environ.get("SEARCHPRIORS_COMFYUI")
    return Path(explicit).expanduser() if explicit else cache_dir() / "comfyui-0.3.75"


def load_by_path(name: str, path) -> Any:
    """The module at ``path``, imported once and kept in ``sys.modules`` as ``name``.

    tests/, scripts/ and benchmarks/ are no packages, and the repository root never goes on sys.path (the
    pack's nodes/ would shadow ComfyUI's own ``nodes`` module), so their helpers are loaded by file path: with
    this function, everywhere. A module already loaded under ``name`` from the same file is returned as it is;
    one from another file is an error."""
    import importlib.util

    path = Path(path).resolve()
    loaded = sys.modules.get(name)
    if loaded is not None:
        where = getattr(loaded, "__file__", None)
        if where and Path(where).resolve() == path:
            return loaded
        raise ImportError(f"module name {name!r} is taken by {where}; cannot load {path} under it")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # before running it: dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_test_helper(name: str) -> Any:
    """``tests/<name>.py`` (a helper of the tests: fake servers, tiny models, clip writers) as
    ``searchpriors_tests_<name>``."""
    return load_by_path(f"searchpriors_tests_{name.replace('/', '_')}", REPO_ROOT / "tests" / f"{name}.py")


# The newest frontend the pack is tested with, beside the one ComfyUI 0.3.75 pins (1.32.9, in the venv):
# scripts/setup_env.sh installs it into its own folder (pip --target), and ComfyServer(front_end_root=...)
# serves it through ComfyUI's --front-end-root.
NEWEST_FRONTEND_VERSION = "1.58.1"


def newest_frontend_root() -> Path:
    """The static/ folder of comfyui-frontend-package NEWEST_FRONTEND_VERSION (SEARCHPRIORS_NEWEST_FRONTEND
    names the folder it was installed into; default <cache>/frontend-<version>)."""
    folder = os.environ.get("SEARCHPRIORS_NEWEST_FRONTEND") or CACHE_DIR / f"frontend-{NEWEST_FRONTEND_VERSION}"
    return Path(folder) / "comfyui_frontend_package" / "static"


def default_python() -> str:
    venv = Path(os.environ.get("SEARCHPRIORS_VENV", CACHE_DIR / "venv"))
    candidate = venv / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ComfyServer:
    """A ComfyUI server process on 127.0.0.1 with the pack linked in. Use as a context manager."""

    def __init__(
        self,
        base_dir: str | os.PathLike | None = None,
        *,
        comfyui_dir: str | os.PathLike | None = None,
        python: str | None = None,
        pack_dir: str | os.PathLike = REPO_ROOT,
        link_pack: bool = True,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 180.0,
        host: str = "127.0.0.1",
        port: int | None = None,
        front_end_root: str | os.PathLike | None = None,
    ):
        self.front_end_root = Path(front_end_root) if front_end_root else None   # None: the pinned frontend
        self.comfyui_dir = Path(comfyui_dir) if comfyui_dir else default_comfyui_dir()
        self.python = python or default_python()
        self.pack_dir = Path(pack_dir).resolve()
        self.link_pack = link_pack
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.host = host
        self.requested_port = port   # None: a free port is picked at start
        self.port: int | None = None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="comfy-searchpriors-"))
        self.log_path = self.base_dir / "comfyui.log"
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen | None = None
        self._log_file = None
        self._object_info: dict | None = None
        self.client_id = uuid.uuid4().hex

    # ------------------------------------------------------------------------------------------ folders
    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    @property
    def user_dir(self) -> Path:
        return self.base_dir / "user"

    @property
    def temp_dir(self) -> Path:
        return self.base_dir / "temp"

    @property
    def custom_nodes_dir(self) -> Path:
        return self.base_dir / "custom_nodes"

    @property
    def url(self) -> str:
        if self.port is None:
            raise ComfyServerError("server not started")
        return f"http://{self.host}:{self.port}"

    def _prepare_base(self) -> None:
        if not (self.comfyui_dir / "main.py").is_file():
            raise ComfyServerError(
                f"no ComfyUI at {self.comfyui_dir} (main.py missing); run scripts/setup_env.sh or set COMFYUI_PATH")
        for folder in (self.custom_nodes_dir, self.input_dir, self.output_dir, self.models_dir,
                       self.user_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if self.link_pack:
            link = self.custom_nodes_dir / PACK_DIR_NAME
            if link.is_symlink() or link.exists():
                if link.resolve() != self.pack_dir:
                    raise ComfyServerError(f"{link} exists and does not point at {self.pack_dir}")
            else:
                link.symlink_to(self.pack_dir, target_is_directory=True)

    # -------------------------------------------------------------------------------------- lifecycle
    @property
    def pid(self) -> int | None:
        """The server's process id (ComfyUI's main.py itself), while it runs."""
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        assert self.port is not None
        return [
            self.python, "main.py", "--cpu",
            "--listen", self.host, "--port", str(self.port),
            "--base-directory", str(self.base_dir),
            # The default database lives inside the ComfyUI folder, shared by every server started from it.
            "--database-url", f"sqlite:///{self.user_dir / 'comfyui.db'}",
            "--disable-auto-launch",
            *(["--front-end-root", str(self.front_end_root)] if self.front_end_root else []),
            *self.extra_args,
        ]

    def start(self) -> Self:
        if self._process is not None:
            raise ComfyServerError("already started")
        self._prepare_base()
        self.port = self.requested_port or free_port(self.host)
        env = dict(os.environ)
        # The harness may run under another interpreter's environment; ComfyUI must see only its venv.
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(key, None)
        env.update(OFFLINE_ENV)
        env.update(self.extra_env)
        # Held open for the server's lifetime and closed by stop(), so no `with` block.
        self._log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115
        self._log_file.write(f"$ {' '.join(self.command())}\n".encode())
        started = time.monotonic()
        self._process = subprocess.Popen(
            self.command(), cwd=self.comfyui_dir, env=env,
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches any children it starts
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ComfyServerError(
                    f"ComfyUI exited with code {self._process.returncode} while starting; log {self.log_path}:\n"
                    + self.log_tail())
            try:
                self._object_info = self.get_json("/object_info", timeout=30)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last_error = exc
                time.sleep(0.5)
        raise ComfyServerError(
            f"ComfyUI did not answer /object_info within {self.startup_timeout:.0f} s ({last_error}); "
            f"log {self.log_path}:\n" + self.log_tail())

    def stop(self, grace: float = 10.0) -> int | None:
        """Stops the server: SIGTERM to its process group, SIGKILL after `grace` seconds. Idempotent."""
        process, self._process = self._process, None
        code = None
        if process is not None:
            if process.poll() is None:
                self._signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self._signal_group(process, signal.SIGKILL)
                    process.wait(timeout=grace)
            code = process.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    @staticmethod
    def _signal_group(process: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(process.pid, sig)  # start_new_session made the server its group's leader
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Blocks until the server exits by itself (or ``timeout``); its exit code, or None if still running."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def remove_base(self) -> None:
        """Deletes the base directory, log included. Only after stop()."""
        if self.running:
            raise ComfyServerError("stop the server before removing its base directory")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------- log
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ------------------------------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_json(self, path: str, timeout: float = 60.0) -> Any:
        status, payload = self._request("GET", path, timeout=timeout)
        if status != 200:
            raise ComfyServerError(f"GET {path} answered {status}: {payload[:500]!r}")
        return json.loads(payload)

    def post_json(self, path: str, body: Any, timeout: float = 60.0) -> tuple[int, Any]:
        status, payload = self._request("POST", path, body, timeout=timeout)
        try:
            return status, json.loads(payload) if payload else None
        except json.JSONDecodeError:
            return status, payload.decode(errors="replace")

    def object_info(self, node_class: str | None = None, refresh: bool = False) -> dict:
        if node_class is not None:
            return self.get_json(f"/object_info/{urllib.parse.quote(node_class)}").get(node_class, {})
        if refresh or self._object_info is None:
            self._object_info = self.get_json("/object_info")
        return self._object_info

    def post_prompt(self, api_graph: Mapping[str, Any], *, client_id: str | None = None) -> str:
        """Queues an API-format graph; returns its prompt id. Raises PromptRejected on a validation failure."""
        status, answer = self.post_json("/prompt", {"prompt": api_graph, "client_id": client_id or self.client_id})
        if status == 400 and isinstance(answer, dict):
            raise PromptRejected(answer)
        if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
            raise ComfyServerError(f"POST /prompt answered {status}: {answer!r}")
        return answer["prompt_id"]

    def history(self, prompt_id: str | None = None) -> dict:
        if prompt_id is None:
            return self.get_json("/history")
        return self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id, {})

    def queue(self) -> dict:
        return self.get_json("/queue")

    def set_setting(self, setting_id: str, value: Any) -> None:
        """Stores a frontend setting for the default user, e.g. Comfy.TutorialCompleted=True, which stops
        the frontend from opening its template browser on a new user's first visit."""
        status, answer = self.post_json(f"/settings/{urllib.parse.quote(setting_id)}", value)
        if status != 200:
            raise ComfyServerError(f"POST /settings/{setting_id} answered {status}: {answer!r}")

    def wait_history(self, prompt_id: str, timeout: float = 300.0, poll: float = 0.25) -> dict:
        """Waits until the prompt has finished, successfully or not; returns its /history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ComfyServerError(f"ComfyUI died while running prompt {prompt_id}; log:\n" + self.log_tail())
            entry = self.history(prompt_id)
            status = entry.get("status") or {}
            if entry and (status.get("completed") or status.get("status_str") == "error"):
                return entry
            time.sleep(poll)
        raise ComfyServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s; queue: "
                               f"{self.queue()!r}; log:\n" + self.log_tail())

    def run_prompt(self, api_graph: Mapping[str, Any], timeout: float = 300.0) -> dict:
        return self.wait_history(self.post_prompt(api_graph), timeout=timeout)


# ------------------------------------------------------------------------------------ /history helpers
def history_status(entry: Mapping[str, Any]) -> str:
    return (entry.get("status") or {}).get("status_str", "")


def history_error(entry: Mapping[str, Any]) -> dict | None:
    """The `execution_error` message of a failed prompt (node_id, node_type, exception_type,
    exception_message, traceback, ...), or None."""
    for message in (entry.get("status") or {}).get("messages", []):
        if isinstance(message, (list, tuple)) and len(message) == 2 and message[0] == "execution_error":
            return message[1]
    return None


def assert_success(entry: Mapping[str, Any], what: str = "the prompt") -> None:
    """AssertionError naming the failing node, its type and message unless the prompt ended in success."""
    status = history_status(entry)
    if status != "success":
        error = history_error(entry) or {}
        raise AssertionError(f"{what} ended with status {status!r}: {error.get('node_type')} (node "
                             f"{error.get('node_id')}): {error.get('exception_type')}: "
                             f"{error.get('exception_message')}")


def history_texts(entry: Mapping[str, Any], node_id: str | None = None) -> list[str]:
    """Every string in the UI outputs of the prompt (or of one node): text widgets, reports."""
    outputs = entry.get("outputs") or {}
    selected = [outputs.get(node_id, {})] if node_id is not None else list(outputs.values())
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    for ui in selected:
        walk(ui)
    return found


def load_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# ------------------------------------------------------------------------- this pack's sample data
SAMPLE_LIBRARY_DIR = REPO_ROOT / "sample_data" / "sample_library"
SAMPLE_INPUT_FOLDER = "searchpriors_sample"          # under ComfyUI's input folder
SAMPLE_INDEX_NAME = "searchpriors_sample"            # under models/motion_index
WORKFLOWS_DIR = REPO_ROOT / "workflows"                # UI format: the Templates dialog lists these
API_WORKFLOWS_DIR = WORKFLOWS_DIR / "api"              # API format (POST /prompt), same base names
BUILD_INDEX_WORKFLOW = API_WORKFLOWS_DIR / "build_sample_index.json"
RETRIEVAL_WORKFLOW = API_WORKFLOWS_DIR / "search_t2v_retrieval.json"


def install_sample_library(server: ComfyServer) -> Path:
    """Copies sample_data/sample_library/ to <input>/searchpriors_sample/, where the bundled workflows look."""
    target = server.input_dir / SAMPLE_INPUT_FOLDER
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(SAMPLE_LIBRARY_DIR, target)
    return target


def build_sample_index(server: ComfyServer, via: str = "workflow", timeout: float = 600.0) -> dict | None:
    """Builds the sample index into <models>/motion_index/searchpriors_sample.

    via="workflow" submits workflows/api/build_sample_index.json and returns its /history entry;
    via="cli" runs `python -m comfyui_searchpriors.retrieval.cli index build` with the server's Python.
    """
    install_sample_library(server)
    if via == "workflow":
        entry = server.run_prompt(load_json(BUILD_INDEX_WORKFLOW), timeout=timeout)
        if history_status(entry) != "success":
            error = history_error(entry) or {}
            raise ComfyServerError(f"building the sample index failed: {error.get('exception_type')}: "
                                   f"{error.get('exception_message')}\n" + server.log_tail())
        return entry
    if via == "cli":
        out = server.models_dir / "motion_index" / SAMPLE_INDEX_NAME
        out.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(OFFLINE_ENV)
        command = [server.python, "-m", "comfyui_searchpriors.retrieval.cli", "index", "build",
                   "--library", str(SAMPLE_LIBRARY_DIR / "library.csv"), "--out", str(out)]
        done = subprocess.run(command, check=False, cwd=server.base_dir, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise ComfyServerError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return None
    raise ValueError(f"via must be 'workflow' or 'cli', not {via!r}")


# ------------------------------------------------------------------ POS: a clip library and the tiny model
CLIP_INPUT_FOLDER = "searchpriors_clips"             # under ComfyUI's input folder
CLIP_INDEX_NAME = "searchpriors_clips"               # the index the bundled POS workflows load
TINY_T2V_FOLDER = "tiny-t2v"                         # under models/diffusers
POS_MODELSCOPE_WORKFLOW = API_WORKFLOWS_DIR / "pos_modelscope.json"
MAKE_T2V_FOLDER = REPO_ROOT / "scripts" / "make_t2v_folder.py"


def install_clip_library(server: ComfyServer, clips: list[tuple[Path, str, str]]) -> list[tuple[str, str]]:
    """Copies clips [(file, relative name, caption)] to <input>/searchpriors_clips/ with a library.csv."""
    import csv

    library_dir = server.input_dir / CLIP_INPUT_FOLDER
    rows = []
    for source, rel, caption in clips:
        (library_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, library_dir / rel)
        rows.append((rel, caption))
    with open(library_dir / "library.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video", "caption"])
        writer.writerows(rows)
    return rows


def shared_clips(videos_dir: Path) -> list[tuple[Path, str, str]]:
    """The clips of ../shared/data/videos (captions.csv: file, caption); [] when absent."""
    import csv

    listing = videos_dir / "captions.csv"
    if not listing.is_file():
        return []
    with open(listing, encoding="utf-8", newline="") as fh:
        return [(videos_dir / r["file"], r["file"], r["caption"]) for r in csv.DictReader(fh)]


def build_clip_index(server: ComfyServer, timeout: float = 600.0, input_folder: str = CLIP_INPUT_FOLDER,
                     index_name: str = CLIP_INDEX_NAME) -> dict:
    """Builds <models>/motion_index/<index_name> (searchpriors_clips) from the library.csv installed under
    <input>/<input_folder> (Motion Index Builder)."""
    graph = {"1": {"class_type": "SearchPriors_MotionIndexBuilder", "inputs": {
        "library": f"{input_folder}/library.csv", "format": "auto", "index_name": index_name,
        "spacy_model": "en_core_web_sm", "sentence_model": "all-MiniLM-L6-v2", "videos_folder": ""}}}
    entry = server.run_prompt(graph, timeout=timeout)
    if history_status(entry) != "success":
        error = history_error(entry) or {}
        raise ComfyServerError(f"building the {index_name} index failed: {error.get('exception_message')}")
    return entry


def install_tiny_t2v(server: ComfyServer) -> Path:
    """Writes the tiny random ModelScope-family folder into <models>/diffusers/tiny-t2v (once)."""
    target = server.models_dir / "diffusers" / TINY_T2V_FOLDER
    if not target.exists():
        subprocess.run([server.python, str(MAKE_T2V_FOLDER), "--size", "tiny", "--out", str(target)], check=True,
                       capture_output=True, timeout=300)
    return target


def pos_at_test_size(graph: dict, frames: int = 4, size: int = 64, steps: int = 4) -> dict:
    """The bundled ModelScope POS workflow made small: the tiny folder, `frames` frames of size x size, `steps`."""
    values = {"Frames": frames, "Width": size, "Height": size}
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "SearchPriors_ModelScopeLoader":
            inputs.update(folder=TINY_T2V_FOLDER, dtype="fp32")
        elif kind == "PrimitiveInt" and (node.get("_meta") or {}).get("title") in values:
            inputs["value"] = values[node["_meta"]["title"]]
        elif kind in ("SearchPriors_DiffusersSchedulerSigmas", "SearchPriors_DDIMVideoInvert"):
            inputs["steps"] = steps
        elif kind == "SearchPriors_MotionIndexLoader":
            inputs["index_name"] = CLIP_INDEX_NAME
    return graph


# ------------------------------------------------------- search-then-tune: the tiny detector and test sizes
TINY_GROUNDING_DINO_FOLDER = "grounding-dino-tiny-test"   # under models/grounding-dino
SEARCH_THEN_TUNE_WORKFLOW = API_WORKFLOWS_DIR / "search_then_tune.json"


def install_tiny_grounding_dino(server: ComfyServer) -> Path:
    """Writes the tiny random GroundingDINO of tests/tiny_grounding_dino.py (transformers' real classes, built
    in this process) into <models>/grounding-dino/<TINY_GROUNDING_DINO_FOLDER> (once)."""
    target = server.models_dir / "grounding-dino" / TINY_GROUNDING_DINO_FOLDER
    if not (target / "config.json").is_file():
        builder = load_test_helper("tiny_grounding_dino")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        builder.save_tiny_grounding_dino(partial)
        partial.rename(target)   # whole, or not there: the detector list never shows half a folder
    return target


def search_then_tune_at_test_size(graph: dict, frames: int = 4, size: int = 64, tune_steps: int = 3,
                                  sample_steps: int = 3) -> dict:
    """The bundled search-then-tune workflow made small: the tiny t2v folder and tiny GroundingDINO folder,
    `frames` reference frames and keyframes of size x size, `tune_steps` VMC steps, `sample_steps` steps."""
    pos_at_test_size(graph, frames, size, sample_steps)
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "PrimitiveInt" and (node.get("_meta") or {}).get("title") == "Keyframes":
            inputs["value"] = frames
        elif kind == "SearchPriors_KeyframeExtractor":
            inputs["detector"] = TINY_GROUNDING_DINO_FOLDER
        elif kind == "SearchPriors_VMCTemporalLoRA":
            inputs.update(steps=tune_steps, rank=4)
    return graph


# ------------------------------------------------------- a saved motion LoRA for the tiny model
TINY_MOTION_LORA_PREFIX = "motion_lora/tiny-test"        # under models/loras
MOTION_LORA_APPLY_WORKFLOW = API_WORKFLOWS_DIR / "motion_lora_apply.json"


def install_tiny_motion_lora(server: ComfyServer, timeout: float = 600.0) -> str:
    """Tunes and saves a motion LoRA for the tiny t2v model the way a user does, through the server (VAE Encode
    of 4 plain 64x64 frames, VMC Temporal LoRA for 2 steps at rank 4, Save Motion LoRA); returns its name
    under models/loras (once per server: a saved one is reused)."""
    install_tiny_t2v(server)
    saved = sorted((server.models_dir / "loras").glob(f"{TINY_MOTION_LORA_PREFIX}_*.safetensors"))
    if saved:
        return saved[0].relative_to(server.models_dir / "loras").as_posix()
    graph = {
        "1": {"class_type": "SearchPriors_ModelScopeLoader", "inputs": {"folder": TINY_T2V_FOLDER, "dtype": "fp32"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 4, "color": 8421504}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a grey square", "clip": ["1", 1]}},
        "5": {"class_type": "SearchPriors_VMCTemporalLoRA", "inputs": {
            "model": ["1", 0], "keyframes": ["3", 0], "conditioning": ["4", 0], "steps": 2, "lr": 1e-4, "rank": 4,
            "targets": "qkv", "loss": "vmc_abs", "seed": 0, "gradient_checkpointing": "outer"}},
        "6": {"class_type": "SearchPriors_SaveMotionLoRA", "inputs": {"motion_lora": ["5", 1],
                                                                      "filename_prefix": TINY_MOTION_LORA_PREFIX}},
    }
    entry = server.run_prompt(graph, timeout=timeout)
    if history_status(entry) != "success":
        error = history_error(entry) or {}
        raise ComfyServerError(f"saving the tiny motion LoRA failed: {error.get('exception_message')}\n"
                               + server.log_tail())
    return history_texts(entry, "6")[0].strip()


def motion_lora_apply_at_test_size(graph: dict, lora_name: str, frames: int = 4, size: int = 64,
                                   steps: int = 3) -> dict:
    """The bundled motion_lora_apply workflow made small: the tiny t2v folder, the given LoRA, `frames` frames
    of size x size, `steps` sampling steps."""
    pos_at_test_size(graph, frames, size, steps)
    for node in graph.values():
        if node["class_type"] == "SearchPriors_LoadMotionLoRA":
            node["inputs"]["lora_name"] = lora_name
        elif node["class_type"] == "SearchPriors_HybridSemanticSampler":
            node["inputs"]["steps"] = steps
    return graph


def saved_video_frames(server: ComfyServer, entry: Mapping[str, Any], graph: Mapping[str, Any]) -> list:
    """The frames (RGB arrays) of the one video the graph's SaveVideo node saved, read back with PyAV."""
    import av

    save_id = next(k for k, v in graph.items() if v["class_type"] == "SaveVideo")
    ui = entry["outputs"].get(save_id, {})
    files = ui.get("images", []) + ui.get("videos", []) + ui.get("gifs", [])
    if len(files) != 1:
        raise ComfyServerError(f"SaveVideo node {save_id} saved {len(files)} files: {ui}")
    path = server.output_dir / files[0].get("subfolder", "") / files[0]["filename"]
    if path.suffix != ".mp4" or not path.is_file():
        raise ComfyServerError(f"SaveVideo node {save_id} reported {path}, which is no mp4 file")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


# ------------------------------------------- the toy world: the trained toy model and the world's library
# A ModelScope-family model trained here on the pack's toy world (coloured shapes in known motions, 64x64, 8
# frames; DESIGN.md "The toy world") and the world's 288-clip library: the demo and `make serve` show a shape
# moving instead of the tiny random model's noise. Held-out (shape, motion) pairs are the ones the model never
# saw in training, where base sampling draws the right motion about half the time and POS most of the time.
TOY_T2V_DIR = REPO_ROOT / "sample_data" / "models" / "searchpriors-toy-t2v"
TOY_T2V_FOLDER = TOY_T2V_DIR.name                    # under models/diffusers
TOY_WORLD_DIR = REPO_ROOT / "sample_data" / "toy_world"
TOY_WORLD_INPUT_FOLDER = "searchpriors_toy_world"    # under ComfyUI's input folder
TOY_WORLD_INDEX_NAME = "searchpriors_toy_world"      # under models/motion_index
TOY_PROMPT = "a red square moves to the left"        # a held-out pair: squares never moved left in training
TOY_LORA_PROMPT = "a cyan square moves to the left"   # the tuned motion LoRA reused on another held-out prompt
# The settings the toy model is good at (benchmarks/bench_toy_world.py): the model's own size, the pipeline's
# DDIM timesteps, cfg 7.5, the inverted reference mixed at eta 1.0 (0.2, ModelScope's value in the paper,
# barely moves it), VMC on the reference's 8 frames with lr 1e-3 at rank 8.
TOY_SETTINGS = {"frames": 8, "size": 64, "steps": 20, "cfg": 7.5, "eta": 1.0, "gamma": 0.04, "tune_steps": 40,
                "tune_lr": 1e-3, "tune_rank": 8}


def install_toy_t2v(server: ComfyServer) -> Path:
    """Links sample_data/models/searchpriors-toy-t2v into <models>/diffusers/, where the ModelScope loader lists
    it (a stale link of an earlier checkout is replaced; a real folder of that name is left alone)."""
    target = server.models_dir / "diffusers" / TOY_T2V_FOLDER
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() and target.resolve() != TOY_T2V_DIR.resolve():
        target.unlink()
    if not target.exists() and not target.is_symlink():
        target.symlink_to(TOY_T2V_DIR, target_is_directory=True)
    return target


def install_toy_world_library(server: ComfyServer) -> bool:
    """Copies sample_data/toy_world (library.csv and videos/) to <input>/searchpriors_toy_world/; True when
    it was not there yet or differed (so its index needs building)."""
    import filecmp

    target = server.input_dir / TOY_WORLD_INPUT_FOLDER
    source_csv = TOY_WORLD_DIR / "library.csv"
    if (target / "library.csv").is_file() and filecmp.cmp(source_csv, target / "library.csv", shallow=False):
        return False
    if target.exists():
        shutil.rmtree(target)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copyfile(source_csv, partial / "library.csv")
    shutil.copytree(TOY_WORLD_DIR / "videos", partial / "videos")
    partial.rename(target)
    return True


def build_toy_world_index(server: ComfyServer, timeout: float = 600.0, force: bool = False) -> bool:
    """The world's library in the input folder and its motion index <models>/motion_index/searchpriors_toy_world
    (Motion Index Builder, as a user builds one); built only when missing or the library changed. True if built."""
    changed = install_toy_world_library(server)
    index_dir = server.models_dir / "motion_index" / TOY_WORLD_INDEX_NAME
    if index_dir.exists() and not changed and not force:
        return False
    build_clip_index(server, timeout=timeout, input_folder=TOY_WORLD_INPUT_FOLDER, index_name=TOY_WORLD_INDEX_NAME)
    return True


def dit_workflow_at_test_size(graph: dict, ints: Mapping[str, int], steps: int, prompt: str = TOY_PROMPT) -> dict:
    """A bundled DiT workflow (Wan, HunyuanVideo 1.5, LTX-Video) made small for tiny models: the PrimitiveInt
    nodes titled as in ``ints``, ``prompt`` in the Prompt node, the toy world's index, and ``steps`` on its
    schedulers, inversion and KSampler."""
    for node in graph.values():
        kind, inputs, title = node["class_type"], node["inputs"], (node.get("_meta") or {}).get("title", "")
        if kind == "PrimitiveInt" and title in ints:
            inputs["value"] = ints[title]
        elif kind == "PrimitiveStringMultiline" and title == "Prompt":
            inputs["value"] = prompt
        elif kind == "SearchPriors_MotionIndexLoader":
            inputs["index_name"] = TOY_WORLD_INDEX_NAME
        elif kind in ("BasicScheduler", "LTXVScheduler", "SearchPriors_DDIMVideoInvert", "KSampler"):
            inputs["steps"] = steps
    return graph


def toy_world_graph(graph: dict, prompt: str = TOY_PROMPT, lora_name: str | None = None,
                    detector: str = TINY_GROUNDING_DINO_FOLDER, **settings) -> dict:
    """A bundled API workflow (pos_modelscope, search_then_tune, motion_lora_apply) set for the toy model: its
    folder, the world's index, its size and TOY_SETTINGS (overridden by ``settings``), ``prompt`` everywhere a
    prompt is typed (no language model here, so the rewrite is the prompt itself: the toy model knows only the
    world's captions). The bundled files keep their defaults for the real ModelScope model."""
    s = {**TOY_SETTINGS, **settings}
    ints = {"Frames": s["frames"], "Width": s["size"], "Height": s["size"], "Keyframes": s["frames"]}
    for node in graph.values():
        kind, inputs, title = node["class_type"], node["inputs"], (node.get("_meta") or {}).get("title", "")
        if kind == "PrimitiveStringMultiline" and title.startswith(("Prompt", "Rewritten prompt")):
            inputs["value"] = prompt
        elif kind == "PrimitiveInt" and title in ints:
            inputs["value"] = ints[title]
        elif kind == "SearchPriors_ModelScopeLoader":
            inputs.update(folder=TOY_T2V_FOLDER, dtype="fp32")
        elif kind == "SearchPriors_MotionIndexLoader":
            inputs["index_name"] = TOY_WORLD_INDEX_NAME
        elif kind in ("SearchPriors_DiffusersSchedulerSigmas", "SearchPriors_DDIMVideoInvert"):
            inputs["steps"] = s["steps"]
        elif kind == "SearchPriors_GaussianNoiseMix":
            inputs["eta"] = s["eta"]
        elif kind == "SearchPriors_HybridSemanticGuider":
            inputs.update(cfg=s["cfg"], gamma=s["gamma"])
        elif kind == "CFGGuider":
            inputs["cfg"] = s["cfg"]
        elif kind == "SearchPriors_ReferenceRewriter":
            inputs["manual_rewrite"] = prompt
        elif kind == "SearchPriors_KeyframeExtractor":
            # the world's clips are whole-frame scenes of one small shape: keep the full frame, whatever boxes
            # the (here random) detector draws
            inputs.update(detector=detector, full_frame_above=0.0)
        elif kind == "SearchPriors_VMCTemporalLoRA":
            inputs.update(steps=s["tune_steps"], lr=s["tune_lr"], rank=s["tune_rank"], gradient_checkpointing="off")
        elif kind == "SearchPriors_HybridSemanticSampler":
            inputs.update(steps=s["steps"], cfg=s["cfg"], gamma=s["gamma"])
        elif kind == "SearchPriors_LoadMotionLoRA" and lora_name:
            inputs["lora_name"] = lora_name
    return graph


def base_sampling_graph(pos_graph: dict, seed: int = 42) -> dict:
    """Plain sampling from the POS workflow: the sampler's noise from core RandomNoise instead of the mixed
    inverted noise, and only the nodes the Save Video node needs (no inversion runs)."""
    graph = json.loads(json.dumps(pos_graph))
    graph["90"] = {"class_type": "RandomNoise", "_meta": {"title": "Plain noise (base sampling)"},
                   "inputs": {"noise_seed": seed}}
    save = None
    for node_id, node in graph.items():
        if node["class_type"] == "SamplerCustomAdvanced":
            node["inputs"]["noise"] = ["90", 0]
        elif node["class_type"] == "SaveVideo":
            save = node_id
            node["inputs"]["filename_prefix"] = "searchpriors/base_sampling"
    needed: set[str] = set()
    stack = [save]
    while stack:
        node_id = stack.pop()
        if node_id in needed:
            continue
        needed.add(node_id)
        stack.extend(v[0] for v in graph[node_id]["inputs"].values() if isinstance(v, list) and len(v) == 2)
    return {k: v for k, v in graph.items() if k in needed}


TOY_USER_WORKFLOWS = {"toy_world_pos": POS_MODELSCOPE_WORKFLOW, "toy_world_search_then_tune": SEARCH_THEN_TUNE_WORKFLOW,
                      "toy_world_clips_pos": API_WORKFLOWS_DIR / "clip_library_pos.json"}


def write_toy_world_user_workflows(server: ComfyServer, **settings) -> list[Path]:
    """The bundled POS and search-then-tune workflows set for the toy model and the world's index
    (toy_world_graph), as UI workflows in <user>/default/workflows/, where the frontend's Workflows sidebar
    lists them; one already there is left as it is (the user may have changed it). Needs the running server
    (its /object_info lays the widgets out)."""
    maker = load_by_path("searchpriors_make_ui_workflow", REPO_ROOT / "scripts" / "make_ui_workflow.py")
    notes = load_by_path("searchpriors_workflow_notes", REPO_ROOT / "scripts" / "workflow_notes.py")
    info = server.object_info(refresh=True)
    folder = server.user_dir / "default" / "workflows"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, api_path in TOY_USER_WORKFLOWS.items():
        target = folder / f"{name}.json"
        written.append(target)
        if target.exists():
            continue
        partial = target.with_name(target.name + ".partial")
        graph = (toy_clips_graph if api_path.name == CLIP_LIBRARY_POS_WORKFLOW.name else toy_world_graph)(
            load_json(api_path), **settings)
        partial.write_text(json.dumps(maker.convert(graph, info, notes.TOY_NOTES[name]),
                                      indent=1) + "\n", encoding="utf-8")
        partial.replace(target)
    return written


# ------------------------------------------------------------------- your own clips: the clip library builder

CLIP_LIBRARY_POS_WORKFLOW = API_WORKFLOWS_DIR / "clip_library_pos.json"
TOY_CLIPS_INPUT_FOLDER = "searchpriors_toy_clips"    # under ComfyUI's input folder: reels of toy-world clips
TOY_CLIPS_INDEX_NAME = "searchpriors_toy_clips"      # the index the Clip Library Builder writes from them
TOY_CAPTIONER_FOLDER = "toy"                          # under models/vlm: the toy world's probe as a captioner
# reels of toy-world clips played back to back (each clip a shot); TOY_PROMPT's pair (a red square moving
# left) is in the first reel
TOY_REELS = {"reel_a.mp4": 6, "more/reel_b.mp4": 5, "more/reel_c.mp4": 4}


def install_toy_clips(server: ComfyServer) -> Path:
    """Reels of the toy world's clips in <input>/searchpriors_toy_clips/ (written once; a partial folder is
    redone) and the toy captioner in <models>/vlm/toy/, for the clip library workflow."""
    import csv

    clips = load_test_helper("shot_clips")
    target = server.input_dir / TOY_CLIPS_INPUT_FOLDER
    if not target.is_dir():
        with open(TOY_WORLD_DIR / "library.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        first = next(r for r in rows if (r["colour"], r["shape"], r["motion"]) == ("red", "square", "left"))
        others = [str(TOY_WORLD_DIR / r["video"]) for r in rows if r is not first]
        paths = [str(TOY_WORLD_DIR / first["video"])] + clips.toy_clip_paths(len(others), seed=5)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        start = 0
        for name, count in TOY_REELS.items():
            clips.concat_toy_clips(str(partial / name), paths[start:start + count])
            start += count
        partial.rename(target)
    vlm = server.models_dir / "vlm" / TOY_CAPTIONER_FOLDER
    if not (vlm / "config.json").is_file():
        vlm.mkdir(parents=True, exist_ok=True)
        (vlm / "config.json").write_text(json.dumps({"searchpriors_captioner": "toy"}) + "\n", encoding="utf-8")
    return target


def toy_clips_graph(graph: dict, **settings) -> dict:
    """The clip library POS workflow set for the toy world: toy_world_graph's model and sizes, and the Clip
    Library Builder on the toy reels with the toy captioner."""
    graph = toy_world_graph(graph, **settings)
    for node in graph.values():
        if node["class_type"] == "SearchPriors_ClipLibraryBuilder":
            node["inputs"].update(clips_folder=TOY_CLIPS_INPUT_FOLDER, index_name=TOY_CLIPS_INDEX_NAME,
                                  captioner=TOY_CAPTIONER_FOLDER)
    return graph


# ----------------------------------------------- demo models for the DiT workflows (make serve, the browser test)
# The bundled DiT workflows name the real model files (as ComfyUI's own templates do), which cannot run on a CPU.
# Their demo variants, user workflows in the Workflows sidebar like the toy world's, run the same graphs at demo
# size on demo files that say so in their names (never under the real names):
# - Wan (pos_wan21, search_then_tune_wan21, and pos_wan22_a14b with the toy as both experts): the trained Wan toy
#   (sample_data/models/searchpriors-toy-wan: ComfyUI's WanModel and Wan 2.1 VAE, 17 frames at 128, text from the
#   ModelScope toy's CLIP zero-padded to 4096, flow shift 3), linked in;
# - HunyuanVideo 1.5 and LTX-Video: no toy exists, so the tiny random models of the e2e tests (ComfyUI's own
#   classes, tests/tiny_models.py), written once by scripts/make_demo_models.py: their videos are noise.
# Text encoders (and the HunyuanVideo 1.5 VAE) cannot be built small under ComfyUI's own loaders, so the variants
# load them with the demo-only nodes of scripts/demo_nodes.py (install_demo_nodes puts them in custom_nodes).
DEMO_NODES_SOURCE = REPO_ROOT / "scripts" / "demo_nodes.py"
DEMO_NODES_FOLDER = "searchpriors_demo"              # under custom_nodes
MAKE_DEMO_MODELS = REPO_ROOT / "scripts" / "make_demo_models.py"
TOY_WAN_DIR = REPO_ROOT / "sample_data" / "models" / "searchpriors-toy-wan"
DEMO_TOY_WAN_T2V = "searchpriors-demo-toy-wan-t2v.safetensors"        # under models/diffusion_models
DEMO_TOY_WAN_VAE = "searchpriors-demo-toy-wan-vae.safetensors"        # under models/vae
DEMO_RANDOM_HUNYUAN15 = "searchpriors-demo-random-hunyuan15.safetensors"          # under models/diffusion_models
DEMO_RANDOM_HUNYUAN15_VAE = "searchpriors-demo-random-hunyuan15-vae.safetensors"  # under models/vae
DEMO_RANDOM_LTXV = "searchpriors-demo-random-ltxv.safetensors"                    # under models/checkpoints
DEMO_LINKS = {f"diffusion_models/{DEMO_TOY_WAN_T2V}": TOY_WAN_DIR / "searchpriors_toy_wan_t2v.safetensors",
              f"vae/{DEMO_TOY_WAN_VAE}": TOY_WAN_DIR / "searchpriors_toy_wan_vae.safetensors"}
DEMO_RANDOM_FILES = (f"diffusion_models/{DEMO_RANDOM_HUNYUAN15}", f"vae/{DEMO_RANDOM_HUNYUAN15_VAE}",
                     f"checkpoints/{DEMO_RANDOM_LTXV}")
# What the Wan toy is trained for (TRAINING.json; benchmarks/bench_toy_wan_gpu.py): 17 frames of 128 (at 64 or 9
# frames it gets the colour wrong more often: benchmarks/README.md), shift 3, cfg 5, the inverted reference mixed
# at eta 1; 10 euler steps (the
# benchmark's 20 double the CPU time for the same colour and shape); the world's 8-frame clips resampled at 17 fps
# give 17 frames over the clip's second. The random models: small and few steps (their output is noise whatever).
# The Wan toy's prompt is another held-out pair's colour: it draws squares moving left in blue (3 of 3 seeds, base and
# POS) but a red square as a circle (4 of 4 seeds; docs/toy_world.md).
TOY_WAN_PROMPT = "a blue square moves to the left"
DEMO_SETTINGS = {
    "toy_wan": {"frames": 17, "size": 128, "steps": 10, "cfg": 5.0, "eta": 1.0, "shift": 3.0, "fps": 17.0,
                "tune_steps": 10, "tune_lr": 1e-3, "tune_rank": 8, "prompt": TOY_WAN_PROMPT},
    "random_hunyuan15": {"frames": 9, "size": 128, "steps": 8, "eta": 1.0, "fps": 9.0},
    "random_ltxv": {"frames": 9, "size": 128, "steps": 8, "eta": 1.0, "fps": 9.0},
}
# user workflow -> (bundled workflow, demo model)
DEMO_USER_WORKFLOWS = {
    "toy_world_pos_wan21": ("pos_wan21", "toy_wan"),
    "toy_world_pos_wan22_a14b": ("pos_wan22_a14b", "toy_wan"),
    "toy_world_search_then_tune_wan21": ("search_then_tune_wan21", "toy_wan"),
    "demo_random_pos_hunyuan15": ("pos_hunyuan15", "random_hunyuan15"),
    "demo_random_pos_ltxv": ("pos_ltxv", "random_ltxv"),
}
DEMO_TEXT_NODE, DEMO_VAE_NODE = "SearchPriorsDemo_ToyTextEncoderLoader", "SearchPriorsDemo_VAELoader"


def install_demo_nodes(server: ComfyServer) -> Path:
    """Copies scripts/demo_nodes.py to <custom_nodes>/searchpriors_demo/__init__.py (before the server starts;
    a copy of an earlier checkout is replaced)."""
    target = server.custom_nodes_dir / DEMO_NODES_FOLDER / "__init__.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name("__init__.py.partial")
    shutil.copyfile(DEMO_NODES_SOURCE, partial)
    partial.replace(target)
    return target


def install_demo_models(server: ComfyServer, timeout: float = 600.0) -> list[Path]:
    """The demo models under their demo names in <models>/: the Wan toy's two files linked (a stale link is
    replaced, a real file of that name left alone), the random HunyuanVideo 1.5 (and its VAE) and LTX-Video
    written once by scripts/make_demo_models.py with the server's Python. Returns the paths."""
    paths = []
    for name, source in DEMO_LINKS.items():
        target = server.models_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() and target.resolve() != source.resolve():
            target.unlink()
        if not target.exists() and not target.is_symlink():
            target.symlink_to(source)
        paths.append(target)
    random_files = [server.models_dir / name for name in DEMO_RANDOM_FILES]
    if not all(p.is_file() for p in random_files):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(OFFLINE_ENV)
        done = subprocess.run([server.python, str(MAKE_DEMO_MODELS), "--models-dir", str(server.models_dir),
                               "--comfyui", str(server.comfyui_dir)], check=False, env=env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise ComfyServerError(f"scripts/make_demo_models.py exited {done.returncode}:\n{done.stderr[-3000:]}")
    return paths + random_files


def demo_graph(graph: dict, model: str, prompt: str | None = None, **settings) -> dict:
    """A bundled DiT workflow (API format) set for its demo model (DEMO_SETTINGS[model], overridden by
    ``settings``): the demo files, the demo text encoder (and for HunyuanVideo 1.5 the demo VAE loader), the toy
    world's index and a prompt (``prompt``, else the model's demo prompt, else TOY_PROMPT), the demo size and steps.
    The bundled files keep the real file names."""
    s = {**DEMO_SETTINGS[model], **settings}
    prompt = prompt or s.get("prompt", TOY_PROMPT)
    ints = {"Frames": s["frames"], "Reference frames": s["frames"], "Keyframes (4k+1 for Wan's VAE)": s["frames"],
            "Width": s["size"], "Height": s["size"]}
    files = {"toy_wan": {"unet_name": DEMO_TOY_WAN_T2V, "vae_name": DEMO_TOY_WAN_VAE},
             "random_hunyuan15": {"unet_name": DEMO_RANDOM_HUNYUAN15, "vae_name": DEMO_RANDOM_HUNYUAN15_VAE},
             "random_ltxv": {"ckpt_name": DEMO_RANDOM_LTXV}}[model]
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        meta = node.setdefault("_meta", {})
        title = meta.get("title", "")
        if kind == "PrimitiveStringMultiline" and title.startswith("Prompt"):
            inputs["value"] = prompt
        elif kind == "PrimitiveInt" and title in ints:
            inputs["value"] = ints[title]
        elif kind == "SearchPriors_MotionIndexLoader":
            inputs["index_name"] = TOY_WORLD_INDEX_NAME
        elif kind == "SearchPriors_ReferenceFrames":
            inputs["fps"] = s["fps"]
        elif kind == "SearchPriors_ReferenceRewriter":
            inputs["manual_rewrite"] = prompt   # no language model here: the rewrite is the prompt itself
        elif kind == "SearchPriors_KeyframeExtractor":
            inputs.update(detector=TINY_GROUNDING_DINO_FOLDER, full_frame_above=0.0)
        elif kind in ("CLIPLoader", "DualCLIPLoader"):
            node["class_type"] = DEMO_TEXT_NODE
            node["inputs"] = {"type": inputs["type"]}
            real = title[title.find("(") + 1:title.rfind(")")] if "(" in title else kind
            meta["title"] = f"Demo text encoder (the toy world's; stands in for {real})"
        elif kind in ("UNETLoader", "CheckpointLoaderSimple"):
            key = "unet_name" if kind == "UNETLoader" else "ckpt_name"
            inputs[key] = files[key]
            meta["title"] = f"{'Load Diffusion Model' if kind == 'UNETLoader' else 'Load Checkpoint'} (demo: {files[key]})"
        elif kind == "VAELoader":
            inputs["vae_name"] = files["vae_name"]
            meta["title"] = f"Load VAE (demo: {files['vae_name']})"
            if model == "random_hunyuan15":
                node["class_type"] = DEMO_VAE_NODE
                meta["title"] = f"Load VAE (demo size; demo: {files['vae_name']})"
        elif kind == "ModelSamplingSD3" and "shift" in s:
            inputs["shift"] = s["shift"]
            meta["title"] = f"ModelSamplingSD3 (shift {s['shift']:g}: the toy's)"
        elif kind in ("BasicScheduler", "LTXVScheduler", "SearchPriors_DDIMVideoInvert", "KSampler"):
            inputs["steps"] = s["steps"]
            if kind == "KSampler" and "cfg" in s:
                inputs["cfg"] = s["cfg"]
        elif kind == "SearchPriors_GaussianNoiseMix":
            inputs["eta"] = s["eta"]
        elif kind == "SearchPriors_HybridSemanticGuider" and "cfg" in s:
            inputs["cfg"] = s["cfg"]
        elif kind == "SearchPriors_VMCTemporalLoRA":
            inputs.update(steps=s["tune_steps"], lr=s["tune_lr"], rank=s["tune_rank"], gradient_checkpointing="off")
        elif kind == "SaveVideo":
            inputs["filename_prefix"] = inputs["filename_prefix"].replace("searchpriors/", "searchpriors/demo_")
        elif kind == "SearchPriors_SaveMotionLoRA":
            inputs["filename_prefix"] = inputs["filename_prefix"].replace("motion_lora/", "motion_lora/demo_")
    return graph


def demo_user_workflow(server: ComfyServer, name: str, info: dict | None = None, **settings) -> dict:
    """The UI workflow of one demo variant (DEMO_USER_WORKFLOWS), with its note (scripts/workflow_notes.py
    DEMO_NOTES)."""
    maker = load_by_path("searchpriors_make_ui_workflow", REPO_ROOT / "scripts" / "make_ui_workflow.py")
    notes = load_by_path("searchpriors_workflow_notes", REPO_ROOT / "scripts" / "workflow_notes.py")
    bundled, model = DEMO_USER_WORKFLOWS[name]
    graph = demo_graph(load_json(API_WORKFLOWS_DIR / f"{bundled}.json"), model, **settings)
    return maker.convert(graph, info or server.object_info(refresh=True), notes.DEMO_NOTES[name])


def write_demo_user_workflows(server: ComfyServer, **settings) -> list[Path]:
    """The demo variants of the DiT workflows as UI workflows in <user>/default/workflows/ (the Workflows
    sidebar); one already there is left as it is (the user may have changed it). Needs the running server with
    the demo nodes (install_demo_nodes before start)."""
    info = server.object_info(refresh=True)
    folder = server.user_dir / "default" / "workflows"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DEMO_USER_WORKFLOWS:
        target = folder / f"{name}.json"
        written.append(target)
        if target.exists():
            continue
        partial = target.with_name(target.name + ".partial")
        partial.write_text(json.dumps(demo_user_workflow(server, name, info, **settings), indent=1) + "\n",
                           encoding="utf-8")
        partial.replace(target)
    return written
