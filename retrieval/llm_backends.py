"""Language-model backends of the rewriter, with no ComfyUI import.

- ``ChatCompletionsClient``: the OpenAI-compatible ``POST {base_url}/chat/completions`` that Ollama,
  llama.cpp's server, vLLM, LM Studio and OpenAI all speak, with the standard library only. Timeouts,
  retries with exponential backoff on 429 and 5xx (``Retry-After`` honoured, capped), a cancel hook
  polled while waiting, and messages that say what to fix. The API key comes from an environment
  variable whose NAME the caller gives; its value is only ever put in the Authorization header and is
  redacted from every message this module raises.
- ``load_causal_lm`` / ``generate_local``: a causal language model folder loaded with transformers'
  ``AutoModelForCausalLM`` and ``AutoTokenizer`` (local files only), its chat template used when the
  tokenizer has one, greedy at temperature 0 and seeded sampling otherwise, with a cancel/progress hook
  called at every generated token.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..errors import MissingDependencyError, SearchPriorsError

# The widget holds a variable name, never a key. Only the names on an allowlist are read, so that a workflow
# from a stranger cannot make the node send, say, AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN or HF_TOKEN to the
# base URL it names. The default list is the pack's own: OPENAI_API_KEY (the widget's default) and
# SEARCHPRIORS_<anything>_API_KEY; the user adds names in the environment variable ALLOWED_KEY_VARS_ENV.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
DEFAULT_KEY_VARS = ("OPENAI_API_KEY",)
PACK_KEY_VAR = re.compile(r"^SEARCHPRIORS_[A-Z0-9_]+_API_KEY$")
ALLOWED_KEY_VARS_ENV = "SEARCHPRIORS_ALLOWED_KEY_VARS"
_KEY_LIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+|[A-Za-z0-9_\-]{32,})")
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER_S = 30.0


class LLMBackendError(SearchPriorsError):
    """The language model could not give an answer; the message names the cause and the fix."""


def allowed_key_vars() -> tuple[set[str], list[str]]:
    """(names added by the user in SEARCHPRIORS_ALLOWED_KEY_VARS, entries of it that are not names)."""
    raw = os.environ.get(ALLOWED_KEY_VARS_ENV, "")
    names, bad = set(), []
    for entry in re.split(r"[\s,;]+", raw):
        if entry:
            (names.add(entry) if _ENV_NAME.match(entry) else bad.append(entry))
    return names, bad


def key_var_allowed(name: str) -> bool:
    return name in DEFAULT_KEY_VARS or bool(PACK_KEY_VAR.match(name)) or name in allowed_key_vars()[0]


def api_key_from_env(env_name: str) -> tuple[Optional[str], str]:
    """(the key or None, a line for the report that names the variable and never shows the value).

    The value is stripped of surrounding whitespace (a CRLF ``.env`` file leaves a CR at the end) and refused,
    by the variable's name, when what is left holds anything but printable ASCII: such a value cannot go into
    an HTTP header, and the error the HTTP library would raise quotes the header."""
    name = (env_name or "").strip()
    if not name:
        return None, "API key: none (api_key_env is empty)"
    if not _ENV_NAME.match(name):
        # Never echo the value: a user who pasted the key itself into the widget must not see it in logs.
        raise SearchPriorsError(
            "api_key_env must be the NAME of an environment variable (letters, digits, '_'), e.g. "
            "OPENAI_API_KEY; what it holds does not look like a name. If you typed the key itself, remove it "
            "from the workflow (it is saved with it) and set it as an environment variable before starting "
            "ComfyUI.")
    if not key_var_allowed(name):
        raise SearchPriorsError(
            f"api_key_env '{name}' is not on this machine's list of variables a workflow may read: "
            f"OPENAI_API_KEY, SEARCHPRIORS_<NAME>_API_KEY, and those you list in the environment variable "
            f"{ALLOWED_KEY_VARS_ENV} (comma-separated). The list keeps a shared workflow from sending another "
            f"secret of this machine to the server it names. Put the key in OPENAI_API_KEY or "
            f"SEARCHPRIORS_LLM_API_KEY, or add '{name}' to {ALLOWED_KEY_VARS_ENV} before starting ComfyUI.")
    value = (os.environ.get(name) or "").strip()
    if not value:
        return None, f"API key: none (environment variable {name} is not set)"
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in value):
        raise SearchPriorsError(
            f"The environment variable {name} holds a control character, a space or a non-ASCII character "
            f"inside the key (for example a line break or a CR from a Windows .env file), which cannot be sent "
            f"in an HTTP header. Set {name} to the key alone and restart ComfyUI.")
    return value, f"API key: from environment variable {name}"


def redact(text: str, secret: Optional[str]) -> str:
    """``text`` with the secret and anything shaped like a key or bearer token replaced by '***'."""
    out = str(text)
    if secret:
        out = out.replace(secret, "***")
    return _KEY_LIKE.sub("***", out)


def chat_completions_url(base_url: str) -> str:
    raw = (base_url or "").strip()
    parsed = urllib.parse.urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SearchPriorsError(f"base_url '{raw}' is not an http(s) URL; for Ollama use "
                                f"http://127.0.0.1:11434/v1, for OpenAI https://api.openai.com/v1.")
    if parsed.username or parsed.password:
        raise SearchPriorsError("base_url must not hold a user name or password (it is saved in the workflow); "
                                "put the key in an environment variable and name it in api_key_env.")
    path = parsed.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urllib.parse.urlunparse(parsed._replace(path=path))


@dataclass
class ChatAnswer:
    text: str
    model: str
    attempts: int
    seconds: float
    finish_reason: Optional[str] = None


def _no_cancel() -> None:
    return None


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would send the Authorization header to wherever the server points
    (another port, another host). The 3xx answer is reported instead, with the address to use."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_RefuseRedirects)


class _Cancelled(Exception):
    """Carries the exception of ``check_cancel`` (ComfyUI's interrupt) past the redacting wrapper unchanged."""

    def __init__(self, original: BaseException):
        super().__init__("cancelled")
        self.original = original


class ChatCompletionsClient:
    """One OpenAI-compatible endpoint. ``check_cancel`` is called while waiting; it raises to cancel."""

    def __init__(self, base_url: str, model: str, api_key: Optional[str] = None, timeout_s: float = 60.0,
                 retries: int = 2, backoff_s: float = 1.0, check_cancel: Callable[[], None] = _no_cancel,
                 poll_s: float = 0.05):
        self.url = chat_completions_url(base_url)
        self.model = (model or "").strip()
        if not self.model:
            raise SearchPriorsError("The model name is empty: give the name the server knows, e.g. "
                                    "'llama3.2' for Ollama or 'gpt-4o-mini' for OpenAI.")
        self._api_key = api_key
        self.timeout_s = float(timeout_s)
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise SearchPriorsError(f"timeout_s must be a positive number of seconds, got {timeout_s}: set it to, "
                                    f"say, 120.")
        self.retries = max(0, int(retries))
        self.backoff_s = float(backoff_s)
        self.check_cancel = check_cancel
        self.poll_s = poll_s

    def __repr__(self) -> str:  # never the key
        return f"ChatCompletionsClient(url={self.url!r}, model={self.model!r})"

    def _fail(self, message: str) -> LLMBackendError:
        return LLMBackendError(redact(message, self._api_key))

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self._poll_cancel()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(self.poll_s, left))

    def _send(self, body: bytes) -> tuple[int, dict, bytes]:
        """One POST in a worker thread, so that Cancel is honoured while the server thinks."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        box: dict = {}

        def work():
            try:
                with _OPENER.open(request, timeout=self.timeout_s) as response:
                    box["result"] = (response.status, dict(response.headers), response.read())
            except urllib.error.HTTPError as exc:
                try:
                    payload = exc.read()
                except Exception:
                    payload = b""
                box["result"] = (exc.code, dict(exc.headers or {}), payload)
            except BaseException as exc:  # handed to the waiting thread
                box["error"] = exc

        worker = threading.Thread(target=work, name="searchpriors-llm-request", daemon=True)
        worker.start()
        hard_deadline = time.monotonic() + self.timeout_s + 5.0
        while worker.is_alive():
            self._poll_cancel()  # the abandoned request ends by its own timeout
            if time.monotonic() > hard_deadline:
                raise TimeoutError("timed out")
            worker.join(self.poll_s)
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _poll_cancel(self) -> None:
        try:
            self.check_cancel()
        except BaseException as exc:
            raise _Cancelled(exc) from None

    def complete(self, messages: Sequence[dict], temperature: float = 0.0, seed: Optional[int] = None,
                 max_tokens: Optional[int] = None) -> ChatAnswer:
        """The model's answer. Every failure, whatever raised it (the HTTP library, the socket, the JSON
        decoder, this module), leaves as an LLMBackendError whose message is redacted of the key; only
        Cancel's own exception passes through as it is."""
        try:
            return self._complete(messages, temperature, seed, max_tokens)
        except _Cancelled as cancelled:
            raise cancelled.original from None
        except SearchPriorsError as exc:  # this module's own messages, redacted once more
            raise LLMBackendError(redact(str(exc), self._api_key)) from None
        except Exception as exc:  # noqa: BLE001 (anything: its text may quote the request's headers)
            raise self._fail(f"The request to {self.url} (model '{self.model}') failed: {type(exc).__name__}: "
                             f"{exc}. Check base_url and the server.") from None

    def _complete(self, messages, temperature, seed, max_tokens) -> ChatAnswer:
        if not math.isfinite(float(temperature)):
            raise SearchPriorsError(f"temperature must be a number from 0 to 2, got {temperature}.")
        payload = {"model": self.model, "messages": list(messages), "temperature": float(temperature),
                   "stream": False}
        if seed is not None:
            payload["seed"] = int(seed)
        if max_tokens:
            payload["max_tokens"] = int(max_tokens)
        body = json.dumps(payload).encode("utf-8")
        started = time.monotonic()
        where = f"{self.url} (model '{self.model}')"
        for attempt in range(1, self.retries + 2):
            self._poll_cancel()
            try:
                status, headers, raw = self._send(body)
            except (TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError) or "timed out" in str(reason):
                    raise self._fail(f"No answer from {where} within {self.timeout_s:g} s: the server is busy or "
                                     f"the model is still loading. Raise timeout_s, or check the server.") from None
                if attempt <= self.retries:
                    self._sleep(self.backoff_s * 2 ** (attempt - 1))
                    continue
                raise self._fail(f"Could not connect to {self.url}: {reason}. Is the server running, and is "
                                 f"base_url right (Ollama: http://127.0.0.1:11434/v1)?") from None
            if status in RETRY_STATUSES and attempt <= self.retries:
                self._sleep(self._retry_delay(headers, attempt))
                continue
            if status != 200:
                raise self._fail(self._status_message(status, raw, where, attempt))
            text, finish, model = self._parse(raw, where)
            return ChatAnswer(text=text, model=model or self.model, attempts=attempt,
                              seconds=time.monotonic() - started, finish_reason=finish)
        raise self._fail(f"{where} gave no answer after {self.retries + 1} attempts.")  # pragma: no cover

    def _retry_delay(self, headers: dict, attempt: int) -> float:
        lowered = {str(k).lower(): v for k, v in headers.items()}
        try:
            after = float(lowered.get("retry-after", ""))
        except ValueError:
            after = None
        delay = after if after is not None and after >= 0 else self.backoff_s * 2 ** (attempt - 1)
        return min(delay, MAX_RETRY_AFTER_S)

    def _status_message(self, status: int, raw: bytes, where: str, attempts: int) -> str:
        detail = _server_message(raw)
        detail = f" The server said: {detail}" if detail else ""
        if 300 <= status < 400:
            return (f"{where} answered with a redirect (HTTP {status}), which is not followed: the API key would "
                    f"go with it to another address. Set base_url to the address the server points to.{detail}")
        if status in (401, 403):
            return (f"{where} refused the request (HTTP {status}): the API key is missing or wrong. Set the "
                    f"environment variable named in api_key_env before starting ComfyUI (the widget holds the "
                    f"variable's name, not the key).{detail}")
        if status == 404:
            return (f"{where} answered HTTP 404: the model name is not known to the server, or base_url is "
                    f"wrong (it must point at the OpenAI-compatible API, e.g. http://127.0.0.1:11434/v1 for "
                    f"Ollama; pull the model first: ollama pull <model>).{detail}")
        if status == 429:
            return (f"{where} is rate limiting (HTTP 429) and still was after {attempts} attempts; wait, or "
                    f"raise retries.{detail}")
        if status >= 500:
            return f"{where} failed with HTTP {status} after {attempts} attempt(s): a server-side error.{detail}"
        return f"{where} answered HTTP {status}.{detail}"

    def _parse(self, raw: bytes, where: str) -> tuple[str, Optional[str], Optional[str]]:
        try:
            data = json.loads(raw.decode("utf-8"))
            choice = data["choices"][0]
            message = choice.get("message") or {}
            content = message.get("content")
            if content is None and isinstance(choice.get("text"), str):
                content = choice["text"]  # a completions-style answer
            if isinstance(content, list):  # content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                raise TypeError("no text content")
            return content, choice.get("finish_reason"), data.get("model")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            excerpt = raw[:200].decode("utf-8", "replace")
            raise self._fail(f"{where} did not answer with chat-completions JSON ({type(exc).__name__}: {exc}); "
                             f"the answer began with: {excerpt!r}. Is base_url the OpenAI-compatible endpoint "
                             f"(ending in /v1)?") from None


def _server_message(raw: bytes) -> str:
    try:
        data = json.loads(raw.decode("utf-8"))
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else error
        text = str(message)
    except (ValueError, UnicodeDecodeError, AttributeError):
        text = raw[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:200]


# --------------------------------------------------------------------------------------- local transformers

def is_causal_lm_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        os.path.isfile(os.path.join(path, name)) for name in
        ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json"))


def list_causal_lm_folders(roots: Sequence[str]) -> list[str]:
    """Sub-folders (one level, and one more for publisher/name) of ``roots`` holding a model and tokenizer."""
    found = set()
    for root in roots:
        if not os.path.isdir(root):
            continue
        for entry in os.scandir(root):
            if not entry.is_dir():
                continue
            if is_causal_lm_folder(entry.path):
                found.add(entry.name)
            else:
                for inner in os.scandir(entry.path):
                    if inner.is_dir() and is_causal_lm_folder(inner.path):
                        found.add(f"{entry.name}/{inner.name}")
    return sorted(found)


def load_causal_lm(folder: str, dtype=None):
    """(model, tokenizer) from a local folder, in eval mode on the CPU; never downloads."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("transformers", "The local rewriter backend") from exc
    if not is_causal_lm_folder(folder):
        raise SearchPriorsError(f"{folder} holds no causal language model with its tokenizer (config.json and "
                                f"tokenizer files are needed); put a transformers model folder under models/LLM/.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype or torch.float32)
    except Exception as exc:
        raise SearchPriorsError(f"Could not load the language model in {folder}: {type(exc).__name__}: {exc}. "
                                f"It must be a transformers causal LM folder (config.json, weights, "
                                f"tokenizer).") from exc
    model.eval()
    return model, tokenizer


def prompt_ids(tokenizer, messages: Sequence[dict]):
    """Token ids of the chat: the tokenizer's chat template when it has one, else the turns as plain text."""
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
        return encoded["input_ids"], True
    text = "\n\n".join(m["content"] for m in messages) + "\n"
    return tokenizer(text, return_tensors="pt")["input_ids"], False


def generate_local(model, tokenizer, messages: Sequence[dict], temperature: float = 0.0, seed: int = 0,
                   max_new_tokens: int = 96, device=None,
                   on_token: Optional[Callable[[int, int], None]] = None) -> tuple[str, dict]:
    """The model's answer to ``messages`` (new tokens only, special tokens skipped) and facts for the report.

    ``on_token(done, total)`` runs after every generated token: it moves a progress bar and may raise to
    cancel. Sampling (temperature > 0) is seeded with ``seed`` without touching the global RNG state.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    ids, templated = prompt_ids(tokenizer, messages)
    device = device or next(model.parameters()).device
    ids = ids.to(device)
    total = int(max_new_tokens)

    class _Hook(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            if on_token is not None:
                on_token(int(input_ids.shape[1] - ids.shape[1]), total)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = dict(max_new_tokens=total, stopping_criteria=StoppingCriteriaList([_Hook()]),
                  attention_mask=torch.ones_like(ids), pad_token_id=pad)
    if float(temperature) > 0:
        kwargs.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    devices = [device] if getattr(device, "type", str(device)) == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode():
        torch.manual_seed(int(seed))
        out = model.generate(ids, **kwargs)
    new = out[0, ids.shape[1]:]
    text = tokenizer.decode(new, skip_special_tokens=True)
    return text, {"chat_template": templated, "prompt_tokens": int(ids.shape[1]), "new_tokens": int(new.shape[0])}
