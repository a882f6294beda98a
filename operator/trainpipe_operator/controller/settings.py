"""What the operator is configured with, one field each, from the command
line or the environment (the Helm chart sets the environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trainpipe_operator.tenancy.settings import TenancySettings

DEFAULT_GPU_QUERY = (
    'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{namespace="{namespace}", pod=~"{pod_regex}"}}[{window}s]))'
)


@dataclass
class OperatorSettings:
    artifact_root: Path = field(default_factory=lambda: Path(os.environ.get(
        "TRAINPIPE_ARTIFACT_ROOT", "/var/lib/trainpipe/artifacts")))
    """Shared storage where every pipeline's run directory lives
    (``<root>/<namespace>/<name>-<uid8>``); the Ray jobs must see the same
    path (a ReadWriteMany volume on a cluster)."""

    prometheus_url: str | None = field(default_factory=lambda: os.environ.get("TRAINPIPE_PROMETHEUS_URL") or None)
    """Prometheus the GPU-utilization check queries; none: the check falls
    back to the job's own NVML reading in evidence.json."""

    gpu_query: str = field(default_factory=lambda: os.environ.get("TRAINPIPE_GPU_QUERY", DEFAULT_GPU_QUERY))
    """PromQL for mean GPU utilization; ``str.format`` fields: namespace,
    pipeline, job, pod_regex, window (seconds)."""

    ray_address: str | None = field(default_factory=lambda: os.environ.get("TRAINPIPE_RAY_ADDRESS") or None)
    """Ray Job API used when a pipeline's ``runtime.ray.address`` is empty
    (always allowed: the operator's administrator chose it)."""

    ray_allowed_addresses: list[str] = field(default_factory=lambda: [
        a.strip() for a in os.environ.get("TRAINPIPE_RAY_ALLOWED_ADDRESSES", "").split(",") if a.strip()])
    """Ray Job API addresses a ``runtime.type: ray`` pipeline may name (comma-
    separated); any other is refused naming the field. Empty (and no
    ``ray_address``): only ``runtime.type: rayjob`` runs."""

    poll_seconds: float = field(default_factory=lambda: float(os.environ.get("TRAINPIPE_POLL_SECONDS", "2")))
    """How often running pipelines are reconciled (a kopf timer, not a loop)."""

    metrics_port: int = field(default_factory=lambda: int(os.environ.get("TRAINPIPE_METRICS_PORT", "9090")))
    """The operator's own /metrics (0: off)."""

    liveness_port: int = field(default_factory=lambda: int(os.environ.get("TRAINPIPE_LIVENESS_PORT", "8080")))
    """``/healthz`` for the liveness probe (0: off)."""

    namespaces: list[str] = field(default_factory=lambda: [
        n for n in os.environ.get("TRAINPIPE_NAMESPACES", "").split(",") if n])
    """Namespaces to watch; empty: the whole cluster."""

    rayjob_image: str = field(default_factory=lambda: os.environ.get(
        "TRAINPIPE_TRAINER_IMAGE", "trainpipe-trainer:latest"))
    """The trainer image a ``runtime.type: rayjob`` RayJob runs."""

    artifact_claim: str = field(default_factory=lambda: os.environ.get("TRAINPIPE_ARTIFACT_CLAIM", "trainpipe-artifacts"))
    """The PersistentVolumeClaim holding ``artifact_root``, mounted into RayJob pods."""

    trainer_metrics_port: int = field(default_factory=lambda: int(os.environ.get(
        "TRAINPIPE_TRAINER_METRICS_PORT", "0")))
    """Port on which each training job's rank 0 serves ``trainpipe_*`` metrics
    (0: off). RayJob worker pods declare it as the container port ``metrics``
    (the chart's PodMonitor scrapes it); on a shared Ray cluster, a job that
    finds the port taken trains on without metrics."""

    def tenancy(self) -> TenancySettings:
        """What the tenancy rules read (the webhook builds the same)."""
        return TenancySettings(artifact_root=str(self.artifact_root),
                               ray_allowed_addresses=tuple(self.ray_allowed_addresses),
                               default_ray_address=self.ray_address)

    def run_dir(self, namespace: str, name: str, uid: str) -> Path:
        return self.artifact_root / namespace / f"{name}-{uid[:8]}"
