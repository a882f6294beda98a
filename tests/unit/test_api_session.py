"""The operator's session with the API server (issue 14, responsive at
scale): kopf's own session opens a connection per concurrent request, so 500
pipelines created at once opened 500 TLS connections and most of the
operator's peak memory. Ours is capped, with room kept for the watches; the
operator tests log in through it against a real API server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import kopf
import pytest

from trainpipe_operator.controller import handlers

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: team-token}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: team-a}}]
current-context: x
"""


@pytest.fixture()
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod: the kubeconfig is used
    return path


def _login(monkeypatch: pytest.MonkeyPatch, connections: int, namespaces: int) -> tuple[object, int, dict[str, str]]:
    monkeypatch.setattr(handlers, "API_CONNECTIONS", connections)
    monkeypatch.setattr(handlers, "WATCHED_NAMESPACES", namespaces)

    async def login() -> tuple[object, int, dict[str, str]]:
        info = await handlers.login(logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
        assert info is not None
        session = info.aiohttp_session
        try:
            return info, session.connector.limit, dict(session.headers)
        finally:
            await session.close()

    return asyncio.run(login())


def test_the_session_is_capped_with_room_for_the_watches(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info, limit, headers = _login(monkeypatch, connections=10, namespaces=0)
    assert limit == 10 + 4  # one cluster-wide watch, kopf's two scans, a spare
    # The kubeconfig's context, as kopf's own login reads it.
    assert info.server == "https://127.0.0.1:6443" and info.default_namespace == "team-a"  # type: ignore[attr-defined]
    assert headers["Authorization"] == "Bearer team-token"


def test_zero_means_no_limit(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, limit, _ = _login(monkeypatch, connections=0, namespaces=5)
    assert limit == 0  # aiohttp's "no limit", kopf's own session


def test_each_watched_namespace_gets_its_own_watch_connection(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, limit, _ = _login(monkeypatch, connections=10, namespaces=20)
    assert limit == 10 + 20 + 3  # twenty watches never take the patches' ten
