"""The rewriter's backend seam: a backend registered from one module is used through the node's entry."""

from __future__ import annotations

import pytest

from comfyui_searchpriors.retrieval import rewriter_backends as rb
from comfyui_searchpriors.retrieval.errors import SearchPriorsError
from comfyui_searchpriors.retrieval.rewriter import RewriteCache, chat_messages

MESSAGES = chat_messages("Rewrite: a panda rides a bicycle")


class EchoBackend:
    """A whole backend in a few lines: what a new backend module defines."""

    name = "echo_test"
    widgets = ("model",)
    cached = True

    def __init__(self):
        self.calls = []

    def identity(self, settings):
        return f"echo|{settings.get('model', '')}"

    def progress_total(self, settings):
        return 3

    def answer(self, messages, settings, cancel, progress):
        cancel()
        self.calls.append((messages[-1]["content"], settings.seed, settings.temperature))
        for step in (1, 2, 3):
            progress(step, 3)
        return rb.BackendAnswer(f"echo {len(self.calls)}: {messages[-1]['content']}", settings.get("model"),
                                f"echo_test ({settings.get('model')})")


@pytest.fixture()
def echo():
    backend = rb.register_backend(EchoBackend())
    yield backend
    rb.BACKENDS.pop(backend.name, None)


def test_a_registered_backend_answers_through_the_entry_with_cache_cancel_and_progress(echo, tmp_path):
    store = RewriteCache(str(tmp_path / "cache.json"))
    settings = rb.RewriteSettings(seed=7, temperature=0.5, widgets={"model": "m1"})
    ticks, cancels, bars = [], [], []

    def start(total):
        bars.append(total)
        return lambda done, of: ticks.append((done, of))

    text, how = rb.answer("echo_test", MESSAGES, settings, store=store, cancel=lambda: cancels.append(1),
                          start_progress=start)
    assert text == "echo 1: Rewrite: a panda rides a bicycle" and how == "echo_test (m1)"
    assert echo.calls == [("Rewrite: a panda rides a bicycle", 7, 0.5)]
    assert bars == [3] and ticks == [(1, 3), (2, 3), (3, 3)] and cancels == [1]

    # the same inputs: the cache answers (in memory, and from the file for a fresh cache object)
    assert rb.answer("echo_test", MESSAGES, settings, store=store) == (text, "echo_test (m1), answer from the cache")
    assert rb.answer("echo_test", MESSAGES, settings, store=RewriteCache(store.path))[0] == text
    assert len(echo.calls) == 1
    # another identity, seed or a refresh asks the backend again
    rb.answer("echo_test", MESSAGES, rb.RewriteSettings(seed=7, temperature=0.5, widgets={"model": "m2"}), store=store)
    rb.answer("echo_test", MESSAGES, rb.RewriteSettings(seed=8, temperature=0.5, widgets={"model": "m1"}), store=store)
    refreshed, _ = rb.answer("echo_test", MESSAGES, settings, store=store, cache_mode="refresh")
    assert len(echo.calls) == 4 and refreshed.startswith("echo 4:")
    assert rb.answer("echo_test", MESSAGES, settings, store=store)[0] == refreshed  # refresh stored the new one


def test_the_node_dropdown_names_registered_backends_and_unknown_names_are_refused(echo):
    assert {"openai_compatible", "manual"} <= set(rb.BACKENDS)  # local_transformers: registered by the node
    assert all(isinstance(b, rb.RewriterBackend) for b in rb.BACKENDS.values())
    with pytest.raises(SearchPriorsError, match="Unknown backend 'nope'.*echo_test"):
        rb.answer("nope", MESSAGES, rb.RewriteSettings())
    with pytest.raises(SearchPriorsError, match="Unknown cache mode"):
        rb.answer("echo_test", MESSAGES, rb.RewriteSettings(), cache_mode="sometimes")
    with pytest.raises(SearchPriorsError, match="lacks answer"):
        rb.register_backend(type("Half", (), {"name": "half", "identity": lambda s, x: "", "progress_total":
                                              lambda s, x: 0})())
    assert "half" not in rb.BACKENDS


def test_manual_backend_is_never_cached_and_refuses_an_empty_rewrite(tmp_path):
    store = RewriteCache(str(tmp_path / "cache.json"))
    bars = []
    settings = rb.RewriteSettings(widgets={"manual_rewrite": "A panda pedals a bicycle."})
    text, how = rb.answer("manual", MESSAGES, settings, store=store, start_progress=bars.append)
    assert text == "A panda pedals a bicycle." and how.startswith("manual:") and bars == []
    assert not (tmp_path / "cache.json").exists()
    with pytest.raises(SearchPriorsError, match="type it into manual_rewrite"):
        rb.answer("manual", MESSAGES, rb.RewriteSettings(widgets={"manual_rewrite": "  "}), store=store)


def test_openai_backend_through_the_entry(tmp_path, monkeypatch):
    from .conftest import load_test_module

    fake = load_test_module("fake_chat_server")
    monkeypatch.setenv("SEARCHPRIORS_TEST_API_KEY", "sk-unit-SECRET-0123456789abcdef")
    with fake.FakeChatServer({"content": "A panda rides a red bicycle."}) as srv:
        settings = rb.RewriteSettings(seed=3, widgets={"base_url": srv.base_url, "model": "tiny",
                                                       "api_key_env": "SEARCHPRIORS_TEST_API_KEY", "retries": 0})
        store = RewriteCache(None)
        text, how = rb.answer("openai_compatible", MESSAGES, settings, store=store)
        again = rb.answer("openai_compatible", MESSAGES, settings, store=store)
        assert text == "A panda rides a red bicycle." and "SEARCHPRIORS_TEST_API_KEY" in how
        assert "sk-unit-SECRET" not in how and again[1].endswith("answer from the cache")
        assert len(srv.requests) == 1 and srv.requests[0]["body"]["seed"] == 3
