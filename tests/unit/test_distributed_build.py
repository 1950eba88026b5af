"""The distributed index build on a local Dask cluster of this machine (2 worker processes): the same index
as a single-process build (real spaCy and MiniLM loaded by name in the workers), a worker killed mid-shard
loses only its shard and running the same build again finishes it, a worker killed after staging its shard
loses nothing (these two with the hash encoder sent to the workers, so that a restarted worker is quick to
load). Skipped when dask[distributed] is not installed (requirements-dev.txt has it)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from comfyui_searchpriors.retrieval import distributed as dist  # noqa: E402
from comfyui_searchpriors.retrieval.embedding import atomize  # noqa: E402
from comfyui_searchpriors.retrieval.index import build_index, load_index, read_manifest  # noqa: E402
from comfyui_searchpriors.retrieval.library import LibraryEntry  # noqa: E402
from comfyui_searchpriors.retrieval.search import SearchParams, search  # noqa: E402

SUBJECTS = ["a man", "a dog", "two girls", "the chef", "a panda", "a cat", "a car", "the crowd"]
ACTIONS = ["rides a horse", "runs on the beach", "is cutting paper with scissors", "throws a ball to a boy",
           "drives down the road at night", "cooks pasta in the kitchen", "dances and sings", "chases a mouse"]
ENTRIES = ([LibraryEntry(f"v{i}", f"{s} {a}", None)
            for i, (s, a) in enumerate((s, a) for s in SUBJECTS for a in ACTIONS)]
           + [LibraryEntry("v-dup", "a dog runs on the beach", None)])
SHARD = 20   # 65 entries: 4 shards
PROMPTS = ["a dog runs along the shore", "a woman rides a horse", "someone cooks in a kitchen"]


@pytest.fixture(scope="module")
def client():
    import dask

    # a crashed worker fails its task at once (Dask would retry it on another worker by default), and a
    # worker holds one task at a time (so a crash costs only the shard it was running)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0}):
        cluster, client = dist.local_cluster(workers=2)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, nlp, minilm):
    folder = str(tmp_path_factory.mktemp("single") / "idx")
    build_index(folder, ENTRIES, nlp, minilm, parse_helper=False)
    return folder


@pytest.fixture(scope="module")
def hash_reference(tmp_path_factory, nlp, hash_encoder_cls):
    folder = str(tmp_path_factory.mktemp("single-hash") / "idx")
    build_index(folder, ENTRIES, nlp, hash_encoder_cls(), parse_helper=False)
    return folder


@pytest.fixture()
def shipped_hash_encoder(hash_encoder):
    import cloudpickle

    module = sys.modules[type(hash_encoder).__module__]  # the tests' conftest: not importable by the workers
    cloudpickle.register_pickle_by_value(module)
    yield hash_encoder
    cloudpickle.unregister_pickle_by_value(module)


def by_key(folder):
    """Each caption's (sentence vector, units as phrase texts, core unit's texts), keyed by (video id, caption)."""
    index = load_index(folder)
    vectors = index.sentence_vectors()
    texts = index.phrase_texts + [None]
    out = {}
    for row, entry in enumerate(index.entries(range(index.count))):
        a, b = int(index.unit_offsets[row]), int(index.unit_offsets[row + 1])
        units = [tuple(texts[int(p)] for p in index.units[u]) for u in range(a, b)]
        core = tuple(texts[int(p)] for p in index.units[index.core_units[row]]) if index.core_units[row] >= 0 else None
        assert entry.key not in out, "a caption is in the index twice"
        out[entry.key] = (vectors[row].copy(), units, core)
    return out


def assert_same_index(folder, reference_folder, nlp, minilm):
    got, want = by_key(folder), by_key(reference_folder)
    assert set(got) == set(want)
    for key, (vector, units, core) in want.items():
        assert got[key][1:] == (units, core), key
        np.testing.assert_allclose(got[key][0], vector, atol=1e-5)  # the workers encode on 1 thread
    index, ref = load_index(folder), load_index(reference_folder)
    for prompt in PROMPTS:
        atomized = atomize(prompt, nlp, minilm)
        for mode in ("search_t2v", "pos"):
            params = SearchParams(mode=mode, top_k=5).validate()
            a, b = search(index, atomized, params).hits, search(ref, atomized, params).hits
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
            # equal scores (the library's duplicate caption) may come in either row order
            ranked = lambda hits: sorted((round(h.score, 3), h.video_id, h.caption) for h in hits)  # noqa: E731
            assert ranked(a) == ranked(b), (prompt, mode)


def test_distributed_build_equals_a_single_process_build(tmp_path, client, reference, nlp, minilm):
    folder = str(tmp_path / "idx")
    seen = []
    report = dist.build_index_distributed(folder, ENTRIES, nlp, minilm, client, shard_size=SHARD,
                                          progress=lambda done, total: seen.append((done, total)))
    assert report.shards == report.shards_done == 4 and not report.failures
    assert report.workers == 2 and set(report.devices) == {"cpu"}
    assert report.build.added == len(ENTRIES) and read_manifest(folder)["count"] == len(ENTRIES)
    assert seen[0] == (0, len(ENTRIES)) and seen[-1] == (len(ENTRIES), len(ENTRIES))
    assert "4 shards on 2 workers (cpu): 4 done" in report.summary()
    assert not [n for n in os.listdir(folder) if n.startswith(("staging", "_tmp"))]
    assert_same_index(folder, reference, nlp, minilm)
    rows = lambda f: [e.key for e in load_index(f).entries(range(len(ENTRIES)))]  # noqa: E731
    assert rows(folder) == rows(reference), "shards are published in the library's order"
    again = dist.build_index_distributed(folder, ENTRIES, nlp, minilm, client, shard_size=SHARD)
    assert again.shards == 0 and again.build.added == 0 and again.build.skipped_existing == len(ENTRIES)


def test_cli_builds_on_a_running_scheduler_the_index_that_index_build_makes(tmp_path, client, capsys,
                                                                           sample_library_path, nlp, minilm):
    from comfyui_searchpriors.retrieval.cli import main

    out = tmp_path / "idx"
    args = ["index", "build-distributed", "--library", sample_library_path, "--out", str(out), "--shard-size", "15"]
    assert main(args + ["--scheduler", client.scheduler.address]) == 0
    summary = capsys.readouterr().out
    assert "40 captions (40 added" in summary and "3 shards on 2 workers (cpu): 3 done" in summary, summary
    single = tmp_path / "single"
    assert main(["index", "build", "--library", sample_library_path, "--out", str(single), "--parse-helper", "off",
                 "--device", "cpu"]) == 0
    assert read_manifest(str(out))["sources"] == read_manifest(str(single))["sources"]
    assert_same_index(str(out), str(single), nlp, minilm)
    assert main(args + ["--scheduler", client.scheduler.address]) == 0   # nothing left to do
    assert "0 added, 40 already indexed" in capsys.readouterr().out


def test_a_killed_worker_loses_only_its_shard_and_a_rerun_finishes_it(tmp_path, client, hash_reference, nlp,
                                                                     shipped_hash_encoder, monkeypatch):
    folder = str(tmp_path / "idx")
    encoder = shipped_hash_encoder
    # the worker of shard 1 dies like a power cut with its segment written but not yet listed as staged
    monkeypatch.setenv(dist.SHARD_FAULT_ENV, "1:segment-renamed")
    report = dist.build_index_distributed(folder, ENTRIES, nlp, encoder, client, shard_size=SHARD, ship_encoder=True)
    monkeypatch.delenv(dist.SHARD_FAULT_ENV)
    assert [f.shard for f in report.failures] == [1] and report.shards_done == 3
    assert report.still_missing == SHARD and "run the same build again" in report.summary()
    assert read_manifest(folder)["count"] == len(ENTRIES) - SHARD
    assert not [n for n in os.listdir(folder) if n.startswith(("staging", "_tmp"))]
    published = {s["name"] for s in read_manifest(folder)["segments"]}
    assert {n for n in os.listdir(folder) if n.startswith("seg-")} == published, "the dead worker's segment stayed"

    rerun = dist.build_index_distributed(folder, ENTRIES, nlp, encoder, client, shard_size=SHARD, ship_encoder=True)
    assert rerun.shards == 1 and not rerun.failures and rerun.build.added == SHARD
    assert rerun.build.skipped_existing == len(ENTRIES) - SHARD
    assert_same_index(folder, hash_reference, nlp, encoder)


def test_a_worker_dying_after_staging_its_shard_costs_nothing(tmp_path, client, hash_reference, nlp,
                                                              shipped_hash_encoder, monkeypatch):
    folder = str(tmp_path / "idx")
    monkeypatch.setenv(dist.SHARD_FAULT_ENV, "2:staging-written")  # this worker dies after listing its segment
    report = dist.build_index_distributed(folder, ENTRIES, nlp, shipped_hash_encoder, client, shard_size=SHARD,
                                          ship_encoder=True)
    assert [f.shard for f in report.failures] == [2] and report.shards_done == 3
    assert report.still_missing == 0  # its staged segment is taken over
    assert "the workers had staged them" in report.summary()
    assert_same_index(folder, hash_reference, nlp, shipped_hash_encoder)


def test_bad_input_is_refused_before_any_work(tmp_path, nlp, hash_encoder):
    import spacy

    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    folder = tmp_path / "idx"
    with pytest.raises(SearchPriorsError, match="shard_size must be at least 1"):
        dist.build_index_distributed(str(folder), ENTRIES, nlp, hash_encoder, None, shard_size=0)
    with pytest.raises(SearchPriorsError, match="device 'tpu'"):
        dist.ModelSpec.of(nlp, hash_encoder, device="tpu")
    with pytest.raises(SearchPriorsError, match="loaded by name or folder"):
        dist.ModelSpec.of(spacy.blank("en"), hash_encoder)   # a pipeline built in code: workers cannot load it
    assert not folder.exists()
