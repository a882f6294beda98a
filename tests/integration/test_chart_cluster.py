"""The rendered Helm chart against the real API server: every object passes
a server-side dry run, the CRD, RBAC, ServiceAccount, Deployment, Service and
dashboard ConfigMap are really applied, and the chart's RBAC grants exactly
what the operator needs, in both modes. (test_operator.py runs the operator
itself as the chart's ServiceAccount.)

Not applied here: ServiceMonitor, PodMonitor and PrometheusRule (the
prometheus-operator's CRDs are not installed; promtool checks the rules in
tests/unit/test_chart.py) and RayCluster (KubeRay's CRD does not install on
this API server; it is checked against KubeRay's schema there too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart_render import CHART, by_kind, one, render

from .operator_harness import kubectl, wait_established

pytestmark = pytest.mark.integration

NAMESPACE = "chart-test"
NOT_SERVED_HERE = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "RayCluster"}


def ensure_namespace(admin: Path, name: str) -> None:
    kubectl(admin, "create", "namespace", name, check=False)


def applied(admin: Path, docs: list[dict[str, Any]], *extra: str) -> str:
    return kubectl(admin, "apply", *extra, "-f", "-", input=yaml.safe_dump_all(docs)).stdout


@pytest.fixture(scope="module")
def admin(control_plane: Any) -> Path:
    """The admin kubeconfig, with the chart's CRD established: `kubectl auth
    can-i` on trainingpipelines needs it in discovery, whichever test runs."""
    kubeconfig = Path(control_plane.kubeconfig)
    (crd,) = by_kind(render(release="crdrel", namespace=NAMESPACE, include_crds=True), "CustomResourceDefinition")
    applied(kubeconfig, [crd])
    wait_established(kubeconfig, crd["metadata"]["name"])
    return kubeconfig


def test_the_chart_applies_to_a_real_api_server(admin: Path) -> None:
    ensure_namespace(admin, NAMESPACE)
    docs = render(CHART / "ci" / "monitoring-values.yaml", release="chartrel", namespace=NAMESPACE,
                  include_crds=True)
    (crd,) = by_kind(docs, "CustomResourceDefinition")
    applied(admin, [crd])
    wait_established(admin, crd["metadata"]["name"])
    ensure_namespace(admin, "monitoring")  # the dashboard ConfigMap's namespace in this scenario
    served = [d for d in docs if d["kind"] not in NOT_SERVED_HERE | {"CustomResourceDefinition"}]
    assert {d["kind"] for d in served} >= {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",
                                          "Service", "ConfigMap"}
    dry = applied(admin, served, "--dry-run=server")
    assert dry.count("(server dry run)") == len(served), dry
    try:
        applied(admin, served)
        stored_as_applied(admin, served)
    finally:
        # The webhook configurations (failurePolicy Fail) point at a Service no
        # operator pod backs here: left in place, they would refuse every
        # later test's pipelines on this API server.
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            kubectl(admin, "delete", kind.lower(), "chartrel-trainpipe", "--ignore-not-found")


def stored_as_applied(admin: Path, served: list[dict[str, Any]]) -> None:
    assert {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"} <= {d["kind"] for d in served}
    for doc in served:
        meta = doc["metadata"]
        args = ["get", doc["kind"].lower(), meta["name"], "-o", "json"]
        if "namespace" in meta:
            args += ["-n", meta["namespace"]]
        stored = json.loads(kubectl(admin, *args).stdout)
        assert stored["metadata"]["labels"]["app.kubernetes.io/instance"] == "chartrel"
    deployment = json.loads(kubectl(admin, "get", "deployment", "chartrel-trainpipe", "-n", NAMESPACE,
                                    "-o", "json").stdout)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    dashboard = json.loads(kubectl(admin, "get", "configmap", "chartrel-trainpipe-dashboard", "-n", "monitoring",
                                   "-o", "json").stdout)
    board = json.loads(dashboard["data"]["trainpipe.json"])
    assert board["uid"] == "trainpipe-overview"  # stored as rendered: still JSON, legends intact


def test_the_api_server_refuses_a_chart_object_with_a_wrong_field(admin: Path) -> None:
    """The server-side dry run above can fail: a mangled Deployment is refused."""
    ensure_namespace(admin, NAMESPACE)
    deployment = one(render(release="badrel", namespace=NAMESPACE), "Deployment")
    deployment["spec"]["replicas"] = "one"
    result = kubectl(admin, "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(deployment), check=False)
    assert result.returncode != 0 and "replicas" in result.stderr, result.stderr


def can(admin: Path, service_account: str, *args: str) -> str:
    return kubectl(admin, "auth", "can-i", *args, "--as", service_account, check=False).stdout.strip()


def allowed(admin: Path, user: str, verb: str, group: str, resource: str, namespace: str,
            subresource: str = "") -> bool:
    """A SubjectAccessReview: the API server's answer, whether or not the
    resource's CRD is installed (kubectl auth can-i needs discovery)."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
                       "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                              "subresource": subresource, "namespace": namespace}}}
    out = kubectl(admin, "create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout
    return bool(json.loads(out)["status"].get("allowed"))


def test_cluster_mode_rbac_is_least_privilege_for_the_charts_service_account(admin: Path) -> None:
    ensure_namespace(admin, NAMESPACE)
    docs = render(release="rbacrel", namespace=NAMESPACE)
    applied(admin, [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")])
    sa = f"system:serviceaccount:{NAMESPACE}:rbacrel-trainpipe"
    assert can(admin, sa, "patch", "trainingpipelines.trainpipe.io/status", "-n", "anywhere") == "yes"
    assert can(admin, sa, "watch", "trainingpipelines.trainpipe.io", "--all-namespaces") == "yes"
    assert can(admin, sa, "create", "events", "-n", "anywhere") == "yes"
    assert can(admin, sa, "get", "secrets/ray-token", "-n", "anywhere") == "yes"
    assert can(admin, sa, "list", "secrets", "--all-namespaces") == "no"
    assert can(admin, sa, "delete", "trainingpipelines.trainpipe.io", "-n", "anywhere") == "no"
    assert can(admin, sa, "create", "pods", "-n", "anywhere") == "no"
    # Only the verbs the code calls: RayJobs get/create/delete, list (the TTL
    # cleanup finds a pipeline's RayJobs by label), nothing PUTs.
    for verb in ("get", "create", "delete", "list"):
        assert allowed(admin, sa, verb, "ray.io", "rayjobs", "anywhere"), verb
    for verb, group, resource, sub in (("watch", "ray.io", "rayjobs", ""),
                                       ("patch", "ray.io", "rayjobs", ""),
                                       ("update", "trainpipe.io", "trainingpipelines", ""),
                                       ("update", "trainpipe.io", "trainingpipelines", "status"),
                                       ("patch", "", "events", "")):
        assert not allowed(admin, sa, verb, group, resource, "anywhere", sub), (verb, resource, sub)
    assert allowed(admin, sa, "patch", "trainpipe.io", "trainingpipelines", "anywhere", "status")


def test_namespaced_mode_grants_only_the_watched_namespaces(admin: Path) -> None:
    ensure_namespace(admin, NAMESPACE)
    for name in ("team-a", "team-b"):
        ensure_namespace(admin, name)
    docs = render(CHART / "ci" / "namespaced-values.yaml", release="nsrel", namespace=NAMESPACE)
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                             "RoleBinding")]
    applied(admin, rbac)
    sa = f"system:serviceaccount:{NAMESPACE}:nsrel-trainpipe"
    for name in ("team-a", "team-b"):
        assert can(admin, sa, "patch", "trainingpipelines.trainpipe.io/status", "-n", name) == "yes"
        assert can(admin, sa, "get", "secrets/ray-token", "-n", name) == "yes"
    assert can(admin, sa, "patch", "trainingpipelines.trainpipe.io/status", "-n", "default") == "no"
    assert can(admin, sa, "list", "trainingpipelines.trainpipe.io", "--all-namespaces") == "no"
    assert can(admin, sa, "get", "secrets/ray-token", "-n", "default") == "no"
    assert can(admin, sa, "get", "secrets", "-n", "kube-system") == "no"
    assert can(admin, sa, "get", "secrets/ray-token", "-n", "kube-system") == "no"
    assert not allowed(admin, sa, "get", "", "secrets", "kube-system")
    assert allowed(admin, sa, "get", "", "secrets", "team-a")  # the check can say yes
    assert can(admin, sa, "watch", "customresourcedefinitions.apiextensions.k8s.io") == "yes"


def test_the_probes_resources_and_network_policy_are_stored_as_rendered(admin: Path) -> None:
    """The API server keeps every field of the readiness probe, the
    requests and limits and the NetworkPolicy (a misspelt field would be
    pruned and the stored object would differ)."""
    ensure_namespace(admin, NAMESPACE)
    docs = render(CHART / "ci" / "networkpolicy-values.yaml", sets={"rayCluster.enabled": "true"},
                  release="secrel", namespace=NAMESPACE)
    deployment, policy = one(docs, "Deployment"), one(docs, "NetworkPolicy")
    applied(admin, [policy])
    stored = json.loads(kubectl(admin, "get", "networkpolicy", policy["metadata"]["name"], "-n", NAMESPACE,
                                "-o", "json").stdout)
    assert stored["spec"] == policy["spec"]
    dry = json.loads(kubectl(admin, "apply", "--dry-run=server", "-o", "json", "-f", "-",
                             input=yaml.safe_dump(deployment)).stdout)
    (container,) = dry["spec"]["template"]["spec"]["containers"]
    (rendered,) = deployment["spec"]["template"]["spec"]["containers"]
    probe = container["readinessProbe"]
    assert probe["httpGet"] == {**rendered["readinessProbe"]["httpGet"], "scheme": "HTTP"}  # the server's default
    assert {k: probe[k] for k in rendered["readinessProbe"] if k != "httpGet"} == {
        k: v for k, v in rendered["readinessProbe"].items() if k != "httpGet"}
    assert container["resources"] == rendered["resources"]
