"""The tenancy boundary on the real API server and real Ray heads: the
operator (as the chart's ServiceAccount) refuses a pipeline that names a
service-account token, an address not allowed, or a path out of its
namespace, sending nothing; and two pipelines with their own tokens and
addresses each reach only their own Ray head."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trainpipe_operator.devcluster import RayHead

from .operator_harness import (
    Cluster,
    OperatorProcess,
    apply,
    get,
    kubectl,
    pipeline_manifest,
    ray_token_secret,
    wait_for,
)

pytestmark = pytest.mark.integration


class Recorder(http.server.BaseHTTPRequestHandler):
    """A server the pipeline's author runs: it records every request (and
    the Authorization header it came with) and answers nothing useful."""

    seen: list[tuple[str, str, str]] = []

    def _record(self) -> None:
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        self.send_response(404)
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = _record

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def attacker() -> Iterator[tuple[str, list]]:
    Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


def _status(cluster: Cluster, name: str, namespace: str = "default") -> dict:
    return get(cluster.admin, name, namespace).get("status") or {}


def _failed(cluster: Cluster, operator: OperatorProcess, name: str, namespace: str = "default") -> dict:
    def probe() -> dict | None:
        assert operator.proc is not None and operator.proc.poll() is None, operator.log_tail()
        status = _status(cluster, name, namespace)
        return status if status.get("phase") == "Failed" else None

    return wait_for(f"{namespace}/{name} Failed", probe, timeout=120)


def _events(cluster: Cluster, name: str, namespace: str = "default") -> str:
    return kubectl(cluster.admin, "get", "events", "-n", namespace, "--field-selector",
                   f"involvedObject.name={name}", "-o", "jsonpath={.items[*].message}").stdout


def test_pipelines_crossing_the_boundary_are_refused_naming_the_field_and_nothing_is_sent(
        cluster: Cluster, tmp_path: Path, attacker: tuple[str, list]) -> None:
    address, seen = attacker
    # A service-account token Secret (what a legacy ServiceAccount holds)
    # and an Opaque one, both bound to the author's server.
    kubectl(cluster.admin, "create", "serviceaccount", "victim", check=False)
    apply(cluster.admin, [
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": {"name": "victim-token", "namespace": "default",
                      "annotations": {"kubernetes.io/service-account.name": "victim"}},
         "stringData": {"token": "sa-token-value", "address": address}},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": "opaque-token", "namespace": "default"},
         "stringData": {"token": "opaque-token-value", "address": address}},
    ])
    # Even with the author's server on the allow-list (a careless
    # administrator), a Secret not meant for trainpipe is never used.
    operator = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root, tmp_path,
                               ray_allowed_addresses=[cluster.ray_address, address]).start()
    try:
        apply(cluster.admin, [
            pipeline_manifest("steal-sa-token", address, "victim-token"),
            pipeline_manifest("steal-opaque", address, "opaque-token"),
            pipeline_manifest("own-token-elsewhere", "http://127.0.0.1:1", "ray-token"),
            pipeline_manifest("other-teams-data", cluster.ray_address, "ray-token",
                              data={"source": "../team-b/data"}),
            pipeline_manifest("other-teams-weights", cluster.ray_address, "ray-token",
                              model={"pretrained": str(cluster.artifact_root / "team-b" / "w.pt")}),
        ])
        sa = _failed(cluster, operator, "steal-sa-token")
        assert sa["message"].startswith("refused: spec.runtime.ray.tokenSecret: Secret default/victim-token is a "
                                        "service-account token"), sa["message"]
        opaque = _failed(cluster, operator, "steal-opaque")
        assert "spec.runtime.ray.tokenSecret: Secret default/opaque-token has type 'Opaque'" in opaque["message"]
        elsewhere = _failed(cluster, operator, "own-token-elsewhere")
        assert "spec.runtime.ray.address: 'http://127.0.0.1:1' is not a Ray cluster this operator may use; " \
               "allowed: " in elsewhere["message"]
        data = _failed(cluster, operator, "other-teams-data")
        assert data["message"].startswith("refused: spec.data.source: '../team-b/data' contains '..'")
        weights = _failed(cluster, operator, "other-teams-weights")
        assert "spec.model.pretrained: " in weights["message"] and "leaves namespace 'default''s root" \
            in weights["message"]
        for name in ("steal-sa-token", "steal-opaque", "own-token-elsewhere", "other-teams-data"):
            assert "refused: spec." in _events(cluster, name)
            assert not (cluster.artifact_root / "default").exists() or not any(
                p.name.startswith(f"{name}-") for p in (cluster.artifact_root / "default").iterdir())
        assert seen == [], f"the operator sent requests to the author's server: {seen}"
        assert not any(job.submission_id.startswith(("steal", "own-token", "other-teams"))
                       for job in cluster.ray_jobs())
        log = operator.log_tail(200_000)
        for secret in ("sa-token-value", "opaque-token-value", cluster.ray_token):
            assert secret not in log
        assert operator.proc is not None and operator.proc.poll() is None  # refused, not crashed
    finally:
        operator.stop()
        kubectl(cluster.admin, "delete", "tp", "--all", "--wait=false", check=False)


@pytest.fixture(scope="module")
def second_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    with RayHead(tmp_path_factory.mktemp("ray-head-b"), token="token-of-team-b-" + "b" * 32) as head:
        yield head


def _submissions(head_address: str, token: str) -> list[str]:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head_address, headers={"Authorization": f"Bearer {token}"})
    return [job.submission_id or "" for job in client.list_jobs()]


def test_two_pipelines_with_their_own_tokens_and_addresses_each_reach_only_their_own_head(
        cluster: Cluster, second_head: RayHead, tmp_path: Path, attacker: tuple[str, list]) -> None:
    """team-a names no address (its Secret's is used), team-b names its own;
    team-c names a server of its author's, allowed, with no token: none of
    the others' tokens may reach it (as a process-wide token would)."""
    recorder, seen = attacker
    assert cluster.ray_token != second_head.token
    heads = {"team-a": (cluster.ray_address, cluster.ray_token), "team-b": (second_head.address, second_head.token)}
    for namespace, (address, token) in heads.items():
        kubectl(cluster.admin, "create", "namespace", namespace, check=False)
        apply(cluster.admin, ray_token_secret("ray", namespace, address, token))
    kubectl(cluster.admin, "create", "namespace", "team-c", check=False)
    operator = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root, tmp_path,
                               ray_allowed_addresses=[cluster.ray_address, second_head.address, recorder]).start()
    try:
        for namespace, (address, _token) in heads.items():
            manifest = pipeline_manifest(f"reach-{namespace}", address, "ray", baseline={"epochs": 50})
            if namespace == "team-a":
                manifest["spec"]["runtime"]["ray"].pop("address")  # the Secret's address is the one used
            manifest["metadata"]["namespace"] = namespace
            apply(cluster.admin, manifest)

        def submitted(namespace: str) -> str | None:
            sid = (_status(cluster, f"reach-{namespace}", namespace).get("job") or {}).get("submissionId")
            return sid if sid and sid in _submissions(*heads[namespace]) else None

        ids = {ns: wait_for(f"{ns}'s job on its own head", lambda ns=ns: submitted(ns), timeout=300)
               for ns in heads}
        tokenless = pipeline_manifest("reach-team-c", recorder, "ray")
        tokenless["spec"]["runtime"]["ray"].pop("tokenSecret")
        tokenless["metadata"]["namespace"] = "team-c"
        apply(cluster.admin, tokenless)
        wait_for("team-c's requests to its author's server", lambda: len(seen) >= 2, timeout=120)
        on_a, on_b = _submissions(*heads["team-a"]), _submissions(*heads["team-b"])
        assert not any(s.startswith("reach-team-b") for s in on_a), on_a
        assert not any(s.startswith("reach-team-a") for s in on_b), on_b
        assert ids["team-a"] in on_a and ids["team-b"] in on_b
        for namespace in heads:
            assert _status(cluster, f"reach-{namespace}", namespace).get("phase") != "Failed"
        sent = {authorization for _method, _path, authorization in seen}
        assert not any(token in header for header in sent for _a, token in heads.values()), sent
    finally:
        for namespace in (*heads, "team-c"):
            kubectl(cluster.admin, "delete", "tp", f"reach-{namespace}", "-n", namespace, "--timeout=120s",
                    check=False)
        operator.stop()
