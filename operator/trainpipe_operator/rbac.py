"""The operator's RBAC objects, built from ``deploy/operator-rules.yaml``
(the rules the chart renders too)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

ROLE_NAME = "trainpipe-operator"


def rules_text() -> str:
    return (resources.files("trainpipe_operator.deploy") / "operator-rules.yaml").read_text(encoding="utf-8")


def operator_rules(scope: str = "all") -> list[dict[str, Any]]:
    """``namespaced``: the rules a Role grants in each watched namespace;
    ``cluster``: the cluster-scoped reads; ``webhook``: what the admission
    webhook needs (granted with it); ``all``: every one (the ClusterRole)."""
    rules = yaml.safe_load(rules_text())
    if scope == "all":
        return [*rules["namespaced"], *rules["cluster"], *rules["webhook"]]
    return list(rules[scope])


def cluster_role(name: str = ROLE_NAME) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "trainpipe"}},
            "rules": operator_rules()}


def cluster_role_binding(subject: dict[str, str], name: str = ROLE_NAME) -> dict[str, Any]:
    """``subject``: ``{"kind": "User", "name": ...}`` in tests, a
    ServiceAccount in the chart."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "trainpipe"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{**subject, **({"apiGroup": "rbac.authorization.k8s.io"} if subject["kind"] == "User" else {})}]}
