"""The operator's readiness: the check registry, its report, the checks the
operator registers, and /healthz and /readyz served over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from trainpipe_operator.controller.health_server import HealthServer
from trainpipe_operator.controller.readiness import Readiness, ReadinessReport
from trainpipe_operator.controller.readiness_checks import kopf_started, list_failure

# ------------------------------------------------------------ the registry

def test_ready_only_when_every_check_passes() -> None:
    readiness = Readiness(cache_seconds=0)
    state = {"webhook": "the certificate is not loaded yet"}
    readiness.register("watch", lambda: None)
    readiness.register("admission", lambda: state["webhook"])
    report = asyncio.run(readiness.evaluate())
    assert not report.ready
    assert report.not_ready == {"admission": "the certificate is not loaded yet"}
    assert report.as_json() == {"ready": False, "checks": {"watch": "ok",
                                                           "admission": "the certificate is not loaded yet"}}
    state["webhook"] = None
    assert asyncio.run(readiness.evaluate()).ready


def test_nothing_registered_is_not_ready() -> None:
    report = asyncio.run(Readiness().evaluate())
    assert not report.ready and "no readiness check" in json.dumps(report.as_json())
    assert not ReadinessReport({}).ready


def test_async_checks_and_a_raising_check_count_as_results() -> None:
    async def serving() -> str | None:
        return None

    def broken() -> str | None:
        raise RuntimeError("socket closed")

    readiness = Readiness(cache_seconds=0)
    readiness.register("admission", serving)
    readiness.register("broken", broken)
    report = asyncio.run(readiness.evaluate())
    assert report.checks == {"admission": None, "broken": "the check raised RuntimeError: socket closed"}


def test_a_name_is_registered_once() -> None:
    readiness = Readiness()
    readiness.register("admission", lambda: None)
    with pytest.raises(ValueError, match="'admission' is already registered"):
        readiness.register("admission", lambda: None)
    with pytest.raises(ValueError, match="needs a name"):
        readiness.register("", lambda: None)
    readiness.unregister("admission")
    readiness.register("admission", lambda: None)
    assert readiness.names == ["admission"]


def test_results_are_cached_for_cache_seconds() -> None:
    now = [100.0]
    calls: list[int] = []
    readiness = Readiness(cache_seconds=5, clock=lambda: now[0])
    readiness.register("counted", lambda: calls.append(1))  # type: ignore[func-returns-value]

    async def twice() -> None:
        await readiness.evaluate()
        await readiness.evaluate()

    asyncio.run(twice())
    assert len(calls) == 1
    now[0] += 5.1
    asyncio.run(readiness.evaluate())
    assert len(calls) == 2


def test_a_long_reason_is_shortened() -> None:
    readiness = Readiness()
    readiness.register("chatty", lambda: "x" * 5000)
    (reason,) = asyncio.run(readiness.evaluate()).checks.values()
    assert reason is not None and len(reason) == 500 and reason.endswith("...")


# ---------------------------------------------------- the operator's checks

def test_kopf_started_follows_the_flag() -> None:
    async def scenario() -> tuple[str | None, str | None]:
        flag = asyncio.Event()
        check = kopf_started(flag)
        before = check()
        flag.set()
        return before, check()

    before, after = asyncio.run(scenario())
    assert before is not None and "starting" in before
    assert after is None


def api_exception(status: int, reason: str, message: str = "") -> Exception:
    from kubernetes.client import ApiException

    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "message": message}) if message else ""
    return exc


def test_a_forbidden_list_says_where_and_why() -> None:
    message = ('trainingpipelines.trainpipe.io is forbidden: User "system:serviceaccount:trainpipe-system:trainpipe" '
               'cannot list resource "trainingpipelines" in API group "trainpipe.io" in the namespace "team-b"')
    reason = list_failure(api_exception(403, "Forbidden", message), "team-b")
    assert reason.startswith("cannot list trainingpipelines.trainpipe.io in namespace team-b: HTTP 403 ")
    assert 'cannot list resource "trainingpipelines"' in reason and "RBAC" in reason


def test_list_failures_name_a_missing_crd_and_an_unreachable_server() -> None:
    assert "is the CRD trainingpipelines.trainpipe.io installed?" in list_failure(
        api_exception(404, "Not Found"), None)
    reason = list_failure(ConnectionRefusedError(111, "Connection refused"), None)
    assert reason.startswith("cannot reach the API server to list trainingpipelines.trainpipe.io cluster-wide: "
                             "ConnectionRefusedError")


# ------------------------------------------------------------ over HTTP

FORBIDDEN = "cannot list trainingpipelines.trainpipe.io cluster-wide: HTTP 403"


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_healthz_and_readyz_over_http() -> None:
    state: dict[str, str | None] = {"watch": FORBIDDEN}

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        readiness = Readiness(cache_seconds=0)
        readiness.register("watch", lambda: state["watch"])
        server = HealthServer(readiness, asyncio.get_running_loop(), 0, host="127.0.0.1").start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            answers = []
            for path in ("/healthz", "/readyz", "/metrics"):
                answers.append(await asyncio.to_thread(get, base + path))
            state["watch"] = None
            answers.append(await asyncio.to_thread(get, base + "/readyz"))
            return answers
        finally:
            server.stop()

    alive, not_ready, unknown, ready = asyncio.run(scenario())
    assert alive == (200, {"alive": True})  # liveness does not follow readiness
    assert not_ready == (503, {"ready": False, "checks": {"watch": FORBIDDEN}})
    assert unknown[0] == 404 and "/readyz" in unknown[1]["error"]
    assert ready == (200, {"ready": True, "checks": {"watch": "ok"}})


def test_a_stuck_event_loop_fails_liveness_and_readiness() -> None:
    """Something blocks the loop the checks run in (as a handler that never
    yields would): both probes say so within their timeout, not hang."""
    loop = asyncio.new_event_loop()

    async def blocked() -> None:
        time.sleep(9)

    runner = threading.Thread(target=loop.run_until_complete, args=(blocked(),))
    runner.start()
    readiness = Readiness()
    readiness.register("watch", lambda: None)
    server = HealthServer(readiness, loop, 0, host="127.0.0.1").start()
    try:
        status, body = get(f"http://127.0.0.1:{server.port}/healthz")
        assert status == 503 and "did not answer within 4 s" in body["reason"]
        status, body = get(f"http://127.0.0.1:{server.port}/readyz")
        assert status == 503 and "did not finish within 4 s" in body["checks"]["probe"]
    finally:
        server.stop()
        runner.join()
        loop.run_until_complete(asyncio.sleep(0))  # the queued probes finish
        loop.close()


def test_a_taken_port_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        loop = asyncio.new_event_loop()
        try:
            with pytest.raises(OSError, match=f"cannot serve /healthz and /readyz on 127.0.0.1:{port}"):
                HealthServer(Readiness(), loop, port, host="127.0.0.1")
        finally:
            loop.close()


def test_the_operator_is_not_ready_until_its_admission_webhook_listens() -> None:
    from trainpipe_operator.admission import webhook
    from trainpipe_operator.controller.main import webhook_serving

    was = webhook.is_serving()
    try:
        webhook._SERVING.clear()
        assert webhook_serving() == "the admission webhook is not listening yet"
        webhook._SERVING.set()
        assert webhook_serving() is None
    finally:
        (webhook._SERVING.set if was else webhook._SERVING.clear)()
