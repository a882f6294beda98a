"""The task seam in the control plane (trainpipe_operator/tasks): each task's
metric catalog (names, directions, what a target may name), the spec's
task-dependent rules (models, augmentations, target metric, data.source,
customTask), the job config they map to, and the gates, diagnosis and
reports reading every metric by name. Pure: no torch."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainpipe_operator.admission import rules
from trainpipe_operator.diagnosis import diagnose
from trainpipe_operator.diagnosis.apply import plan_changes
from trainpipe_operator.diagnosis.decide import IterationResult, decide_after_optimization
from trainpipe_operator.diagnosis.recommendations import ConfigChange, Recommendation, recommend
from trainpipe_operator.diagnosis.settings import TrainSettings
from trainpipe_operator.gates.baseline import check_report, decide_after_baseline
from trainpipe_operator.gates.execution import execution_checks
from trainpipe_operator.gates.finalization import check_target_on_test, check_test_evaluated
from trainpipe_operator.gates.finalization import test_figure as figure_on_test
from trainpipe_operator.gates.inputs import RunFiles
from trainpipe_operator.pipeline.jobs import baseline_settings, build_job
from trainpipe_operator.pipeline.progress import Progress
from trainpipe_operator.reports.training import render_training_results
from trainpipe_operator.spec.load import ManifestError, load_manifest
from trainpipe_operator.spec.pipeline import PipelineSpec, TargetSpec
from trainpipe_operator.tasks import CLASSIFICATION, VAE, UnknownMetric, catalog_for
from trainpipe_trainer.contract.evidence import EpochRecord, Evidence
from trainpipe_trainer.contract.results import TestEvaluation

DIGITS = {"source": "builtin:digits"}
TONES = {"source": "builtin:tones"}
CUSTOM_TASK = {
    "entrypoint": "mypkg.tasks:Regression",
    "options": {"hidden": 64},
    "metrics": [
        {"name": "val_mae", "direction": "minimize", "kind": "loss"},
        {"name": "val_r2", "direction": "maximize", "kind": "fraction"},
        {"name": "test_mae", "direction": "minimize", "kind": "loss"},
    ],
}


def spec(**sections: Any) -> PipelineSpec:
    sections.setdefault("data", TONES if sections.get("task") == "vae" else DIGITS)
    return PipelineSpec.model_validate(sections)


def problems(tmp_path: Path, spec_section: dict[str, Any]) -> list[str]:
    """``trainpipe validate``'s lines for a manifest with this spec (path prefix removed)."""
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
                                    "metadata": {"name": "p"}, "spec": spec_section}))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return [line.removeprefix(f"{path}: ") for line in caught.value.problems]


# ------------------------------------------------------------------ catalogs

def test_classification_catalog_directions_and_targets() -> None:
    c = CLASSIFICATION
    assert c.primary == "val_acc"
    assert {m.name: m.direction for m in c.metrics} == {
        "val_acc": "max", "val_top5": "max", "val_loss": "min",
        "test_acc": "max", "test_top5": "max", "test_loss": "min"}
    assert c.targetable() == ("val_acc", "val_top5", "val_loss", "test_acc", "test_top5", "test_loss")
    assert c.metric("val_acc").kind == "fraction" and c.metric("val_loss").kind == "loss"
    assert c.is_better("val_acc", 0.9, 0.8) and not c.is_better("val_acc", 0.8, 0.9)
    assert c.is_better("val_loss", 0.2, 0.3) and not c.is_better("val_loss", 0.3, 0.2)
    assert c.met("val_acc", 0.9, 0.9) and not c.met("val_acc", 0.89, 0.9)
    assert c.met("val_loss", 0.5, 0.5) and not c.met("val_loss", 0.51, 0.5)
    assert not c.met("val_acc", float("nan"), 0.1) and not c.met("val_acc", None, 0.1)


def test_vae_catalog_targets_reconstruction_and_keeps_kl_informational() -> None:
    c = VAE
    assert c.primary == "val_recon"
    assert c.metric("val_recon").direction == "min" and c.metric("val_loss").direction == "min"
    assert "val_loss" in c.targetable() and "test_recon" in c.targetable()
    assert "val_kl" not in c.targetable() and "test_kl" not in c.targetable()
    assert c.metric("val_kl").kind == "nats"
    assert c.is_better("val_recon", 0.1, 0.2)
    assert c.tracked("test_recon").name == "val_recon" and c.on_test("val_recon").name == "test_recon"
    with pytest.raises(UnknownMetric, match="'val_acc' is not a metric of task vae"):
        c.metric("val_acc")


def test_a_custom_catalog_comes_from_the_spec() -> None:
    c = catalog_for(spec(task="custom", customTask=CUSTOM_TASK, model={"name": "mlp"}))
    assert c.task == "custom" and c.primary == "val_mae"  # the first declared val_ metric
    assert c.metric("val_mae").direction == "min" and c.metric("val_r2").direction == "max"
    assert c.metric("val_r2").kind == "fraction" and c.metric("test_mae").split == "test"
    # the engine's losses come with every task
    assert set(c.targetable()) == {"val_mae", "val_r2", "test_mae", "val_loss", "test_loss"}
    assert c.tracked("test_mae").name == "val_mae"
    assert c.allows_model("anything") and c.allows_augmentation("mixup")


def test_tracked_metric_of_a_test_target_is_its_validation_counterpart() -> None:
    assert CLASSIFICATION.tracked("test_acc").name == "val_acc"
    assert CLASSIFICATION.tracked("test_loss").name == "val_loss"
    assert CLASSIFICATION.tracked("val_top5").name == "val_top5"


# ---------------------------------------------------------------- the spec

def test_a_vae_target_on_val_recon_is_accepted_and_defaults_to_it() -> None:
    s = spec(task="vae", target={"metric": "val_recon", "value": 0.05})
    assert s.target.metric == "val_recon" and s.target.met(0.04) and not s.target.met(0.06)  # lower is better
    assert spec(task="vae").target.metric == "val_recon"
    assert spec().target.metric == "val_acc"


def test_val_acc_is_refused_for_the_vae_naming_the_allowed_ones(tmp_path: Path) -> None:
    lines = problems(tmp_path, {"task": "vae", "data": TONES, "target": {"metric": "val_acc"}})
    assert len(lines) == 1
    assert lines[0].startswith("spec.target.metric: 'val_acc' is not a metric task vae can target; allowed: ")
    for name in ("'val_recon'", "'val_loss'", "'test_recon'", "'test_loss'"):
        assert name in lines[0]
    assert "val_kl" not in lines[0]  # informational: never a target


def test_a_missing_data_source_is_refused_naming_the_field(tmp_path: Path) -> None:
    for spec_section in ({}, {"data": {"imageSize": 16}}):
        lines = problems(tmp_path, spec_section)
        assert len(lines) == 1, lines
        assert lines[0].startswith("spec.data.source: required: name the dataset")
        assert "builtin:digits" in lines[0] and "builtin:tones" in lines[0] and "path" in lines[0]


def test_custom_task_requires_custom_task_and_others_refuse_it(tmp_path: Path) -> None:
    lines = problems(tmp_path, {"task": "custom", "data": DIGITS, "baseline": {"lr": -1}})
    assert any(line.startswith("spec.customTask: required when spec.task is custom") for line in lines), lines
    assert any(line.startswith("spec.baseline.lr: ") for line in lines)  # reported together
    lines = problems(tmp_path, {"task": "classification", "data": DIGITS, "customTask": CUSTOM_TASK})
    assert lines == [line for line in lines if line.startswith("spec.customTask: only read when spec.task is 'custom'")]
    assert len(lines) == 1
    lines = problems(tmp_path, {"data": DIGITS, "vae": {"beta": 2}})
    assert len(lines) == 1 and lines[0].startswith("spec.vae: only read when spec.task is 'vae'")


def test_a_custom_task_declaration_is_checked(tmp_path: Path) -> None:
    bad = {"entrypoint": "no-colon", "metrics": [{"name": "mae", "direction": "up"}]}
    lines = problems(tmp_path, {"task": "custom", "data": DIGITS, "customTask": bad})
    fields = sorted(line.split(": ", 1)[0] for line in lines)
    assert fields == ["spec.customTask.entrypoint", "spec.customTask.metrics[0].direction",
                      "spec.customTask.metrics[0].name"]
    only_test = {"entrypoint": "a.b:C", "metrics": [{"name": "test_mae", "direction": "minimize"}]}
    lines = problems(tmp_path, {"task": "custom", "data": DIGITS, "customTask": only_test})
    assert len(lines) == 1 and "declare at least one val_ metric" in lines[0]


def test_a_custom_target_is_one_it_declares_in_its_direction(tmp_path: Path) -> None:
    s = spec(task="custom", customTask=CUSTOM_TASK, model={"name": "mlp"}, target={"metric": "val_r2", "value": 0.8})
    assert s.target.met(0.85) and not s.target.met(0.7)  # maximize
    assert spec(task="custom", customTask=CUSTOM_TASK).target.metric == "val_mae"
    lines = problems(tmp_path, {"task": "custom", "data": DIGITS, "customTask": CUSTOM_TASK,
                                "target": {"metric": "val_r2", "value": 1.5}})
    assert len(lines) == 1 and lines[0].startswith("spec.target: value: a target for val_r2")
    assert "a fraction in [0, 1]" in lines[0]
    lines = problems(tmp_path, {"task": "custom", "data": DIGITS, "customTask": CUSTOM_TASK,
                                "target": {"metric": "val_acc"}})
    assert len(lines) == 1 and "'val_mae'" in lines[0] and "'val_r2'" in lines[0]


def test_model_names_are_the_tasks(tmp_path: Path) -> None:
    assert spec().model.name == "smallcnn"
    assert spec(task="vae").model.name == "vae-small"
    assert spec(task="vae", model={"name": "vae-large"}).model.name == "vae-large"
    assert spec(task="custom", customTask=CUSTOM_TASK).model.name == "default"
    assert spec(task="custom", customTask=CUSTOM_TASK, model={"name": "gbm"}).model.name == "gbm"
    lines = problems(tmp_path, {"task": "vae", "data": TONES, "model": {"name": "resnet18"}})
    assert lines == ["spec.model.name: 'resnet18' is not a model of task vae; "
                     "allowed: 'vae-small', 'vae-medium', 'vae-large'"]
    lines = problems(tmp_path, {"data": DIGITS, "model": {"name": "vae-small"}})
    assert len(lines) == 1 and "'smallcnn'" in lines[0]


def test_augmentations_and_builtin_datasets_are_the_tasks(tmp_path: Path) -> None:
    assert spec(task="vae", data={**TONES, "augment": ["gain", "mask"]}).data.augment == ["gain", "mask"]
    lines = problems(tmp_path, {"task": "vae", "data": {"source": "builtin:digits", "augment": ["gain", "hflip"]}})
    assert sorted(line.split(": ", 1)[0] for line in lines) == ["spec.data.augment[1]", "spec.data.source"]
    assert any("use builtin:tones" in line for line in lines)
    assert spec(task="vae", data={"source": "/data/birdsong"}).data.source == "/data/birdsong"  # a path: the task's to read


def test_target_spec_outside_a_spec_keeps_the_classification_directions() -> None:
    assert TargetSpec(metric="val_loss", value=0.5).met(0.4)
    assert not TargetSpec(metric="val_acc", value=0.5).met(0.4)
    assert not TargetSpec(metric="test_acc", value=0.5).met(None)


def test_the_admission_rule_reads_a_custom_tasks_declared_metrics() -> None:
    custom = {"task": "custom", "customTask": CUSTOM_TASK}
    assert rules.target_metric_of_task({**custom, "target": {"metric": "val_r2"}}, "ns", None) == []
    refused = rules.target_metric_of_task({**custom, "target": {"metric": "val_acc"}}, "ns", None)
    assert refused and refused[0].startswith("spec.target.metric: 'val_acc' is not produced by task 'custom'")
    assert rules.target_metric_of_task({"task": "vae", "target": {"metric": "val_kl"}}, "ns", None)


# ------------------------------------------------------------ the job config

def test_the_job_config_carries_the_task_and_its_settings(tmp_path: Path) -> None:
    vae = spec(task="vae", data={**TONES, "augment": ["gain"], "audio": {"nMels": 32}},
               vae={"beta": 0.5, "klAnneal": {"schedule": "cyclical"}})
    job = build_job("p", "Baseline", vae, baseline_settings(vae), tmp_path, runtime="local")
    assert job.task == "vae" and job.model.name == "vae-small" and job.data.augment == ["gain"]
    assert job.vae.beta == 0.5 and job.vae.kl_anneal.schedule == "cyclical" and job.data.audio.n_mels == 32
    assert job.custom_task is None
    custom = spec(task="custom", customTask=CUSTOM_TASK, model={"name": "mlp"}, data={**DIGITS, "augment": ["mine"]})
    job = build_job("p", "Baseline", custom, baseline_settings(custom), tmp_path, runtime="local")
    assert job.task == "custom" and job.model.name == "mlp" and job.data.augment == ["mine"]
    assert job.custom_task is not None and job.custom_task.entrypoint == "mypkg.tasks:Regression"
    assert job.custom_task.options == {"hidden": 64}


def test_vae_settings_are_recommendable_paths_for_the_vae_only() -> None:
    vae = TrainSettings(task="vae", model_name="vae-small", augment=["gain"])
    rec = Recommendation(id="x/beta", issue="underfitting", title="lower beta", rationale="t",
                         changes=[ConfigChange(path="vae.beta", old=1.0, new=0.5),
                                  ConfigChange(path="vae.klAnneal.warmupEpochs", old=5.0, new=10.0)],
                         expected_impact="high", expected_gain=0.1, effort="low")
    plan = plan_changes(vae, [rec])
    assert plan.settings.beta == 0.5 and plan.settings.kl_warmup_epochs == 10.0 and not plan.skipped
    overrides = plan.settings.apply_to_job_config({"vae": {"previewEvery": 3}})
    assert overrides["vae"] == {"previewEvery": 3, "latentDim": 16, "beta": 0.5, "freeBits": 0.1,
                                "klAnneal": {"schedule": "linear", "warmupEpochs": 10.0, "cycles": 4}}
    assert TrainSettings.from_job_config({"task": "vae", **overrides, "model": {"name": "vae-small"}}).beta == 0.5
    skipped = plan_changes(TrainSettings(), [rec]).skipped
    assert [c.note for c in skipped] == ["vae.beta is not read by task classification",
                                         "vae.klAnneal.warmupEpochs is not read by task classification"]
    assert "vae" not in TrainSettings().to_overrides()
    with pytest.raises(ValueError, match="unknown model 'resnet18' for task vae"):
        TrainSettings(task="vae", model_name="resnet18")


# ------------------------------------------------------- gates and diagnosis

def vae_epoch(num: int, n: int, *, kl: float = 2.0, gap: float = 0.05) -> dict[str, Any]:
    train = 1.0 * 0.8 ** (num - 1)
    recon = 0.6 * 0.8 ** (num - 1)
    return {"num": num, "train_loss": train, "val_loss": train * (1 + gap), "lr": 1e-3,
            "epoch_seconds": 10.0, "eta_seconds": 10.0 * (n - num), "samples_per_second": 50.0,
            "loss_gap": gap, "skipped_steps": 0,
            "train_recon": recon, "val_recon": recon * (1 + gap), "val_kl": kl}


def vae_evidence(n: int = 6, **kw: Any) -> Evidence:
    epochs = [EpochRecord.model_validate(vae_epoch(i, n, **kw)) for i in range(1, n + 1)]
    ckpt = {"path": "checkpoints/best_model.pt", "exists": True, "loads": True, "has_model_state": True,
            "has_optimizer_state": True, "epoch": n, "val_loss": epochs[-1].val_loss}
    return Evidence(job_name="baseline", task="vae", config_hash="h", status="completed", completed=True,
                    reason="reached the final epoch", epochs_planned=n, epochs=epochs,
                    initial_train_loss=epochs[0].train_loss, final_train_loss=epochs[-1].train_loss,
                    best_val_loss=min(e.val_loss for e in epochs), best_epoch=n,
                    checkpoints={"best": ckpt, "last": {**ckpt, "path": "checkpoints/last_model.pt"}},
                    timings={"total_seconds": 10.0 * n, "epoch_seconds": [10.0] * n})


def run_files(ev: Evidence, report: str = "") -> RunFiles:
    log = "".join(f"EPOCH {e.num}/{ev.epochs_planned}\n" for e in ev.epochs) + "Training complete\n"
    return RunFiles(log_text=log, metrics_json={"epochs": [e.model_dump() for e in ev.epochs]},
                    report_text=report, report_path="baseline_results.md", run_dir="02_baseline")


def test_a_vae_run_is_judged_on_val_recon_lower_is_better() -> None:
    ev = vae_evidence()
    best = min(e.metric("val_recon") for e in ev.epochs)
    met, reason = decide_after_baseline(ev, True, spec(task="vae", target={"value": best + 1e-3}))
    assert met == "deploy-baseline" and "min val_recon" in reason
    short, reason = decide_after_baseline(ev, True, spec(task="vae", target={"value": best / 2}))
    assert short == "optimize" and f"{best:.4f}" in reason


def test_execution_checks_read_a_vae_run_by_name() -> None:
    ev = vae_evidence(gap=0.35)
    checks = {c.id: c for c in execution_checks(ev, run_files(ev), None, spec(task="vae"), None)}
    assert checks["leakage-suspect"].result == "skip" and "task vae" in checks["leakage-suspect"].message
    assert checks["overfit-gap"].result == "warn" and checks["overfit-gap"].value == 0.35
    healthy = vae_evidence()
    checks = {c.id: c for c in execution_checks(healthy, run_files(healthy), None, spec(task="vae"), None)}
    assert checks["overfit-gap"].result == "pass"


def test_the_training_report_quotes_the_tasks_metrics_for_its_gate() -> None:
    ev = vae_evidence()
    text = render_training_results("Baseline results", ev, {"task": "vae"}, ("optimize", "short"), VAE)
    assert "val_recon" in text and "val_kl" in text and "train_recon" in text
    assert "accuracy" not in text
    assert check_report(run_files(ev, text), ev, VAE).result == "pass"
    stale = text.replace(f"{min(e.metric('val_recon') for e in ev.epochs):.4f}".rstrip("0"), "9.9999")
    assert check_report(run_files(ev, stale), ev, VAE).result == "fail"


def test_target_met_on_test_reads_the_metric_by_name() -> None:
    files = RunFiles(run_dir="05_finalization")
    vae = spec(task="vae", target={"metric": "val_recon", "value": 0.1})
    test = TestEvaluation(task="vae", samples=20, metrics={"test_loss": 0.3, "test_recon": 0.08, "test_kl": 3.0},
                          loss=0.3, checkpoint="best_model.pt", evaluated_at="now")
    check = check_target_on_test(test, vae, files, None)
    assert check.result == "pass" and check.value == 0.08 and "test_recon 0.0800 <= 0.1" in check.message
    worse = test.model_copy(update={"metrics": {**test.metrics, "test_recon": 0.2}})
    assert check_target_on_test(worse, vae, files, None).result == "fail"
    assert check_test_evaluated(test, files, VAE).result == "pass"
    missing = test.model_copy(update={"metrics": {"test_loss": 0.3}})
    assert check_test_evaluated(missing, files, VAE).result == "fail"
    # a classification file written before metrics-by-name: its accuracy field
    old = TestEvaluation(samples=10, accuracy=0.93, loss=0.2, checkpoint="b.pt", evaluated_at="now")
    assert figure_on_test(old, "val_acc") == ("test accuracy", 0.93)
    assert figure_on_test(old, "val_loss") == ("test loss", 0.2)
    new = old.model_copy(update={"metrics": {"test_acc": 0.95}})
    assert figure_on_test(new, "test_acc") == ("test accuracy", 0.95)  # metrics first


def test_the_diagnosis_tracks_val_recon_and_runs_no_accuracy_rule() -> None:
    ev = vae_evidence(gap=0.4)
    d = diagnose(ev, spec(task="vae", target={"value": 0.01}))
    assert d.metric == "val_recon" and d.lower_is_better and d.task == "vae"
    assert d.metric_value == pytest.approx(min(e.metric("val_recon") for e in ev.epochs))
    names = {s.signal for s in d.signals}
    assert "loss-gap" in names and d.primary_issue == "overfitting"
    assert not names & {"acc-gap", "val-acc-near-perfect", "val-acc-unstable"}
    recs = recommend(d, TrainSettings(task="vae", model_name="vae-large"), spec(task="vae"))
    changes = {c.path: c.new for r in recs for c in r.changes}
    assert changes.get("model.name") == "vae-medium"  # the vae ladder, never a classifier
    assert set(changes.get("data.augment", [])) <= {"gain", "shift", "noise", "mask"}
    assert all(math.isfinite(r.expected_gain) for r in recs)


def test_optimization_decisions_follow_a_loss_targets_direction() -> None:
    vae = spec(task="vae", target={"value": 0.05}, optimization={"maxIterations": 3})
    better = [IterationResult(iteration=1, metric_value=0.08, baseline_value=0.1)]
    assert decide_after_optimization(better, vae)[0] == "iterate"
    worse = [IterationResult(iteration=1, metric_value=0.12, baseline_value=0.1)]
    assert decide_after_optimization(worse, vae)[0] == "diagnose"
    met = [IterationResult(iteration=1, metric_value=0.04, baseline_value=0.1)]
    assert decide_after_optimization(met, vae) == ("finalize", "target met: val_recon 0.0400 <= 0.05")


def test_progress_shows_the_target_metric_by_name(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "metrics.json").write_text('{"epochs": [{"num": 1, "train_loss": 1.5, "val_loss": 1.6, '
                                       '"val_recon": 0.25, "eta_seconds": 9}]}')
    out = io.StringIO()
    with Progress(stream=out).watch("Baseline", tmp_path, 3, metric="val_recon"):
        deadline = time.monotonic() + 5
        while "val_recon" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert "Baseline epoch 1/3 train_loss=1.5000 val_loss=1.6000 val_recon=0.2500 ETA 9s" in out.getvalue()
