"""What a cluster-security review of the chart looks for, rendered by the
real helm: the operator's readiness probe on a port it serves, requests and
limits by default, and the opt-in NetworkPolicy's ingress and egress."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart_render import CHART, by_kind, helm, one, render
from trainpipe_operator.controller import health_server

NETPOL = "NetworkPolicy"


def scenario(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


def container_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


# ------------------------------------------------------------------ probes

@pytest.mark.parametrize("sets", [{}, {"operator.livenessPort": "8181"}], ids=["default", "port-8181"])
def test_the_readiness_probe_asks_the_port_and_path_the_operator_serves(sets: dict[str, str]) -> None:
    from trainpipe_operator.controller.settings import OperatorSettings

    container = container_of(render(sets=sets))
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == health_server.READINESS_PATH == "/readyz"
    assert liveness["httpGet"]["path"] == health_server.LIVENESS_PATH
    served = OperatorSettings(liveness_port=int(env_of(container)["TRAINPIPE_LIVENESS_PORT"])).liveness_port
    for probe in (readiness, liveness):
        assert port_number(container, probe["httpGet"]["port"]) == served == int(sets.get("operator.livenessPort",
                                                                                          8080))
        # The operator answers before the kubelet gives up (its checks time out first).
        assert probe["timeoutSeconds"] > health_server.LOOP_TIMEOUT_S


# --------------------------------------------------------------- resources

QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?$")
SCALE = {None: 1.0, "m": 0.001, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30}


def quantity(text: str | int) -> float:
    match = QUANTITY.match(str(text))
    assert match, f"not a quantity this test reads: {text!r}"
    return float(match.group(1)) * SCALE[match.group(2)]


def test_cpu_and_memory_requests_and_limits_by_default() -> None:
    resources = container_of(render())["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}, kind
    for name in ("cpu", "memory"):
        assert 0 < quantity(resources["requests"][name]) <= quantity(resources["limits"][name]), name


def test_requests_and_limits_can_be_overridden() -> None:
    resources = container_of(render(sets={"resources.limits.cpu": "2", "resources.requests.memory": "384Mi"}))[
        "resources"]
    assert resources["limits"]["cpu"] == "2" or resources["limits"]["cpu"] == 2
    assert resources["requests"]["memory"] == "384Mi"
    assert resources["limits"]["memory"] == "512Mi"  # the rest stays as it was


# ------------------------------------------------------------ NetworkPolicy

def test_no_network_policy_unless_enabled() -> None:
    assert by_kind(render(), NETPOL) == []
    for path in (CHART / "ci").glob("*-values.yaml"):
        enabled = (yaml.safe_load(path.read_text()).get("networkPolicy") or {}).get("enabled", False)
        assert bool(by_kind(render(path), NETPOL)) == enabled, path.name


def rules(policy: dict[str, Any], direction: str) -> list[tuple[list[tuple[int, str]], list[dict[str, Any]]]]:
    key = "from" if direction == "ingress" else "to"
    return [([(p["port"], p["protocol"]) for p in rule["ports"]], rule.get(key, []))
            for rule in policy["spec"][direction]]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector
    return selector["matchLabels"].items() <= labels.items()


def test_the_policy_selects_the_operator_pod_and_no_ray_pod() -> None:
    docs = render(scenario("raycluster"), sets={"networkPolicy.enabled": "true"})
    selector = one(docs, NETPOL)["spec"]["podSelector"]
    assert selects(selector, one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"])
    cluster = one(docs, "RayCluster")["spec"]
    ray_pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in ray_pods:
        assert not selects(selector, template["metadata"]["labels"]), template["metadata"]["labels"]


def test_enabled_ingress_admits_only_the_metrics_scrape_and_the_webhook_calls() -> None:
    docs = render(sets={"networkPolicy.enabled": "true"})
    policy = one(docs, NETPOL)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    container = container_of(docs)
    metrics_port, webhook_port = port_number(container, "metrics"), port_number(container, "webhook")
    assert rules(policy, "ingress") == [([(metrics_port, "TCP")], [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]),
        # The API server calls from the control plane's own addresses: any
        # peer by default, on the webhook's port only.
        ([(webhook_port, "TCP")], [])]


def test_without_the_webhook_ingress_admits_only_the_metrics_scrape() -> None:
    docs = render(sets={"networkPolicy.enabled": "true", "webhook.enabled": "false"})
    assert [ports for ports, _ in rules(one(docs, NETPOL), "ingress")] == [[(port_number(container_of(docs),
                                                                                         "metrics"), "TCP")]]


def test_the_metrics_scrapers_are_configurable() -> None:
    peers = [{"ipBlock": {"cidr": "192.168.7.0/24"}}]
    docs = render(sets={"networkPolicy.enabled": "true", "operator.metricsPort": "9100",
                        "networkPolicy.metricsFrom[0].ipBlock.cidr": "192.168.7.0/24"})
    assert rules(one(docs, NETPOL), "ingress")[0] == ([(9100, "TCP")], peers)


def test_enabled_egress_admits_dns_the_api_server_and_ray_by_default() -> None:
    policy = one(render(sets={"networkPolicy.enabled": "true"}), NETPOL)
    kube_dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    assert rules(policy, "egress") == [
        ([(53, "UDP"), (53, "TCP")], [kube_dns]),
        ([(443, "TCP"), (6443, "TCP")], []),  # the API server: any address, these ports only
        ([(8265, "TCP")], []),  # Ray's Job API
    ]


def test_the_security_scenario_narrows_every_egress_rule() -> None:
    docs = render(scenario("networkpolicy"))
    egress = rules(one(docs, NETPOL), "egress")
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    assert egress[1] == ([(443, "TCP")], [{"ipBlock": {"cidr": "10.0.0.1/32"}}])
    assert ([(9090, "TCP")], [monitoring]) in egress  # prometheusUrl is set
    assert ([(5000, "TCP")], [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlflow"}}}]) \
        in egress
    assert len(egress) == 5


def test_the_charts_raycluster_head_is_the_ray_egress_peer_when_enabled() -> None:
    docs = render(scenario("raycluster"), sets={"networkPolicy.enabled": "true"})
    (ray_rule,) = [r for r in rules(one(docs, NETPOL), "egress") if r[0] == [(8265, "TCP")]]
    (peer,) = ray_rule[1]
    head_labels = one(docs, "RayCluster")["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert selects(peer["podSelector"], head_labels)
    workers = one(docs, "RayCluster")["spec"]["workerGroupSpecs"][0]["template"]["metadata"]["labels"]
    assert not selects(peer["podSelector"], workers)


def test_prometheus_and_tracking_rules_exist_only_when_configured() -> None:
    plain = rules(one(render(sets={"networkPolicy.enabled": "true"}), NETPOL), "egress")
    assert [(9090, "TCP")] not in [ports for ports, _ in plain]
    with_prometheus = rules(one(render(sets={"networkPolicy.enabled": "true",
                                             "operator.prometheusUrl": "http://prom:9090"}), NETPOL), "egress")
    assert ([(9090, "TCP")], []) in with_prometheus


def test_extra_rules_are_appended() -> None:
    docs = render(sets={"networkPolicy.enabled": "true",
                        "networkPolicy.extraIngress[0].ports[0].port": "8080",
                        "networkPolicy.extraIngress[0].from[0].ipBlock.cidr": "10.1.0.0/16",
                        "networkPolicy.extraEgress[0].ports[0].port": "4317"})
    policy = one(docs, NETPOL)
    assert policy["spec"]["ingress"][-1] == {"ports": [{"port": 8080}], "from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]}
    assert policy["spec"]["egress"][-1] == {"ports": [{"port": 4317}]}


def chart_with_webhook_values(tmp_path: Path) -> Path:
    """The chart, its schema taught a ``webhook`` block where it has none yet
    (the admission webhook's values come with the webhook)."""
    chart = tmp_path / "trainpipe"
    shutil.copytree(CHART, chart)
    schema_path = chart / "values.schema.json"
    schema = json.loads(schema_path.read_text())
    schema["properties"].setdefault("webhook", {"type": "object", "properties": {
        "enabled": {"type": "boolean"}, "port": {"type": "integer"}}})
    schema_path.write_text(json.dumps(schema))
    return chart


def test_with_the_webhook_the_api_servers_calls_are_admitted_on_its_port(tmp_path: Path) -> None:
    chart = chart_with_webhook_values(tmp_path)
    args = ["template", "t", str(chart), "--set", "networkPolicy.enabled=true", "--set", "webhook.enabled=true",
            "--set", "webhook.port=9443", "--set", "networkPolicy.webhookFrom[0].ipBlock.cidr=172.18.0.2/32"]
    docs = [d for d in yaml.safe_load_all(helm(*args).stdout) if d]
    ingress = rules(one(docs, NETPOL), "ingress")
    assert ingress[1] == ([(9443, "TCP")], [{"ipBlock": {"cidr": "172.18.0.2/32"}}])
    assert len(ingress) == 2
    off = [d for d in yaml.safe_load_all(helm("template", "t", str(chart), "--set", "networkPolicy.enabled=true",
                                              "--set", "webhook.enabled=false").stdout) if d]
    assert len(rules(one(off, NETPOL), "ingress")) == 1
