"""Phase 3 / Phase 4 logic (operator/trainpipe_operator/diagnosis): every issue
from crafted evidence, the priority order, recommendations and their ranking,
applying them, both decisions (val_loss direction included) and the two
reports. Pure: no torch."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from trainpipe_operator.diagnosis import (
    ConfigChange,
    Diagnosis,
    IterationResult,
    Recommendation,
    TrainSettings,
    apply_recommendations,
    decide_after_diagnostics,
    decide_after_optimization,
    diagnose,
    plan_changes,
    recommend,
    render_diagnostic_report,
    render_optimization_results,
)
from trainpipe_operator.diagnosis.issues import ISSUES, Measurements, Signal, last_error_line
from trainpipe_operator.diagnosis.recommendations import rank_key
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_trainer.contract.data_report import (
    DataReport,
    DuplicateGroup,
    FileRef,
    NonFiniteSample,
)
from trainpipe_trainer.contract.evidence import EpochRecord, Evidence, ExceptionInfo, Timings
from trainpipe_trainer.contract.job_config import JobConfig

NAN = float("nan")

# -- factories ----------------------------------------------------------------


def line(start: float, end: float, n: int) -> list[float]:
    return [start + (end - start) * i / (n - 1) for i in range(n)]


def make_evidence(
    train_loss: list[float],
    val_loss: list[float],
    train_acc: list[float],
    val_acc: list[float],
    *,
    skipped: list[int] | None = None,
    grad_norms: list[float] | None = None,
    status: str = "completed",
    exception: tuple[str, str] | None = None,
    gpu_util: float | None = None,
    seconds: float = 10.0,
    **extra: Any,
) -> Evidence:
    """Evidence shaped as the trainer writes it (initial/final/best from the epochs)."""
    n = len(train_loss)
    epochs = [
        EpochRecord(
            num=i + 1, train_loss=train_loss[i], val_loss=val_loss[i], train_acc=train_acc[i],
            val_acc=val_acc[i], lr=1e-3, epoch_seconds=seconds, eta_seconds=0.0,
            samples_per_second=1000.0,
            loss_gap=(val_loss[i] - train_loss[i]) / train_loss[i] if train_loss[i] else 0.0,
            acc_gap=train_acc[i] - val_acc[i],
            skipped_steps=skipped[i] if skipped else 0,
            grad_norm_mean=grad_norms[i] if grad_norms else 1.0,
        )
        for i in range(n)
    ]
    finite_val = [e for e in epochs if math.isfinite(e.val_loss)]
    best = min(finite_val, key=lambda e: e.val_loss) if finite_val else None
    fields: dict[str, Any] = {
        "job_name": "baseline", "config_hash": "abc", "status": status,
        "completed": status in ("completed", "early_stopped"), "epochs_planned": n, "epochs": epochs,
        "initial_train_loss": train_loss[0] if n else None,
        "final_train_loss": train_loss[-1] if n else None,
        "best_val_loss": best.val_loss if best else None,
        "best_val_acc": max(val_acc) if n else None,
        "best_epoch": best.num if best else None,
        "skipped_steps_total": sum(skipped) if skipped else 0,
        "gpu_util_mean": gpu_util,
        "timings": Timings(total_seconds=seconds * n, epoch_seconds=[seconds] * n),
    }
    if exception is not None:
        fields["exception"] = ExceptionInfo(type=exception[0], message=exception[1], traceback="...")
        fields["reason"] = f"{exception[0]}: {exception[1]}"
    fields.update(extra)
    return Evidence(**fields)


N = 10


def underfit_evidence(**kw: Any) -> Evidence:
    """Both accuracies ~0.7-0.73 against a 0.9 target, small gap, loss falling."""
    return make_evidence(line(2.0, 0.7, N), line(2.0, 0.8, N), line(0.3, 0.73, N), line(0.3, 0.70, N), **kw)


def overfit_evidence(**kw: Any) -> Evidence:
    """Train acc 0.99, val 0.75: gap 0.24 > 0.1."""
    return make_evidence(line(2.0, 0.1, N), line(2.0, 0.9, N), line(0.3, 0.99, N), line(0.3, 0.75, N), **kw)


def stall_evidence(**kw: Any) -> Evidence:
    """Train loss 2.30 -> 2.25 (2% decrease), accuracies at chance."""
    return make_evidence(line(2.30, 2.25, N), line(2.31, 2.27, N), line(0.10, 0.12, N), line(0.10, 0.11, N), **kw)


def val_loss_rising_evidence() -> Evidence:
    """Gap small (0.02) but val loss turns up over the last epochs while train falls."""
    return make_evidence(
        [2.0, 1.5, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6],
        [2.0, 1.6, 1.3, 1.1, 1.0, 1.05, 1.1, 1.2],
        line(0.3, 0.80, 8), line(0.3, 0.78, 8),
    )


def unstable_evidence(**kw: Any) -> Evidence:
    """Val acc jumps +-0.1 between epochs in the second half of training."""
    val = [0.30, 0.40, 0.50, 0.55, 0.70, 0.50, 0.72, 0.52, 0.74, 0.54]
    return make_evidence(line(2.0, 0.8, N), line(2.0, 0.9, N), [v + 0.02 for v in val], val, **kw)


def good_evidence(**kw: Any) -> Evidence:
    """Meets the 0.9 target, nothing wrong with the model."""
    return make_evidence(line(1.0, 0.2, N), line(1.0, 0.3, N), line(0.6, 0.96, N), line(0.6, 0.95, N), **kw)


def make_spec(**overrides: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"target": {"metric": "val_acc", "value": 0.9},
                                        "data": {"source": "builtin:digits"}, **overrides})


def make_report(duplicates: int = 0, nonfinite: int = 0) -> DataReport:
    return DataReport(
        source="builtin:digits", root="/data", layout="split", seed=1, classes=["a", "b"],
        requested_fractions=None, files_scanned=20, split_fingerprint="fp",
        counts={"train": {"a": 8, "b": 8}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}},
        actual_fractions={"train": 0.8, "val": 0.1, "test": 0.1}, total_samples=20,
        duplicates_across_splits=[
            DuplicateGroup(hash=f"h{i}", files=[FileRef(split="train", path=f"a/{i}.png"),
                                                FileRef(split="val", path=f"a/{i}v.png")])
            for i in range(duplicates)
        ],
        nonfinite_samples=[
            NonFiniteSample(path=f"b/{i}.npy", split="train", nan_count=1, inf_count=0) for i in range(nonfinite)
        ],
    )


def signal_names(d: Diagnosis) -> set[str]:
    return {s.signal for s in d.signals}


def make_diagnosis(metric: str = "val_acc", value: float | None = 0.7, target: float = 0.9, **kw: Any) -> Diagnosis:
    fields: dict[str, Any] = {
        "primary_issue": "underfitting", "summary": "underfitting: crafted",
        "signals": [Signal(issue="underfitting", signal="both-below-target", value=value, threshold=target)],
        "metric": metric, "lower_is_better": metric.endswith("_loss"), "metric_value": value,
        "target_value": target, "measurements": Measurements(epochs=10),
    }
    fields.update(kw)
    return Diagnosis(**fields)


def make_rec(rid: str, gain: float, impact: str = "medium", effort: str = "low",
             changes: list[ConfigChange] | None = None, issue: str = "underfitting") -> Recommendation:
    return Recommendation(
        id=rid, issue=issue, title=rid, rationale="crafted",  # type: ignore[arg-type]
        changes=[ConfigChange(path="train.epochs", old=20, new=40)] if changes is None else changes,
        expected_impact=impact, expected_gain=gain, effort=effort,  # type: ignore[arg-type]
        requires_human=changes == [],
    )


# -- each issue ---------------------------------------------------------------


def test_underfitting_both_below_target_and_close() -> None:
    d = diagnose(underfit_evidence(), make_spec())
    assert d.primary_issue == "underfitting"
    assert signal_names(d) == {"both-below-target"}
    assert d.metric_value == pytest.approx(0.70)
    assert not d.infrastructure_broken


def test_overfitting_from_accuracy_gap_above_spec_threshold() -> None:
    d = diagnose(overfit_evidence(), make_spec())
    assert d.primary_issue == "overfitting"
    gap = next(s for s in d.signals if s.signal == "acc-gap")
    assert gap.value == pytest.approx(0.24)
    assert gap.threshold == 0.1
    # the threshold is the spec's: a looser gate does not fire on the same gap
    loose = diagnose(overfit_evidence(), make_spec(gates={"overfitGap": 0.3}))
    assert "acc-gap" not in signal_names(loose)


def test_overfitting_from_val_loss_rising_while_train_falls() -> None:
    d = diagnose(val_loss_rising_evidence(), make_spec())
    assert "val-loss-rising" in signal_names(d)
    assert "acc-gap" not in signal_names(d)
    assert d.primary_issue == "overfitting"


def test_overfitting_when_train_meets_target_but_val_does_not() -> None:
    ev = make_evidence(line(2.0, 0.3, N), line(2.0, 0.5, N), line(0.3, 0.95, N), line(0.3, 0.87, N))
    d = diagnose(ev, make_spec())
    assert signal_names(d) == {"train-meets-target"}
    assert d.primary_issue == "overfitting"


def test_convergence_stall_when_loss_falls_less_than_5_percent() -> None:
    d = diagnose(stall_evidence(), make_spec())
    assert d.primary_issue == "convergence-stall"
    flat = next(s for s in d.signals if s.signal == "loss-flat")
    assert flat.value == pytest.approx((2.30 - 2.25) / 2.30, abs=1e-4)
    assert flat.threshold == 0.05


@pytest.mark.parametrize(
    ("kwargs", "signal"),
    [
        ({"skipped": [0, 0, 3, 0, 0, 0, 0, 0, 0, 0]}, "skipped-steps"),
        ({"grad_norms": [1.0, 2.0, 5.0, 30.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}, "grad-norm-exploding"),
        ({"grad_norms": [1.0, 2.0, NAN, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}, "grad-norm-non-finite"),
    ],
)
def test_nan_loss_from_numerical_signals(kwargs: dict[str, Any], signal: str) -> None:
    d = diagnose(underfit_evidence(**kwargs), make_spec())
    assert signal in signal_names(d)
    assert d.primary_issue == "nan-loss"
    assert not d.infrastructure_broken


def test_nan_loss_from_non_finite_epoch_loss() -> None:
    tl = line(2.0, 0.7, N)
    tl[6] = NAN
    ev = make_evidence(tl, line(2.0, 0.8, N), line(0.3, 0.73, N), line(0.3, 0.70, N))
    d = diagnose(ev, make_spec())
    assert d.primary_issue == "nan-loss"
    bad = next(s for s in d.signals if s.signal == "non-finite-loss")
    assert bad.value == 1


def test_nan_loss_from_diverging_train_loss() -> None:
    ev = make_evidence(line(1.0, 4.0, N), line(1.0, 4.0, N), line(0.3, 0.2, N), line(0.3, 0.2, N))
    d = diagnose(ev, make_spec())
    assert "train-loss-diverging" in signal_names(d)
    assert d.primary_issue == "nan-loss"


def test_non_finite_training_error_is_numerical_not_infrastructure() -> None:
    ev = make_evidence(
        [2.0, 1.8], [2.0, 1.9], [0.3, 0.35], [0.3, 0.33], status="failed",
        exception=("NonFiniteTrainingError", "10 consecutive steps with a non-finite loss"),
    )
    d = diagnose(ev, make_spec())
    assert d.primary_issue == "nan-loss"
    assert "non-finite-training-error" in signal_names(d)
    assert d.run_failed and not d.infrastructure_broken


@pytest.mark.parametrize(
    ("exception", "primary", "signal"),
    [
        (("FileNotFoundError", "[Errno 2] No such file: /data/train"), "crash", "crash"),
        (("RuntimeError", "DataLoader worker (pid 42) is killed by signal"), "crash", "crash"),
        (("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"), "resource-inefficiency", "crash-oom"),
    ],
)
def test_non_numerical_crash_is_infrastructure_broken(
    exception: tuple[str, str], primary: str, signal: str
) -> None:
    ev = make_evidence([], [], [], [], status="failed", exception=exception)
    d = diagnose(ev, make_spec())
    assert d.infrastructure_broken
    assert d.primary_issue == primary
    assert signal in signal_names(d)
    assert d.crash is not None and exception[0] in d.crash


CRASH_LOG = """2026-01-01 10:00:00,000 INFO EPOCH 1/5 train_loss=1.2000
2026-01-01 10:00:05,000 ERROR Training failed
Traceback (most recent call last):
  File "loop.py", line 10, in fit
    batch = next(it)
KeyError: 'label'
"""


def test_crash_quotes_the_logs_last_error() -> None:
    """A crash that is neither numerical nor OOM is a crash (not data-quality),
    and the diagnosis quotes the last error the log holds."""
    ev = make_evidence([], [], [], [], status="failed", exception=("RuntimeError", "worker died"))
    d = diagnose(ev, make_spec(), log_text=CRASH_LOG)
    assert d.primary_issue == "crash" and d.infrastructure_broken
    assert d.last_error == "KeyError: 'label'"
    assert "KeyError: 'label'" in d.summary
    recs = recommend(d, TrainSettings(), make_spec())
    assert recs[0].id == "crash/fix-crash" and "KeyError: 'label'" in recs[0].rationale
    decision, reason = decide_after_diagnostics(d, recs)
    assert decision == "baseline-again" and "KeyError" in reason


@pytest.mark.parametrize(("log", "expected"), [
    (CRASH_LOG, "KeyError: 'label'"),
    ("INFO ok\n2026 ERROR could not open /data/x\nINFO shutting down\n", "2026 ERROR could not open /data/x"),
    ("INFO all fine\n", None),
    (None, None),
])
def test_last_error_line(log, expected) -> None:
    assert last_error_line(log) == expected


def test_interrupted_run_is_infrastructure_broken() -> None:
    ev = underfit_evidence(status="interrupted", reason="SIGTERM")
    d = diagnose(ev, make_spec())
    assert d.infrastructure_broken
    assert "run-interrupted" in signal_names(d)


def test_data_quality_leak_from_near_perfect_val_accuracy() -> None:
    ev = make_evidence(line(1.0, 0.01, N), line(1.0, 0.01, N), line(0.6, 1.0, N), line(0.6, 0.9995, N))
    d = diagnose(ev, make_spec(target={"metric": "val_loss", "value": 0.001}))
    assert d.primary_issue == "data-quality"
    assert d.leak_suspected
    assert "val-acc-near-perfect" in signal_names(d)


def test_data_quality_from_data_report_duplicates_and_non_finite_samples() -> None:
    d = diagnose(good_evidence(), make_spec(), data_report=make_report(duplicates=3, nonfinite=2))
    assert d.primary_issue == "data-quality"
    values = {s.signal: s.value for s in d.signals}
    assert values["duplicates-across-splits"] == 3
    assert values["non-finite-samples"] == 2
    clean = diagnose(good_evidence(), make_spec(), data_report=make_report())
    assert clean.primary_issue != "data-quality"


def test_data_quality_from_unstable_val_accuracy() -> None:
    d = diagnose(unstable_evidence(), make_spec())
    assert "val-acc-unstable" in signal_names(d)
    smooth = diagnose(underfit_evidence(), make_spec())
    assert "val-acc-unstable" not in signal_names(smooth)


def test_resource_inefficiency_below_spec_gpu_util() -> None:
    d = diagnose(good_evidence(), make_spec(), gpu_util=35.0)
    assert d.primary_issue == "resource-inefficiency"
    util = next(s for s in d.signals if s.signal == "gpu-util-low")
    assert (util.value, util.threshold) == (35.0, 60)
    assert diagnose(good_evidence(), make_spec(), gpu_util=75.0).primary_issue != "resource-inefficiency"
    # falls back to the evidence's own measurement
    assert diagnose(good_evidence(gpu_util=20.0), make_spec()).primary_issue == "resource-inefficiency"


def test_val_loss_target_uses_loss_direction() -> None:
    spec = make_spec(target={"metric": "val_loss", "value": 0.5})
    d = diagnose(underfit_evidence(), spec)
    assert d.metric == "val_loss" and d.lower_is_better
    assert d.metric_value == pytest.approx(0.8)  # best = lowest val loss
    assert "both-below-target" in signal_names(d)
    met = diagnose(underfit_evidence(), make_spec(target={"metric": "val_loss", "value": 0.9}))
    assert "both-below-target" not in signal_names(met)


# -- priority -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("evidence", "kwargs", "primary", "secondary"),
    [
        # nan-loss > overfitting
        (lambda: overfit_evidence(skipped=[0, 1] + [0] * 8), {}, "nan-loss", "overfitting"),
        # data-quality (leak) > convergence-stall
        (stall_evidence, {"data_report": make_report(duplicates=1)}, "data-quality", "convergence-stall"),
        # convergence-stall > underfitting
        (stall_evidence, {}, "convergence-stall", "underfitting"),
        # overfitting > underfitting
        (val_loss_rising_evidence, {}, "overfitting", "underfitting"),
        # underfitting > data-quality (unstable val: weak)
        (unstable_evidence, {}, "underfitting", "data-quality"),
        # data-quality (unstable) > resource-inefficiency
        (lambda: make_evidence(line(1.0, 0.2, N), line(1.0, 0.3, N),
                               [0.93, 0.94, 0.95, 0.96, 0.99, 0.96, 0.99, 0.96, 0.99, 0.96],
                               [0.91, 0.92, 0.93, 0.94, 0.99, 0.92, 0.99, 0.92, 0.99, 0.92]),
         {"gpu_util": 30.0}, "data-quality", "resource-inefficiency"),
        # a non-numerical crash > nan-loss
        (lambda: underfit_evidence(skipped=[1] + [0] * 9, status="failed",
                                   exception=("FileNotFoundError", "missing shard")),
         {}, "crash", "nan-loss"),
    ],
)
def test_priority_when_several_issues_fire(evidence: Any, kwargs: dict[str, Any], primary: str, secondary: str) -> None:
    d = diagnose(evidence(), make_spec(), **kwargs)
    assert d.primary_issue == primary
    assert secondary in d.secondary_issues


def test_signal_rank_order_matches_documented_priority() -> None:
    def rank(issue: str, signal: str) -> float:
        return Signal(issue=issue, signal=signal).rank  # type: ignore[arg-type]

    order = [
        rank("crash", "crash"), rank("nan-loss", "skipped-steps"),
        rank("data-quality", "val-acc-near-perfect"), rank("posterior-collapse", "kl-collapsed"),
        rank("convergence-stall", "loss-flat"),
        rank("overfitting", "acc-gap"), rank("underfitting", "both-below-target"),
        rank("data-quality", "val-acc-unstable"), rank("resource-inefficiency", "gpu-util-low"),
    ]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert set(ISSUES) == {"crash", "nan-loss", "data-quality", "posterior-collapse", "convergence-stall",
                           "overfitting", "underfitting", "resource-inefficiency"}


# -- recommendations ----------------------------------------------------------


def changes_of(recs: list[Recommendation]) -> dict[str, Any]:
    return {c.path: c.new for r in recs for c in r.changes}


ISSUE_CASES: dict[str, tuple[Callable[[], Evidence], dict[str, Any]]] = {
    "nan-loss": (lambda: underfit_evidence(skipped=[2] + [0] * 9), {}),
    "convergence-stall": (stall_evidence, {}),
    "overfitting": (overfit_evidence, {}),
    "underfitting": (underfit_evidence, {}),
    "resource-inefficiency": (good_evidence, {"gpu_util": 30.0}),
    "data-quality": (good_evidence, {"data_report": make_report(duplicates=2)}),
}


@pytest.mark.parametrize("issue", sorted(ISSUE_CASES))
def test_three_to_five_ranked_recommendations_per_issue(issue: str) -> None:
    evidence, kwargs = ISSUE_CASES[issue]
    d = diagnose(evidence(), make_spec(), **kwargs)
    assert d.primary_issue == issue
    recs = recommend(d, TrainSettings(grad_clip_norm=None), make_spec())
    assert 3 <= len(recs) <= 5
    assert [rank_key(r, issue) for r in recs] == sorted(rank_key(r, issue) for r in recs)
    assert len({r.id for r in recs}) == len(recs)
    if issue == "data-quality":
        assert all(r.requires_human and not r.changes for r in recs)
    else:
        assert all(r.changes and not r.requires_human for r in recs)


def test_nan_loss_recommendations_values() -> None:
    d = diagnose(underfit_evidence(skipped=[2] + [0] * 9), make_spec())
    recs = recommend(d, TrainSettings(lr=1e-3, grad_clip_norm=None, warmup_epochs=0), make_spec())
    assert changes_of(recs) == {"train.lr": 1e-4, "train.gradClipNorm": 1.0, "train.warmupEpochs": 1.0}
    assert recs[0].id == "nan-loss/lower-lr"
    # clipping already on at 1.0: tightened, not left as is
    tightened = recommend(d, TrainSettings(grad_clip_norm=1.0), make_spec())
    assert changes_of(tightened)["train.gradClipNorm"] == 0.5


def test_overfitting_recommendations_values_and_order() -> None:
    d = diagnose(overfit_evidence(), make_spec())
    current = TrainSettings(weight_decay=0.01, dropout=0.0, augment=["hflip"], model_name="resnet50")
    recs = recommend(d, current, make_spec())
    assert [r.id for r in recs] == [
        "overfitting/augmentation", "overfitting/weight-decay", "overfitting/dropout",
        "overfitting/smaller-model", "overfitting/early-stopping",
    ]
    assert changes_of(recs) == {
        "data.augment": ["hflip", "crop", "rotation"], "train.weightDecay": 0.1, "train.dropout": 0.3,
        "model.name": "resnet18", "train.patience": 5,
    }
    assert [r.expected_impact for r in recs] == ["high", "high", "medium", "medium", "low"]
    assert recs[0].expected_gain > recs[1].expected_gain > 0
    # weight decay is capped at 0.5
    capped = recommend(d, TrainSettings(weight_decay=0.1), make_spec())
    assert changes_of(capped)["train.weightDecay"] == 0.5


def test_underfitting_recommendations_values() -> None:
    d = diagnose(underfit_evidence(), make_spec())
    recs = recommend(d, TrainSettings(model_name="smallcnn", epochs=20, lr=1e-3, weight_decay=0.0), make_spec())
    assert changes_of(recs) == {"model.name": "resnet18", "train.epochs": 40, "train.lr": 0.003}
    bigger = recommend(d, TrainSettings(model_name="resnet18"), make_spec())
    assert changes_of(bigger)["model.name"] == "resnet50"


def test_a_setting_held_fixed_is_never_recommended_and_the_report_says_so() -> None:
    spec = make_spec(optimization={"fixed": ["model.name"]})
    d = diagnose(underfit_evidence(), spec)
    recs = recommend(d, TrainSettings(model_name="smallcnn", epochs=20, lr=1e-3, weight_decay=0.0), spec)
    assert "model.name" not in changes_of(recs)
    assert {"underfitting/longer-training", "underfitting/raise-lr"} <= {r.id for r in recs}
    assert 3 <= len(recs) <= 5  # topped up from the fillers, still within the gate's range
    report = render_diagnostic_report(d, recs, underfit_evidence(), 1, fixed=spec.optimization.fixed)
    assert "Held fixed by spec.optimization.fixed, so never recommended: model.name." in report


def test_fixed_names_only_settings_diagnostics_changes() -> None:
    with pytest.raises(ValidationError) as err:
        make_spec(optimization={"fixed": ["model.name", "model.nmae"]})
    message = str(err.value)
    assert "optimization.fixed" in message and "'model.nmae' is not a setting Diagnostics changes" in message
    assert "allowed: " in message and "train.lr" in message


def test_convergence_stall_raises_lr_more_when_tiny() -> None:
    d = diagnose(stall_evidence(), make_spec())
    normal = recommend(d, TrainSettings(lr=1e-3), make_spec())
    assert normal[0].id == "convergence-stall/raise-lr"
    assert changes_of(normal)["train.lr"] == 0.003
    tiny = recommend(d, TrainSettings(lr=5e-5), make_spec())
    assert changes_of(tiny)["train.lr"] == 5e-4
    assert "train.warmupEpochs" in changes_of(normal)


def test_resource_recommendations_values() -> None:
    d = diagnose(good_evidence(), make_spec(), gpu_util=30.0)
    recs = recommend(d, TrainSettings(batch_size=64, num_workers=0), make_spec())
    assert recs[0].changes[0].path == "data.numWorkers"
    ch = changes_of(recs)
    assert ch["data.numWorkers"] == 4 and ch["data.batchSize"] == 128
    assert all(r.expected_gain == 0 for r in recs)


def test_secondary_resource_issue_adds_one_low_ranked_recommendation() -> None:
    d = diagnose(underfit_evidence(), make_spec(), gpu_util=30.0)
    assert d.primary_issue == "underfitting"
    recs = recommend(d, TrainSettings(), make_spec())
    resource = [r for r in recs if r.issue == "resource-inefficiency"]
    assert len(resource) == 1 and recs[-1] is resource[0]
    assert resource[0].expected_impact == "low"


def test_leak_recommendations_need_a_person() -> None:
    d = diagnose(unstable_evidence(), make_spec(), data_report=make_report(duplicates=1))
    assert d.primary_issue == "data-quality" and d.leak_suspected
    recs = recommend(d, TrainSettings(), make_spec())
    assert recs[0].id == "data-quality/fix-splits"
    assert all(r.requires_human and r.changes == [] for r in recs)  # no tuning on a leaked val split


def test_crash_recommendations() -> None:
    oom = make_evidence([], [], [], [], status="failed", exception=("OutOfMemoryError", "CUDA out of memory"))
    recs = recommend(diagnose(oom, make_spec()), TrainSettings(batch_size=128, grad_accum_steps=1), make_spec())
    assert changes_of(recs)["data.batchSize"] == 64
    assert changes_of(recs)["train.gradAccumSteps"] == 2
    broken = make_evidence([], [], [], [], status="failed", exception=("FileNotFoundError", "no /data"))
    recs = recommend(diagnose(broken, make_spec()), TrainSettings(num_workers=4), make_spec())
    assert recs[0].id == "crash/fix-crash" and recs[0].requires_human
    assert changes_of(recs) == {"data.numWorkers": 0}


def test_recommendation_without_change_must_be_marked_human() -> None:
    with pytest.raises(ValueError, match="requires_human"):
        Recommendation(id="x", issue="overfitting", title="t", rationale="r", changes=[],
                       expected_impact="low", expected_gain=0.0, effort="low")


# -- settings and apply ---------------------------------------------------------


def test_settings_from_job_config_and_back() -> None:
    job: dict[str, Any] = {"runDir": "/tmp/run", "data": {"batchSize": 32, "augment": ["crop"], "numWorkers": 2},
           "model": {"name": "resnet18"}, "train": {"lr": 0.01, "weightDecay": 0.0, "gradClipNorm": None}}
    s = TrainSettings.from_job_config(job)
    assert (s.batch_size, s.augment, s.num_workers, s.model_name) == (32, ["crop"], 2, "resnet18")
    assert (s.lr, s.weight_decay, s.grad_clip_norm, s.epochs) == (0.01, 0.0, None, 20)
    changed = s.model_copy(update={"lr": 0.001, "dropout": 0.3})
    out = changed.apply_to_job_config(job)
    assert job["train"]["lr"] == 0.01  # input untouched
    cfg = JobConfig.model_validate(out)
    assert (cfg.train.lr, cfg.train.dropout, cfg.data.batch_size, cfg.model.name) == (0.001, 0.3, 32, "resnet18")
    snake = TrainSettings.from_job_config({"train": {"weight_decay": 0.2}})
    assert snake.weight_decay == 0.2


def test_apply_produces_expected_settings() -> None:
    d = diagnose(overfit_evidence(), make_spec())
    current = TrainSettings(weight_decay=0.01, dropout=0.0, augment=[], epochs=20)
    new, applied = apply_recommendations(current, recommend(d, current, make_spec()))
    assert new.weight_decay == 0.1 and new.dropout == 0.3 and new.patience == 5
    assert new.augment == ["hflip", "crop", "rotation"]
    assert {c.path for c in applied} == {"train.weightDecay", "train.dropout", "train.patience", "data.augment"}
    assert current.weight_decay == 0.01  # not mutated


def test_apply_skips_a_later_change_to_an_already_changed_path() -> None:
    first = make_rec("a/lower", 0.1, impact="high", changes=[ConfigChange(path="train.lr", old=1e-3, new=1e-4)])
    second = make_rec("b/raise", 0.05, changes=[
        ConfigChange(path="train.lr", old=1e-3, new=3e-3), ConfigChange(path="train.epochs", old=20, new=40)])
    plan = plan_changes(TrainSettings(lr=1e-3), [first, second])
    assert plan.settings.lr == 1e-4 and plan.settings.epochs == 40
    assert [(c.path, c.new) for c in plan.applied] == [("train.lr", 1e-4), ("train.epochs", 40)]
    assert [(c.path, c.new) for c in plan.skipped] == [("train.lr", 3e-3)]
    assert "already changed by a/lower" in plan.skipped[0].note
    new, applied = apply_recommendations(TrainSettings(lr=1e-3), [first, second])
    assert new == plan.settings and applied == plan.applied


def test_apply_validates_and_respects_top_k() -> None:
    bad = make_rec("x/bad", 0.1, changes=[
        ConfigChange(path="train.lr", new=50.0),  # above the job config's bound
        ConfigChange(path="train.warmupEpochs", new=30.0),  # not shorter than 20 epochs
        ConfigChange(path="train.nope", new=1),
        ConfigChange(path="train.epochs", new=20),  # no-op
    ])
    good = make_rec("y/good", 0.1, changes=[ConfigChange(path="train.dropout", old=0.5, new=0.2)])
    plan = plan_changes(TrainSettings(epochs=20), [bad, good])
    assert plan.settings == TrainSettings(epochs=20, dropout=0.2)
    notes = [c.note for c in plan.skipped]
    assert len(notes) == 4
    assert notes[0].startswith("invalid") and notes[1].startswith("invalid")
    assert "unknown config path" in notes[2] and notes[3].startswith("no-op")
    assert plan.applied[0].old == 0.0  # the value actually replaced, not the recommendation's guess
    top1 = plan_changes(TrainSettings(), [good, bad], top_k=1)
    assert [c.path for c in top1.applied] == ["train.dropout"] and not top1.skipped


# -- decide after diagnostics -------------------------------------------------


def test_decide_infrastructure_broken_goes_to_baseline() -> None:
    ev = make_evidence([], [], [], [], status="failed", exception=("FileNotFoundError", "no /data"))
    d = diagnose(ev, make_spec())
    decision, reason = decide_after_diagnostics(d, recommend(d, TrainSettings(num_workers=2), make_spec()))
    assert decision == "baseline-again" and "FileNotFoundError" in reason


def test_decide_numerical_failure_reruns_baseline_with_fixes() -> None:
    ev = make_evidence([2.0, 1.8], [2.0, 1.9], [0.3, 0.35], [0.3, 0.33], status="failed",
                       exception=("NonFiniteTrainingError", "non-finite loss"))
    d = diagnose(ev, make_spec())
    decision, reason = decide_after_diagnostics(d, recommend(d, TrainSettings(), make_spec()))
    assert decision == "baseline-again" and "train.lr" in reason


def test_decide_all_human_recommendations_go_to_baseline() -> None:
    d = diagnose(good_evidence(), make_spec(), data_report=make_report(duplicates=2))
    decision, reason = decide_after_diagnostics(d, recommend(d, TrainSettings(), make_spec()))
    assert decision == "baseline-again" and "a person" in reason


def test_decide_target_already_met_finalizes() -> None:
    d = make_diagnosis(value=0.93)
    assert decide_after_diagnostics(d, [make_rec("a", 0.2)])[0] == "finalize"


@pytest.mark.parametrize(
    ("gains", "decision", "word"),
    [
        ([0.04, 0.03], "optimize", "clear path"),
        ([0.02, 0.005], "finalize", "near-optimal"),
        ([0.03, 0.01], "optimize", "between"),
    ],
)
def test_decide_by_expected_gain(gains: list[float], decision: str, word: str) -> None:
    recs = [make_rec(f"r{i}", g) for i, g in enumerate(gains)]
    got, reason = decide_after_diagnostics(make_diagnosis(value=0.7), recs)
    assert got == decision and word in reason


def test_decide_expected_gain_ignores_human_only_recommendations() -> None:
    recs = [make_rec("auto", 0.01), make_rec("human", 0.5, changes=[])]
    assert decide_after_diagnostics(make_diagnosis(value=0.7), recs)[0] == "finalize"


def test_decide_val_loss_gain_is_relative_to_the_loss() -> None:
    # 0.02 of a 0.5 loss is 4% (between), though 0.02 < 3% in absolute terms
    d = make_diagnosis(metric="val_loss", value=0.5, target=0.2)
    got, reason = decide_after_diagnostics(d, [make_rec("a", 0.02)])
    assert got == "optimize" and "between" in reason
    assert decide_after_diagnostics(d, [make_rec("a", 0.04)])[0] == "optimize"
    assert decide_after_diagnostics(d, [make_rec("a", 0.01)])[0] == "finalize"
    met = make_diagnosis(metric="val_loss", value=0.15, target=0.2)
    assert decide_after_diagnostics(met, [make_rec("a", 0.04)])[0] == "finalize"


def test_end_to_end_overfitting_is_a_clear_path() -> None:
    d = diagnose(overfit_evidence(), make_spec())
    assert decide_after_diagnostics(d, recommend(d, TrainSettings(), make_spec()))[0] == "optimize"


# -- decide after optimization ------------------------------------------------


def it(i: int, value: float | None, baseline: float, previous: float | None = None) -> IterationResult:
    return IterationResult(iteration=i, metric_value=value, baseline_value=baseline, previous_value=previous)


def test_optimization_target_met_finalizes() -> None:
    got, reason = decide_after_optimization([it(1, 0.91, 0.72)], make_spec())
    assert got == "finalize" and "target met" in reason


def test_optimization_improved_but_short_iterates_until_the_limit() -> None:
    spec = make_spec(optimization={"maxIterations": 3})
    assert decide_after_optimization([it(1, 0.78, 0.72)], spec)[0] == "iterate"
    history = [it(1, 0.76, 0.70), it(2, 0.80, 0.70, 0.76), it(3, 0.85, 0.70, 0.80)]
    got, reason = decide_after_optimization(history, spec)
    assert got == "finalize" and "iteration 3" in reason and "3/3" in reason


def test_optimization_no_improvement_goes_back_to_diagnostics() -> None:
    got, reason = decide_after_optimization([it(1, 0.70, 0.72)], make_spec())
    assert got == "diagnose" and "no improvement" in reason
    assert decide_after_optimization([it(1, 0.72, 0.72)], make_spec())[0] == "diagnose"  # equal is not better
    assert decide_after_optimization([it(1, None, 0.72)], make_spec())[0] == "diagnose"
    # against the previous iteration, not the baseline
    assert decide_after_optimization([it(1, 0.80, 0.70), it(2, 0.78, 0.70, 0.80)], make_spec())[0] == "diagnose"


def test_optimization_no_improvement_with_iterations_used_accepts_the_best() -> None:
    spec = make_spec(optimization={"maxIterations": 2})
    got, reason = decide_after_optimization([it(1, 0.80, 0.70), it(2, 0.75, 0.70, 0.80)], spec)
    assert got == "finalize" and "iteration 1" in reason


def test_optimization_two_small_gains_accept_the_best() -> None:
    spec = make_spec(optimization={"maxIterations": 5, "minImprovement": 0.02})
    one_small = [it(1, 0.80, 0.70), it(2, 0.81, 0.70, 0.80)]
    assert decide_after_optimization(one_small, spec)[0] == "iterate"
    two_small = [*one_small, it(3, 0.815, 0.70, 0.81)]
    got, reason = decide_after_optimization(two_small, spec)
    assert got == "finalize" and "diminishing" in reason and "iteration 3" in reason


def test_optimization_val_loss_direction() -> None:
    spec = make_spec(target={"metric": "val_loss", "value": 0.2}, optimization={"minImprovement": 0.02})
    assert decide_after_optimization([it(1, 0.40, 0.50)], spec)[0] == "iterate"  # lower is better
    assert decide_after_optimization([it(1, 0.60, 0.50)], spec)[0] == "diagnose"  # higher is worse
    assert decide_after_optimization([it(1, 0.19, 0.50)], spec)[0] == "finalize"  # <= target is met
    small = [it(1, 0.49, 0.50), it(2, 0.48, 0.50, 0.49)]
    got, reason = decide_after_optimization(small, spec)
    assert got == "finalize" and "0.4800" in reason


def test_optimization_test_acc_target_is_tracked_on_val_acc() -> None:
    spec = make_spec(target={"metric": "test_acc", "value": 0.9})
    assert decide_after_optimization([it(1, 0.95, 0.72)], spec)[0] == "finalize"
    d = diagnose(underfit_evidence(), spec)
    assert d.metric == "val_acc" and not d.lower_is_better


# -- reports -------------------------------------------------------------------


def test_diagnostic_report_sections_and_numbers() -> None:
    ev = overfit_evidence()
    d = diagnose(ev, make_spec(), gpu_util=35.0)
    recs = recommend(d, TrainSettings(), make_spec())
    pending = render_diagnostic_report(d, recs, ev, iteration=2)
    for section in ("## Summary", "## Signals", "## Recommendations", "## Decision"):
        assert section in pending
    assert "(iteration 2)" in pending
    assert "**Primary issue: overfitting**" in pending
    assert "| overfitting | acc-gap | 0.24 | 0.1 |" in pending
    assert "| resource-inefficiency | gpu-util-low | 35 | 60 |" in pending
    assert "| 1 | Add data augmentation (hflip, crop, rotation) | data.augment: [] -> [hflip, crop, rotation] | high |" in pending
    assert "train.weightDecay: 0.01 -> 0.1" in pending
    assert f"{recs[0].expected_gain:.4f}" in pending
    assert "_pending_" in pending
    decided = render_diagnostic_report(d, recs, ev, 2, decision=decide_after_diagnostics(d, recs))
    assert "**optimize**: clear path" in decided and "_pending_" not in decided


def test_diagnostic_report_marks_human_recommendations() -> None:
    ev = good_evidence()
    d = diagnose(ev, make_spec(), data_report=make_report(duplicates=2))
    text = render_diagnostic_report(d, recommend(d, TrainSettings(), make_spec()), ev, 1)
    assert "_requires a person_" in text and "duplicates-across-splits | 2 | 0" in text


def test_optimization_results_sections_numbers_and_deltas() -> None:
    spec = make_spec()
    baseline = make_evidence(line(2.0, 0.5, 4), line(2.0, 0.9, 4), line(0.3, 0.9, 4), line(0.3, 0.70, 4))
    previous = make_evidence(line(2.0, 0.5, 4), line(2.0, 0.8, 4), line(0.3, 0.9, 4), line(0.3, 0.80, 4))
    current = make_evidence(line(2.0, 0.4, 6), line(2.0, 0.6, 6), line(0.3, 0.95, 6), line(0.3, 0.92, 6))
    changes = [ConfigChange(path="train.weightDecay", old=0.01, new=0.1, recommendation_id="overfitting/weight-decay")]
    skipped = [ConfigChange(path="train.lr", old=1e-3, new=3e-3, note="train.lr already changed by x")]
    text = render_optimization_results(baseline, previous, current, changes, 2, spec,
                                       decision=("finalize", "target met"), skipped=skipped)
    for section in ("## Summary", "## Comparison", "## Applied changes", "## Decision"):
        assert section in text
    assert "| metric | baseline | iteration 1 | iteration 2 | Δ vs baseline | Δ vs previous |" in text
    assert "| val_acc | 0.7000 | 0.8000 | 0.9200 | +0.2200 (better) | +0.1200 (better) |" in text
    assert "| val_loss | 0.9000 | 0.8000 | 0.6000 | -0.3000 (better) | -0.2000 (better) |" in text
    assert "| epochs | 4 | 4 | 6 | +2 | +2 |" in text
    assert "| time (s) | 40.0 | 40.0 | 60.0 | +20.0 | +20.0 |" in text
    assert "| train.weightDecay | 0.01 | 0.1 | overfitting/weight-decay |" in text
    assert "already changed by x" in text
    assert "**met**" in text and "**finalize**: target met" in text
    first = render_optimization_results(baseline, None, previous, changes, 1, spec)
    assert "Δ vs previous" not in first and "| val_acc | 0.7000 | 0.8000 | +0.1000 (better) |" in first
    assert "_pending_" in first


# -- the control plane stays free of torch -------------------------------------


def test_diagnosis_imports_no_torch_numpy_or_ray() -> None:
    code = (
        "import sys, trainpipe_operator.diagnosis\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'ray'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
