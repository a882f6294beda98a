"""The Helm chart, rendered by the real helm: lint, every ci/ scenario, bad
values refused with the key named, one source for the CRD and the RBAC,
pods meeting Pod Security "restricted", the dashboard and the alerts
(checked and unit-tested by promtool)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart_render import (
    CHART,
    REPO,
    SCENARIOS,
    alert_rules,
    by_kind,
    dashboard,
    dashboard_queries,
    helm,
    metric_names,
    one,
    render,
)
from tests.pod_security import restricted_violations
from trainpipe_operator.controller.metrics import OperatorMetrics
from trainpipe_operator.crd import render_crd_yaml
from trainpipe_operator.rbac import operator_rules, rules_text
from trainpipe_trainer.engine.telemetry import METRICS as TRAINER_METRICS

ALERT_TESTS = REPO / "tests" / "unit" / "alerts_test_cases.yaml"


def scenario(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


def metrics_service(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (service,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    return service


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


# ------------------------------------------------------------------ lint

@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda p: p.name if p else "defaults")
def test_helm_lint_strict_passes(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_scenario_renders_and_there_are_scenarios() -> None:
    assert {p.name for p in SCENARIOS} >= {"namespaced-values.yaml", "monitoring-values.yaml",
                                           "raycluster-values.yaml"}
    for path in SCENARIOS:
        assert render(path), path


# --------------------------------------------------------------- defaults

def test_defaults_render_the_operator_with_cluster_rbac_metrics_service_and_dashboard() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "MutatingWebhookConfiguration",
                     "Secret", "Service", "Service", "ServiceAccount", "ValidatingWebhookConfiguration"]
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "trainpipe-operator:0.1.0"  # the chart's appVersion
    assert container["args"] == ["operator"]  # JSON logs unless logFormat is plain
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9090, "healthz": 8080,
                                                                         "webhook": 9443}
    assert container["resources"]["limits"]["memory"] == "512Mi"
    env = env_of(deployment)
    assert env["TRAINPIPE_ARTIFACT_ROOT"] == "/var/lib/trainpipe/artifacts"
    assert env["TRAINPIPE_ARTIFACT_CLAIM"] == "trainpipe-artifacts"
    assert env["TRAINPIPE_TRAINER_IMAGE"] == "trainpipe-trainer:0.1.0"
    assert env["TRAINPIPE_NAMESPACES"] == ""
    assert "TRAINPIPE_PROMETHEUS_URL" not in env
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"] == "trainpipe"
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "trainpipe", "namespace": "trainpipe-system"}]
    service = metrics_service(docs)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "trainpipe", doc["kind"]


def test_values_reach_the_operator_environment() -> None:
    docs = render(sets={"operator.prometheusUrl": "http://prom:9090", "operator.logFormat": "plain",
                        "operator.pollSeconds": "5", "image.tag": "v9", "trainer.metricsPort": "0",
                        "operator.gpuQuery": "avg(x)", "operator.apiConnections": "24"})
    deployment = one(docs, "Deployment")
    env = env_of(deployment)
    assert env["TRAINPIPE_PROMETHEUS_URL"] == "http://prom:9090"
    assert env["TRAINPIPE_GPU_QUERY"] == "avg(x)"
    assert env["TRAINPIPE_POLL_SECONDS"] == "5"
    assert env["TRAINPIPE_TRAINER_METRICS_PORT"] == "0"
    assert env["TRAINPIPE_API_CONNECTIONS"] == "24"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["operator", "--plain-logs"]
    assert container["image"] == "trainpipe-operator:v9"


def test_the_operator_reads_every_environment_variable_the_chart_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainpipe_operator.controller.settings import OperatorSettings

    env = env_of(one(render(scenario("monitoring"), sets={"operator.rayAddress": "http://ray:8265",
                                                            "watchNamespaces": "{a,b}",
                                                            "operator.apiConnections": "24"}), "Deployment"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = OperatorSettings()
    assert str(settings.artifact_root) == env["TRAINPIPE_ARTIFACT_ROOT"]
    assert settings.artifact_claim == env["TRAINPIPE_ARTIFACT_CLAIM"]
    assert settings.rayjob_image == env["TRAINPIPE_TRAINER_IMAGE"]
    assert settings.prometheus_url == env["TRAINPIPE_PROMETHEUS_URL"]
    assert settings.ray_address == "http://ray:8265"
    assert settings.namespaces == ["a", "b"]
    assert settings.trainer_metrics_port == 9400
    assert settings.metrics_port == 9090 and settings.liveness_port == 8080
    assert settings.api_connections == 24


# -------------------------------------------------------------- scenarios

def test_namespaced_scenario_grants_a_role_per_watched_namespace_and_only_cluster_reads() -> None:
    docs = render(scenario("namespaced"))
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert role["rules"] == operator_rules("namespaced")
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert cluster_role["rules"] == operator_rules("cluster") + operator_rules("webhook")
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert env_of(one(docs, "Deployment"))["TRAINPIPE_NAMESPACES"] == "team-a,team-b"
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["storageClassName"] == "shared-nfs"


def test_monitoring_scenario_renders_monitors_and_alerts_with_additional_labels() -> None:
    docs = render(scenario("monitoring"))
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert one(docs, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service(docs)["metadata"]["labels"].items()
    pod_monitor = one(docs, "PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pod_monitor["spec"]["selector"]["matchExpressions"] == [
        {"key": "trainpipe.io/pipeline", "operator": "Exists"}]
    configmap = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")][0]
    assert configmap["metadata"]["namespace"] == "monitoring"
    stuck = [r for r in alert_rules(docs) if r["alert"] == "TrainpipePipelineStuckInPhase"][0]
    assert stuck["expr"].rstrip().endswith("> 7200")  # stuckPhaseMinutes: 120


def test_the_podmonitor_port_is_the_one_rayjob_workers_declare() -> None:
    from trainpipe_operator.kuberay.rayjob import build_rayjob
    from trainpipe_operator.spec.pipeline import ResourcesSpec

    body = build_rayjob("digits-baseline", "ns", {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
                                                  "name": "digits", "uid": "u1"},
                        "trainpipe-trainer:1", "/a/job.yaml", ResourcesSpec(), {"claimName": "c", "mountPath": "/a"},
                        service_account=None, metrics_port=9400)
    worker = body["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
    assert "trainpipe.io/pipeline" in worker["metadata"]["labels"]
    assert worker["spec"]["containers"][0]["ports"] == [{"name": "metrics", "containerPort": 9400}]


def test_raycluster_scenario_requests_gpus_and_points_the_operator_at_it() -> None:
    docs = render(scenario("raycluster"))
    cluster = one(docs, "RayCluster")
    (group,) = cluster["spec"]["workerGroupSpecs"]
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["image"] == "trainpipe-trainer:0.1.0"
    assert group["replicas"] == 2 and group["maxReplicas"] == 8
    assert env_of(one(docs, "Deployment"))["TRAINPIPE_RAY_ADDRESS"] == "http://trainpipe-ray-head-svc:8265"


def test_the_raycluster_matches_kuberays_own_schema() -> None:
    from trainpipe_operator.kuberay.schema import (
        crd_missing_reason,
        kuberay_crd_path,
        validate_against_kuberay,
    )

    rayjobs = kuberay_crd_path()
    crd = rayjobs.parent / "ray.io_rayclusters.yaml" if rayjobs else None
    if crd is None or not crd.is_file():
        pytest.skip(f"KubeRay's RayCluster CRD is not beside its RayJob CRD: {crd_missing_reason()}")
    cluster = one(render(scenario("raycluster")), "RayCluster")
    assert validate_against_kuberay(cluster, crd) == []
    cluster["spec"]["workerGroupSpecs"][0]["replicaz"] = 1
    assert validate_against_kuberay(cluster, crd)  # the check can fail


# ------------------------------------------------------------ bad values

@pytest.mark.parametrize(("sets", "message"), [
    ({"operator.pollSecond": "3"}, "additional properties 'pollSecond' not allowed"),
    ({"imagee.tag": "x"}, "additional properties 'imagee' not allowed"),
    ({"operator.pollSeconds": "soon"}, "/operator/pollSeconds"),
    ({"operator.metricsPort": "70000"}, "/operator/metricsPort"),
    ({"operator.apiConnections": "-1"}, "/operator/apiConnections"),
    ({"rbac.scope": "namespace"}, "/rbac/scope"),
    ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
    ({"artifacts.mountPath": "relative/path"}, "/artifacts/mountPath"),
    ({"metrics.prometheusRule.stuckPhaseMinutes": "0"}, "/metrics/prometheusRule/stuckPhaseMinutes"),
    ({"rbac.scope": "namespaced"}, "watchNamespaces must list at least one namespace"),
    ({"metrics.service.enabled": "false", "metrics.serviceMonitor.enabled": "true"},
     "metrics.serviceMonitor.enabled needs metrics.service.enabled"),
    ({"networkPolicy.enabled": "yes"}, "/networkPolicy/enabled"),
    ({"networkPolicy.metricsFrom[0].namespaceSelecter.matchLabels.a": "b"}, "namespaceSelecter"),
    ({"networkPolicy.egress.apiServer.to[0].ipBlock.except[0]": "10.0.0.0/8"}, "cidr"),
    ({"networkPolicy.egress.ray.ports[0]": "70000"}, "/networkPolicy/egress/ray/ports/0"),
    ({"networkPolicy.egress.apiServer.to[0].ipBlock.cidr": "api-server"}, "/networkPolicy/egress/apiServer/to/0"),
    ({"networkPolicy.egres.dns.ports[0]": "53"}, "additional properties 'egres' not allowed"),
])
def test_bad_values_fail_naming_the_key(sets: dict[str, str], message: str) -> None:
    args = ["template", "t", str(CHART)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    result = helm(*args, check=False)
    assert result.returncode != 0, f"helm accepted {sets}"
    assert message in result.stderr, result.stderr


def test_every_value_in_values_yaml_is_in_the_schema_and_the_schema_is_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or '<root>'}: not closed"
            assert isinstance(value, dict), path
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is in values.yaml but not in the schema"
                walk(child, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "")


# ------------------------------------------------------- one source of truth

def test_the_charts_crd_is_the_generated_crd() -> None:
    chart_crd = (CHART / "crds" / "trainingpipelines.trainpipe.io.yaml").read_text()
    assert chart_crd == render_crd_yaml(), "charts/trainpipe/crds/ is stale: run `make generate`"
    assert chart_crd == (REPO / "crds" / "trainingpipelines.trainpipe.io.yaml").read_text()


def test_the_charts_rbac_rules_are_the_operators() -> None:
    assert (CHART / "files" / "operator-rules.yaml").read_text() == rules_text(), (
        "charts/trainpipe/files/operator-rules.yaml differs from the operator's: run `make generate`")
    assert one(render(), "ClusterRole")["rules"] == operator_rules("all")


def test_no_rule_lets_the_operator_list_or_watch_secrets_or_write_pods() -> None:
    for rule in operator_rules("all"):
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"]
        assert "pods" not in rule["resources"] and "*" not in rule["verbs"] and "*" not in rule["resources"]


# --------------------------------------------------------- pod security

@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=lambda p: p.name if p else "defaults")
def test_every_rendered_pod_meets_the_restricted_profile(values: Path | None) -> None:
    docs = render(*([values] if values else []))
    pods = [(f"Deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"]) for d in by_kind(docs, "Deployment")]
    for cluster in by_kind(docs, "RayCluster"):
        pods.append(("RayCluster head", cluster["spec"]["headGroupSpec"]["template"]["spec"]))
        pods += [(f"RayCluster {g['groupName']}", g["template"]["spec"]) for g in cluster["spec"]["workerGroupSpecs"]]
    problems = [p for where, spec in pods for p in restricted_violations(spec, where)]
    assert not problems, problems
    for doc in by_kind(docs, "Deployment"):
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["runAsUser"] == 10001


def test_the_restricted_check_catches_a_root_privileged_pod() -> None:
    spec = {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "securityContext": {"runAsUser": 0, "privileged": True}}]}
    problems = restricted_violations(spec, "bad")
    assert len(problems) >= 6, problems


def test_rayjobs_the_operator_builds_meet_the_restricted_profile() -> None:
    from trainpipe_operator.kuberay.rayjob import build_rayjob
    from trainpipe_operator.spec.pipeline import ResourcesSpec

    body = build_rayjob("digits-baseline", "ns", {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
                                                  "name": "digits", "uid": "u1"},
                        "img:1", "/a/job.yaml", ResourcesSpec(gpus_per_worker=1), {"claimName": "c", "mountPath": "/a"},
                        service_account=None)
    cluster = body["spec"]["rayClusterSpec"]
    pods = [("head", cluster["headGroupSpec"]["template"]["spec"]),
            ("submitter", body["spec"]["submitterPodTemplate"]["spec"])]
    pods += [(g["groupName"], g["template"]["spec"]) for g in cluster["workerGroupSpecs"]]
    problems = [p for where, spec in pods for p in restricted_violations(spec, where)]
    assert not problems, problems


# ------------------------------------------------------------ dashboard

def exported_metric_names() -> set[str]:
    """Every series name the operator and the trainer export (counters with
    _total, histograms with _bucket/_sum/_count), plus Prometheus's `up`."""
    names = {"up"}
    for family in OperatorMetrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    for spec in TRAINER_METRICS:
        if spec.type == "histogram":
            names |= {spec.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(spec.name)
    return names


def test_the_dashboard_configmap_carries_the_file_unchanged_with_its_legends() -> None:
    docs = render()
    configmap = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")][0]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = dashboard(docs)
    assert board == json.loads((CHART / "files" / "dashboard.json").read_text())
    legends = [t["legendFormat"] for p in board["panels"] for t in p.get("targets", [])]
    assert "{{pipeline}} {{phase}} val" in legends  # Helm did not eat the legend templates


def test_the_dashboard_covers_what_a_platform_team_watches() -> None:
    board = dashboard(render())
    queries = " ".join(expr for _, expr in dashboard_queries(board))
    for metric in ("trainpipe_operator_pipelines", "trainpipe_operator_gate_results_total",
                   "trainpipe_operator_phase_duration_seconds_bucket", "trainpipe_train_loss", "trainpipe_val_accuracy",
                   "trainpipe_gpu_utilization_percent", "trainpipe_train_samples_total",
                   "trainpipe_operator_job_resubmissions_total", "trainpipe_resumes_total",
                   "trainpipe_operator_pipeline_eta_seconds", "trainpipe_operator_pipeline_epoch",
                   "trainpipe_operator_job_stalls_total"):
        assert metric in queries, metric
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "pipeline"}


def test_every_dashboard_and_alert_query_uses_metrics_the_code_exports() -> None:
    exported = exported_metric_names()
    docs = render(sets={"metrics.prometheusRule.enabled": "true"})
    used = [(title, expr) for title, expr in dashboard_queries(dashboard(docs))]
    used += [(rule["alert"], rule["expr"]) for rule in alert_rules(docs)]
    unknown = [(title, sorted(metric_names(expr) - exported)) for title, expr in used if metric_names(expr) - exported]
    assert not unknown, unknown
    assert metric_names('sum(rate(trainpipe_nope_total[5m]))') - exported  # the check can fail


# --------------------------------------------------------------- alerts

def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: it ships with Debian's prometheus package (`make system-deps`)")
    return path


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    docs = render(sets={"metrics.prometheusRule.enabled": "true"}, release="trainpipe")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(one(docs, "PrometheusRule")["spec"]))
    return path


def test_the_rendered_alert_rules_pass_promtool_check(rules_file: Path) -> None:
    result = subprocess.run([promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_the_alerts_fire_when_they_should_and_only_then(rules_file: Path, tmp_path: Path) -> None:
    """promtool's rule unit tests (tests/unit/alerts_test_cases.yaml):
    synthetic series for each alert, firing and quiet."""
    cases = yaml.safe_load(ALERT_TESTS.read_text())
    cases["rule_files"] = [str(rules_file)]
    tests_file = tmp_path / "alerts_test.yaml"
    tests_file.write_text(yaml.safe_dump(cases))
    result = subprocess.run([promtool(), "test", "rules", str(tests_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {rule["alert"] for rule in yaml.safe_load(rules_file.read_text())["groups"][0]["rules"]}
    tested = {a["alertname"] for t in cases["tests"] for a in t.get("alert_rule_test", [])}
    assert tested == alerts, f"alerts without a promtool test: {alerts - tested}"


def test_notes_say_how_to_apply_the_example_and_watch_it() -> None:
    result = helm("install", "trainpipe", str(CHART), "--dry-run=client", "--namespace", "ml")
    assert "kubectl apply -n ml -f examples/digits.yaml" in result.stdout
    assert "kubectl get tp -n ml -w" in result.stdout


def test_every_operator_series_the_alerts_read_exists_before_the_first_event() -> None:
    """increase() and the live dashboard check need the series at 0 from the start."""
    samples = {s.name + str(sorted(s.labels.items())) for f in OperatorMetrics().registry.collect() for s in f.samples}
    for needle in ("trainpipe_operator_reconcile_errors_total[('kind', 'other')]",
                   "trainpipe_operator_job_resubmissions_total[('runtime', 'rayjob')]",
                   "trainpipe_operator_gate_results_total[('gate', 'baseline'), ('result', 'failed')]",
                   "trainpipe_operator_job_stalls_total[('runtime', 'ray')]",
                   "trainpipe_operator_phase_duration_seconds_count[('phase', 'Baseline')]"):
        assert needle in samples, needle


def test_errors_are_labelled_by_where_they_came_from() -> None:
    from kubernetes.client.exceptions import ApiException

    from trainpipe_operator.controller.metrics import error_kind

    assert error_kind(ApiException(status=500)) == "kubernetes"
    assert error_kind(FileNotFoundError("evidence.json")) == "storage"
    assert error_kind(ValueError("x")) == "other"
