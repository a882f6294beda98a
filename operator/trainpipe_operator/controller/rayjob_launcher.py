"""``runtime.type: rayjob``: each job is a KubeRay ``RayJob`` owned by the
pipeline. The operator creates it and reads its status back on every tick;
KubeRay's controller runs it (and deletes its cluster after the ttl)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainpipe_operator.kuberay.queue import WAITING, waiting_for_admission
from trainpipe_operator.kuberay.rayjob import PIPELINE_LABEL, build_rayjob, rayjob_outcome
from trainpipe_operator.pipeline.launchers import (
    INTERRUPTED,
    JobOutcome,
    JobPending,
    entrypoint_gpus,
    status_message,
)
from trainpipe_operator.spec.pipeline import ResourcesSpec

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
MAX_NAME = 47  # KubeRay derives cluster and pod names from it


def rayjob_name(submission_id: str) -> str:
    """A DNS-1123 name of at most 47 characters, stable for a submission id."""
    clean = "".join(c if c.isalnum() else "-" for c in submission_id.lower()).strip("-")
    if len(clean) <= MAX_NAME:
        return clean
    digest = hashlib.sha256(submission_id.encode()).hexdigest()[:8]
    return f"{clean[:MAX_NAME - 9].rstrip('-')}-{digest}"


class RayJobLauncher:
    """Never blocks: a job that is not finished raises ``JobPending``."""

    wait = False  # the runner's watchdog checks on JobPending, not from a thread

    def __init__(self, api: Any, namespace: str, owner: dict[str, str], image: str, resources: ResourcesSpec,
                 claim: str, artifact_root: Path, on_submit: Callable[[str], None] | None = None,
                 metrics_port: int | None = None, sub_path: str | None = None,
                 env: list[dict[str, Any]] | None = None, queue_name: str | None = None) -> None:
        self.api = api  # kubernetes.client.CustomObjectsApi
        self.namespace = namespace
        self.owner = owner
        self.image = image
        self.resources = resources
        # ``sub_path``: the folder of the claim mounted at ``artifact_root``
        # (the pipeline's namespace: its pods see no other team's folder).
        self.storage = {"claimName": claim, "mountPath": str(artifact_root),
                        **({"subPath": sub_path} if sub_path else {})}
        self.on_submit = on_submit
        self.metrics_port = metrics_port
        # The pods' env: the tracking credentials as secretKeyRef references
        # (tracking/credentials.py secret_env), never a value.
        self.env = list(env or [])
        # Kueue: RayJobs are created suspended in this LocalQueue; Kueue admits them.
        self.queue_name = queue_name

    def run(self, job_file: Path, run_dir: Path, submission_id: str) -> JobOutcome:
        from kubernetes.client.exceptions import ApiException

        name = rayjob_name(submission_id)
        try:
            obj = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = build_rayjob(name, self.namespace, self.owner, self.image, str(job_file), self.resources,
                                self.storage, service_account=None, metrics_port=self.metrics_port,
                                entrypoint_gpus=entrypoint_gpus(job_file), env=self.env,
                                queue_name=self.queue_name)
            self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
            log.info("created RayJob %s/%s for %s", self.namespace, name, submission_id)
            if self.on_submit is not None:
                self.on_submit(submission_id)
            raise JobPending(submission_id, WAITING if self.queue_name else "Created") from None
        state = rayjob_outcome(obj)
        if waiting_for_admission(obj) and not state.finished:
            raise JobPending(submission_id, WAITING)
        if not state.finished:
            raise JobPending(submission_id, state.state)
        code = 0 if state.succeeded else (INTERRUPTED if state.state == "STOPPED" else 1)
        output = run_dir / "job_output.log"
        output.write_text(f"RayJob {self.namespace}/{name}: {state.state}: {state.message}\n", encoding="utf-8")
        return JobOutcome(exit_code=code, submission_id=submission_id, output_path=output,
                          message=status_message(state.message))

    def exists(self, submission_id: str) -> bool:
        """Whether the RayJob of this submission exists (a suspension deletes it)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, rayjob_name(submission_id))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def remove(self, pipeline: str, uid: str) -> list[str]:
        """Cleanup (``spec.ttlSecondsAfterFinished``): delete every RayJob the
        pipeline owns (KubeRay deletes their clusters). Returns their names."""
        from kubernetes.client.exceptions import ApiException

        items = self.api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, label_selector=f"{PIPELINE_LABEL}={pipeline}")["items"]
        removed = []
        for item in items:
            owners = item["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == uid for o in owners):
                continue  # a pipeline of the same name before: not ours
            name = item["metadata"]["name"]
            try:
                self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                         propagation_policy="Background")
            except ApiException as exc:
                if exc.status != 404:
                    raise
            removed.append(f"RayJob {self.namespace}/{name}")
        return removed

    def stop(self, submission_id: str) -> bool:
        """Deleting the RayJob stops the job and its cluster."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                     rayjob_name(submission_id))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
