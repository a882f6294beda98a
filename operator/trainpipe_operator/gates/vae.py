"""The ``vae`` task's execution checks (seed 004; docs/gates.md, "The VAE
task"). ``execution.execution_checks`` adds them for a pipeline whose task
is ``vae`` (after the checks every task runs: there ``leakage-suspect`` is
skipped, the VAE reporting no accuracy, and ``overfit-gap`` is the relative
loss gap over ``OVERFIT_LOSS_GAP``, warn only), so the post-baseline, optimization-complete and production-ready
gates all run them.

Check ids:

* ``recon-decreased`` (mandatory): the reconstruction loss (``val_recon``,
  else ``train_recon``) fell from the first epoch to its best by at least
  ``NO_LEARNING_DECREASE``: the decoder learned something.
* ``posterior-collapse`` (mandatory): the last epoch's ``val_kl`` (nats per
  sample, before beta and free bits) is at least ``POSTERIOR_COLLAPSE_KL``;
  below, the encoder carries no information and the diagnosis names
  posterior-collapse.
* ``previews`` (mandatory): reconstruction previews were written, every wav
  the evidence lists exists under the run directory, none is silent.
* ``retention`` (mandatory): the 3 most recent periodic checkpoints (the
  job's ``train.keepPeriodic``), the best and the last are kept.

Every value a check reads comes from ``evidence.json`` (``EpochRecord.metric``
for the task's extras) or ``RunFiles.existing_files``; a check without its
evidence fails, it never passes.
"""

from __future__ import annotations

from trainpipe_operator.gates.checks import (
    Check,
    failed,
    first_few,
    is_finite,
    passed,
    skipped,
    warned,
)
from trainpipe_operator.gates.inputs import RunFiles, safe_relative
from trainpipe_operator.gates.thresholds import (
    NO_LEARNING_DECREASE,
    POSTERIOR_COLLAPSE_KL,
    PREVIEW_SILENT_RMS,
)
from trainpipe_trainer.contract.evidence import EpochRecord, Evidence, PreviewRecord

TASK = "vae"
DIAGNOSIS_POINTER = ("see the diagnosis (posterior-collapse): a longer KL warm-up, more free bits, a lower beta "
                     "or a cyclical KL schedule")
AUDIBLE_KINDS = ("reconstruction", "prior")


def is_vae(evidence: Evidence) -> bool:
    return evidence.task == TASK


def metric_series(evidence: Evidence, name: str) -> list[tuple[int, float | None]]:
    """(epoch, value) for every epoch; None where the epoch did not report it."""
    return [(e.num, e.metric(name)) for e in evidence.epochs]


def recon_series(evidence: Evidence) -> tuple[str, list[tuple[int, float | None]]]:
    """The reconstruction loss the checks read: val_recon where any epoch has
    it (the held-out split), else train_recon."""
    for name in ("val_recon", "train_recon"):
        series = metric_series(evidence, name)
        if any(v is not None for _, v in series):
            return name, series
    return "val_recon", []


def recon_decrease(evidence: Evidence) -> tuple[str, float | None, float | None, float | None]:
    """(metric, first, best, relative decrease) of the reconstruction loss;
    the decrease is None when it cannot be computed."""
    name, series = recon_series(evidence)
    values = [v for _, v in series if v is not None]
    if len(values) < 2 or not all(is_finite(v) for v in values):
        return name, values[0] if values else None, None, None
    first, best = values[0], min(values)
    if first == 0:
        return name, first, best, None
    return name, first, best, (first - best) / abs(first)


# ----------------------------------------------------------------- checks

def check_recon_decreased(evidence: Evidence, files: RunFiles) -> Check:
    ev = files.at(files.metrics_path)
    threshold = NO_LEARNING_DECREASE
    name, first, best, decrease = recon_decrease(evidence)
    _, series = recon_series(evidence)
    values = [v for _, v in series if v is not None]
    if not values:
        return failed("recon-decreased", None, threshold, ev,
                      "No epoch reported val_recon or train_recon: the reconstruction loss cannot be shown to fall.")
    if not all(is_finite(v) for v in values):
        bad = [f"epoch {n} {name}={v}" for n, v in series if v is not None and not is_finite(v)]
        return failed("recon-decreased", None, threshold, ev, f"Non-finite reconstruction loss: {first_few(bad)}.")
    if len(values) < 2:
        return failed("recon-decreased", None, threshold, ev,
                      f"Only one epoch reported {name}: a decrease cannot be shown.")
    if decrease is None:
        return failed("recon-decreased", None, threshold, ev,
                      f"The first epoch's {name} is 0: a relative decrease cannot be computed.")
    value = round(decrease, 4)
    if decrease >= threshold:
        return passed("recon-decreased", value, threshold, ev,
                      f"{name} fell {decrease:.1%} from {first:.4f} (first epoch) to {best:.4f} (best epoch), "
                      f"at least {threshold:.0%}.")
    return failed("recon-decreased", value, threshold, ev,
                  f"{name} fell only {decrease:.1%} from {first:.4f} (first epoch) to {best:.4f} (best epoch), "
                  f"under {threshold:.0%}: the decoder did not learn to reconstruct.")


def _active_units(record: EpochRecord) -> str:
    units = record.metric("active_units")
    return "" if units is None else f"; {units:g} active latent unit(s)"


def check_posterior_collapse(evidence: Evidence, files: RunFiles) -> Check:
    ev = files.at(files.metrics_path)
    threshold = POSTERIOR_COLLAPSE_KL
    if not evidence.epochs:
        return failed("posterior-collapse", None, threshold, ev, "No epoch finished: no val_kl was recorded.")
    last = evidence.epochs[-1]
    kl = last.metric("val_kl")
    if kl is None:
        return failed("posterior-collapse", None, threshold, ev,
                      f"Epoch {last.num} reported no val_kl: posterior collapse cannot be ruled out "
                      "(a check without evidence never passes).")
    if not is_finite(kl):
        return failed("posterior-collapse", None, threshold, ev, f"Epoch {last.num}'s val_kl is {kl}: not finite.")
    value = round(kl, 4)
    weight = last.metric("kl_weight")
    weighted = "" if weight is None else f" (KL weight {weight:g})"
    if kl >= threshold:
        return passed("posterior-collapse", value, threshold, ev,
                      f"val_kl {kl:.4f} nats per sample at epoch {last.num}{weighted}, at least {threshold:g}: "
                      f"the latent code carries information{_active_units(last)}.")
    return failed("posterior-collapse", value, threshold, ev,
                  f"val_kl {kl:.4f} nats per sample at epoch {last.num}{weighted} is under {threshold:g}: "
                  f"posterior collapse, the decoder ignores the latent code{_active_units(last)}; "
                  f"{DIAGNOSIS_POINTER}.")


def _silent(p: PreviewRecord) -> str | None:
    """Why a preview is silent or broken, None when it is audible."""
    if p.num_samples <= 0 or p.sample_rate <= 0:
        return f"empty ({p.num_samples} samples at {p.sample_rate} Hz)"
    if not (is_finite(p.peak) and is_finite(p.rms)):
        return f"not finite (peak {p.peak}, rms {p.rms})"
    if p.peak <= 0:
        return "silent (peak 0)"
    if p.rms <= PREVIEW_SILENT_RMS:
        return f"silent (rms {p.rms:.2g} <= {PREVIEW_SILENT_RMS:g})"
    return None


def expected_preview_epochs(evidence: Evidence, preview_every: int | None) -> list[int]:
    """Every ``preview_every``-th epoch and the last one (the trainer's cadence)."""
    if not preview_every or not evidence.epochs:
        return []
    nums = [e.num for e in evidence.epochs]
    return sorted({n for n in nums if n % preview_every == 0} | {nums[-1]})


def check_previews(evidence: Evidence, files: RunFiles, preview_every: int | None = None) -> Check:
    """At least one reconstruction preview; every listed wav on disk under the
    run directory (``files.existing_files``); none silent, empty or
    non-finite. Epochs of the cadence without a reconstruction warn."""
    ev = f"{files.at('evidence.json')} (previews)"
    threshold = f"reconstructions written; every wav present; rms > {PREVIEW_SILENT_RMS:g} and peak > 0"
    previews = evidence.previews
    recon = [p for p in previews if p.kind == "reconstruction"]
    if not recon:
        listed = f" (it lists {len(previews)} of other kinds)" if previews else ""
        return failed("previews", 0, threshold, ev,
                      f"No reconstruction preview was written: evidence.json lists none{listed}. The vae task "
                      "writes previews every vae.previewEvery epochs and at the last.")
    problems = []
    unsafe = [p.wav for p in previews if not safe_relative(p.wav)]
    unsafe += [p.png for p in previews if p.png and not safe_relative(p.png)]
    if unsafe:
        problems.append(f"path(s) outside the run directory: {first_few(unsafe, 3)}")
    if files.existing_files is None:
        problems.append("the runner did not look for the preview files on disk (no evidence, no pass)")
        missing_png: list[str] = []
    else:
        missing = [p.wav for p in previews if safe_relative(p.wav) and p.wav not in files.existing_files]
        if missing:
            problems.append(f"{len(missing)} wav file(s) listed but not under the run directory: {first_few(missing, 3)}")
        missing_png = [p.png for p in previews
                       if p.png and safe_relative(p.png) and p.png not in files.existing_files]
    silent = [f"{p.wav} {why}" for p in previews if p.kind in AUDIBLE_KINDS and (why := _silent(p))]
    if silent:
        problems.append(f"{len(silent)} silent or broken preview(s): {first_few(silent, 3)}")
    if problems:
        return failed("previews", len(recon), threshold, ev, "Previews unusable: " + "; ".join(problems) + ".")
    epochs_with = {p.epoch for p in recon}
    gaps = [str(n) for n in expected_preview_epochs(evidence, preview_every) if n not in epochs_with]
    kinds = {k: sum(1 for p in previews if p.kind == k) for k in ("reconstruction", "prior", "original")}
    counts = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
    loudest = max(recon, key=lambda p: p.rms)
    summary = (f"{len(previews)} previews ({counts}) over epoch(s) {first_few([str(n) for n in sorted(epochs_with)])}; "
               f"reconstruction rms up to {loudest.rms:.3g}")
    notes = []
    if gaps:
        notes.append(f"no reconstruction for epoch(s) {first_few(gaps)} although vae.previewEvery is {preview_every}")
    if missing_png:
        notes.append(f"{len(missing_png)} mel image(s) missing: {first_few(missing_png, 3)}")
    if notes:
        return warned("previews", len(recon), threshold, ev, f"{summary}; but " + "; ".join(notes) + ".")
    return passed("previews", len(recon), threshold, ev, f"{summary}; every wav present and audible.")


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def check_retention(evidence: Evidence, files: RunFiles, checkpoint_every: int | None,
                    keep_periodic: int | None = 3) -> Check:
    """docs/gates.md, "The VAE task": the ``keep_periodic`` most recent
    periodic checkpoints, the best and the last, and nothing older."""
    ev = files.at("checkpoints/")
    if not checkpoint_every or not keep_periodic:
        return skipped("retention", "periodic checkpoints are not configured", ev)
    if not evidence.epochs:
        return failed("retention", None, f"{keep_periodic} most recent + best + last", ev,
                      "No epoch finished: nothing was kept.")
    last = evidence.epochs[-1].num
    expected = [f"checkpoint_epoch_{n}.pt" for n in range(checkpoint_every * (last // checkpoint_every), 0,
                                                           -checkpoint_every)][:keep_periodic]
    threshold = f"{keep_periodic} most recent periodic ({', '.join(expected) or 'none yet'}) + best + last"
    found = {_basename(p) for p in evidence.periodic_checkpoints}
    problems = []
    missing = [n for n in expected if n not in found]
    if missing:
        problems.append(f"missing {first_few(missing)}")
    extra = sorted(found - set(expected))
    if extra:
        problems.append(f"kept beyond the {keep_periodic} most recent: {first_few(extra)}")
    for name in ("best", "last"):
        ckpt = evidence.checkpoints.get(name)
        if ckpt is None or not ckpt.exists:
            problems.append(f"no {name}_model.pt")
    if problems:
        return failed("retention", len(found), threshold, ev, "Checkpoint retention is off: " + "; ".join(problems) + ".")
    return passed("retention", len(found), threshold, ev,
                  f"Kept {', '.join(expected) or 'no periodic checkpoint yet'}, best_model.pt and last_model.pt.")


def vae_checks(
    evidence: Evidence,
    files: RunFiles,
    *,
    checkpoint_every: int | None = 1,
    keep_periodic: int | None = 3,
    preview_every: int | None = None,
) -> list[Check]:
    """The checks ``execution_checks`` appends for a VAE, in order."""
    return [
        check_recon_decreased(evidence, files),
        check_posterior_collapse(evidence, files),
        check_previews(evidence, files, preview_every),
        check_retention(evidence, files, checkpoint_every, keep_periodic),
    ]
