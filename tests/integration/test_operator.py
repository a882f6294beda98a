"""The operator on a real kube-apiserver + etcd, as the Helm chart's
ServiceAccount: its rights, the schema the API server enforces, a pipeline
through every phase on a real Ray head with its status, events, metrics and
dashboard queries checked, and the GPU gate from a real Prometheus (approval:
test_approval.py).
The job lifecycle (re-attach, resubmit, delete, RayJobs) is in
test_operator_jobs.py: two modules, so that two test workers share them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .operator_harness import (
    REPO,
    TOKEN_SECRET,
    Cluster,
    OperatorProcess,
    apply,
    free_port,
    get,
    kubectl,
    pipeline_manifest,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_operator_service_account_has_least_privilege(cluster: Cluster) -> None:
    def can(*args: str) -> str:
        return kubectl(cluster.operator_kubeconfig, "auth", "can-i", *args, check=False).stdout.strip()

    assert can("list", "secrets", "--all-namespaces") == "no"
    assert can("create", "namespaces") == "no"
    assert can("delete", "trainingpipelines.trainpipe.io") == "no"
    assert can("patch", "trainingpipelines.trainpipe.io/status", "-n", "default") == "yes"
    assert can("create", "rayjobs.ray.io", "-n", "default") == "yes"
    assert can("list", "rayjobs.ray.io", "-n", "default") == "yes"  # the TTL cleanup finds a pipeline's RayJobs
    assert can("get", f"secrets/{TOKEN_SECRET}", "-n", "default") == "yes"  # a named Secret, never a list


INVALID = [
    # a model, augmentation or target metric of another task is the models'
    # rule (spec.task decides): the operator and the webhook refuse those
    ("spec.model.name", {"model": {"name": ""}}),
    ("spec.task", {"task": "detection"}),
    ("spec.customTask.metrics", {"task": "custom", "customTask": {"entrypoint": "a.b:C", "metrics": []}}),
    ("spec.baseline.optimizer", {"baseline": {"optimizer": "adam"}}),
    ("spec.baseline.scheduler", {"baseline": {"scheduler": "linear"}}),
    ("spec.baseline.epochs", {"baseline": {"epochs": 0}}),
    ("spec.baseline.lr", {"baseline": {"lr": 0}}),
    ("spec.data.imageSize", {"data": {"imageSize": 4}}),
    ("spec.data.batchSize", {"data": {"batchSize": 0}}),
    ("spec.data.augment", {"data": {"augment": "mixup"}}),
    ("spec.target.metric", {"target": {"metric": ""}}),
    ("spec.optimization.maxIterations", {"optimization": {"maxIterations": -1}}),
    ("spec.finalization.export", {"finalization": {"export": ["tflite"]}}),
    ("spec.finalization.export", {"finalization": {"export": []}}),
    ("spec.gates.gpuUtilMin", {"gates": {"gpuUtilMin": 150}}),
    ("spec.budget.maxDuration", {"budget": {"maxDuration": "12 hours"}}),
    ("spec.resources.workers", {"resources": {"workers": 0}}),
    ("spec.resources.memory", {"resources": {"memory": "lots"}}),
    ("spec.runtime.type", {"runtime": {"type": "slurm"}}),
    ("spec.seed", {"seed": "abc"}),
    ("spec.approval.required", {"approval": {"required": "maybe"}}),
    ("spec.data.split.train", {"data": {"split": {"train": 1.5}}}),
    ("spec.ttlSecondsAfterFinished", {"ttlSecondsAfterFinished": -1}),
    ("spec.runtime.queueName", {"runtime": {"type": "rayjob", "queueName": "Team_A"}}),
    ("spec.suspend", {"suspend": "maybe"}),
]


def test_the_api_server_rejects_invalid_manifests_naming_the_field(cluster: Cluster) -> None:
    """Server-side (kubectl's client-side validation off): the CRD's schema."""
    failures = []
    for field, spec in INVALID:
        manifest = {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
                    "metadata": {"name": "invalid"}, "spec": spec}
        result = kubectl(cluster.admin, "apply", "--validate=false", "-f", "-", input=yaml.safe_dump(manifest),
                         check=False)
        if result.returncode == 0 or field not in result.stderr:
            failures.append((field, result.returncode, result.stderr.strip()[-300:]))
            kubectl(cluster.admin, "delete", "tp", "invalid", "--ignore-not-found", check=False)
    assert not failures, failures
    assert len(INVALID) >= 15


@pytest.fixture
def monitored_operator(cluster: Cluster, prometheus_factory: Any, tmp_path: Path) -> Iterator[Monitored]:
    """The operator, with its training jobs serving trainpipe_* metrics, and a
    real Prometheus scraping both under the job names the chart's alerts and
    dashboard expect. A GPU exporter (the trainer's own telemetry code with a
    fixed NVML reading: there is no GPU here) feeds the GPU panels."""
    from trainpipe_trainer.engine.telemetry import TrainingTelemetry

    trainer_port = free_port()
    gpu = TrainingTelemetry({"pipeline": "digits", "phase": "baseline", "job": "digits-baseline"})
    gpu.on_gpu(71.0, 3 * 2**30, "0")
    gpu_port = gpu.serve(0, addr="127.0.0.1")
    operator = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root, tmp_path,
                               trainer_metrics_port=trainer_port)
    prometheus = prometheus_factory({"trainpipe-metrics": [f"127.0.0.1:{operator.metrics_port}"],
                                     "trainpipe-trainers": [f"127.0.0.1:{trainer_port}"],
                                     "gpu-node": [f"127.0.0.1:{gpu_port}"]})
    operator.start()
    try:
        yield Monitored(operator, prometheus, time.time())
    finally:
        operator.stop()
        gpu.close()


@dataclass
class Monitored:
    operator: OperatorProcess
    prometheus: Any
    started: float


def test_digits_example_on_ray_reaches_succeeded_with_status_matching_the_run_directory(
        cluster: Cluster, monitored_operator: Monitored) -> None:
    operator = monitored_operator.operator
    manifest = yaml.safe_load((REPO / "examples" / "digits.yaml").read_text())
    # The same path through every phase without the resnet18 Diagnostics
    # recommends (its 9 epochs were most of this test's minutes on 2 cores);
    # one iteration, then Finalization whether or not the target is met.
    manifest["spec"]["optimization"].update(maxIterations=1, fixed=["model.name"])
    manifest["spec"]["runtime"] = {"type": "ray", "ray": {"address": cluster.ray_address,
                                                          "tokenSecret": TOKEN_SECRET}}
    apply(cluster.admin, manifest)
    obj = wait_phase(cluster, operator, "digits", ("Succeeded", "Failed"), timeout=900)
    status = obj["status"]
    assert status["phase"] == "Succeeded", (status.get("message"), operator.log_tail())
    run_dir = cluster.run_dir("digits")

    # Status and run directory agree: the same gates, checks and artifacts.
    state = json.loads((run_dir / "state.json").read_text())
    assert status["gates"].keys() == state["gates"].keys()
    for key, gate in status["gates"].items():
        on_disk = json.loads((run_dir / state["artifacts"][f"{key}.gate"]).read_text())
        assert [(c["id"], c["result"]) for c in gate["checks"]] == [(c["id"], c["result"]) for c in on_disk["checks"]]
    for rel in status["artifacts"].values():
        assert (run_dir / rel).exists(), rel

    conditions = {c["type"]: c for c in status["conditions"]}
    for kind in ("PlanningGate", "BaselineGate", "DiagnosticsGate", "OptimizationGate", "FinalizationGate"):
        assert conditions[kind]["status"] == "True", conditions[kind]
    # the same phase machine as `trainpipe run`: TargetMet from the test split's figure
    assert conditions["TargetMet"]["reason"] in ("Met", "AcceptedBest"), conditions["TargetMet"]
    ready = conditions["Ready"]
    assert ready["status"] == "True" and ready["reason"] == "Succeeded"
    assert ready["observedGeneration"] == obj["metadata"]["generation"] == status["observedGeneration"]
    assert ready["lastTransitionTime"]

    assert status["job"]["submissionId"].startswith(f"digits-{obj['metadata']['uid']}")
    assert [d["phase"] for d in status["decisions"]] == [
        "Pending", "Planning", "Baseline", "Diagnostics", "Optimization", "Finalization"]

    events = kubectl(cluster.admin, "get", "events", "-n", "default", "--field-selector",
                     "involvedObject.name=digits", "-o", "json").stdout
    reasons = [e["reason"] for e in json.loads(events)["items"]]
    assert "PhaseChanged" in reasons and "GatePassed" in reasons

    table = kubectl(cluster.admin, "get", "tp", "digits").stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "GATE", "TARGETMETRIC", "METRIC", "TARGET", "ITERATION", "PROGRESS", "ETA", "SUSPENDED", "AGE"]
    assert "Succeeded" in table and "finalization: passed" in table and "val_acc" in table

    # The operator sets its gauges after it writes the status: wait for them.
    def succeeded_counted() -> str | None:
        text = operator.metrics()
        return text if 'trainpipe_operator_pipelines{phase="Succeeded"} 1.0' in text else None

    metrics = wait_for("the operator's pipelines gauge to count digits as Succeeded", succeeded_counted,
                       timeout=30)
    assert "trainpipe_operator_job_submissions_total" in metrics

    check_dashboard_and_alert_queries(monitored_operator)


# Grafana's variables, as the dashboard would fill them for this run.
DASHBOARD_VARIABLES = {"$__rate_interval": "30s", "$__range": "1h", "$pipeline": "digits",
                       "$operator_job": "trainpipe-metrics"}


def check_dashboard_and_alert_queries(monitored: Monitored) -> None:
    """Every query of the chart's dashboard returns data for this run (as the
    range query a panel makes), and every alert expression runs and selects
    series that exist (an alert's full expression has data only when it fires;
    promtool's rule tests cover firing)."""
    from tests.chart_render import alert_rules, dashboard, dashboard_queries, metric_names, render

    prometheus = monitored.prometheus
    docs = render(release="trainpipe", sets={"metrics.prometheusRule.enabled": "true"})
    queries = []
    for title, expr in dashboard_queries(dashboard(docs)):
        for name, value in DASHBOARD_VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"{title}: unsubstituted variable in {expr}"
        queries.append((title, expr))
    alert_series = [(rule["alert"], name) for rule in alert_rules(docs) for name in metric_names(rule["expr"])]
    for rule in alert_rules(docs):
        prometheus.query_range(rule["expr"], monitored.started, time.time())  # valid PromQL for this server

    def without_data() -> list[tuple[str, str]]:
        # The last scrapes of the operator and the trainer can land a second
        # or two after the pipeline's end: ask again until every panel and
        # every series an alert selects has data (the deadline names the rest).
        start, end = monitored.started, time.time() + 5
        empty = []
        for title, expr in queries:
            series = prometheus.query_range(expr, start, end)
            if not [v for s in series for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]:
                empty.append((title, expr))
        for alert, name in alert_series:
            if not prometheus.query_range(f'count({{__name__="{name}"}})', start, end):
                empty.append((f"alert {alert}", name))
        return empty

    def all_have_data() -> bool:
        missing = without_data()
        assert not missing, f"queries without data: {missing}"
        return True

    wait_for("every dashboard query and alert series to have data after the run", all_have_data,
             timeout=60, interval=2)


def test_with_prometheus_configured_the_gpu_check_never_passes_a_job_it_does_not_apply_to(
        cluster: Cluster, prometheus_factory: Any, tmp_path: Path) -> None:
    """The operator with a real Prometheus (a dcgm-exporter stand-in whose
    busy GPU sits in a pod named like the pipelines): a CPU pipeline's
    gpu-utilization check is "not applicable", and one whose spec turns the
    check off says it was turned off, with the reason; neither passes.
    (GPU jobs are measured by the UUIDs their evidence names:
    tests/integration/test_gpu_promql.py; there is no GPU here.)"""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from .operator_harness import free_port

    registry = CollectorRegistry()
    gauge = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (fake DCGM exporter)",
                  ["gpu", "UUID", "Hostname", "modelName", "namespace", "pod"], registry=registry)
    gauge.labels("0", "GPU-55555555-aaaa-4bbb-8ccc-000000000005", "node-a", "NVIDIA H100 80GB HBM3", "default",
                 "gpu-cpu-baseline-worker-0").set(95)
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    reason = "shared A100s, measured by the platform team"
    try:
        prometheus = prometheus_factory([f"127.0.0.1:{port}"])
        prometheus.wait_for("DCGM_FI_DEV_GPU_UTIL", lambda r: len(r) == 1, timeout=30)
        operator = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root, tmp_path,
                                   prometheus_url=prometheus.url).start()
        try:
            # One baseline epoch each: only their baseline gates are read.
            one_epoch = {"epochs": 1}
            apply(cluster.admin, pipeline_manifest("gpu-cpu", cluster.ray_address, TOKEN_SECRET, baseline=one_epoch))
            apply(cluster.admin, pipeline_manifest("gpu-off", cluster.ray_address, TOKEN_SECRET, baseline=one_epoch,
                                                   gates={"gpuUtilization": {"enabled": False, "reason": reason}}))

            def gpu_check(name: str) -> dict | None:
                gates = (get(cluster.admin, name).get("status") or {}).get("gates") or {}
                if "baseline" not in gates:
                    return None
                return next(c for c in gates["baseline"]["checks"] if c["id"] == "gpu-utilization")

            cpu = wait_for("gpu-cpu's baseline gate", lambda: gpu_check("gpu-cpu"), timeout=600)
            off = wait_for("gpu-off's baseline gate", lambda: gpu_check("gpu-off"), timeout=600)
        finally:
            for name in ("gpu-cpu", "gpu-off"):  # the finalizer stops their jobs
                kubectl(cluster.admin, "delete", "tp", name, "--timeout=180s", check=False)
            operator.stop()
    finally:
        server.shutdown()
    assert (cpu["result"], cpu["value"]) == ("skip", "not-applicable"), cpu
    assert "requested no GPU" in cpu["message"], cpu
    assert (off["result"], off["value"]) == ("skip", "turned-off"), off
    assert "Turned off by spec.gates.gpuUtilization.enabled: false" in off["message"] and reason in off["message"]

