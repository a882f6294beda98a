"""The local runner: the phase machine driven on one machine, its state in
``<run>/state.json`` (the same shape as the resource status).

Each phase handler does the phase's work, evaluates its gate, records one
decision and returns; ``run`` loops until a terminal phase (or
AwaitingApproval). Everything a handler needs is on disk, so the runner can
be stopped anywhere (Ctrl-C) and the same command continues: the current
phase is redone, and its training job resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainpipe_operator.controller.conditions import build_conditions
from trainpipe_operator.diagnosis.apply import apply_recommendations
from trainpipe_operator.diagnosis.decide import (
    IterationResult,
    decide_after_diagnostics,
    decide_after_optimization,
)
from trainpipe_operator.diagnosis.direction import metric_from_evidence, tracked_metric
from trainpipe_operator.diagnosis.issues import diagnose
from trainpipe_operator.diagnosis.recommendations import Recommendation, recommend
from trainpipe_operator.diagnosis.report import (
    render_diagnostic_report,
    render_optimization_results,
)
from trainpipe_operator.diagnosis.settings import TrainSettings
from trainpipe_operator.gates.baseline import decide_after_baseline, evaluate_baseline
from trainpipe_operator.gates.checks import GateResult
from trainpipe_operator.gates.diagnostics import evaluate_diagnostics
from trainpipe_operator.gates.execution import execution_checks, execution_passed
from trainpipe_operator.gates.finalization import (
    CEILING,
    AcceptedBest,
    evaluate_finalization,
    test_figure,
)
from trainpipe_operator.gates.inputs import GpuMeasurement, RunFiles, files_present
from trainpipe_operator.gates.optimization import evaluate_optimization
from trainpipe_operator.gates.planning import evaluate_planning
from trainpipe_operator.lifecycle import hold
from trainpipe_operator.pipeline import job_progress, machine, rundir
from trainpipe_operator.pipeline.jobs import baseline_settings, build_job
from trainpipe_operator.pipeline.launchers import INTERRUPTED, JobOutcome, JobPending, Launcher
from trainpipe_operator.pipeline.progress import Progress
from trainpipe_operator.pipeline.watchdog import AttemptLog, JobWatch, Stall
from trainpipe_operator.reports.finalization import (
    render_deployment_guide,
    render_performance_ceiling,
    render_production_ready,
    render_test_results,
)
from trainpipe_operator.reports.gate import render_gate
from trainpipe_operator.reports.summary import render_summary
from trainpipe_operator.reports.training import render_training_results
from trainpipe_operator.spec.pipeline import TrainingPipeline, VaeSpec
from trainpipe_operator.spec.status import JobStatus, PipelineStatus, RunResult
from trainpipe_operator.tasks import catalog_for
from trainpipe_operator.tracking.runs import tracker_for
from trainpipe_trainer.contract.data_report import DataReport
from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.job_config import JobConfig, TrainConfig
from trainpipe_trainer.contract.results import ExportReport, PreflightReport, TestEvaluation
from trainpipe_trainer.tracking.mlflow_rest import MlflowCredentials

log = logging.getLogger("trainpipe.pipeline")

MAX_BASELINE_ATTEMPTS = 3


class PipelineInterrupted(Exception):
    """A job was interrupted (Ctrl-C / SIGTERM) and checkpointed: run again to continue."""


class PipelineSuspended(Exception):
    """spec.suspend: the pipeline's job has stopped (checkpointed) or the next
    one would start; the pipeline is held here until it is resumed."""

    def __init__(self, phase: str, out: Path, submission_id: str) -> None:
        super().__init__(f"{phase}: held before {submission_id} (spec.suspend)")
        self.phase = phase
        self.out = out
        self.submission_id = submission_id


class JobFailedToStart(Exception):
    """A job ended without leaving the file its phase needs."""


class NotAwaitingApproval(Exception):
    """An approval given before the pipeline has a result to approve."""


class LocalRunner:
    def __init__(self, pipeline: TrainingPipeline, run_dir: Path, launcher: Launcher, runtime: str,
                 progress: Progress | None = None, resubmit_interrupted: bool = False,
                 gpu_source: Callable[[Evidence], GpuMeasurement] | None = None,
                 metrics_port: int | None = None, tracking_credentials: MlflowCredentials | None = None) -> None:
        self.pipeline = pipeline
        self.spec = pipeline.spec
        # The task's metrics, by name and direction (never from torch).
        self.catalog = catalog_for(self.spec)
        self.tracked = tracked_metric(self.spec)  # a test_X target: its val_X proxy
        self.name = pipeline.metadata.name
        self.run_dir = run_dir.resolve()
        self.launcher = launcher
        self.runtime = runtime
        self.progress = progress or Progress(enabled=False)
        # The operator resubmits a stopped job (attempt + 1, resuming); the
        # CLI stops and lets the person rerun the command.
        self.resubmit_interrupted = resubmit_interrupted
        # Where GPU utilization comes from: Prometheus in the operator; the
        # job's own NVML mean (evidence.json) for `trainpipe run`.
        self.gpu_source = gpu_source
        # Training jobs serve trainpipe_* metrics here (the operator's setting).
        self.metrics_port = metrics_port
        # spec.tracking: MLflow runs, gate records, the registry (None: off).
        # Its calls are guarded: tracking never decides a gate, never raises.
        self.tracker = tracker_for(pipeline, self.run_dir, tracking_credentials)
        # Hangs the watchdog declared during this advance (the operator posts an Event each).
        self.stalls: list[Stall] = []
        # spec.suspend (the operator): no job starts; a stopped one is not resubmitted.
        self.suspended = False

    # ------------------------------------------------------------------ loop
    def run(self) -> PipelineStatus:
        """Drive the pipeline from its saved state until it ends (or waits for
        approval). With a blocking launcher this never suspends."""
        return self.advance(rundir.load_state(self.run_dir) or PipelineStatus())

    def advance(self, status: PipelineStatus) -> PipelineStatus:
        """Run phase handlers until a terminal phase, AwaitingApproval, or a
        job that is still running (``JobPending`` propagates: the operator
        calls this again on its next tick, and the handler replays up to the
        job it waits for: every step before it is idempotent)."""
        handlers = {
            "Pending": self._start, "Planning": self._planning, "Baseline": self._baseline,
            "Diagnostics": self._diagnostics, "Optimization": self._optimization,
            "Finalization": self._finalization,
        }
        if self.tracker is not None:  # what an earlier advance could not send (a server down)
            self.tracker.sync(status)
        while status.phase in handlers:
            job_running = status.job.phase == status.phase and status.job.state == "RUNNING"
            if machine.budget_applies(status.phase) and not job_running and self._budget_spent(status):
                status.budget_exhausted = True
                reason = (f"the budget of {self.spec.budget.max_duration} is spent "
                          f"({self._elapsed(status):.0f} s): accepting the best result "
                          f"({status.best_run}) and finalizing it")
                self._accept_best(status, reason)
                machine.record(status, "budget-exhausted", reason)
            else:
                if not job_running:
                    self.progress.phase(status.phase, status.iteration)
                handlers[status.phase](status)
            if self.tracker is not None:  # the parent run, the registration, the end of the run
                self.tracker.sync(status)
            if status.phase in machine.TERMINAL:
                status.progress = None  # no job runs any more
            self._save(status)
        return status

    def sync_tracking(self, status: PipelineStatus) -> PipelineStatus:
        """Send what tracking still owes (a registration, gate records, the
        end of the run) for a pipeline that no longer advances (the
        operator's reconcile of a finished pipeline with pending tracking)."""
        if self.tracker is not None:
            self.tracker.sync(status)
            self._save(status)
        return status

    def _save(self, status: PipelineStatus) -> None:
        status.conditions = build_conditions(status, self.pipeline.metadata.generation, machine.now_iso())
        rundir.save_state(self.run_dir, status)
        rundir.write_text(self.run_dir / "summary.md", render_summary(self._with_status(status)))

    def _with_status(self, status: PipelineStatus) -> TrainingPipeline:
        return self.pipeline.model_copy(update={"status": status})

    def _elapsed(self, status: PipelineStatus) -> float:
        """Time since the start, less the time held (suspended, waiting for a queue)."""
        start = hold.effective_start(status)
        started = datetime.fromisoformat(start) if start else datetime.now(timezone.utc)
        return (datetime.now(timezone.utc) - started).total_seconds()

    def _budget_spent(self, status: PipelineStatus) -> bool:
        return machine.budget_exhausted(self._elapsed(status), self.spec.budget.seconds)

    def _budget_at_start(self, status: PipelineStatus, evidence: Evidence) -> float | None:
        """The budget left when the run started: what its ``duration`` is held to
        (the budget left after it would count the run against itself)."""
        return machine.budget_left_at(self.spec.budget.seconds, hold.effective_start(status),
                                      evidence.timings.started_at)

    def _accept_best(self, status: PipelineStatus, reason: str) -> None:
        """Going to Finalization with the best result short of the target
        (seed 001): recorded once, so Finalization documents the ceiling and its
        target check warns instead of failing. A best that meets the target is
        not a ceiling."""
        best = status.metrics.best_target_metric  # a test_X target: its val_X proxy
        if best is not None and self.spec.target.met(best):
            return
        status.accepted_best = status.accepted_best or reason

    # -------------------------------------------------------------- phases
    def _start(self, status: PipelineStatus) -> None:
        status.started_at = machine.now_iso()
        status.run_id = self.pipeline.metadata.uid or uuid.uuid4().hex[:8]
        status.observed_generation = self.pipeline.metadata.generation
        status.metrics.target_metric, status.metrics.target_value = self.spec.target_metric, self.spec.target.value
        machine.record(status, "start", "pipeline accepted")

    def _planning(self, status: PipelineStatus) -> None:
        out = self.run_dir / rundir.PLANNING
        config_errors: list[str] = []
        job: JobConfig | None = None
        try:  # every config built here: one the trainer refuses must fail config-valid, not crash the runner
            settings = baseline_settings(self.spec)
            job = build_job(self.name, "Planning", self.spec, settings, out, runtime="local", action="preflight")
            training = build_job(self.name, "Baseline", self.spec, settings, self.run_dir / rundir.baseline_dir(1),
                                 runtime=self.runtime)
            rundir.write_yaml(out / "training_config.yaml", training.model_dump(mode="json", by_alias=True))
        except ValidationError as exc:
            config_errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            job = None
        if job is not None:
            self._run_job(status, "Planning", job, out)
        preflight_raw = rundir.read_json(out / "preflight.json")
        report_raw = rundir.read_json(out / "data_report.json")
        gate = evaluate_planning(
            rundir.read_json(out / "environment.json") or {},
            config_errors,
            DataReport.model_validate(report_raw) if report_raw else None,
            PreflightReport.model_validate(preflight_raw) if preflight_raw else None,
            self.spec,
            run_dir=rundir.PLANNING,
        )
        self._write_gate(status, "planning", gate, out, "reproducibility_gate.md", "Reproducibility gate (Planning)")
        status.artifacts["planning.trainingConfig"] = f"{rundir.PLANNING}/training_config.yaml"
        if gate.passed:
            status.baseline_attempts = 1
            machine.record(status, "gate-passed", "the reproducibility gate passed")
        else:
            machine.record(status, "gate-failed", "Planning gate failed: " + _failures(gate))

    def _baseline(self, status: PipelineStatus) -> None:
        attempt = max(status.baseline_attempts, 1)
        rel = rundir.baseline_dir(attempt)
        out = self.run_dir / rel
        settings = self._pending_settings(status) if attempt > 1 else baseline_settings(self.spec)
        job = build_job(self.name, "Baseline", self.spec, settings, out, runtime=self.runtime)
        evidence = self._train(status, "Baseline", job, out)
        rerun = None
        if self.spec.gates.reproducibility and evidence.completed:
            rerun_job = job.model_copy(update={"run_dir": str(out / "reproducibility")})
            rerun = self._train(status, "Baseline", rerun_job, out / "reproducibility")
        files = self._files(out, rel, "baseline_results.md", evidence)
        gpu = self._gpu(evidence)
        budget, every = self._budget_at_start(status, evidence), job.train.checkpoint_every
        kept = _kept(job)
        executed = execution_checks(evidence, files, gpu, self.spec, budget, checkpoint_every=every, **kept)
        decision, reason = decide_after_baseline(evidence, execution_passed(executed), self.spec)
        report = render_training_results(f"Baseline results ({rel})", evidence, job.model_dump(mode="json", by_alias=True),
                                         (decision, reason), self.catalog)
        rundir.write_text(out / "baseline_results.md", report)
        files = self._files(out, rel, "baseline_results.md", evidence)
        gate = evaluate_baseline(evidence, files, gpu, self.spec, budget, decision, rerun, checkpoint_every=every,
                                 **kept)
        self._write_gate(status, "baseline", gate, out, "gate_report.md", "Post-baseline gate")
        self._record_run(status, "Baseline", rel, evidence)
        status.artifacts.update({"baseline.results": f"{rel}/baseline_results.md",
                                 "baseline.bestCheckpoint": f"{rel}/checkpoints/best_model.pt",
                                 "training.latest": rel})
        if decision == "fix":
            if attempt >= MAX_BASELINE_ATTEMPTS:
                machine.record(status, "gate-failed",
                               f"the baseline failed {attempt} times; last: {reason}")
                return
            machine.record(status, "fix", f"{reason}; diagnosing, then Baseline again with the fix")
        elif not gate.passed:
            machine.record(status, "gate-failed", "Baseline gate failed: " + _failures(gate))
        else:
            machine.record(status, decision, reason)

    def _diagnostics(self, status: PipelineStatus) -> None:
        status.diagnostics_runs += 1
        rel = rundir.diagnostics_dir(status.diagnostics_runs)
        out = self.run_dir / rel
        source = status.artifacts["training.latest"]
        evidence = Evidence.read(self.run_dir / source / "evidence.json")
        settings = TrainSettings.from_job_config(rundir.read_yaml_dict(self.run_dir / source / "job.yaml"))
        report_raw = rundir.read_json(self.run_dir / rundir.PLANNING / "data_report.json")
        log_text = (rundir.read_text(self.run_dir / source / evidence.log_path)
                    or rundir.read_text(self.run_dir / source / "job_output.log"))
        diagnosis = diagnose(evidence, self.spec, self._gpu(evidence).util_mean,
                             DataReport.model_validate(report_raw) if report_raw else None, log_text)
        fixing = status.decisions[-1].decision == "fix"
        base = settings if fixing else self._best_settings(status)
        recommendations = recommend(diagnosis, base, self.spec)
        decision, reason = decide_after_diagnostics(diagnosis, recommendations)
        if fixing and decision != "baseline-again":
            decision, reason = "baseline-again", f"the baseline failed; applying the fix: {reason}"
        report = render_diagnostic_report(diagnosis, recommendations, evidence, status.diagnostics_runs,
                                          decision=(decision, reason), fixed=self.spec.optimization.fixed)
        rundir.write_text(out / "diagnostic_report.md", report)
        rundir.write_json(out / "recommendations.json",
                          {"source": source, "base_settings": base.model_dump(mode="json"),
                           "recommendations": [r.model_dump(mode="json") for r in recommendations]})
        gate = evaluate_diagnostics(diagnosis, recommendations, report, (decision, reason), run_dir=rel,
                                    iteration=status.iteration)
        self._write_gate(status, f"diagnostics.{status.diagnostics_runs}", gate, out, "gate_report.md",
                         "Diagnostics gate")
        status.artifacts["diagnostics.latest"] = rel
        status.artifacts[f"diagnostics.{status.diagnostics_runs}.report"] = f"{rel}/diagnostic_report.md"
        if not gate.passed:
            machine.record(status, "gate-failed", "Diagnostics gate failed: " + _failures(gate))
            return
        if decision == "baseline-again":
            if status.baseline_attempts >= MAX_BASELINE_ATTEMPTS:
                machine.record(status, "gate-failed", f"the baseline needs fixing again after {status.baseline_attempts} attempts: {reason}")
                return
            status.baseline_attempts += 1
        if decision == "finalize":
            self._accept_best(status, reason)
        machine.record(status, decision, reason)

    def _optimization(self, status: PipelineStatus) -> None:
        iteration = status.iteration + 1
        rel = rundir.optimization_dir(iteration)
        out = self.run_dir / rel
        settings, changes = self._apply_latest_recommendations(status)
        job = build_job(self.name, "Optimization", self.spec, settings, out, runtime=self.runtime)
        rundir.write_yaml(out / "optimization_config.yaml",
                          {"iteration": iteration, "from": status.artifacts.get("diagnostics.latest"),
                           "changes": [c.model_dump(mode="json") for c in changes],
                           "job": job.model_dump(mode="json", by_alias=True)})
        evidence = self._train(status, "Optimization", job, out)
        status.iteration = iteration
        self._record_run(status, "Optimization", rel, evidence, iteration)
        history = self._iteration_history(status)
        decision, reason = decide_after_optimization(history, self.spec)
        baseline = self._baseline_result(status)
        previous = (self.run_dir / rundir.optimization_dir(iteration - 1) / "evidence.json") if iteration > 1 else None
        text = render_optimization_results(
            Evidence.read(self.run_dir / baseline.run_dir / "evidence.json") if baseline else evidence,
            Evidence.read(previous) if previous and previous.exists() else None,
            evidence, changes, iteration, self.spec, decision=(decision, reason),
        )
        rundir.write_text(out / "optimization_results.md", text)
        files = self._files(out, rel, "optimization_results.md", evidence)
        baseline_evidence = Evidence.read(self.run_dir / baseline.run_dir / "evidence.json") if baseline else None
        gate = evaluate_optimization(evidence, files, self._gpu(evidence), self.spec,
                                     self._budget_at_start(status, evidence), text, iteration=iteration,
                                     checkpoint_every=job.train.checkpoint_every, baseline=baseline_evidence,
                                     **_kept(job))
        self._write_gate(status, f"optimization.{iteration}", gate, out, "gate_report.md", "Optimization gate")
        status.artifacts.update({f"optimization.{iteration}.results": f"{rel}/optimization_results.md",
                                 "training.latest": rel})
        if not gate.passed:
            # Seed 001: an optimization that failed is "no improvement"; the
            # pipeline already holds a healthy best (the baseline passed its
            # gate), so it finalizes that best instead of throwing the run away.
            self._disqualify(status, rel)
            reason = (f"Optimization iteration {iteration} failed its gate ({_failures(gate)}): "
                      f"keeping the best result so far ({status.best_run}) and finalizing it")
            self._accept_best(status, reason)
            machine.record(status, "finalize", reason)
            return
        if decision == "finalize":
            self._accept_best(status, reason)
        machine.record(status, decision, reason)

    def _finalization(self, status: PipelineStatus) -> None:
        out = self.run_dir / rundir.FINALIZATION
        rel = rundir.FINALIZATION
        settings = self._best_settings(status).model_copy(
            update={"epochs": self.spec.finalization.epochs, "patience": self.spec.finalization.patience})
        job = build_job(self.name, "Finalization", self.spec, settings, out, runtime=self.runtime)
        evidence = self._train(status, "Finalization", job, out)
        self._record_run(status, "Finalization", rel, evidence)
        if evidence.completed:
            evaluate = {"checkpoint": str(out / "checkpoints" / "best_model.pt"),
                        "export": list(self.spec.finalization.export)}
            eval_job = build_job(self.name, "Finalization", self.spec, settings, out, runtime="local",
                                 action="evaluate", evaluate=evaluate)
            self._run_job(status, "Finalization", eval_job, out, job_file=out / "evaluate_job.yaml")
        self._finalize_documents_and_gate(status, evidence)

    def _finalize_documents_and_gate(self, status: PipelineStatus, evidence: Evidence) -> None:
        out = self.run_dir / rundir.FINALIZATION
        rel = rundir.FINALIZATION
        test_raw = rundir.read_json(out / "test_evaluation.json")
        export_raw = rundir.read_json(out / "export.json")
        test = TestEvaluation.model_validate(test_raw) if test_raw else None
        export = ExportReport.model_validate(export_raw) if export_raw else None
        metric = self.spec.target_metric
        target = f"{metric} {self.catalog.metric(metric).relation} {self.spec.target.value}"
        guide = None
        job = self._job_config(out)
        what, figure = test_figure(test, metric, self.catalog)
        if test:
            rundir.write_text(out / "test_results.md",
                              render_test_results(test, target, self.catalog, previews=evidence.previews))
            # test_acc is classification's; every task's test figure is test_target_metric, by name
            status.metrics.test_acc = test.accuracy if self.catalog.task == "classification" else None
            status.metrics.test_target_metric = figure
        if export:
            guide = render_deployment_guide(export, self._best_settings(status).model_name, test, self.catalog,
                                            vae=job.vae if job else None, audio=job.data.audio if job else None)
            rundir.write_text(out / "deployment_guide.md", guide)
        if figure is not None and not self.spec.target.met(figure) and not status.accepted_best:
            # Validation met the target (that is how the pipeline got here),
            # the held-out split did not: the best result is still the best
            # there is. Seed 001 finalizes it with its ceiling documented;
            # TargetMet=False and, with approval.required, a person decide.
            status.accepted_best = (f"validation met the target, the held-out test split did not "
                                    f"({what} {figure:.4f})")
        accepted = self._ceiling(status, test, target) if status.accepted_best else None
        approved = self._approved(status) if self.spec.approval.required else None
        files = self._files(out, rel, "test_results.md", evidence)
        if job is not None:
            kept = _kept(job)
        else:  # no readable job.yaml: the spec's settings (what build_job would have written)
            kept = {"keep_periodic": TrainConfig().keep_periodic,
                    "preview_every": (self.spec.vae or VaeSpec()).preview_every}
        gate = evaluate_finalization(evidence, files, self._gpu(evidence), self.spec,
                                     self._budget_at_start(status, evidence), test, export, guide, approved, accepted,
                                     checkpoint_every=self._checkpoint_every(out), **kept)
        budget_note = (f"The target was not reached: this is the best result, finalized as the master workflow "
                       f"says ({status.accepted_best}); see {CEILING}.") if status.accepted_best else None
        rundir.write_text(out / "production_ready.md", render_production_ready(gate, budget_note))
        self._write_gate(status, "finalization", gate, out, "gate_report.md", "Production-ready gate")
        for name in ("test_results.md", "deployment_guide.md", "production_ready.md", CEILING, "model.onnx",
                     "model.ts", "model.pt2", "confusion_matrix.png", "export.json"):
            if (out / name).exists():
                status.artifacts[f"finalization.{name}"] = f"{rel}/{name}"
        blocking = [c for c in gate.failures if c.id != "approval"]
        if blocking:
            machine.record(status, "gate-failed", "Production-ready gate failed: " + _failures(gate))
        elif self.spec.approval.required and not approved:
            short = (f" (the target was not met: a person decides whether this best result, documented in "
                     f"{CEILING}, is good enough)") if status.accepted_best else ""
            machine.record(status, "await-approval", f"every check passed{short}; waiting for a person to approve "
                           f"(trainpipe approve {self.run_dir})")
        elif status.accepted_best:
            machine.record(status, "gate-passed", "production-ready, target not met: the best result is deployed "
                           f"and its performance ceiling documented in {CEILING} ({status.accepted_best})")
        else:
            machine.record(status, "gate-passed", "production-ready: every mandatory check passed")

    def _ceiling(self, status: PipelineStatus, test: TestEvaluation | None, target: str) -> AcceptedBest:
        """Write performance_ceiling.md: the best validation and test figures
        against the target, and what was tried."""
        out = self.run_dir / rundir.FINALIZATION
        metric = self.tracked.name
        best_value = status.metrics.best_target_metric
        tried = []
        for r in (r for r in status.runs if r.phase == "Optimization"):
            path = self.run_dir / r.run_dir / "optimization_config.yaml"
            config = rundir.read_yaml_dict(path) if path.exists() else {}
            changes = [f"{c.get('path')}: {c.get('old')} -> {c.get('new')}"
                       for c in (config.get("changes") or []) if isinstance(c, dict) and not c.get("note")]
            tried.append((r.iteration, changes))
        text = render_performance_ceiling(
            target, self.spec.target.value, status.accepted_best or "", status.best_run,
            (metric, best_value), test_figure(test, self.spec.target_metric, self.catalog), status.runs, tried)
        rundir.write_text(out / CEILING, text)
        return AcceptedBest(reason=status.accepted_best or "", best_value=best_value, ceiling_text=text)

    def _disqualify(self, status: PipelineStatus, rel: str) -> None:
        """A run whose gate failed is never the best: mark it and pick the best again."""
        status.runs = [r.model_copy(update={"status": "gate-failed"}) if r.run_dir == rel else r for r in status.runs]
        best = self._best_result(status)
        status.best_run = best.run_dir if best else None
        status.metrics.best_target_metric = best.target_metric if best else None

    def approve(self, status: PipelineStatus, approver: str) -> PipelineStatus:
        """Record the approval and move AwaitingApproval on (no training).

        Raises:
            NotAwaitingApproval: the pipeline is in any other phase: there is no
                result to approve yet (or any more), and nothing is recorded.
        """
        if status.phase != "AwaitingApproval":
            raise NotAwaitingApproval(
                f"{self.name}: the pipeline is in {status.phase}, not AwaitingApproval; nothing was approved. "
                + ("Wait until Finalization's gate has passed and the pipeline waits for approval "
                   f"(trainpipe status {self.run_dir}), then approve."
                   if status.phase not in machine.TERMINAL else "A finished pipeline cannot be approved."))
        rundir.write_json(self.run_dir / "approval.json",
                          {"approved": True, "by": approver, "time": machine.now_iso(), "runId": status.run_id})
        evidence = Evidence.read(self.run_dir / rundir.FINALIZATION / "evidence.json")
        status.phase = "Finalization"  # re-evaluate the gate with the approval on record
        self._finalize_documents_and_gate(status, evidence)
        if status.phase == "Succeeded":
            status.decisions[-1].decision = "approved"
            status.decisions[-1].phase = "AwaitingApproval"
        if self.tracker is not None:  # alias champion, with the approver, and the run's final phase
            self.tracker.sync(status)
        self._save(status)
        return status

    # ------------------------------------------------------------- helpers
    def _approved(self, status: PipelineStatus) -> bool:
        """An approval counts for the run it names: one left from an earlier run
        of this directory, or written by hand without the run id, does not."""
        data = rundir.read_json(self.run_dir / "approval.json")
        return bool(data and data.get("approved") and data.get("runId") == status.run_id)

    def _checkpoint_every(self, out: Path) -> int:
        """The interval the job was configured with (job.yaml), for periodic-checkpoints."""
        path = out / "job.yaml"
        train = (rundir.read_yaml_dict(path).get("train") or {}) if path.exists() else {}
        every = train.get("checkpointEvery", 1) if isinstance(train, dict) else 1
        return every if isinstance(every, int) and every > 0 else 1

    def _job_config(self, out: Path) -> JobConfig | None:
        """The training job a phase folder ran (the trainer's ``job.yaml``, else
        the runner's ``job_request.yaml``); None when neither is readable."""
        for name in ("job.yaml", "job_request.yaml"):
            path = out / name
            if path.exists():
                try:
                    return JobConfig.model_validate(rundir.read_yaml_dict(path))
                except (ValidationError, ValueError, OSError, yaml.YAMLError) as exc:
                    log.warning("%s: not a job config (%s)", path, exc)
        return None

    def _run_job(self, status: PipelineStatus, phase: str, job: JobConfig, out: Path,
                 job_file: Path | None = None, attempt: int = 1) -> int:
        """Run (or, replaying, find) one job; returns its exit code.

        Raises:
            PipelineInterrupted: the job was interrupted and checkpointed, and
                this runner does not resubmit interrupted jobs (``trainpipe
                run``: the user pressed Ctrl-C and reruns the command).
            JobPending: an asynchronous launcher's job is still running.
        """
        job_file = job_file or out / "job_request.yaml"
        if self.metrics_port and job.action == "train":
            job = job.model_copy(update={"metrics_port": self.metrics_port})
        if not self.resubmit_interrupted and status.job.phase == phase and status.job.state == "INTERRUPTED":
            attempt = max(attempt, status.job.attempt + 1)  # a new submission after an interruption
        # Unique per run, phase folder, action and attempt: a runner that
        # restarts finds (and attaches to) a job it already submitted.
        folder = str(out.relative_to(self.run_dir))
        slug = folder.replace("/", "-").replace("_", "-")
        submission = f"{self.name}-{status.run_id}-{slug}-{job.action}-a{attempt}"
        # A job stopped for a suspension is done with: the resumed pipeline submits the next attempt.
        stopped = set(status.suspension.stopped_jobs) if status.suspension else set()
        while not self.suspended and submission in stopped:
            attempt += 1
            submission = f"{self.name}-{status.run_id}-{slug}-{job.action}-a{attempt}"
        new_submission = status.job.submission_id != submission or status.job.state != "RUNNING"
        if self.suspended and not self._submitted(submission):  # not started, or removed by the suspension
            raise PipelineSuspended(phase, out, submission)
        if self.tracker is not None and job.action in ("train", "evaluate"):
            # The folder's MLflow run (a resumed attempt continues it) and/or its W&B run.
            tracking = self.tracker.job_tracking(status, phase, folder, attempt,
                                                 new_attempt=new_submission and job.action == "train")
            job = job.model_copy(update={"tracking": tracking})
        rundir.write_text(job_file, job.to_yaml())
        watch = self._job_watch(status, phase, out, submission) if job.action == "train" else None
        if new_submission:
            status.job = JobStatus(submission_id=submission, phase=phase, state="RUNNING", attempt=attempt,
                                   **(self._attempt_fields(out, submission, attempt) if watch else {}))
            self._save(status)
        if watch is not None and watch.stalled is not None:
            # Declared hung and stopped: never attached to again (a KubeRay
            # job's stop deletes it); the next attempt resumes from the checkpoint.
            outcome = JobOutcome(INTERRUPTED, submission, out / "job_output.log", watch.stalled["message"])
        else:
            with self.progress.watch(phase, out, job.train.epochs if job.action == "train" else None,
                                     metric=self.tracked.name), \
                    (watch.guard(getattr(self.launcher, "wait", True)) if watch else contextlib.nullcontext()):
                try:
                    outcome = self.launcher.run(job_file, out, submission)
                except JobPending as pending:
                    if watch is not None:  # still running: its progress, and is it hung?
                        watch.check(pending.state)
                    raise
        if self.tracker is not None:  # a job that could not reach its server: TrackingDegraded
            self.tracker.job_ended(status, folder, job)
        status.job.exit_code = outcome.exit_code
        status.job.message = outcome.message
        if watch is not None and watch.stalled is not None:
            status.job.state, status.job.reason = "STALLED", "Stalled"
            status.job.message = watch.stalled["message"]
            self._save(status)
            return outcome.exit_code
        if outcome.interrupted:
            status.job.state = "INTERRUPTED"
            self._save(status)
            if self.suspended:
                raise PipelineSuspended(phase, out, submission)
            if not self.resubmit_interrupted:
                raise PipelineInterrupted(
                    f"{phase} job {submission} was interrupted and checkpointed; run the same command to continue")
            return outcome.exit_code
        status.job.state = "SUCCEEDED" if outcome.exit_code == 0 else "FAILED"
        return outcome.exit_code

    def _submitted(self, submission: str) -> bool:
        """Whether the launcher already has this job (a replay, not a new start)."""
        exists = getattr(self.launcher, "exists", None)
        return bool(exists is not None and exists(submission))

    def _train(self, status: PipelineStatus, phase: str, job: JobConfig, out: Path) -> Evidence:
        """Run a training job. One that ends without a verdict (killed, a lost
        node, or stopped and ``resubmit_interrupted``) is submitted again as
        the next attempt, resuming from its last checkpoint, up to
        ``spec.runtime.maxAttempts`` submissions."""
        path = out / "evidence.json"
        attempts = self.spec.runtime.max_attempts
        attempt = 1
        for _ in range(attempts):  # jobs stopped for a suspension are not counted
            code = self._run_job(status, phase, job, out, attempt=attempt)
            if status.job.state == "STALLED":
                attempt = status.job.attempt + 1
                continue  # hung: the next attempt resumes from its last checkpoint
            if code in (0, 1) and path.exists() and Evidence.read(path).status != "interrupted":
                break  # completed, or failed with the reason in its evidence
            attempt = status.job.attempt + 1  # past any attempt skipped as stopped for a suspension
            log.debug("%s job attempt %d ended with code %d and no verdict: the next attempt", phase, attempt, code)
        if status.job.state == "STALLED":
            field = (AttemptLog(out).stall(status.job.submission_id or "") or {}).get("timeoutField", "stallTimeout")
            slow = "it only starts slowly" if field == "startTimeout" else "its steps are only slow"
            raise JobFailedToStart(
                f"the {phase} job stalled on attempt {status.job.attempt}, the last of spec.runtime.maxAttempts ({attempts}): "
                f"{status.job.message}; the job's log is {out / 'job_output.log'}; raise spec.gates.{field} if {slow}")
        if not path.exists():
            raise JobFailedToStart(
                f"the {phase} job left no evidence.json in {out} after {self.spec.runtime.max_attempts} "
                f"attempts; see {out / 'job_output.log'}")
        evidence = Evidence.read(path)
        status.job.resumed_from_epoch = evidence.resumed_from_epoch
        return evidence

    # ------------------------------------------------- progress and watchdog
    def _job_watch(self, status: PipelineStatus, phase: str, out: Path, submission: str) -> JobWatch:
        blocking = bool(getattr(self.launcher, "wait", True))
        rerun = out.name == "reproducibility"

        def on_beat(beat: Any) -> None:
            now = time.time()
            if job_progress.due(status.progress, beat, phase, now):
                status.progress = job_progress.build(beat, phase, self.spec, status, now, rerun=rerun)
                if blocking:  # `trainpipe status` reads state.json while the job runs
                    self._save(status)

        def on_stall(stall: Stall) -> None:
            self.stalls.append(stall)
            self.progress.line(f"    {stall.message}")

        return JobWatch(out, phase, submission, self.spec.gates.stall_seconds, on_beat,
                        getattr(self.launcher, "stop", None), on_stall,
                        start_timeout=self.spec.gates.start_seconds, blocking=blocking)

    def _attempt_fields(self, out: Path, submission: str, attempt: int) -> dict[str, Any]:
        """A train attempt's submission time (the watchdog's log), and
        ``Stalled`` when the attempt before it was declared hung."""
        log_ = AttemptLog(out)
        started = datetime.fromtimestamp(log_.started_at(submission, time.time()), timezone.utc)
        previous = submission.rsplit("-a", 1)[0] + f"-a{attempt - 1}" if attempt > 1 else None
        stalled = log_.stall(previous) if previous else None
        fields: dict[str, Any] = {"started_at": started.isoformat(timespec="seconds")}
        if stalled is not None:
            fields["reason"] = "Stalled"
            fields["message"] = f"attempt {attempt - 1}: {stalled['message']}"
        return fields

    def _files(self, out: Path, rel: str, report_name: str, evidence: Evidence | None = None) -> RunFiles:
        """What the gates read from a phase folder. ``existing_files``: which of
        the evidence's preview files (wav and mel png, relative to ``out``) are
        on disk there (the VAE's ``previews`` check); None without evidence."""
        names = [] if evidence is None else [
            path for p in evidence.previews for path in (p.wav, p.png) if path]
        return RunFiles(
            log_text=rundir.read_text(out / "logs" / "training.log"),
            metrics_json=rundir.read_json(out / "logs" / "metrics.json"),
            report_text=rundir.read_text(out / report_name),
            report_path=report_name,
            run_dir=rel,
            existing_files=files_present(out, names) if evidence is not None else None,
        )

    def _gpu(self, evidence: Evidence) -> GpuMeasurement:
        if self.gpu_source is not None:
            return self.gpu_source(evidence)
        if self.spec.resources.gpus_per_worker == 0:
            return GpuMeasurement.not_applicable("no GPU allocated (resources.gpusPerWorker is 0)", source="nvml")
        if evidence.gpu_util_mean is None:
            return GpuMeasurement.not_applicable("no NVML samples in the job's evidence", source="nvml")
        return GpuMeasurement(util_mean=evidence.gpu_util_mean, source="nvml (evidence.json gpu_util_mean)")

    def _write_gate(self, status: PipelineStatus, key: str, gate: GateResult, out: Path, md_name: str, title: str) -> None:
        gate_status = gate.to_status()
        rundir.write_json(out / "gate.json", gate_status.model_dump(mode="json", by_alias=True))
        rundir.write_text(out / md_name, render_gate(gate, title))
        status.gates[key] = gate_status
        status.last_gate = f"{key}: {'passed' if gate.passed else 'failed'}"
        rel = out.relative_to(self.run_dir)
        status.artifacts[f"{key}.report"] = f"{rel}/{md_name}"
        status.artifacts[f"{key}.gate"] = f"{rel}/gate.json"
        self.progress.gate(title, gate)
        if self.tracker is not None:  # the outcome on the pipeline run, the reports on the folder's run
            self.tracker.gate(status, key)

    def _record_run(self, status: PipelineStatus, phase: str, rel: str, evidence: Evidence, iteration: int = 0) -> None:
        result = RunResult(phase=phase, iteration=iteration, run_dir=rel, status=evidence.status,
                           target_metric=metric_from_evidence(evidence, self.tracked),
                           best_val_acc=evidence.best_val_acc, best_val_loss=evidence.best_val_loss)
        status.runs = [r for r in status.runs if r.run_dir != rel] + [result]
        if phase != "Finalization" and evidence.completed:
            best = self._best_result(status)
            if best is None or best.run_dir == rel:
                status.best_run = rel
        m = status.metrics
        m.target_metric, m.target_value = self.spec.target_metric, self.spec.target.value
        m.final_train_loss = evidence.final_train_loss
        m.gpu_util_mean = evidence.gpu_util_mean
        finished = [r for r in status.runs if r.best_val_acc is not None]
        m.best_val_acc = max((r.best_val_acc for r in finished), default=None)  # type: ignore[type-var]
        m.best_val_loss = min((r.best_val_loss for r in status.runs if r.best_val_loss is not None), default=None)
        best = self._best_result(status)
        m.best_target_metric = best.target_metric if best else None

    def _best_result(self, status: PipelineStatus) -> RunResult | None:
        candidates = [r for r in status.runs if r.phase != "Finalization" and r.status in ("completed", "early_stopped")
                      and r.target_metric is not None]
        if not candidates:
            return None
        lower = self.tracked.lower_is_better
        return (min if lower else max)(candidates, key=lambda r: r.target_metric)  # type: ignore[arg-type,return-value]

    def _baseline_result(self, status: PipelineStatus) -> RunResult | None:
        baselines = [r for r in status.runs if r.phase == "Baseline"]
        return baselines[-1] if baselines else None

    def _iteration_history(self, status: PipelineStatus) -> list[IterationResult]:
        baseline = self._baseline_result(status)
        base_value = baseline.target_metric if baseline else None
        history, previous = [], base_value
        for r in (r for r in status.runs if r.phase == "Optimization"):
            history.append(IterationResult(iteration=r.iteration, metric_value=r.target_metric,
                                           baseline_value=base_value, previous_value=previous))
            previous = r.target_metric
        return history

    def _best_settings(self, status: PipelineStatus) -> TrainSettings:
        if status.best_run:
            return TrainSettings.from_job_config(rundir.read_yaml_dict(self.run_dir / status.best_run / "job.yaml"))
        return baseline_settings(self.spec)

    def _latest_recommendations(self, status: PipelineStatus) -> tuple[TrainSettings, list[Recommendation]]:
        path = self.run_dir / status.artifacts["diagnostics.latest"] / "recommendations.json"
        data = rundir.read_json(path)
        if data is None:
            raise FileNotFoundError(f"{path}: the latest diagnostics left no recommendations.json")
        base = TrainSettings.model_validate(data["base_settings"])
        return base, [Recommendation.model_validate(r) for r in data["recommendations"]]

    def _apply_latest_recommendations(self, status: PipelineStatus) -> tuple[TrainSettings, list[Any]]:
        base, recommendations = self._latest_recommendations(status)
        return apply_recommendations(base, recommendations)

    def _pending_settings(self, status: PipelineStatus) -> TrainSettings:
        """A baseline redone after a fix: the failed baseline's settings with
        the diagnostics' recommendations applied."""
        settings, _changes = self._apply_latest_recommendations(status)
        return settings


def _kept(job: JobConfig) -> dict[str, int]:
    """The job's settings the VAE's retention and previews checks compare the
    run with: ``train.keepPeriodic`` and ``vae.previewEvery``."""
    return {"keep_periodic": job.train.keep_periodic, "preview_every": job.vae.preview_every}


def _failures(gate: GateResult) -> str:
    return "; ".join(f"{c.id}: {c.message}" for c in gate.failures) or "no check failed"

