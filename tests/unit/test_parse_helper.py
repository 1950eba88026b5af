"""The parse helper process of index builds: same index as parsing in-process, and a helper that fails,
dies or is cancelled never costs the build its result or leaves a process behind."""

from __future__ import annotations

import numpy as np
import pytest

import comfyui_searchpriors.retrieval.index as index_module
import comfyui_searchpriors.retrieval.parse_worker as worker_module
from comfyui_searchpriors.retrieval.atomizer import parse_texts
from comfyui_searchpriors.retrieval.index import build_index, load_index, read_manifest
from comfyui_searchpriors.retrieval.library import LibraryEntry
from comfyui_searchpriors.retrieval.parse_worker import ParseWorker, parsed_from_wire, parsed_to_wire, spacy_source

SUBJECTS = ["a man", "a dog", "two girls", "the chef", "a panda", "scissors", "a car", "the crowd"]
ACTIONS = ["rides a horse", "runs on the beach", "is cutting through paper", "throws a ball to a boy",
           "drives down the road at night", "cooks pasta in the kitchen", "dances and sings", "is being chased by a cat"]
CAPTIONS = [f"{s} {a}" for s in SUBJECTS for a in ACTIONS] + ["time-lapse of clouds over the sea"] * 3


def entries(captions, prefix="v"):
    return [LibraryEntry(f"{prefix}{i}", c, None) for i, c in enumerate(captions)]


class Recording(ParseWorker):
    """The real helper, remembering itself and how many chunks it parsed; ``kill_after`` kills its process
    after that many submitted chunks."""

    made: list["Recording"] = []
    kill_after: int | None = None

    def __init__(self, source):
        super().__init__(source)
        self.parsed_chunks = 0
        self.submitted = 0
        Recording.made.append(self)

    def submit(self, chunk_id, texts, **kwargs):
        super().submit(chunk_id, texts, **kwargs)
        self.submitted += 1
        if self.kill_after is not None and self.submitted == self.kill_after:
            self._proc.kill()

    def _handle(self, reply, out):
        before = len(out)
        super()._handle(reply, out)
        self.parsed_chunks += len(out) - before


@pytest.fixture()
def recording(monkeypatch):
    Recording.made = []
    Recording.kill_after = None
    monkeypatch.setattr(worker_module, "ParseWorker", Recording)  # started by ``start_parse_worker``
    monkeypatch.setattr(index_module, "PARSE_CHUNK", 7)   # many chunks: the helper and this process share them
    yield Recording
    for helper in Recording.made:
        assert helper._proc.poll() is not None, "a parse helper process was left running"


def torch_threads():
    import torch

    return torch.get_num_threads()


def same_index(a_folder, b_folder):
    a, b = load_index(a_folder), load_index(b_folder)
    assert a.count == b.count
    assert a.phrase_texts == b.phrase_texts
    assert np.array_equal(a.units, b.units) and np.array_equal(a.unit_offsets, b.unit_offsets)
    assert np.array_equal(a.core_units, b.core_units)
    assert np.array_equal(a.sentence_vectors(), b.sentence_vectors())
    assert np.array_equal(a.phrases, b.phrases)
    assert [e.caption for e in a.entries(range(a.count))] == [e.caption for e in b.entries(range(b.count))]


@pytest.fixture(scope="module")
def in_process_index(tmp_path_factory, nlp, hash_encoder_cls):
    folder = str(tmp_path_factory.mktemp("plain") / "idx")
    report = build_index(folder, entries(CAPTIONS), nlp, hash_encoder_cls(), segment_size=25, batch_tokens=32,
                         parse_helper=False)
    assert report.parse_helper == "not used"
    return folder


@pytest.mark.parametrize("hide_torch", [True, False], ids=["torch-hidden", "torch-importable"])
def test_helper_builds_the_same_index_as_in_process(tmp_path, nlp, hash_encoder, recording, in_process_index,
                                                    monkeypatch, hide_torch):
    source = spacy_source(nlp)
    assert source["hide_torch"] is True  # en_core_web_sm runs on numpy only
    monkeypatch.setattr(worker_module, "spacy_source", lambda _nlp: dict(source, hide_torch=hide_torch))
    threads = torch_threads()
    folder = str(tmp_path / "idx")
    report = build_index(folder, entries(CAPTIONS), nlp, hash_encoder, segment_size=25, batch_tokens=32,
                         parse_helper=True)
    assert report.parse_helper == "used" and "helper process" in report.summary()
    assert len(recording.made) == 1, "one helper serves every segment of a build"
    assert recording.made[0].parsed_chunks > 0, "the helper parsed nothing"
    assert torch_threads() == threads
    assert len(load_index(folder).segments) == 3
    same_index(folder, in_process_index)


def test_wire_format_round_trips_every_parse(nlp):
    prompts = CAPTIONS + ["Time-lapse of clouds", "A panda rides a bicycle past the Eiffel Tower",
                          "jumping", "a man who rides a horse is waving", "two kangaroos box playfully, 4k"]
    for parsed in parse_texts(nlp, prompts):
        back = parsed_from_wire(parsed_to_wire(parsed))
        assert back == parsed
        assert [u.rule for u in back.units] == [u.rule for u in parsed.units]  # rules do not take part in ==
    assert back.modifiers == ["4k"] and back.core.rule is not None


def test_helper_that_cannot_load_the_model_falls_back(tmp_path, nlp, hash_encoder, recording, in_process_index,
                                                      monkeypatch):
    monkeypatch.setattr(worker_module, "spacy_source",
                        lambda _nlp: {"kind": "folder", "location": str(tmp_path / "no-such-model"),
                                      "exclude": [], "hide_torch": True})
    folder = str(tmp_path / "idx")
    report = build_index(folder, entries(CAPTIONS), nlp, hash_encoder, segment_size=25, batch_tokens=32,
                         parse_helper=True)
    assert report.parse_helper.startswith("failed") and "no-such-model" in report.parse_helper
    assert any("Parse helper process failed" in n for n in report.notes)
    same_index(folder, in_process_index)


def test_helper_that_dies_mid_build_costs_nothing(tmp_path, nlp, hash_encoder, recording, in_process_index):
    recording.kill_after = 2
    folder = str(tmp_path / "idx")
    report = build_index(folder, entries(CAPTIONS), nlp, hash_encoder, segment_size=25, batch_tokens=32,
                         parse_helper=True)
    # whichever notices first: the reply stream ending, or the next chunk not going through
    assert report.parse_helper.startswith("failed")
    assert "exited" in report.parse_helper or "stopped reading" in report.parse_helper, report.parse_helper
    same_index(folder, in_process_index)


def test_cancel_stops_the_helper_and_restores_threads(tmp_path, nlp, hash_encoder, recording):
    folder = str(tmp_path / "idx")
    build_index(folder, entries(CAPTIONS[:5]), nlp, hash_encoder)
    before = read_manifest(folder)
    threads = torch_threads()

    class Stop(Exception):
        pass

    def cancel(done, total):
        if done > 0:
            raise Stop()

    with pytest.raises(Stop):
        build_index(folder, entries(CAPTIONS, "w"), nlp, hash_encoder, progress=cancel, batch_tokens=32,
                    parse_helper=True)
    assert recording.made and recording.made[0]._proc.poll() is not None
    assert torch_threads() == threads
    assert read_manifest(folder) == before


def test_when_the_helper_is_used(tmp_path, nlp, hash_encoder, recording, monkeypatch):
    def helper_state(prefix, **kwargs):
        return build_index(str(tmp_path / prefix), entries(CAPTIONS[:4], prefix), nlp, hash_encoder,
                           **kwargs).parse_helper

    assert helper_state("a") == "not used"                   # 4 new captions: below the threshold
    monkeypatch.setenv("SEARCHPRIORS_PARSE_HELPER_MIN", "2")
    assert helper_state("b") == "used"
    monkeypatch.setenv("SEARCHPRIORS_PARSE_HELPER", "0")
    assert helper_state("c") == "not used"
    assert helper_state("d", parse_helper=True) == "used"    # an explicit request wins
    monkeypatch.delattr(nlp, "searchpriors_source")          # a pipeline built in code cannot be re-loaded
    assert helper_state("e", parse_helper=True).startswith("not used (the spaCy pipeline")


def test_helper_that_stops_answering_is_given_up(tmp_path, nlp, hash_encoder, recording, in_process_index,
                                                 monkeypatch):
    import comfyui_searchpriors.retrieval.parse_worker as worker_module

    monkeypatch.setattr(worker_module, "STALL_TIMEOUT_S", 1.0)
    # chunks are recorded as handed over, but never reach the helper: it stays silent
    monkeypatch.setattr(recording, "_send", lambda self, message: None if message.get("op") == "parse"
                        else ParseWorker._send(self, message))
    folder = str(tmp_path / "idx")
    report = build_index(folder, entries(CAPTIONS), nlp, hash_encoder, segment_size=25, batch_tokens=32,
                         parse_helper=True)
    assert "did not answer" in report.parse_helper
    same_index(folder, in_process_index)


def test_several_helpers_build_the_same_index_and_survive_one_dying(tmp_path, nlp, hash_encoder, recording,
                                                                    in_process_index):
    recording.kill_after = 3  # each helper dies at its third chunk; the survivors and this process finish
    folder = str(tmp_path / "idx")
    report = build_index(folder, entries(CAPTIONS), nlp, hash_encoder, segment_size=25, batch_tokens=32,
                         parse_helper=True, parse_helpers=2)
    assert len(recording.made) == 2 and report.parse_helpers == 2
    assert "failed (" in report.parse_helper, report.parse_helper
    same_index(folder, in_process_index)
    recording.kill_after = None
    folder2 = str(tmp_path / "idx2")
    report = build_index(folder2, entries(CAPTIONS), nlp, hash_encoder, segment_size=25, batch_tokens=32,
                         parse_helper=True, parse_helpers=2)
    assert report.parse_helper == "used" and "in 2 helper processes" in report.summary()
    assert all(h.parsed_chunks > 0 for h in recording.made[2:]), "a helper was never fed"
    same_index(folder2, in_process_index)


def test_auto_helper_count_follows_the_encoder_device():
    class On:
        def __init__(self, device):
            self.device = device

    auto = index_module.auto_parse_helpers
    assert auto(On("cpu"), cpus=1) == 0
    assert auto(On("cpu"), cpus=2) == 1          # this machine: one helper, as before
    assert auto(On("cpu"), cpus=16) == 4         # the encoder keeps most cores
    assert auto(On("cuda:0"), cpus=16) == 15     # the GPU encodes: every other core parses
    assert auto(object(), cpus=8) == 2           # no device attribute: the CPU
