"""GPU utilization of a job, from DCGM exporter series in Prometheus.

The job's GPUs are selected by UUID: every rank of a training job records
the host and the UUIDs of the GPUs it ran on in ``evidence.json``
(``gpus[].gpu_uuids``), and dcgm-exporter labels every series with the GPU's
``UUID``. Pod names are no key: a RayJob's pods are named from its
submission id, and a Ray Job API job runs on a shared RayCluster whose pods
belong to no job. ``PromQLGpuSource(url).measure_evidence(namespace,
pipeline, evidence)`` runs an instant query (``/api/v1/query``) evaluated at
the job's end that averages ``DCGM_FI_DEV_GPU_UTIL`` over those GPUs and the
job's window (``timings.started_at`` .. ``finished_at``), and, where the
exporter publishes it, the same for ``DCGM_FI_PROF_SM_ACTIVE``. Standard
library only (``urllib.request``).

Query templates are Python ``str.format`` strings, so PromQL's own braces are
doubled (``{{`` ``}}``). The named fields:

* ``{uuid_regex}``: the job's GPU UUIDs as an RE2 alternation
  (``GPU-a|GPU-b``), each validated (``GPU-``/``MIG-`` and a UUID: the
  evidence is written by the job, so it is untrusted; ``.*`` never gets into
  a query) and escaped, for a ``UUID=~"..."`` matcher;
* ``{namespace}``, ``{pipeline}``, ``{job}``: the values, escaped for a
  PromQL double-quoted string;
* ``{pod_regex}``: a regular expression matching pod names (``pod_pattern``,
  default ``{job}-.*``), for templates that select by pod instead;
* ``{window}``: the window's length in whole seconds (at least 1).

Where a ServiceMonitor or relabelling renames dcgm-exporter's labels (e.g.
``UUID`` to ``uuid``, or ``namespace``/``pod`` to ``exported_namespace``/
``exported_pod`` without ``honorLabels: true``), give templates that select
the renamed labels (``TRAINPIPE_GPU_QUERY``, ``TRAINPIPE_GPU_SM_QUERY``).

Outcomes (``GpuMeasurement``): ``util_mean`` set when there is data;
``reason`` set when nothing was measured (no Prometheus configured, no UUID
recorded, a UUID that is not one, no series for the UUIDs in the window);
``error`` set (naming the URL) when the server cannot be reached, times
out, answers an HTTP error or a PromQL error, or answers something that is
not a number. The gate (gates/execution.py) fails a GPU job on every one of
these but a measurement.
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from trainpipe_operator.gates.inputs import GpuMeasurement
from trainpipe_trainer.contract.evidence import Evidence

log = logging.getLogger(__name__)

UTIL_METRIC = "DCGM_FI_DEV_GPU_UTIL"
SM_METRIC = "DCGM_FI_PROF_SM_ACTIVE"
# Per GPU first, then across GPUs: a GPU whose series changed labels within
# the window (a pod label re-mapped) still counts once.
DEFAULT = 'avg(avg by (UUID) (avg_over_time(DCGM_FI_DEV_GPU_UTIL{{UUID=~"{uuid_regex}"}}[{window}s])))'
DEFAULT_SM = 'avg(avg by (UUID) (avg_over_time(DCGM_FI_PROF_SM_ACTIVE{{UUID=~"{uuid_regex}"}}[{window}s])))'
DEFAULT_POD_PATTERN = "{job}-.*"
NO_PROMETHEUS = "no Prometheus configured"
NO_UUIDS = "the job recorded no GPU UUID (evidence.json gpus[].gpu_uuids is empty)"
NO_WINDOW = "the job recorded no time window (evidence.json timings.started_at/finished_at)"
_FIELDS = ("uuid_regex", "namespace", "pipeline", "job", "pod_regex", "window")
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")
# NVML's and dcgm-exporter's form: GPU-<uuid> (MIG-<uuid> for a MIG instance).
UUID_PATTERN = re.compile(
    r"(GPU|MIG)-[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
)
MAX_UUIDS = 1024  # a job has at most workers x gpusPerWorker GPUs; bounds the query


class InvalidUuid(ValueError):
    """A GPU UUID from the evidence that is not one (and never enters a query)."""


def no_series_reason(uuids: Sequence[str]) -> str:
    return (f"no {UTIL_METRIC} series for the job's GPU(s) {', '.join(uuids)} in its window "
            "(is dcgm-exporter scraped on those nodes, and does the series keep its UUID label?)")


class QueryError(Exception):
    """Prometheus could not answer a query (unreachable, HTTP or PromQL error)."""


def promql_string(value: str) -> str:
    """Escape ``value`` for the inside of a PromQL double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def regex_literal(value: str) -> str:
    """``value`` as an RE2 regular expression matching exactly it."""
    return _RE2_SPECIAL.sub(r"\\\1", value)


def valid_uuid(value: object) -> str:
    """``value`` if it is a GPU UUID (``GPU-``/``MIG-`` and 8-4-4-4-12 hex digits).

    Raises:
        InvalidUuid: anything else, quoted (shortened) in the message.
    """
    if isinstance(value, str) and UUID_PATTERN.fullmatch(value):
        return value
    shown = repr(value)[:80]
    raise InvalidUuid(
        f"evidence.json gpus[].gpu_uuids holds {shown}, which is not a GPU UUID "
        "(GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx as NVML and dcgm-exporter write it); "
        "the job's GPUs cannot be selected"
    )


def uuid_regex(uuids: Sequence[str]) -> str:
    """An RE2 alternation matching exactly these (validated) UUIDs."""
    if not uuids:
        raise InvalidUuid(NO_UUIDS)
    if len(uuids) > MAX_UUIDS:
        raise InvalidUuid(f"evidence.json names {len(uuids)} GPUs, more than the {MAX_UUIDS} a job may use")
    return "|".join(regex_literal(valid_uuid(u)) for u in uuids)


def evidence_gpus(evidence: Evidence) -> tuple[list[str], list[str]]:
    """(distinct UUIDs in rank order, ``UUID (rank N on host)`` descriptions)."""
    uuids: list[str] = []
    described: list[str] = []
    for record in evidence.gpus:
        for uuid in record.gpu_uuids:
            described.append(f"{uuid} (rank {record.rank} on {record.host})"[:200])
            if uuid not in uuids:
                uuids.append(uuid)
    return uuids, described


def _check_template(name: str, template: str) -> None:
    try:
        template.format(uuid_regex="GPU-x", namespace="ns", pipeline="p", job="j", pod_regex="j-.*", window=60)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{name} {template!r} is not a str.format template over the fields "
            f"{', '.join(_FIELDS)} (PromQL braces doubled: {{{{ }}}}): {exc!r}"
        ) from exc


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time from the evidence; None when absent.

    Raises:
        ValueError: present but not a time.
    """
    if not text:
        return None
    return _utc(datetime.fromisoformat(text))


class PromQLGpuSource:
    """GPU utilization of a job from Prometheus (DCGM exporter series).

    Args:
        url: Prometheus' base URL (``http://prometheus:9090``, a path prefix
            allowed); None: nothing is measured (``not_applicable``).
        query_template: the utilization query (percent, 0-100); see the
            module docstring for the fields (default: by the job's UUIDs).
        sm_query_template: the SM-activity query (fraction, 0-1); None or
            empty: not queried.
        timeout: seconds per HTTP request.
        pod_pattern: ``str.format`` template of the ``{pod_regex}`` field
            over ``job``, ``pipeline`` and ``namespace`` (each inserted as a
            regex literal); only for templates that select by pod.
        headers: extra HTTP headers (e.g. ``Authorization``).
    """

    def __init__(
        self,
        url: str | None,
        query_template: str = DEFAULT,
        sm_query_template: str | None = DEFAULT_SM,
        timeout: float = 5.0,
        *,
        pod_pattern: str = DEFAULT_POD_PATTERN,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/") if url else None
        _check_template("query_template", query_template)
        if sm_query_template:
            _check_template("sm_query_template", sm_query_template)
        try:
            pod_pattern.format(job="j", pipeline="p", namespace="ns")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"pod_pattern {pod_pattern!r} is not a str.format template over job, pipeline, namespace: {exc!r}"
            ) from exc
        self.query_template = query_template
        self.sm_query_template = sm_query_template or None
        self.timeout = timeout
        self.pod_pattern = pod_pattern
        self.headers = dict(headers or {})

    @property
    def source(self) -> str:
        metrics = UTIL_METRIC + (f", {SM_METRIC}" if self.sm_query_template else "")
        return f"prometheus ({self.url}): {metrics}"

    @property
    def needs_uuids(self) -> bool:
        """The utilization template selects by ``{uuid_regex}`` (the default does)."""
        return "{uuid_regex}" in self.query_template

    def queries(
        self, namespace: str, pipeline: str, job_id: str, start: datetime, end: datetime,
        uuids: Sequence[str] = (),
    ) -> tuple[str, str | None]:
        """The PromQL the measurement runs (utilization, SM activity).

        Raises:
            ValueError: ``end`` is before ``start``.
            InvalidUuid: a UUID is not one, or none is given to a template
                that selects by UUID.
        """
        seconds = (_utc(end) - _utc(start)).total_seconds()
        if seconds < 0:
            raise ValueError(
                f"the window ends ({end.isoformat()}) before it starts ({start.isoformat()})"
            )
        pod_regex = self.pod_pattern.format(
            job=regex_literal(job_id),
            pipeline=regex_literal(pipeline),
            namespace=regex_literal(namespace),
        )
        selects_by_uuid = self.needs_uuids or "{uuid_regex}" in (self.sm_query_template or "")
        uuid_alternation = uuid_regex(uuids) if selects_by_uuid else ""
        fields = {
            "uuid_regex": promql_string(uuid_alternation),
            "namespace": promql_string(namespace),
            "pipeline": promql_string(pipeline),
            "job": promql_string(job_id),
            "pod_regex": promql_string(pod_regex),
            "window": max(1, math.ceil(seconds)),
        }
        util = self.query_template.format(**fields)
        sm = self.sm_query_template.format(**fields) if self.sm_query_template else None
        return util, sm

    def measure_evidence(self, namespace: str, pipeline: str, evidence: Evidence) -> GpuMeasurement:
        """The job's GPUs (the UUIDs its ranks recorded) over its window."""
        uuids, described = evidence_gpus(evidence)
        if self.url is None:
            return GpuMeasurement.absent(NO_PROMETHEUS, source="prometheus")
        try:
            start = _parse_time(evidence.timings.started_at)
            end = _parse_time(evidence.timings.finished_at)
        except ValueError as exc:
            return GpuMeasurement.absent(f"{NO_WINDOW}: {exc}", source=self.source)
        if start is None or end is None:
            return GpuMeasurement.absent(NO_WINDOW, source=self.source)
        measured = self.measure(namespace, pipeline, evidence.job_name, start, end, uuids=uuids)
        return GpuMeasurement(
            util_mean=measured.util_mean, sm_active=measured.sm_active, source=measured.source,
            reason=measured.reason, error=measured.error, gpus=tuple(described),
            window=f"{_utc(start).isoformat()} .. {_utc(end).isoformat()}",
        )

    def measure(
        self, namespace: str, pipeline: str, job_id: str, start: datetime, end: datetime,
        uuids: Sequence[str] = (),
    ) -> GpuMeasurement:
        """Mean GPU utilization (and SM activity) of the GPUs ``uuids`` (or,
        with a pod-based template, of the job's pods) over ``[start, end]``;
        naive datetimes are UTC.

        Raises:
            ValueError: ``end`` is before ``start``.
        """
        if self.url is None:
            return GpuMeasurement.absent(NO_PROMETHEUS)
        try:
            util_query, sm_query = self.queries(namespace, pipeline, job_id, start, end, uuids)
        except InvalidUuid as exc:
            return GpuMeasurement.absent(str(exc), source=self.source)
        at = _utc(end).timestamp()
        try:
            util = self._value(util_query, at)
        except QueryError as exc:
            return GpuMeasurement.unreachable(str(exc), source=self.source)
        if util is None:
            reason = no_series_reason(uuids) if uuids else f"no {UTIL_METRIC} series for the job ({util_query})"
            return GpuMeasurement.absent(reason, source=self.source)
        sm: float | None = None
        if sm_query:
            try:
                sm = self._value(sm_query, at)
            except QueryError as exc:  # utilization was measured: keep it
                log.warning("SM activity not measured: %s", exc)
        return GpuMeasurement(util_mean=util, sm_active=sm, source=self.source)

    def _value(self, query: str, at: float) -> float | None:
        """The query's value (the mean where it returns several series);
        None: no series."""
        answer = self._query(query, at)
        data = answer.get("data") or {}
        kind, result = data.get("resultType"), data.get("result")
        try:
            if kind == "scalar" and isinstance(result, list):
                samples = [float(result[1])]
            elif kind == "vector":
                samples = [float(series["value"][1]) for series in result or []]
            else:
                raise QueryError(
                    f"Prometheus at {self.url} answered a {kind!r} to {query!r}; the query must give an instant vector or a scalar"
                )
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise QueryError(
                f"Prometheus at {self.url} answered an unreadable result to {query!r}: {exc!r}"
            ) from exc
        if not samples:
            return None
        if any(math.isnan(s) or math.isinf(s) for s in samples):
            raise QueryError(
                f"Prometheus at {self.url} answered {samples} (not a number) to {query!r}"
            )
        return sum(samples) / len(samples)

    def _query(self, query: str, at: float) -> dict[str, Any]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode(
            {"query": query, "time": f"{at:.3f}"}
        )
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", **self.headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - a configured URL
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise QueryError(
                f"Prometheus at {self.url} answered HTTP {exc.code} to {query!r}: {_error_text(exc)}"
            ) from exc
        except urllib.error.URLError as exc:
            raise QueryError(f"Prometheus at {self.url} unreachable: {exc.reason}") from exc
        except TimeoutError as exc:
            raise QueryError(
                f"Prometheus at {self.url} did not answer within {self.timeout:g} s"
            ) from exc
        except OSError as exc:  # reset, refused after the connection
            raise QueryError(f"Prometheus at {self.url} unreachable: {exc}") from exc
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise QueryError(
                f"Prometheus at {self.url} answered something that is not JSON: {body[:200]!r}"
            ) from exc
        if not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error", answer) if isinstance(answer, dict) else answer
            raise QueryError(f"Prometheus at {self.url} answered an error to {query!r}: {error}")
        return answer


def _error_text(exc: urllib.error.HTTPError) -> str:
    """Prometheus' JSON error (``errorType: error``) where the body has one."""
    try:
        body = exc.read()
    except OSError:
        return str(exc.reason)
    try:
        answer = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace") or str(exc.reason)
    if isinstance(answer, dict) and "error" in answer:
        return f"{answer.get('errorType', 'error')}: {answer['error']}"
    return str(exc.reason)
