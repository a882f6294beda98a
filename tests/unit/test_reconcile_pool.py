"""Reconciles in worker processes (issue 14, responsive at scale): a real
Reconciler in a spawned worker returns the same status as one in a thread,
its metric updates reach the registry the operator serves, the approval key
reaches it, a failure comes back with its metrics label, and a worker that
dies is replaced. The operator tests run the same pool against a real API
server and Ray head (every ``trainpipe operator`` uses it)."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from trainpipe_operator.admission.approval import ApprovalError, ApprovalKey, ApprovalRecord
from trainpipe_operator.controller import api_clients, reconcile
from trainpipe_operator.controller.metrics import MetricCalls, OperatorMetrics, replay
from trainpipe_operator.controller.reconcile import Reconciler, TickResult
from trainpipe_operator.controller.reconcile_pool import (
    WORKER_NICENESS,
    ReconcileFailed,
    ReconcilePool,
)
from trainpipe_operator.controller.settings import OperatorSettings

# A rayjob pipeline created suspended: a whole reconcile (spec, tenancy,
# pinned spec in the run directory, suspension, conditions, metrics) that
# contacts no cluster.
BODY = {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
        "metadata": {"name": "held", "namespace": "team-a", "uid": "0123456789abcdef", "generation": 1},
        "spec": {"data": {"source": "builtin:digits"}, "target": {"metric": "val_acc", "value": 0.9},
                 "suspend": True, "runtime": {"type": "rayjob"}}}
RECORD = ApprovalRecord(user="dave", user_uid="u1", run_id="r1", time="t", namespace="team-a", name="held",
                        object_uid="0123456789abcdef")


# ------------------------------------------------ run in the worker (spawned)
def no_cluster(pid_file: str) -> None:
    """The worker's setup: no API clients (none is needed), its pid and nice value noted."""
    api_clients.lazy_kubernetes_clients = lambda kubeconfig: (None, None)  # type: ignore[assignment]
    Path(pid_file).write_text(str(os.getpid()))
    Path(pid_file).with_suffix(".nice").write_text(str(os.nice(0)))


def failing(pid_file: str) -> None:
    no_cluster(pid_file)

    def reconcile_(self: Reconciler, body: dict[str, Any]) -> TickResult:
        self.metrics.stalled("ray")  # reported before it failed: still counted
        if body["metadata"]["name"] == "crash":
            os._exit(3)  # the worker dies mid-reconcile
        raise OSError(f"no space left on device writing {body['metadata']['name']}")

    reconcile.Reconciler.reconcile = reconcile_  # type: ignore[method-assign]


def signing(pid_file: str) -> None:
    no_cluster(pid_file)
    real = reconcile.Reconciler.reconcile

    def reconcile_(self: Reconciler, body: dict[str, Any]) -> TickResult:
        result = real(self, body)
        assert self.approval_key is not None
        result.status.message = self.approval_key.sign(RECORD)
        return result

    reconcile.Reconciler.reconcile = reconcile_  # type: ignore[method-assign]


def noting_imports(pid_file: str) -> None:
    """The worker's setup: its real (lazy) API clients; each reconcile's
    status message says whether the kubernetes client was imported."""
    Path(pid_file).write_text(str(os.getpid()))
    real = reconcile.Reconciler.reconcile

    def reconcile_(self: Reconciler, body: dict[str, Any]) -> TickResult:
        result = real(self, body)
        result.status.message = f"kubernetes client imported: {'kubernetes.client' in sys.modules}"
        return result

    reconcile.Reconciler.reconcile = reconcile_  # type: ignore[method-assign]


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


# ------------------------------------------------------------------- tests
def _settings(tmp_path: Path) -> OperatorSettings:
    settings = OperatorSettings()
    settings.artifact_root = tmp_path / "artifacts"
    return settings


def _pool(tmp_path: Path, processes: int, setup: Any = no_cluster, key: ApprovalKey | None = None,
          metrics: OperatorMetrics | None = None) -> tuple[ReconcilePool, OperatorMetrics]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings, metrics = _settings(tmp_path), metrics or OperatorMetrics()
    in_process = Reconciler(settings, None, None, metrics=metrics, approval_key=key)
    pool = ReconcilePool(settings, None, key, processes, in_process, metrics=metrics,
                         worker_setup=functools.partial(setup, str(tmp_path / "worker.pid")))
    return pool, metrics


def _pipelines_gauge(metrics: OperatorMetrics, phase: str) -> float:
    value = metrics.registry.get_sample_value("trainpipe_operator_pipelines", {"phase": phase})
    return float(value or 0.0)


def test_a_reconcile_runs_in_a_worker_process_and_its_metrics_reach_the_operators_registry(tmp_path: Path) -> None:
    pool, metrics = _pool(tmp_path, processes=1)
    try:
        result = asyncio.run(pool.reconcile(BODY))
    finally:
        pool.shutdown()
    worker = int((tmp_path / "worker.pid").read_text())
    assert worker != os.getpid()
    # A lower CPU priority than the operator's process (its event loop).
    assert int((tmp_path / "worker.nice").read_text()) == min(os.nice(0) + WORKER_NICENESS, 19)
    assert result.status.phase == "Pending" and result.status.suspension is not None
    assert result.status.suspension.state == "Suspended"
    assert [e.reason for e in result.events] == ["Suspended"]
    # The worker wrote the pinned spec where the operator's settings say.
    assert list((tmp_path / "artifacts" / "team-a").glob("held-01234567/pipeline.yaml"))
    # set_phase ran in the worker; the operator's registry has it.
    assert _pipelines_gauge(metrics, "Pending") == 1.0
    assert 'namespace="team-a"' in generate_latest(metrics.registry).decode()  # the phase-entered gauge


def test_a_worker_process_and_the_thread_give_the_same_status(tmp_path: Path) -> None:
    processes, _ = _pool(tmp_path / "p", processes=1)
    thread, _ = _pool(tmp_path / "t", processes=0)
    try:
        in_worker = asyncio.run(processes.reconcile(BODY))
        in_thread = asyncio.run(thread.reconcile(BODY))
    finally:
        processes.shutdown()
        thread.shutdown()
    assert not (tmp_path / "t" / "worker.pid").exists()  # the thread mode starts no worker
    dump = lambda r: r.status.model_dump(mode="json", exclude={"conditions", "suspension"})  # noqa: E731 - times differ
    assert dump(in_worker) == dump(in_thread)
    assert [c.type for c in in_worker.status.conditions] == [c.type for c in in_thread.status.conditions]


def test_a_failing_reconcile_comes_back_with_its_kind_and_its_metrics(tmp_path: Path) -> None:
    pool, metrics = _pool(tmp_path, processes=1, setup=failing)
    try:
        with pytest.raises(ReconcileFailed, match="OSError: no space left on device writing held") as failed:
            asyncio.run(pool.reconcile(BODY))
    finally:
        pool.shutdown()
    assert failed.value.kind == "storage"
    assert metrics.registry.get_sample_value("trainpipe_operator_job_stalls_total", {"runtime": "ray"}) == 1.0


def test_a_worker_that_dies_is_replaced_and_the_next_reconcile_runs(tmp_path: Path) -> None:
    pool, _ = _pool(tmp_path, processes=1, setup=failing)
    crash = {**BODY, "metadata": {**BODY["metadata"], "name": "crash"}}
    try:
        with pytest.raises(ReconcileFailed, match="worker process died"):
            asyncio.run(pool.reconcile(crash))
        first = int((tmp_path / "worker.pid").read_text())
        with pytest.raises(ReconcileFailed, match="OSError"):  # a new worker answered
            asyncio.run(pool.reconcile(BODY))
        assert int((tmp_path / "worker.pid").read_text()) != first
    finally:
        pool.shutdown()


def test_the_worker_holds_the_operators_approval_key(tmp_path: Path) -> None:
    key = ApprovalKey()
    pool, _ = _pool(tmp_path, processes=1, setup=signing, key=key)
    try:
        signed = asyncio.run(pool.reconcile(BODY)).status.message
    finally:
        pool.shutdown()
    assert key.verify(signed, "team-a", "held", "0123456789abcdef") == RECORD  # the webhook's key verifies it
    with pytest.raises(ApprovalError, match="does not carry this operator's signature"):
        ApprovalKey().verify(signed, "team-a", "held", "0123456789abcdef")


def test_metric_calls_replay_only_the_sink_methods() -> None:
    calls = MetricCalls()
    calls.submitted("ray", "p-r1-02_baseline-a2")
    calls.gate_evaluated("baseline", False)
    calls.phase_finished("Baseline", 12.0)
    metrics = OperatorMetrics()
    replay(calls.calls + [("serve", (9090,))], metrics)  # a name outside the sink is ignored
    sample = metrics.registry.get_sample_value
    assert sample("trainpipe_operator_job_resubmissions_total", {"runtime": "ray"}) == 1.0
    assert sample("trainpipe_operator_gate_results_total", {"gate": "baseline", "result": "failed"}) == 1.0
    assert sample("trainpipe_operator_phase_duration_seconds_count", {"phase": "Baseline"}) == 1.0


def test_a_worker_whose_pipelines_need_no_api_never_imports_the_kubernetes_client(tmp_path: Path) -> None:
    """About 20 MiB a worker does not pay when no pipeline reads a Secret or
    runs as a RayJob (issue 14's memory target, bench/operator_scale.py)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    settings = _settings(tmp_path)
    pool = ReconcilePool(settings, kubeconfig, None, 1, Reconciler(settings, None, None), metrics=OperatorMetrics(),
                         worker_setup=functools.partial(noting_imports, str(tmp_path / "worker.pid")))
    try:
        result = asyncio.run(pool.reconcile(BODY))  # a suspended RayJob pipeline: no job, so no API call
    finally:
        pool.shutdown()
    assert result.status.suspension is not None and result.status.suspension.state == "Suspended"
    assert result.status.message == "kubernetes client imported: False"


def test_lazy_api_clients_load_the_kubeconfig_once_at_their_first_use(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    # A fresh interpreter: this one has imported the kubernetes client already.
    script = textwrap.dedent(f"""
        import sys
        from trainpipe_operator.controller import api_clients
        core, custom = api_clients.lazy_kubernetes_clients({str(kubeconfig)!r})
        assert "kubernetes" not in sys.modules, "imported before first use"
        loads = []
        real = api_clients.kubernetes_clients
        api_clients.kubernetes_clients = lambda path: loads.append(path) or real(path)
        print(core.api_client.configuration.host, custom.api_client.configuration.host, len(loads))
        print(type(core.read_namespaced_secret).__qualname__, type(custom.create_namespaced_custom_object).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "https://127.0.0.1:6443 https://127.0.0.1:6443 1"
    assert out.stdout.split("\n")[1] == "method method"
