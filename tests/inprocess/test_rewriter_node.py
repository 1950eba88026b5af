"""ReferenceRewriter called in-process with ComfyUI's real modules: backends, cache, check, Cancel, secrets."""

from __future__ import annotations

import json
import os

import pytest

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "sk-inproc-SECRET-9876543210fedcba"
REFS = "a man rides a horse along the beach\na boy rides his bike down a hill\na bear rides a tricycle"
PROMPT = "A panda rides a bicycle past the Eiffel Tower"


def _load(name):
    return harness.load_test_helper(name)


fake = _load("fake_chat_server")


@pytest.fixture()
def chat(monkeypatch):
    monkeypatch.setenv("SEARCHPRIORS_TEST_API_KEY", SECRET)
    with fake.FakeChatServer({"content": 'Rewritten: "A cheerful panda rides a red bicycle past the Eiffel Tower."'}) as srv:
        yield srv


def inputs(**over):
    base = dict(prompt=PROMPT, reference_captions=REFS, k=5, backend="openai_compatible", base_url="", model="tiny",
                api_key_env="SEARCHPRIORS_TEST_API_KEY", local_model="(none)", max_words=20, seed=0,
                temperature=0.0, on_failed_check="warn", spacy_model="en_core_web_sm")
    base.update(over)
    return base


def run(node, **kw):
    out = node.execute(**inputs(**kw))
    return out.args, out.ui


def test_schema(pack_nodes):
    schema = pack_nodes.ReferenceRewriter.define_schema()
    assert schema.node_id == "SearchPriors_ReferenceRewriter" and schema.category == "SearchPriors/pos"
    assert schema.display_name == "Reference-Guided Rewriter (POS SPR)"
    assert [i.id for i in schema.inputs][:13] == [
        "prompt", "reference_captions", "k", "backend", "base_url", "model", "api_key_env", "local_model",
        "max_words", "seed", "temperature", "on_failed_check", "spacy_model"]
    assert all(i.optional for i in schema.inputs[13:])
    assert [o.id for o in schema.outputs] == ["rewritten", "instruction", "report"]
    defaults = {i.id: getattr(i, "default", None) for i in schema.inputs}
    assert defaults["k"] == 5 and defaults["max_words"] == 20 and defaults["temperature"] == 0.0


def test_validate_and_fingerprint_take_missing_inputs(pack_nodes):
    node = pack_nodes.ReferenceRewriter
    assert node.validate_inputs() is True
    assert "unknown field" in node.validate_inputs(custom_template="{prompt} {oops}")
    message = node.validate_inputs(api_key_env=SECRET)
    assert SECRET not in message and "NAME of an environment variable" in message
    assert node.fingerprint_inputs() == "same"
    fp = node.fingerprint_inputs(cache="refresh")
    assert fp != fp  # NaN: always re-run


def test_http_backend_cache_and_no_secret_in_outputs(pack_nodes, chat, comfy):
    node = pack_nodes.ReferenceRewriter
    rewrite_cache = pack_nodes.rewriter_nodes.rewrite_cache()
    rewrite_cache.clear_memory()
    (rewritten, instruction, report), ui = run(node, base_url=chat.base_url, seed=11)
    assert rewritten == "A cheerful panda rides a red bicycle past the Eiffel Tower."
    assert instruction.startswith("Let me give you 3 examples: a man rides a horse along the beach, ")
    assert chat.requests[0]["body"]["messages"] == [{"role": "user", "content": instruction}]
    assert chat.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert "check: passed" in report and "SEARCHPRIORS_TEST_API_KEY" in report
    assert "removed the prefix 'Rewritten:'" in report
    cache_file = comfy / "user" / "searchpriors" / "rewrite_cache.json"
    for text in (rewritten, instruction, report, json.dumps(ui.as_dict()), cache_file.read_text()):
        assert SECRET not in text

    run(node, base_url=chat.base_url, seed=11)                       # same inputs: from the cache
    assert len(chat.requests) == 1
    rewrite_cache.clear_memory()                                      # a restart: from the file
    (_, _, report2), _ = run(node, base_url=chat.base_url, seed=11)
    assert len(chat.requests) == 1 and "from the cache" in report2
    run(node, base_url=chat.base_url, seed=12)                       # another seed: asks again
    assert len(chat.requests) == 2
    run(node, base_url=chat.base_url, seed=12, cache="refresh")      # refresh: asks again
    assert len(chat.requests) == 3
    run(node, base_url=chat.base_url, seed=13, cache="memory")
    rewrite_cache.clear_memory()
    run(node, base_url=chat.base_url, seed=13, cache="memory")       # memory-only was never on disk
    assert len(chat.requests) == 5


def test_failed_check_warns_or_falls_back(pack_nodes, chat):
    node = pack_nodes.ReferenceRewriter
    chat.default = {"content": "A bear pedals a bike near a tower"}
    (rewritten, _, report), _ = run(node, base_url=chat.base_url, seed=21, cache="memory")
    assert rewritten == "A bear pedals a bike near a tower"
    assert "WARNING: the motion 'ride' of [panda -ride-> bicycle] is missing" in report
    assert "WARNING: the actor 'panda'" in report and "despite the warnings" in report
    (rewritten, _, report), _ = run(node, base_url=chat.base_url, seed=21, cache="memory",
                                    on_failed_check="use_original_prompt")
    assert rewritten == PROMPT and "the original prompt" in report


def test_manual_backend_and_retrieval_input(pack_nodes, comfy):
    node = pack_nodes.ReferenceRewriter

    class FakeRetrieval:
        mode = "pos"

        def reference_captions(self):
            return ["a panda eats bamboo", "a man rides a bike"]

    (rewritten, instruction, report), _ = run(
        node, backend="manual", retrieval=FakeRetrieval(), k=5,
        manual_rewrite="  Rewritten: A fluffy panda rides a bicycle past the Eiffel Tower at dusk.  ")
    assert rewritten == "A fluffy panda rides a bicycle past the Eiffel Tower at dusk."
    assert "Let me give you 2 examples: a panda eats bamboo, a man rides a bike, rewrite" in instruction
    assert "from the connected retrieval (mode 'pos'" in report and "check: passed" in report
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    # Eq. 6's references are the top-k by caption similarity: a search_t2v retrieval is refused, naming the fix
    search_t2v = FakeRetrieval()
    search_t2v.mode = "search_t2v"
    with pytest.raises(SearchPriorsError, match="mode 'search_t2v'.*Set that Motion Retriever's mode to 'pos'"):
        run(node, backend="manual", retrieval=search_t2v, manual_rewrite="A panda rides a bicycle")
    # ... while its captions, passed as text on purpose, are taken
    (_, instruction, report), _ = run(node, backend="manual", reference_captions="a man rides a bike",
                                      manual_rewrite="A panda rides a bicycle")
    assert "a man rides a bike" in instruction and "from reference_captions" in report

    with pytest.raises(SearchPriorsError, match="type it into manual_rewrite"):
        run(node, backend="manual", manual_rewrite="")
    (rewritten, _, report), _ = run(node, backend="manual", manual_rewrite="Rewritten:")
    assert rewritten == PROMPT and "the rewrite is empty" in report


def test_http_errors_reach_the_node_without_the_key(pack_nodes, chat):
    from comfyui_searchpriors.retrieval.llm_backends import LLMBackendError

    chat.default = {"status": 401, "raw": json.dumps({"error": {"message": f"bad key {SECRET}"}}).encode()}
    with pytest.raises(LLMBackendError) as info:
        run(pack_nodes.ReferenceRewriter, base_url=chat.base_url, seed=31, cache="memory")
    assert "HTTP 401" in str(info.value) and SECRET not in str(info.value)


def test_cancel_while_waiting_for_the_server(pack_nodes, chat):
    import threading

    import comfy.model_management as mm

    chat.default = {"content": "late", "delay": 3.0}
    timer = threading.Timer(0.3, mm.interrupt_current_processing, args=(True,))
    timer.start()
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(pack_nodes.ReferenceRewriter, base_url=chat.base_url, seed=41, cache="memory")
    finally:
        timer.cancel()
        mm.interrupt_current_processing(False)


def test_local_backend_through_the_memory_manager(pack_nodes, comfy):
    import comfy.model_management as mm

    backends = _load("unit/test_llm_backends")
    backends.make_tiny_lm(str(comfy / "models" / "LLM" / "tiny-llama"))
    node = pack_nodes.ReferenceRewriter
    schema = node.define_schema()
    local = next(i for i in schema.inputs if i.id == "local_model")
    assert "tiny-llama" in local.options
    (rewritten, _, report), _ = run(node, backend="local_transformers", local_model="tiny-llama",
                                    max_new_tokens=8, cache="memory")
    assert "local_transformers (tiny-llama on cpu; chat template used; 8 tokens" in report
    assert isinstance(rewritten, str) and rewritten.strip()   # random weights: the rewrite or the fallback
    patchers = [lm.model for lm in mm.current_loaded_models]
    assert any(getattr(p.model, "lm", None) is not None for p in patchers)   # ComfyUI manages it
    assert node.fingerprint_inputs(backend="local_transformers", local_model="tiny-llama") != "same"
    (_, _, report), _ = run(node, backend="local_transformers", local_model="tiny-llama", max_new_tokens=8,
                            cache="memory", seed=1, unload_after=True)
    assert "unloaded after" in report
    assert not any(getattr(lm.model.model, "lm", None) is not None for lm in mm.current_loaded_models)
    assert pack_nodes.comfy_internals.local_lm._loaded == {} and not pack_nodes.comfy_internals.local_lm.is_loaded()
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError, match="No language model folder 'absent'"):
        run(node, backend="local_transformers", local_model="absent", cache="memory")
    with pytest.raises(SearchPriorsError, match="Pick a language model folder"):
        run(node, backend="local_transformers", local_model="../etc", cache="memory")


def test_manual_rewrite_above_the_cap_is_refused(pack_nodes):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError, match="manual_rewrite is too long: 200,000 characters"):
        pack_nodes.ReferenceRewriter.execute(**inputs(backend="manual", manual_rewrite="x" * 200_000))
    with pytest.raises(SearchPriorsError, match=r"prompt \(the text to rewrite\) is too long"):
        pack_nodes.ReferenceRewriter.execute(**inputs(backend="manual", manual_rewrite="A dog runs.",
                                                      prompt="a dog runs " * 300))


def test_a_runaway_answer_is_not_parsed_and_the_prompt_is_used(pack_nodes, chat):
    pack_nodes.rewriter_nodes.rewrite_cache().clear_memory()
    chat.script.append({"content": "A panda rides a bicycle " * 8_000})
    (rewritten, _, report), _ = run(pack_nodes.ReferenceRewriter, base_url=chat.base_url, seed=41,
                                    cache="memory")
    assert rewritten == PROMPT
    assert "was not checked" in report and "result: the original prompt" in report


@pytest.mark.parametrize("name, value", [("timeout_s", float("nan")), ("temperature", float("nan")),
                                         ("temperature", float("inf"))])
def test_nan_settings_never_reach_the_client(pack_nodes, chat, name, value):
    from comfyui_searchpriors.retrieval.errors import SearchPriorsError

    with pytest.raises(SearchPriorsError, match=f"{name} is {value}: NaN and infinity are not allowed"):
        run(pack_nodes.ReferenceRewriter, base_url=chat.base_url, cache="refresh", **{name: value})
    assert chat.requests == []
