"""docs/cli.md shows the `searchpriors` command's usage as the command's own `--help` prints it.

Each usage block in the page follows a marker `<!-- help: SUBCOMMAND ... -->`; the test runs
`python -m comfyui_searchpriors.retrieval.cli SUBCOMMAND ... --help` and compares the two texts word for word
(line wrapping aside, which depends on the terminal's width and Python's argparse version).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CLI_DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
MARKED_BLOCK = re.compile(r"<!-- help:(?P<args>[^>]*)-->\s*```text\n(?P<body>.*?)\n```", re.DOTALL)
# every command and sub-command of retrieval/cli.py's parser: each must have its block
COMMANDS = ["", "index build", "index build-distributed", "index upgrade", "index clips", "search", "atomize"]


def documented_usage() -> dict[str, str]:
    return {m.group("args").strip(): m.group("body") for m in MARKED_BLOCK.finditer(CLI_DOC.read_text())}


def help_text(args: str) -> str:
    env = dict(os.environ, COLUMNS="100", NO_COLOR="1", PYTHON_COLORS="0")
    done = subprocess.run([sys.executable, "-m", "comfyui_searchpriors.retrieval.cli", *args.split(), "--help"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def words(text: str) -> list[str]:
    return text.split()


def test_every_command_is_documented():
    assert sorted(documented_usage()) == sorted(COMMANDS), (
        f"docs/cli.md should hold one `<!-- help: ... -->` block for each of {COMMANDS}")


@pytest.mark.parametrize("args", COMMANDS)
def test_documented_usage_equals_help(args):
    documented = documented_usage().get(args)
    assert documented is not None, f"docs/cli.md has no usage block for 'searchpriors {args}'"
    printed = help_text(args)
    assert words(documented) == words(printed), (
        f"docs/cli.md's usage of 'searchpriors {args}' differs from its --help; paste this into the page:\n"
        f"{printed}")
