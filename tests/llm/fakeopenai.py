"""A scripted OpenAI Chat Completions server on 127.0.0.1 for tests and the bench.

Real HTTP (``http.server`` in a thread): the ``openai`` client talks to it for real. Each
POST /v1/chat/completions takes the next scripted reply; every request is recorded (path,
headers, JSON body) for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY = "sk-test-SECRETKEY-0123456789abcdef"  # what the tests put in OPENAI_API_KEY


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> raw text
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (timeouts)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])

    @property
    def text(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages)


def completion(content: str, prompt_tokens: int = 100, completion_tokens: int = 50,
               model: str = "fake-model", finish_reason: str = "stop") -> Reply:
    return Reply(200, {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason,
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def proposal(edits: list[tuple[str, str]], hypothesis: str = "a change lowers val_bpb",
             predicted_delta: float = -0.01, rationale: str = "because", fenced: bool = False,
             question: object = None, **kw) -> Reply:
    data = {"hypothesis": hypothesis, "predicted_delta": predicted_delta, "rationale": rationale,
            "edits": [{"search": s, "replace": r} for s, r in edits]}
    if question is not None:
        data["question"] = question
    text = json.dumps(data)
    if fenced:
        text = f"Here is my proposal.\n\n```json\n{json.dumps(data, indent=2)}\n```\n"
    return completion(text, **kw)


def error(status: int, message: str, headers: dict[str, str] | None = None,
          param: str | None = None, delay: float = 0.0) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "invalid_request_error",
                                    "param": param, "code": None}}, headers or {}, delay)


class FakeOpenAI:
    """``with FakeOpenAI() as srv: ... srv.base_url ... srv.script(reply, ...)``."""

    def __init__(self, default: Reply | Callable[[Request], Reply] | None = None,
                 reject_response_format: bool = False):
        self.replies: deque[Reply | Callable[[Request], Reply]] = deque()
        self.requests: list[Request] = []
        self.default = default
        self.reject_response_format = reject_response_format
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms stalls)

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                req = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                reply = server._next(req)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = payload.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def _next(self, req: Request) -> Reply:
        with self._lock:
            self.requests.append(req)
            if self.reject_response_format and "response_format" in req.body:
                return error(400, "Unrecognized request argument supplied: response_format",
                             param="response_format")
            if self.replies:
                item = self.replies.popleft()
            elif self.default is not None:
                item = self.default
            else:
                return error(400, "fake server: no more scripted replies")
        return item(req) if callable(item) else item

    def script(self, *replies: Reply | Callable[[Request], Reply]) -> FakeOpenAI:
        self.replies.extend(replies)
        return self

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
