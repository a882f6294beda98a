"""The operator's probes, GET from a running `trainpipe operator` on the real
API server: /readyz answers 503 naming why while the operator cannot watch
(its ServiceAccount has no RBAC yet), turns 200 once the chart's RBAC is
bound, and /healthz stays 200 throughout (not ready is no reason to restart).
No Ray head: the probes do not need one."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.chart_render import render

from .operator_harness import (
    CHART_NAMESPACE,
    CRD_FILE,
    OperatorProcess,
    apply,
    get,
    kubectl,
    pipeline_manifest,
    wait_established,
    wait_for,
)

pytestmark = pytest.mark.integration


def probe(operator: OperatorProcess, path: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{operator.liveness_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_readyz_is_503_until_the_operator_may_watch_then_200(control_plane: Any, tmp_path: Path) -> None:
    admin = Path(control_plane.kubeconfig)
    kubectl(admin, "apply", "-f", str(CRD_FILE))
    wait_established(admin, "trainingpipelines.trainpipe.io")
    kubectl(admin, "create", "namespace", CHART_NAMESPACE, check=False)
    # The chart's ServiceAccount under a release name of its own, its RBAC held back for now.
    docs = render(release="probes", namespace=CHART_NAMESPACE)
    account = [d for d in docs if d["kind"] == "ServiceAccount"]
    rbac = [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    apply(admin, account)
    name = account[0]["metadata"]["name"]
    kubeconfig = control_plane.service_account_kubeconfig(CHART_NAMESPACE, name, tmp_path / "probes.kubeconfig")
    operator = OperatorProcess(Path(kubeconfig), tmp_path / "artifacts", tmp_path).start()
    try:
        def not_ready_for_rbac() -> tuple[int, dict[str, Any]] | None:
            status, body = probe(operator, "/readyz")
            return (status, body) if status == 503 and "watch" in body["checks"] else None

        status, body = wait_for("/readyz saying why it is not ready", not_ready_for_rbac, timeout=60)
        assert body["ready"] is False
        reason = body["checks"]["watch"]
        assert reason.startswith("cannot list trainingpipelines.trainpipe.io cluster-wide: HTTP 403"), reason
        assert f"system:serviceaccount:{CHART_NAMESPACE}:{name}" in reason and "RBAC" in reason
        assert "Bearer" not in json.dumps(body)
        assert probe(operator, "/healthz") == (200, {"alive": True})

        apply(admin, rbac)  # the chart's RBAC: now the operator may list and watch

        def ready() -> dict[str, Any] | None:
            status, body = probe(operator, "/readyz")
            return body if status == 200 else None

        body = wait_for("/readyz turning 200 after the RBAC is bound", ready, timeout=90)
        assert body == {"ready": True, "checks": {"kopf": "ok", "watch": "ok"}}
        # Ready means watching: a new pipeline gets its first status.
        apply(admin, pipeline_manifest("probed", "http://127.0.0.1:9", "no-token"))
        wait_for("the new pipeline's first status", lambda: (get(admin, "probed").get("status") or {}).get("phase"),
                 timeout=60)
        assert probe(operator, "/healthz") == (200, {"alive": True})
        assert operator.proc is not None and operator.proc.poll() is None, operator.log_tail()
    finally:
        # While the operator runs: its finalizer lets the pipeline go.
        kubectl(admin, "delete", "tp", "probed", "--ignore-not-found", "--timeout=60s", check=False)
        operator.stop()
        kubectl(admin, "delete", "clusterrolebinding", *[d["metadata"]["name"] for d in rbac
                                                          if d["kind"] == "ClusterRoleBinding"],
                "--ignore-not-found", check=False)
