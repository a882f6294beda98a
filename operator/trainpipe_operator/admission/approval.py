"""Approval as a Kubernetes permission: the pure part.

A person approves by setting ``trainpipe.io/approve=<runId>`` (the run id
``status.runId`` shows). The admission webhook lets that through only when
the pipeline waits in ``AwaitingApproval`` for that run and a
SubjectAccessReview says the person may ``approve`` ``trainingpipelines``
there; it then replaces the request by the record
``trainpipe.io/approved-by``: who, when, for which run and object, signed
with a key only this operator process holds. The operator acts only on a
record whose signature verifies, so neither a user who sets the record
himself nor an approval written while no webhook ran moves a pipeline on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

GROUP, RESOURCE, VERB = "trainpipe.io", "trainingpipelines", "approve"
APPROVE_ANNOTATION = "trainpipe.io/approve"  # a person writes it: the run id to approve
RECORD_ANNOTATION = "trainpipe.io/approved-by"  # only the webhook writes it
LEGACY_ANNOTATION = "trainpipe.io/approved"  # approved anything, by anyone, once: refused now
AWAITING = "AwaitingApproval"


class ApprovalError(ValueError):
    """An approval record that cannot be trusted; the message says why."""


@dataclass(frozen=True)
class ApprovalRecord:
    user: str
    user_uid: str
    run_id: str
    time: str
    namespace: str
    name: str
    object_uid: str


def approve_command(namespace: str, name: str, run_id: str | None) -> str:
    return f"kubectl annotate tp {name} -n {namespace} {APPROVE_ANNOTATION}={run_id or '<status.runId>'}"


class ApprovalKey:
    """Signs and verifies records. The key is random per operator process
    and never leaves its pod: the webhook signs with it, and the operator's
    reconcile workers (its child processes) get it at their start, through
    a pipe. A record signed before a restart no longer verifies (the person
    approves again)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    @property
    def secret(self) -> bytes:
        """The key itself, for the operator's reconcile workers only."""
        return self._key

    def _digest(self, fields: Mapping[str, str]) -> str:
        text = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def sign(self, record: ApprovalRecord) -> str:
        fields = asdict(record)
        return json.dumps({**fields, "signature": self._digest(fields)}, sort_keys=True)

    def verify(self, text: str, namespace: str, name: str, object_uid: str) -> ApprovalRecord:
        """The record, when this process signed it for this very object.

        Raises:
            ApprovalError: not JSON, not signed by this operator, or for another object.
        """
        try:
            data = json.loads(text)
            signature = data.pop("signature")
            record = ApprovalRecord(**data)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ApprovalError(f"{RECORD_ANNOTATION} is not an approval record this operator wrote") from None
        if not hmac.compare_digest(str(signature), self._digest(asdict(record))):
            raise ApprovalError(f"{RECORD_ANNOTATION} does not carry this operator's signature: only the "
                                "admission webhook writes it (or the operator restarted since)")
        if (record.namespace, record.name, record.object_uid) != (namespace, name, object_uid):
            raise ApprovalError(f"{RECORD_ANNOTATION} was written for {record.namespace}/{record.name} "
                                f"(uid {record.object_uid}), not this pipeline")
        return record


def request_problem(status: Mapping[str, Any] | None, requested: str, namespace: str, name: str) -> str | None:
    """Why an approval of run ``requested`` cannot be taken now (None: it can).
    ``status``: the stored status, before this request."""
    status = status or {}
    phase = status.get("phase") or "Pending"
    run_id = status.get("runId")
    if phase != AWAITING:
        return (f"{APPROVE_ANNOTATION}: TrainingPipeline {namespace}/{name} is in phase {phase}, not {AWAITING}: "
                "an approval is taken only once every check passed and the results exist; approve when "
                f"`kubectl get tp {name} -n {namespace}` shows {AWAITING}")
    if requested != run_id:
        return (f"{APPROVE_ANNOTATION}: names run {requested[:100]!r}, but TrainingPipeline {namespace}/{name} waits "
                f"for the approval of run {run_id!r} (status.runId); approve that run: "
                f"{approve_command(namespace, name, run_id)}")
    return None


def subject_access_review(userinfo: Mapping[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """The SubjectAccessReview asking whether the requesting user may approve."""
    spec: dict[str, Any] = {
        "user": userinfo.get("username", ""),
        "groups": list(userinfo.get("groups") or []),
        "resourceAttributes": {"group": GROUP, "resource": RESOURCE, "verb": VERB, "namespace": namespace,
                               "name": name},
    }
    if userinfo.get("uid"):
        spec["uid"] = userinfo["uid"]
    if userinfo.get("extra"):
        spec["extra"] = {k: list(v) for k, v in dict(userinfo["extra"]).items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def denied_message(user: str, namespace: str, name: str, reason: str = "") -> str:
    why = f" ({reason})" if reason else ""
    return (f"{APPROVE_ANNOTATION}: user {user!r} may not approve TrainingPipeline {namespace}/{name}{why}: "
            f"approving needs RBAC verb '{VERB}' on resource '{RESOURCE}' (group {GROUP}) in namespace "
            f"{namespace}; see examples/approver-rbac.yaml")


def annotation_problems(old: Mapping[str, str] | None, new: Mapping[str, str], operation: str,
                        key: ApprovalKey, namespace: str, name: str, object_uid: str) -> list[str]:
    """What the validating webhook refuses about the approval annotations of
    the object as it will be stored (after the mutating webhook ran)."""
    old = old or {}
    problems = []
    if LEGACY_ANNOTATION in new and new.get(LEGACY_ANNOTATION) != old.get(LEGACY_ANNOTATION):
        problems.append(f"metadata.annotations[{LEGACY_ANNOTATION}]: no longer approves; a person allowed to "
                        f"approve sets {APPROVE_ANNOTATION}=<status.runId> once the pipeline is {AWAITING}")
    if operation == "CREATE" and (APPROVE_ANNOTATION in new or RECORD_ANNOTATION in new):
        problems.append(f"metadata.annotations: a TrainingPipeline is created unapproved; remove "
                        f"{APPROVE_ANNOTATION} / {RECORD_ANNOTATION} and approve once it is {AWAITING}")
        return problems
    if APPROVE_ANNOTATION in new and new[APPROVE_ANNOTATION] != old.get(APPROVE_ANNOTATION):
        # The mutating webhook consumes every approval it takes: one left here was not checked.
        problems.append(f"metadata.annotations[{APPROVE_ANNOTATION}]: was not checked by the trainpipe "
                        "mutating webhook (is its MutatingWebhookConfiguration installed?)")
    record = new.get(RECORD_ANNOTATION)
    if record is not None and record != old.get(RECORD_ANNOTATION):
        try:
            key.verify(record, namespace, name, object_uid)
        except ApprovalError as exc:
            problems.append(f"metadata.annotations[{RECORD_ANNOTATION}]: written by the trainpipe webhook only "
                            f"({exc}); to approve, set {APPROVE_ANNOTATION}=<status.runId>")
    return problems


def verified_approval(annotations: Mapping[str, str], key: ApprovalKey | None, namespace: str, name: str,
                      object_uid: str, run_id: str | None) -> tuple[ApprovalRecord | None, str]:
    """For the reconciler: the approval to act on, or None and the status
    message saying what the pipeline waits for."""
    command = approve_command(namespace, name, run_id)
    if key is None:
        return None, ("every check passed; waiting for approval, which needs the operator's admission webhook: "
                      "it is off (chart value webhook.enabled), so no approval can be verified")
    text = annotations.get(RECORD_ANNOTATION)
    if not text:
        return None, (f"every check passed; waiting for a person allowed to approve (RBAC verb '{VERB}' on "
                      f"{RESOURCE}): {command}")
    try:
        record = key.verify(text, namespace, name, object_uid)
    except ApprovalError as exc:
        return None, f"approval not accepted: {exc}; approve again: {command}"
    if record.run_id != run_id:
        return None, f"approval not accepted: it names run {record.run_id!r}, not {run_id!r}; approve again: {command}"
    return record, ""
