"""The admission webhook the operator serves (kopf's admission support):
thin handlers that delegate to ``approval`` and ``rules``.

Handler ids are the URL paths the API server calls (``/approval``,
``/validate``, ``/status``): the chart's webhook configurations name them.

- ``approval`` (mutating; CREATE, UPDATE): takes an approval
  (``trainpipe.io/approve=<runId>``) after a SubjectAccessReview, and writes
  the signed record in its place;
- ``validate`` (validating; CREATE, UPDATE): the approval annotations as
  stored, and the spec rules whenever the spec is new or changed;
- ``status`` (validating; UPDATE of ``/status``): only the operator itself
  (and ``system:masters``) writes the status, since the operator takes it as
  its state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import kopf

from trainpipe_operator.admission import approval, certs
from trainpipe_operator.admission.rules import check_spec

GROUP, VERSION, PLURAL = "trainpipe.io", "v1alpha1", "trainingpipelines"
APPROVAL_ID, VALIDATE_ID, STATUS_ID = "approval", "validate", "status"
HANDLER_IDS = (APPROVAL_ID, VALIDATE_ID, STATUS_ID)
MASTERS = "system:masters"

log = logging.getLogger("trainpipe.admission")
_SERVING = threading.Event()

Review = Callable[[dict[str, Any]], tuple[bool, str]]
"""Creates a SubjectAccessReview; returns (allowed, the authorizer's reason)."""


def is_serving() -> bool:
    """Whether the webhook listens (for a readiness probe): kopf opens the
    port once it has discovered the resources, so requests are answered."""
    return _SERVING.is_set()


class WebhookServer(kopf.WebhookServer):
    """kopf's server, telling ``is_serving`` when it listens."""

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in super().__call__(fn):
            _SERVING.set()
            yield client_config


def kubernetes_review(api_client: Any) -> Review:
    """A ``Review`` through the Kubernetes client (blocking: run it in a thread)."""
    from kubernetes import client

    authorization = client.AuthorizationV1Api(api_client)

    def review(body: dict[str, Any]) -> tuple[bool, str]:
        result = authorization.create_subject_access_review(cast(Any, body))  # a dict is sent as is
        status = result.status
        return bool(status and status.allowed), (status.reason or "") if status else ""

    return review


def _raw(body: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(body) if body is not None else {}


def _annotations(body: Mapping[str, Any]) -> dict[str, str]:
    return dict((body.get("metadata") or {}).get("annotations") or {})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Webhook:
    settings: Any  # OperatorSettings
    key: approval.ApprovalKey
    review: Review

    async def take_approval(self, body: Any, old: Any, operation: str, userinfo: Mapping[str, Any],
                            patch: kopf.Patch, **_: Any) -> None:
        new, before = _raw(body), _raw(old)
        meta = new.get("metadata") or {}
        namespace, name = meta.get("namespace") or "default", meta.get("name", "")
        annotations = _annotations(new)
        if operation == "CREATE":
            given = [k for k in (approval.APPROVE_ANNOTATION, approval.RECORD_ANNOTATION) if k in annotations]
            if given:
                raise kopf.AdmissionError(
                    f"TrainingPipeline {namespace}/{name}: metadata.annotations[{', '.join(given)}]: an approval in "
                    "the manifest is refused: a pipeline is created unapproved; a person allowed to approve sets "
                    f"{approval.APPROVE_ANNOTATION}=<status.runId> once it is {approval.AWAITING}", code=403)
            return
        requested = annotations.get(approval.APPROVE_ANNOTATION)
        if requested is None or requested == _annotations(before).get(approval.APPROVE_ANNOTATION):
            return
        problem = approval.request_problem(before.get("status"), requested, namespace, name)
        if problem:
            raise kopf.AdmissionError(problem, code=409)
        user = str(userinfo.get("username", ""))
        try:
            allowed, reason = await asyncio.to_thread(
                self.review, approval.subject_access_review(userinfo, namespace, name))
        except Exception as exc:  # the API server could not answer: not an approval
            log.warning("SubjectAccessReview for %s on %s/%s failed: %s", user, namespace, name, exc)
            raise kopf.AdmissionError(f"{approval.APPROVE_ANNOTATION}: could not check whether {user!r} may approve "
                                      f"({type(exc).__name__}); try again", code=503) from exc
        if not allowed:
            raise kopf.AdmissionError(approval.denied_message(user, namespace, name, reason), code=403)
        record = approval.ApprovalRecord(user=user, user_uid=str(userinfo.get("uid") or ""), run_id=requested,
                                         time=_now(), namespace=namespace, name=name,
                                         object_uid=str(meta.get("uid") or ""))
        patch.metadata.annotations[approval.RECORD_ANNOTATION] = self.key.sign(record)
        patch.metadata.annotations[approval.APPROVE_ANNOTATION] = None  # consumed: approving again is a change
        log.info("approval of %s/%s run %s by %s", namespace, name, requested, user)

    async def validate(self, body: Any, old: Any, operation: str, **_: Any) -> None:
        new, before = _raw(body), _raw(old)
        meta = new.get("metadata") or {}
        namespace, name = meta.get("namespace") or "default", meta.get("name", "")
        problems = approval.annotation_problems(_annotations(before) if old is not None else None,
                                                _annotations(new), operation, self.key, namespace, name,
                                                str(meta.get("uid") or ""))
        # An unchanged spec is not checked again: the operator's own writes
        # (finalizer removal at deletion) must pass whatever the rules became.
        if operation == "CREATE" or new.get("spec") != before.get("spec"):
            problems += check_spec(new.get("spec"), namespace, self.settings)
        if problems:
            raise kopf.AdmissionError(f"TrainingPipeline {namespace}/{name} refused: " + "; ".join(problems),
                                      code=422)

    async def guard_status(self, body: Any, old: Any, userinfo: Mapping[str, Any], **_: Any) -> None:
        user = str(userinfo.get("username", ""))
        if user == self.settings.operator_user or MASTERS in (userinfo.get("groups") or []):
            return
        if _raw(body).get("status") == _raw(old).get("status"):
            return
        meta = _raw(body).get("metadata") or {}
        raise kopf.AdmissionError(
            f"status of TrainingPipeline {meta.get('namespace')}/{meta.get('name')}: written by the trainpipe "
            f"operator ({self.settings.operator_user}) only, not by {user!r}: it is the pipeline's record of "
            "gates and approvals; grant people no verbs on trainingpipelines/status", code=403)


def server(settings: Any) -> WebhookServer:
    """HTTPS on ``webhook_addr:webhook_port`` with the certificate in
    ``webhook_cert_dir`` (the chart mounts it), else a self-signed one for
    ``webhook_host`` (its CA in ``<dir>/ca.crt``, for a configuration made by hand)."""
    folder = settings.webhook_cert_dir
    if folder is None:
        import tempfile

        folder = certs.write_self_signed(Path(tempfile.mkdtemp(prefix="trainpipe-webhook-")),
                                         [settings.webhook_host])
        log.warning("webhook: no certificate given (TRAINPIPE_WEBHOOK_CERT_DIR); serving a self-signed one for %s, "
                    "its CA in %s", settings.webhook_host, Path(folder) / certs.CA)
    folder = Path(folder)
    ca = folder / certs.CA
    return WebhookServer(addr=settings.webhook_addr, port=settings.webhook_port, host=settings.webhook_host,
                         certfile=folder / certs.CERT, pkeyfile=folder / certs.KEY,
                         cafile=ca if ca.exists() else None)


def register(webhook: Webhook, registry: kopf.OperatorRegistry) -> None:
    """The handlers, and the server kopf starts for them."""
    def serve(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.server = server(webhook.settings)

    kopf.on.startup(id="admission-server", registry=registry)(serve)
    kopf.on.mutate(GROUP, VERSION, PLURAL, id=APPROVAL_ID, operations=["CREATE", "UPDATE"],
                   registry=registry)(cast(Any, webhook.take_approval))
    kopf.on.validate(GROUP, VERSION, PLURAL, id=VALIDATE_ID, operations=["CREATE", "UPDATE"],
                     registry=registry)(cast(Any, webhook.validate))
    if webhook.settings.operator_user:
        kopf.on.validate(GROUP, VERSION, PLURAL, id=STATUS_ID, subresource="status", operations=["UPDATE"],
                         registry=registry)(cast(Any, webhook.guard_status))
    else:
        log.warning("webhook: the operator's own user name is unknown (TRAINPIPE_OPERATOR_USER): status writes "
                    "are not guarded; RBAC alone keeps people from writing trainingpipelines/status")
