"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for the rewriter's tests and benchmark.

Standard library only, so the e2e tests and the benchmark can load it by path. Each request is answered by
the next scripted reply (``script``), else by ``default`` (a callable of the request body, or a reply).
A reply is a dict: ``status`` (200), ``content`` (the assistant's text), ``raw`` (bytes sent as they
are), ``delay`` (seconds before answering), ``headers``. Every request is recorded (path, headers, body).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Union

Reply = dict


def chat_json(content: str, model: str = "fake-model") -> bytes:
    return json.dumps({"id": "chatcmpl-test", "object": "chat.completion", "model": model,
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}]}).encode()


class FakeChatServer:
    def __init__(self, default: Union[Reply, Callable[[dict], Reply], None] = None):
        self.script: list[Reply] = []
        self.default = default if default is not None else {"content": "A panda rides a bicycle."}
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    reply = server.script.pop(0) if server.script else None
                if reply is None:
                    reply = server.default(body) if callable(server.default) else server.default
                if reply.get("delay"):
                    time.sleep(reply["delay"])
                payload = reply["raw"] if "raw" in reply else chat_json(reply.get("content", ""),
                                                                        body.get("model", "fake-model"))
                try:
                    self.send_response(int(reply.get("status", 200)))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in (reply.get("headers") or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeChatServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-chat-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
