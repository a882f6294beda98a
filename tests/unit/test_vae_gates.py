"""The vae task's gates: Planning's audio data checks, the VAE execution checks
(post-baseline, optimization, production-ready) and the VAE finalization
checks, on evidence built here. Pure: no torch, no cluster."""

from __future__ import annotations

from typing import Any

import pytest

from trainpipe_operator.gates.baseline import decide_after_baseline, evaluate_baseline
from trainpipe_operator.gates.checks import GateResult
from trainpipe_operator.gates.execution import execution_checks, execution_passed
from trainpipe_operator.gates.finalization import evaluate_finalization
from trainpipe_operator.gates.inputs import RunFiles, files_present, safe_relative
from trainpipe_operator.gates.optimization import evaluate_optimization
from trainpipe_operator.gates.planning import evaluate_planning
from trainpipe_operator.reports.finalization import render_deployment_guide
from trainpipe_operator.reports.training import render_training_results
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.tasks import VAE
from trainpipe_trainer.contract.data_report import DataReport
from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import ExportReport, PreflightReport, TestEvaluation

NAN = float("nan")
PREVIEW_EVERY = 5


# ------------------------------------------------------------------ factories

def vae_spec(**sections: Any) -> PipelineSpec:
    sections.setdefault("target", {"metric": "val_loss", "value": 10.0})
    sections.setdefault("data", {"source": "/data/sounds"})
    return PipelineSpec.model_validate({"task": "vae", **sections})


def vae_epoch(num: int) -> dict[str, Any]:
    """A healthy epoch: the negative ELBO falls, val_kl ~4 nats, gap 10%."""
    train_loss = 100.0 * 0.8 ** (num - 1)
    val_loss = train_loss * 1.1
    return {
        "num": num, "train_loss": train_loss, "val_loss": val_loss, "lr": 1e-3,
        "epoch_seconds": 12.0 if num == 1 else 10.0, "eta_seconds": 0.0, "samples_per_second": 50.0,
        "loss_gap": 0.1, "skipped_steps": 0,
        "train_recon": train_loss - 4.0, "train_kl": 4.0, "val_recon": val_loss - 4.2, "val_kl": 4.2,
        "kl_weight": min(1.0, num / 5), "active_units": 12,
    }


def preview(epoch: int, kind: str = "reconstruction", index: int = 0, **patch: Any) -> dict[str, Any]:
    folder = f"previews/epoch_{epoch:03d}"
    data = {"epoch": epoch, "kind": kind, "index": index, "wav": f"{folder}/{kind}_{index}.wav",
            "png": f"{folder}/{kind}_{index}.png", "sample_rate": 16000, "num_samples": 16000,
            "peak": 0.5, "rms": 0.1, "source": "val/a.wav" if kind != "prior" else None}
    data.update(patch)
    return data


def default_previews(n: int) -> list[dict[str, Any]]:
    epochs = sorted({e for e in range(1, n + 1) if e % PREVIEW_EVERY == 0} | {n})
    return [preview(e, kind) for e in epochs for kind in ("original", "reconstruction", "prior")]


def _checkpoint(name: str, epoch: int, val_loss: float) -> dict[str, Any]:
    return {"path": f"checkpoints/{name}_model.pt", "exists": True, "loads": True, "has_model_state": True,
            "has_optimizer_state": True, "epoch": epoch, "val_loss": val_loss}


def vae_evidence(n: int = 5, epochs: dict[int, dict[str, Any]] | None = None,
                 previews: list[dict[str, Any]] | None = None, **fields: Any) -> Evidence:
    """A healthy VAE run of ``n`` epochs; ``epochs={5: {"val_kl": 0.1}}`` patches one
    epoch, ``previews=[...]`` replaces the previews, other keywords the Evidence's fields."""
    records = [vae_epoch(i) for i in range(1, n + 1)]
    for num, patch in (epochs or {}).items():
        records[num - 1].update(patch)
    best = min(records, key=lambda r: r["val_loss"])
    data: dict[str, Any] = {
        "job_name": "vae-baseline", "task": "vae", "config_hash": "abc", "status": "completed", "completed": True,
        "reason": "reached the final epoch", "epochs_planned": n, "epochs": records,
        "initial_train_loss": records[0]["train_loss"], "final_train_loss": records[-1]["train_loss"],
        "best_val_loss": best["val_loss"], "best_epoch": best["num"],
        "checkpoints": {"best": _checkpoint("best", best["num"], best["val_loss"]),
                        "last": _checkpoint("last", n, records[-1]["val_loss"])},
        "periodic_checkpoints": [f"checkpoint_epoch_{i}.pt" for i in range(max(1, n - 2), n + 1)],
        "timings": {"total_seconds": 12.0 + 10.0 * (n - 1), "epoch_seconds": [r["epoch_seconds"] for r in records]},
        "previews": default_previews(n) if previews is None else previews,
    }
    data.update(fields)
    return Evidence.model_validate(data)


def vae_files(ev: Evidence, **overrides: Any) -> RunFiles:
    """The run's files as the runner reads them: every listed preview on disk."""
    log = "\n".join(f"EPOCH {e.num}/{ev.epochs_planned} train_loss={e.train_loss}" for e in ev.epochs)
    present = frozenset([p.wav for p in ev.previews] + [p.png for p in ev.previews if p.png])
    data: dict[str, Any] = {
        "log_text": log + "\nTraining complete\n",
        "metrics_json": {"epochs": [{"num": e.num} for e in ev.epochs]},
        "report_text": None, "run_dir": "02_baseline", "existing_files": present,
    }
    data.update(overrides)
    return RunFiles(**data)


def run_vae(ev: Evidence | None = None, files: RunFiles | None = None, spec: PipelineSpec | None = None,
            preview_every: int | None = PREVIEW_EVERY) -> dict[str, Any]:
    ev = ev or vae_evidence()
    checks = execution_checks(ev, files or vae_files(ev), None, spec or vae_spec(), 3600.0,
                              checkpoint_every=1, keep_periodic=3, preview_every=preview_every)
    return {c.id: c for c in checks}


def audio_report(files: dict[str, int] | None = None, **audio: Any) -> DataReport:
    """A healthy audio data report (12 files); ``audio`` patches its audio section,
    the report's own fields go in ``audio["report"]``."""
    report_fields = audio.pop("report", {})
    per_split = files or {"train": 8, "val": 2, "test": 2}
    section = {
        "sample_rate": 16000, "chunk_seconds": 1.0, "files": per_split,
        "chunks": {k: v * 4 for k, v in per_split.items()},
        "source_sample_rates": {"44100": 7, "16000": 5}, "channels": {"1": 10, "2": 2},
        "durations_seconds": {"min": 0.8, "max": 9.5, "mean": 4.1, "total": 49.2},
    }
    section.update(audio)
    total = sum(per_split.values())
    data = {
        "source": "/data/sounds", "root": "/data/sounds", "layout": "split", "seed": 42, "classes": [],
        "counts": {}, "requested_fractions": {"train": 0.68, "val": 0.16, "test": 0.16},
        "actual_fractions": {k: v / total for k, v in per_split.items()} if total else {},
        "total_samples": total, "audio": section,
    }
    data.update(report_fields)
    return DataReport.model_validate(data)


ENVIRONMENT = {
    "python_version": "3.11.9", "torch_version": "2.4.0", "ray_version": "2.40.0",
    "code_version": {"git_commit": "0123456789abcdef"}, "cuda_version": None, "cuda_available": False,
    "gpu_count": 0, "gpus": [], "nvidia_driver_version": None,
    "seeds": {"python": 42, "numpy": 42, "torch": 42}, "notes": {"gpus": "no GPU"},
}


def vae_planning(report: DataReport | None = None, spec: PipelineSpec | None = None) -> GateResult:
    preflight = PreflightReport(ok=True, model="vae-small", batch_shape=[8, 1, 64, 63], loss=120.0,
                                loss_finite=True, grads_finite=True, device="cpu")
    return evaluate_planning(ENVIRONMENT, [], report if report is not None else audio_report(), preflight,
                             spec or vae_spec(), run_dir="01_planning")


# ------------------------------------------------------------------ Planning

def test_vae_planning_gate_passes_with_the_audio_checks():
    gate = vae_planning()
    assert gate.passed, [(c.id, c.message) for c in gate.failures]
    assert [c.id for c in gate.checks] == [
        "seeds-fixed", "environment-documented", "config-valid", "data-reachable", "audio-quality",
        "split-proportions", "split-integrity", "samples-finite", "preflight"]
    reachable = gate.check("data-reachable")
    assert reachable.value == 12 and reachable.evidence == "01_planning/data_report.json"
    # sample rates, channels and durations are quoted
    for quoted in ("16000 Hz", "44100 Hz x7", "0.80s-9.50s", "total 49.20s", "train 8"):
        assert quoted in reachable.message, quoted


def test_classification_planning_keeps_its_own_data_checks():
    spec = PipelineSpec.model_validate({"data": {"source": "builtin:digits"}})
    gate = evaluate_planning(ENVIRONMENT, [], audio_report(), None, spec)
    assert [c.id for c in gate.checks][3:7] == ["data-reachable", "split-proportions", "split-integrity",
                                               "samples-finite"]
    assert "classification needs at least 2" in gate.check("data-reachable").message


@pytest.mark.parametrize("files, result", [
    ({"train": 2, "val": 1, "test": 0}, "fail"),
    ({"train": 3, "val": 1, "test": 0}, "fail"),
    ({"train": 3, "val": 1, "test": 1}, "pass"),
])
def test_fewer_than_five_usable_files_fail_naming_the_count(files, result):
    gate = vae_planning(audio_report(files))
    check = gate.check("data-reachable")
    assert check.result == result and check.value == sum(files.values())
    if result == "fail":
        n = sum(files.values())
        assert f"{n} usable audio files; the vae task needs at least 5" in check.message
        assert not gate.passed


def test_over_500_files_pass_with_a_note():
    check = vae_planning(audio_report({"train": 420, "val": 60, "test": 40})).check("data-reachable")
    assert check.result == "pass" and check.value == 520
    assert "more than the 500" in check.message


def test_a_report_without_audio_fails_data_reachable():
    report = audio_report().model_copy(update={"audio": None})
    gate = vae_planning(report)
    assert gate.check("data-reachable").result == "fail"
    assert "no audio section" in gate.check("data-reachable").message


def test_corrupt_files_are_listed_not_fatal():
    report = audio_report(report={"unreadable_files": [
        {"path": "train/broken.wav", "error": "Error opening: File contains data in an unknown format"},
        {"path": "val/empty.flac", "error": "truncated"}]})
    gate = vae_planning(report)
    check = gate.check("samples-finite")
    assert check.result == "warn" and check.value == 2
    assert "train/broken.wav" in check.message and "val/empty.flac" in check.message
    assert gate.passed
    assert "2 more unreadable" in gate.check("data-reachable").message


def test_no_usable_file_at_all_fails():
    report = audio_report({"train": 0, "val": 0, "test": 0}, report={
        "unreadable_files": [{"path": f"f{i}.wav", "error": "bad"} for i in range(3)]})
    gate = vae_planning(report)
    assert gate.check("samples-finite").result == "fail"
    assert "all 3 unreadable" in gate.check("samples-finite").message
    assert gate.check("data-reachable").result == "fail"


def test_silent_and_clipped_files_warn_with_the_list():
    report = audio_report(
        silent_files=[{"path": "hum.wav", "split": "train", "detail": "-72.0 dBFS", "value": -72.0}],
        clipped_files=[{"path": "loud.wav", "split": "val", "detail": "3.1% of samples at full scale", "value": 0.031}],
    )
    gate = vae_planning(report)
    check = gate.check("audio-quality")
    assert check.result == "warn" and check.value == 2
    assert "1 silent: train/hum.wav (-72.0 dBFS)" in check.message
    assert "1 clipped: val/loud.wav" in check.message
    assert gate.passed
    assert vae_planning().check("audio-quality").result == "pass"


def test_chunk_leakage_fails_split_integrity_naming_the_file():
    report = audio_report(chunk_leakage=[{"path": "birds/dawn.wav", "splits": ["train", "val"]}])
    gate = vae_planning(report)
    check = gate.check("split-integrity")
    assert check.result == "fail" and check.value == 1
    assert "birds/dawn.wav (train, val)" in check.message
    assert "chunks of one file in two splits is leakage" in check.message
    assert not gate.passed
    assert vae_planning().check("split-integrity").result == "pass"


def test_identical_audio_across_splits_fails_split_integrity():
    report = audio_report(report={"duplicates_across_splits": [
        {"hash": "ab", "files": [{"split": "train", "path": "a.wav"}, {"split": "test", "path": "copy.wav"}]}]})
    check = vae_planning(report).check("split-integrity")
    assert check.result == "fail" and "train/a.wav = test/copy.wav" in check.message


def test_non_finite_samples_fail():
    report = audio_report(report={"nonfinite_samples": [
        {"path": "glitch.wav", "split": "train", "nan_count": 3, "inf_count": 0}]})
    check = vae_planning(report).check("samples-finite")
    assert check.result == "fail" and "train/glitch.wav (3 NaN, 0 Inf)" in check.message


# ------------------------------------------------------------ execution checks

def test_healthy_vae_run_passes_every_execution_check():
    checks = run_vae()
    assert execution_passed(list(checks.values()))
    for cid in ("completed", "loss-decreased", "losses-finite", "best-checkpoint", "last-checkpoint", "logs",
                "recon-decreased", "posterior-collapse", "overfit-gap", "previews", "retention"):
        assert checks[cid].result == "pass", (cid, checks[cid].message)


def test_classifier_only_checks_do_not_run_for_the_vae():
    checks = run_vae()
    assert checks["leakage-suspect"].result == "skip"
    assert "not applicable: task vae reports no validation fraction" in checks["leakage-suspect"].message
    # overfit-gap is the relative loss gap, not the accuracy gap
    assert checks["overfit-gap"].threshold == 0.20 and checks["overfit-gap"].value == 0.1


@pytest.mark.parametrize("kl, result", [(0.0, "fail"), (0.3, "fail"), (0.4999, "fail"), (0.5, "pass"), (2.0, "pass")])
def test_posterior_collapse_fails_under_half_a_nat(kl, result):
    check = run_vae(vae_evidence(epochs={5: {"val_kl": kl}}))["posterior-collapse"]
    assert check.result == result and check.value == round(kl, 4) and check.mandatory
    if result == "fail":
        assert f"val_kl {kl:.4f}" in check.message
        assert "posterior collapse" in check.message and "posterior-collapse" in check.message
        assert "KL warm-up" in check.message


def test_posterior_collapse_reads_the_last_epoch():
    check = run_vae(vae_evidence(epochs={1: {"val_kl": 0.01}}))["posterior-collapse"]
    assert check.result == "pass"


def test_missing_val_kl_fails_posterior_collapse():
    ev = vae_evidence()
    last = ev.epochs[-1].model_dump()
    last.pop("val_kl")
    ev = ev.model_copy(update={"epochs": [*ev.epochs[:-1], type(ev.epochs[-1]).model_validate(last)]})
    check = run_vae(ev)["posterior-collapse"]
    assert check.result == "fail" and "no val_kl" in check.message


def test_collapse_sends_the_baseline_to_fix():
    ev = vae_evidence(epochs={5: {"val_kl": 0.2}})
    checks = list(run_vae(ev).values())
    decision, reason = decide_after_baseline(ev, execution_passed(checks), vae_spec())
    assert decision == "fix" and "execution check failed" in reason
    decision, _ = decide_after_baseline(vae_evidence(), execution_passed(list(run_vae().values())), vae_spec())
    assert decision == "optimize"


@pytest.mark.parametrize("gap, result", [(0.1, "pass"), (0.2, "pass"), (0.35, "warn")])
def test_overfitting_gap_warns_and_does_not_stop_the_run(gap, result):
    ev = vae_evidence(epochs={5: {"loss_gap": gap, "val_loss": vae_epoch(5)["train_loss"] * (1 + gap)}})
    checks = run_vae(ev)
    check = checks["overfit-gap"]
    assert check.result == result and not check.mandatory and check.value == gap
    if result == "warn":
        assert "training continues" in check.message
    assert execution_passed(list(checks.values()))


@pytest.mark.parametrize("previews, needle", [
    ([], "No reconstruction preview was written"),
    ([preview(5, "prior")], "No reconstruction preview was written"),
    ([preview(5, rms=0.0)], "silent"),
    ([preview(5, rms=5e-5)], "silent"),
    ([preview(5, peak=0.0)], "silent (peak 0)"),
    ([preview(5, rms=NAN)], "not finite"),
    ([preview(5), preview(5, "prior", rms=0.0)], "silent"),
    ([preview(5, num_samples=0)], "empty"),
    ([preview(5, wav="../../etc/passwd")], "outside the run directory"),
])
def test_previews_fail_when_missing_or_silent(previews, needle):
    check = run_vae(vae_evidence(previews=previews))["previews"]
    assert check.result == "fail" and check.mandatory
    assert needle in check.message


def test_previews_fail_when_a_listed_wav_is_not_on_disk():
    ev = vae_evidence()
    present = frozenset(p.wav for p in ev.previews if p.kind != "reconstruction")
    check = run_vae(ev, vae_files(ev, existing_files=present))["previews"]
    assert check.result == "fail" and "previews/epoch_005/reconstruction_0.wav" in check.message


def test_previews_fail_when_nobody_looked_on_disk():
    ev = vae_evidence()
    check = run_vae(ev, vae_files(ev, existing_files=None))["previews"]
    assert check.result == "fail" and "did not look" in check.message


def test_previews_cadence_gap_and_missing_mel_warn():
    ev = vae_evidence(n=10, previews=[preview(10, "reconstruction")])
    check = run_vae(ev)["previews"]
    assert check.result == "warn" and "epoch(s) 5" in check.message
    ev = vae_evidence()
    wavs_only = frozenset(p.wav for p in ev.previews)
    check = run_vae(ev, vae_files(ev, existing_files=wavs_only))["previews"]
    assert check.result == "warn" and "mel image(s) missing" in check.message


def test_recon_decreased():
    flat = {n: {"val_recon": 90.0} for n in range(1, 6)}
    check = run_vae(vae_evidence(epochs=flat))["recon-decreased"]
    assert check.result == "fail" and check.value == 0.0 and "did not learn" in check.message
    assert run_vae()["recon-decreased"].result == "pass"


def test_recon_decreased_falls_back_to_train_recon_and_fails_without_either():
    ev = vae_evidence()

    def without(names: tuple[str, ...]) -> Evidence:
        epochs = [type(e).model_validate({k: v for k, v in e.model_dump().items() if k not in names})
                  for e in ev.epochs]
        return ev.model_copy(update={"epochs": epochs})

    check = run_vae(without(("val_recon",)))["recon-decreased"]
    assert check.result == "pass" and "train_recon" in check.message
    check = run_vae(without(("val_recon", "train_recon")))["recon-decreased"]
    assert check.result == "fail" and "No epoch reported" in check.message


@pytest.mark.parametrize("kept, result, needle", [
    (["checkpoint_epoch_3.pt", "checkpoint_epoch_4.pt", "checkpoint_epoch_5.pt"], "pass", "Kept"),
    (["checkpoint_epoch_2.pt", "checkpoint_epoch_3.pt", "checkpoint_epoch_4.pt", "checkpoint_epoch_5.pt"],
     "fail", "kept beyond the 3 most recent: checkpoint_epoch_2.pt"),
    (["checkpoint_epoch_3.pt", "checkpoint_epoch_4.pt"], "fail", "missing checkpoint_epoch_5.pt"),
])
def test_retention(kept, result, needle):
    check = run_vae(vae_evidence(periodic_checkpoints=kept))["retention"]
    assert check.result == result and needle in check.message


def test_the_vae_checks_run_in_every_training_gate():
    ev = vae_evidence(epochs={5: {"val_kl": 0.1}})
    files = vae_files(ev)
    baseline = evaluate_baseline(ev, files, None, vae_spec(), 3600.0, "fix", None, preview_every=PREVIEW_EVERY)
    assert baseline.check("posterior-collapse").result == "fail" and not baseline.passed
    optimization = evaluate_optimization(ev, files, None, vae_spec(), 3600.0, "baseline 1.0", preview_every=5)
    assert optimization.check("posterior-collapse").result == "fail"
    final = evaluate_finalization(ev, files, None, vae_spec(), 3600.0, None, None, None, None, None)
    assert final.check("final-training/posterior-collapse").result == "fail"
    assert final.check("final-training").result == "fail"


def test_the_baseline_report_of_a_vae_passes_the_report_check():
    ev = vae_evidence()
    job = JobConfig(run_dir="/runs/x", task="vae").model_dump(mode="json", by_alias=True)
    text = render_training_results("Baseline results", ev, job, ("optimize", "target not met"), VAE)
    gate = evaluate_baseline(ev, vae_files(ev, report_text=text), None, vae_spec(), 3600.0, "optimize", None,
                             preview_every=PREVIEW_EVERY)
    assert gate.check("report").result == "pass", gate.check("report").message
    assert gate.passed, [(c.id, c.message) for c in gate.failures]


# ------------------------------------------------------------- finalization

def vae_test(**metrics: Any) -> TestEvaluation:
    values = {"test_loss": 45.5, "test_recon": 41.25, "test_kl": 4.25, **metrics}
    return TestEvaluation(task="vae", samples=48, metrics=values, loss=values["test_loss"],
                          checkpoint="checkpoints/best_model.pt", checkpoint_epoch=4, evaluated_at="now")


def vae_export(parts: dict[str, str] | None = None, **parity: Any) -> ExportReport:
    check = {"runtime": "onnxruntime", "samples": 16, "max_abs_diff": 2e-6, "allclose": True,
             "top1_agree": 0, "top1_agree_all": False, **parity}
    return ExportReport.model_validate({
        "ok": True, "input_name": "z", "output_name": "log_mel", "input_shape": ["batch", 16],
        "dynamic_batch": True,
        "artifacts": [{"format": "onnx", "kind": "onnx", "path": "decoder.onnx", "bytes": 10, "checker_ok": True,
                       "load": "onnxruntime.InferenceSession('decoder.onnx')"}],
        "parity": [check], "parts": {"decoder": "decoder.onnx"} if parts is None else parts,
    })


def vae_final(test: TestEvaluation | None = None, export: ExportReport | None = None,
              guide: str | None = None) -> GateResult:
    spec = vae_spec(finalization={"export": ["onnx"]}, target={"metric": "val_loss", "value": 50.0})
    ev = vae_evidence()
    export = export or vae_export()
    test = test or vae_test()
    if guide is None:
        guide = render_deployment_guide(export, "vae-small", test)
    return evaluate_finalization(ev, vae_files(ev, run_dir="05_finalization"), None, spec, 3600.0, test, export,
                                 guide, None, None, preview_every=PREVIEW_EVERY)


def test_vae_production_ready_gate_passes():
    gate = vae_final()
    assert gate.passed, [(c.id, c.message) for c in gate.failures]
    assert gate.check("test-evaluated").value == 45.5
    assert "reconstruction 41.2500 + KL 4.2500" in gate.check("test-evaluated").message
    assert gate.check("target-met-on-test").result == "pass"
    assert gate.check("export-parity").result == "pass"  # no top-1 for a decoder


def test_vae_test_evaluation_needs_every_term():
    check = vae_final(test=vae_test(test_kl=None)).check("test-evaluated")
    assert check.result == "fail" and "test_kl=None" in check.message


def test_vae_export_needs_the_decoder():
    check = vae_final(export=vae_export(parts={"encoder": "encoder.onnx"})).check("exported")
    assert check.result == "fail" and "No decoder was exported" in check.message


def test_vae_parity_still_needs_allclose():
    check = vae_final(export=vae_export(allclose=False, max_abs_diff=0.3)).check("export-parity")
    assert check.result == "fail" and "differ" in check.message


def test_vae_guide_must_say_how_to_sample():
    guide = render_deployment_guide(vae_export(), "vae-small", vae_test()).replace("log_mel_to_audio", "invert")
    check = vae_final(guide=guide).check("deployment-guide")
    assert check.result == "fail" and "log_mel_to_audio" in check.message


# ------------------------------------------------------------------ inputs

def test_safe_relative_paths():
    assert safe_relative("previews/epoch_005/a.wav")
    for bad in ("", "/etc/passwd", "../x.wav", "previews/../../x", "C:/x.wav", "a\\b.wav"):
        assert not safe_relative(bad), bad


def test_files_present_looks_only_inside_the_run_directory(tmp_path):
    (tmp_path / "run" / "previews").mkdir(parents=True)
    (tmp_path / "run" / "previews" / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "outside.wav").write_bytes(b"RIFF")
    (tmp_path / "run" / "previews" / "link.wav").symlink_to(tmp_path / "outside.wav")
    found = files_present(tmp_path / "run", ["previews/a.wav", "previews/b.wav", "../outside.wav",
                                             "previews/link.wav", "previews"])
    assert found == frozenset({"previews/a.wav"})
