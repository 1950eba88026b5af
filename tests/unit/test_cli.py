"""The searchpriors CLI, run in-process: build, search (single and batch), atomize, and bad input."""

from __future__ import annotations

import json

import pytest

from comfyui_searchpriors.retrieval.cli import main


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory, sample_library_path):
    out = tmp_path_factory.mktemp("cli") / "idx"
    assert main(["index", "build", "--library", sample_library_path, "--out", str(out)]) == 0
    return out


def test_build_reports_counts(sample_index, capsys, sample_library_path):
    assert main(["index", "build", "--library", sample_library_path, "--out", str(sample_index)]) == 0
    out = capsys.readouterr()
    assert "40 captions (0 added, 40 already indexed)" in out.out
    assert "40 entries have no local video" in out.err


@pytest.mark.parametrize("flag, said", [("on", True), ("off", False)])
def test_build_parse_helper_flag(tmp_path, capsys, sample_library_path, flag, said):
    out = tmp_path / "idx"
    assert main(["index", "build", "--library", sample_library_path, "--out", str(out), "--parse-helper", flag]) == 0
    summary = capsys.readouterr().out
    assert "40 captions (40 added" in summary
    assert ("captions parsed in a helper process" in summary) is said, summary


def test_search_json_single_and_batch(sample_index, tmp_path, capsys):
    assert main(["search", "--index", str(sample_index), "--json", "--k", "3", "A dog catches a frisbee"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "search_t2v" and len(result["hits"]) == 3
    assert result["hits"][0]["caption"] == "a dog catches a frisbee in the air"
    assert set(result["hits"][0]["parts"]) == {"total", "motion", "actor", "units", "score", "verb", "video"}
    assert main(["search", "--index", str(sample_index), "--json", "--k", "3", "--ranking", "paper",
                 "A dog catches a frisbee"]) == 0
    assert set(json.loads(capsys.readouterr().out)["hits"][0]["parts"]) == {"total", "motion", "actor", "units",
                                                                            "score"}
    queries = tmp_path / "q.txt"
    queries.write_text("a man rides a bicycle\n\nscissors cut paper\n")
    assert main(["search", "--index", str(sample_index), "--queries", str(queries), "--json", "--mode", "pos"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert [r["prompt"] for r in rows] == ["a man rides a bicycle", "scissors cut paper"]
    assert all(r["hits"][0]["video_id"].startswith("sample") for r in rows)


def test_search_ranking_and_pool(sample_index, capsys):
    assert main(["search", "--index", str(sample_index), "--json", "--k", "2", "--ranking", "pool_video_support",
                 "--pool", "4", "A dog catches a frisbee"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"]["ranking"] == "pool_video_support" and result["params"]["pool"] == 4
    assert result["rounds"][0] == ["nearest 4 by sentence similarity", 4, 4]
    assert result["hits"][0]["caption"] == "a dog catches a frisbee in the air" and "verb" in result["hits"][0]["parts"]
    assert main(["search", "--index", str(sample_index), "--pool", "0", "--ranking", "pool_video_support",
                 "a dog runs"]) == 2
    assert "pool (the nearest captions the pool_video_support ranking ranks) must be between 1" in capsys.readouterr().err


def test_atomize_json_batch(tmp_path, capsys):
    queries = tmp_path / "q.txt"
    queries.write_text("A panda rides a bicycle\nTime-lapse of clouds\n")
    assert main(["atomize", "--queries", str(queries), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert rows[0]["units"][rows[0]["core"]] == {"motion": "ride", "actor": "panda", "recipient": "bicycle"}
    assert rows[1]["fallback"] == "no-verb"


def test_atomize_batch_error_contract(tmp_path, capsys):
    """One bad line among good ones: every good one answered, the error line in its place, exit 3."""
    queries = tmp_path / "q.txt"
    lines = ["two kangaroos box playfully", "Собака бежит по пляжу", "A panda drinking coffee, animated style",
             "a dog runs " * 300, "waves crash"]
    queries.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["atomize", "--queries", str(queries), "--json"]) == 3
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.strip().splitlines()]
    assert [r["prompt"] for r in rows[:3]] + [rows[4]["prompt"]] == lines[:3] + [lines[4]]
    long_line = lines[3].strip()
    assert rows[3]["prompt"] == long_line[:2000] + "..." and rows[3]["prompt_chars"] == len(long_line)
    assert [("error" in r) for r in rows] == [False, True, False, True, False]
    assert "does not look like English" in rows[1]["error"] and "too long" in rows[3]["error"]
    assert rows[0]["units"][0] == {"motion": "box", "actor": "kangaroo", "recipient": None,
                                   "rule": "noun-after-plural-subject"}
    assert rows[2]["modifiers"] == ["animated style"] and rows[4]["units"][0]["motion"] == "crash"
    assert "3 of 5 prompts done, 2 failed" in out.err
    # the cap is settable; all good -> exit 0
    assert main(["atomize", "--queries", str(queries), "--json", "--max-chars", "0"]) == 3  # Russian still fails
    capsys.readouterr()
    good = tmp_path / "good.txt"
    good.write_text("cats fight\nwaves crash\n")
    assert main(["atomize", "--queries", str(good)]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[0] == "[core] cat -fight->" and "2 of 2 prompts done, 0 failed" in out.err


def test_search_batch_error_contract(sample_index, tmp_path, capsys):
    queries = tmp_path / "q.txt"
    queries.write_text("a dog catches a frisbee\n一只熊猫在埃菲尔铁塔前骑自行车\nscissors cut paper\n", encoding="utf-8")
    assert main(["search", "--index", str(sample_index), "--queries", str(queries), "--json", "--k", "2"]) == 3
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.strip().splitlines()]
    assert len(rows) == 3 and "error" in rows[1] and "does not look like English" in rows[1]["error"]
    assert rows[0]["hits"][0]["caption"] == "a dog catches a frisbee in the air" and len(rows[2]["hits"]) == 2
    assert "2 of 3 prompts done, 1 failed" in out.err


def test_single_prompt_length_cap(capsys):
    assert main(["atomize", "--max-chars", "10", "a dog runs fast"]) == 2
    assert "too long: 15 characters, more than the limit of 10" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["atomize", "   "], "prompt is empty"),
    (["search", "--index", "/nonexistent/idx", "a dog runs"], "No motion index"),
    (["index", "build", "--library", "/nonexistent/lib.csv", "--out", "/tmp/x"], "does not exist"),
    (["atomize"], "give a PROMPT"),
])
def test_bad_input_exits_non_zero_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_console_script_runs_outside_comfyui(tmp_path):
    """The installed `searchpriors` entry point works with no ComfyUI module importable."""
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(sys.executable), "searchpriors")
    assert os.path.isfile(script), "pip install -e . (scripts/setup_env.sh) installs the console script"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([script, "atomize", "--json", "Scissors cutting through paper."], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["units"][0] == {"motion": "cut", "actor": "scissor", "recipient": "paper"}
    probe = subprocess.run([sys.executable, "-c", "import sys, comfyui_searchpriors.retrieval.search, "
                            "comfyui_searchpriors.retrieval.cli; print(sorted(m for m in sys.modules "
                            "if m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'nodes')))"],
                           cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert probe.stdout.strip() == "[]", probe.stderr


def test_build_lock_timeout_zero_fails_at_once_with_the_busy_status(sample_index, capsys, sample_library_path):
    from comfyui_searchpriors.retrieval.index_files import WriterLock

    with WriterLock(str(sample_index), None):   # another writer is publishing
        code = main(["index", "build", "--library", sample_library_path, "--out", str(sample_index),
                     "--lock-timeout", "0"])
    assert code == 75
    assert "searchpriors: busy: Another build is writing the motion index" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["atomize", "search"])
def test_batch_through_the_parse_helper_prints_the_same_lines(tmp_path, capsys, monkeypatch, sample_index, command):
    """Large batches are parsed in a helper process: the same lines in the same order, errors in place."""
    from comfyui_searchpriors.retrieval import embedding

    queries = tmp_path / "q.txt"
    queries.write_text("two kangaroos box playfully\nСобака бежит по пляжу\nA panda drinking coffee, animated style\n"
                       + "a dog runs " * 300 + "\nwaves crash\n\na man rides a bicycle\n猫が走る\ncats fight\n",
                       encoding="utf-8")
    args = [command, "--queries", str(queries), "--json"] + (["--index", str(sample_index)] if command == "search" else [])
    monkeypatch.setattr(embedding, "ATOMIZE_CHUNK", 2)
    monkeypatch.setenv("SEARCHPRIORS_PARSE_HELPER", "0")
    assert main(args) == 3
    want = capsys.readouterr()
    monkeypatch.setenv("SEARCHPRIORS_PARSE_HELPER", "1")
    monkeypatch.setattr(embedding, "ATOMIZE_HELPER_MIN", 1)
    started = []
    real_start = embedding.start_parse_worker
    monkeypatch.setattr(embedding, "start_parse_worker", lambda nlp: started.append(1) or real_start(nlp))
    assert main(args) == 3
    got = capsys.readouterr()
    assert started and got.out == want.out and got.err == want.err
    assert [("error" in json.loads(line)) for line in got.out.splitlines()] == [False, True, False, True, False,
                                                                                 False, True, False]
