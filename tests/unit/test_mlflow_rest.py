"""The MLflow REST client's pure parts: which tracking URIs it takes, that
credentials never show, where they come from, and how a log-batch is cut to
MLflow's limits. (Its calls against a real server: tests/integration.)"""

from __future__ import annotations

import json
import pickle

import pytest

from trainpipe_trainer.tracking.mlflow_rest import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
    Metric,
    MlflowCredentials,
    MlflowRest,
    batches,
    check_tracking_uri,
)

SECRET = "hunter2-SECRET"


@pytest.mark.parametrize("uri", [
    f"http://alice:{SECRET}@mlflow.example:5000",
    f"https://{SECRET}@mlflow.example",
    "http://alice@mlflow.example",
])
def test_a_tracking_uri_with_userinfo_is_refused_without_echoing_it(uri: str) -> None:
    with pytest.raises(ValueError, match="credentials") as caught:
        MlflowRest(uri)
    assert SECRET not in str(caught.value) and "alice" not in str(caught.value)


@pytest.mark.parametrize("uri", ["mlflow.example:5000", "file:///tmp/mlruns", "databricks", "http://", "http://h/?x=1"])
def test_only_an_http_base_url_is_taken(uri: str) -> None:
    with pytest.raises(ValueError, match="MLflow tracking URI"):
        check_tracking_uri(uri)


def test_the_tracking_uri_is_kept_without_a_trailing_slash() -> None:
    assert MlflowRest("https://mlflow.example/prefix/").uri == "https://mlflow.example/prefix"
    assert check_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


@pytest.mark.parametrize("credentials", [
    MlflowCredentials(token=SECRET),
    MlflowCredentials(username="alice", password=SECRET),
])
def test_repr_and_str_hide_credentials(credentials: MlflowCredentials) -> None:
    client = MlflowRest("http://mlflow.example:5000", credentials)
    shown = " ".join([repr(credentials), str(credentials), repr(client), str(client)])
    assert SECRET not in shown
    assert "mlflow.example:5000" in repr(client)
    assert credentials.kind in repr(client)


def test_a_client_is_not_pickled_with_its_credentials() -> None:
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(MlflowRest("http://mlflow.example", MlflowCredentials(token=SECRET)))


def test_authorization_header_values() -> None:
    assert MlflowCredentials(token="t0k").authorization() == "Bearer t0k"
    assert MlflowCredentials(username="alice", password="pw").authorization() == "Basic YWxpY2U6cHc="
    assert MlflowCredentials().authorization() is None


def test_from_env_reads_a_token_or_a_username_and_password() -> None:
    assert MlflowCredentials.from_env({"MLFLOW_TRACKING_TOKEN": "t"}) == MlflowCredentials(token="t")
    assert MlflowCredentials.from_env({"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"}) == \
        MlflowCredentials(username="u", password="p")
    # The token wins, as in MLflow's own client.
    assert MlflowCredentials.from_env({"MLFLOW_TRACKING_TOKEN": "t", "MLFLOW_TRACKING_USERNAME": "u",
                                       "MLFLOW_TRACKING_PASSWORD": "p"}).kind == "bearer"
    assert MlflowCredentials.from_env({}).kind == "none"
    assert MlflowCredentials.from_env({"MLFLOW_TRACKING_TOKEN": ""}).kind == "none"


def test_from_env_refuses_half_of_basic_auth_naming_the_missing_variable() -> None:
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_PASSWORD is not") as caught:
        MlflowCredentials.from_env({"MLFLOW_TRACKING_USERNAME": "alice"})
    assert "alice" not in str(caught.value)
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_USERNAME is not") as caught:
        MlflowCredentials.from_env({"MLFLOW_TRACKING_PASSWORD": SECRET})
    assert SECRET not in str(caught.value)


def test_batches_respect_mlflows_limits_and_lose_nothing() -> None:
    metrics = [Metric(f"m{i % 7}", float(i), i, 1_700_000_000_000 + i) for i in range(2345)]
    params = {f"p{i}": str(i) for i in range(250)}
    tags = {f"t{i}": str(i) for i in range(130)}
    bodies = list(batches(metrics, params, tags))
    for body in bodies:
        assert len(body.get("metrics", [])) <= MAX_METRICS_PER_BATCH
        assert len(body.get("params", [])) <= MAX_PARAMS_TAGS_PER_BATCH
        assert len(body.get("tags", [])) <= MAX_PARAMS_TAGS_PER_BATCH
        assert sum(len(v) for v in body.values()) <= MAX_ENTITIES_PER_BATCH
        assert len(json.dumps(body)) < 1_000_000
    assert [m for b in bodies for m in b.get("metrics", [])] == \
        [{"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp_ms} for m in metrics]
    assert {p["key"]: p["value"] for b in bodies for p in b.get("params", [])} == params
    assert {t["key"]: t["value"] for b in bodies for t in b.get("tags", [])} == tags
    # As few requests as the limits allow: 250 params need 3, and the metrics
    # fill what the params and tags leave (800 + 870 + 675).
    assert [len(b.get("metrics", [])) for b in bodies] == [800, 870, 675]


def test_batches_stay_under_the_request_size_limit_with_long_values() -> None:
    params = {f"p{i}": "x" * 7000 for i in range(100)}
    tags = {f"t{i}": "y" * 9000 for i in range(100)}
    bodies = list(batches([], params, tags))
    assert len(bodies) > 1
    for body in bodies:
        assert len(json.dumps(body)) < 1_000_000
    values = [p["value"] for b in bodies for p in b.get("params", [])]
    assert len(values) == 100 and all(len(v) == MAX_PARAM_VAL_LENGTH for v in values)
    assert all(v.endswith("[truncated]") for v in values)
    assert all(len(t["value"]) == MAX_TAG_VAL_LENGTH for b in bodies for t in b.get("tags", []))


def test_non_finite_metric_values_are_sent_as_mlflows_json_strings() -> None:
    metrics = [Metric("a", float("nan"), 0, 1), Metric("b", float("inf"), 0, 1), Metric("c", float("-inf"), 0, 1)]
    [body] = batches(metrics, {}, {})
    assert [m["value"] for m in body["metrics"]] == ["NaN", "Infinity", "-Infinity"]
    json.dumps(body, allow_nan=False)  # valid JSON


def test_nothing_to_log_makes_no_request() -> None:
    assert list(batches([], {}, {})) == []
