"""One way for tests, scripts and benchmarks to find ComfyUI and their helpers (scripts/comfy_server.py), and the
benchmarks' one JSON writer (benchmarks/_common.py write_result)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

REPO = Path(__file__).resolve().parents[2]


def test_comfyui_dir_is_read_as_setup_env_sh_reads_it(monkeypatch, tmp_path):
    for name in ("COMFYUI_PATH", "SEARCHPRIORS_COMFYUI", "SEARCHPRIORS_CACHE"):
        monkeypatch.delenv(name, raising=False)
    assert harness.default_comfyui_dir() == Path.home() / ".cache" / "comfyui-searchpriors" / "comfyui-0.3.75"
    monkeypatch.setenv("SEARCHPRIORS_CACHE", str(tmp_path / "cache"))
    assert harness.default_comfyui_dir() == tmp_path / "cache" / "comfyui-0.3.75"
    monkeypatch.setenv("SEARCHPRIORS_COMFYUI", str(tmp_path / "vendored"))
    assert harness.default_comfyui_dir() == tmp_path / "vendored"
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "own"))      # the GPU machine's extracted folder wins
    assert harness.default_comfyui_dir() == tmp_path / "own"
    monkeypatch.setenv("COMFYUI_PATH", "")                          # empty counts as unset, as in the shell
    assert harness.default_comfyui_dir() == tmp_path / "vendored"


def test_load_by_path_loads_once_and_refuses_a_name_taken_by_another_file(tmp_path):
    one, two, bad = tmp_path / "one.py", tmp_path / "two.py", tmp_path / "bad.py"
    one.write_text("from dataclasses import dataclass\n\n@dataclass\nclass Thing:\n    x: int\n\nloads = []\n"
                   "loads.append(1)\n")
    two.write_text("x = 2\n")
    bad.write_text("raise RuntimeError('broken helper')\n")
    name = "searchpriors_tests_locate_one"
    try:
        module = harness.load_by_path(name, one)
        assert module.Thing(3).x == 3 and sys.modules[name] is module   # dataclasses need the registration
        assert harness.load_by_path(name, str(one)) is module and module.loads == [1]
        with pytest.raises(ImportError, match="taken by"):
            harness.load_by_path(name, two)
        with pytest.raises(RuntimeError, match="broken helper"):
            harness.load_by_path("searchpriors_tests_locate_bad", bad)
        assert "searchpriors_tests_locate_bad" not in sys.modules      # nothing half-loaded is kept
    finally:
        sys.modules.pop(name, None)
    assert harness.load_test_helper("fake_chat_server") is sys.modules["searchpriors_tests_fake_chat_server"]


def test_write_result_honours_out_and_writes_whole_files(tmp_path):
    common = harness.load_by_path("searchpriors_bench_common", REPO / "benchmarks" / "_common.py")
    out = tmp_path / "deep" / "run.tiny.json"
    data = {"rows": [{"n": np.int64(3), "v": np.float32(0.5)}], "facts": {"dtype": object()}}
    with pytest.raises(TypeError):
        common.write_result("x", data, out=out)
    assert not out.exists() or json.loads(out.read_text())   # a failed write leaves no half file
    written = common.write_result("x", data, out=out, unknown_as_str=True, indent=2)
    assert written == out and sorted(os.listdir(out.parent)) == ["run.tiny.json"]
    loaded = json.loads(out.read_text())
    assert loaded["rows"] == [{"n": 3, "v": 0.5}] and loaded["facts"]["dtype"].startswith("<object object")
