"""The chart's admission webhook, rendered by the real helm: the
configurations call the operator's handlers for TrainingPipelines only, with
failurePolicy Fail, through a Service with a CA bundle that signed the
serving certificate (or cert-manager's); off, nothing of it is rendered."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.chart_render import CHART, by_kind, one, render
from trainpipe_operator.admission.webhook import HANDLER_IDS
from trainpipe_operator.rbac import operator_rules

WEBHOOK_KINDS = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
SAR_RULE = {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}


def hooks(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for d in docs if d["kind"] in WEBHOOK_KINDS for h in d["webhooks"]}


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return found


def env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(docs)["env"]}


def test_the_webhooks_call_the_operators_handlers_for_trainingpipelines_only_and_fail_closed() -> None:
    docs = render()
    found = hooks(docs)
    assert set(found) == {"approval.trainpipe.io", "validate.trainpipe.io", "status.trainpipe.io"}
    assert {h["clientConfig"]["service"]["path"].lstrip("/") for h in found.values()} == set(HANDLER_IDS)
    for hook in found.values():
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        (rule,) = hook["rules"]
        assert rule["apiGroups"] == ["trainpipe.io"] and rule["apiVersions"] == ["v1alpha1"]
        assert rule["resources"][0].split("/")[0] == "trainingpipelines" and len(rule["resources"]) == 1
        assert "DELETE" not in rule["operations"]
        assert hook["clientConfig"]["service"] == {**hook["clientConfig"]["service"], "name": "trainpipe-webhook",
                                                   "namespace": "trainpipe-system", "port": 443}
        assert "namespaceSelector" not in hook  # cluster scope: every namespace
    assert found["status.trainpipe.io"]["rules"][0] == {
        "apiGroups": ["trainpipe.io"], "apiVersions": ["v1alpha1"], "resources": ["trainingpipelines/status"],
        "operations": ["UPDATE"], "scope": "Namespaced"}
    assert by_kind(docs, "MutatingWebhookConfiguration")[0]["webhooks"][0]["name"] == "approval.trainpipe.io"


def test_the_service_reaches_the_operators_webhook_port_with_a_certificate_the_ca_bundle_signed() -> None:
    from cryptography import x509

    docs = render()
    (service,) = [s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "trainpipe-webhook"]
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container(docs)["ports"]
    secret = one(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "trainpipe-webhook.trainpipe-system.svc" in sans
    for hook in hooks(docs).values():
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "webhook-tls"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    (mount,) = [m for m in container(docs)["volumeMounts"] if m["name"] == "webhook-tls"]
    assert mount["readOnly"] is True and mount["mountPath"] == env(docs)["TRAINPIPE_WEBHOOK_CERT_DIR"]


def test_the_operator_serves_the_webhook_as_the_chart_configures_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainpipe_operator.controller.settings import OperatorSettings

    values = env(render())
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = OperatorSettings()
    assert settings.webhook_port == 9443 and settings.webhook_addr == "0.0.0.0"
    assert settings.webhook_cert_dir == Path("/etc/trainpipe/webhook")
    assert settings.webhook_host == "trainpipe-webhook.trainpipe-system.svc"
    assert settings.operator_user == "system:serviceaccount:trainpipe-system:trainpipe"  # the chart's ServiceAccount


def test_the_webhooks_rbac_is_granted_with_it_and_only_then() -> None:
    assert SAR_RULE in one(render(), "ClusterRole")["rules"]
    assert operator_rules("webhook") == [SAR_RULE]
    off = render(sets={"webhook.enabled": "false"})
    assert SAR_RULE not in one(off, "ClusterRole")["rules"]
    assert not [d for d in off if d["kind"] in WEBHOOK_KINDS | {"Secret"}]
    assert not [s for s in by_kind(off, "Service") if s["metadata"]["name"].endswith("-webhook")]
    assert not [k for k in env(off) if k.startswith("TRAINPIPE_WEBHOOK")]
    assert "webhook" not in {p["name"] for p in container(off)["ports"]}


def test_namespaced_mode_calls_the_webhook_for_its_namespaces_and_grants_the_review() -> None:
    docs = render(CHART / "ci" / "namespaced-values.yaml")
    for hook in hooks(docs).values():
        assert hook["namespaceSelector"] == {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert SAR_RULE in cluster_role["rules"]  # a SubjectAccessReview is cluster-scoped


def test_cert_manager_issues_the_certificate_and_injects_the_ca() -> None:
    docs = render(sets={"webhook.certManager.enabled": "true"})
    assert not by_kind(docs, "Secret")
    issuer = one(docs, "Issuer")
    certificate = one(docs, "Certificate")
    assert issuer["spec"] == {"selfSigned": {}}
    assert certificate["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": "Issuer"}
    assert certificate["spec"]["secretName"] == "trainpipe-webhook-tls" and certificate["spec"]["isCA"] is True
    assert "trainpipe-webhook.trainpipe-system.svc" in certificate["spec"]["dnsNames"]
    for kind in WEBHOOK_KINDS:
        config = one(docs, kind)
        assert config["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"trainpipe-system/{certificate['metadata']['name']}"}
        assert all("caBundle" not in h["clientConfig"] for h in config["webhooks"])
    given = render(sets={"webhook.certManager.enabled": "true", "webhook.certManager.issuerRef.name": "corp-ca",
                         "webhook.certManager.issuerRef.kind": "ClusterIssuer"})
    assert not by_kind(given, "Issuer")
    assert one(given, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}
