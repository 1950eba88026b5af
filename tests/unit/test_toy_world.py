"""The toy world (issue 21, sections 1 and 3): seeded specs, the training split's held-out pairs and rare
motion, captions, the probe's accuracy on ground-truth clips and on the shipped mp4s, and the writer."""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from comfyui_searchpriors.distill import toy_probe as tp
from comfyui_searchpriors.distill import toy_world as tw
from comfyui_searchpriors.distill import toy_world_writer as tww
from comfyui_searchpriors.retrieval.library import read_library

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join(REPO, "sample_data", "toy_world")


def _probe_specs(specs, batch: int = 100):
    out = []
    with tp.torch_threads(1):
        for start in range(0, len(specs), batch):
            out.extend(tp.probe_batch(tw.render(specs[start:start + batch])))
    return out


def _digest(folder: str) -> dict:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------ the world
def test_specs_are_deterministic_from_the_seed():
    a, b = tw.sample_specs(50, 3, "train"), tw.sample_specs(50, 3, "train")
    assert a == b
    assert a != tw.sample_specs(50, 4, "train")
    assert tww.covering_specs(20, 1) == tww.covering_specs(20, 1)
    assert torch.equal(tw.render(a[:4]), tw.render(b[:4]))


def test_train_split_withholds_pairs():
    specs = tw.sample_specs(10_000, 0, "train")
    pairs = collections.Counter((s.shape, s.motion) for s in specs)
    assert not set(tw.HELD_OUT) & set(pairs)
    assert len(tw.HELD_OUT) >= 6
    assert {s.motion for s in specs} == set(tw.MOTIONS)
    assert {s.shape for s in specs} == set(tw.SHAPES)


def test_train_split_rare_motion_is_at_most_two_percent():
    specs = tw.sample_specs(10_000, 0, "train")
    rare = sum(s.motion == tw.RARE_MOTION for s in specs) / len(specs)
    assert 0 < rare <= 0.02


def test_library_and_eval_splits_hold_every_pair():
    every = {(s, m) for s in tw.SHAPES for m in tw.MOTIONS}
    for split in ("library", "eval"):
        assert {(s.shape, s.motion) for s in tw.sample_specs(2000, 0, split)} == every
    covering = tww.covering_specs(144, 0)
    assert {(s.shape, s.colour, s.motion) for s in covering} == {
        (s, c, m) for s in tw.SHAPES for c in tw.COLOURS for m in tw.MOTIONS}


def test_captions_use_several_templates_and_synonyms_per_motion():
    specs = tw.sample_specs(3000, 0, "library")
    for motion in tw.MOTIONS:
        caps = [s.caption for s in specs if s.motion == motion]
        phrases = {p for p in tw.MOTION_PHRASES[motion] if any(p in c for c in caps)}
        assert len(phrases) >= 3, motion
        assert len({s.template for s in specs if s.motion == motion}) >= 3
    for s in specs[:200]:
        assert s.colour in s.caption and s.shape in s.caption
        assert tw.MOTION_PHRASES[s.motion][s.phrase] in s.caption
    assert "a red circle drifts to the left" in {tw.TEMPLATES[0].format(colour="red", shape="circle",
                                                                        motion=p, background="")
                                                 for p in tw.MOTION_PHRASES["left"]}


# ------------------------------------------------------------------------------------------ the probe
def test_probe_tables_agree_with_the_world():
    assert tp.SHAPES == tw.SHAPES
    assert tp.COLOURS == tw.COLOURS
    assert set(tp.MOTIONS) == set(tw.MOTIONS)
    for name, (dx, dy) in tw.LINEAR.items():
        assert math.degrees(math.atan2(-dy, dx)) % 360 == pytest.approx(tp.LINEAR_ANGLES[name])


def test_probe_accuracy_on_1000_ground_truth_clips():
    specs = tw.sample_specs(1000, 2024, "eval")
    results = _probe_specs(specs)
    acc = tp.accuracy(results, specs)
    confusion = {k: collections.Counter((getattr(s, k), getattr(r, k)) for r, s in zip(results, specs)
                                        if getattr(r, k) != getattr(s, k)) for k in acc}
    assert min(acc.values()) >= 0.97, (acc, confusion)
    # the features agree with the ground-truth track
    for r, s in zip(results[:50], specs[:50]):
        truth = tw.track(s)
        err = max(math.hypot(x - tx, y - ty) for (x, y), (tx, ty, _) in zip(r.track, truth))
        assert err < 1.0, (s, r.track)
        if s.motion in tw.LINEAR:
            assert r.straightness > 0.9 and 0.35 * tw.SIZE < r.displacement < 0.65 * tw.SIZE
        assert 0 <= r.confidence["motion"] <= 1 and r.frames_with_object == tw.FRAMES


def test_probe_features_of_each_shape():
    specs = [tw.sample_specs(1, 5, "eval", shape=s, colour="red", motion="left")[0] for s in tw.SHAPES]
    results = _probe_specs(specs)
    fill = {s.shape: r.fill_ratio for s, r in zip(specs, results)}
    assert fill["triangle"] < 0.65 < fill["circle"] < 0.9 < fill["square"]
    for r in results:
        assert r.colour == "red" and r.hue is not None and (r.hue < 15 or r.hue > 345)
        assert r.angle == pytest.approx(180.0, abs=3.0)


def test_probe_static_blank_and_uint8_inputs():
    spec = tw.sample_specs(1, 1, "eval", shape="square", colour="blue", motion="right")[0]
    still = dataclasses.replace(spec, speed=0.0)
    video = tw.render([still])[0]
    r = tp.probe(video)
    assert (r.motion, r.shape, r.colour) == ("static", "square", "blue")
    r8 = tp.probe((video.numpy() * 255).round().astype(np.uint8))
    assert r8.label == r.label
    blank = torch.full((8, 64, 64, 3), 0.3)
    assert tp.probe(blank).label == ("none", "none", "none")
    growing = tw.sample_specs(1, 1, "eval", shape="circle", colour="cyan", motion="growing")[0]
    r = tp.probe(tw.render([growing])[0])
    assert r.motion == "growing" and r.area_ratio > 4
    with pytest.raises(ValueError):
        tp.probe(torch.zeros(64, 64))


def test_probe_ignores_faint_and_small_spurious_colour():
    specs = tw.sample_specs(40, 11, "eval")
    videos = tw.render(specs)
    g = torch.Generator().manual_seed(0)
    videos = videos + 0.05 * torch.randn(videos.shape, generator=g)
    speck = torch.rand(videos.shape[:4], generator=g) < 0.003       # isolated saturated pixels
    videos[speck] = torch.tensor([1.0, 0.0, 1.0])
    acc = tp.accuracy(tp.probe_batch(videos.clamp(0, 1)), specs)
    assert min(acc.values()) >= 0.95, acc


# --------------------------------------------------------------------------------------- the writer
def test_writer_output_is_deterministic_and_read_by_the_library_reader(tmp_path):
    a = tww.write_world(str(tmp_path / "a"), 6, seed=7, split="train", workers=1)
    tww.write_world(str(tmp_path / "b"), 6, seed=7, split="train", workers=2)
    assert _digest(str(tmp_path / "a")) == _digest(str(tmp_path / "b"))
    assert a.count == 6 and a.bytes > 0
    specs = tw.sample_specs(6, 7, "train")
    entries, report = read_library(str(tmp_path / "a" / tww.CSV_NAME))
    assert report.rows == 6 and report.missing_videos == 0
    assert [e.caption for e in entries] == [s.caption for s in specs]
    assert [e.video_path for e in entries] == [str(tmp_path / "a" / "videos" / f"toy{i:05d}.mp4") for i in range(6)]
    rows = tww.read_world_csv(str(tmp_path / "a" / tww.CSV_NAME))
    assert [tww.spec_from_row(r) for r in rows] == [
        dataclasses.replace(s, **{f: round(getattr(s, f), 6) for f in ("x0", "y0", "radius", "speed", "orbit",
                                                                          "phase", "bg_level")}) for s in specs]
    assert all(r["split"] == "train" for r in rows)
    # the decoded mp4 is the rendered clip, upscaled 2x and back
    frames = tp.read_video_file(entries[0].video_path)
    assert frames.shape == (tw.FRAMES, 2 * tw.SIZE, 2 * tw.SIZE, 3)
    small = tp.read_video_file(entries[0].video_path, size=tw.SIZE).astype(np.float32) / 255
    assert np.abs(small - tw.render(specs[:1])[0].numpy()).mean() < 0.02


def test_writer_failure_leaves_nothing(tmp_path):
    def boom(i):
        if i == 2:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        tww.write_world(str(tmp_path / "out"), 5, seed=0, on_clip=boom)
    assert os.listdir(tmp_path) == []
    # a failing worker process, and an existing output that must survive a failed overwrite
    tww.write_world(str(tmp_path / "out"), 2, seed=0)
    before = _digest(str(tmp_path / "out"))
    with pytest.raises(tww.ToyWorldWriteError, match="writer process failed"):
        tww.write_world(str(tmp_path / "out"), 4, seed=1, workers=2, codec="no-such-codec", overwrite=True)
    assert os.listdir(tmp_path) == ["out"] and _digest(str(tmp_path / "out")) == before
    with pytest.raises(tww.ToyWorldWriteError, match="exists"):
        tww.write_world(str(tmp_path / "out"), 2, seed=0)
    tww.write_world(str(tmp_path / "out"), 3, seed=0, overwrite=True)
    assert os.listdir(tmp_path) == ["out"] and len(os.listdir(tmp_path / "out" / "videos")) == 3
    with pytest.raises(ValueError, match="cover"):
        tww.write_world(str(tmp_path / "x"), 3, split="train", cover=True)


def test_cli_writes_and_refuses_to_overwrite(tmp_path, capsys):
    script = os.path.join(REPO, "scripts", "make_toy_world.py")   # loads the writer by path, forks workers
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    cmd = [sys.executable, script, "--out", str(tmp_path / "w"), "--count", "3", "--seed", "1", "--workers", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "3 clips written" in done.stdout and "clips/s" in done.stdout
    assert sorted(os.listdir(tmp_path / "w")) == ["library.csv", "videos", "world.json"]
    assert tww.main(["--out", str(tmp_path / "w"), "--count", "3"]) == 2
    assert "exists" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- shipped library
def test_shipped_library_covers_the_world_and_probes_right():
    csv_path = os.path.join(SHIPPED, tww.CSV_NAME)
    entries, report = read_library(csv_path)
    assert report.missing_videos == 0 and report.rows == len(entries)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [e.caption for e in entries] == [r["caption"] for r in rows]
    assert {(r["shape"], r["colour"], r["motion"]) for r in rows} == {
        (s, c, m) for s in tw.SHAPES for c in tw.COLOURS for m in tw.MOTIONS}
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(SHIPPED) for f in fs)
    assert total < 3_000_000
    # the CLI's fixed seed reproduces the shipped specs
    assert [tww.spec_from_row(r).caption for r in rows] == [s.caption for s in tww.covering_specs(len(rows), 0)]
    with tp.torch_threads(1):
        videos = np.stack([tp.read_video_file(e.video_path, size=tw.SIZE) for e in entries])
        results = tp.probe_batch(videos)
    wrong = [(r["video_id"], (r["colour"], r["shape"], r["motion"]), p.label) for r, p in zip(rows, results)
             if (r["colour"], r["shape"], r["motion"]) != p.label]
    assert not wrong
