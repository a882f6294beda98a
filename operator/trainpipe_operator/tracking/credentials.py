"""The operator's MLflow credentials: a Secret, named by the operator's
configuration (``TRAINPIPE_MLFLOW_SECRET``; chart value
``operator.mlflowCredentialsSecret``), read in each pipeline's namespace, so
every team brings its own. The same rules as the Ray token Secret
(tenancy/secrets.py):

- of type ``trainpipe.io/mlflow-credentials`` (a service-account token, or
  any other Secret, is never read for this);
- holding ``trackingUri``, and ``token`` or ``username`` and ``password``;
- used only for the tracking server it names: a pipeline whose
  ``spec.tracking.mlflow.trackingUri`` is another server gets no
  credentials (its calls go without; TrackingDegraded says why).

Messages name the Secret and the keys, never a value but the URI."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from trainpipe_operator.spec.pipeline import redact_uri
from trainpipe_operator.tenancy.secrets import secret_value
from trainpipe_trainer.tracking.mlflow_rest import MlflowCredentials

SECRET_TYPE = "trainpipe.io/mlflow-credentials"
EXPECTED = (f"a Secret of type {SECRET_TYPE} in the pipeline's namespace with the keys 'trackingUri' (the server "
            "the credentials belong to) and 'token', or 'username' and 'password'")



def same_server(a: str, b: str) -> bool:
    """Scheme, host (any case), port (the scheme's default filled in) and
    path (without a trailing slash) equal."""
    try:
        x, y = urlsplit(a), urlsplit(b)
        ports = (x.port or (443 if x.scheme == "https" else 80), y.port or (443 if y.scheme == "https" else 80))
    except ValueError:
        return False
    return ((x.scheme, (x.hostname or "").lower(), ports[0], x.path.rstrip("/"))
            == (y.scheme, (y.hostname or "").lower(), ports[1], y.path.rstrip("/")))


def from_secret(secret: dict[str, Any] | None, name: str, namespace: str,
                tracking_uri: str) -> tuple[MlflowCredentials | None, str | None]:
    """The credentials ``secret`` (the API object as a dict: ``type``, base64
    ``data``; None: there is none in the namespace, and nothing to say) gives
    a pipeline tracking to ``tracking_uri``, or None and why not (pure)."""
    where = f"{namespace}/{name}"
    if secret is None:  # a team whose server needs none creates none
        return None, None
    kind = secret.get("type") or "Opaque"
    if kind != SECRET_TYPE:
        return None, f"Secret {where} has type {kind!r}, not {SECRET_TYPE}: not read; expected {EXPECTED}"
    data = secret.get("data") or {}
    bound = secret_value(data, "trackingUri")
    token, username, password = (secret_value(data, k) for k in ("token", "username", "password"))
    if bound is None or not (token or (username and password)):
        return None, f"Secret {where} lacks keys (valid base64, non-empty): expected {EXPECTED}"
    if not same_server(bound, tracking_uri):
        return None, (f"Secret {where} holds credentials for {redact_uri(bound)}, not for "
                      f"spec.tracking.mlflow.trackingUri {redact_uri(tracking_uri)}: credentials go to their own "
                      "server only, so the calls go without")
    if token:
        return MlflowCredentials(token=token), None
    return MlflowCredentials(username=username, password=password), None


#: The Secret's keys, by the environment variable the trainer reads (MlflowCredentials.from_env).
ENV_KEYS = {"bearer": (("MLFLOW_TRACKING_TOKEN", "token"),),
            "basic": (("MLFLOW_TRACKING_USERNAME", "username"), ("MLFLOW_TRACKING_PASSWORD", "password"))}


def secret_env(secret_name: str | None, credentials: MlflowCredentials | None) -> list[dict[str, Any]]:
    """The container ``env`` entries that give a job's pods the credentials
    the control plane verified (``from_secret``): references to the Secret's
    keys (``valueFrom.secretKeyRef``), resolved by the kubelet when the pod
    starts, so the value is never in the RayJob, its status or the run
    directory. Only the kind the Secret holds (a token, or a username and
    password); none without verified credentials."""
    if not secret_name or credentials is None or credentials.kind not in ENV_KEYS:
        return []
    return [{"name": variable, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}
            for variable, key in ENV_KEYS[credentials.kind]]
