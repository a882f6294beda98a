"""A small client for MLflow's REST API (``/api/2.0/mlflow/...``), used by
both the control plane (parent runs, gate outcomes, the registry) and the
trainer (a job's metrics and artifacts). No torch, no mlflow package: the
standard library only (urllib, json, base64).

Why not ``mlflow.MlflowClient``: it reads credentials from process-wide
environment variables, and the operator serves many teams from one process;
here credentials are per client object, sent on each request to the one
server the client was made for, and never part of a message, a log line or
a repr. Redirects are not followed (urllib would forward the Authorization
header to wherever the redirect points). (Tests read everything back with
MLflow's own client.)

Every call has a timeout; transient failures (connection refused, timeouts,
429, 5xx) are retried with exponential backoff up to ``retries`` times, then
raise :class:`MlflowUnavailable` naming the server (without credentials). A
request MLflow refuses (4xx) raises :class:`MlflowRequestError` with MLflow's
own error code and message.

Artifacts go through the server's proxied artifact API
(``/api/2.0/mlflow-artifacts/artifacts/...``, served by ``mlflow server``
by default since 2.0): a run's ``artifact_uri`` is then
``mlflow-artifacts:/<experiment>/<run>/artifacts``, and the client needs no
credentials of the artifact store itself.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import mimetypes
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# MLflow's own limits (mlflow/utils/validation.py, 3.x): a log-batch request
# holds at most 1000 metrics, 100 params, 100 tags and 1000 entities in all,
# and at most 1 MB of JSON; longer param/tag values are refused, so they are
# cut here (with a marker) rather than losing the whole batch.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_BATCH_REQUEST_BYTES = 900_000  # below MLflow's 1e6, leaving room for the envelope
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_MODEL_VERSION_TAG_VAL_LENGTH = 100_000
TRUNCATED = "...[truncated]"

RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
_PAGE = 1000


class MlflowError(Exception):
    """Base class: something about an MLflow server went wrong."""


class MlflowUnavailable(MlflowError):
    """The server did not answer (after retries): the caller degrades."""


class MlflowRequestError(MlflowError):
    """The server answered with an error (4xx): ``code`` is MLflow's
    ``error_code`` (e.g. RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST)."""

    def __init__(self, message: str, code: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class MlflowCredentials:
    """A bearer token, or a username and password (basic auth); never shown."""

    token: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and (self.username is not None or self.password is not None):
            raise ValueError("MlflowCredentials: give either a token or a username and password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("MlflowCredentials: basic auth needs both a username and a password")

    def __repr__(self) -> str:
        return f"MlflowCredentials(kind={self.kind!r})"

    __str__ = __repr__

    @property
    def kind(self) -> str:
        """``bearer``, ``basic`` or ``none``: what may be said about them."""
        if self.token:
            return "bearer"
        if self.username is not None:
            return "basic"
        return "none"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MlflowCredentials:
        """From MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD in ``env``.

        The token wins when both kinds are set (as in MLflow's own client);
        a username without a password (or the reverse) is refused, naming the
        missing variable. Empty values count as unset."""
        token = env.get("MLFLOW_TRACKING_TOKEN") or None
        if token:
            return cls(token=token)
        username = env.get("MLFLOW_TRACKING_USERNAME") or None
        password = env.get("MLFLOW_TRACKING_PASSWORD") or None
        if username is None and password is None:
            return cls()
        if username is None or password is None:
            missing = "MLFLOW_TRACKING_USERNAME" if username is None else "MLFLOW_TRACKING_PASSWORD"
            present = "MLFLOW_TRACKING_PASSWORD" if username is None else "MLFLOW_TRACKING_USERNAME"
            raise ValueError(f"{present} is set but {missing} is not: basic auth to MLflow needs both")
        return cls(username=username, password=password)

    def authorization(self) -> str | None:
        """The Authorization header's value, or None without credentials."""
        if self.token:
            return f"Bearer {self.token}"
        if self.username is not None and self.password is not None:
            pair = f"{self.username}:{self.password}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        return None

    def secrets(self) -> list[str]:
        """Every string that must never be shown (for scrubbing messages)."""
        values = [v for v in (self.token, self.password) if v]
        auth = self.authorization()
        if auth:
            values.append(auth.split(" ", 1)[1])
        return values


@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    step: int
    timestamp_ms: int


def check_tracking_uri(tracking_uri: str) -> str:
    """``tracking_uri`` without a trailing slash, or ValueError: only
    ``http(s)://host[:port][/prefix]``, and never credentials in it (they
    would end up in logs, statuses and run directories)."""
    parts = urllib.parse.urlsplit(tracking_uri.strip())
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        shown = f"{parts.scheme}://***@{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}"
        raise ValueError(
            f"MLflow tracking URI {shown} carries credentials in its user part: give the URI without them "
            "and pass the credentials separately (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD)"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"MLflow tracking URI {tracking_uri!r} is not http(s)://host[:port][/prefix]: this client speaks "
            "to a tracking server's REST API only"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"MLflow tracking URI {tracking_uri!r} has a query or fragment: give only the server's base URL")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - len(TRUNCATED)] + TRUNCATED


def _json_float(value: float) -> float | str:
    """MLflow's JSON (protobuf) takes non-finite doubles as strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _filter_string(value: str) -> str:
    """A string literal in MLflow's search filter syntax."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for a value with both quote kinds: {value!r}")


def _tag_dict(tags: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in tags or ()}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answered as errors: urllib would send our Authorization
    header on to whatever host the redirect names."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - urllib's signature
        return None


class MlflowRest:
    """One tracking server. ``tracking_uri`` is ``http(s)://host[:port][/prefix]``
    without credentials in it (refused with ValueError otherwise)."""

    def __init__(self, tracking_uri: str, credentials: MlflowCredentials | None = None,
                 timeout: float = 10.0, retries: int = 3, backoff: float = 0.5) -> None:
        self.uri = check_tracking_uri(tracking_uri)
        self._credentials = credentials or MlflowCredentials()
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._artifact_roots: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MlflowRest({self.uri!r}, credentials={self._credentials.kind})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Never pickled with its credentials (e.g. into a Ray task): the
        # receiving side builds its own client from its own environment.
        raise TypeError("MlflowRest is not picklable: build a client where it is used (credentials stay local)")

    # ---- the transport ----

    def _scrub(self, text: str) -> str:
        for secret in self._credentials.secrets():
            text = text.replace(secret, "***")
        return text

    def _url(self, endpoint: str, query: Mapping[str, Any] | None = None) -> str:
        url = f"{self.uri}/{endpoint.lstrip('/')}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        return url

    def _request(self, method: str, endpoint: str, *, body: Mapping[str, Any] | None = None,
                 query: Mapping[str, Any] | None = None, upload: Path | None = None,
                 raw: bool = False) -> Any:
        """One call with retries; the decoded JSON answer ({} when empty), or bytes with ``raw``."""
        url = self._url(endpoint, query)
        headers = {"Accept": "application/json", "User-Agent": "trainpipe-mlflow-rest"}
        auth = self._credentials.authorization()
        if auth:
            headers["Authorization"] = auth
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body, allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        elif upload is not None:
            headers["Content-Type"] = mimetypes.guess_type(upload.name)[0] or "application/octet-stream"
        what = f"{method} {endpoint}"
        attempts = self.retries + 1
        reason = ""
        for attempt in range(attempts):
            if attempt:
                delay = self.backoff * (2 ** (attempt - 1))
                log.info("MLflow server %s: retrying %s in %.1f s (%s)", self.uri, what, delay, reason)
                time.sleep(delay)
            try:
                if upload is not None:
                    with upload.open("rb") as data:
                        headers["Content-Length"] = str(os.fstat(data.fileno()).st_size)
                        return self._send(url, method, headers, data, raw)
                return self._send(url, method, headers, payload, raw)
            except urllib.error.HTTPError as err:
                status = err.code
                text = self._scrub(err.read().decode("utf-8", "replace"))
                if status == 429 or status >= 500:
                    reason = f"HTTP {status}: {text[:300]}"
                    continue
                raise self._refused(what, status, text, err.headers.get("Location")) from None
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as err:
                cause = getattr(err, "reason", err)
                reason = self._scrub(f"{type(cause).__name__}: {cause}")
        raise MlflowUnavailable(
            f"MLflow server {self.uri} did not answer {what} after {attempts} attempt(s): {reason}; "
            "the tracking server is down or unreachable from here"
        )

    def _send(self, url: str, method: str, headers: dict[str, str], data: Any, raw: bool) -> Any:
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        with self._opener.open(request, timeout=self.timeout) as answer:
            content = answer.read()
        if raw:
            return content
        if not content.strip():
            return {}
        try:
            return json.loads(content)
        except ValueError:
            raise MlflowRequestError(
                f"MLflow server {self.uri} answered {method} {url[len(self.uri):]} with something that is not "
                "JSON: is the tracking URI the server's base URL?", code="NOT_JSON", status=200) from None

    def _refused(self, what: str, status: int, text: str, location: str | None) -> MlflowRequestError:
        if 300 <= status < 400:
            target = urllib.parse.urlsplit(location or "")
            where = f"{target.scheme}://{target.hostname}" if target.hostname else "elsewhere"
            return MlflowRequestError(
                f"MLflow server {self.uri} answered {what} with a redirect ({status}) to {where}, which this "
                "client does not follow (credentials go only to the tracking URI): set the tracking URI to the "
                "server's final address", code="REDIRECT", status=status)
        try:
            answer = json.loads(text)
            code = str(answer.get("error_code") or f"HTTP_{status}")
            message = str(answer.get("message") or text)
        except (ValueError, AttributeError):
            code, message = f"HTTP_{status}", text.strip()[:500]
        hint = ""
        if status in (401, 403):
            hint = " (check the credentials given for this server: MLFLOW_TRACKING_TOKEN or USERNAME/PASSWORD)"
        return MlflowRequestError(f"MLflow server {self.uri} refused {what}: {code}: {message}{hint}",
                                  code=code, status=status)

    def _get(self, endpoint: str, **query: Any) -> Any:
        return self._request("GET", f"api/2.0/mlflow/{endpoint}", query=query)

    def _post(self, endpoint: str, body: Mapping[str, Any]) -> Any:
        return self._request("POST", f"api/2.0/mlflow/{endpoint}", body=body)

    # ---- experiments ----

    def get_or_create_experiment(self, name: str) -> str:
        """The experiment's id, created when it does not exist (race-safe)."""
        found = self._experiment_by_name(name)
        if found is not None:
            return found
        try:
            return str(self._post("experiments/create", {"name": name})["experiment_id"])
        except MlflowRequestError as err:
            if err.code != "RESOURCE_ALREADY_EXISTS":
                raise
        found = self._experiment_by_name(name)
        if found is None:
            raise MlflowRequestError(f"MLflow server {self.uri}: experiment {name!r} exists but cannot be read",
                                     code="RESOURCE_DOES_NOT_EXIST", status=404)
        return found

    def _experiment_by_name(self, name: str) -> str | None:
        try:
            experiment = self._get("experiments/get-by-name", experiment_name=name)["experiment"]
        except MlflowRequestError as err:
            if err.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        if experiment.get("lifecycle_stage") == "deleted":
            raise MlflowRequestError(
                f"MLflow server {self.uri}: experiment {name!r} (id {experiment['experiment_id']}) is deleted: "
                "restore it (`mlflow experiments restore`) or name another experiment",
                code="INVALID_STATE", status=400)
        return str(experiment["experiment_id"])

    # ---- runs ----

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        body = {
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": int(time.time() * 1000),
            "tags": [{"key": k, "value": _truncate(str(v), MAX_TAG_VAL_LENGTH)} for k, v in tags.items()],
        }
        return str(self._post("runs/create", body)["run"]["info"]["run_id"])

    def find_run(self, experiment_id: str, tags: dict[str, str]) -> str | None:
        """The id of the (newest) run whose tags include all of ``tags``, or None."""
        clauses = [f"tags.`{key}` = {_filter_string(value)}" for key, value in tags.items()]
        body: dict[str, Any] = {
            "experiment_ids": [experiment_id],
            "filter": " and ".join(clauses),
            "run_view_type": "ACTIVE_ONLY",
            "max_results": 100,
            "order_by": ["attributes.start_time DESC"],
        }
        while True:
            answer = self._post("runs/search", body)
            for run in answer.get("runs", []):
                if tags.items() <= _tag_dict(run.get("data", {}).get("tags")).items():
                    return str(run["info"]["run_id"])
            token = answer.get("next_page_token")
            if not token:
                return None
            body["page_token"] = token

    def get_run(self, run_id: str) -> dict[str, Any]:
        """MLflow's run JSON (``info``, ``data``)."""
        run: dict[str, Any] = self._get("runs/get", run_id=run_id)["run"]
        return run

    def run_tags(self, run_id: str) -> dict[str, str]:
        """The run's tags as a dict."""
        return _tag_dict(self.get_run(run_id).get("data", {}).get("tags"))

    def set_terminated(self, run_id: str, status: str = "FINISHED") -> None:
        """status: RUNNING, FINISHED, FAILED or KILLED."""
        if status not in RUN_STATUSES:
            raise ValueError(f"MLflow run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
        body: dict[str, Any] = {"run_id": run_id, "status": status}
        if status not in ("RUNNING", "SCHEDULED"):
            body["end_time"] = int(time.time() * 1000)
        self._post("runs/update", body)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Tags on a run (one batch per 100)."""
        self.log_batch(run_id, tags=tags)

    def log_batch(self, run_id: str, metrics: Sequence[Metric] = (), params: dict[str, str] | None = None,
                  tags: dict[str, str] | None = None) -> None:
        """Metrics, params and tags in as few requests as MLflow's limits
        allow (1000 metrics, 100 params, 100 tags per request; values
        truncated to MLflow's length limits)."""
        for batch in batches(metrics, params or {}, tags or {}):
            self._post("runs/log-batch", {"run_id": run_id, **batch})

    def metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every value logged for ``key``, ordered by step then timestamp."""
        out: list[Metric] = []
        token: str | None = None
        while True:
            answer = self._get("metrics/get-history", run_id=run_id, metric_key=key,
                               max_results=25000, page_token=token)
            out.extend(Metric(key=m["key"], value=float(m["value"]), step=int(m.get("step", 0)),
                              timestamp_ms=int(m.get("timestamp", 0))) for m in answer.get("metrics", []))
            token = answer.get("next_page_token")
            if not token:
                break
        out.sort(key=lambda m: (m.step, m.timestamp_ms))
        return out

    def last_step(self, run_id: str, key: str) -> int | None:
        """The largest step logged for ``key`` (resume: never log it twice).

        MLflow keeps a run's latest value per key as the one with the largest
        (step, timestamp): one cheap ``runs/get`` instead of the history."""
        for metric in self.get_run(run_id).get("data", {}).get("metrics", []):
            if metric.get("key") == key:
                return int(metric.get("step", 0))
        return None

    # ---- artifacts (the server's proxied artifact store) ----

    def artifact_root(self, run_id: str) -> str:
        """The run's artifact folder in the proxied store (``<exp>/<run>/artifacts``)."""
        if run_id not in self._artifact_roots:
            uri = self.get_run(run_id)["info"].get("artifact_uri", "")
            parts = urllib.parse.urlsplit(uri)
            if parts.scheme != "mlflow-artifacts":
                raise MlflowRequestError(
                    f"MLflow server {self.uri}: run {run_id}'s artifact URI has scheme {parts.scheme or 'none'!r}, "
                    "not mlflow-artifacts: the server does not proxy this run's artifacts; start it with "
                    "--serve-artifacts (the default) and an --artifacts-destination",
                    code="ARTIFACTS_NOT_PROXIED", status=400)
            self._artifact_roots[run_id] = parts.path.strip("/")
        return self._artifact_roots[run_id]

    def _artifact_endpoint(self, run_id: str, path: str) -> str:
        full = "/".join(p for p in (self.artifact_root(run_id), path.strip("/")) if p)
        return "api/2.0/mlflow-artifacts/artifacts/" + urllib.parse.quote(full, safe="/")

    def log_artifact(self, run_id: str, local_path: Path, artifact_path: str = "") -> str:
        """Uploads one file under ``artifact_path``; returns its artifact path."""
        local_path = Path(local_path)
        if not local_path.is_file():
            raise FileNotFoundError(f"cannot upload {local_path} to MLflow run {run_id}: not a file")
        target = "/".join(p for p in (artifact_path.strip("/"), local_path.name) if p)
        self._request("PUT", self._artifact_endpoint(run_id, target), upload=local_path)
        return target

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str = "") -> list[str]:
        """Every file under ``local_dir`` (recursively, sorted), keeping the
        folder layout under ``artifact_path``; returns their artifact paths."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise NotADirectoryError(f"cannot upload {local_dir} to MLflow run {run_id}: not a folder")
        done = []
        for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            sub = file.parent.relative_to(local_dir).as_posix()
            folder = "/".join(p for p in (artifact_path.strip("/"), "" if sub == "." else sub) if p)
            done.append(self.log_artifact(run_id, file, folder))
        return done

    def list_artifacts(self, run_id: str, path: str = "") -> list[str]:
        """The artifact paths directly under ``path`` (files and folders, like
        ``MlflowClient.list_artifacts``), relative to the run's root."""
        full = "/".join(p for p in (self.artifact_root(run_id), path.strip("/")) if p)
        answer = self._request("GET", "api/2.0/mlflow-artifacts/artifacts", query={"path": full})
        prefix = path.strip("/")
        return sorted("/".join(p for p in (prefix, f["path"]) if p) for f in answer.get("files", []))

    def read_artifact(self, run_id: str, path: str) -> bytes:
        """One artifact's bytes."""
        data: bytes = self._request("GET", self._artifact_endpoint(run_id, path), raw=True)
        return data

    # ---- the model registry ----

    def ensure_registered_model(self, name: str, description: str = "") -> None:
        try:
            self._post("registered-models/create", {"name": name, "description": description})
        except MlflowRequestError as err:
            if err.code != "RESOURCE_ALREADY_EXISTS":
                raise

    def create_model_version(self, name: str, source: str, run_id: str, tags: dict[str, str],
                             description: str) -> str:
        """Returns the new version number (as MLflow gives it, a string)."""
        body = {
            "name": name,
            "source": source,
            "run_id": run_id,
            "description": description,
            "tags": [{"key": k, "value": _truncate(str(v), MAX_MODEL_VERSION_TAG_VAL_LENGTH)}
                     for k, v in tags.items()],
        }
        return str(self._post("model-versions/create", body)["model_version"]["version"])

    def model_versions(self, name: str) -> Iterator[dict[str, Any]]:
        """Every version of ``name`` (MLflow's model_version JSON), newest first."""
        token: str | None = None
        while True:
            answer = self._get("model-versions/search", filter=f"name={_filter_string(name)}",
                               max_results=_PAGE, order_by="version_number DESC", page_token=token)
            yield from answer.get("model_versions", [])
            token = answer.get("next_page_token")
            if not token:
                return

    def find_model_version(self, name: str, tags: dict[str, str]) -> str | None:
        """The version of ``name`` whose tags include all of ``tags`` (idempotent registration)."""
        best: int | None = None
        for version in self.model_versions(name):
            if tags.items() <= _tag_dict(version.get("tags")).items():
                number = int(version["version"])
                best = number if best is None else max(best, number)
        return None if best is None else str(best)

    def get_model_version(self, name: str, version: str) -> dict[str, Any]:
        """MLflow's model_version JSON (``tags``, ``aliases``, ``description``...)."""
        answer: dict[str, Any] = self._get("model-versions/get", name=name, version=version)["model_version"]
        return answer

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._post("registered-models/alias", {"name": name, "alias": alias, "version": str(version)})

    def get_version_by_alias(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at; None when the alias (or the model) does not exist."""
        try:
            answer = self._get("registered-models/alias", name=name, alias=alias)
        except MlflowRequestError as err:
            # No such model: RESOURCE_DOES_NOT_EXIST; no such alias (MLflow
            # 3.x): INVALID_PARAMETER_VALUE "Registered model alias X not found".
            if err.code == "RESOURCE_DOES_NOT_EXIST" or (
                    err.code == "INVALID_PARAMETER_VALUE" and "not found" in str(err).lower()):
                return None
            raise
        return str(answer["model_version"]["version"])

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._post("model-versions/set-tag", {"name": name, "version": str(version), "key": key,
                                              "value": _truncate(str(value), MAX_MODEL_VERSION_TAG_VAL_LENGTH)})


def batches(metrics: Sequence[Metric], params: Mapping[str, str], tags: Mapping[str, str]
            ) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """log-batch bodies within MLflow's limits: per request at most 1000
    metrics, 100 params, 100 tags, 1000 entities and ~1 MB; param values cut
    to 6000 characters, tag values to 8000. Pure (tests check the limits)."""
    pending_params = [{"key": k, "value": _truncate(str(v), MAX_PARAM_VAL_LENGTH)} for k, v in params.items()]
    pending_tags = [{"key": k, "value": _truncate(str(v), MAX_TAG_VAL_LENGTH)} for k, v in tags.items()]
    pending_metrics = [{"key": m.key, "value": _json_float(float(m.value)), "step": int(m.step),
                        "timestamp": int(m.timestamp_ms)} for m in metrics]
    limits = {"params": MAX_PARAMS_TAGS_PER_BATCH, "tags": MAX_PARAMS_TAGS_PER_BATCH,
              "metrics": MAX_METRICS_PER_BATCH}
    queues: dict[str, deque[dict[str, Any]]] = {
        "params": deque(pending_params), "tags": deque(pending_tags), "metrics": deque(pending_metrics)}
    while any(queues.values()):
        batch: dict[str, list[dict[str, Any]]] = {"metrics": [], "params": [], "tags": []}
        size = count = 0
        for kind in ("params", "tags", "metrics"):
            queue = queues[kind]
            while queue and len(batch[kind]) < limits[kind] and count < MAX_ENTITIES_PER_BATCH:
                entry_size = len(json.dumps(queue[0])) + 1
                if count and size + entry_size > MAX_BATCH_REQUEST_BYTES:
                    break
                batch[kind].append(queue.popleft())
                size += entry_size
                count += 1
        yield {k: v for k, v in batch.items() if v}
