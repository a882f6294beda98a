"""``spec.tracking`` (issue 13): off by default; every invalid value refused
naming its field and what is allowed; a credential written into a tracking
URI refused without being echoed; the parent run's params; the
TrackingDegraded condition built from ``status.tracking``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from trainpipe_operator.controller.conditions import build_conditions
from trainpipe_operator.spec.load import ManifestError, load_manifest
from trainpipe_operator.spec.pipeline import TrainingPipeline, redact_uri
from trainpipe_operator.spec.status import PipelineStatus, TrackingStatus
from trainpipe_operator.tracking.params import flatten, spec_hash, spec_params

NOW = "2026-01-01T00:00:00+00:00"
SECRET = "s3cr3t-pa55"


def _manifest(tracking: Any = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"data": {"source": "builtin:digits"}, **spec}
    if tracking is not None:
        body["tracking"] = tracking
    return {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "metadata": {"name": "digits"},
            "spec": body}


def _problems(tmp_path: Path, manifest: dict[str, Any], overrides: list[str] | None = None) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, overrides)
    return caught.value.problems


def test_tracking_is_off_by_default() -> None:
    assert TrainingPipeline.model_validate(_manifest()).spec.tracking is None


def test_a_full_tracking_section_and_its_defaults() -> None:
    spec = TrainingPipeline.model_validate(_manifest({
        "mlflow": {"trackingUri": "https://mlflow.example.org:8443/prefix"},
        "wandb": {"project": "digits"},
    })).spec
    tracking = spec.tracking
    assert tracking is not None and tracking.mlflow is not None and tracking.wandb is not None
    assert tracking.mlflow.tracking_uri == "https://mlflow.example.org:8443/prefix"
    assert tracking.mlflow.experiment is None and tracking.mlflow.registered_model is None  # defaults: the pipeline's
    assert tracking.wandb.mode == "offline" and tracking.wandb.entity is None
    assert tracking.step_every == 50 and tracking.log_checkpoints is False


# (tracking section, the field path the line names, fragments: what is allowed)
INVALID = [
    pytest.param({}, "spec.tracking", ["mlflow (trackingUri) and/or wandb (project)"], id="no-destination"),
    pytest.param({"mlflow": {}}, "spec.tracking.mlflow.trackingUri", ["required field is missing"],
                 id="mlflow-without-uri"),
    pytest.param({"mlflow": {"trackingUri": "ftp://h:21"}}, "spec.tracking.mlflow.trackingUri",
                 ["http or https", "'ftp'"], id="uri-scheme"),
    pytest.param({"mlflow": {"trackingUri": "mlflow:5000"}}, "spec.tracking.mlflow.trackingUri",
                 ["http or https"], id="uri-without-scheme"),
    pytest.param({"mlflow": {"trackingUri": "http://"}}, "spec.tracking.mlflow.trackingUri", ["names no host"],
                 id="uri-without-host"),
    pytest.param({"mlflow": {"trackingUri": "http://h:99999"}}, "spec.tracking.mlflow.trackingUri",
                 ["not a URL", "http(s)://host[:port][/path]"], id="uri-port-out-of-range"),
    pytest.param({"mlflow": {"trackingUri": "http://h:5000/?token=x"}}, "spec.tracking.mlflow.trackingUri",
                 ["query or fragment"], id="uri-query"),
    pytest.param({"mlflow": {"trackingUri": "http://h", "registeredModel": "team/model"}},
                 "spec.tracking.mlflow.registeredModel", ["cannot contain '/' or ':'"], id="model-name-slash"),
    pytest.param({"mlflow": {"trackingUri": "http://h", "registeredModel": ".."}},
                 "spec.tracking.mlflow.registeredModel", ["not a usable model name"], id="model-name-dots"),
    pytest.param({"mlflow": {"trackingUri": "http://h", "registeredModel": "m" * 257}},
                 "spec.tracking.mlflow.registeredModel", ["at most 256 characters"], id="model-name-long"),
    pytest.param({"mlflow": {"trackingUri": "http://h", "experiment": ""}}, "spec.tracking.mlflow.experiment",
                 ["at least 1 character"], id="experiment-empty"),
    pytest.param({"mlflow": {"trackingUri": "http://h", "experimentName": "x"}},
                 "spec.tracking.mlflow.experimentName", ["unknown field"], id="unknown-field"),
    pytest.param({"wandb": {}}, "spec.tracking.wandb.project", ["required field is missing"], id="wandb-no-project"),
    pytest.param({"wandb": {"project": "a/b"}}, "spec.tracking.wandb.project", ["W&B name", "'/'"],
                 id="wandb-project-slash"),
    pytest.param({"wandb": {"project": "p", "entity": "me:you"}}, "spec.tracking.wandb.entity",
                 ["W&B name", "':'"], id="wandb-entity-colon"),
    pytest.param({"wandb": {"project": "p", "mode": "disabled"}}, "spec.tracking.wandb.mode",
                 ["'online'", "'offline'", "'disabled'"], id="wandb-mode"),
    pytest.param({"wandb": {"project": "p"}, "stepEvery": 0}, "spec.tracking.stepEvery",
                 ["greater than or equal to 1", "got 0"], id="stepEvery-0"),
    pytest.param({"wandb": {"project": "p"}, "logCheckpoints": "sometimes"}, "spec.tracking.logCheckpoints",
                 ["true or false"], id="logCheckpoints-not-bool"),
]


@pytest.mark.parametrize("tracking, field, fragments", INVALID)
def test_an_invalid_tracking_section_names_the_field_and_what_is_allowed(
        tmp_path: Path, tracking: dict[str, Any], field: str, fragments: list[str]) -> None:
    problems = _problems(tmp_path, _manifest(tracking))
    line = next((p for p in problems if f": {field}: " in p), None)
    assert line is not None, problems
    missing = [f for f in fragments if f not in line]
    assert not missing, (missing, line)


def test_a_credential_in_the_uri_is_refused_without_being_shown(tmp_path: Path) -> None:
    uri = f"https://alice:{SECRET}@mlflow.example.org/"
    problems = _problems(tmp_path, _manifest({"mlflow": {"trackingUri": uri}}))
    assert len(problems) == 1
    line = problems[0]
    assert ": spec.tracking.mlflow.trackingUri: " in line
    assert "MLFLOW_TRACKING_TOKEN" in line and "***@mlflow.example.org" in line
    assert SECRET not in line and "alice" not in line


def test_a_credential_given_with_set_is_not_shown_either(tmp_path: Path) -> None:
    problems = _problems(tmp_path, _manifest(),
                         [f"tracking.mlflow.trackingUri=http://bob:{SECRET}@localhost:5000"])
    assert problems and all(SECRET not in p and "bob" not in p for p in problems), problems
    assert any(": spec.tracking.mlflow.trackingUri: " in p for p in problems)


def test_tracking_can_be_turned_on_with_set(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(_manifest()), encoding="utf-8")
    pipeline = load_manifest(path, ["tracking.mlflow.trackingUri=http://127.0.0.1:5000",
                                    "tracking.stepEvery=10"])
    assert pipeline.spec.tracking is not None and pipeline.spec.tracking.mlflow is not None
    assert pipeline.spec.tracking.mlflow.tracking_uri == "http://127.0.0.1:5000"
    assert pipeline.spec.tracking.step_every == 10


def test_redact_uri_hides_only_the_user_information() -> None:
    assert redact_uri(f"http://u:{SECRET}@h:5000/p") == "http://***@h:5000/p"
    assert redact_uri("http://h:5000/p") == "http://h:5000/p"


def test_the_parent_runs_params_are_the_resolved_spec_flattened_and_its_hash() -> None:
    spec = TrainingPipeline.model_validate(_manifest(
        {"mlflow": {"trackingUri": "http://127.0.0.1:5000"}},
        data={"source": "builtin:digits", "augment": ["hflip", "crop"]}, baseline={"lr": 0.01})).spec
    params = spec_params(spec)
    assert params["spec.baseline.lr"] == "0.01"
    assert params["spec.model.name"] == "smallcnn"  # resolved: the task's default model
    assert params["spec.data.augment"] == '["hflip", "crop"]'
    assert params["spec.tracking.mlflow.trackingUri"] == "http://127.0.0.1:5000"
    assert params["spec_hash"] == spec_hash(spec) and len(spec_hash(spec)) == 16
    other = spec.model_copy(update={"seed": 7})
    assert spec_hash(other) != spec_hash(spec)


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2], "d": {}, "e": True, "f": None}}, "x") == {
        "x.a.b": "1", "x.a.c": "[1, 2]", "x.a.d": "{}", "x.a.e": "true", "x.a.f": "null"}


def _conditions(tracking: TrackingStatus | None) -> dict[str, Any]:
    status = PipelineStatus(phase="Succeeded", tracking=tracking)
    return {c.type: c for c in build_conditions(status, 1, NOW)}


def test_tracking_degraded_is_absent_without_tracking() -> None:
    assert "TrackingDegraded" not in _conditions(None)


def test_tracking_degraded_is_false_while_every_call_went_through() -> None:
    condition = _conditions(TrackingStatus(mlflow_parent_run_id="abc"))["TrackingDegraded"]
    assert condition.status == "False" and condition.reason == "Tracked"


def test_tracking_degraded_names_the_server_and_what_is_retried() -> None:
    tracking = TrackingStatus(degraded="the MLflow server http://127.0.0.1:9 could not be reached to record gate "
                              "baseline (refused)", degraded_reason="ServerUnreachable", pending=["gate:baseline"])
    conditions = _conditions(tracking)
    condition = conditions["TrackingDegraded"]
    assert condition.status == "True" and condition.reason == "ServerUnreachable"
    assert "http://127.0.0.1:9" in condition.message and "gate:baseline" in condition.message
    assert conditions["Ready"].status == "True"  # information only: tracking never decides the pipeline
