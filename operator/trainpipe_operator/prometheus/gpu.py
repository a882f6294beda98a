"""GPU utilization of a job, from DCGM exporter series in Prometheus.

``PromQLGpuSource(url).measure(namespace, pipeline, job_id, start, end)``
runs an instant query (``/api/v1/query``) evaluated at ``end`` that averages
``DCGM_FI_DEV_GPU_UTIL`` over the job's pods and over the window
``[start, end]``, and (when the exporter publishes it) the same for
``DCGM_FI_PROF_SM_ACTIVE``. Standard library only (``urllib.request``).

Query templates are Python ``str.format`` strings, so PromQL's own braces are
doubled (``{{`` ``}}``). The named fields:

* ``{namespace}``, ``{pipeline}``, ``{job}``: the values, escaped for a
  PromQL double-quoted string;
* ``{pod_regex}``: a regular expression matching the job's pod names
  (``pod_pattern``, default ``{job}-.*``: the RayJob ``<job>`` makes a
  RayCluster ``<job>-xxxxx`` whose pods are ``<job>-xxxxx-head-yyyyy`` and
  ``<job>-xxxxx-workers-worker-yyyyy``), already escaped for the string;
* ``{window}``: the window's length in whole seconds (at least 1).

The default pod pattern is a prefix match: name jobs so that no job's name
followed by ``-`` begins another's (``x-1`` and ``x-1-2`` would share series).

Use them inside ``"..."`` label matchers, as the defaults do. Where a
ServiceMonitor scrapes dcgm-exporter without ``honorLabels: true``,
Prometheus renames the exporter's ``namespace``/``pod`` labels to
``exported_namespace``/``exported_pod``: give a template that selects those.

Outcomes (``GpuMeasurement``): ``util_mean`` set when there is data;
``not_applicable`` when no Prometheus is configured or no series matches
(a CPU-only job, or no DCGM exporter); ``unreachable`` (``error`` set,
naming the URL) when the server cannot be reached, times out, answers an
HTTP error or a PromQL error, or answers something that is not a number.
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from trainpipe_operator.gates.inputs import GpuMeasurement

log = logging.getLogger(__name__)

UTIL_METRIC = "DCGM_FI_DEV_GPU_UTIL"
SM_METRIC = "DCGM_FI_PROF_SM_ACTIVE"
DEFAULT = 'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{namespace="{namespace}", pod=~"{pod_regex}"}}[{window}s]))'
DEFAULT_SM = 'avg(avg_over_time(DCGM_FI_PROF_SM_ACTIVE{{namespace="{namespace}", pod=~"{pod_regex}"}}[{window}s]))'
DEFAULT_POD_PATTERN = "{job}-.*"
NO_SERIES = (
    "no DCGM_FI_DEV_GPU_UTIL series for the job's pods (a CPU-only job, or no DCGM exporter)"
)
NO_PROMETHEUS = "no Prometheus configured"
_FIELDS = ("namespace", "pipeline", "job", "pod_regex", "window")
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


class QueryError(Exception):
    """Prometheus could not answer a query (unreachable, HTTP or PromQL error)."""


def promql_string(value: str) -> str:
    """Escape ``value`` for the inside of a PromQL double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def regex_literal(value: str) -> str:
    """``value`` as an RE2 regular expression matching exactly it."""
    return _RE2_SPECIAL.sub(r"\\\1", value)


def _check_template(name: str, template: str) -> None:
    try:
        template.format(namespace="ns", pipeline="p", job="j", pod_regex="j-.*", window=60)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{name} {template!r} is not a str.format template over the fields "
            f"{', '.join(_FIELDS)} (PromQL braces doubled: {{{{ }}}}): {exc!r}"
        ) from exc


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


class PromQLGpuSource:
    """GPU utilization of a job from Prometheus (DCGM exporter series).

    Args:
        url: Prometheus' base URL (``http://prometheus:9090``, a path prefix
            allowed); None: nothing is measured (``not_applicable``).
        query_template: the utilization query (percent, 0-100); see the
            module docstring for the fields.
        sm_query_template: the SM-activity query (fraction, 0-1); None or
            empty: not queried.
        timeout: seconds per HTTP request.
        pod_pattern: ``str.format`` template of the job's pod-name regex
            over ``job``, ``pipeline`` and ``namespace`` (each inserted as a
            regex literal).
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
        return f"prometheus ({self.url}): {UTIL_METRIC}"

    def queries(
        self, namespace: str, pipeline: str, job_id: str, start: datetime, end: datetime
    ) -> tuple[str, str | None]:
        """The PromQL the measurement runs (utilization, SM activity)."""
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
        fields = {
            "namespace": promql_string(namespace),
            "pipeline": promql_string(pipeline),
            "job": promql_string(job_id),
            "pod_regex": promql_string(pod_regex),
            "window": max(1, math.ceil(seconds)),
        }
        util = self.query_template.format(**fields)
        sm = self.sm_query_template.format(**fields) if self.sm_query_template else None
        return util, sm

    def measure(
        self, namespace: str, pipeline: str, job_id: str, start: datetime, end: datetime
    ) -> GpuMeasurement:
        """Mean GPU utilization (and SM activity) of the job's pods over
        ``[start, end]``; naive datetimes are UTC.

        Raises:
            ValueError: ``end`` is before ``start``.
        """
        if self.url is None:
            return GpuMeasurement.not_applicable(NO_PROMETHEUS)
        util_query, sm_query = self.queries(namespace, pipeline, job_id, start, end)
        at = _utc(end).timestamp()
        try:
            util = self._value(util_query, at)
        except QueryError as exc:
            return GpuMeasurement.unreachable(str(exc), source=self.source)
        if util is None:
            return GpuMeasurement.not_applicable(NO_SERIES, source=self.source)
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
