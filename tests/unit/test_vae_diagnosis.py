"""Phase 3/4 for the vae task: the primary issue of a VAE run, the ranked
remedies, and that applying them changes the next job's config. Pure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_vae_gates import NAN, audio_report, vae_epoch, vae_evidence, vae_spec
from trainpipe_operator.diagnosis import (
    TrainSettings,
    apply_recommendations,
    decide_after_diagnostics,
    diagnose,
    plan_changes,
    recommend,
    render_diagnostic_report,
)
from trainpipe_operator.gates.diagnostics import evaluate_diagnostics
from trainpipe_operator.pipeline.jobs import build_job
from trainpipe_trainer.contract.job_config import JobConfig, VaeConfig

VAE_SETTINGS = TrainSettings(task="vae", model_name="vae-small", epochs=20, augment=[])


def collapsed(**patch: Any):
    return vae_evidence(epochs={5: {"val_kl": 0.12, "active_units": 0, **patch}})


def job_for(settings: TrainSettings) -> JobConfig:
    base = {"runDir": "/runs/x", "task": "vae", "data": {"source": "/data/sounds"}}
    return JobConfig.model_validate(settings.apply_to_job_config(base))


# -- posterior collapse ---------------------------------------------------------


def test_posterior_collapse_is_diagnosed_with_the_value():
    d = diagnose(collapsed(), vae_spec())
    assert d.task == "vae" and d.primary_issue == "posterior-collapse"
    signal = d.signals_for("posterior-collapse")[0]
    assert signal.signal == "kl-collapsed" and signal.value == 0.12 and signal.threshold == 0.5
    assert "val_kl 0.1200" in d.why and "0 active latent unit(s)" in d.why


@pytest.mark.parametrize("kl", [0.5, 0.8, 4.0])
def test_no_collapse_at_or_above_half_a_nat(kl):
    d = diagnose(vae_evidence(epochs={5: {"val_kl": kl}}), vae_spec())
    assert not d.fired("kl-collapsed") and d.primary_issue != "posterior-collapse"


def test_collapse_remedies_are_ranked_warmup_free_bits_beta_cyclical():
    d = diagnose(collapsed(), vae_spec())
    recs = recommend(d, VAE_SETTINGS, vae_spec())
    assert [r.id for r in recs] == ["posterior-collapse/kl-warmup", "posterior-collapse/free-bits",
                                    "posterior-collapse/lower-beta", "posterior-collapse/cyclical-schedule"]
    assert all(r.changes and not r.requires_human for r in recs)
    changes = {c.path: (c.old, c.new) for r in recs for c in r.changes}
    assert changes == {
        "vae.klAnneal.warmupEpochs": (5.0, 10.0),
        "vae.freeBits": (0.1, 0.25),
        "vae.beta": (1.0, 0.5),
        "vae.klAnneal.schedule": ("linear", "cyclical"),
    }


def test_applying_the_collapse_remedies_changes_the_next_jobs_vae_section():
    d = diagnose(collapsed(), vae_spec())
    new, applied = apply_recommendations(VAE_SETTINGS, recommend(d, VAE_SETTINGS, vae_spec()))
    job = job_for(new)
    assert job.vae.kl_anneal.warmup_epochs == 10.0 and job.vae.free_bits == 0.25 and job.vae.beta == 0.5
    assert job.vae.kl_anneal.schedule == "cyclical"
    assert job_for(VAE_SETTINGS).vae == VaeConfig()
    assert len(applied) == 4
    # the config hash of a vae job follows the change
    assert job.config_hash() != job_for(VAE_SETTINGS).config_hash()


def test_kl_warmup_is_capped_at_half_the_run():
    d = diagnose(collapsed(), vae_spec())
    settings = VAE_SETTINGS.model_copy(update={"epochs": 12, "kl_warmup_epochs": 5.0})
    rec = next(r for r in recommend(d, settings, vae_spec()) if r.id.endswith("kl-warmup"))
    assert rec.changes[0].new == 6.0
    done = VAE_SETTINGS.model_copy(update={"epochs": 10, "kl_warmup_epochs": 5.0})
    assert not any(r.id.endswith("kl-warmup") for r in recommend(d, done, vae_spec()))


def test_collapse_outranks_a_stall_and_its_baseline_goes_again_with_the_fix():
    flat = {n: {"train_loss": 100.0 - 0.5 * n, "val_loss": 110.0} for n in range(1, 6)}
    flat[5]["val_kl"] = 0.05
    ev = vae_evidence(epochs=flat, initial_train_loss=99.5, final_train_loss=97.5)
    d = diagnose(ev, vae_spec())
    assert d.primary_issue == "posterior-collapse" and "convergence-stall" in d.secondary_issues
    decision, reason = decide_after_diagnostics(d, recommend(d, VAE_SETTINGS, vae_spec()))
    assert decision == "optimize" and "clear path" in reason


def test_the_diagnostics_gate_accepts_posterior_collapse_and_the_report_names_it():
    d = diagnose(collapsed(), vae_spec())
    recs = recommend(d, VAE_SETTINGS, vae_spec())
    decision = decide_after_diagnostics(d, recs)
    text = render_diagnostic_report(d, recs, collapsed(), 1, decision)
    assert "**Primary issue: posterior-collapse**" in text
    assert "val_kl 0.1200 nats per sample" in text and "active units 0" in text
    assert "vae.klAnneal.warmupEpochs: 5 -> 10" in text
    gate = evaluate_diagnostics(d, recs, text, decision)
    assert gate.passed and gate.check("root-cause-named").result == "pass"


# -- overfitting, underfitting, nan-loss, data --------------------------------------


def overfit_evidence():
    patch = {}
    for n in range(1, 6):
        train = vae_epoch(n)["train_loss"]
        patch[n] = {"val_loss": train * 1.4, "loss_gap": 0.4}
    return vae_evidence(epochs=patch)


def test_overfitting_gap_is_diagnosed_and_remedied_with_audio_augmentation_and_a_smaller_latent():
    d = diagnose(overfit_evidence(), vae_spec())
    assert d.primary_issue == "overfitting" and d.fired("loss-gap")
    recs = recommend(d, VAE_SETTINGS, vae_spec())
    ids = [r.id for r in recs]
    assert ids[:2] == ["overfitting/augmentation", "overfitting/weight-decay"]
    assert "overfitting/smaller-latent" in ids
    new, _ = apply_recommendations(VAE_SETTINGS, recs)
    job = job_for(new)
    assert job.data.augment == ["gain", "shift", "noise", "mask"]
    assert job.vae.latent_dim == 8 and job.train.weight_decay == 0.1


def test_no_overfitting_signal_within_twenty_percent():
    d = diagnose(vae_evidence(), vae_spec())
    assert not d.fired("loss-gap")


def test_underfitting_recommends_a_larger_vae_model_more_epochs_higher_lr():
    d = diagnose(vae_evidence(), vae_spec(target={"metric": "val_loss", "value": 10.0}))
    assert d.primary_issue == "underfitting" and d.fired("both-above-target")
    recs = recommend(d, VAE_SETTINGS, vae_spec())
    changes = {c.path: c.new for r in recs for c in r.changes}
    assert changes["model.name"] == "vae-medium" and changes["train.epochs"] == 40
    assert changes["train.lr"] == pytest.approx(3e-3)
    # still improving at the last epoch: training longer (high impact, low effort) ranks first
    assert [r.id for r in recs][:2] == ["underfitting/longer-training", "underfitting/bigger-model"]
    assert job_for(apply_recommendations(VAE_SETTINGS, recs)[0]).model.name == "vae-medium"


def test_a_val_recon_target_is_compared_with_train_recon():
    """The catalog's primary target: val_recon, lower is better, against its
    train counterpart (train_recon), not the train loss."""
    short = diagnose(vae_evidence(), vae_spec(target={"metric": "val_recon", "value": 5.0}))
    assert short.metric == "val_recon" and short.lower_is_better
    assert short.primary_issue == "underfitting" and short.fired("both-above-target")
    assert "train_recon 36.9600 and val_recon 40.8560" in short.why
    between = diagnose(vae_evidence(), vae_spec(target={"metric": "val_recon", "value": 38.0}))
    assert between.primary_issue == "overfitting" and between.fired("train-meets-target")
    assert "train_recon 36.9600 meets the target 38" in between.why


def test_the_largest_vae_model_gets_no_bigger_model():
    d = diagnose(vae_evidence(), vae_spec())
    recs = recommend(d, VAE_SETTINGS.model_copy(update={"model_name": "vae-large"}), vae_spec())
    assert "underfitting/bigger-model" not in [r.id for r in recs]
    assert all(c.new not in ("resnet18", "resnet50") for r in recs for c in r.changes)


def test_non_finite_loss_lowers_the_lr_and_clips():
    d = diagnose(vae_evidence(epochs={4: {"val_loss": NAN}}), vae_spec())
    assert d.primary_issue == "nan-loss"
    recs = recommend(d, VAE_SETTINGS, vae_spec())
    assert [r.id for r in recs][:2] == ["nan-loss/lower-lr", "nan-loss/grad-clip"]


def test_chunk_leakage_needs_a_person_and_sends_the_pipeline_back_to_baseline():
    report = audio_report(chunk_leakage=[{"path": "birds/dawn.wav", "splits": ["train", "val"]}])
    d = diagnose(vae_evidence(), vae_spec(), data_report=report)
    assert d.primary_issue == "data-quality" and d.fired("chunk-leakage") and d.leak_suspected
    assert "birds/dawn.wav" in d.why
    recs = recommend(d, VAE_SETTINGS, vae_spec())
    assert recs[0].id == "data-quality/split-by-file" and all(r.requires_human for r in recs)
    assert decide_after_diagnostics(d, recs)[0] == "baseline-again"


def test_a_classifier_diagnosis_is_unchanged_by_the_vae_rules():
    from tests.unit.test_diagnosis import make_evidence

    ev = make_evidence([2.0, 1.0, 0.5, 0.3], [2.1, 1.2, 1.0, 1.1], [0.5, 0.8, 0.95, 0.99], [0.5, 0.6, 0.65, 0.7])
    d = diagnose(ev, vae_spec(task="classification", target={"metric": "val_acc", "value": 0.9}))
    assert d.task == "classification" and d.primary_issue == "overfitting"
    assert [r.id for r in recommend(d, TrainSettings(), vae_spec())][0].startswith("overfitting/")
    assert "posterior-collapse" not in {s.issue for s in d.signals}


# -- settings -----------------------------------------------------------------------


def test_vae_settings_round_trip_through_the_job_config():
    job = {"runDir": "/r", "task": "vae", "data": {"source": "/d", "augment": ["gain"]},
           "model": {"name": "vae-medium"},
           "vae": {"latentDim": 32, "beta": 0.5, "freeBits": 0.2,
                   "kl_anneal": {"schedule": "cyclical", "warmupEpochs": 3, "cycles": 2}}}
    s = TrainSettings.from_job_config(job)
    assert (s.latent_dim, s.beta, s.free_bits) == (32, 0.5, 0.2)
    assert (s.kl_schedule, s.kl_warmup_epochs, s.kl_cycles) == ("cyclical", 3.0, 2)
    assert s.augment == ["gain"] and s.model_name == "vae-medium"
    out = s.model_copy(update={"kl_cycles": 6, "latent_dim": 8}).apply_to_job_config(job)
    assert "kl_anneal" not in out["vae"]  # the snake_case spelling is replaced, not duplicated
    cfg = JobConfig.model_validate(out)
    assert (cfg.vae.kl_anneal.cycles, cfg.vae.kl_anneal.schedule, cfg.vae.latent_dim) == (6, "cyclical", 8)


def test_a_change_out_of_the_vae_bounds_is_skipped():
    from trainpipe_operator.diagnosis import ConfigChange, Recommendation

    rec = Recommendation(id="x/latent", issue="overfitting", title="t", rationale="r", expected_impact="high",
                         expected_gain=0.1, effort="low",
                         changes=[ConfigChange(path="vae.latentDim", old=16, new=1)])
    plan = plan_changes(VAE_SETTINGS, [rec])
    assert plan.settings.latent_dim == 16 and plan.skipped and "invalid" in plan.skipped[0].note


def test_a_classification_job_is_unchanged_by_the_vae_settings():
    spec = vae_spec(task="classification", target={"metric": "val_acc", "value": 0.9})
    default = build_job("p", "Baseline", spec, TrainSettings(), Path("/runs/p"), runtime="local")
    assert default.vae == VaeConfig()
    other = build_job("p", "Baseline", spec, TrainSettings(latent_dim=64), Path("/runs/p"), runtime="local")
    assert other.config_hash() == default.config_hash()  # a classifier's hash leaves vae out
