"""Shared fixtures. The end-to-end ones start a real ComfyUI server (scripts/comfy_server.py) once per
session, with this pack linked into its custom_nodes, and build the sample motion index in it.

The harness is loaded by file path: the repository root must never go on sys.path, because its `nodes/`
package would shadow ComfyUI's own `nodes` module. Nothing here imports the pack.

Without a ComfyUI set up (`make setup`), the end-to-end tests are skipped, except under CI (CI=true),
where that is a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
HARNESS_PATH = REPO_ROOT / "scripts" / "comfy_server.py"
# A made-up API key in the server's environment: the rewriter's e2e test checks it reaches the loopback
# chat server and nothing else (/history, saved workflow, PNG metadata).
E2E_API_KEY_ENV = "SEARCHPRIORS_E2E_API_KEY"
E2E_API_KEY = "sk-e2e-NEVER-IN-HISTORY-4f1c2b9a7d"
# More secrets in that environment, for the rewriter's e2e tests of what must never leak: a key as a CRLF .env
# file leaves it, one with a CR inside, and a secret of another tool that a workflow must not be able to name.
E2E_SECRET_ENV = {
    "SEARCHPRIORS_E2E_CRLF_API_KEY": "sk-e2e-CRLF-NEVER-SHOWN-8e7d6c5b4a\r\n",
    "SEARCHPRIORS_E2E_BROKEN_API_KEY": "sk-e2e-BROKEN-NEVER\rSHOWN-1a2b3c4d5e",
    "HF_TOKEN": "hf_e2eNEVERSENTanywhere0123456789",
}


def _load_harness():
    name = "searchpriors_comfy_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HARNESS_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # one copy, whichever conftest or test asks first
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


def _unavailable(reason: str):
    """Skip for a missing set-up part, except in CI, where a missing part is a failure."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI must run `make setup` first)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def unavailable():
    """``_unavailable`` for fixtures of sub-folders (their conftest modules cannot import this one)."""
    return _unavailable


@pytest.fixture(scope="session")
def comfy_harness():
    """The scripts/comfy_server.py module."""
    return harness


@contextlib.contextmanager
def _running_server(base_dir, label: str, env: dict | None = None):
    """A started server with the pack linked in, stopped on the way out; its base directory and log are
    kept under pytest's temporary directory (the last three sessions' are kept)."""
    comfyui_dir = harness.default_comfyui_dir()
    if not (comfyui_dir / "main.py").is_file():
        _unavailable(f"no ComfyUI at {comfyui_dir}; run `make setup` or set COMFYUI_PATH")
    server = harness.ComfyServer(base_dir, env=env)
    # a test-only node (tests/e2e_text_node.py) that stands in for the DiT workflows' huge text encoders
    test_nodes = Path(base_dir) / "custom_nodes" / "searchpriors_e2e_text"
    test_nodes.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).parent / "e2e_text_node.py", test_nodes / "__init__.py")
    harness.install_demo_nodes(server)   # make serve's demo-only nodes (scripts/demo_nodes.py): the DiT demo variants
    server.start()
    # Keep the frontend from opening its template browser over the canvas on a new user's first visit.
    server.set_setting("Comfy.TutorialCompleted", True)
    try:
        yield server
    finally:
        server.stop()
        print(f"\nComfyUI log ({label}): {server.log_path}")


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """A running ComfyUI server with the pack linked in, where the sample index gets built."""
    # Builds in this server parse in the helper process whatever their size (test_workflows_api checks it).
    with _running_server(tmp_path_factory.mktemp("comfyui-base"), "comfy_server",
                         env={"SEARCHPRIORS_PARSE_HELPER_MIN": "1", E2E_API_KEY_ENV: E2E_API_KEY,
                              **E2E_SECRET_ENV}) as server:
        yield server


@pytest.fixture(scope="session")
def bare_server(tmp_path_factory):
    """A second server as a new user first starts it: no motion index built, nothing in its input folder.
    For what must work before the first build (empty dropdowns, their messages)."""
    with _running_server(tmp_path_factory.mktemp("comfyui-bare"), "bare_server") as server:
        yield server


@pytest.fixture(scope="session")
def e2e_api_key():
    """(variable name, key) that the session's server has in its environment."""
    return E2E_API_KEY_ENV, E2E_API_KEY


@pytest.fixture(scope="session")
def e2e_secrets():
    """{variable name: value} of the other secrets in the session's server environment."""
    return dict(E2E_SECRET_ENV)


@pytest.fixture(scope="session")
def sample_index(comfy_server):
    """Builds the sample motion index (models/motion_index/searchpriors_sample) by running the bundled
    build workflow; returns its /history entry."""
    return harness.build_sample_index(comfy_server, via="workflow")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that used the server gets the tail of the server's log in its report."""
    outcome = yield
    report = outcome.get_result()
    for name in ("comfy_server", "bare_server"):
        if report.failed and name in getattr(item, "fixturenames", ()):
            server = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if server is not None:
                report.sections.append((f"ComfyUI log of {name} (tail)", server.log_tail(60)))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny-model tests: on 2 cores shared with a server, small ops cost
    ~10 ms each with 2 threads. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def comfy_inference_mode():
    """Runs a test under torch.inference_mode(), as ComfyUI runs every node."""
    import torch

    with torch.inference_mode():
        yield
