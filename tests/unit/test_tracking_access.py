"""The MLflow tracking URIs a pipeline may name under the operator: the
allow-list, compared after normalisation, never by prefix; the admission
webhook and the reconcile share the rule (tenancy.RULES)."""

from __future__ import annotations

from typing import Any

from trainpipe_operator import tenancy
from trainpipe_operator.controller.settings import OperatorSettings
from trainpipe_operator.tenancy.settings import TenancySettings
from trainpipe_operator.tenancy.tracking_access import check_tracking_uri

ALLOWED = TenancySettings(artifact_root="/artifacts", tracking_allowed_uris=("http://MLflow.team-a.svc:5000/",))


def spec(uri: str | None) -> dict[str, Any]:
    return {"tracking": {"mlflow": {"trackingUri": uri}}} if uri else {}


def test_an_allowed_server_passes_after_normalisation() -> None:
    assert check_tracking_uri(spec("http://mlflow.team-a.svc:5000"), "team-a", ALLOWED) == []
    assert check_tracking_uri(spec("HTTP://mlflow.team-a.svc:5000/"), "team-a", ALLOWED) == []


def test_another_server_is_refused_naming_the_field_and_the_allowed_ones() -> None:
    (message,) = check_tracking_uri(spec("http://169.254.169.254:80"), "team-a", ALLOWED)
    assert message.startswith("spec.tracking.mlflow.trackingUri: 'http://169.254.169.254:80'")
    assert "allowed: http://mlflow.team-a.svc:5000" in message


def test_a_prefix_or_another_port_is_not_the_same_server() -> None:
    for uri in ("http://mlflow.team-a.svc:5000.evil.example", "http://mlflow.team-a.svc:5001",
                "https://mlflow.team-a.svc:5000"):
        assert check_tracking_uri(spec(uri), "team-a", ALLOWED), uri


def test_with_no_list_mlflow_tracking_is_refused_and_the_message_says_how_to_allow_it() -> None:
    (message,) = check_tracking_uri(spec("http://mlflow:5000"), "team-a", TenancySettings(artifact_root="/a"))
    assert "operator.trackingAllowedUris" in message


def test_untracked_pipelines_and_wandb_only_are_not_concerned() -> None:
    none = TenancySettings(artifact_root="/a")
    assert check_tracking_uri({}, "team-a", none) == []
    assert check_tracking_uri({"tracking": {"wandb": {"project": "p"}}}, "team-a", none) == []


def test_the_rule_is_one_the_webhook_and_the_reconcile_run() -> None:
    assert check_tracking_uri in tenancy.RULES


def test_the_operator_reads_its_list_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRAINPIPE_TRACKING_ALLOWED_URIS", "http://a:5000, http://b:5000")
    settings = OperatorSettings()
    assert settings.tenancy().tracking_allowed_uris == ("http://a:5000", "http://b:5000")


def test_a_pipeline_names_only_its_own_namespaces_experiments_and_models() -> None:
    def with_names(**names: str) -> dict[str, Any]:
        return {"tracking": {"mlflow": {"trackingUri": "http://mlflow.team-a.svc:5000", **names}}}

    assert check_tracking_uri(with_names(experiment="team-a/vision", registeredModel="team-a.digits"),
                              "team-a", ALLOWED) == []
    (experiment,) = check_tracking_uri(with_names(experiment="team-b/vision"), "team-a", ALLOWED)
    assert experiment.startswith("spec.tracking.mlflow.experiment: 'team-b/vision'") and "'team-a/'" in experiment
    # team-a's prefix is not a prefix of "team-a-evil": the separator is part of it
    for other in ("team-b.digits", "digits", "team-a-evil.digits"):
        (model,) = check_tracking_uri(with_names(registeredModel=other), "team-a", ALLOWED)
        assert model.startswith("spec.tracking.mlflow.registeredModel:") and "'team-a.'" in model, other


def test_under_the_operator_the_default_registered_model_is_the_namespaces(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from trainpipe_operator.spec.pipeline import TrainingPipeline
    from trainpipe_operator.tracking.runs import PipelineTracker

    def tracker(namespace: str | None) -> PipelineTracker:
        metadata = {"name": "digits", **({"namespace": namespace} if namespace else {})}
        pipeline = TrainingPipeline.model_validate({
            "apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "metadata": metadata,
            "spec": {"data": {"source": "builtin:digits"},
                     "tracking": {"mlflow": {"trackingUri": "http://mlflow.team-a.svc:5000"}}}})
        return PipelineTracker(pipeline, tmp_path)

    assert tracker("team-a").registered_model == "team-a.digits"
    assert tracker("team-a").experiment == "team-a/digits"
    assert tracker(None).registered_model == "digits"  # trainpipe run: no namespace
