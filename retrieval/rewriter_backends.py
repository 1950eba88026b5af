"""The rewriter's backend seam: one small protocol, a registry, and the one entry the node calls.

A backend is an object with a ``name`` (its entry in the node's ``backend`` dropdown), the ``widgets`` of the
node it reads (for the docs and the reader), ``cached`` (whether its answers go through the rewrite cache),
and three methods:

- ``identity(settings) -> str``: what, besides the chat and the sampling settings, decides its answer (the
  endpoint and model name, a model folder and the state of its files); part of the cache key, never a secret;
- ``progress_total(settings) -> int``: steps of the progress bar (0: no bar);
- ``answer(messages, settings, cancel, progress) -> BackendAnswer``: the model's raw answer. ``cancel()``
  raises to stop (ComfyUI's interrupt); ``progress(done, total)`` moves the bar.

``register_backend`` puts one in ``BACKENDS``; ``answer`` (the node's entry) looks it up, consults the cache
and calls it. Adding a backend is one module that defines such an object and calls ``register_backend``, plus
its name in the node's dropdown (``nodes/rewriter_nodes.py``, ``BACKENDS``) and an import of the module there.

Built in here, with no ComfyUI import: ``openai_compatible`` (``llm_backends.ChatCompletionsClient``) and
``manual`` (the user's own rewrite, passed through the same check). The local transformers backend needs
ComfyUI's ``models/LLM`` folder and memory manager, so it is defined and registered in
``nodes/rewriter_nodes.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, runtime_checkable

from . import llm_backends as llm
from ..errors import SearchPriorsError
from .rewriter import RewriteCache, cache_key, check_text_length

CACHE_MODES = ("memory_and_disk", "memory", "refresh")


@dataclass(frozen=True)
class RewriteSettings:
    """What a backend may read: the sampling settings every backend shares, and the node's other widgets."""

    seed: int = 0
    temperature: float = 0.0
    max_new_tokens: int = 96
    widgets: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.widgets.get(name)
        return default if value is None else value


@dataclass
class BackendAnswer:
    text: str     # the raw answer (cleaned and checked by the caller)
    model: str    # the model's name as the report and the cache record it
    how: str      # the report's 'backend:' line


@runtime_checkable
class RewriterBackend(Protocol):
    name: str
    widgets: tuple[str, ...]
    cached: bool

    def identity(self, settings: RewriteSettings) -> str: ...

    def progress_total(self, settings: RewriteSettings) -> int: ...

    def answer(self, messages: Sequence[dict], settings: RewriteSettings, cancel: Callable[[], None],
               progress: Callable[[int, int], None]) -> BackendAnswer: ...


BACKENDS: dict[str, RewriterBackend] = {}


def register_backend(backend: RewriterBackend) -> RewriterBackend:
    """Adds ``backend`` under its name (a later registration of the same name replaces it); returns it."""
    name = getattr(backend, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise SearchPriorsError(f"A rewriter backend needs a non-empty 'name', got {name!r}.")
    missing = [m for m in ("identity", "progress_total", "answer") if not callable(getattr(backend, m, None))]
    if missing:
        raise SearchPriorsError(f"The rewriter backend '{name}' lacks {', '.join(missing)} (see "
                                f"retrieval/rewriter_backends.py, RewriterBackend).")
    BACKENDS[name] = backend
    return backend


def get_backend(name: str) -> RewriterBackend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise SearchPriorsError(f"Unknown backend '{name}': choose one of {', '.join(BACKENDS)}.") from None


def _no_cancel() -> None:
    return None


def _no_progress(total: int) -> Callable[[int, int], None]:
    return lambda done, of: None


def answer(name: str, messages: Sequence[dict], settings: RewriteSettings, store: Optional[RewriteCache] = None,
           cache_mode: str = "memory_and_disk", cancel: Callable[[], None] = _no_cancel,
           start_progress: Callable[[int], Callable[[int, int], None]] = _no_progress) -> tuple[str, str]:
    """(raw answer, the report's 'backend:' line) of the backend ``name``; what the node calls.

    A cached backend's answer is looked up in ``store`` by ``cache_key(name, identity, messages, seed,
    temperature, max_new_tokens)`` first (``cache_mode`` 'refresh' asks again; 'memory' keeps off the file)
    and stored after. ``start_progress(total)`` makes the progress bar (called only when total > 0)."""
    if cache_mode not in CACHE_MODES:
        raise SearchPriorsError(f"Unknown cache mode '{cache_mode}': choose one of {', '.join(CACHE_MODES)}.")
    backend = get_backend(name)
    key = None
    use_disk = cache_mode == "memory_and_disk"
    if backend.cached and store is not None:
        key = cache_key(name, backend.identity(settings), messages, settings.seed, settings.temperature,
                        settings.max_new_tokens)
        if cache_mode != "refresh":
            hit = store.get(key, use_disk=use_disk)
            if hit is not None:
                return hit["answer"], f"{name} ({hit.get('model', '')}), answer from the cache"
    total = int(backend.progress_total(settings))
    progress = start_progress(total) if total > 0 else (lambda done, of: None)
    result = backend.answer(messages, settings, cancel, progress)
    if key is not None:
        store.put(key, {"answer": result.text, "model": result.model, "backend": name, "at": time.time()},
                  use_disk=use_disk)
    return result.text, result.how


# ------------------------------------------------------------------------------------------ built-in backends

class OpenAICompatibleBackend:
    """Ollama, llama.cpp's server, vLLM, LM Studio, OpenAI: ``POST {base_url}/chat/completions``."""

    name = "openai_compatible"
    widgets = ("base_url", "model", "api_key_env", "timeout_s", "retries")
    cached = True

    def identity(self, settings: RewriteSettings) -> str:
        return f"{llm.chat_completions_url(settings.get('base_url', ''))}|{(settings.get('model') or '').strip()}"

    def progress_total(self, settings: RewriteSettings) -> int:
        return 1

    def answer(self, messages, settings, cancel, progress) -> BackendAnswer:
        api_key, key_line = llm.api_key_from_env(settings.get("api_key_env", ""))
        client = llm.ChatCompletionsClient(settings.get("base_url", ""), settings.get("model", ""), api_key=api_key,
                                           timeout_s=settings.get("timeout_s", 120.0),
                                           retries=settings.get("retries", 2), check_cancel=cancel)
        reply = client.complete(messages, temperature=settings.temperature, seed=settings.seed,
                                max_tokens=settings.max_new_tokens)
        progress(1, 1)
        how = (f"openai_compatible ({reply.model} at {client.url}; {key_line}; {reply.attempts} attempt(s), "
               f"{reply.seconds:.2f} s)")
        return BackendAnswer(reply.text, reply.model, how)


class ManualBackend:
    """The user's own rewrite (``manual_rewrite``), passed through the same cleaning and check; never cached."""

    name = "manual"
    widgets = ("manual_rewrite",)
    cached = False

    def identity(self, settings: RewriteSettings) -> str:
        return "manual"

    def progress_total(self, settings: RewriteSettings) -> int:
        return 0

    def answer(self, messages, settings, cancel, progress) -> BackendAnswer:
        text = settings.get("manual_rewrite", "") or ""
        if not text.strip():
            raise SearchPriorsError("Backend 'manual' passes your own rewrite through: type it into "
                                    "manual_rewrite (the 'instruction' output is the text to give a chat "
                                    "model if you want the paper's rewrite).")
        check_text_length(text, "manual_rewrite", "Type the rewrite of the prompt alone: one sentence.")
        return BackendAnswer(text, "", "manual: your rewrite, checked like a model's")


register_backend(OpenAICompatibleBackend())
register_backend(ManualBackend())
