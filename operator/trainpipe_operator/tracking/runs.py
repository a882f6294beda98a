"""The tracker the runner calls: the MLflow run hierarchy of one pipeline
run, the tracking config each job gets, gate outcomes and reports, and the
end of the run.

    parent run   tags trainpipe.pipeline, trainpipe.namespace, trainpipe.runId,
                 trainpipe.kind=pipeline; params: the resolved spec flattened
                 and spec_hash; tags gate.<key>.passed / gate.<key>.failed;
                 trainpipe.finalPhase at the end (FINISHED, or FAILED)
    child runs   one per phase folder (02_baseline, 04_optimization/iter_1,
                 05_finalization, ...): mlflow.parentRunId, trainpipe.phase,
                 trainpipe.iteration, trainpipe.jobKey (the folder),
                 trainpipe.attempt; the job logs its metrics into it, the
                 control plane adds the gate's report and gate.json

Every run is found again by its tags before one is created, and the ids are
kept in ``status.tracking``: a runner restarted anywhere (Ctrl-C, an operator
restart, the next reconcile) continues the same runs. Every call is guarded
(``_guarded``): tracking never decides a gate and never raises into the
runner; a server that does not answer degrades the record (health.py) and
what was missed is retried by :meth:`PipelineTracker.sync`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TypeVar

from trainpipe_operator.spec.pipeline import TrainingPipeline
from trainpipe_operator.spec.status import PipelineStatus, TrackingStatus
from trainpipe_operator.tracking import health, registry, relay
from trainpipe_operator.tracking.params import spec_hash, spec_params
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.tracking import MlflowJobTarget, TrackingConfig, WandbJobTarget
from trainpipe_trainer.tracking.mlflow_rest import (
    MlflowCredentials,
    MlflowError,
    MlflowRequestError,
    MlflowRest,
    MlflowUnavailable,
)

log = logging.getLogger("trainpipe.tracking")
T = TypeVar("T")

# The documents uploaded to a phase folder's run after its gate, where they exist.
GATE_DOCUMENTS = ("gate.json", "gate_report.md", "reproducibility_gate.md", "baseline_results.md",
                  "diagnostic_report.md", "optimization_results.md", "test_results.md", "deployment_guide.md",
                  "production_ready.md", "performance_ceiling.md")
ENDS = ("AwaitingApproval", "Succeeded", "Failed")
# Control-plane calls: short, few retries (a reconcile must not stall on a dead server).
TIMEOUT_S, RETRIES, BACKOFF_S = 5.0, 2, 0.5
_ITERATION = re.compile(r"iter_(\d+)")


def folder_iteration(folder: str) -> int:
    """``04_optimization/iter_2`` -> 2; a folder without an iteration -> 0."""
    found = _ITERATION.search(folder)
    return int(found.group(1)) if found else 0


def wandb_run_id(run_id: str, folder: str) -> str:
    """Stable per (pipeline run, phase folder), so a resumed job continues
    its W&B run; W&B's id characters, at most 64 of them."""
    text = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{run_id}-{folder}").strip("-")
    if len(text) <= 64:
        return text
    return f"{text[:47].rstrip('-')}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class PipelineTracker:
    """One pipeline's tracking, for one runner. ``client_factory`` makes the
    MLflow client (the tests and the operator pass their own); credentials
    stay inside the client, never in the status, params or messages."""

    def __init__(self, pipeline: TrainingPipeline, run_dir: Path, credentials: MlflowCredentials | None = None,
                 client_factory: Callable[[str, MlflowCredentials | None], MlflowRest] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        tracking = pipeline.spec.tracking
        if tracking is None:
            raise ValueError(f"{pipeline.metadata.name}: spec.tracking is not set: there is nothing to track")
        self.pipeline = pipeline
        self.settings = tracking
        self.name = pipeline.metadata.name
        self.namespace = pipeline.metadata.namespace
        self.run_dir = run_dir
        self._credentials = credentials
        self._client_factory = client_factory or _rest_client
        self._client: MlflowRest | None = None
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        mlflow = tracking.mlflow
        self.server = mlflow.tracking_uri if mlflow else None
        self.experiment = (mlflow.experiment if mlflow and mlflow.experiment else
                           f"{self.namespace}/{self.name}" if self.namespace else self.name)
        # Under the operator a namespace's names are its own (tenancy/tracking_access.py):
        # the default registered model is "<namespace>.<name>".
        self.registered_model = (mlflow.registered_model or (f"{self.namespace}.{self.name}" if self.namespace
                                                              else self.name)) if mlflow else None
        # Why the calls go without credentials (the operator's Secret does
        # not fit this server): said in TrackingDegraded, never raised.
        self.credentials_problem: str | None = None
        # Training jobs that must not get the credentials (a shared Ray
        # cluster's runtime_env is public): they log nothing to MLflow, and
        # job_ended relays their record with the control plane's (relay.py).
        self.relay_jobs = False

    # -------------------------------------------------------------- hooks
    def job_tracking(self, status: PipelineStatus, phase: str, folder: str, attempt: int,
                     new_attempt: bool) -> TrackingConfig | None:
        """The tracking config of a job in ``folder`` (relative to the run
        directory). ``new_attempt``: a new submission of a training job, its
        child run's ``trainpipe.attempt`` is updated. Without a reachable
        MLflow the job gets no MLflow target (W&B needs no server here)."""
        if status.run_id is None:
            return None
        state = self.state(status)
        iteration = folder_iteration(folder)
        target = None
        if self.server is not None:
            child = self._guarded(status, f"create the run of {folder}",
                                  lambda: self._child(status, phase, folder, attempt, new_attempt))
            if child is not None and state.experiment_id and not self.relay_jobs:
                target = MlflowJobTarget(tracking_uri=self.server, experiment_id=state.experiment_id, run_id=child)
        wandb = self._wandb_target(status, phase, folder)
        if target is None and wandb is None:
            return None
        return TrackingConfig(mlflow=target, wandb=wandb, step_every=self.settings.step_every,
                              log_checkpoints=self.settings.log_checkpoints,
                              tags=self._job_tags(status, phase, folder, iteration, attempt))

    def job_ended(self, status: PipelineStatus, folder: str, job: JobConfig | None = None) -> None:
        """Relays a training job's record (``job``: its config, as submitted)
        when jobs do not log themselves (``relay_jobs``); then reads the job's
        tracking_status.json: a job that could not reach its server degrades
        the record (it kept training)."""
        if self.relay_jobs and job is not None and job.action == "train":
            self._relay(status, folder, job)
        try:
            health.job_degraded(self.state(status), folder, self.run_dir / folder)
        except Exception as exc:  # noqa: BLE001 - tracking never breaks the pipeline
            log.warning("%s: reading the tracking status of %s: %s", self.name, folder, exc)

    def gate(self, status: PipelineStatus, key: str) -> None:
        """After a gate: its outcome as tags on the parent run, its report and
        gate.json (and the phase's documents) on the folder's run."""
        if self.server is None or status.run_id is None:
            return
        self._guarded(status, f"record gate {key}", lambda: self._send_gate(status, key), pending=f"gate:{key}")

    def sync(self, status: PipelineStatus) -> None:
        """Bring the tracked record up to the status: the parent run, the gate
        records that failed to go out, the registration (once Finalization's
        gate passed), alias champion (Succeeded), and the end of the run.
        Idempotent; cheap when there is nothing to do."""
        if status.run_id is None:
            return
        if self.settings.wandb is not None:
            self._sync_wandb(status)
        if self.server is None:
            return
        state = self.state(status)
        if self.credentials_problem:
            health.no_credentials(state, self.credentials_problem)
        if state.mlflow_parent_run_id is None:
            self._guarded(status, "create the pipeline run", lambda: self._parent(status))
        for item in list(state.pending):
            if item.startswith("gate:") and item[5:] in status.gates:
                key = item[5:]
                self._guarded(status, f"record gate {key}", partial(self._send_gate, status, key), pending=item)
            elif item.startswith("gate:"):
                state.pending.remove(item)
        if status.phase in ("AwaitingApproval", "Succeeded") and state.model_version is None:
            self._guarded(status, f"register the model {self.registered_model}",
                          lambda: self._register(status), pending="register")
        if status.phase == "Succeeded" and state.model_version and "champion" not in state.aliases:
            self._guarded(status, f"move alias champion of {self.registered_model}",
                          lambda: self._champion(status), pending="champion")
        if status.phase in ENDS and state.final_phase != status.phase:
            self._guarded(status, "end the pipeline run", lambda: self._end(status), pending="end")
        for item in ("register", "champion", "end"):  # no longer due (e.g. a phase moved on)
            if item in state.pending and not self._due(status, item):
                state.pending.remove(item)

    # ------------------------------------------------------------ pieces
    def _relay(self, status: PipelineStatus, folder: str, job: JobConfig) -> None:
        state = self.state(status)
        run = state.child_runs.get(folder)
        if self.server is None or run is None or state.experiment_id is None or status.run_id is None:
            return  # no run was made for the job (the server was down): nothing to relay to
        if not health.may_call(state, self._clock()):
            return  # the server did not answer lately: the relay waits out its delay like every call
        target = MlflowJobTarget(tracking_uri=self.server, experiment_id=state.experiment_id, run_id=run)
        settings = TrackingConfig(step_every=self.settings.step_every, log_checkpoints=self.settings.log_checkpoints)
        try:
            relay.relay_job(target, self._credentials, self.run_dir / folder, job, settings)
        except Exception as exc:  # noqa: BLE001 - tracking never breaks the pipeline
            health.failed(state, f"relay the job in {folder} to its run", f"{type(exc).__name__}: {exc}")
            log.warning("%s: relaying %s: %s", self.name, folder, exc, exc_info=True)

    def _wandb_target(self, status: PipelineStatus, phase: str, folder: str) -> WandbJobTarget | None:
        w = self.settings.wandb
        if w is None or status.run_id is None:
            return None
        return WandbJobTarget(project=w.project, entity=w.entity, mode=w.mode,
                              run_id=wandb_run_id(status.run_id, folder), run_name=f"{self.name}/{folder}",
                              group=f"{self.name}-{status.run_id}", tags=[self.name, phase.lower()])

    def _sync_wandb(self, status: PipelineStatus) -> None:
        """The W&B model artifact: candidate once Finalization's gate passed,
        champion once Succeeded (with the approver). Not retried: offline
        needs no server, and online problems (no key) would fail again."""
        state = self.state(status)
        wanted = (["candidate", "champion"] if status.phase == "Succeeded" else
                  ["candidate"] if status.phase == "AwaitingApproval" else [])
        if not wanted or set(wanted) <= set(state.wandb_aliases):
            return
        target = self._wandb_target(status, "Finalization", registry.FOLDER)
        assert target is not None
        folder = self.run_dir / registry.FOLDER
        metadata = registry.version_tags(folder, self.name, self.namespace, str(status.run_id))
        if "champion" in wanted and self.pipeline.spec.approval.required:
            metadata["approved_by"] = registry.approver(self.run_dir, status) or ""
        done = self._guarded(status, f"log the model to W&B project {target.project}",
                             lambda: registry.log_wandb_model(target, folder, self.registered_model or self.name,
                                                              wanted, metadata), mlflow=False)
        if done:
            state.wandb_aliases = done

    def state(self, status: PipelineStatus) -> TrackingStatus:
        if status.tracking is None:
            status.tracking = TrackingStatus(registered_model=self.registered_model)
        return status.tracking

    def _mlflow(self) -> MlflowRest:
        if self._client is None:
            assert self.server is not None
            self._client = self._client_factory(self.server, self._credentials)
        return self._client

    def _guarded(self, status: PipelineStatus, what: str, call: Callable[[], T], pending: str | None = None,
                 mlflow: bool = True) -> T | None:
        """``call()``, or None when it did not go through: recorded, never
        raised. ``mlflow``: a call to the MLflow server (held back while it
        waits out a retry delay; a success shows it answers again)."""
        state = self.state(status)
        now = self._clock()
        if mlflow and not health.may_call(state, now):
            health.add_pending(state, pending)
            return None
        try:
            result = call()
        except MlflowUnavailable as exc:
            health.unreachable(state, self.server or "", what, str(exc), now, pending)
            log.warning("%s: tracking degraded: %s", self.name, state.degraded)
            return None
        except MlflowRequestError as exc:
            health.refused(state, self.server or "", what, f"{exc.code}: {exc}")
            log.warning("%s: tracking degraded: %s", self.name, state.degraded)
            return None
        except (MlflowError, Exception) as exc:  # noqa: BLE001 - tracking never breaks the pipeline
            health.failed(state, what, f"{type(exc).__name__}: {exc}")
            log.warning("%s: tracking degraded: %s", self.name, state.degraded, exc_info=True)
            return None
        if mlflow:
            health.done(state, pending)
        return result

    def _due(self, status: PipelineStatus, item: str) -> bool:
        state = self.state(status)
        if item == "register":
            return status.phase in ("AwaitingApproval", "Succeeded") and state.model_version is None
        if item == "champion":
            return status.phase == "Succeeded" and "champion" not in state.aliases
        return status.phase in ENDS and state.final_phase != status.phase

    def _parent_tags(self, status: PipelineStatus) -> dict[str, str]:
        tags = {"trainpipe.pipeline": self.name, "trainpipe.runId": str(status.run_id), "trainpipe.kind": "pipeline"}
        if self.namespace:
            tags["trainpipe.namespace"] = self.namespace
        return tags

    def _parent(self, status: PipelineStatus) -> str:
        """The pipeline run's MLflow run, found by its tags or created, with
        its params: kept in the status once its params are logged."""
        state = self.state(status)
        if state.mlflow_parent_run_id and state.experiment_id:
            return state.mlflow_parent_run_id
        client = self._mlflow()
        experiment = client.get_or_create_experiment(self.experiment)
        tags = self._parent_tags(status)
        run = client.find_run(experiment, tags)
        if run is None:
            run = client.create_run(experiment, f"{self.name}-{status.run_id}",
                                    {**tags, "trainpipe.specHash": spec_hash(self.pipeline.spec)})
        client.log_batch(run, params=spec_params(self.pipeline.spec))
        state.experiment_id, state.mlflow_parent_run_id = experiment, run
        return run

    def _job_tags(self, status: PipelineStatus, phase: str, folder: str, iteration: int,
                  attempt: int | None) -> dict[str, str]:
        tags = {"trainpipe.pipeline": self.name, "trainpipe.runId": str(status.run_id), "trainpipe.kind": "job",
                "trainpipe.phase": phase, "trainpipe.iteration": str(iteration), "trainpipe.jobKey": folder}
        if self.namespace:
            tags["trainpipe.namespace"] = self.namespace
        if attempt is not None:
            tags["trainpipe.attempt"] = str(attempt)
        return tags

    def _child(self, status: PipelineStatus, phase: str, folder: str, attempt: int | None,
               new_attempt: bool = False) -> str:
        """The folder's run: from the status, else found by its tags, else
        created under the parent."""
        state = self.state(status)
        parent = self._parent(status)
        client = self._mlflow()
        known = state.child_runs.get(folder)
        if known is not None:
            if new_attempt and attempt is not None:
                client.log_batch(known, tags={"trainpipe.attempt": str(attempt)})
            return known
        assert state.experiment_id is not None
        key = {"trainpipe.runId": str(status.run_id), "trainpipe.pipeline": self.name, "trainpipe.jobKey": folder}
        run = client.find_run(state.experiment_id, key)
        tags = self._job_tags(status, phase, folder, folder_iteration(folder), attempt or 1)
        if run is None:
            run = client.create_run(state.experiment_id, f"{self.name}/{folder}",
                                    {**tags, "mlflow.parentRunId": parent})
        elif new_attempt:
            client.log_batch(run, tags={"trainpipe.attempt": str(attempt or 1)})
        state.child_runs[folder] = run
        return run

    def _send_gate(self, status: PipelineStatus, key: str) -> None:
        gate = status.gates[key]
        where = status.artifacts.get(f"{key}.gate")
        folder = str(Path(where).parent) if where else None
        failing = [c.id for c in gate.checks if c.result == "fail" and c.mandatory]
        client = self._mlflow()
        client.log_batch(self._parent(status), tags={f"gate.{key}.passed": "true" if gate.passed else "false",
                                                      f"gate.{key}.failed": ",".join(failing)})
        if folder is None:
            return
        child = self._child(status, gate.phase, folder, None)
        for name in GATE_DOCUMENTS:
            path = self.run_dir / folder / name
            if path.is_file():
                client.log_artifact(child, path, "")

    def _register(self, status: PipelineStatus) -> None:
        state = self.state(status)
        child = self._child(status, "Finalization", registry.FOLDER, None)
        assert self.registered_model is not None
        state.model_version = registry.register_candidate(
            self._mlflow(), self.registered_model, child, self.run_dir / registry.FOLDER,
            pipeline=self.name, namespace=self.namespace, run_id=str(status.run_id))
        if "candidate" not in state.aliases:
            state.aliases.append("candidate")

    def _champion(self, status: PipelineStatus) -> None:
        state = self.state(status)
        assert self.registered_model is not None and state.model_version is not None
        approver = registry.approver(self.run_dir, status) if self.pipeline.spec.approval.required else None
        registry.promote_champion(self._mlflow(), self.registered_model, state.model_version, approver)
        state.aliases.append("champion")

    def _end(self, status: PipelineStatus) -> None:
        """trainpipe.finalPhase on the parent run, and the run ended: FINISHED
        for a pipeline that passed Finalization (Succeeded, AwaitingApproval),
        FAILED otherwise. Ending it again later (an approval) is allowed."""
        state = self.state(status)
        client = self._mlflow()
        parent = self._parent(status)
        client.log_batch(parent, tags={"trainpipe.finalPhase": status.phase})
        client.set_terminated(parent, "FAILED" if status.phase == "Failed" else "FINISHED")
        state.final_phase = status.phase


def _rest_client(uri: str, credentials: MlflowCredentials | None) -> MlflowRest:
    return MlflowRest(uri, credentials, timeout=TIMEOUT_S, retries=RETRIES, backoff=BACKOFF_S)


def tracker_for(pipeline: TrainingPipeline, run_dir: Path,
                credentials: MlflowCredentials | None = None) -> PipelineTracker | None:
    """The pipeline's tracker, or None when spec.tracking is not set."""
    if pipeline.spec.tracking is None:
        return None
    return PipelineTracker(pipeline, run_dir, credentials)
