"""What the operator is configured with, one field each, from the command
line or the environment (the Helm chart sets the environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from trainpipe_operator.prometheus.gpu import DEFAULT as DEFAULT_GPU_QUERY
from trainpipe_operator.prometheus.gpu import DEFAULT_SM as DEFAULT_GPU_SM_QUERY
from trainpipe_operator.tenancy.settings import TenancySettings


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

    gpu_query: str = field(default_factory=lambda: os.environ.get("TRAINPIPE_GPU_QUERY") or DEFAULT_GPU_QUERY)
    """PromQL for mean GPU utilization; ``str.format`` fields: uuid_regex (the
    job's GPU UUIDs, validated and escaped), namespace, pipeline, job,
    pod_regex, window (seconds). The default selects dcgm-exporter's ``UUID``."""

    gpu_sm_query: str = field(default_factory=lambda: os.environ.get(
        "TRAINPIPE_GPU_SM_QUERY", DEFAULT_GPU_SM_QUERY))
    """PromQL for mean SM activity (0-1), same fields; empty: not queried."""

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

    reconcile_processes: int = field(default_factory=lambda: int(os.environ.get(
        "TRAINPIPE_RECONCILE_PROCESSES", "1")))
    """Worker processes that run reconciles (gates, reports, job calls), so
    the operator's event loop only handles watch events and status patches.
    0: one thread in the operator's own process (which then competes with
    the loop for the GIL)."""

    api_connections: int = field(default_factory=lambda: int(os.environ.get("TRAINPIPE_API_CONNECTIONS", "64")))
    """At most this many requests to the API server at once besides the
    watches (each watch holds its own connection); 0: no limit. Each open
    connection costs the operator about 200 KiB; with no limit, 500 pipelines
    created at once open one per status patch."""

    metrics_port: int = field(default_factory=lambda: int(os.environ.get("TRAINPIPE_METRICS_PORT", "9090")))
    """The operator's own /metrics (0: off)."""

    liveness_port: int = field(default_factory=lambda: int(os.environ.get("TRAINPIPE_LIVENESS_PORT", "8080")))
    """``/healthz`` (liveness) and ``/readyz`` (readiness) on this port (0: off)."""

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

    webhook_port: int = field(default_factory=lambda: int(os.environ.get("TRAINPIPE_WEBHOOK_PORT", "0")))
    """HTTPS port of the admission webhook (approval, spec rules); 0: off,
    and then no approval can be verified (pipelines that require one wait)."""

    webhook_addr: str = field(default_factory=lambda: os.environ.get("TRAINPIPE_WEBHOOK_ADDR", "127.0.0.1"))
    """Where the webhook listens (the chart: 0.0.0.0, behind its Service)."""

    webhook_host: str = field(default_factory=lambda: os.environ.get("TRAINPIPE_WEBHOOK_HOST", "127.0.0.1"))
    """The name the API server calls the webhook by: the generated certificate's SAN."""

    webhook_cert_dir: Path | None = field(default_factory=lambda: Path(os.environ["TRAINPIPE_WEBHOOK_CERT_DIR"])
                                          if os.environ.get("TRAINPIPE_WEBHOOK_CERT_DIR") else None)
    """``tls.crt``, ``tls.key`` (and ``ca.crt``) the webhook serves; none: a
    self-signed certificate for ``webhook_host``."""

    operator_user: str | None = field(default_factory=lambda: os.environ.get("TRAINPIPE_OPERATOR_USER") or None)
    """The Kubernetes user the operator runs as (the chart: its
    ServiceAccount's); the webhook lets only it write a pipeline's status."""

    mlflow_secret: str | None = field(default_factory=lambda: os.environ.get("TRAINPIPE_MLFLOW_SECRET") or None)
    """The name of the Secret (type trainpipe.io/mlflow-credentials) the
    operator reads in each pipeline's namespace for the MLflow server's
    credentials (tracking/credentials.py); none: calls go without."""

    tracking_allowed_uris: list[str] = field(default_factory=lambda: [
        u.strip() for u in os.environ.get("TRAINPIPE_TRACKING_ALLOWED_URIS", "").split(",") if u.strip()])
    """MLflow tracking URIs (comma-separated) a pipeline's
    ``spec.tracking.mlflow.trackingUri`` may name; any other is refused naming
    the field (the operator itself calls that server). Empty: a pipeline with
    MLflow tracking is refused."""

    default_queue_name: str | None = field(default_factory=lambda: os.environ.get(
        "TRAINPIPE_DEFAULT_QUEUE_NAME") or None)
    """The Kueue LocalQueue a ``runtime.type: rayjob`` pipeline's RayJobs are
    queued in when its ``spec.runtime.queueName`` is empty; none: not queued."""

    def tenancy(self) -> TenancySettings:
        """What the tenancy rules read (the webhook builds the same)."""
        return TenancySettings(artifact_root=str(self.artifact_root),
                               ray_allowed_addresses=tuple(self.ray_allowed_addresses),
                               default_ray_address=self.ray_address,
                               tracking_allowed_uris=tuple(self.tracking_allowed_uris))

    def run_dir(self, namespace: str, name: str, uid: str) -> Path:
        return self.artifact_root / namespace / f"{name}-{uid[:8]}"
