"""The CLI keeps library chatter (faiss' AVX512 probe, transformers' "Loading weights" bars) off stderr
unless --verbose. Run as a child process: the chatter comes once per process, while loading."""

from __future__ import annotations

import os
import subprocess
import sys

CHATTER = ("Loading weights", "AVX512")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "comfyui_searchpriors.retrieval.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_atomize_prints_no_library_chatter():
    done = run_cli("atomize", "A dog catches a frisbee")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[core] dog -catch-> frisbee"
    assert not [word for word in CHATTER if word in done.stderr], done.stderr
