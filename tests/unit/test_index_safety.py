"""The motion index under concurrency and faults: two builds at once keep the union of their captions, readers
never see a half state, a killed build at any write step leaves a usable index that the next build completes,
a full disk or read-only folder says so and changes nothing, checksums name a corrupted file, orphans of dead
builds are removed and those of running builds are not, version-1 indexes still load.

Builds run in real processes (``os.fork`` of this test process, which already holds spaCy, so each costs
milliseconds); every wait is bounded."""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
import traceback

import pytest

import comfyui_searchpriors.retrieval.index_files as index_files
from comfyui_searchpriors.retrieval.errors import MotionIndexError
from comfyui_searchpriors.retrieval.index import MANIFEST, STAGING, VERSION, build_index, load_index, read_manifest
from comfyui_searchpriors.retrieval.index_files import FAULT_ENV, FAULT_EXIT, IndexBusyError
from comfyui_searchpriors.retrieval.library import LibraryEntry

if not hasattr(os, "fork"):  # pragma: no cover
    pytest.skip("these tests fork real build processes (POSIX only)", allow_module_level=True)

SUBJECTS = ["a man", "a dog", "two girls", "the chef", "a panda", "a car"]
ACTIONS = ["rides a horse", "runs on the beach", "throws a ball", "cooks pasta", "dances", "drives at night"]
CAPTIONS = [f"{s} {a}" for s in SUBJECTS for a in ACTIONS]


def entries(captions, prefix):
    return [LibraryEntry(f"{prefix}{i}", c, None) for i, c in enumerate(captions)]


def keys_in(folder):
    index = load_index(folder)
    return [(e.video_id, e.caption) for e in index.entries(range(index.count))]


def assert_exactly(folder, wanted):
    got = keys_in(folder)
    assert len(got) == len(set(got)), "a caption is in the index twice"
    assert set(got) == {e.key for e in wanted}


def folder_names(folder):
    return sorted(os.listdir(folder))


def assert_tidy(folder):
    """Only published segments, the manifest and the writers' lock file are left."""
    listed = {s["name"] for s in read_manifest(folder)["segments"]}
    assert set(folder_names(folder)) == listed | {MANIFEST, index_files.WRITER_LOCK}


def fork(fn):
    """Run ``fn`` in a child process; its exit status is 0 when it returned, 1 when it raised."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def wait(pid, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish in {timeout} s")


def wait_for(path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def pause_at(step, signal_file, go_file):
    """In a child: when the build reaches ``step``, create ``signal_file`` and wait for ``go_file``."""
    real = index_files.fault_point

    def point(name):
        real(name)
        if name == step and not os.path.exists(signal_file):
            open(signal_file, "w").close()
            wait_for(go_file)

    index_files.fault_point = point


def build_in_child(folder, wanted, nlp, encoder, report_file=None, fault=None, **kwargs):
    def run():
        if fault:
            os.environ[FAULT_ENV] = fault
        report = build_index(folder, wanted, nlp, encoder, **kwargs)
        if report_file:
            with open(report_file, "w") as fh:
                json.dump({"added": report.added, "duplicates": report.concurrent_duplicates,
                           "total": report.total}, fh)
    return fork(run)


# ----------------------------------------------------------------------------------------------- concurrency

def test_two_builds_at_once_end_with_the_union_each_caption_once(tmp_path, nlp, hash_encoder):
    folder = str(tmp_path / "idx")
    base = entries(CAPTIONS[:4], "base")
    build_index(folder, base, nlp, hash_encoder)
    shared = entries(CAPTIONS[4:10], "both")           # given to both builds
    first = entries(CAPTIONS[10:20], "a") + shared
    second = entries(CAPTIONS[20:30], "b") + shared
    waiting, go = str(tmp_path / "a-waits"), str(tmp_path / "go")

    def first_build():  # finishes its segments, then waits before publishing while the second one publishes
        pause_at("staging-written", waiting, go)
        report = build_index(folder, first, nlp, hash_encoder, segment_size=16)
        with open(tmp_path / "a.json", "w") as fh:
            json.dump({"added": report.added, "duplicates": report.concurrent_duplicates}, fh)

    a = fork(first_build)
    wait_for(waiting)
    b = build_in_child(folder, second, nlp, hash_encoder, str(tmp_path / "b.json"), segment_size=5)
    assert wait(b) == 0
    open(go, "w").close()
    assert wait(a) == 0
    a_report = json.loads((tmp_path / "a.json").read_text())
    assert a_report == {"added": 10, "duplicates": 6}   # the shared captions were published by the second
    assert_exactly(folder, base + first + second)
    assert_tidy(folder)


def test_free_running_builds_keep_every_caption(tmp_path, nlp, hash_encoder):
    folder = str(tmp_path / "idx")
    groups = [entries(CAPTIONS[i::3], f"g{i}-") for i in range(3)]
    pids = [build_in_child(folder, g, nlp, hash_encoder, segment_size=3) for g in groups]  # new folder, all at once
    assert [wait(p) for p in pids] == [0, 0, 0]
    assert_exactly(folder, [e for g in groups for e in g])
    assert_tidy(folder)


def hold_writer_lock(folder, ready):
    def run():
        with index_files.WriterLock(folder, None):
            open(ready, "w").close()
            time.sleep(60)
    return fork(run)


def test_busy_lock_fails_fast_or_after_the_timeout_and_dies_with_its_holder(tmp_path, nlp, hash_encoder):
    folder = str(tmp_path / "idx")
    build_index(folder, entries(CAPTIONS[:3], "v"), nlp, hash_encoder)
    before = (tmp_path / "idx" / MANIFEST).read_bytes()
    holder = hold_writer_lock(folder, str(tmp_path / "held"))
    try:
        wait_for(str(tmp_path / "held"))
        t0 = time.monotonic()
        with pytest.raises(IndexBusyError, match=r"Another build is writing .* \(pid \d+ .*lock-timeout"):
            build_index(folder, entries(CAPTIONS[3:6], "w"), nlp, hash_encoder, lock_timeout=0)
        assert time.monotonic() - t0 < 2
        t0 = time.monotonic()
        with pytest.raises(IndexBusyError, match="after 0.5 s"):
            build_index(folder, entries(CAPTIONS[3:6], "w"), nlp, hash_encoder, lock_timeout=0.5)
        assert time.monotonic() - t0 >= 0.5
        assert (tmp_path / "idx" / MANIFEST).read_bytes() == before
    finally:
        os.kill(holder, signal.SIGKILL)       # a killed holder: the OS drops its lock
        os.waitpid(holder, 0)
    report = build_index(folder, entries(CAPTIONS[3:6], "w"), nlp, hash_encoder, lock_timeout=0)
    assert report.total == 6


def test_readers_see_the_old_or_the_new_index_never_an_error(tmp_path, nlp, hash_encoder):
    folder = str(tmp_path / "idx")
    build_index(folder, entries(CAPTIONS[:2], "r0-"), nlp, hash_encoder)
    log, stop = tmp_path / "reads.txt", str(tmp_path / "stop")

    def reader():
        with open(log, "w") as out:
            while not os.path.exists(stop):
                try:
                    index = load_index(folder)
                    rows = index.entries(range(index.count))   # every row readable, in every segment
                    assert len({(e.video_id, e.caption) for e in rows}) == index.count
                    out.write(f"{index.count}\n")
                except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                    out.write(f"ERROR {exc!r}\n")
                out.flush()

    pid = fork(reader)
    published = {2}
    for round_ in range(1, 9):
        report = build_index(folder, entries(CAPTIONS[2 * round_:2 * round_ + 2], f"r{round_}-"), nlp,
                             hash_encoder, segment_size=1)
        published.add(report.total)
    time.sleep(0.2)
    open(stop, "w").close()
    assert wait(pid) == 0
    seen = [line.strip() for line in log.read_text().splitlines()]
    errors = [line for line in seen if line.startswith("ERROR")]
    assert not errors, errors[:3]
    counts = [int(c) for c in seen]
    assert len(counts) >= 5 and set(counts) <= published and counts == sorted(counts)


# ----------------------------------------------------------------------------------------------- faults

STEPS = [("segment-file", 3), ("segment-complete", 1), ("segment-renamed", 1), ("json-temp", 1),
         ("staging-written", 1), ("segment-file", 9), ("json-temp", 2), ("staging-written", 2),
         ("publish-locked", 1), ("json-temp", 3), ("manifest-replaced", 1), ("staging-removed", 1)]


def test_steps_list_every_fault_point():
    assert {s for s, _ in STEPS} == set(index_files.FAULT_STEPS)


@pytest.fixture(scope="module")
def base_index(tmp_path_factory, nlp, hash_encoder_cls):
    folder = tmp_path_factory.mktemp("base") / "idx"
    build_index(str(folder), entries(CAPTIONS[:6], "base"), nlp, hash_encoder_cls())
    return folder


def copy_index(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def test_a_kill_at_every_write_step_leaves_a_usable_index_that_the_next_build_completes(
        tmp_path, nlp, hash_encoder, base_index):
    """Two segments (power cut simulated with os._exit in a real child process at each step in turn)."""
    base = entries(CAPTIONS[:6], "base")
    more = entries(CAPTIONS[6:14], "more")
    for step, nth in STEPS:
        folder = copy_index(base_index, tmp_path / f"{step}-{nth}")
        manifest_before = open(os.path.join(folder, MANIFEST), "rb").read()
        pid = build_in_child(folder, more, nlp, hash_encoder, fault=f"{step}:{nth}", segment_size=4)
        assert wait(pid) == FAULT_EXIT, f"the build did not stop at {step}:{nth}"
        after_kill = keys_in(folder)                           # loads, every row readable
        published = step in ("manifest-replaced", "staging-removed")
        assert len(after_kill) == len(set(after_kill)) == len(base) + (len(more) if published else 0), step
        if not published:
            assert open(os.path.join(folder, MANIFEST), "rb").read() == manifest_before, step
        report = build_index(folder, more, nlp, hash_encoder, segment_size=4)
        assert report.total == len(base) + len(more), step
        assert_exactly(folder, base + more)
        assert_tidy(folder)


def test_disk_full_at_every_write_leaves_the_published_index_untouched(tmp_path, nlp, hash_encoder, monkeypatch,
                                                                       base_index):
    base = entries(CAPTIONS[:6], "base")
    more = entries(CAPTIONS[6:14], "more")
    real_write = index_files._raw_write
    failed_at = []
    for fail_at in range(1, 40):
        folder = copy_index(base_index, tmp_path / f"full-{fail_at}")
        manifest_before = open(os.path.join(folder, MANIFEST), "rb").read()
        calls = [0]

        def write(path, data):
            calls[0] += 1
            if calls[0] == fail_at:
                raise OSError(errno.ENOSPC, "No space left on device", path)
            real_write(path, data)

        monkeypatch.setattr(index_files, "_raw_write", write)
        try:
            build_index(folder, more, nlp, hash_encoder, segment_size=4)
        except MotionIndexError as exc:
            assert "Disk full" in str(exc) and "published index is unchanged" in str(exc)
            assert open(os.path.join(folder, MANIFEST), "rb").read() == manifest_before
            assert load_index(folder).count == len(base)
            assert not [n for n in folder_names(folder) if ".tmp-" in n or n.startswith("_tmp-")]
            failed_at.append(fail_at)
        else:
            break
        finally:
            monkeypatch.setattr(index_files, "_raw_write", real_write)
        build_index(folder, more, nlp, hash_encoder, segment_size=4)   # with room again
        assert_exactly(folder, base + more)
        assert_tidy(folder)
    # 2 segments of 7 files, a staging write after each, then the manifest: 17 writes, each one failed once
    assert failed_at == list(range(1, 18))


def test_read_only_folder_gives_a_clear_message_and_still_loads(tmp_path, nlp, hash_encoder, monkeypatch,
                                                               base_index):
    folder = copy_index(base_index, tmp_path / "idx")
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
    else:  # root writes anywhere: the file system's answer is injected instead
        real_open, real_mkdir = os.open, os.mkdir
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

        def refusing_open(path, flags, *args, **kwargs):
            if str(path).startswith(folder) and flags & writes:
                raise OSError(errno.EROFS, "Read-only file system", path)
            return real_open(path, flags, *args, **kwargs)

        def refusing_mkdir(path, *args, **kwargs):
            if str(path).startswith(folder):
                raise OSError(errno.EROFS, "Read-only file system", path)
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refusing_open)
        monkeypatch.setattr(os, "mkdir", refusing_mkdir)
    try:
        with pytest.raises(MotionIndexError, match="is read-only .*can still be searched.*Make it writable"):
            build_index(folder, entries(CAPTIONS[6:9], "w"), nlp, hash_encoder)
        assert load_index(folder).count == 6
    finally:
        os.chmod(folder, 0o755)


def test_checksums_name_the_corrupted_file(tmp_path, nlp, hash_encoder, base_index):
    for fname in ("sentences.faiss", "entries.sqlite", "phrases.json"):
        folder = copy_index(base_index, tmp_path / fname)
        segment = read_manifest(folder)["segments"][0]["name"]
        path = os.path.join(folder, segment, fname)
        data = bytearray(open(path, "rb").read())
        data[len(data) // 2] ^= 0x01                       # one flipped bit, same size
        open(path, "wb").write(bytes(data))
        with pytest.raises(MotionIndexError, match=f"{segment}/{fname} does not match the manifest \\(checksum"):
            load_index(folder)


# ----------------------------------------------------------------------------------------------- orphans, old

def test_orphans_of_dead_builds_are_removed_and_reported_never_a_running_builds(tmp_path, nlp, hash_encoder,
                                                                                base_index):
    folder = copy_index(base_index, tmp_path / "idx")
    # a dead build's segment that it never listed, and a running build's segment
    assert wait(build_in_child(folder, entries(CAPTIONS[6:8], "dead"), nlp, hash_encoder,
                               fault="segment-renamed")) == FAULT_EXIT
    dead = [n for n in folder_names(folder) if n.startswith("seg-") and n not in
            {s["name"] for s in read_manifest(folder)["segments"]}]
    assert len(dead) == 1
    holding, go = str(tmp_path / "live-waits"), str(tmp_path / "go")

    def running_build():
        pause_at("segment-renamed", holding, go)
        build_index(folder, entries(CAPTIONS[8:10], "live"), nlp, hash_encoder)

    live = fork(running_build)
    try:
        wait_for(holding)
        live_segments = [n for n in folder_names(folder) if n.startswith("seg-") and n not in dead
                         and n not in {s["name"] for s in read_manifest(folder)["segments"]}]
        assert len(live_segments) == 1
        legacy_old = os.path.join(folder, "seg-000009-0badcafe")      # version-1 name, older than this build
        os.mkdir(legacy_old)
        os.utime(legacy_old, (time.time() - 3600, time.time() - 3600))
        legacy_new = os.path.join(folder, "seg-000010-0badf00d")      # version-1 name, may be a running build's
        os.mkdir(legacy_new)
        os.utime(legacy_new, (time.time() + 3600, time.time() + 3600))
        legacy_temp = os.path.join(folder, "manifest.json.tmp-0badcafe")  # a version-1 write cut short
        open(legacy_temp, "w").close()
        os.utime(legacy_temp, (time.time() - 3600, time.time() - 3600))
        report = build_index(folder, entries(CAPTIONS[10:12], "now"), nlp, hash_encoder)
        assert report.orphans_removed == sorted(dead + ["manifest.json.tmp-0badcafe", "seg-000009-0badcafe"])
        assert "Removed 3 leftovers of interrupted builds" in report.summary()
        assert os.path.isdir(os.path.join(folder, live_segments[0])) and os.path.isdir(legacy_new)
    finally:
        open(go, "w").close()
    assert wait(live) == 0
    os.rmdir(legacy_new)
    assert_exactly(folder, entries(CAPTIONS[:6], "base") + entries(CAPTIONS[8:10], "live")
                   + entries(CAPTIONS[10:12], "now"))   # the dead build's captions were never published
    assert_tidy(folder)


def test_version_1_index_and_staging_load_and_are_upgraded(tmp_path, nlp, hash_encoder, base_index):
    folder = copy_index(base_index, tmp_path / "idx")
    # an interrupted version-1 build: one segment listed in staging.json
    assert wait(build_in_child(folder, entries(CAPTIONS[6:10], "old"), nlp, hash_encoder, segment_size=2,
                               fault="staging-written:1")) == FAULT_EXIT
    staging = next(n for n in folder_names(folder) if n.startswith("staging-"))
    state = json.loads(open(os.path.join(folder, staging)).read())
    for seg in state["segments"]:
        del seg["files"]
    with open(os.path.join(folder, STAGING), "w") as fh:
        json.dump({k: v for k, v in state.items() if k != "build"}, fh)
    os.remove(os.path.join(folder, staging))
    manifest = read_manifest(folder)
    manifest["version"] = 1
    for seg in manifest["segments"]:
        del seg["files"]
    with open(os.path.join(folder, MANIFEST), "w") as fh:
        json.dump(manifest, fh)
    assert load_index(folder).count == 6                 # loads, unchecked
    report = build_index(folder, entries(CAPTIONS[6:10], "old"), nlp, hash_encoder, segment_size=2)
    assert report.resumed == 2 and report.total == 10
    upgraded = read_manifest(folder)
    assert upgraded["version"] == VERSION and all(set(s["files"]) == set(index_files_segment_files())
                                            for s in upgraded["segments"])
    assert_exactly(folder, entries(CAPTIONS[:6], "base") + entries(CAPTIONS[6:10], "old"))
    assert_tidy(folder)
    first = upgraded["segments"][0]["name"]              # the old segment is now checked too
    path = os.path.join(folder, first, "core.npy")
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(MotionIndexError, match=f"{first}/core.npy does not match"):
        load_index(folder)


def index_files_segment_files():
    from comfyui_searchpriors.retrieval.index import SEGMENT_FILES

    return SEGMENT_FILES
