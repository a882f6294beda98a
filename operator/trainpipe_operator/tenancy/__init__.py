"""The boundary between tenants (namespaces) sharing one operator: pure rules
of shape ``(spec, namespace, settings) -> list[str]`` (messages starting with
the field path and saying what is allowed). The admission webhook runs
``RULES``; the operator enforces the same when it reconciles, because the
webhook can be turned off."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainpipe_operator.tenancy.paths import check_paths, check_real_paths
from trainpipe_operator.tenancy.ray_access import check_ray_address
from trainpipe_operator.tenancy.secrets import (
    SECRET_TYPE,
    RayCredential,
    check_token_secret,
    credential,
)
from trainpipe_operator.tenancy.settings import TenancySettings
from trainpipe_operator.tenancy.tracking_access import check_tracking_uri

Rule = Callable[[dict[str, Any], str, TenancySettings], list[str]]
RULES: tuple[Rule, ...] = (check_paths, check_ray_address, check_tracking_uri)


def check_all(spec: dict[str, Any], namespace: str, settings: TenancySettings) -> list[str]:
    """Every pure rule's messages, in order."""
    return [message for rule in RULES for message in rule(spec, namespace, settings)]


__all__ = ["RULES", "SECRET_TYPE", "RayCredential", "Rule", "TenancySettings", "check_all", "check_paths",
           "check_ray_address", "check_real_paths", "check_token_secret", "check_tracking_uri", "credential"]
