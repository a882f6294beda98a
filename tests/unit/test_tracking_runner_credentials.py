"""The operator's MLflow credentials (issue 13): a Secret the operator's
configuration names, read in each pipeline's namespace, used only when it
is of trainpipe's type and for the pipeline's own server; otherwise the
calls go without and TrackingDegraded says why, never showing a value. The
chart passes the Secret's name."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from kubernetes.client import V1ObjectMeta, V1Secret
from kubernetes.client.exceptions import ApiException

from tests.chart_render import one, render
from trainpipe_operator.controller.reconcile import Reconciler
from trainpipe_operator.controller.settings import OperatorSettings
from trainpipe_operator.spec.pipeline import TrainingPipeline
from trainpipe_operator.spec.status import TrackingStatus
from trainpipe_operator.tracking import health
from trainpipe_operator.tracking.credentials import SECRET_TYPE, from_secret, same_server

URI = "http://mlflow.team-a.svc:5000"
TOKEN = "tok-9c2f55e1"


def _secret(kind: str = SECRET_TYPE, **data: str) -> dict[str, Any]:
    return {"type": kind, "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_a_token_for_the_pipelines_own_server_is_used() -> None:
    credentials, problem = from_secret(_secret(trackingUri=URI + "/", token=TOKEN), "mlflow", "team-a",
                                       "HTTP://MLflow.team-a.svc:5000")
    assert problem is None and credentials is not None and credentials.token == TOKEN
    assert TOKEN not in repr(credentials)


def test_basic_auth_is_used_too() -> None:
    credentials, problem = from_secret(_secret(trackingUri=URI, username="svc", password="pw-1"), "mlflow",
                                       "team-a", URI)
    assert problem is None and credentials is not None
    assert (credentials.username, credentials.password) == ("svc", "pw-1")


def test_no_secret_means_no_credentials_and_nothing_to_say() -> None:
    assert from_secret(None, "mlflow", "team-a", URI) == (None, None)


def test_credentials_for_another_server_are_not_sent() -> None:
    credentials, problem = from_secret(_secret(trackingUri="http://other:5000", token=TOKEN), "mlflow", "team-a",
                                       URI)
    assert credentials is None and problem is not None
    assert "team-a/mlflow" in problem and "http://other:5000" in problem and URI in problem
    assert TOKEN not in problem


def test_a_secret_of_another_type_is_never_read() -> None:
    for kind in ("kubernetes.io/service-account-token", "Opaque"):
        credentials, problem = from_secret(_secret(kind, trackingUri=URI, token=TOKEN), "mlflow", "team-a", URI)
        assert credentials is None and problem is not None and repr(kind) in problem and SECRET_TYPE in problem
        assert TOKEN not in problem


def test_a_secret_without_its_keys_is_named() -> None:
    for data in ({"token": TOKEN}, {"trackingUri": URI}, {"trackingUri": URI, "username": "svc"}):
        credentials, problem = from_secret(_secret(**data), "mlflow", "team-a", URI)
        assert credentials is None and problem is not None and "trackingUri" in problem


def test_same_server() -> None:
    assert same_server("https://h/p/", "https://H:443/p")
    assert not same_server("http://h:5000", "https://h:5000")
    assert not same_server("http://h:5000/a", "http://h:5000/b")


class _CoreApi:
    """The one call the reconcile makes, answering as the API server does."""

    def __init__(self, secret: V1Secret | None) -> None:
        self.secret = secret
        self.calls: list[tuple[str, str]] = []

    def read_namespaced_secret(self, name: str, namespace: str) -> V1Secret:
        self.calls.append((name, namespace))
        if self.secret is None:
            raise ApiException(status=404, reason="Not Found")
        return self.secret


def _pipeline(namespace: str = "team-a") -> TrainingPipeline:
    return TrainingPipeline.model_validate({
        "apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
        "metadata": {"name": "p", "namespace": namespace, "uid": "0123456789ab"},
        "spec": {"data": {"source": "builtin:digits"}, "tracking": {"mlflow": {"trackingUri": URI}}}})


def test_the_reconcile_reads_the_named_secret_in_the_pipelines_namespace(tmp_path: Path) -> None:
    raw = _secret(trackingUri=URI, token=TOKEN)
    api = _CoreApi(V1Secret(type=raw["type"], data=raw["data"], metadata=V1ObjectMeta(name="mlflow")))
    reconciler = Reconciler(OperatorSettings(artifact_root=tmp_path, mlflow_secret="mlflow"), core_api=api)
    credentials, problem = reconciler._tracking_credentials(_pipeline(), "team-a")
    assert api.calls == [("mlflow", "team-a")]
    assert problem is None and credentials is not None and credentials.token == TOKEN

    missing = Reconciler(OperatorSettings(artifact_root=tmp_path, mlflow_secret="mlflow"), core_api=_CoreApi(None))
    assert missing._tracking_credentials(_pipeline(), "team-a") == (None, None)
    unnamed = Reconciler(OperatorSettings(artifact_root=tmp_path), core_api=api)
    assert unnamed._tracking_credentials(_pipeline(), "team-a") == (None, None)
    assert api.calls == [("mlflow", "team-a")]  # no Secret named: none read


def test_a_secret_that_does_not_fit_is_said_in_the_condition() -> None:
    tracking = TrackingStatus()
    health.no_credentials(tracking, "Secret team-a/mlflow holds credentials for http://other:5000, not ...")
    assert tracking.degraded_reason == health.NO_CREDENTIALS and "team-a/mlflow" in (tracking.degraded or "")


def test_the_chart_passes_the_secrets_name() -> None:
    def env(docs: list[dict]) -> dict[str, str]:
        container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    assert "TRAINPIPE_MLFLOW_SECRET" not in env(render())
    assert env(render(sets={"operator.mlflowCredentialsSecret": "mlflow"}))["TRAINPIPE_MLFLOW_SECRET"] == "mlflow"


def test_the_chart_passes_the_tracking_allow_list() -> None:
    def env(docs: list[dict]) -> dict[str, str]:
        container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    assert env(render())["TRAINPIPE_TRACKING_ALLOWED_URIS"] == ""
    listed = env(render(sets={"operator.trackingAllowedUris[0]": "http://mlflow:5000",
                              "operator.trackingAllowedUris[1]": "https://mlflow.example.org"}))
    assert listed["TRAINPIPE_TRACKING_ALLOWED_URIS"] == "http://mlflow:5000,https://mlflow.example.org"
