"""An MLflow server that needs credentials, for tests: a loopback reverse
proxy in front of the real server (tests/integration/mlflow_server.py) that
answers 401 to any request without ``Authorization: Bearer <token>`` and
forwards the rest unchanged. It counts what it let through and what it
refused, so a test shows who logged (the job, or the control plane's relay)
and that nothing was sent without the token."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "authorization", "content-length"}


@dataclass
class AuthProxy:
    uri: str
    allowed: list[str] = field(default_factory=list)  # "METHOD path" of forwarded requests
    refused: list[str] = field(default_factory=list)


@contextmanager
def auth_proxy(upstream: str, token: str) -> Iterator[AuthProxy]:
    record = AuthProxy(uri="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet: the test says what matters
            return

        def _forward(self) -> None:
            what = f"{self.command} {self.path}"
            if self.headers.get("Authorization") != f"Bearer {token}":
                record.refused.append(what)
                body = b'{"error_code": "UNAUTHENTICATED", "message": "credentials required"}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            record.allowed.append(what)
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            request = urllib.request.Request(upstream + self.path, data=data, headers=headers, method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - loopback
                    code, body, kind = answer.status, answer.read(), answer.headers.get("Content-Type")
            except urllib.error.HTTPError as exc:
                code, body, kind = exc.code, exc.read(), exc.headers.get("Content-Type")
            self.send_response(code)
            if kind:
                self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.uri = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="mlflow-auth-proxy", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
