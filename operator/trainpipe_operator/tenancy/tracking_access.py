"""Which MLflow tracking servers a pipeline may name.

``spec.tracking.mlflow.trackingUri`` is chosen by the pipeline's author, and
the operator itself sends requests there (parent runs, gate records, the
registry). Left open, any team could make the operator call any address its
network reaches. So, as for Ray addresses, the URI must be one the
operator's configuration allows (``TRAINPIPE_TRACKING_ALLOWED_URIS``, the
chart's ``operator.trackingAllowedUris``), compared after the same
normalisation (scheme and host lowercased, the default port explicit, no
trailing slash), never by prefix. ``trainpipe run`` on one's own machine has
no such rule.
"""

from __future__ import annotations

from typing import Any

from trainpipe_operator.tenancy.ray_access import normalize_address
from trainpipe_operator.tenancy.settings import TenancySettings

FIELD = "spec.tracking.mlflow.trackingUri"


def allowed_tracking_uris(settings: TenancySettings) -> list[str]:
    return sorted({n for n in (normalize_address(u) for u in settings.tracking_allowed_uris) if n})


def check_tracking_uri(spec: dict[str, Any], namespace: str, settings: TenancySettings) -> list[str]:
    """Rule: a tracked pipeline's MLflow server is on the allow-list (pure)."""
    mlflow = ((spec.get("tracking") or {}).get("mlflow") or {})
    uri = mlflow.get("trackingUri")
    if not uri:
        return []
    allowed = allowed_tracking_uris(settings)
    listed = ", ".join(allowed) if allowed else (
        "none (MLflow tracking is off in this operator; an administrator adds servers to the chart's "
        "operator.trackingAllowedUris)")
    normal = normalize_address(str(uri))
    if normal is None or normal not in allowed:
        return [f"{FIELD}: {uri!r} is not an MLflow server this operator may call; allowed: {listed}"]
    return []
