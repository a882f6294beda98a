"""Gate checks that measure what they say (issue 11, part 5): the budget a
run is held to, the periodic-checkpoint interval, the performance ceiling of
a pipeline that accepted its best, the TargetMet condition, one source for
the fixed bars, the schema's refusal of ``maxIterations: 0``, the config
check that can fail, and an approval that cannot come before a result.

Pure control-plane tests: no job is launched, nothing imports torch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.unit.test_gates import evidence, export_report, make_spec, run_exec, test_evaluation
from trainpipe_operator.controller.conditions import build_conditions, target_condition
from trainpipe_operator.diagnosis import issues
from trainpipe_operator.gates import execution, thresholds
from trainpipe_operator.gates.checks import quotes_figure
from trainpipe_operator.gates.finalization import AcceptedBest, check_ceiling_documented
from trainpipe_operator.gates.finalization import test_figure as figure_on_test
from trainpipe_operator.gates.inputs import RunFiles
from trainpipe_operator.pipeline import machine, rundir
from trainpipe_operator.pipeline.jobs import baseline_settings, build_job
from trainpipe_operator.pipeline.launchers import ProcessLauncher
from trainpipe_operator.pipeline.runner import LocalRunner, NotAwaitingApproval
from trainpipe_operator.reports.finalization import render_performance_ceiling
from trainpipe_operator.spec.pipeline import PipelineSpec, TrainingPipeline
from trainpipe_operator.spec.status import CheckStatus, GateStatus, PipelineStatus, RunResult
from trainpipe_trainer.contract.evidence import Evidence

T0 = "2026-01-01T00:00:00+00:00"


# ------------------------------------------------------------------ duration

@pytest.mark.parametrize(("run_started", "left"), [
    ("2026-01-01T00:50:00+00:00", 600.0),  # 50 min of a 1 h budget gone when the run started
    ("2026-01-01T00:00:00", 3600.0),  # a time without a zone is UTC
    ("2026-01-01T02:00:00+00:00", 0.0),
    (None, None),
])
def test_budget_left_when_the_run_started(run_started, left):
    assert machine.budget_left_at(3600, T0, run_started) == left


def test_duration_is_held_to_the_budget_before_the_run_not_after():
    """A 15 min run that started with 20 min left is within budget; measured
    against what is left after it (5 min) it would read as over."""
    ev = evidence(timings={"total_seconds": 900.0, "started_at": "2026-01-01T00:40:00+00:00"})
    before = machine.budget_left_at(3600, T0, ev.timings.started_at)
    check = run_exec(ev, budget=before)["duration"]
    assert (check.result, check.threshold) == ("pass", 1200.0)
    over = evidence(timings={"total_seconds": 1500.0, "started_at": "2026-01-01T00:40:00+00:00"})
    assert run_exec(over, budget=before)["duration"].result == "fail"


# ------------------------------------------------------ periodic checkpoints

@pytest.mark.parametrize(("every", "found", "result"), [
    (5, ["checkpoint_epoch_5.pt", "checkpoint_epoch_10.pt"], "pass"),
    (5, ["checkpoint_epoch_11.pt", "checkpoint_epoch_12.pt"], "warn"),  # not the configured interval
    (1, ["checkpoint_epoch_10.pt", "checkpoint_epoch_11.pt"], "warn"),  # the newest (12) is missing
    (1, ["checkpoint_epoch_11.pt", "checkpoint_epoch_12.pt"], "pass"),
])
def test_periodic_checkpoints_follow_the_configured_interval(every, found, result):
    check = run_exec(evidence(n=12, periodic_checkpoints=found), checkpoint_every=every)["periodic-checkpoints"]
    assert check.result == result and not check.mandatory
    assert f"every {every} epoch" in str(check.threshold)


# -------------------------------------------------------- one source of bars

def test_gates_and_diagnosis_share_one_definition_of_each_bar():
    assert issues.LEAK_VAL_ACC is thresholds.LEAKAGE_VAL_ACC is execution.LEAKAGE_VAL_ACC
    assert issues.LOSS_DECREASE_MIN is thresholds.NO_LEARNING_DECREASE


# ---------------------------------------------------------- maxIterations 0

def test_max_iterations_zero_is_refused_naming_the_field():
    with pytest.raises(ValidationError) as err:
        PipelineSpec.model_validate({"optimization": {"maxIterations": 0}})
    assert "maxIterations" in str(err.value) or "max_iterations" in str(err.value)
    assert "greater than or equal to 1" in str(err.value)


# ------------------------------------------------------ performance ceiling

def _ceiling(test_acc: float = 0.9833) -> str:
    runs = [RunResult(phase="Baseline", run_dir="02_baseline", status="completed", target_metric=0.9611),
            RunResult(phase="Optimization", iteration=1, run_dir="04_optimization/iter_1", status="completed",
                      target_metric=0.9722)]
    return render_performance_ceiling("val_acc >= 0.9999", 0.9999, "1/1 iterations used", "04_optimization/iter_1",
                                      ("val_acc", 0.9722), ("test accuracy", test_acc), runs,
                                      [(1, ["train.lr: 0.0005 -> 0.001"])])


def test_the_ceiling_document_passes_its_own_check():
    text = _ceiling()
    assert "train.lr: 0.0005 -> 0.001" in text and "04_optimization/iter_1" in text
    spec = make_spec(target={"metric": "val_acc", "value": 0.9999})
    check = check_ceiling_documented(AcceptedBest("1/1 iterations used", 0.9722, text),
                                     test_evaluation(accuracy=0.9833), spec, RunFiles(run_dir="05_finalization"))
    assert check.result == "pass" and check.evidence == "05_finalization/performance_ceiling.md"


@pytest.mark.parametrize(("text", "needle"), [
    (None, "missing or empty"),
    ("## Target\n0.9999\n## Best result\n0.9722\n## What was tried\nbaseline\n", "test accuracy (0.9833)"),
    ("## Target\n0.9999\n## What was tried\n0.9722 0.9833\n", "no section 'Best result'"),
])
def test_a_ceiling_document_without_the_figures_fails(text, needle):
    spec = make_spec(target={"metric": "val_acc", "value": 0.9999})
    check = check_ceiling_documented(AcceptedBest("budget spent", 0.9722, text), test_evaluation(accuracy=0.9833),
                                     spec, RunFiles())
    assert check.result == "fail" and needle in check.message


def test_no_ceiling_check_for_a_pipeline_that_did_not_stop_short():
    assert check_ceiling_documented(None, test_evaluation(), make_spec(), RunFiles()).result == "skip"


@pytest.mark.parametrize(("metric", "expected"), [
    ("val_acc", ("test accuracy", 0.9)), ("test_acc", ("test accuracy", 0.9)), ("val_loss", ("test loss", 0.3)),
])
def test_the_test_figure_follows_the_target_metric(metric, expected):
    assert figure_on_test(test_evaluation(), metric) == expected
    assert figure_on_test(None, metric)[1] is None


@pytest.mark.parametrize(("text", "value", "found"), [
    ("| best | 0.9722 |", 0.97222, True),
    ("accuracy 0.97", 0.9722, False),
    ("loss 1.2e-05", 1.2e-5, True),
    ("nothing", 0.5, False),
])
def test_quotes_figure(text, value, found):
    assert quotes_figure(text, value) is found


# --------------------------------------------------------- TargetMet status

def _finalized(result: str, value: float | None, message: str = "m") -> PipelineStatus:
    check = CheckStatus(id="target-met-on-test", result=result, value=value, threshold=0.9999, message=message)
    gate = GateStatus(gate="production-ready", phase="Finalization", passed=True, evaluated_at=T0, checks=[check])
    return PipelineStatus(phase="Succeeded", gates={"finalization": gate})


@pytest.mark.parametrize(("result", "value", "status", "reason"), [
    ("pass", 0.99991, "True", "Met"),
    ("warn", 0.9833, "False", "AcceptedBest"),
    ("fail", 0.9833, "False", "NotMet"),
    ("fail", None, "False", "NotMeasured"),
])
def test_target_met_condition(result, value, status, reason):
    cond = target_condition(_finalized(result, value, "Target not met on the test split"), 3, T0)
    assert cond is not None and (cond.type, cond.status, cond.reason) == ("TargetMet", status, reason)
    assert cond.observed_generation == 3
    listed = {c.type: c for c in build_conditions(_finalized(result, value), 3, T0)}
    assert listed["TargetMet"].status == status and "Ready" in listed


def test_no_target_condition_before_finalization():
    assert target_condition(PipelineStatus(phase="Baseline"), 1, T0) is None
    assert "TargetMet" not in {c.type for c in build_conditions(PipelineStatus(phase="Baseline"), 1, T0)}


# ---------------------------------------------------------------- runner

def _runner(tmp_path: Path, **spec: object) -> LocalRunner:
    pipeline = TrainingPipeline.model_validate({"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
                                                "metadata": {"name": "p"},
                                                "spec": {"data": {"source": "builtin:digits"}, **spec}})
    return LocalRunner(pipeline, tmp_path / "run", ProcessLauncher(), "local")


@pytest.mark.parametrize("phase", ["Pending", "Baseline", "Finalization", "Succeeded", "Failed"])
def test_approve_before_awaiting_approval_is_refused_and_records_nothing(tmp_path, phase):
    runner = _runner(tmp_path, approval={"required": True})
    with pytest.raises(NotAwaitingApproval) as err:
        runner.approve(PipelineStatus(phase=phase, run_id="r1"), "alice")
    assert f"in {phase}, not AwaitingApproval" in str(err.value) and "nothing was approved" in str(err.value)
    assert not (tmp_path / "run" / "approval.json").exists()


def test_an_approval_counts_only_for_the_run_it_names(tmp_path):
    runner = _runner(tmp_path, approval={"required": True})
    status = PipelineStatus(phase="Finalization", run_id="r2")
    rundir.write_json(tmp_path / "run" / "approval.json", {"approved": True, "by": "x"})  # by hand, no run id
    assert not runner._approved(status)
    rundir.write_json(tmp_path / "run" / "approval.json", {"approved": True, "by": "x", "runId": "r1"})
    assert not runner._approved(status)
    rundir.write_json(tmp_path / "run" / "approval.json", {"approved": True, "by": "x", "runId": "r2"})
    assert runner._approved(status)


def test_a_training_config_the_trainer_refuses_fails_config_valid(tmp_path):
    """Planning reports every training config the trainer would refuse as
    `config-valid` (a schema older than the trainer's, say) instead of crashing."""
    runner = _runner(tmp_path)
    bad = runner.spec.model_copy(update={"baseline": runner.spec.baseline.model_copy(update={"lr": 50.0})})
    runner.spec = bad
    status = PipelineStatus(phase="Planning", run_id="r1", started_at=T0)
    runner._planning(status)
    check = next(c for c in status.gates["planning"].checks if c.id == "config-valid")
    assert check.result == "fail" and "lr" in check.message
    assert status.phase == "Failed" and "config-valid" in status.message


# ------------------------------------------- accepting the best, end to end
# Finalization of a pipeline whose best run missed the target, on files laid
# out as the trainer leaves them (no training): seed 001's "accept best
# result, document performance ceiling, deploy".

def _finalization_files(runner: LocalRunner) -> Evidence:
    run = runner.run_dir
    best = run / "04_optimization" / "iter_1"
    job = build_job("p", "Optimization", runner.spec, baseline_settings(runner.spec), best, runtime="local")
    rundir.write_text(best / "job.yaml", job.to_yaml())
    out = run / rundir.FINALIZATION
    ev = evidence(n=12)
    lines = [f"INFO EPOCH {e.num}/12 train_loss={e.train_loss:.4f}" for e in ev.epochs] + ["INFO Training complete"]
    rundir.write_text(out / "logs" / "training.log", "\n".join(lines) + "\n")
    rundir.write_json(out / "logs" / "metrics.json", {"epochs": [e.model_dump() for e in ev.epochs]})
    ev.write(out / "evidence.json")
    test_evaluation(accuracy=0.9).write(out / "test_evaluation.json")
    export_report().write(out / "export.json")
    return ev


def _accepted_status() -> PipelineStatus:
    status = PipelineStatus(phase="Finalization", run_id="r1", started_at=T0,
                            accepted_best="1/1 iterations used: accept the best, iteration 1 (val_acc 0.9722)")
    status.runs = [RunResult(phase="Baseline", run_dir="02_baseline", status="completed", target_metric=0.9611),
                   RunResult(phase="Optimization", iteration=1, run_dir="04_optimization/iter_1",
                             status="completed", target_metric=0.9722)]
    status.best_run, status.metrics.best_target_metric = "04_optimization/iter_1", 0.9722
    return status


SPEC_UNREACHABLE = {"target": {"metric": "val_acc", "value": 0.9999}, "optimization": {"maxIterations": 1}}


def test_an_accepted_best_is_documented_deployed_and_succeeds_with_target_met_false(tmp_path):
    runner = _runner(tmp_path, **SPEC_UNREACHABLE)
    ev = _finalization_files(runner)
    status = _accepted_status()
    runner._finalize_documents_and_gate(status, ev)
    runner._save(status)
    gate = status.gates["finalization"]
    target = next(c for c in gate.checks if c.id == "target-met-on-test")
    assert (target.result, target.value) == ("warn", 0.9)  # the test split's accuracy, not val's 0.9722
    assert gate.passed and status.phase == "Succeeded", [(c.id, c.message) for c in gate.checks if c.result == "fail"]
    ceiling = (runner.run_dir / "05_finalization" / "performance_ceiling.md").read_text()
    assert "0.9722" in ceiling and "0.9999" in ceiling and "| test accuracy" in ceiling
    assert status.artifacts["finalization.performance_ceiling.md"] == "05_finalization/performance_ceiling.md"
    condition = next(c for c in status.conditions if c.type == "TargetMet")
    assert (condition.status, condition.reason) == ("False", "AcceptedBest")
    assert "target not met" in status.message
    assert "accepted best, target not met" in (runner.run_dir / "summary.md").read_text()
    on_disk = rundir.load_state(runner.run_dir)
    assert on_disk is not None and "TargetMet" in {c.type for c in on_disk.conditions}


def test_an_accepted_best_with_approval_required_waits_for_a_person(tmp_path):
    runner = _runner(tmp_path, approval={"required": True}, **SPEC_UNREACHABLE)
    ev = _finalization_files(runner)
    status = _accepted_status()
    runner._finalize_documents_and_gate(status, ev)
    assert status.phase == "AwaitingApproval" and "a person decides" in status.message
    status = runner.approve(status, "alice")
    assert status.phase == "Succeeded" and status.decisions[-1].decision == "approved"


def test_a_target_met_on_validation_and_missed_on_test_is_finalized_as_a_ceiling(tmp_path):
    """Validation met the target (the fast path), the test split did not: the
    best result is deployed with its ceiling documented, TargetMet=False
    (issue 11's digits run with target 0.9999 ended Failed on it)."""
    runner = _runner(tmp_path, target={"metric": "val_acc", "value": 0.95})
    ev = _finalization_files(runner)
    status = PipelineStatus(phase="Finalization", run_id="r1", started_at=T0)
    status.metrics.best_target_metric = 0.96
    runner._finalize_documents_and_gate(status, ev)
    runner._save(status)
    target = next(c for c in status.gates["finalization"].checks if c.id == "target-met-on-test")
    assert (target.result, target.value) == ("warn", 0.9)
    assert status.phase == "Succeeded" and "the held-out test split did not (test accuracy 0.9000)" in (
        status.accepted_best or "")
    condition = next(c for c in status.conditions if c.type == "TargetMet")
    assert (condition.status, condition.reason) == ("False", "AcceptedBest")
    ceiling = (runner.run_dir / "05_finalization" / "performance_ceiling.md").read_text()
    assert "0.96" in ceiling and "0.9" in ceiling


def test_without_a_test_figure_the_target_check_fails(tmp_path):
    runner = _runner(tmp_path, target={"metric": "val_acc", "value": 0.95})
    ev = _finalization_files(runner)
    (runner.run_dir / "05_finalization" / "test_evaluation.json").unlink()
    status = PipelineStatus(phase="Finalization", run_id="r1", started_at=T0)
    runner._finalize_documents_and_gate(status, ev)
    assert status.phase == "Failed" and "target-met-on-test" in status.message


@pytest.mark.parametrize(("best", "accepted"), [(0.9722, True), (0.99995, False), (None, True)])
def test_accepting_the_best_is_recorded_only_short_of_the_target(tmp_path, best, accepted):
    runner = _runner(tmp_path, **SPEC_UNREACHABLE)
    status = PipelineStatus(phase="Optimization")
    status.metrics.best_target_metric = best
    runner._accept_best(status, "diminishing returns")
    assert (status.accepted_best == "diminishing returns") is accepted


def test_a_failed_optimization_run_is_never_the_best(tmp_path):
    runner = _runner(tmp_path, **SPEC_UNREACHABLE)
    status = _accepted_status()
    runner._disqualify(status, "04_optimization/iter_1")
    assert status.best_run == "02_baseline" and status.metrics.best_target_metric == 0.9611
    assert next(r for r in status.runs if r.phase == "Optimization").status == "gate-failed"
