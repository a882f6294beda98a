"""The KubeRay ``RayJob`` for one phase's job (``runtime.type: rayjob``), and
what KubeRay's status on it means for the pipeline.

``build_rayjob`` returns a plain ``ray.io/v1`` RayJob dict: a Ray cluster made
for the job (a head and one ``workers`` group of ``resources.workers`` pods),
the trainer's command as the entrypoint, submitted by KubeRay's submitter
Kubernetes Job (``K8sJobMode``), and the cluster deleted when the job ends
(``shutdownAfterJobFinishes``). The RayJob is owned by the TrainingPipeline
(``controller: true``), so deleting the pipeline deletes the job and its
cluster. ``kuberay.schema.validate_against_kuberay`` checks the result against
KubeRay's CRD.

``rayjob_outcome`` reads ``status`` as KubeRay writes it (field names and
values from KubeRay's ``ray-operator/apis/ray/v1/rayjob_types.go``):

* ``status.jobStatus``: Ray's job status: ``""`` (not submitted yet),
  ``PENDING``, ``RUNNING``, ``STOPPED``, ``SUCCEEDED``, ``FAILED``;
* ``status.jobDeploymentStatus``: KubeRay's lifecycle: ``""`` (new),
  ``Initializing``, ``Running``, ``Complete``, ``Failed``,
  ``ValidationFailed``, ``Suspending``, ``Suspended``, ``Retrying``,
  ``Waiting``;
* ``status.reason`` (when Failed): ``SubmissionFailed``, ``DeadlineExceeded``,
  ``AppFailed``, ``JobDeploymentStatusTransitionGracePeriodExceeded``,
  ``ValidationFailed``; ``status.message``; ``status.failed`` /
  ``status.succeeded``: counts over the RayJob's attempts (``backoffLimit``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainpipe_operator.kuberay.queue import apply_queue
from trainpipe_operator.pipeline.launchers import INTERRUPTED, trainer_command
from trainpipe_operator.spec.pipeline import NAME_PATTERN, ResourcesSpec

API_VERSION = "ray.io/v1"
KIND = "RayJob"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PIPELINE_LABEL = "trainpipe.io/pipeline"
RAYJOB_LABEL = "trainpipe.io/rayjob"
ARTIFACT_VOLUME = "artifacts"
SHM_VOLUME = "dshm"
WORKER_GROUP = "workers"
# KubeRay refuses longer RayJob names (ValidationFailed): it derives the
# RayCluster's and the pods' names from it.
MAX_RAYJOB_NAME = 47
# The trainer image's user (Dockerfile: USER 10001:10001).
TRAINER_UID = 10001
HEAD_PORTS = (("gcs-server", 6379), ("dashboard", 8265), ("client", 10001))

JOB_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
DEPLOYMENT_TERMINAL = ("Complete", "Failed", "ValidationFailed")
DEPLOYMENT_HELD = ("Retrying", "Suspending", "Suspended", "Waiting")


def cpu_quantity(cpus: float) -> str:
    """1 -> ``"1"``, 0.5 -> ``"500m"``, 2.25 -> ``"2250m"``."""
    if float(cpus).is_integer():
        return str(int(cpus))
    return f"{round(cpus * 1000)}m"


def _storage_fields(storage: Mapping[str, Any]) -> tuple[str, str, str | None]:
    claim = storage.get("claimName", storage.get("claim_name"))
    mount = storage.get("mountPath", storage.get("mount_path"))
    sub_path = storage.get("subPath", storage.get("sub_path"))
    if not claim or not mount:
        raise ValueError(
            "storage needs the artifact volume's PVC claim name and mount path: "
            f"{{'claimName': ..., 'mountPath': ...}}, got {dict(storage)!r}"
        )
    if not str(mount).startswith("/"):
        raise ValueError(f"storage mountPath must be absolute, got {mount!r}")
    return str(claim), str(mount), (str(sub_path) if sub_path else None)


def _owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in ("apiVersion", "kind", "name", "uid") if not owner.get(k)]
    if missing:
        raise ValueError(
            f"owner is missing {', '.join(missing)}: an owner reference needs apiVersion, kind, name and uid"
        )
    return {
        "apiVersion": str(owner["apiVersion"]),
        "kind": str(owner["kind"]),
        "name": str(owner["name"]),
        "uid": str(owner["uid"]),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _pod_security(run_as_user: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": run_as_user,
        "runAsGroup": run_as_user,
        "fsGroup": run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus > 0:
        amounts["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _volumes(claim: str) -> list[dict[str, Any]]:
    return [
        {"name": ARTIFACT_VOLUME, "persistentVolumeClaim": {"claimName": claim}},
        # Ray's object store and torch's DataLoader workers use /dev/shm; the
        # container runtime's default (64 MiB) is too small for either.
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}},
    ]


def _mounts(mount_path: str, sub_path: str | None) -> list[dict[str, Any]]:
    artifacts: dict[str, Any] = {"name": ARTIFACT_VOLUME, "mountPath": mount_path}
    if sub_path:
        artifacts["subPath"] = sub_path
    return [artifacts, {"name": SHM_VOLUME, "mountPath": "/dev/shm"}]


def _pod_template(
    labels: dict[str, str],
    container: dict[str, Any],
    claim: str,
    service_account: str | None,
    run_as_user: int,
    tolerations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "securityContext": _pod_security(run_as_user),
        "containers": [container],
        "volumes": _volumes(claim),
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if tolerations:
        spec["tolerations"] = tolerations
    return {"metadata": {"labels": dict(labels)}, "spec": spec}


def build_rayjob(
    name: str,
    namespace: str,
    owner: dict,
    image: str,
    job_file: str,
    resources: ResourcesSpec,
    storage: dict,
    service_account: str | None,
    ttl_seconds: int = 3600,
    *,
    head_cpu: str = "1",
    head_memory: str = "2Gi",
    run_as_user: int = TRAINER_UID,
    image_pull_policy: str = "IfNotPresent",
    ray_version: str | None = None,
    metrics_port: int | None = None,
    entrypoint_gpus: float = 0,
    env: list[dict[str, Any]] | None = None,
    queue_name: str | None = None,
) -> dict:
    """The ``ray.io/v1`` RayJob running ``python -m trainpipe_trainer.run
    --config <job_file>`` on a Ray cluster made for it.

    Args:
        name: the RayJob's name (DNS-1123 label, at most 47 characters:
            KubeRay's limit).
        namespace: the pipeline's namespace (owner references do not cross
            namespaces).
        owner: the TrainingPipeline: ``apiVersion``, ``kind``, ``name``,
            ``uid``. Its name is the ``trainpipe.io/pipeline`` label.
        image: the trainer image (it has Ray, torch and ``trainpipe_trainer``).
        job_file: the job config's path inside the artifact volume, as the
            pods see it (under ``storage['mountPath']``).
        resources: ``workers`` worker pods, each with ``cpusPerWorker`` CPUs,
            ``memory``, and ``gpusPerWorker`` ``nvidia.com/gpu`` (requests =
            limits; no GPU key at all when 0).
        storage: the shared artifact volume: ``{"claimName": <PVC>,
            "mountPath": <absolute path>}`` (optional ``subPath``; snake_case
            keys accepted too), mounted in the head and every worker.
        service_account: the pods' service account; None: the namespace's
            default.
        ttl_seconds: ``ttlSecondsAfterFinished``: how long KubeRay keeps the
            finished cluster (for logs) before deleting it.
        head_cpu, head_memory: the head pod's requests = limits. The head runs
            the job's driver (the trainer's entrypoint) and Ray's GCS and
            dashboard; its CPUs stay schedulable by Ray (Ray Train's
            coordinator may land there), no training worker needs it.
        run_as_user: uid/gid/fsGroup of every pod (the trainer image's user).
        image_pull_policy: of every container.
        ray_version: ``rayClusterSpec.rayVersion`` when given.
        metrics_port: the port rank 0 serves ``trainpipe_*`` metrics on,
            declared on the worker container as the port named ``metrics``
            (what the chart's PodMonitor scrapes); None: none declared.
        entrypoint_gpus: ``entrypointNumGpus``: GPUs the driver itself
            needs (a GPU pipeline's preflight/evaluate); 0: not set.
        env: ``env`` entries of the head and worker containers (where the
            driver and the Ray Train workers run; the submitter needs none):
            the tracking credentials as ``secretKeyRef`` references
            (tracking/credentials.py ``secret_env``), never values.
        queue_name: a Kueue LocalQueue: the RayJob is labelled for it and
            created suspended (``kuberay.queue``); None: it starts at once.

    Raises:
        ValueError: a name KubeRay would refuse, an incomplete owner or storage.
    """
    if not re.fullmatch(NAME_PATTERN, name) or len(name) > MAX_RAYJOB_NAME:
        raise ValueError(
            f"{name!r} is not a valid RayJob name: a DNS-1123 label of at most "
            f"{MAX_RAYJOB_NAME} characters (KubeRay derives cluster and pod names from it)"
        )
    if ttl_seconds < 0:
        raise ValueError(f"ttl_seconds must be >= 0, got {ttl_seconds}")
    owner_ref = _owner_reference(owner)
    claim, mount_path, sub_path = _storage_fields(storage)
    labels = {
        MANAGED_BY_LABEL: "trainpipe",
        PIPELINE_LABEL: owner_ref["name"],
        RAYJOB_LABEL: name,
    }
    head_container = {
        "name": "ray-head",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "resources": _resources(head_cpu, head_memory),
        "ports": [{"name": port_name, "containerPort": port} for port_name, port in HEAD_PORTS],
        "volumeMounts": _mounts(mount_path, sub_path),
        "securityContext": _container_security(),
        **({"env": [dict(e) for e in env]} if env else {}),
    }
    gpus = resources.gpus_per_worker
    worker_container = {
        "name": "ray-worker",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "resources": _resources(cpu_quantity(resources.cpus_per_worker), resources.memory, gpus),
        **({"ports": [{"name": "metrics", "containerPort": metrics_port}]} if metrics_port else {}),
        "volumeMounts": _mounts(mount_path, sub_path),
        "securityContext": _container_security(),
        **({"env": [dict(e) for e in env]} if env else {}),
    }
    gpu_tolerations = (
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        if gpus > 0
        else None
    )
    submitter_container = {
        "name": "ray-job-submitter",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        # KubeRay fills in the command (`ray job submit ...`) and its env.
        "resources": _resources("500m", "1Gi"),
        "securityContext": _container_security(),
    }
    submitter_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": _pod_security(run_as_user),
        "containers": [submitter_container],
    }
    if service_account:
        submitter_spec["serviceAccountName"] = service_account

    cluster: dict[str, Any] = {
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0"},
            "template": _pod_template(labels, head_container, claim, service_account, run_as_user),
        },
        "workerGroupSpecs": [
            {
                "groupName": WORKER_GROUP,
                "replicas": resources.workers,
                "minReplicas": resources.workers,
                "maxReplicas": resources.workers,
                # Ray reads num-cpus / num-gpus from the container's limits.
                "rayStartParams": {},
                "template": _pod_template(
                    labels, worker_container, claim, service_account, run_as_user, gpu_tolerations
                ),
            }
        ],
    }
    if ray_version:
        cluster["rayVersion"] = ray_version

    return apply_queue({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [owner_ref],
        },
        "spec": {
            "entrypoint": shlex.join(trainer_command(Path(job_file), python="python")),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": int(ttl_seconds),
            "submitterPodTemplate": {"metadata": {"labels": dict(labels)}, "spec": submitter_spec},
            "rayClusterSpec": cluster,
            # A GPU pipeline's one-process jobs need a GPU for the driver (the
            # head has none): launchers.entrypoint_gpus.
            **({"entrypointNumGpus": entrypoint_gpus} if entrypoint_gpus else {}),
        },
    }, queue_name)


@dataclass(frozen=True)
class RayJobState:
    """What a RayJob's status means for the pipeline.

    ``finished``: KubeRay is done with it (deployment ``Complete``, ``Failed``
    or ``ValidationFailed``; or Ray's job is terminal while the deployment
    still says ``Running``, the moment before KubeRay moves it on). A
    ``Retrying`` deployment (``backoffLimit``) is not finished, whatever the
    last attempt's ``jobStatus``.
    ``succeeded``: finished with ``jobStatus: SUCCEEDED``.
    ``state``: Ray's ``jobStatus`` when it has one, else KubeRay's
    ``jobDeploymentStatus``, else ``New`` (nothing written yet); the
    deployment status instead where KubeRay ended the job without a terminal
    ``jobStatus`` (``Failed`` on a deadline, ``ValidationFailed``) or holds it
    (``Retrying``, ``Suspended``, ...).
    ``message``: ``status.message`` (with ``status.reason`` in front when set).
    """

    finished: bool
    succeeded: bool
    state: str
    message: str
    job_status: str = ""
    deployment_status: str = ""
    reason: str = ""
    failed_attempts: int = 0
    ray_cluster: str = ""
    job_id: str = ""

    @property
    def stopped(self) -> bool:
        """Ray stopped the job (a stop request: the trainer checkpointed)."""
        return self.job_status == "STOPPED"

    @property
    def exit_code(self) -> int | None:
        """For a ``JobOutcome``: None while running; 0 succeeded; 75
        (``INTERRUPTED``, resumable) when Ray stopped it; 1 otherwise."""
        if not self.finished:
            return None
        if self.succeeded:
            return 0
        return INTERRUPTED if self.stopped else 1


def rayjob_outcome(obj: dict) -> RayJobState:
    """Read a RayJob's ``status`` (as KubeRay writes it) into a RayJobState."""
    status = (obj or {}).get("status") or {}
    job_status = str(status.get("jobStatus") or "")
    deployment = str(status.get("jobDeploymentStatus") or "")
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    try:
        failed_attempts = int(status.get("failed") or 0)
    except (TypeError, ValueError):
        failed_attempts = 0

    if deployment in DEPLOYMENT_TERMINAL:
        finished = True
    elif deployment == "Running":
        finished = job_status in JOB_TERMINAL
    else:  # "", Initializing, Waiting, Retrying, Suspending, Suspended, or newer values
        finished = False
    succeeded = finished and job_status == "SUCCEEDED"
    if (finished and job_status not in JOB_TERMINAL) or deployment in DEPLOYMENT_HELD:
        state = deployment  # KubeRay ended or holds it, whatever Ray last said
    else:
        state = job_status or deployment or "New"
    if reason and reason not in message:
        message = f"{reason}: {message}" if message else reason
    return RayJobState(
        finished=finished,
        succeeded=succeeded,
        state=state,
        message=message,
        job_status=job_status,
        deployment_status=deployment,
        reason=reason,
        failed_attempts=failed_attempts,
        ray_cluster=str(status.get("rayClusterName") or ""),
        job_id=str(status.get("jobId") or ""),
    )
