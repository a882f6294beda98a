"""One reconcile of one TrainingPipeline: read the resource, advance the
phase machine until it waits (a running job) or ends, and return the new
status with the events to post. The kopf handlers only call this.

The spec a pipeline runs is pinned when it starts (``pipeline.yaml`` in its
run directory): a spec changed mid-run is not applied; the ``SpecApplied``
condition says so and how to apply it (delete and re-create).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainpipe_operator import tenancy
from trainpipe_operator.admission.approval import ApprovalKey, verified_approval
from trainpipe_operator.controller import suspend
from trainpipe_operator.controller.conditions import build_conditions
from trainpipe_operator.controller.metrics import METRICS, MetricsSink
from trainpipe_operator.controller.settings import OperatorSettings
from trainpipe_operator.controller.watchdog import watchdog_events
from trainpipe_operator.gates.inputs import GpuMeasurement
from trainpipe_operator.lifecycle import ttl
from trainpipe_operator.pipeline import machine, rundir
from trainpipe_operator.pipeline.launchers import JobPending, Launcher, RayJobLauncher
from trainpipe_operator.pipeline.runner import JobFailedToStart, LocalRunner
from trainpipe_operator.prometheus.gpu import PromQLGpuSource
from trainpipe_operator.spec.pipeline import TrainingPipeline
from trainpipe_operator.spec.status import ApprovalStatus, Condition, PipelineStatus
from trainpipe_operator.tenancy.paths import resolve_paths
from trainpipe_operator.tenancy.ray_access import address_problems
from trainpipe_operator.tracking.credentials import from_secret as credentials_from_secret
from trainpipe_operator.tracking.credentials import secret_env
from trainpipe_operator.tracking.runs import tracker_for
from trainpipe_trainer.contract import yaml_io
from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.validation_errors import format_validation_error
from trainpipe_trainer.tracking.mlflow_rest import MlflowCredentials

log = logging.getLogger(__name__)

STATUS_FIELDS = set(PipelineStatus.model_fields) | {f.alias for f in PipelineStatus.model_fields.values() if f.alias}


@dataclass
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class TickResult:
    status: PipelineStatus
    events: list[Event] = field(default_factory=list)
    waiting_on: str | None = None


def read_status(body: dict[str, Any]) -> PipelineStatus:
    raw = {k: v for k, v in (body.get("status") or {}).items() if k in STATUS_FIELDS}
    return PipelineStatus.model_validate(raw)


class Reconciler:
    def __init__(self, settings: OperatorSettings, core_api: Any = None, custom_api: Any = None,
                 metrics: MetricsSink = METRICS, approval_key: ApprovalKey | None = None) -> None:
        self.settings = settings
        self.approval_key = approval_key  # None: no webhook, so no approval can be verified
        self.core_api = core_api
        self.custom_api = custom_api
        self.metrics = metrics
        self._ray_launchers: dict[tuple[str, str | None], RayJobLauncher] = {}

    # ------------------------------------------------------------------ tick
    def reconcile(self, body: dict[str, Any]) -> TickResult:
        meta = body["metadata"]
        namespace, name, uid = meta.get("namespace", "default"), meta["name"], meta["uid"]
        status = read_status(body)
        before = status.model_copy(deep=True)
        now = _now()
        if status.phase in machine.TERMINAL:  # never advanced again: no job starts, whatever the spec says
            cleaned = [Event(*note) for note in self.clean_up(body, status)]  # spec.ttlSecondsAfterFinished
            if status.tracking is not None and status.tracking.pending:
                owed = self._owed_tracking(body, status, now)
                owed.events += cleaned
                return owed
            return TickResult(status, cleaned)
        try:
            applied = TrainingPipeline.model_validate({k: v for k, v in body.items() if k != "status"})
        except ValidationError as exc:
            lines = format_validation_error(exc, source=f"{namespace}/{name}")
            status.phase, status.message, status.finished_at = "Failed", "invalid spec: " + "; ".join(lines), now
            status.conditions = build_conditions(status, meta.get("generation"), now)
            return TickResult(status, [Event("Warning", "InvalidSpec", status.message[:1000])])

        # Outside the tenancy boundary (a path, an address, a Secret): refused
        # before anything is written or sent; Failed is terminal, never retried.
        launcher = self._checked_launcher(applied, namespace, status, meta.get("generation"), now)
        if isinstance(launcher, TickResult):
            return launcher
        run_dir = self.settings.run_dir(namespace, name, uid)
        pipeline = self._pin_spec(applied, run_dir, status, now)
        if pipeline.spec != applied.spec:  # the pinned spec runs: it keeps to the boundary too
            launcher = self._checked_launcher(pipeline, namespace, status, meta.get("generation"), now)
            if isinstance(launcher, TickResult):
                return launcher
        pipeline = self._with_resolved_paths(pipeline, namespace)
        credentials, problem = self._tracking_credentials(pipeline, namespace)
        self._give_jobs_credentials(launcher, credentials)
        runner = LocalRunner(pipeline, run_dir, launcher, pipeline.spec.runtime.type,
                             resubmit_interrupted=True, gpu_source=self._gpu_source(pipeline),
                             metrics_port=self.settings.trainer_metrics_port or None,
                             tracking_credentials=credentials)
        if runner.tracker is not None:
            runner.tracker.credentials_problem = problem
            # A shared Ray cluster shows a job's runtime_env to every user of
            # its dashboard: its jobs get no credentials, the control plane
            # relays their record (tracking/relay.py).
            runner.tracker.relay_jobs = credentials is not None and pipeline.spec.runtime.type == "ray"
        waiting, clock = None, datetime.now(timezone.utc)
        held = suspend.holding(applied.spec, status)  # spec.suspend is live: the resource's, not the pinned
        notes = [] if held else suspend.resume(status, clock)
        try:
            if held:  # the running job stops at a checkpoint; none starts
                notes += suspend.suspend(status, runner, launcher, clock)
            elif status.phase == "AwaitingApproval":
                status = self._approve(meta, status, runner)
            else:
                status = runner.advance(status)
                if status.phase == "AwaitingApproval":
                    status = self._approve(meta, status, runner)
            if not held:
                suspend.admitted(status, clock)
        except JobPending as pending:
            waiting = f"{pending.submission_id} ({pending.state})"
            suspend.note_pending(status, pending, clock)  # a Kueue queue's admission: held time
        except JobFailedToStart as exc:  # every attempt died without evidence
            machine.record(status, "gate-failed", str(exc), now)
            runner.sync_tracking(status)  # the pipeline run ends FAILED
        status.observed_generation = pipeline.metadata.generation
        status.conditions = build_conditions(status, pipeline.metadata.generation, now)
        events = self._events(before, status) + [Event(*note) for note in notes]
        self._count(before, status, f"{namespace}/{name}")
        events += watchdog_events(runner, status, self.metrics, f"{namespace}/{name}")
        return TickResult(status, events, waiting)

    # --------------------------------------------------------------- pieces
    def _owed_tracking(self, body: dict[str, Any], status: PipelineStatus, now: str) -> TickResult:
        """A finished pipeline whose tracking is owed something (a server was
        down: the registration, alias champion, gate records): sent again with
        the spec the run started with; never changes its phase or gates."""
        meta = body["metadata"]
        run_dir = self.settings.run_dir(meta.get("namespace", "default"), meta["name"], meta["uid"])
        stored = run_dir / "pipeline.yaml"
        try:
            pipeline = TrainingPipeline.model_validate(yaml_io.load(stored.read_text(encoding="utf-8")))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            log.warning("%s/%s: no pinned spec to retry tracking with (%s)", meta.get("namespace"), meta["name"], exc)
            return TickResult(status)
        credentials, problem = self._tracking_credentials(pipeline, meta.get("namespace", "default"))
        tracker = tracker_for(pipeline, run_dir, credentials)  # the pinned metadata names the namespace
        if tracker is not None:
            tracker.credentials_problem = problem
            tracker.sync(status)
            status.conditions = build_conditions(status, meta.get("generation"), now)
            rundir.save_state(run_dir, status)
        return TickResult(status)

    def _approve(self, meta: dict[str, Any], status: PipelineStatus, runner: LocalRunner) -> PipelineStatus:
        """Act on an approval the webhook verified and signed; otherwise the
        message says what the pipeline waits for."""
        namespace, name = meta.get("namespace", "default"), meta["name"]
        record, waiting = verified_approval(meta.get("annotations") or {}, self.approval_key, namespace, name,
                                            meta["uid"], status.run_id)
        if record is None:
            status.message = waiting
            return status
        status = runner.approve(status, approver=record.user)
        status.approval = ApprovalStatus(by=record.user, at=record.time, run_id=record.run_id)
        if status.decisions and status.decisions[-1].decision == "approved":
            status.decisions[-1].reason = f"approved by {record.user} at {record.time}; {status.decisions[-1].reason}"
        return status

    def _tracking_credentials(self, pipeline: TrainingPipeline,
                              namespace: str) -> tuple[MlflowCredentials | None, str | None]:
        """The MLflow credentials of the pipeline's namespace (the Secret the
        operator's configuration names), or None and why not. Never raises:
        tracking never stops a pipeline."""
        tracking = pipeline.spec.tracking
        name = self.settings.mlflow_secret
        if tracking is None or tracking.mlflow is None or not name or self.core_api is None:
            return None, None
        try:
            secret = self.core_api.read_namespaced_secret(name, namespace)
            body: dict[str, Any] | None = {"type": secret.type, "data": dict(secret.data or {})}
        except Exception as exc:  # noqa: BLE001 - a 404 or any API problem: no credentials, said so
            if getattr(exc, "status", None) != 404:
                return None, (f"the MLflow credentials Secret {namespace}/{name} could not be read "
                              f"({type(exc).__name__} {getattr(exc, 'status', '')}): calls go without credentials")
            body = None
        return credentials_from_secret(body, name, namespace, tracking.mlflow.tracking_uri)

    def _give_jobs_credentials(self, launcher: Launcher, credentials: MlflowCredentials | None) -> None:
        """A RayJob's pods get the verified credentials as references to the
        namespace's Secret (``secretKeyRef``, resolved by the kubelet), never
        as values in the RayJob. The launcher is made per reconcile."""
        from trainpipe_operator.controller.rayjob_launcher import RayJobLauncher as KubeRayLauncher

        if isinstance(launcher, KubeRayLauncher):
            launcher.env = secret_env(self.settings.mlflow_secret, credentials)

    def _refusal(self, pipeline: TrainingPipeline, namespace: str) -> list[str]:
        """The tenancy rules' messages for this spec (the webhook's, plus
        the symbolic-link check only the operator, which mounts the store, can make)."""
        spec, rules = pipeline.spec.dump(), self.settings.tenancy()
        return tenancy.check_all(spec, namespace, rules) + tenancy.check_real_paths(spec, namespace, rules)

    def _checked_launcher(self, pipeline: TrainingPipeline, namespace: str, status: PipelineStatus,
                          generation: int | None, now: str) -> Launcher | TickResult:
        """The pipeline's launcher, or the Failed result saying why there is none."""
        refused = self._refusal(pipeline, namespace)
        if refused:
            return self._refuse(status, refused, generation, now)
        try:
            return self._launcher(pipeline)
        except Refused as exc:
            return self._refuse(status, exc.problems, generation, now)
        except ValueError as exc:  # a runtime this operator cannot run: never retried
            status.phase, status.message, status.finished_at = "Failed", str(exc), now
            status.conditions = build_conditions(status, generation, now)
            return TickResult(status, [Event("Warning", "InvalidRuntime", str(exc)[:1000])])

    def _refuse(self, status: PipelineStatus, problems: list[str], generation: int | None, now: str) -> TickResult:
        message = "refused: " + "; ".join(problems)
        status.phase, status.message, status.finished_at = "Failed", message, now
        status.conditions = build_conditions(status, generation, now)
        log.warning("%s", message)
        return TickResult(status, [Event("Warning", "Refused", message[:1000])])

    def _with_resolved_paths(self, pipeline: TrainingPipeline, namespace: str) -> TrainingPipeline:
        """The jobs get the absolute paths the rules resolved (a relative
        path means one under the namespace's root, wherever the job runs)."""
        resolved = {r.field: r.path for r in resolve_paths(pipeline.spec.dump(), namespace, self.settings.tenancy())}
        spec = pipeline.spec
        data = spec.data.model_copy(update={"source": resolved.get("spec.data.source", spec.data.source)})
        model = spec.model.model_copy(update={"pretrained": resolved.get("spec.model.pretrained",
                                                                          spec.model.pretrained)})
        return pipeline.model_copy(update={"spec": spec.model_copy(update={"data": data, "model": model})})

    def _pin_spec(self, applied: TrainingPipeline, run_dir: Path, status: PipelineStatus, now: str) -> TrainingPipeline:
        """The spec in force is the one the run started with."""
        stored = run_dir / "pipeline.yaml"
        status.conditions = [c for c in status.conditions if c.type != "SpecApplied"]
        if not stored.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            rundir.write_yaml(stored, applied.dump())
            return applied
        pinned = TrainingPipeline.model_validate(yaml_io.load(stored.read_text(encoding="utf-8")))
        if suspend.pinned_part(pinned.spec) != suspend.pinned_part(applied.spec):
            status.conditions.append(Condition(
                type="SpecApplied", status="False", reason="ChangedWhileRunning",
                message=(f"spec generation {applied.metadata.generation} changed while the pipeline runs the spec "
                         f"of generation {pinned.metadata.generation}; a running pipeline keeps its spec: "
                         "delete and re-create the TrainingPipeline to apply the change"),
                last_transition_time=now, observed_generation=applied.metadata.generation))
        return pinned

    def _launcher(self, pipeline: TrainingPipeline) -> Launcher:
        runtime = pipeline.spec.runtime
        meta = pipeline.metadata
        if runtime.type == "rayjob":
            from trainpipe_operator.controller.rayjob_launcher import (
                RayJobLauncher as KubeRayLauncher,
            )

            owner = {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "name": meta.name,
                     "uid": meta.uid or ""}
            namespace = meta.namespace or "default"
            # The pods mount their namespace's folder of the claim only
            # (subPath), at the path it has in the operator: the job config's
            # paths are the same there, and no other team's folder exists.
            return KubeRayLauncher(self.custom_api, namespace, owner, self.settings.rayjob_image,
                                   pipeline.spec.resources, self.settings.artifact_claim,
                                   self.settings.artifact_root / namespace, sub_path=namespace,
                                   on_submit=lambda sid: self.metrics.submitted("rayjob", sid),
                                   metrics_port=self.settings.trainer_metrics_port or None,
                                   queue_name=runtime.queue_name or self.settings.default_queue_name)
        if runtime.type == "local":
            raise ValueError("spec.runtime.type: 'local' runs with `trainpipe run` on one machine; "
                             "the operator launches 'ray' (Ray Job API) or 'rayjob' (KubeRay)")
        namespace = meta.namespace or "default"
        credential = self._credential(pipeline, namespace)
        # A token goes only to the address its Secret names (checked to match
        # the pipeline's, when it names one).
        address = credential.address if credential else (runtime.ray.address or self.settings.ray_address)
        if not address:
            raise ValueError("spec.runtime.ray.address is empty and the operator has no default Ray address "
                             "(TRAINPIPE_RAY_ADDRESS)")
        problems = address_problems("spec.runtime.ray.address", address, self.settings.tenancy())
        if problems:
            raise Refused(problems)
        token = credential.token if credential else None
        key = (address, token)
        if key not in self._ray_launchers:
            self._ray_launchers[key] = RayJobLauncher(address, token=token, wait=False,
                                                      on_submit=lambda sid: self.metrics.submitted("ray", sid))
        return self._ray_launchers[key]

    def _credential(self, pipeline: TrainingPipeline, namespace: str) -> tenancy.RayCredential | None:
        """The pipeline's Ray token and the address it belongs to; None when it names no Secret.

        Raises:
            Refused: a Secret not meant for trainpipe (a service-account token,
                another type), or bound to another or a forbidden address.
        """
        name = pipeline.spec.runtime.ray.token_secret
        if not name:
            return None
        secret = self.core_api.read_namespaced_secret(name, namespace)  # 404: "not yet", retried
        body = {"metadata": {"name": name}, "type": secret.type, "data": dict(secret.data or {})}
        problems = tenancy.check_token_secret(body, pipeline.spec.dump(), namespace, self.settings.tenancy())
        if problems:
            raise Refused(problems)
        return tenancy.credential(body, pipeline.spec.dump(), namespace, self.settings.tenancy())

    def _gpu_source(self, pipeline: TrainingPipeline) -> Callable[[Evidence], GpuMeasurement] | None:
        meta = pipeline.metadata
        return prometheus_gpu_source(self.settings, meta.namespace or "default", meta.name)

    def _events(self, before: PipelineStatus, after: PipelineStatus) -> list[Event]:
        events = []
        for decision in after.decisions[len(before.decisions):]:
            target = machine.TRANSITIONS.get(decision.phase, {}).get(decision.decision, after.phase)
            kind = "Warning" if target == "Failed" else "Normal"
            events.append(Event(kind, "PhaseChanged", f"{decision.phase} -> {target} ({decision.decision}): {decision.reason}"[:1000]))
        for key, gate in after.gates.items():
            old = before.gates.get(key)
            if old is None or old.evaluated_at != gate.evaluated_at:
                failing = [c.id for c in gate.checks if c.result == "fail" and c.mandatory]
                events.append(Event("Normal" if gate.passed else "Warning", "GatePassed" if gate.passed else "GateFailed",
                                    f"gate {key}: " + ("passed" if gate.passed else "failed: " + ", ".join(failing))))
        return events

    def _count(self, before: PipelineStatus, after: PipelineStatus, key: str) -> None:
        self.metrics.set_phase(key, after.phase, phase_entered_at(after))
        for gkey, gate in after.gates.items():
            old = before.gates.get(gkey)
            if old is None or old.evaluated_at != gate.evaluated_at:
                self.metrics.gate_evaluated(gkey.split(".")[0], gate.passed)
        times = [before.started_at] + [d.time for d in before.decisions]
        for decision in after.decisions[len(before.decisions):]:
            previous = _parse(times[-1]) if times[-1] else None
            if previous is not None:
                self.metrics.phase_finished(decision.phase,
                                            max((_parse(decision.time) - previous).total_seconds(), 0.0))
            times.append(decision.time)

    def clean_up(self, body: dict[str, Any], status: PipelineStatus) -> list[tuple[str, str, str]]:
        """A finished pipeline's jobs and Ray resources, removed once its
        ``spec.ttlSecondsAfterFinished`` has passed (lifecycle.ttl)."""
        seconds = ttl.ttl_of(body.get("spec"))
        if seconds is None:
            return []
        meta = body["metadata"]
        namespace, name, uid = meta.get("namespace", "default"), meta["name"], meta["uid"]

        def remove() -> tuple[list[str], list[str]]:
            stored = self.settings.run_dir(namespace, name, uid) / "pipeline.yaml"
            raw = yaml_io.load(stored.read_text(encoding="utf-8")) if stored.exists() else \
                {k: v for k, v in body.items() if k != "status"}
            try:
                launcher = self._launcher(TrainingPipeline.model_validate(raw))
            except (ValidationError, ValueError):  # never valid, or refused: nothing was launched with it
                return [], []
            drop = getattr(launcher, "remove", None)
            if drop is None:
                return [], []
            if pipeline_runtime(raw) == "rayjob":
                return drop(name, uid), []
            if not status.run_id:
                return [], []
            deleted, stopping = drop(f"{name}-{status.run_id}-")
            return [f"Ray job {d}" for d in deleted], stopping

        return ttl.clean(status, seconds, datetime.now(timezone.utc), remove)

    def stop_running_job(self, body: dict[str, Any]) -> str | None:
        """For deletion: stop the job the pipeline is running, if any."""
        status = read_status(body)
        if status.job.state != "RUNNING" or not status.job.submission_id:
            return None
        try:
            applied = TrainingPipeline.model_validate({k: v for k, v in body.items() if k != "status"})
            launcher = self._launcher(applied)
        except (ValidationError, ValueError):  # Refused too: nothing was ever sent there
            return None
        stop = getattr(launcher, "stop", None)
        if stop is not None and stop(status.job.submission_id):
            return status.job.submission_id
        return None


class Refused(ValueError):
    """The pipeline crosses the tenancy boundary: ``problems`` name each field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def pipeline_runtime(raw: dict[str, Any]) -> str:
    return str(((raw.get("spec") or {}).get("runtime") or {}).get("type") or "local")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def phase_entered_at(status: PipelineStatus) -> float | None:
    """Unix time the pipeline entered its current phase: its last decision
    (or its start); None before it started."""
    entered = status.decisions[-1].time if status.decisions else status.started_at
    return _parse(entered).timestamp() if entered else None


def prometheus_gpu_source(settings: OperatorSettings, namespace: str,
                          pipeline: str) -> Callable[[Evidence], GpuMeasurement] | None:
    """How the operator measures a job's GPUs: with a Prometheus configured,
    the DCGM series of the GPUs the job's ranks recorded (by UUID) over its
    window, through the configured query templates; a GPU job without a
    measurement fails the check, saying why (gates/execution.py). None
    without a Prometheus: the job's own NVML mean is used."""
    if not settings.prometheus_url:
        return None
    source = PromQLGpuSource(settings.prometheus_url, settings.gpu_query, settings.gpu_sm_query or None)

    def measure(evidence: Evidence) -> GpuMeasurement:
        return source.measure_evidence(namespace, pipeline, evidence)

    return measure


def _parse(text: str | None) -> datetime:
    if not text:
        return datetime.now(timezone.utc)
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
