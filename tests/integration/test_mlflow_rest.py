"""Our MLflow REST client against a real ``mlflow server``, read back with
MLflow's own client (mlflow-skinny); and its transport (credentials,
retries, redirects) against small local HTTP servers that record what they
were sent."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from trainpipe_operator.devcluster._proc import free_port
from trainpipe_trainer.tracking.mlflow_rest import (
    MAX_PARAM_VAL_LENGTH,
    Metric,
    MlflowCredentials,
    MlflowRequestError,
    MlflowRest,
    MlflowUnavailable,
)

pytestmark = pytest.mark.integration

TOKEN = "tok-SECRET-4711"
PASSWORD = "pw-SECRET-0815"


@pytest.fixture(scope="module")
def rest(mlflow_server) -> MlflowRest:
    return MlflowRest(mlflow_server.uri, timeout=10.0, retries=2, backoff=0.2)


@pytest.fixture(scope="module")
def reader(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)


def now_ms() -> int:
    return int(time.time() * 1000)


# ---- against the real server ----


def test_runs_params_metrics_tags_read_back_by_mlflow(rest: MlflowRest, reader: MlflowClient) -> None:
    experiment = rest.get_or_create_experiment("itest-runs")
    assert rest.get_or_create_experiment("itest-runs") == experiment  # found again, not duplicated
    assert reader.get_experiment_by_name("itest-runs").experiment_id == experiment

    parent = rest.create_run(experiment, "pipeline", {"trainpipe.pipeline": "digits", "trainpipe.runId": "r-1"})
    child = rest.create_run(experiment, "02_baseline", {"mlflow.parentRunId": parent, "trainpipe.phase": "baseline"})
    assert rest.find_run(experiment, {"trainpipe.pipeline": "digits", "trainpipe.runId": "r-1"}) == parent
    assert rest.find_run(experiment, {"trainpipe.runId": "r-2"}) is None

    stamp = now_ms()
    train = [Metric("train_loss", 1.0 / (e + 1), e, stamp + e) for e in range(1, 1201)]
    steps = [Metric("step/train_loss", 2.0 / (s + 1), s, stamp + s) for s in range(0, 1500, 1)]
    params = {f"train.p{i:03d}": str(i) for i in range(150)}
    params["model.long"] = "x" * (MAX_PARAM_VAL_LENGTH + 500)
    tags = {f"t.{i:03d}": f"v{i}" for i in range(120)}
    rest.log_batch(child, train + steps, params=params, tags=tags)  # 2700 metrics, 151 params, 120 tags: one call

    run = reader.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["trainpipe.phase"] == "baseline"
    assert {k: run.data.tags[k] for k in tags} == tags
    assert {k: v for k, v in run.data.params.items() if k != "model.long"} == \
        {k: v for k, v in params.items() if k != "model.long"}
    assert len(run.data.params["model.long"]) == MAX_PARAM_VAL_LENGTH  # cut, not refused
    history = sorted(reader.get_metric_history(child, "train_loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(m.step, m.value) for m in train]
    assert len(reader.get_metric_history(child, "step/train_loss")) == 1500
    assert [(m.step, m.value) for m in rest.metric_history(child, "train_loss")] == \
        [(m.step, m.value) for m in train]

    assert rest.last_step(child, "train_loss") == 1200
    assert rest.last_step(child, "step/train_loss") == 1499
    assert rest.last_step(child, "val_loss") is None

    rest.set_terminated(child, "FINISHED")
    rest.set_terminated(parent, "FAILED")
    assert reader.get_run(child).info.status == "FINISHED"
    assert reader.get_run(parent).info.status == "FAILED"
    assert reader.get_run(parent).info.end_time is not None


def test_artifacts_listed_and_downloaded_by_mlflow(rest: MlflowRest, reader: MlflowClient, tmp_path: Path) -> None:
    experiment = rest.get_or_create_experiment("itest-artifacts")
    run = rest.create_run(experiment, "artifacts", {})
    src = tmp_path / "src"
    (src / "previews").mkdir(parents=True)
    (src / "gate_report.md").write_text("# gate\npassed\n")
    (src / "previews" / "epoch_1.png").write_bytes(bytes(range(256)) * 40)
    single = tmp_path / "learning_curves.png"
    single.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 1000)

    assert rest.log_artifact(run, single) == "learning_curves.png"
    assert rest.log_artifacts(run, src, "reports") == ["reports/gate_report.md", "reports/previews/epoch_1.png"]

    assert sorted(a.path for a in reader.list_artifacts(run)) == ["learning_curves.png", "reports"]
    listed = {a.path: a.is_dir for a in reader.list_artifacts(run, "reports")}
    assert listed == {"reports/gate_report.md": False, "reports/previews": True}
    assert rest.list_artifacts(run) == ["learning_curves.png", "reports"]
    assert rest.list_artifacts(run, "reports/previews") == ["reports/previews/epoch_1.png"]

    got = Path(reader.download_artifacts(run, "reports", str(tmp_path / "down")))
    assert (got / "gate_report.md").read_text() == "# gate\npassed\n"
    assert (got / "previews" / "epoch_1.png").read_bytes() == (src / "previews" / "epoch_1.png").read_bytes()
    assert rest.read_artifact(run, "learning_curves.png") == single.read_bytes()


def test_registry_versions_aliases_and_tags(rest: MlflowRest, reader: MlflowClient, tmp_path: Path) -> None:
    experiment = rest.get_or_create_experiment("itest-registry")
    run = rest.create_run(experiment, "05_finalization", {})
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.onnx").write_bytes(b"onnx")
    rest.log_artifacts(run, tmp_path / "model", "model")

    rest.ensure_registered_model("digits-clf", "digits classifier")
    rest.ensure_registered_model("digits-clf")  # exists already: fine
    assert rest.find_model_version("digits-clf", {"trainpipe.runId": "r-1"}) is None
    first = rest.create_model_version("digits-clf", f"runs:/{run}/model", run,
                                      {"trainpipe.runId": "r-1", "test.accuracy": "0.97"}, "guide\n\nresults")
    second = rest.create_model_version("digits-clf", f"runs:/{run}/model", run, {"trainpipe.runId": "r-2"}, "")
    assert (first, second) == ("1", "2")
    assert rest.find_model_version("digits-clf", {"trainpipe.runId": "r-1"}) == first
    assert rest.find_model_version("digits-clf", {"trainpipe.runId": "r-2"}) == second
    assert rest.find_model_version("digits-clf", {"trainpipe.runId": "r-1", "test.accuracy": "0.5"}) is None

    rest.set_alias("digits-clf", "candidate", first)
    assert rest.get_version_by_alias("digits-clf", "champion") is None
    rest.set_alias("digits-clf", "champion", first)
    rest.set_alias("digits-clf", "champion", second)  # moved
    rest.set_model_version_tag("digits-clf", second, "approved_by", "alice")

    assert reader.get_model_version_by_alias("digits-clf", "champion").version == "2"
    assert reader.get_model_version_by_alias("digits-clf", "candidate").version == "1"
    assert rest.get_version_by_alias("digits-clf", "champion") == "2"
    assert rest.get_version_by_alias("no-such-model", "champion") is None
    version = reader.get_model_version("digits-clf", "1")
    assert version.tags == {"trainpipe.runId": "r-1", "test.accuracy": "0.97"}
    assert version.description == "guide\n\nresults"
    assert version.run_id == run
    assert reader.get_model_version("digits-clf", "2").tags["approved_by"] == "alice"
    assert reader.get_registered_model("digits-clf").aliases == {"candidate": "1", "champion": "2"}


def test_refused_request_carries_mlflows_error_code(rest: MlflowRest, mlflow_server) -> None:
    with pytest.raises(MlflowRequestError) as caught:
        rest.get_run("0" * 32)
    assert caught.value.code == "RESOURCE_DOES_NOT_EXIST"
    assert caught.value.status == 404
    assert mlflow_server.uri in str(caught.value)


# ---- the transport, against local recording servers ----


class Recorder:
    """A loopback HTTP server that records each request's path and headers
    and answers with what ``reply(handler) -> (status, headers, body)`` says."""

    def __init__(self, reply: Callable[[http.server.BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]],
                 host: str = "127.0.0.1") -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                recorder.requests.append((self.command, self.path, dict(self.headers.items())))
                status, headers, body = reply(self)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.uri = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def experiment_json(_: Any = None) -> tuple[int, dict[str, str], bytes]:
    body = {"experiment": {"experiment_id": "7", "name": "x", "lifecycle_stage": "active"}}
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


@pytest.mark.parametrize(("credentials", "expected"), [
    (MlflowCredentials(token=TOKEN), f"Bearer {TOKEN}"),
    # base64("alice:pw-SECRET-0815")
    (MlflowCredentials(username="alice", password=PASSWORD), "Basic YWxpY2U6cHctU0VDUkVULTA4MTU="),
    (MlflowCredentials(), None),
])
def test_credentials_sent_in_the_authorization_header(credentials: MlflowCredentials, expected: str | None) -> None:
    with Recorder(experiment_json) as server:
        assert MlflowRest(server.uri, credentials).get_or_create_experiment("x") == "7"
    [(method, path, headers)] = server.requests
    assert (method, path) == ("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=x")
    assert headers.get("Authorization") == expected


def test_a_redirect_is_not_followed_and_the_other_host_gets_no_credentials() -> None:
    with Recorder(experiment_json, host="127.0.0.2") as elsewhere:
        def redirect(handler: http.server.BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
            return 302, {"Location": elsewhere.uri + handler.path}, b""

        with Recorder(redirect) as server:
            client = MlflowRest(server.uri, MlflowCredentials(token=TOKEN))
            with pytest.raises(MlflowRequestError) as caught:
                client.get_or_create_experiment("x")
    assert caught.value.code == "REDIRECT"
    assert "127.0.0.2" in str(caught.value) and TOKEN not in str(caught.value)
    assert len(server.requests) == 1
    assert elsewhere.requests == []


def test_429_and_5xx_are_retried_with_backoff() -> None:
    answers = iter([(429, {}, b""), (503, {}, b"busy")])

    def flaky(_: Any) -> tuple[int, dict[str, str], bytes]:
        return next(answers, None) or experiment_json()

    with Recorder(flaky) as server:
        began = time.monotonic()
        assert MlflowRest(server.uri, retries=3, backoff=0.1).get_or_create_experiment("x") == "7"
        took = time.monotonic() - began
    assert len(server.requests) == 3
    assert took >= 0.1 + 0.2  # backoff doubles: 0.1 s, then 0.2 s


def test_a_server_that_keeps_failing_is_unavailable_and_the_message_hides_credentials() -> None:
    def echo_headers(handler: http.server.BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        # A proxy that echoes the request (Authorization included) in its error page.
        return 502, {}, json.dumps(dict(handler.headers.items())).encode()

    with Recorder(echo_headers) as server:
        client = MlflowRest(server.uri, MlflowCredentials(username="alice", password=PASSWORD),
                            retries=2, backoff=0.01)
        with pytest.raises(MlflowUnavailable) as caught:
            client.create_run("1", "r", {})
    message = str(caught.value)
    assert server.uri in message and "502" in message
    assert PASSWORD not in message and "YWxpY2U6cHctU0VDUkVULTA4MTU=" not in message
    assert len(server.requests) == 3


def test_a_server_not_listening_is_unavailable_within_bounded_time() -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = MlflowRest(uri, MlflowCredentials(token=TOKEN), timeout=2.0, retries=3, backoff=0.1)
    began = time.monotonic()
    with pytest.raises(MlflowUnavailable) as caught:
        client.log_batch("run", [Metric("train_loss", 1.0, 1, now_ms())])
    assert time.monotonic() - began < 5.0
    assert uri in str(caught.value) and "4 attempt" in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)


def test_a_server_that_does_not_answer_times_out() -> None:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)  # accepts the connection, never answers
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
        began = time.monotonic()
        with pytest.raises(MlflowUnavailable):
            MlflowRest(uri, timeout=0.5, retries=1, backoff=0.01).get_run("x")
        assert time.monotonic() - began < 4.0
