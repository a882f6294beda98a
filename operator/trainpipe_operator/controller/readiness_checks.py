"""The operator's own readiness checks (see ``readiness``):

- ``kopf``: kopf's startup handlers finished, so its watchers run (kopf sets
  the ``ready_flag`` it is given at that moment);
- ``watch``: the API server lists TrainingPipelines for the operator, in
  every namespace it watches (cluster-wide: all): the server answers, the
  CRD is served and the operator's RBAC lets it list, which its watch needs.
  A list of one object, not a watch: cheap enough for every probe (the
  result is cached by ``Readiness``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

GROUP, VERSION, PLURAL = "trainpipe.io", "v1alpha1", "trainingpipelines"
LIST_TIMEOUT_S = 3.0  # below the chart's probe timeout (5 s)


def kopf_started(flag: asyncio.Event) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if flag.is_set() else "kopf is starting (its startup handlers have not finished)"

    return check


def can_list_pipelines(custom: Any, namespaces: list[str]) -> Callable[[], Awaitable[str | None]]:
    """A check listing TrainingPipelines with ``custom`` (a kubernetes
    ``CustomObjectsApi``) in ``namespaces`` (empty: cluster-wide)."""

    def list_once() -> str | None:
        scopes: list[str | None] = list(namespaces) or [None]
        for namespace in scopes:
            try:
                if namespace is None:
                    custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1,
                                                      _request_timeout=LIST_TIMEOUT_S)
                else:
                    custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=1,
                                                         _request_timeout=LIST_TIMEOUT_S)
            except Exception as exc:
                return list_failure(exc, namespace)
        return None

    async def check() -> str | None:
        # The kubernetes client blocks: off the event loop, which serves the probes.
        return await asyncio.to_thread(list_once)

    return check


def list_failure(exc: Exception, namespace: str | None) -> str:
    """Why listing failed, in a sentence: the API's status and message, or
    the connection error; never the request's headers (the token)."""
    where = f"in namespace {namespace}" if namespace else "cluster-wide"
    status = getattr(exc, "status", None)
    if status:
        message = _api_message(getattr(exc, "body", None)) or str(getattr(exc, "reason", "") or "")
        hint = {401: "the operator's credentials are refused",
                403: "the operator's RBAC does not allow it (the chart's ClusterRole/Role)",
                404: f"is the CRD {PLURAL}.{GROUP} installed?"}.get(int(status), "")
        return (f"cannot list {PLURAL}.{GROUP} {where}: HTTP {status} {message}"
                + (f" ({hint})" if hint else ""))
    return f"cannot reach the API server to list {PLURAL}.{GROUP} {where}: {type(exc).__name__}: {exc}"


def _api_message(body: Any) -> str:
    if not body:
        return ""
    try:
        return str(json.loads(body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return ""
