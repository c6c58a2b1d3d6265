"""A real OpenAI-compatible HTTP server on 127.0.0.1 that injects transport faults.

Used by the collector tests and `benchmarks/collector.py`. It serves
``POST /v1/chat/completions`` from a thread (stdlib `http.server`), answers every prompt with
a deterministic word from a fixed list, and injects faults by a repeating schedule over request
numbers, so a test knows exactly what happened:

``ok``          a normal answer
``429``         rate limit with ``Retry-After`` (seconds, from `retry_after`)
``500``         internal server error
``hang``        sleeps `hang_seconds` (past the client's timeout) then answers
``malformed``   status 200 with a body that is not JSON
``empty``       a well-formed answer whose content is the empty string
``auth``        401 whose body echoes the Authorization header (a hostile server: the key
                must still never reach our store, logs or errors)
``echo500``     500 whose body echoes the Authorization header
``echoanswer``  a normal answer whose content is the Authorization header

Requests loop only over loopback, are bounded in number by the tests, and the server stops
with `stop()` (or the context manager).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_WORDS = ("ATTITUDE", "TURKEY", "PERSONAL", "PROBLEMS", "DISCIPLINE")


class FaultServer:
    """OpenAI-compatible chat server with a fault schedule; see the module docstring."""

    def __init__(
        self,
        schedule: list[str] | tuple[str, ...] = ("ok",),
        *,
        words: tuple[str, ...] = DEFAULT_WORDS,
        retry_after: float = 0.05,
        hang_seconds: float = 1.5,
    ) -> None:
        self.schedule = list(schedule)
        self.words = words
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.requests = 0
        self.served = Counter()
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next_action(self, auth: str) -> str:
        with self._lock:
            action = self.schedule[self.requests % len(self.schedule)]
            self.requests += 1
            self.served[action] += 1
            self.auth_headers.append(auth)
        return action

    def _answer(self, body: dict) -> str:
        prompt = json.dumps(body.get("messages", []), sort_keys=True)
        digest = hashlib.sha256(prompt.encode()).digest()
        return self.words[digest[0] % len(self.words)]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                return

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                auth = self.headers.get("Authorization", "")
                action = server._next_action(auth)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                if action == "429":
                    error = {"error": {"message": "rate limited", "type": "rate_limit"}}
                    self._send(
                        429, json.dumps(error).encode(), {"Retry-After": f"{server.retry_after}"}
                    )
                    return
                if action in ("500", "echo500"):
                    detail = f"boom; you sent {auth}" if action == "echo500" else "boom"
                    error = {"error": {"message": detail, "type": "server_error"}}
                    self._send(500, json.dumps(error).encode())
                    return
                if action == "auth":
                    error = {
                        "error": {
                            "message": f"Incorrect API key provided: {auth}",
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    }
                    self._send(401, json.dumps(error).encode())
                    return
                if action == "malformed":
                    self._send(200, b'{"id": "x", "choices": [ this is not json')
                    return
                if action == "hang":
                    time.sleep(server.hang_seconds)
                content = "" if action == "empty" else server._answer(body)
                if action == "echoanswer":
                    content = auth
                reply = {
                    "id": f"chatcmpl-{server.requests}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fault-server"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
                }
                self._send(200, json.dumps(reply).encode())

        return Handler
