"""The rewriter's backends: the OpenAI-compatible client against a chat server on 127.0.0.1, and the
local transformers backend on a tiny randomly initialised Llama with a tokenizer built in code."""

from __future__ import annotations

import json
import os
import time

import pytest

from comfyui_searchpriors.retrieval import llm_backends as llm
from comfyui_searchpriors.retrieval.errors import SearchPriorsError

import searchpriors_comfy_server as harness  # scripts/comfy_server.py, loaded by tests/conftest.py

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "sk-test-SECRET-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "Rewrite: a dog runs"}]


fake = harness.load_test_helper("fake_chat_server")


@pytest.fixture()
def server():
    with fake.FakeChatServer() as srv:
        yield srv


def client(srv, **kw):
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("backoff_s", 0.01)
    return llm.ChatCompletionsClient(srv.base_url, "tiny-model", **kw)


def test_normal_answer_and_request_shape(server):
    server.script.append({"content": "A happy dog runs."})
    answer = client(server, api_key=SECRET).complete(MESSAGES, temperature=0.0, seed=7, max_tokens=50)
    assert answer.text == "A happy dog runs." and answer.attempts == 1 and answer.finish_reason == "stop"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert request["body"] == {"model": "tiny-model", "messages": MESSAGES, "temperature": 0.0, "stream": False,
                               "seed": 7, "max_tokens": 50}


def test_no_key_no_authorization_header(server):
    client(server).complete(MESSAGES)
    assert "Authorization" not in server.requests[0]["headers"]


def test_slow_answer_past_the_timeout(server):
    server.script.append({"content": "late", "delay": 2.0})
    t0 = time.monotonic()
    with pytest.raises(llm.LLMBackendError, match=r"within 0.5 s.*Raise timeout_s"):
        client(server, timeout_s=0.5, retries=3).complete(MESSAGES)
    assert time.monotonic() - t0 < 1.8          # no retry of a timeout: the queue is never held long
    assert len(server.requests) == 1


def test_401_names_the_fix_and_never_the_key(server):
    server.script.append({"status": 401, "raw": (b'{"error": {"message": "Incorrect API key provided: '
                                                  + SECRET.encode() + b'"}}')})
    with pytest.raises(llm.LLMBackendError) as info:
        client(server, api_key=SECRET).complete(MESSAGES)
    message = str(info.value)
    assert "HTTP 401" in message and "api_key_env" in message
    assert SECRET not in message and "SECRET-0123" not in message and SECRET not in repr(info.value)
    assert len(server.requests) == 1                 # 401 is not retried


def test_429_then_success_with_retry_after(server):
    server.script += [{"status": 429, "raw": b'{"error": "slow down"}', "headers": {"Retry-After": "0.2"}},
                      {"content": "A dog runs fast."}]
    t0 = time.monotonic()
    answer = client(server, retries=2).complete(MESSAGES)
    assert answer.text == "A dog runs fast." and answer.attempts == 2
    assert time.monotonic() - t0 >= 0.2             # waited as the server asked
    assert len(server.requests) == 2


def test_500_retried_then_reported(server):
    server.default = {"status": 500, "raw": b'{"error": {"message": "boom"}}'}
    with pytest.raises(llm.LLMBackendError, match=r"HTTP 500 after 3 attempt\(s\).*boom"):
        client(server, retries=2).complete(MESSAGES)
    assert len(server.requests) == 3


def test_404_says_model_or_url(server):
    server.script.append({"status": 404, "raw": b'{"error": {"message": "model \\"x\\" not found"}}'})
    with pytest.raises(llm.LLMBackendError, match="HTTP 404: the model name is not known"):
        client(server).complete(MESSAGES)


@pytest.mark.parametrize("raw", [b"<html>oops</html>", b'{"choices": []}', b'{"choices": [{"message": {}}]}'])
def test_malformed_json(server, raw):
    server.script.append({"raw": raw})
    with pytest.raises(llm.LLMBackendError, match="did not answer with chat-completions JSON"):
        client(server).complete(MESSAGES)


def test_answer_with_quotes_and_prefix_is_returned_raw(server):
    from comfyui_searchpriors.retrieval.rewriter import clean_answer

    server.script.append({"content": 'Rewritten: "A small dog runs on the beach."\n\nI kept the meaning.'})
    raw = client(server).complete(MESSAGES).text
    assert raw.startswith("Rewritten:")
    assert clean_answer(raw)[0] == "A small dog runs on the beach."


def test_cancel_while_waiting(server):
    server.script.append({"content": "late", "delay": 3.0})
    calls = {"n": 0}

    class Cancelled(Exception):
        pass

    def check():
        calls["n"] += 1
        if calls["n"] > 3:
            raise Cancelled()

    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        client(server, timeout_s=10.0, check_cancel=check).complete(MESSAGES)
    assert time.monotonic() - t0 < 1.0


def test_connection_refused_is_clear():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = llm.ChatCompletionsClient(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(llm.LLMBackendError, match="Could not connect.*Is the server running"):
        c.complete(MESSAGES)


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:11434/v1", "http://127.0.0.1:11434/v1/chat/completions"),
    ("https://api.example.test/v1/", "https://api.example.test/v1/chat/completions"),
    ("http://h:1/v1/chat/completions", "http://h:1/v1/chat/completions"),
])
def test_url(url, expected):
    assert llm.chat_completions_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://h/v1", "127.0.0.1:11434", "http://user:pw@h/v1"])
def test_bad_url(url):
    with pytest.raises(SearchPriorsError):
        llm.chat_completions_url(url)


def test_api_key_from_env(monkeypatch):
    monkeypatch.delenv(llm.ALLOWED_KEY_VARS_ENV, raising=False)
    monkeypatch.setenv("SEARCHPRIORS_MY_API_KEY", SECRET)
    key, line = llm.api_key_from_env("SEARCHPRIORS_MY_API_KEY")
    assert key == SECRET and SECRET not in line and "SEARCHPRIORS_MY_API_KEY" in line
    monkeypatch.delenv("SEARCHPRIORS_MY_API_KEY")
    assert llm.api_key_from_env("SEARCHPRIORS_MY_API_KEY")[0] is None
    assert llm.api_key_from_env("")[0] is None
    with pytest.raises(SearchPriorsError) as pasted:
        llm.api_key_from_env(SECRET)               # the key itself typed into the widget
    assert SECRET not in str(pasted.value) and "NAME of an environment variable" in str(pasted.value)
    with pytest.raises(SearchPriorsError, match="not on this machine's list"):
        llm.api_key_from_env("PATH")


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "HF_TOKEN", "MY_LLM_API_KEY",
                                  "SEARCHPRIORS_ALLOWED_KEY_VARS", "openai_api_key"])
def test_a_workflow_cannot_name_another_secret(monkeypatch, name):
    monkeypatch.delenv(llm.ALLOWED_KEY_VARS_ENV, raising=False)
    monkeypatch.setenv(name, SECRET)
    with pytest.raises(SearchPriorsError) as refused:
        llm.api_key_from_env(name)
    message = str(refused.value)
    assert SECRET not in message and name in message and llm.ALLOWED_KEY_VARS_ENV in message


def test_the_user_extends_the_allowlist(monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", SECRET)
    monkeypatch.setenv(llm.ALLOWED_KEY_VARS_ENV, " OTHER_KEY , GROQ_API_KEY;not-a-name")
    assert llm.api_key_from_env("GROQ_API_KEY")[0] == SECRET
    assert llm.allowed_key_vars() == ({"OTHER_KEY", "GROQ_API_KEY"}, ["not-a-name"])
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert llm.api_key_from_env("OPENAI_API_KEY")[0] == SECRET      # the default stays allowed


@pytest.mark.parametrize("value", [SECRET + "\r", SECRET + "\r\n", f"  {SECRET}\n", f"\t{SECRET} "])
def test_surrounding_whitespace_is_stripped(monkeypatch, server, value):
    monkeypatch.setenv("SEARCHPRIORS_TEST_API_KEY", value)
    key, _ = llm.api_key_from_env("SEARCHPRIORS_TEST_API_KEY")
    assert key == SECRET
    client(server, api_key=key).complete(MESSAGES)
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("value", [SECRET[:10] + "\r" + SECRET[10:], SECRET[:10] + "\n" + SECRET[10:],
                                   SECRET[:10] + "\x1b" + SECRET[10:], SECRET[:10] + " " + SECRET[10:],
                                   SECRET + "\u00e9", SECRET[:10] + "\x7f" + SECRET[10:]])
def test_a_control_character_inside_the_key_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv("SEARCHPRIORS_TEST_API_KEY", value)
    with pytest.raises(SearchPriorsError) as refused:
        llm.api_key_from_env("SEARCHPRIORS_TEST_API_KEY")
    message = str(refused.value)
    assert "SEARCHPRIORS_TEST_API_KEY" in message and SECRET[:10] not in message and SECRET[10:] not in message


def _raises(exc):
    def open_(*args, **kwargs):
        raise exc
    return open_


@pytest.mark.parametrize("exc", [
    ValueError(f"Invalid header value b'Bearer {SECRET}\\r'"),   # what http.client raises for a CR in a header
    OSError(f"[Errno 99] cannot send Bearer {SECRET}"),
    TimeoutError(f"timed out sending {SECRET}"),
    ConnectionResetError(f"reset {SECRET}"),
    UnicodeEncodeError("latin-1", SECRET, 3, 4, "ordinal not in range(256)"),
    RuntimeError(f"anything else {SECRET}"),
    KeyError(SECRET),
])
def test_every_exception_type_is_redacted(monkeypatch, exc):
    monkeypatch.setattr(llm._OPENER, "open", _raises(exc))
    c = llm.ChatCompletionsClient("http://127.0.0.1:9/v1", "m", api_key=SECRET, timeout_s=5.0, retries=0,
                                  backoff_s=0.0)
    with pytest.raises(llm.LLMBackendError) as failed:
        c.complete(MESSAGES)
    assert SECRET not in str(failed.value) and SECRET[3:] not in str(failed.value)
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


def test_json_errors_are_redacted(server):
    server.script.append({"raw": ("{not json, echoing Authorization: Bearer " + SECRET).encode()})
    server.script.append({"raw": json.dumps({"choices": [], "echo": SECRET}).encode()})
    for _ in range(2):
        with pytest.raises(llm.LLMBackendError) as failed:
            client(server, api_key=SECRET, retries=0).complete(MESSAGES)
        assert SECRET not in str(failed.value) and "chat-completions JSON" in str(failed.value)


def test_server_error_text_is_redacted(server):
    server.script.append({"status": 400, "raw": json.dumps({"error": {"message": f"bad key {SECRET}"}}).encode()})
    with pytest.raises(llm.LLMBackendError) as failed:
        client(server, api_key=SECRET, retries=0).complete(MESSAGES)
    assert SECRET not in str(failed.value) and "HTTP 400" in str(failed.value)


def test_cancel_passes_through_unchanged(monkeypatch):
    class Interrupted(Exception):
        pass

    def cancel():
        raise Interrupted()

    c = llm.ChatCompletionsClient("http://127.0.0.1:9/v1", "m", api_key=SECRET, check_cancel=cancel)
    with pytest.raises(Interrupted):
        c.complete(MESSAGES)


def test_a_redirect_is_not_followed_with_the_key():
    with fake.FakeChatServer() as first, fake.FakeChatServer() as second:
        first.script.append({"status": 302, "headers": {"Location": second.base_url + "/chat/completions"}})
        first.script.append({"status": 307, "headers": {"Location": second.base_url + "/chat/completions"}})
        for code in (302, 307):
            with pytest.raises(llm.LLMBackendError) as failed:
                client(first, api_key=SECRET, retries=0).complete(MESSAGES)
            assert f"HTTP {code}" in str(failed.value) and "redirect" in str(failed.value)
        assert second.requests == [] and len(first.requests) == 2


@pytest.mark.parametrize("field, value", [("timeout_s", float("nan")), ("timeout_s", float("inf")),
                                          ("timeout_s", 0.0)])
def test_timeout_must_be_a_finite_positive_number(field, value):
    with pytest.raises(SearchPriorsError, match="timeout_s"):
        llm.ChatCompletionsClient("http://127.0.0.1:9/v1", "m", **{field: value})


def test_nan_temperature_is_refused_before_sending(server):
    with pytest.raises(SearchPriorsError, match="temperature"):
        client(server).complete(MESSAGES, temperature=float("nan"))
    assert server.requests == []


# ------------------------------------------------------------------------------------ local transformers

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "user", "assistant", "system", ":", "rewrite", "a", "dog", "runs",
         "happy", "the", "on", "beach", "cat", "jumps", "be", "brief", "fast", "."]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}assistant : {% endif %}")


def make_tiny_lm(folder, chat_template=True):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    vocab = {w: i for i, w in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>")
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=2, eos_token_id=3, pad_token_id=0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    return make_tiny_lm(str(tmp_path_factory.mktemp("LLM") / "tiny-llama"))


def test_local_folder_listing(tiny_lm, tmp_path):
    root = os.path.dirname(tiny_lm)
    assert "tiny-llama" in llm.list_causal_lm_folders([root, str(tmp_path / "absent")])
    assert not llm.is_causal_lm_folder(str(tmp_path))
    with pytest.raises(SearchPriorsError, match="holds no causal language model"):
        llm.load_causal_lm(str(tmp_path))


def test_local_greedy_matches_a_plain_generate_call_with_the_chat_template(tiny_lm):
    import torch

    model, tokenizer = llm.load_causal_lm(tiny_lm)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "rewrite a dog runs"}]
    seen = []
    text, facts = llm.generate_local(model, tokenizer, messages, temperature=0.0, max_new_tokens=6,
                                     on_token=lambda done, total: seen.append((done, total)))
    assert facts["chat_template"] is True
    # the literal reference: the template's text, tokenized, then generate() without the pack
    ids = tokenizer("system : be brief user : rewrite a dog runs assistant : ", return_tensors="pt")["input_ids"]
    assert facts["prompt_tokens"] == ids.shape[1]
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             pad_token_id=0)
    assert text == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert seen and seen[-1][1] == 6 and all(d <= t for d, t in seen)


def test_local_sampling_is_seeded_and_leaves_global_rng_alone(tiny_lm):
    import torch

    model, tokenizer = llm.load_causal_lm(tiny_lm)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = llm.generate_local(model, tokenizer, MESSAGES, temperature=1.5, seed=5, max_new_tokens=12)[0]
    b = llm.generate_local(model, tokenizer, MESSAGES, temperature=1.5, seed=5, max_new_tokens=12)[0]
    others = {llm.generate_local(model, tokenizer, MESSAGES, temperature=1.5, seed=s, max_new_tokens=12)[0]
              for s in range(6, 12)}
    assert a == b and len(others | {a}) > 1
    assert torch.equal(torch.random.get_rng_state(), state)


def test_local_without_chat_template_uses_plain_text(tmp_path):
    folder = make_tiny_lm(str(tmp_path / "plain"), chat_template=False)
    model, tokenizer = llm.load_causal_lm(folder)
    _, facts = llm.generate_local(model, tokenizer, MESSAGES, max_new_tokens=2)
    assert facts["chat_template"] is False
    assert facts["prompt_tokens"] == len(tokenizer("Rewrite: a dog runs\n")["input_ids"])


def test_local_cancel_from_the_token_hook(tiny_lm):
    model, tokenizer = llm.load_causal_lm(tiny_lm)

    class Cancelled(Exception):
        pass

    def hook(done, total):
        if done >= 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        llm.generate_local(model, tokenizer, MESSAGES, max_new_tokens=50, on_token=hook)
