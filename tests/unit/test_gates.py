"""The gates: every check on crafted evidence, for each outcome it can have.

Pure control-plane tests: the evidence is built here by small factories, and
nothing imports torch, numpy or ray.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from trainpipe_operator.diagnosis.issues import Diagnosis, Signal
from trainpipe_operator.gates.baseline import decide_after_baseline, evaluate_baseline
from trainpipe_operator.gates.checks import (
    GateResult,
    failed,
    markdown_headings,
    missing_sections,
    passed,
    warned,
)
from trainpipe_operator.gates.diagnostics import evaluate_diagnostics
from trainpipe_operator.gates.execution import execution_checks
from trainpipe_operator.gates.finalization import (
    AWAITING_APPROVAL,
    AcceptedBest,
    evaluate_finalization,
)
from trainpipe_operator.gates.inputs import GpuMeasurement, RunFiles
from trainpipe_operator.gates.optimization import evaluate_optimization
from trainpipe_operator.gates.planning import evaluate_planning
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_trainer.contract.data_report import DataReport
from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.results import ExportReport, PreflightReport, TestEvaluation

NAN, INF = float("nan"), float("inf")
BUDGET = 3600.0


# ------------------------------------------------------------------ factories

def make_spec(**sections: Any) -> PipelineSpec:
    """``make_spec(gates={"gpuUtilMin": 80})``: camelCase, as in a manifest."""
    sections.setdefault("data", {"source": "builtin:digits"})
    return PipelineSpec.model_validate(sections)


def gpu_spec(**sections: Any) -> PipelineSpec:
    """A pipeline that requested a GPU: the gpu-utilization check applies."""
    sections.setdefault("resources", {"gpusPerWorker": 1})
    return make_spec(**sections)


def _epoch(num: int) -> dict[str, Any]:
    train_loss = 2.0 * 0.6 ** (num - 1)
    train_acc = min(0.5 + 0.08 * (num - 1), 0.97)
    val_acc = train_acc - 0.03
    return {
        "num": num, "train_loss": train_loss, "val_loss": train_loss + 0.05,
        "train_acc": train_acc, "val_acc": val_acc, "lr": 1e-3,
        "epoch_seconds": 12.0 if num == 1 else 10.0, "eta_seconds": 0.0, "samples_per_second": 100.0,
        "loss_gap": 0.05 / train_loss, "acc_gap": train_acc - val_acc, "skipped_steps": 0,
    }


def _checkpoint(name: str, epoch: int, val_loss: float) -> dict[str, Any]:
    return {"path": f"/runs/p/02_baseline/checkpoints/{name}_model.pt", "exists": True, "loads": True,
            "has_model_state": True, "has_optimizer_state": True, "epoch": epoch, "val_loss": val_loss}


def evidence(n: int = 5, epochs: dict[int, dict[str, Any]] | None = None,
             checkpoints: dict[str, dict[str, Any]] | None = None, **fields: Any) -> Evidence:
    """A valid, healthy Evidence of ``n`` epochs; ``epochs={3: {"val_loss": NAN}}``
    patches one epoch, ``checkpoints={"best": {"loads": False}}`` one checkpoint,
    other keywords the Evidence's fields."""
    records = [_epoch(i) for i in range(1, n + 1)]
    for num, patch in (epochs or {}).items():
        records[num - 1].update(patch)
    best = min(records, key=lambda r: r["val_loss"], default=None)
    ckpts = {
        "best": _checkpoint("best", best["num"] if best else 0, best["val_loss"] if best else 0.0),
        "last": _checkpoint("last", n, records[-1]["val_loss"] if records else 0.0),
    }
    for name, patch in (checkpoints or {}).items():
        ckpts[name] = {**ckpts.get(name, _checkpoint(name, n, 0.1)), **patch}
    data: dict[str, Any] = {
        "job_name": "baseline", "config_hash": "abc", "status": "completed", "completed": True,
        "reason": "reached the final epoch", "epochs_planned": n, "epochs": records,
        "initial_train_loss": records[0]["train_loss"] if records else None,
        "final_train_loss": records[-1]["train_loss"] if records else None,
        "best_val_loss": best["val_loss"] if best else None,
        "best_val_acc": max((r["val_acc"] for r in records), default=None),
        "best_epoch": best["num"] if best else None,
        "checkpoints": ckpts,
        "periodic_checkpoints": [f"checkpoint_epoch_{i}.pt" for i in range(max(1, n - 2), n + 1)] if n else [],
        "timings": {"total_seconds": 12.0 + 10.0 * max(n - 1, 0), "epoch_seconds": [r["epoch_seconds"] for r in records]},
    }
    data.update(fields)
    return Evidence.model_validate(data)


REPORT = """# Baseline Training Results
## Configuration
smallcnn, adamw
## Final Metrics
val_acc 0.8
## Training Profile
10 min
## Checkpoints Saved
best_model.pt
## Learning Curves
table
## Decision Point
optimize
## Environment
python 3.11
"""


def report_for(ev: Evidence, decision: str = "optimize") -> str:
    """REPORT with the run's figures (the report check compares them with the evidence)."""
    return (REPORT.replace("## Decision Point\noptimize", f"## Decision Point\n{decision}")
            + f"best val acc {ev.best_val_acc}, best val loss {ev.best_val_loss}, "
              f"final train loss {ev.final_train_loss}\n")


def files(ev: Evidence, **overrides: Any) -> RunFiles:
    """The run's files, consistent with ``ev``: EPOCH lines, 'Training complete',
    metrics.json with every epoch, a complete baseline_results.md."""
    lines = [f"2024-01-01 INFO EPOCH {e.num}/{ev.epochs_planned} train_loss={e.train_loss:.4f}" for e in ev.epochs]
    lines.append(f"2024-01-01 INFO Training complete: {len(ev.epochs)} epochs")
    base: dict[str, Any] = {
        "log_text": "\n".join(lines) + "\n",
        "metrics_json": {"epochs": [e.model_dump() for e in ev.epochs]},
        "report_text": report_for(ev),
        "run_dir": "02_baseline",
    }
    base.update(overrides)
    return RunFiles(**base)


GOOD_GPU = GpuMeasurement(util_mean=75.0, sm_active=0.85)


def run_exec(ev: Evidence | None = None, spec: PipelineSpec | None = None, gpu: GpuMeasurement | None = GOOD_GPU,
             budget: float | None = BUDGET, checkpoint_every: int | None = 1, **file_overrides: Any) -> dict:
    ev = ev if ev is not None else evidence()
    checks = execution_checks(ev, files(ev, **file_overrides), gpu, spec or gpu_spec(), budget,
                              checkpoint_every=checkpoint_every)
    return {c.id: c for c in checks}


def baseline_gate(ev: Evidence | None = None, spec: PipelineSpec | None = None, decision: str | None = "optimize",
                  rerun: Evidence | None = None, gpu: GpuMeasurement | None = GOOD_GPU,
                  budget: float | None = BUDGET, **file_overrides: Any) -> GateResult:
    ev = ev if ev is not None else evidence()
    file_overrides.setdefault("report_text", report_for(ev, decision or "optimize"))
    return evaluate_baseline(ev, files(ev, **file_overrides), gpu, spec or gpu_spec(), budget, decision, rerun)


# ------------------------------------------------------------ checks helpers

def test_gate_result_semantics():
    only_warn = GateResult("g", "P", [passed("a"), warned("b")])
    assert only_warn.passed and only_warn.failures == []
    optional_fail = GateResult("g", "P", [passed("a"), failed("b", mandatory=False)])
    assert optional_fail.passed
    mandatory_fail = GateResult("g", "P", [warned("a"), failed("b")])
    assert not mandatory_fail.passed and [c.id for c in mandatory_fail.failures] == ["b"]


def test_markdown_sections():
    text = "# Title\n## Checkpoints Saved\ntext\n### decision point ##\n"
    assert markdown_headings(text) == ["Title", "Checkpoints Saved", "decision point"]
    assert missing_sections(text, ("Checkpoints", "Decision", "Environment")) == ["Environment"]


def test_gates_never_import_torch_numpy_or_ray():
    code = (
        "import sys\n"
        "import trainpipe_operator.gates.planning, trainpipe_operator.gates.baseline\n"
        "import trainpipe_operator.gates.diagnostics, trainpipe_operator.gates.optimization\n"
        "import trainpipe_operator.gates.finalization\n"
        "print(','.join(m for m in ('torch', 'numpy', 'ray') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ------------------------------------------------------------ execution checks

def test_healthy_run_passes_every_execution_check():
    checks = run_exec()
    assert [c.id for c in checks.values()] == [
        "completed", "loss-decreased", "loss-decrease-ratio", "losses-finite", "gpu-utilization",
        "duration", "epoch-time-consistent", "best-checkpoint", "last-checkpoint",
        "periodic-checkpoints", "logs", "leakage-suspect", "memorization-suspect", "overfit-gap",
    ]
    assert {c.id: c.result for c in checks.values() if c.result != "pass"} == {}
    for c in checks.values():
        assert c.threshold is not None and c.value is not None, c.id
        assert c.evidence and c.message, c.id
    assert checks["loss-decreased"].evidence == "02_baseline/logs/metrics.json"
    assert checks["best-checkpoint"].evidence == "02_baseline/checkpoints/best_model.pt"


@pytest.mark.parametrize(("ev", "file_overrides", "result", "needle"), [
    (evidence(), {}, "pass", "reached the final epoch"),
    (evidence(status="early_stopped"), {}, "pass", "stopped early"),
    (evidence(status="failed", completed=False, reason="CUDA out of memory",
              exception={"type": "OutOfMemoryError", "message": "CUDA out of memory", "traceback": "..."}),
     {}, "fail", "OutOfMemoryError"),
    (evidence(status="interrupted", completed=False), {}, "fail", "status is interrupted"),
    (evidence(), {"log_text": "EPOCH 1/5\n"}, "fail", "no 'Training complete' line"),
    (evidence(), {"log_text": None}, "fail", "training.log is missing"),
])
def test_completed(ev, file_overrides, result, needle):
    check = run_exec(ev, **file_overrides)["completed"]
    assert check.result == result and check.mandatory
    assert needle in check.message
    assert check.value == ev.status


@pytest.mark.parametrize(("ev", "result", "needle"), [
    (evidence(), "pass", "fell from 2.0000"),
    (evidence(epochs={5: {"train_loss": 2.5}}), "fail", "did not fall"),
    (evidence(n=1), "fail", "Only one epoch"),
    (evidence(epochs={5: {"train_loss": NAN}}), "fail", "not finite"),
    (evidence(n=0), "fail", "No epoch finished"),
])
def test_loss_decreased(ev, result, needle):
    check = run_exec(ev)["loss-decreased"]
    assert (check.result, check.mandatory) == (result, True)
    assert needle in check.message
    assert check.threshold == "final train loss < initial"


@pytest.mark.parametrize(("ev", "gates", "result", "value"), [
    (evidence(), {}, "pass", 0.8704),  # 2.0 -> 0.2592
    (evidence(epochs={5: {"train_loss": 1.4}}), {}, "warn", 0.3),
    (evidence(epochs={5: {"train_loss": 1.4}}), {"lossDecreaseMin": 0.25}, "pass", 0.3),
    (evidence(), {"lossDecreaseMin": 0.9}, "warn", 0.8704),
    (evidence(n=1), {}, "skip", None),
])
def test_loss_decrease_ratio(ev, gates, result, value):
    check = run_exec(ev, make_spec(gates=gates))["loss-decrease-ratio"]
    assert check.result == result and not check.mandatory
    assert check.value == value
    if result != "skip":
        assert check.threshold == make_spec(gates=gates).gates.loss_decrease_min


@pytest.mark.parametrize(("ev", "result", "value", "needle"), [
    (evidence(), "pass", 0, "All 5 epochs"),
    (evidence(epochs={3: {"val_loss": NAN}}), "fail", 1, "epoch 3 val_loss=nan"),
    (evidence(epochs={2: {"train_loss": INF}, 4: {"val_loss": INF}}), "fail", 2, "epoch 2 train_loss=inf"),
    (evidence(skipped_steps_total=4), "warn", 0, "4 update(s) were skipped"),
    (evidence(n=0), "fail", None, "No epoch finished"),
])
def test_losses_finite(ev, result, value, needle):
    check = run_exec(ev)["losses-finite"]
    assert (check.result, check.value, check.mandatory) == (result, value, True)
    assert needle in check.message


@pytest.mark.parametrize(("gpu", "gates", "result", "needle"), [
    (GpuMeasurement(util_mean=75.0), {}, "pass", "75.0%"),
    (GpuMeasurement(util_mean=60.0), {}, "pass", "60.0%"),
    (GpuMeasurement(util_mean=50.0), {}, "warn", "room for optimization"),
    (GpuMeasurement(util_mean=30.0), {}, "fail", "under 40%"),
    (GpuMeasurement(util_mean=75.0), {"gpuUtilMin": 80, "gpuUtilWarn": 70}, "warn", "between 70% and 80%"),
    (GpuMeasurement(util_mean=30.0), {"gpuUtilMin": 30, "gpuUtilWarn": 10}, "pass", "30.0%"),
    (GpuMeasurement(util_mean=90.0, sm_active=0.9), {}, "pass", "SM activity 0.90 (good"),
    (GpuMeasurement(util_mean=90.0, sm_active=0.65), {}, "pass", "(fair"),
    (GpuMeasurement(util_mean=95.0, sm_active=0.2), {}, "warn", "SM activity 0.20 is poor"),
    (GpuMeasurement.absent("no series for the job's GPUs"), {}, "fail", "No evidence, no pass"),
    (GpuMeasurement.unreachable("GET http://prometheus:9090 failed: connection refused"), {}, "fail",
     "connection refused"),
])
def test_gpu_utilization(gpu, gates, result, needle):
    check = run_exec(spec=gpu_spec(gates=gates), gpu=gpu)["gpu-utilization"]
    assert check.result == result and check.mandatory
    assert needle in check.message
    if result != "skip":
        assert check.threshold == gpu_spec(gates=gates).gates.gpu_util_min
    if gpu.util_mean is not None:
        assert check.value == gpu.util_mean


def test_gpu_utilization_falls_back_to_the_trainers_nvml_mean():
    check = run_exec(evidence(gpu_util_mean=70.0), gpu=None)["gpu-utilization"]
    assert (check.result, check.value, check.evidence) == ("pass", 70.0, "evidence.json (NVML)")
    assert run_exec(evidence(), gpu=None)["gpu-utilization"].result == "fail"  # GPU requested, none measured


@pytest.mark.parametrize(("ev", "budget", "result"), [
    (evidence(), BUDGET, "pass"),
    (evidence(timings={"total_seconds": 5400.0}), BUDGET, "fail"),
    (evidence(), None, "skip"),
    (evidence(timings={"total_seconds": 0.0}), BUDGET, "skip"),
])
def test_duration(ev, budget, result):
    check = run_exec(ev, budget=budget)["duration"]
    assert check.result == result and not check.mandatory
    if result != "skip":
        assert (check.value, check.threshold) == (ev.timings.total_seconds, budget)


@pytest.mark.parametrize(("patch", "gates", "result", "value"), [
    ({}, {}, "pass", 0.0),
    ({1: {"epoch_seconds": 60.0}}, {}, "pass", 0.0),  # the first epoch is excluded
    ({3: {"epoch_seconds": 13.0}}, {}, "warn", 0.3),
    ({3: {"epoch_seconds": 13.0}}, {"epochTimeJitter": 0.5}, "pass", 0.3),
    ({3: {"epoch_seconds": 11.5}}, {}, "pass", 0.15),
])
def test_epoch_time_consistent(patch, gates, result, value):
    check = run_exec(evidence(epochs=patch), make_spec(gates=gates))["epoch-time-consistent"]
    assert check.result == result and not check.mandatory
    assert check.value == pytest.approx(value)
    assert check.threshold == make_spec(gates=gates).gates.epoch_time_jitter


def test_epoch_time_consistent_skips_short_runs():
    assert run_exec(evidence(n=2))["epoch-time-consistent"].result == "skip"


@pytest.mark.parametrize(("patch", "result", "needle"), [
    ({}, "pass", "best_model.pt is valid (epoch 5"),
    ({"exists": False, "loads": False, "error": "file does not exist"}, "fail", "file does not exist"),
    ({"loads": False, "error": "truncated zip"}, "fail", "does not load (truncated zip)"),
    ({"has_optimizer_state": False}, "fail", "no optimizer_state_dict"),
    ({"has_model_state": False}, "fail", "no model_state_dict"),
    ({"epoch": None}, "fail", "no epoch"),
    ({"val_loss": None}, "fail", "no finite val_loss"),
])
def test_best_checkpoint(patch, result, needle):
    check = run_exec(evidence(checkpoints={"best": patch}))["best-checkpoint"]
    assert (check.result, check.mandatory) == (result, True)
    assert needle in check.message


@pytest.mark.parametrize(("patch", "result", "needle"), [
    ({}, "pass", "can resume"),
    ({"has_optimizer_state": False, "val_loss": None}, "pass", "last_model.pt is valid"),
    ({"exists": False, "loads": False}, "fail", "file does not exist"),
    ({"loads": False, "error": "checksum mismatch"}, "fail", "checksum mismatch"),
])
def test_last_checkpoint(patch, result, needle):
    check = run_exec(evidence(checkpoints={"last": patch}))["last-checkpoint"]
    assert (check.result, check.mandatory) == (result, True)
    assert needle in check.message


def test_checkpoint_entries_missing_fail():
    ev = evidence().model_copy(update={"checkpoints": {}})
    checks = run_exec(ev)
    assert checks["best-checkpoint"].result == checks["last-checkpoint"].result == "fail"


@pytest.mark.parametrize(("ev", "every", "result"), [
    (evidence(), 1, "pass"),
    (evidence(periodic_checkpoints=[]), 1, "warn"),
    (evidence(periodic_checkpoints=[]), None, "skip"),
    (evidence(n=3, periodic_checkpoints=[]), 5, "skip"),
])
def test_periodic_checkpoints(ev, every, result):
    check = run_exec(ev, checkpoint_every=every)["periodic-checkpoints"]
    assert check.result == result and not check.mandatory


@pytest.mark.parametrize(("file_overrides", "result", "needle"), [
    ({}, "pass", "all 5 epochs"),
    ({"log_text": "EPOCH 1/5\nEPOCH 2/5\nTraining complete\n"}, "fail", "no EPOCH line for epoch(s) 3, 4, 5"),
    ({"metrics_json": {"epochs": [{"num": 1}, {"num": 2}]}}, "fail", "metrics.json lacks epoch(s) 3, 4, 5"),
    ({"metrics_json": {"rows": []}}, "fail", "no 'epochs' list"),
    ({"log_text": None}, "fail", "training.log is missing"),
    ({"metrics_json": None}, "fail", "metrics.json is missing"),
])
def test_logs(file_overrides, result, needle):
    check = run_exec(**file_overrides)["logs"]
    assert (check.result, check.mandatory) == (result, True)
    assert needle in check.message
    assert check.evidence == "02_baseline/logs/training.log, 02_baseline/logs/metrics.json"


def test_logs_value_counts_what_was_found():
    check = run_exec(log_text="EPOCH 1/5\nEPOCH 2/5\n")["logs"]
    assert check.value == "2/5 in log, 5/5 in metrics.json"


@pytest.mark.parametrize(("ev", "check_id", "gates", "result"), [
    (evidence(), "leakage-suspect", {}, "pass"),
    (evidence(epochs={4: {"val_acc": 1.0}}), "leakage-suspect", {}, "warn"),
    (evidence(epochs={4: {"val_acc": 0.9995}}), "leakage-suspect", {}, "warn"),
    (evidence(n=0), "leakage-suspect", {}, "skip"),
    (evidence(), "memorization-suspect", {}, "pass"),
    (evidence(epochs={5: {"train_loss": 1e-5}}), "memorization-suspect", {}, "warn"),
    (evidence(n=0), "memorization-suspect", {}, "skip"),
    (evidence(), "overfit-gap", {}, "pass"),
    (evidence(epochs={5: {"train_acc": 0.99, "val_acc": 0.80}}), "overfit-gap", {}, "warn"),
    (evidence(epochs={5: {"train_acc": 0.99, "val_acc": 0.80}}), "overfit-gap", {"overfitGap": 0.25}, "pass"),
    (evidence(n=0), "overfit-gap", {}, "skip"),
])
def test_red_flags_warn_never_fail(ev, check_id, gates, result):
    check = run_exec(ev, make_spec(gates=gates))[check_id]
    assert check.result == result and not check.mandatory
    if result != "skip":
        assert check.value is not None and check.threshold is not None


def test_overfit_gap_records_the_gap_and_threshold():
    check = run_exec(evidence(epochs={5: {"train_acc": 0.99, "val_acc": 0.80}}))["overfit-gap"]
    assert (check.value, check.threshold) == (0.19, 0.1)


# ------------------------------------------------------------ post-baseline gate

def test_baseline_gate_passes_on_a_healthy_run():
    gate = baseline_gate()
    assert (gate.gate, gate.phase) == ("post-baseline", "Baseline")
    assert gate.passed
    assert [c.id for c in gate.checks][-3:] == ["report", "decision", "reproducible"]
    assert gate.check("report").value == 7
    assert gate.check("report").evidence == "02_baseline/baseline_results.md"
    status = gate.to_status()
    assert status.passed and len(status.checks) == len(gate.checks)


def test_baseline_gate_with_only_warns_passes():
    ev = evidence(epochs={5: {"train_loss": 1.4}}, skipped_steps_total=2)  # ratio 0.3: warn
    gate = baseline_gate(ev, gpu=GpuMeasurement(util_mean=50.0))
    assert gate.passed
    assert {c.id for c in gate.checks if c.result == "warn"} == {
        "loss-decrease-ratio", "losses-finite", "gpu-utilization"}


def test_baseline_gate_mandatory_fail_fails_it():
    gate = baseline_gate(evidence(epochs={3: {"val_loss": NAN}}))
    assert not gate.passed
    assert [c.id for c in gate.failures] == ["losses-finite"]


def test_baseline_gate_non_mandatory_fail_does_not_fail_it():
    gate = baseline_gate(evidence(timings={"total_seconds": 9000.0}))
    assert gate.check("duration").result == "fail"
    assert gate.passed


def test_gpu_thresholds_from_the_spec_change_the_gate():
    gpu = GpuMeasurement(util_mean=30.0)
    assert not baseline_gate(gpu=gpu).passed
    assert baseline_gate(gpu=gpu, spec=gpu_spec(gates={"gpuUtilMin": 25, "gpuUtilWarn": 20})).passed


@pytest.mark.parametrize(("report_text", "result", "value", "needle"), [
    (report_for(evidence()), "pass", 7, "all 7 sections"),
    (REPORT.replace("## Learning Curves", "## Curves").replace("## Environment", "## Setup"), "fail", 5,
     "Learning Curves, Environment"),
    ("", "fail", 0, "missing or empty"),
    (None, "fail", 0, "missing or empty"),
])
def test_report(report_text, result, value, needle):
    check = baseline_gate(report_text=report_text).check("report")
    assert (check.result, check.value, check.mandatory) == (result, value, True)
    assert needle in check.message
    assert "Configuration" in str(check.threshold)


@pytest.mark.parametrize(("decision", "result"), [
    ("deploy-baseline", "pass"), ("optimize", "pass"), ("fix", "pass"),
    (None, "fail"), ("ship-it", "fail"),
])
def test_decision(decision, result):
    gate = baseline_gate(decision=decision)
    check = gate.check("decision")
    assert (check.result, check.value, check.mandatory) == (result, decision, True)
    assert gate.passed is (result == "pass")


def _rerun(delta: float) -> Evidence:
    return evidence(epochs={i: {"train_loss": _epoch(i)["train_loss"] + delta} for i in range(1, 6)})


@pytest.mark.parametrize(("enabled", "rerun", "result"), [
    (False, _rerun(0.0), "skip"),
    (True, _rerun(0.0), "pass"),
    (True, _rerun(0.0002), "pass"),
    (True, _rerun(0.002), "warn"),
    (True, _rerun(0.05), "fail"),
    (True, evidence(n=4), "fail"),
    (True, None, "fail"),
])
def test_reproducible(enabled, rerun, result):
    gate = baseline_gate(spec=make_spec(gates={"reproducibility": enabled}), rerun=rerun)
    check = gate.check("reproducible")
    assert check.result == result and not check.mandatory
    assert gate.passed  # optional: never blocks
    if result in ("pass", "warn"):
        assert check.threshold == 5e-4 and check.value == pytest.approx(abs(rerun.epochs[0].train_loss - 2.0),
                                                                        abs=1e-9)


@pytest.mark.parametrize(("ev", "gate_ok", "target", "decision", "needle"), [
    (evidence(), True, {"metric": "val_acc", "value": 0.75}, "deploy-baseline", "max val_acc 0.7900"),
    (evidence(), True, {"metric": "val_acc", "value": 0.9}, "optimize", "target not met"),
    (evidence(), True, {"metric": "val_loss", "value": 0.4}, "deploy-baseline", "min val_loss 0.3092"),
    (evidence(), True, {"metric": "val_loss", "value": 0.2}, "optimize", "min val_loss"),
    (evidence(), True, {"metric": "test_acc", "value": 0.75}, "deploy-baseline", "stands in"),
    (evidence(status="failed", completed=False, reason="OOM"), False, {}, "fix", "did not complete"),
    (evidence(epochs={2: {"val_loss": NAN}}), False, {}, "fix", "non-finite"),
    (evidence(epochs={5: {"train_loss": 1.95}}), True, {}, "fix", "no learning"),
    (evidence(), False, {"metric": "val_acc", "value": 0.5}, "fix", "mandatory execution check failed"),
])
def test_decide_after_baseline(ev, gate_ok, target, decision, needle):
    got, reason = decide_after_baseline(ev, gate_ok, make_spec(target=target) if target else make_spec())
    assert got == decision
    assert needle in reason


# ------------------------------------------------------------ diagnostics gate

def _diagnosis(issue: str | None, signal: str = "acc-gap") -> Diagnosis | None:
    if issue is None:
        return None
    return Diagnosis(primary_issue=issue, summary=f"{issue}: x", why="x", metric="val_acc", target_value=0.9,
                     signals=[Signal(issue=issue, signal=signal, value=0.2, threshold=0.1, message="gap 0.2")])


def _recs(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(title=f"Recommendation {i}") for i in range(1, n + 1)]


def _report(issue: str, n: int, decision: str = "optimize") -> str:
    return f"Primary issue: {issue}\n" + "".join(f"| Recommendation {i} |\n" for i in range(1, n + 1)) + decision


@pytest.mark.parametrize(("issue", "recs", "report", "results", "passed_"), [
    ("overfitting", 3, _report("overfitting", 3), ("pass", "pass", "pass"), True),
    ("overfitting", 5, _report("overfitting", 5), ("pass", "pass", "pass"), True),
    ("overfitting", 2, _report("overfitting", 2), ("pass", "warn", "pass"), True),
    ("overfitting", 6, _report("overfitting", 6), ("pass", "warn", "pass"), True),
    # the report does not say what the diagnosis found: it fails (it warned before)
    ("overfitting", 3, "a report about something else", ("pass", "pass", "fail"), False),
    ("overfitting", 3, _report("overfitting", 2), ("pass", "pass", "fail"), False),  # a recommendation left out
    ("overfitting", 3, _report("overfitting", 3, decision="finalize"), ("pass", "pass", "fail"), False),
    (None, 3, _report("", 3), ("fail", "pass", "pass"), False),
    ("overfitting", 0, _report("overfitting", 0), ("pass", "fail", "pass"), False),
    ("overfitting", 3, None, ("pass", "pass", "fail"), False),
])
def test_diagnostics(issue, recs, report, results, passed_):
    gate = evaluate_diagnostics(_diagnosis(issue), _recs(recs), report, ("optimize", "clear path"),
                                run_dir="03_diagnostics", iteration=1)
    assert (gate.gate, gate.phase, gate.iteration) == ("diagnostics-complete", "Diagnostics", 1)
    assert tuple(c.result for c in gate.checks) == results
    assert [c.id for c in gate.checks] == ["root-cause-named", "recommendations-present", "report-written"]
    assert gate.passed is passed_
    assert gate.check("recommendations-present").value == recs
    assert gate.check("recommendations-present").threshold == "3-5"
    assert gate.check("report-written").evidence == "03_diagnostics/diagnostic_report.md"


def test_root_cause_backed_by_no_rule_warns():
    """The "no rule fired" fallback names an issue without evidence for it."""
    check = evaluate_diagnostics(_diagnosis("underfitting", "no-rule-fired"), _recs(3),
                                 _report("underfitting", 3)).check("root-cause-named")
    assert check.result == "warn" and "No rule fired" in check.message
    unknown = evaluate_diagnostics(_diagnosis("overfitting"), _recs(3), _report("overfitting", 3))
    assert unknown.check("root-cause-named").result == "pass"


# ------------------------------------------------------------ optimization gate

@pytest.mark.parametrize(("text", "result"), [
    ("| run | val_acc |\n| baseline | 0.6900 |\n| iteration 1 | 0.7900 |", "pass"),
    # names the baseline, but not the figures the evidence holds
    ("| run | val_acc |\n| baseline | 0.80 |\n| iteration 1 | 0.86 |", "fail"),
    ("| iteration 1 | 0.7900 |", "fail"),
    (None, "fail"),
])
def test_optimization_comparison(text, result):
    ev, base = evidence(), evidence(n=4)  # best val_acc 0.79 and 0.71
    base = base.model_copy(update={"best_val_acc": 0.69})
    gate = evaluate_optimization(ev, files(ev, run_dir="04_optimization_1"), GOOD_GPU, make_spec(), BUDGET, text,
                                 iteration=1, baseline=base)
    check = gate.check("comparison-written")
    assert (check.result, check.mandatory) == (result, True)
    assert check.evidence == "04_optimization_1/optimization_results.md"
    assert gate.passed is (result == "pass")
    assert (gate.gate, gate.phase, gate.iteration) == ("optimization-complete", "Optimization", 1)


def test_optimization_gate_runs_the_execution_checks():
    ev = evidence(checkpoints={"best": {"loads": False}})
    gate = evaluate_optimization(ev, files(ev), GOOD_GPU, make_spec(), BUDGET, "beats the baseline: 0.79")
    assert gate.check("loss-decreased").result == "pass"
    assert [c.id for c in gate.failures] == ["best-checkpoint"]


# ------------------------------------------------------------ production-ready gate

def test_evaluation(**overrides: Any) -> TestEvaluation:
    data: dict[str, Any] = {
        "samples": 10, "accuracy": 0.9, "top5": 1.0, "loss": 0.3, "macro_f1": 0.89,
        "per_class": [{"class_name": "a", "precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 5},
                      {"class_name": "b", "precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 5}],
        "confusion_matrix": [[5, 0], [1, 4]], "classes": ["a", "b"],
        "checkpoint": "checkpoints/best_model.pt", "evaluated_at": "2024-01-01T00:00:00Z",
    }
    data.update(overrides)
    return TestEvaluation.model_validate(data)


test_evaluation.__test__ = False  # type: ignore[attr-defined]  # a factory, not a test


def export_report(artifacts: dict[str, dict[str, Any]] | None = None,
                  parity: dict[str, dict[str, Any]] | None = None) -> ExportReport:
    arts = {
        "onnx": {"format": "onnx", "kind": "onnx", "path": "export/model.onnx", "checker_ok": True},
        "torchscript": {"format": "torchscript", "kind": "torch.export", "path": "export/model.pt2",
                        "checker_ok": True},
    }
    checks = {
        "onnxruntime": {"runtime": "onnxruntime", "samples": 32, "max_abs_diff": 2e-6, "allclose": True,
                        "top1_agree": 32, "top1_agree_all": True},
        "torch.export": {"runtime": "torch.export", "samples": 32, "max_abs_diff": 0.0, "allclose": True,
                         "top1_agree": 32, "top1_agree_all": True},
    }
    for name, patch in (artifacts or {}).items():
        arts[name] = {**arts[name], **patch} if patch else None
    for name, patch in (parity or {}).items():
        checks[name] = {**checks[name], **patch} if patch else None
    return ExportReport.model_validate({
        "artifacts": [a for a in arts.values() if a], "parity": [p for p in checks.values() if p],
        "preprocessing": {"image_size": 32, "mean": [0.5], "std": [0.5], "channels": 1},
        "classes": ["a", "b"],
    })


GUIDE = """# Deployment guide
Model smallcnn, 2 classes (a, b), test accuracy 0.9; files export/model.onnx, export/model.pt2.
## Inputs
float32 NCHW
## Preprocessing
resize, normalize
## Outputs
logits
## Loading
onnxruntime.InferenceSession("model.onnx"); torch.export.load("model.pt2")
"""


def final_gate(ev: Evidence | None = None, spec: PipelineSpec | None = None, test: TestEvaluation | None = None,
               export: ExportReport | None = None, guide: str | None = GUIDE, approved: bool | None = None,
               budget_exhausted: bool = False, gpu: GpuMeasurement | None = GOOD_GPU,
               no_test: bool = False, no_export: bool = False) -> GateResult:
    ev = ev if ev is not None else evidence(n=12)
    spec = spec or gpu_spec(target={"metric": "test_acc", "value": 0.85})
    test = None if no_test else (test or test_evaluation())
    accepted = None
    if budget_exhausted:  # the pipeline accepted its best: performance_ceiling.md quotes the figures
        figure = (test.loss if spec.target.metric == "val_loss" else test.accuracy) if test else None
        accepted = AcceptedBest("the budget is spent", 0.8, "## Target\n"
                                f"{spec.target.value}\n## Best result\n0.8 {figure}\n## What was tried\nbaseline\n")
    return evaluate_finalization(
        ev, files(ev, run_dir="05_finalization"), gpu, spec, BUDGET,
        test, None if no_export else (export or export_report()),
        guide, approved, accepted,
    )


def test_production_ready_gate_passes():
    gate = final_gate()
    assert (gate.gate, gate.phase) == ("production-ready", "Finalization")
    assert gate.passed
    ids = [c.id for c in gate.checks]
    assert ids[0] == "final-training" and "final-training/completed" in ids
    assert ids[-7:] == ["test-evaluated", "target-met-on-test", "ceiling-documented", "exported",
                        "export-parity", "deployment-guide", "approval"]
    assert gate.check("ceiling-documented").result == "skip"
    assert gate.check("final-training/best-checkpoint").evidence == "05_finalization/checkpoints/best_model.pt"


@pytest.mark.parametrize(("ev", "gpu", "result", "passed_"), [
    (evidence(n=12), GOOD_GPU, "pass", True),
    (evidence(n=12), GpuMeasurement(util_mean=50.0), "warn", True),
    (evidence(n=12, timings={"total_seconds": 99999.0}), GOOD_GPU, "warn", True),  # non-mandatory fail
    (evidence(n=12, status="failed", completed=False), GOOD_GPU, "fail", False),
])
def test_final_training(ev, gpu, result, passed_):
    gate = final_gate(ev, gpu=gpu)
    check = gate.check("final-training")
    assert (check.result, check.mandatory) == (result, True)
    assert gate.passed is passed_
    if result == "fail":
        assert "completed" in check.message and gate.check("final-training/completed").result == "fail"


@pytest.mark.parametrize(("test", "no_test", "result", "needle"), [
    (None, False, "pass", "Test accuracy 0.9000 on 10"),
    (None, True, "fail", "not evaluated"),
    (test_evaluation(per_class=[]), False, "fail", "no per-class metrics"),
    (test_evaluation(confusion_matrix=[[5, 0], [0, 4]]), False, "fail", "does not add up"),
    (test_evaluation(confusion_matrix=[]), False, "fail", "no confusion matrix"),
    (test_evaluation(accuracy=NAN), False, "fail", "accuracy is nan"),
])
def test_test_evaluated(test, no_test, result, needle):
    check = final_gate(test=test, no_test=no_test).check("test-evaluated")
    assert (check.result, check.mandatory) == (result, True)
    assert needle in check.message
    if result == "pass":
        assert check.value == 0.9 and check.evidence == "05_finalization/test_evaluation.json"


@pytest.mark.parametrize(("target", "accuracy", "exhausted", "result", "value"), [
    ({"metric": "test_acc", "value": 0.85}, 0.9, False, "pass", 0.9),
    ({"metric": "test_acc", "value": 0.95}, 0.9, False, "fail", 0.9),
    ({"metric": "test_acc", "value": 0.95}, 0.9, True, "warn", 0.9),
    # a validation target is judged on the test split: val_acc 0.95 meets 0.95, test accuracy 0.9 does not
    ({"metric": "val_acc", "value": 0.95}, 0.9, False, "fail", 0.9),
    ({"metric": "val_acc", "value": 0.85}, 0.9, False, "pass", 0.9),
    ({"metric": "val_acc", "value": 0.95}, 0.9, True, "warn", 0.9),
    # val_loss: the test loss (0.3), not the best val loss (0.0573)
    ({"metric": "val_loss", "value": 0.1}, 0.9, False, "fail", 0.3),
    ({"metric": "val_loss", "value": 0.5}, 0.9, False, "pass", 0.3),
])
def test_target_met_on_test(target, accuracy, exhausted, result, value):
    ev = evidence(n=12, epochs={12: {"val_acc": 0.95}})
    gate = final_gate(ev, spec=make_spec(target=target), test=test_evaluation(accuracy=accuracy),
                      budget_exhausted=exhausted)
    check = gate.check("target-met-on-test")
    assert (check.result, check.value, check.threshold) == (result, value, target["value"])
    assert gate.passed is (result != "fail")
    assert "test split" in check.message
    if target["metric"] != "test_acc":
        assert f"set on {target['metric']}" in check.message
    if exhausted:
        assert "performance_ceiling.md" in check.message


@pytest.mark.parametrize("metric", ["test_acc", "val_acc", "val_loss"])
def test_target_on_test_without_evaluation_fails(metric):
    """No test figure, no pass, even when the validation figure meets the target."""
    spec = make_spec(target={"metric": metric, "value": 0.01 if metric == "val_loss" else 0.1})
    check = final_gate(spec=spec, no_test=True).check("target-met-on-test")
    assert check.result == "fail" and check.value is None and "test split" in check.message
    no_loss = final_gate(spec=make_spec(target={"metric": "val_loss", "value": 5.0}),
                         test=test_evaluation(loss=None)).check("target-met-on-test")
    assert no_loss.result == "fail" and "test loss" in no_loss.message


NO_TS = {"torchscript": None}  # export_report(): a None patch drops the entry


@pytest.mark.parametrize(("formats", "artifacts", "parity", "no_export", "result", "needle"), [
    (["onnx", "torchscript"], {}, {}, False, "pass", "model.onnx"),
    (["onnx"], NO_TS, {"torch.export": None}, False, "pass", "onnx (export/model.onnx)"),
    (["onnx", "torchscript"], NO_TS, {}, False, "fail", "torchscript: not written"),
    (["onnx", "torchscript"], {"onnx": {"checker_ok": False}}, {}, False, "fail", "onnx.checker rejected"),
    (["onnx", "torchscript"], {"torchscript": {"checker_ok": False}}, {}, False, "fail", "did not load back"),
    (["onnx", "torchscript"], {"onnx": {"error": "unsupported op"}}, {}, False, "fail", "unsupported op"),
    (["onnx", "torchscript"], {"onnx": {"path": None}}, {}, False, "fail", "onnx: no file"),
    (["onnx", "torchscript"], {}, {}, True, "fail", "Nothing was exported"),
])
def test_exported(formats, artifacts, parity, no_export, result, needle):
    spec = make_spec(target={"metric": "test_acc", "value": 0.85}, finalization={"export": formats})
    gate = final_gate(spec=spec, export=export_report(artifacts, parity), no_export=no_export)
    check = gate.check("exported")
    assert (check.result, check.mandatory) == (result, True)
    assert needle in check.message
    assert check.threshold == ", ".join(formats)
    if result == "pass":
        assert check.value == ", ".join(formats) and gate.passed


@pytest.mark.parametrize(("parity", "result", "value", "needle"), [
    ({}, "pass", 2e-6, "onnxruntime (32 inputs)"),
    ({"onnxruntime": {"allclose": False, "max_abs_diff": 0.02}}, "fail", 0.02, "outputs differ"),
    ({"onnxruntime": {"top1_agree_all": False, "top1_agree": 30}}, "fail", 2e-6, "differs on 2 of 32"),
    ({"onnxruntime": {"error": "InvalidGraph"}}, "fail", 2e-6, "InvalidGraph"),
    ({"onnxruntime": None}, "fail", 0.0, "onnx: no parity check"),
    ({"torch.export": None}, "fail", 2e-6, "torchscript: no parity check"),
])
def test_export_parity(parity, result, value, needle):
    check = final_gate(export=export_report(parity=parity)).check("export-parity")
    assert (check.result, check.mandatory, check.value) == (result, True, value)
    assert needle in check.message
    assert check.threshold == "rtol 0.001, atol 1e-05, top-1 agrees on every input"


@pytest.mark.parametrize(("guide", "result", "needle"), [
    (GUIDE, "pass", "covers"),
    (GUIDE.replace("## Preprocessing", "## Steps"), "fail", "Preprocessing"),
    (GUIDE.replace('torch.export.load("model.pt2")', "the other file").replace("export/model.pt2", "export/m.t"),
     "warn", "torchscript"),
    (None, "fail", "missing or empty"),
    # the facts a reader acts on must be this run's
    (GUIDE.replace("test accuracy 0.9", "test accuracy 0.97"), "fail", "test accuracy 0.9000"),
    (GUIDE.replace("export/model.onnx", "model.onnx"), "fail", "export/model.onnx"),
    (GUIDE.replace("(a, b)", "(a)"), "fail", "class 'b'"),
])
def test_deployment_guide(guide, result, needle):
    export = export_report(artifacts={"torchscript": {"path": "export/m.t"}}) if "m.t" in (guide or "") else None
    check = final_gate(guide=guide, export=export).check("deployment-guide")
    assert (check.result, check.mandatory) == (result, True)
    assert needle in check.message


@pytest.mark.parametrize(("required", "approved", "result", "message"), [
    (False, None, "skip", "approval not required (spec.approval.required is false)"),
    (True, True, "pass", "A person approved the result."),
    (True, None, "fail", AWAITING_APPROVAL),
    (True, False, "fail", AWAITING_APPROVAL),
])
def test_approval(required, approved, result, message):
    spec = make_spec(target={"metric": "test_acc", "value": 0.85}, approval={"required": required})
    gate = final_gate(spec=spec, approved=approved)
    check = gate.check("approval")
    assert (check.result, check.message, check.mandatory) == (result, message, True)
    assert gate.passed is (result != "fail")
    if result == "fail":
        assert AWAITING_APPROVAL == "awaiting approval"
        assert [c.id for c in gate.failures] == ["approval"]


# ------------------------------------------------------------ reproducibility gate (Planning)

def environment(**overrides: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python_version": "3.11.7", "torch_version": "2.3.1", "ray_version": "2.34.0",
        "cuda_version": "12.1", "cuda_available": True, "gpu_count": 1,
        "gpus": [{"index": 0, "name": "NVIDIA H100", "memory_total_bytes": 80 * 2**30}],
        "nvidia_driver_version": "550.54", "deterministic_algorithms": True,
        "code_version": {"source": "git", "git_commit": "0123456789abcdef", "git_dirty": False,
                         "package_version": "0.1.0"},
        "seeds": {"python": 42, "numpy": 42, "torch": 42, "rank_offset": 0},
        "notes": {},
    }
    env.update(overrides)
    return env


CPU_ENV = {"cuda_version": None, "cuda_available": False, "gpu_count": 0, "gpus": None,
           "nvidia_driver_version": None,
           "notes": {"gpus": "no CUDA GPU visible", "nvidia_driver_version": "NVML unavailable"}}


def data_report(**overrides: Any) -> DataReport:
    data: dict[str, Any] = {
        "source": "builtin:digits", "root": "/data/digits", "layout": "split", "seed": 42,
        "classes": ["0", "1"],
        "counts": {"train": {"0": 80, "1": 80}, "val": {"0": 10, "1": 10}, "test": {"0": 10, "1": 10}},
        "requested_fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
        "actual_fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
        "total_samples": 200,
    }
    data.update(overrides)
    return DataReport.model_validate(data)


def preflight(**overrides: Any) -> PreflightReport:
    data: dict[str, Any] = {
        "ok": True, "model": "smallcnn", "num_classes": 2, "batch_shape": [64, 3, 32, 32],
        "labels_in_range": True, "loss": 0.69, "loss_finite": True, "grads_finite": True,
        "splits": {"train": {"ok": True, "samples": 160}, "val": {"ok": True, "samples": 20}},
    }
    data.update(overrides)
    return PreflightReport.model_validate(data)


def planning(env: dict | None = None, errors: list[str] | None = None, report: DataReport | None = None,
             pre: PreflightReport | None = None, spec: PipelineSpec | None = None,
             no_report: bool = False, no_preflight: bool = False) -> GateResult:
    return evaluate_planning(
        environment() if env is None else env, errors or [],
        None if no_report else (report or data_report()), None if no_preflight else (pre or preflight()),
        spec or make_spec(), run_dir="01_planning",
    )


def test_planning_gate_passes():
    gate = planning()
    assert (gate.gate, gate.phase) == ("reproducibility", "Planning")
    assert [c.id for c in gate.checks] == [
        "seeds-fixed", "environment-documented", "config-valid", "data-reachable",
        "split-proportions", "split-integrity", "samples-finite", "preflight"]
    assert all(c.result == "pass" and c.mandatory for c in gate.checks)
    assert gate.check("seeds-fixed").evidence == "01_planning/environment.json"
    assert gate.check("preflight").evidence == "01_planning/preflight.json"
    for c in gate.checks:
        assert c.threshold is not None and c.value is not None and c.message, c.id


@pytest.mark.parametrize(("env", "spec", "result", "needle"), [
    (environment(), make_spec(), "pass", "seeded with 42"),
    (environment(), make_spec(seed=7), "fail", "python=42"),
    (environment(seeds={"python": 42, "numpy": 1, "torch": 42}), make_spec(), "fail", "numpy=1"),
    (environment(seeds={"python": 42, "numpy": 42, "torch": 42, "cuda": 3}), make_spec(), "fail", "cuda=3"),
    (environment(seeds=None), make_spec(), "fail", "no seeds"),
    ({}, make_spec(), "fail", "no seeds"),
])
def test_seeds_fixed(env, spec, result, needle):
    check = planning(env=env, spec=spec).check("seeds-fixed")
    assert check.result == result
    assert needle in check.message
    assert str(spec.seed) in str(check.threshold)


def _without(env: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k != key}


@pytest.mark.parametrize(("env", "spec", "result", "needle"), [
    (environment(), make_spec(), "pass", "NVIDIA H100 (80 GiB)"),
    (environment(**CPU_ENV), make_spec(), "pass", "CPU only"),
    (environment(**CPU_ENV), make_spec(resources={"gpusPerWorker": 1}), "warn", "GPUs requested"),
    (environment(ray_version=None, notes={"ray_version": "ray is not installed"}), make_spec(), "pass",
     "no Ray"),
    (environment(ray_version=None, notes={"ray_version": "ray is not installed"}),
     make_spec(runtime={"type": "ray"}), "fail", "ray_version is null"),
    (environment(torch_version=None, notes={"torch_version": "torch is not importable"}), make_spec(), "fail",
     "torch is not importable"),
    (_without(environment(), "cuda_version"), make_spec(), "fail", "not recorded: cuda_version"),
    (_without(environment(), "ray_version"), make_spec(), "fail", "not recorded: ray_version"),
    (environment(code_version={"git_commit": None, "package_version": "0.1.0"},
                 notes={"code_version.git_commit": "not a usable git checkout"}), make_spec(), "pass",
     "no git commit"),
    (environment(code_version={"git_commit": None, "package_version": None}), make_spec(), "fail",
     "no code version"),
    ({}, make_spec(), "fail", "missing or empty"),
])
def test_environment_documented(env, spec, result, needle):
    check = planning(env=env, spec=spec).check("environment-documented")
    assert (check.result, check.mandatory) == (result, True)
    assert needle in check.message


@pytest.mark.parametrize(("errors", "result"), [([], "pass"), (["train.lr: must be > 0"], "fail")])
def test_config_valid(errors, result):
    check = planning(errors=errors).check("config-valid")
    assert (check.result, check.value) == (result, len(errors))
    assert check.evidence == "01_planning/training_config.yaml"


@pytest.mark.parametrize(("overrides", "no_report", "result", "needle"), [
    ({}, False, "pass", "2 classes, 80-80 training samples"),
    ({}, True, "fail", "did not open"),
    ({"classes": ["0"], "counts": {"train": {"0": 80}}}, False, "fail", "at least 2"),
    ({"counts": {"train": {"0": 80, "1": 0}}}, False, "fail", "no training sample: 1"),
    ({"class_problems": [{"kind": "missing", "class_name": "1", "split": "test"}]}, False, "warn",
     "missing 1 in test"),
])
def test_data_reachable(overrides, no_report, result, needle):
    check = planning(report=data_report(**overrides), no_report=no_report).check("data-reachable")
    assert check.result == result
    assert needle in check.message


@pytest.mark.parametrize(("overrides", "result", "value"), [
    ({}, "pass", 0.0),
    ({"actual_fractions": {"train": 0.785, "val": 0.11, "test": 0.105}}, "pass", 0.015),
    ({"actual_fractions": {"train": 0.82, "val": 0.09, "test": 0.09}}, "pass", 0.02),
    ({"actual_fractions": {"train": 0.75, "val": 0.15, "test": 0.1}}, "fail", 0.05),
    ({"layout": "presplit", "requested_fractions": None}, "skip", None),
])
def test_split_proportions(overrides, result, value):
    check = planning(report=data_report(**overrides)).check("split-proportions")
    assert (check.result, check.value) == (result, value)
    if result == "skip":
        assert "pre-split" in check.message
    else:
        assert check.threshold == 0.02


def test_split_integrity():
    dup = {"hash": "h", "files": [{"split": "train", "path": "0/a.png"}, {"split": "val", "path": "0/b.png"}]}
    check = planning(report=data_report(duplicates_across_splits=[dup])).check("split-integrity")
    assert (check.result, check.value, check.threshold) == ("fail", 1, 0)
    assert "train/0/a.png = val/0/b.png" in check.message
    assert planning().check("split-integrity").result == "pass"


@pytest.mark.parametrize(("overrides", "result", "needle"), [
    ({}, "pass", "All 200 samples"),
    ({"nonfinite_samples": [{"path": "1/x.npy", "split": "train", "nan_count": 3, "inf_count": 0}]}, "fail",
     "train/1/x.npy (3 NaN, 0 Inf)"),
    ({"unreadable_files": [{"path": "0/bad.png", "error": "truncated"}]}, "fail", "0/bad.png (truncated)"),
])
def test_samples_finite(overrides, result, needle):
    check = planning(report=data_report(**overrides)).check("samples-finite")
    assert check.result == result
    assert needle in check.message


@pytest.mark.parametrize(("overrides", "no_preflight", "result", "needle"), [
    ({}, False, "pass", "Batch 64x3x32x32 through smallcnn"),
    ({}, True, "fail", "did not run"),
    ({"ok": False, "loss": None, "loss_finite": False, "error": "label 12 out of range"}, False, "fail",
     "label 12 out of range"),
    ({"ok": False, "grads_finite": False, "params_with_nonfinite_grad": ["fc.weight"]}, False, "fail",
     "fc.weight"),
    ({"ok": False, "splits": {"val": {"ok": False, "error": "empty loader"}}}, False, "fail", "empty loader"),
    ({"ok": False}, False, "fail", "not ok"),
])
def test_preflight(overrides, no_preflight, result, needle):
    check = planning(pre=preflight(**overrides), no_preflight=no_preflight).check("preflight")
    assert (check.result, check.mandatory) == (result, True)
    assert needle in check.message


def test_planning_gate_fails_on_any_mandatory_check():
    gate = planning(report=data_report(unreadable_files=[{"path": "x.png", "error": "bad"}]))
    assert not gate.passed and [c.id for c in gate.failures] == ["samples-finite"]


def test_planning_gate_passes_with_a_skip():
    gate = planning(report=data_report(layout="presplit", requested_fractions=None))
    assert gate.check("split-proportions").result == "skip" and gate.passed


def test_a_custom_tasks_data_is_reachable_by_its_split_counts_not_classes() -> None:
    from trainpipe_operator.gates.planning import check_samples_reachable
    from trainpipe_trainer.contract.data_report import DataReport

    def report(train: int, val: int) -> DataReport:
        return DataReport(source="rows.csv", root=".", layout="split", classes=[],
                          counts={"train": {"rows": train}, "val": {"rows": val}, "test": {"rows": 4}},
                          actual_fractions={}, total_samples=train + val + 4)

    assert check_samples_reachable(report(32, 4), "data_report.json").result == "pass"
    empty = check_samples_reachable(report(32, 0), "data_report.json")
    assert empty.result == "fail" and "No samples in val" in empty.message
    assert check_samples_reachable(None, "data_report.json").result == "fail"
