"""The operator's probe endpoints, on one port (``--liveness-port``):

- ``GET /healthz`` (liveness): 200 while the operator's event loop (kopf's)
  answers within ``LOOP_TIMEOUT_S``, else 503. It never depends on the API
  server or a webhook certificate: a pod that cannot reach them is not
  ready, and restarting it would not help.
- ``GET /readyz`` (readiness): 200 when every registered readiness check
  passes, else 503; the JSON body names each check and, for a failing one,
  why (``{"ready": false, "checks": {"watch": "cannot list ..."}}``).

The HTTP server runs in a thread of its own (the standard library's, as
prometheus_client serves /metrics); the checks run in kopf's loop, handed
over with ``run_coroutine_threadsafe``. Not an aiohttp server in kopf's
loop: kopf cancels and waits for every task created in its loop when it
stops, and a server's connection tasks there kept a failed operator from
exiting (seen with the watch forbidden by RBAC).
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from trainpipe_operator.controller.readiness import Readiness

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
LOOP_TIMEOUT_S = 4.0  # below the chart's probe timeout (5 s)


async def _answer() -> bool:
    return True


class HealthServer:
    """``/healthz`` and ``/readyz`` for ``readiness``, whose checks run in ``loop``."""

    def __init__(self, readiness: Readiness, loop: asyncio.AbstractEventLoop, port: int,
                 host: str = "0.0.0.0") -> None:
        self.readiness = readiness
        self.loop = loop
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler())
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve /healthz and /readyz on {host}:{port}: {exc.strerror}") from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-server", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def liveness(self) -> tuple[int, dict[str, Any]]:
        try:
            asyncio.run_coroutine_threadsafe(_answer(), self.loop).result(timeout=LOOP_TIMEOUT_S)
        except Exception as exc:  # TimeoutError, or the loop is closed
            return 503, {"alive": False, "reason": f"the operator's event loop did not answer within "
                                                   f"{LOOP_TIMEOUT_S:g} s ({type(exc).__name__})"}
        return 200, {"alive": True}

    def readiness_report(self) -> tuple[int, dict[str, Any]]:
        future = asyncio.run_coroutine_threadsafe(self.readiness.evaluate(), self.loop)
        try:
            report = future.result(timeout=LOOP_TIMEOUT_S)
        except Exception as exc:
            future.cancel()
            return 503, {"ready": False, "checks": {"probe": f"the readiness checks did not finish within "
                                                             f"{LOOP_TIMEOUT_S:g} s ({type(exc).__name__})"}}
        return (200 if report.ready else 503), report.as_json()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                path = self.path.split("?", 1)[0]
                if path == LIVENESS_PATH:
                    status, body = server.liveness()
                elif path == READINESS_PATH:
                    status, body = server.readiness_report()
                else:
                    status, body = 404, {"error": f"no such path; try {LIVENESS_PATH} or {READINESS_PATH}"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                return  # a probe every few seconds is not worth a log line

        return Handler
