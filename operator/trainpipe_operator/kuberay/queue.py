"""Kueue's RayJob integration: what a queued RayJob must look like, and how
to tell that one waits for admission.

Kueue manages a RayJob labelled ``kueue.x-k8s.io/queue-name: <LocalQueue>``:
it must be created suspended (``spec.suspend: true``; Kueue admits it by
setting it to false once the ClusterQueue has quota for the head, the
workers and the submitter), with ``spec.shutdownAfterJobFinishes: true``
(Kueue frees the quota when the job ends, so the cluster must go with it),
without ``spec.clusterSelector`` (Kueue does not manage a job on an existing
cluster) and with at most 7 worker groups (a Workload holds at most 8 pod
sets). ``kueue_problems`` checks a RayJob body against these.
"""

from __future__ import annotations

from typing import Any

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
WAITING = "WaitingForAdmission"
MAX_WORKER_GROUPS = 7


def queue_of(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)


def apply_queue(body: dict[str, Any], queue_name: str | None) -> dict[str, Any]:
    """``body`` queued in ``queue_name`` (the label, created suspended); unchanged without one."""
    if not queue_name:
        return body
    body["metadata"].setdefault("labels", {})[QUEUE_LABEL] = queue_name
    body["spec"]["suspend"] = True
    body["spec"]["shutdownAfterJobFinishes"] = True
    return body


def waiting_for_admission(obj: dict[str, Any]) -> bool:
    """A queued RayJob still suspended: Kueue has not admitted it (yet, or
    again after preempting it)."""
    return bool(queue_of(obj)) and bool((obj.get("spec") or {}).get("suspend"))


def kueue_problems(obj: dict[str, Any]) -> list[str]:
    """What in a queued RayJob Kueue's RayJob integration would refuse or mishandle."""
    spec = obj.get("spec") or {}
    problems = []
    if not queue_of(obj):
        problems.append(f"metadata.labels: no {QUEUE_LABEL} label")
    if spec.get("suspend") is not True:
        problems.append("spec.suspend: must be true at creation (Kueue unsuspends it when admitted)")
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("spec.shutdownAfterJobFinishes: must be true (Kueue frees the quota when the job ends)")
    if spec.get("clusterSelector"):
        problems.append("spec.clusterSelector: Kueue does not manage a RayJob on an existing cluster")
    groups = (spec.get("rayClusterSpec") or {}).get("workerGroupSpecs") or []
    if len(groups) > MAX_WORKER_GROUPS:
        problems.append(f"spec.rayClusterSpec.workerGroupSpecs: {len(groups)} groups; Kueue takes at most "
                        f"{MAX_WORKER_GROUPS}")
    if (spec.get("rayClusterSpec") or {}).get("enableInTreeAutoscaling"):
        problems.append("spec.rayClusterSpec.enableInTreeAutoscaling: Kueue admits a fixed size")
    return problems
