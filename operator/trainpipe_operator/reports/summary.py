"""``summary.md`` at the top of the run directory: where the pipeline is,
every gate with a link to its report, every decision, every artifact."""

from __future__ import annotations

from trainpipe_operator.controller.conditions import tracking_condition
from trainpipe_operator.reports.markdown import fmt, table
from trainpipe_operator.spec.pipeline import TrainingPipeline
from trainpipe_operator.spec.status import PipelineStatus
from trainpipe_operator.tasks import catalog_for


def render_summary(pipeline: TrainingPipeline) -> str:
    status = pipeline.status
    assert status is not None
    spec = pipeline.spec
    m = status.metrics
    catalog = catalog_for(spec)
    metric = spec.target_metric
    if catalog.task == "classification":
        figures: list[tuple[str, object]] = [("best val accuracy", m.best_val_acc), ("best val loss", m.best_val_loss),
                                             ("test accuracy", m.test_acc)]
    else:  # the task's metrics, by name
        tracked, on_test = catalog.tracked(metric), catalog.on_test(metric)
        figures = [(f"best {tracked.name}", m.best_target_metric), ("best val loss", m.best_val_loss),
                   (on_test.name if on_test else "test", m.test_target_metric)]
    lines = [
        f"# Pipeline {pipeline.metadata.name}",
        "",
        f"Phase: **{status.phase}**" + (f": {status.message}" if status.message else ""),
        "",
        *_tracking_lines(status),
        table(["", ""], [
            ("task", catalog.task),
            ("target", f"{metric} {catalog.metric(metric).relation} {spec.target.value}"),
            *figures, ("optimization iterations", status.iteration),
            ("started", status.started_at), ("finished", status.finished_at),
            *([("accepted best, target not met", status.accepted_best)] if status.accepted_best else []),
        ]),
        "",
        "## Gates",
        "",
    ]
    gate_rows = []
    for key, gate in status.gates.items():
        counts = {r: sum(1 for c in gate.checks if c.result == r) for r in ("pass", "warn", "fail", "skip")}
        report = status.artifacts.get(f"{key}.report", "")
        gate_rows.append((key, "passed" if gate.passed else "FAILED",
                          ", ".join(f"{n} {r}" for r, n in counts.items() if n),
                          f"[report]({report})" if report else "", gate.evaluated_at))
    lines += [table(["gate", "result", "checks", "report", "evaluated"], gate_rows) if gate_rows else "No gate evaluated yet.", ""]
    lines += ["## Decisions", ""]
    lines += [table(["time", "phase", "iteration", "decision", "reason"],
                    [(d.time, d.phase, d.iteration, d.decision, d.reason) for d in status.decisions])
              if status.decisions else "None yet.", ""]
    lines += ["## Artifacts", ""]
    lines += [table(["artifact", "path"], [(k, f"[{v}]({v})") for k, v in sorted(status.artifacts.items())])
              if status.artifacts else "None yet.", ""]
    if status.job.submission_id:
        j = status.job
        lines += ["## Last job", "", table(["", ""], [
            ("submission", j.submission_id), ("phase", j.phase), ("state", j.state), ("attempt", j.attempt),
            ("resumed from epoch", j.resumed_from_epoch), ("exit code", j.exit_code), ("message", fmt(j.message)),
        ]), ""]
    return "\n".join(lines)


def _tracking_lines(status: PipelineStatus) -> list[str]:
    """spec.tracking: where the runs are, and a warning while the tracked
    record is incomplete (TrackingDegraded)."""
    tracking = status.tracking
    if tracking is None:
        return []
    lines = []
    condition = tracking_condition(status, None, "")
    if condition is not None and condition.status == "True":
        lines += [f"> **Warning: tracking degraded** ({condition.reason}): {condition.message}", ""]
    if tracking.mlflow_parent_run_id:
        model = (f"; model {tracking.registered_model} version {tracking.model_version}"
                 f" ({', '.join(tracking.aliases)})" if tracking.model_version else "")
        lines += [f"MLflow: experiment {tracking.experiment_id}, pipeline run {tracking.mlflow_parent_run_id}{model}",
                  ""]
    return lines
