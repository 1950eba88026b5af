"""ReferenceRewriter node: POS's Semantic-Preserving Rewriter (Sec. 4.3, Eq. 7) with three backends.

The ComfyUI-bound parts live here: the ``models/LLM`` folder, the local language model handed to
ComfyUI's memory manager (a ModelPatcher, fully loaded, so VRAM is freed for the video model when it needs
it; or unloaded right after with ``unload_after``), Cancel and the progress bar. The template, the answer
cleaning, the check and the cache key are ``retrieval.rewriter``; the HTTP client and the generate loop are
``retrieval.llm_backends``.

Secrets: ``api_key_env`` holds the NAME of an environment variable. The key is read at run time, sent in
the Authorization header only, and never enters an output, the report, an error, the cache or a file.
"""

from __future__ import annotations

import os
import threading
import time

import folder_paths
from comfy_api.v0_0_2 import io, ui

from ..retrieval import llm_backends as llm
from ..retrieval import rewriter_backends as backends
from ..retrieval.errors import SearchPriorsError
from ..retrieval.models import DEFAULT_SPACY_MODEL, load_spacy
from ..retrieval.rewriter import (MAX_REFERENCE_FIELDS, PAPER_TEMPLATE, RewriteCache, build_instruction,
                                  chat_messages, check_rewrite, clean_answer, eq6_references, reference_lines,
                                  validate_template)
from .comfy_internals import glue
from .comfy_internals import local_lm
from .sockets import RetrievalType

CATEGORY = "SearchPriors/pos"
LLM_FOLDER = "LLM"   # the folder name other LLM node packs use (models/LLM/<model folder>)
# the dropdown: every name is a backend registered in retrieval.rewriter_backends (this module registers
# local_transformers below; a new backend is one module calling register_backend, imported here, plus its name)
BACKENDS = ("openai_compatible", "local_transformers", "manual")
ON_FAILED_CHECK = ("warn", "use_original_prompt")
CACHE_MODES = backends.CACHE_MODES
NO_LOCAL_MODEL = "(no model folder in models/LLM)"
CACHE_FILE = os.path.join("searchpriors", "rewrite_cache.json")

_cache_lock = threading.Lock()
_caches: dict[str, RewriteCache] = {}


def register_llm_folder() -> None:
    if LLM_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(LLM_FOLDER, os.path.join(folder_paths.models_dir, LLM_FOLDER),
                                           is_default=True)


def llm_roots() -> list[str]:
    register_llm_folder()
    return list(folder_paths.get_folder_paths(LLM_FOLDER))


def local_model_choices() -> list[str]:
    return llm.list_causal_lm_folders(llm_roots()) or [NO_LOCAL_MODEL]


def local_model_folder(name: str) -> str:
    name = (name or "").strip().replace("\\", "/")
    parts = name.split("/")
    if not name or name == NO_LOCAL_MODEL or len(parts) > 2 or any(p in ("", ".", "..") for p in parts):
        raise SearchPriorsError(f"Pick a language model folder under models/{LLM_FOLDER}/ for the local backend "
                                f"(found: {', '.join(local_model_choices())}); put a transformers model folder "
                                f"(config.json, weights, tokenizer) there and refresh.")
    for root in llm_roots():
        candidate = os.path.join(root, *parts)
        if llm.is_causal_lm_folder(candidate):
            return candidate
    raise SearchPriorsError(f"No language model folder '{name}' under models/{LLM_FOLDER}/ (found: "
                            f"{', '.join(local_model_choices())}).")


def rewrite_cache() -> RewriteCache:
    """One cache per ComfyUI user folder; its file is <user>/searchpriors/rewrite_cache.json."""
    path = os.path.join(folder_paths.get_user_directory(), CACHE_FILE)
    with _cache_lock:
        if path not in _caches:
            _caches[path] = RewriteCache(path)
        return _caches[path]


def _check_cancel() -> None:
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def _string(name: str, default: str, tooltip: str, multiline: bool = False, optional: bool = False):
    return io.String.Input(name, default=default, multiline=multiline, optional=optional, tooltip=tooltip)


class ReferenceRewriter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        local_choices = local_model_choices()
        return io.Schema(
            node_id="SearchPriors_ReferenceRewriter",
            display_name="Reference-Guided Rewriter (POS SPR)",
            category=CATEGORY,
            description="Rewrites the prompt with a language model guided by the top-k reference captions "
                        "(POS Eq. 7, the paper's instruction template), then checks that every motion, actor "
                        "and recipient of the prompt survived and the word limit holds. Answers are cached by "
                        "(backend, model, instruction, seed, temperature): re-queuing never calls the model "
                        "again. The API key is read from the environment variable NAMED in api_key_env.",
            is_output_node=True,
            inputs=[
                _string("prompt", "A panda rides a bicycle past the Eiffel Tower", "The prompt to rewrite",
                        multiline=True),
                _string("reference_captions", "", "Reference captions, one per line (connect MotionRetriever's "
                        "reference_captions in 'pos' mode); ignored when 'retrieval' is connected",
                        multiline=True),
                io.Int.Input("k", default=5, min=1, max=50, tooltip="How many references go into the "
                             "instruction (the paper: 5)"),
                io.Combo.Input("backend", options=list(BACKENDS), default="openai_compatible",
                               tooltip="openai_compatible: Ollama, llama.cpp server, vLLM, LM Studio, OpenAI. "
                                       "local_transformers: a folder in models/LLM. manual: your own rewrite "
                                       "(manual_rewrite) passes through the same check."),
                _string("base_url", "http://127.0.0.1:11434/v1", "OpenAI-compatible API root (Ollama: "
                        "http://127.0.0.1:11434/v1)"),
                _string("model", "llama3.2", "Model name as the server knows it"),
                _string("api_key_env", "OPENAI_API_KEY", "NAME of the environment variable that holds the API "
                        "key (never the key itself: widgets are saved in workflows and image metadata). "
                        "Unset = no key sent."),
                io.Combo.Input("local_model", options=local_choices, default=local_choices[0],
                               tooltip=f"transformers causal LM folder under models/{LLM_FOLDER}/"),
                io.Int.Input("max_words", default=20, min=1, max=500, tooltip="Word limit of the rewrite "
                             "(the paper: 20)"),
                io.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1, control_after_generate=False,
                             tooltip="Same seed, same inputs: the cached answer is reused"),
                io.Float.Input("temperature", default=0.0, min=0.0, max=2.0, step=0.05,
                               tooltip="0 = greedy (deterministic on the local backend)"),
                io.Combo.Input("on_failed_check", options=list(ON_FAILED_CHECK), default="warn",
                               tooltip="When the rewrite is empty, too long or lost a motion/actor/recipient: "
                                       "warn in the report and use it anyway, or use the original prompt"),
                io.Combo.Input("spacy_model", options=glue.spacy_choices(),
                               default=DEFAULT_SPACY_MODEL if DEFAULT_SPACY_MODEL in glue.spacy_choices()
                               else glue.spacy_choices()[0],
                               tooltip="spaCy pipeline used to atomize prompt and rewrite for the check"),
                RetrievalType.Input("retrieval", optional=True, tooltip="MotionRetriever's retrieval in mode "
                                    "'pos': its captions, ranked by caption similarity, are POS Eq. 6's top-k "
                                    "references (a 'search_t2v' retrieval is refused with the fix)"),
                _string("manual_rewrite", "", "The rewrite itself, for backend 'manual'", multiline=True,
                        optional=True),
                _string("custom_template", "", "Empty = the paper's template. Fields: {prompt}, {references}, "
                        "{references_numbered}, {k}, {max_words}, {ref1}...; write a literal brace as {{ or }}",
                        multiline=True, optional=True),
                _string("system_prompt", "", "Optional system message before the instruction", multiline=True,
                        optional=True),
                io.Float.Input("timeout_s", default=120.0, min=1.0, max=3600.0, optional=True,
                               tooltip="HTTP backend: seconds to wait for one answer"),
                io.Int.Input("retries", default=2, min=0, max=10, optional=True,
                             tooltip="HTTP backend: retries on 429 and 5xx, with exponential backoff"),
                io.Int.Input("max_new_tokens", default=96, min=8, max=2048, optional=True,
                             tooltip="Longest answer the model may give, in tokens"),
                io.Combo.Input("cache", options=list(CACHE_MODES), default="memory_and_disk", optional=True,
                               tooltip="memory_and_disk: reuse answers across restarts (user/searchpriors/"
                                       "rewrite_cache.json); memory: this session only; refresh: ask the model "
                                       "again and store the new answer"),
                io.Boolean.Input("unload_after", default=False, optional=True,
                                 tooltip="Local backend: free the language model's memory right after "
                                         "rewriting (otherwise ComfyUI frees it when another model needs it)"),
            ],
            outputs=[
                io.String.Output("rewritten", display_name="rewritten"),
                io.String.Output("instruction", display_name="instruction",
                                 tooltip="The exact instruction sent to the language model"),
                io.String.Output("report", display_name="report"),
            ],
        )

    @classmethod
    def validate_inputs(cls, custom_template=None, local_model=None, api_key_env=None):
        # local_model is listed so that a workflow naming a folder this machine lacks still loads; the
        # local backend reports it on the node when it runs.
        if isinstance(custom_template, str) and custom_template.strip():
            try:
                validate_template(custom_template, MAX_REFERENCE_FIELDS)
            except SearchPriorsError as exc:
                return str(exc)
        if isinstance(api_key_env, str) and api_key_env.strip():
            try:
                llm.api_key_from_env(api_key_env)
            except SearchPriorsError as exc:
                return str(exc)
        return True

    @classmethod
    def fingerprint_inputs(cls, cache=None, backend=None, local_model=None, **kwargs):
        if cache == "refresh":
            return float("nan")  # ask the model again on every queue
        if backend == "local_transformers":
            try:
                return local_lm.folder_stamp(local_model_folder(local_model))
            except Exception:
                return float("nan")
        return "same"

    @classmethod
    def execute(cls, prompt: str, reference_captions: str, k: int, backend: str, base_url: str, model: str,
                api_key_env: str, local_model: str, max_words: int, seed: int, temperature: float,
                on_failed_check: str, spacy_model: str, retrieval=None, manual_rewrite: str = "",
                custom_template: str = "", system_prompt: str = "", timeout_s: float = 120.0,
                retries: int = 2, max_new_tokens: int = 96, cache: str = "memory_and_disk",
                unload_after: bool = False) -> io.NodeOutput:
        started = time.monotonic()
        if backend not in BACKENDS:
            raise SearchPriorsError(f"Unknown backend '{backend}': choose one of {', '.join(BACKENDS)}.")
        if cache not in CACHE_MODES:
            raise SearchPriorsError(f"Unknown cache mode '{cache}': choose one of {', '.join(CACHE_MODES)}.")
        if retrieval is not None:
            given, source = eq6_references(retrieval), "the connected retrieval (mode 'pos': POS Eq. 6's top-k)"
        else:
            given, source = reference_lines(reference_captions), "reference_captions"
        instruction, used = build_instruction(prompt, given, k, max_words, custom_template)
        messages = chat_messages(instruction, system_prompt or "")
        lines = [f"references: {len(used)} of {len(given)} from {source} (k = {k})"]
        if not (custom_template or "").strip():
            lines.append("template: the paper's (POS Sec. 5.2)")
        else:
            lines.append("template: custom")

        settings = backends.RewriteSettings(
            seed=seed, temperature=temperature, max_new_tokens=max_new_tokens,
            widgets=dict(base_url=base_url, model=model, api_key_env=api_key_env, local_model=local_model,
                         timeout_s=timeout_s, retries=retries, unload_after=unload_after,
                         manual_rewrite=manual_rewrite))
        answer, how = backends.answer(backend, messages, settings, store=rewrite_cache(), cache_mode=cache,
                                      cancel=_check_cancel, start_progress=_progress_bar)
        lines.insert(0, f"backend: {how}")

        rewrite, notes = clean_answer(answer)
        if notes:
            lines.append("answer cleaned: " + "; ".join(notes))
        nlp = load_spacy(spacy_model, glue.model_folders(glue.SPACY_FOLDER))
        check = check_rewrite(nlp, prompt, rewrite, max_words)
        lines.append(f"words: {check.words} / {max_words}")
        lines.append("prompt units: " + ("; ".join(check.prompt_units) or "(none)"))
        lines.append("rewrite units: " + ("; ".join(check.rewrite_units) or "(none)"))
        if check.passed:
            lines.append("check: passed (every motion, actor and recipient kept; within the word limit)")
            result = rewrite
        else:
            lines.extend(f"WARNING: {p}" for p in check.problems())
            if on_failed_check == "use_original_prompt" or check.empty or check.unchecked:
                result = " ".join(prompt.split())
                lines.append("result: the original prompt (the rewrite failed the check"
                             + (" or could not be checked)" if check.unchecked else ")"))
            else:
                result = rewrite
                lines.append("result: the rewrite, despite the warnings (on_failed_check = warn)")
        lines.append(f"time: {time.monotonic() - started:.2f} s")
        report = "\n".join(lines)
        return io.NodeOutput(result, instruction, report, ui=ui.PreviewText(f"{result}\n\n{report}"))


def _progress_bar(total: int):
    import comfy.utils

    return comfy.utils.ProgressBar(int(total)).update_absolute


class LocalTransformersBackend:
    """A transformers causal LM folder under models/LLM, run inside ComfyUI's memory manager
    (nodes/comfy_internals/local_lm.py); registered in retrieval.rewriter_backends' registry."""

    name = "local_transformers"
    widgets = ("local_model", "unload_after")
    cached = True

    def identity(self, settings: backends.RewriteSettings) -> str:
        folder = local_model_folder(settings.get("local_model", ""))
        return f"{folder}|{local_lm.folder_stamp(folder)}"

    def progress_total(self, settings: backends.RewriteSettings) -> int:
        return int(settings.max_new_tokens)

    def answer(self, messages, settings, cancel, progress) -> backends.BackendAnswer:
        name = settings.get("local_model", "")
        folder = local_model_folder(name)
        unload_after = bool(settings.get("unload_after", False))

        def on_token(done: int, total: int) -> None:
            cancel()
            progress(min(done, total), total)

        t0 = time.monotonic()
        try:
            text, facts = local_lm.generate(folder, messages, settings.temperature, settings.seed,
                                            settings.max_new_tokens, on_token)
        finally:
            if unload_after:
                local_lm.unload_local(folder)
        how = (f"local_transformers ({name} on {facts['device']}; chat template "
               f"{'used' if facts['chat_template'] else 'absent: plain text'}; {facts['new_tokens']} tokens in "
               f"{time.monotonic() - t0:.2f} s{'; unloaded after' if unload_after else ''})")
        return backends.BackendAnswer(text, name, how)


backends.register_backend(LocalTransformersBackend())


__all__ = ["ReferenceRewriter", "PAPER_TEMPLATE"]
