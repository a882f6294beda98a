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

A shared server also holds every team's experiments and registered models,
and the operator moves a model's ``champion`` alias: so a pipeline may name
only its own namespace's, an experiment under ``<namespace>/`` and a
registered model ``<namespace>.<anything>`` (the defaults are
``<namespace>/<name>`` and ``<namespace>.<name>``). Namespaces hold no dots
or slashes, so one namespace's prefix is never another's.
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
    problems = []
    if normal is None or normal not in allowed:
        problems.append(f"{FIELD}: {uri!r} is not an MLflow server this operator may call; allowed: {listed}")
    experiment, model = mlflow.get("experiment"), mlflow.get("registeredModel")
    if experiment and not str(experiment).startswith(f"{namespace}/"):
        problems.append(f"spec.tracking.mlflow.experiment: {experiment!r} is not in namespace {namespace}'s "
                        f"experiments; allowed: a name starting with '{namespace}/' (default: '{namespace}/<name>')")
    if model and not str(model).startswith(f"{namespace}."):
        problems.append(f"spec.tracking.mlflow.registeredModel: {model!r} is not one of namespace {namespace}'s "
                        f"models; allowed: a name starting with '{namespace}.' (default: '{namespace}.<name>')")
    return problems
