"""The execution checks: is a training run healthy? Shared by the post-baseline
gate (Phase 2), the optimization gate (Phase 4) and the production-ready gate
(Phase 5). Each check is a pure function of the evidence, the run's files, the
GPU measurement and the spec's thresholds.

Check ids, in order: completed, loss-decreased, loss-decrease-ratio,
losses-finite, gpu-utilization, duration, epoch-time-consistent,
best-checkpoint, last-checkpoint, periodic-checkpoints, logs, and the red
flags learned from earlier systems: leakage-suspect, memorization-suspect,
overfit-gap (warn-only, never mandatory).

Metrics are read by name through the task's catalog (``spec.task``):
``leakage-suspect`` watches the task's validation fraction to maximize
(classification: val_acc; a task without one skips it, saying so), and
``overfit-gap`` is the train-val accuracy gap for classification, the
relative train-val loss gap (seed 004, over ``OVERFIT_LOSS_GAP`` warns) for
every other task.

For a ``vae`` pipeline the VAE's own checks follow (``gates/vae.py``):
recon-decreased, posterior-collapse, previews and retention.
"""

from __future__ import annotations

import re
import statistics

from trainpipe_operator.gates.checks import (
    Check,
    failed,
    first_few,
    is_finite,
    passed,
    skipped,
    warned,
)
from trainpipe_operator.gates.inputs import GpuMeasurement, RunFiles
from trainpipe_operator.gates.thresholds import LEAKAGE_VAL_ACC, OVERFIT_LOSS_GAP
from trainpipe_operator.gates.vae import vae_checks
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.tasks import CLASSIFICATION, Metric, TaskCatalog, catalog_for
from trainpipe_trainer.contract.evidence import CheckpointCheck, Evidence

FINISHED = ("completed", "early_stopped")
COMPLETE_MARKER = "Training complete"
# "EPOCH 3/20 train_loss=..." (engine/loop.py); "EPOCH 3 ..." is accepted too.
EPOCH_LINE = re.compile(r"\bEPOCH\s+(\d+)\b")

# Red flags (docs/gates.md, "Execution checks": leakage-suspect, memorization-suspect);
# LEAKAGE_VAL_ACC lives in gates/thresholds.py, shared with the diagnosis.
MEMORIZATION_TRAIN_LOSS = 1e-3  # final train loss at or below this: suspect memorization
# SM activity (DCGM_FI_PROF_SM_ACTIVE, fraction of cycles an SM has a warp;
# docs/gates.md, gpu-utilization): under STUCK fails, under POOR warns.
SM_ACTIVE_GOOD = 0.8
SM_ACTIVE_POOR = 0.5
SM_ACTIVE_STUCK = 0.1


# ----------------------------------------------------------------- metrics

def train_losses(evidence: Evidence) -> tuple[float | None, float | None]:
    """(initial, final) train loss: the evidence's fields, else the first/last epoch."""
    initial = evidence.initial_train_loss
    final = evidence.final_train_loss
    if initial is None and evidence.epochs:
        initial = evidence.epochs[0].train_loss
    if final is None and evidence.epochs:
        final = evidence.epochs[-1].train_loss
    return initial, final


def loss_decrease_ratio(evidence: Evidence) -> float | None:
    """(initial - final) / initial train loss; None where it cannot be computed."""
    initial, final = train_losses(evidence)
    if not (is_finite(initial) and is_finite(final)) or initial is None or final is None:
        return None
    if initial <= 0:
        return None
    return (initial - final) / initial


def nonfinite_epochs(evidence: Evidence) -> list[str]:
    """``epoch 3 train_loss=nan`` for every non-finite train or val loss."""
    bad = []
    for e in evidence.epochs:
        for name in ("train_loss", "val_loss"):
            value = getattr(e, name)
            if not is_finite(value):
                bad.append(f"epoch {e.num} {name}={value}")
    return bad


def best_val(evidence: Evidence, metric: str | Metric) -> float | None:
    """The best finite value of a metric over the epochs, in its direction
    (a name: a classification metric, val_acc max or val_loss min)."""
    known = metric if isinstance(metric, Metric) else CLASSIFICATION.metric(metric)
    return known.best([e.metric(known.name) for e in evidence.epochs])


def leakage_metric(catalog: TaskCatalog) -> Metric | None:
    """The validation fraction a leak drives to ~1 (classification: val_acc)."""
    return next((m for m in catalog.of_split("val")
                 if m.is_fraction and not m.lower_is_better and m.targetable), None)


# ----------------------------------------------------------------- checks

def check_completed(evidence: Evidence, files: RunFiles) -> Check:
    ev = files.at(files.log_path)
    threshold = "status completed or early_stopped; log says 'Training complete'"
    problems = []
    if evidence.status not in FINISHED or not evidence.completed:
        problems.append(f"status is {evidence.status}" + (f" ({evidence.reason})" if evidence.reason else ""))
    if evidence.exception is not None:
        problems.append(f"{evidence.exception.type}: {evidence.exception.message}")
    if files.log_text is None:
        problems.append("training.log is missing")
    elif COMPLETE_MARKER not in files.log_text:
        problems.append(f"training.log has no '{COMPLETE_MARKER}' line")
    if problems:
        return failed("completed", evidence.status, threshold, ev,
                      "Training did not complete: " + "; ".join(problems) + ".")
    done = len(evidence.epochs)
    how = "stopped early by patience" if evidence.status == "early_stopped" else "reached the final epoch"
    return passed("completed", evidence.status, threshold, ev,
                  f"Training {how} after {done} of {evidence.epochs_planned} epochs.")


def check_loss_decreased(evidence: Evidence, files: RunFiles) -> Check:
    ev = files.at(files.metrics_path)
    initial, final = train_losses(evidence)
    threshold = "final train loss < initial"
    if initial is None or final is None:
        return failed("loss-decreased", None, threshold, ev, "No epoch finished: there is no train loss to compare.")
    if not (is_finite(initial) and is_finite(final)):
        return failed("loss-decreased", final, threshold, ev,
                      f"Train loss is not finite (initial {initial}, final {final}).")
    if len(evidence.epochs) < 2:
        return failed("loss-decreased", final, threshold, ev,
                      "Only one epoch finished: a decrease cannot be shown.")
    if final < initial:
        return passed("loss-decreased", round(final, 6), threshold, ev,
                      f"Train loss fell from {initial:.4f} to {final:.4f}.")
    return failed("loss-decreased", round(final, 6), threshold, ev,
                  f"Train loss did not fall ({initial:.4f} -> {final:.4f}): the model did not learn.")


def check_loss_decrease_ratio(evidence: Evidence, files: RunFiles, spec: PipelineSpec) -> Check:
    ev = files.at(files.metrics_path)
    minimum = spec.gates.loss_decrease_min
    ratio = loss_decrease_ratio(evidence)
    if ratio is None or len(evidence.epochs) < 2:
        return skipped("loss-decrease-ratio",
                       "needs finite, positive initial and final train losses over at least two epochs",
                       ev, mandatory=False)
    value = round(ratio, 4)
    if ratio >= minimum:
        return passed("loss-decrease-ratio", value, minimum, ev,
                      f"Train loss fell by {ratio:.0%} (at least {minimum:.0%} expected).", mandatory=False)
    return warned("loss-decrease-ratio", value, minimum, ev,
                  f"Train loss fell by only {ratio:.0%} (under {minimum:.0%}): insufficient learning, "
                  "worth diagnosing.", mandatory=False)


def check_losses_finite(evidence: Evidence, files: RunFiles) -> Check:
    ev = files.at(files.metrics_path)
    threshold = "every epoch's train and val loss finite"
    if not evidence.epochs:
        return failed("losses-finite", None, threshold, ev, "No epoch finished: no loss was recorded.")
    bad = nonfinite_epochs(evidence)
    if bad:
        return failed("losses-finite", len(bad), threshold, ev,
                      f"Non-finite losses: {first_few(bad)}. Lower the learning rate or clip gradients.")
    skipped_steps = evidence.skipped_steps_total
    if skipped_steps:
        return warned("losses-finite", 0, threshold, ev,
                      f"All {len(evidence.epochs)} epochs' losses are finite, but {skipped_steps} update(s) "
                      "were skipped for a non-finite loss or gradient.")
    return passed("losses-finite", 0, threshold, ev,
                  f"All {len(evidence.epochs)} epochs' train and val losses are finite.")


def _sm_note(sm_active: float | None) -> tuple[str, bool]:
    """(message fragment, poor?) for the SM activity."""
    if sm_active is None:
        return " SM activity: not measured (DCGM_FI_PROF_SM_ACTIVE not published, or no Prometheus).", False
    if sm_active >= SM_ACTIVE_GOOD:
        return f" SM activity {sm_active:.2f} (good, >= {SM_ACTIVE_GOOD}).", False
    if sm_active < SM_ACTIVE_POOR:
        return (f" SM activity {sm_active:.2f} is poor (< {SM_ACTIVE_POOR}): the kernels keep few "
                "multiprocessors busy, so utilization overstates the real load."), True
    return f" SM activity {sm_active:.2f} (fair, between {SM_ACTIVE_POOR} and {SM_ACTIVE_GOOD}).", False


def _gpu_evidence(gpu: GpuMeasurement) -> str:
    """Where the numbers came from, which GPUs and over when."""
    parts = [gpu.source]
    if gpu.gpus:
        parts.append("GPUs " + first_few(list(gpu.gpus), 8))
    if gpu.window:
        parts.append("window " + gpu.window)
    return "; ".join(parts)


def check_gpu_utilization(evidence: Evidence, gpu: GpuMeasurement | None, spec: PipelineSpec) -> Check:
    """docs/gates.md, ``gpu-utilization``. Off (``spec.gates.gpuUtilization``)
    or no GPU requested: skipped, saying which, never a pass. A GPU job
    without a measurement (no series, Prometheus unreachable, no UUID
    recorded) fails, saying which. Measured: >= gpuUtilMin passes,
    gpuUtilWarn..gpuUtilMin warns, below fails; SM activity under
    ``SM_ACTIVE_STUCK`` fails whatever the utilization (a job spinning in an
    NCCL collective reads ~100%), under ``SM_ACTIVE_POOR`` downgrades a pass
    to a warn."""
    minimum, warn_at = spec.gates.gpu_util_min, spec.gates.gpu_util_warn
    setting = spec.gates.gpu_utilization
    if not setting.enabled:
        return Check("gpu-utilization", "skip", "turned-off", None, "spec.gates.gpuUtilization",
                     f"Turned off by spec.gates.gpuUtilization.enabled: false ({setting.reason}); "
                     "not measured and not passed.")
    requested = spec.resources.gpus_per_worker
    if requested <= 0:
        return Check("gpu-utilization", "skip", "not-applicable", None, "spec.resources.gpusPerWorker",
                     "Not applicable: the pipeline requested no GPU (spec.resources.gpusPerWorker is 0).")
    if gpu is None:  # no Prometheus measurement: the trainer's own NVML sampling
        gpu = (GpuMeasurement(util_mean=evidence.gpu_util_mean, source="evidence.json (NVML)")
               if evidence.gpu_util_mean is not None
               else GpuMeasurement.absent("the job's evidence holds no NVML utilization sample", "evidence.json"))
    ev = _gpu_evidence(gpu)
    if gpu.error:
        return failed("gpu-utilization", None, minimum, ev,
                      f"No evidence, no pass: {requested} GPU(s) per worker requested, but GPU utilization "
                      f"could not be measured: {gpu.error}.")
    if gpu.util_mean is None:
        return failed("gpu-utilization", None, minimum, ev,
                      f"No evidence, no pass: {requested} GPU(s) per worker requested, but there is no GPU "
                      f"measurement: {gpu.reason or 'no utilization series for the job'}.")
    util = gpu.util_mean
    value = round(util, 2)
    sm_text, sm_poor = _sm_note(gpu.sm_active)
    if gpu.sm_active is not None and gpu.sm_active < SM_ACTIVE_STUCK:
        return failed("gpu-utilization", value, minimum, ev,
                      f"Mean GPU utilization {util:.1f}%, but SM activity is {gpu.sm_active:.2f} "
                      f"(< {SM_ACTIVE_STUCK}): a kernel was resident while almost no multiprocessor worked, "
                      "as in a job stuck in an NCCL collective or spinning on one tiny kernel.")
    if util >= minimum:
        if sm_poor:
            return warned("gpu-utilization", value, minimum, ev,
                          f"Mean GPU utilization {util:.1f}% (>= {minimum:g}%), but" + sm_text)
        return passed("gpu-utilization", value, minimum, ev,
                      f"Mean GPU utilization {util:.1f}% (>= {minimum:g}%)." + sm_text)
    if util >= warn_at:
        return warned("gpu-utilization", value, minimum, ev,
                      f"Mean GPU utilization {util:.1f}% is between {warn_at:g}% and {minimum:g}%: acceptable, "
                      "room for optimization (larger batch, more loader workers)." + sm_text)
    return failed("gpu-utilization", value, minimum, ev,
                  f"Mean GPU utilization {util:.1f}% is under {warn_at:g}%: the GPU mostly waits "
                  "(data loading or a batch too small)." + sm_text)


def check_duration(evidence: Evidence, files: RunFiles, budget_seconds: float | None) -> Check:
    """Non-mandatory: the run already happened, and running it again would only
    spend more time; the budget rule (accept the best, finalize) handles overruns."""
    ev = files.at("evidence.json")
    total = evidence.timings.total_seconds
    if budget_seconds is None:
        return skipped("duration", "no phase budget given", ev, mandatory=False)
    if not total:
        return skipped("duration", "the run recorded no total time", ev, mandatory=False)
    value = round(total, 1)
    if total <= budget_seconds:
        return passed("duration", value, budget_seconds, ev,
                      f"Took {total / 60:.1f} min of a {budget_seconds / 60:.1f} min phase budget.",
                      mandatory=False)
    return failed("duration", value, budget_seconds, ev,
                  f"Took {total / 60:.1f} min, over the {budget_seconds / 60:.1f} min phase budget.",
                  mandatory=False)


def check_epoch_time(evidence: Evidence, files: RunFiles, spec: PipelineSpec) -> Check:
    ev = files.at(files.metrics_path)
    jitter = spec.gates.epoch_time_jitter
    times = [(e.num, e.epoch_seconds) for e in evidence.epochs[1:] if is_finite(e.epoch_seconds)]
    if len(times) < 2:
        return skipped("epoch-time-consistent",
                       "needs at least two epochs after the first (the first warms up and is excluded)",
                       ev, mandatory=False)
    median = statistics.median(t for _, t in times)
    if median <= 0:
        return skipped("epoch-time-consistent", "median epoch time is zero", ev, mandatory=False)
    deviations = [(num, abs(t - median) / median, t) for num, t in times]
    worst = max(d for _, d, _ in deviations)
    outliers = [f"epoch {num} {t:.1f}s" for num, d, t in deviations if d > jitter]
    if outliers:
        return warned("epoch-time-consistent", round(worst, 4), jitter, ev,
                      f"Epochs off the median {median:.1f}s by more than {jitter:.0%}: {first_few(outliers)}.",
                      mandatory=False)
    return passed("epoch-time-consistent", round(worst, 4), jitter, ev,
                  f"Every epoch after the first within {jitter:.0%} of the median {median:.1f}s "
                  f"(largest deviation {worst:.0%}).", mandatory=False)


def _checkpoint_problems(ckpt: CheckpointCheck, need_optimizer: bool, need_meta: bool) -> list[str]:
    if not ckpt.exists:
        return ["file does not exist"]
    if not ckpt.loads:
        return [f"does not load ({ckpt.error or 'unknown error'})"]
    problems = []
    if not ckpt.has_model_state:
        problems.append("no model_state_dict")
    if need_optimizer and not ckpt.has_optimizer_state:
        problems.append("no optimizer_state_dict")
    if need_meta and ckpt.epoch is None:
        problems.append("no epoch")
    if need_meta and not is_finite(ckpt.val_loss):
        problems.append(f"no finite val_loss ({ckpt.val_loss})")
    return problems


def check_best_checkpoint(evidence: Evidence, files: RunFiles) -> Check:
    ev = files.at("checkpoints/best_model.pt")
    threshold = "exists, loads, model+optimizer state, epoch, val_loss"
    ckpt = evidence.checkpoints.get("best")
    if ckpt is None:
        return failed("best-checkpoint", None, threshold, ev, "The evidence has no best checkpoint entry.")
    problems = _checkpoint_problems(ckpt, need_optimizer=True, need_meta=True)
    if problems:
        return failed("best-checkpoint", "; ".join(problems), threshold, ev,
                      f"best_model.pt is not usable: {'; '.join(problems)}.")
    return passed("best-checkpoint", ckpt.epoch, threshold, ev,
                  f"best_model.pt is valid (epoch {ckpt.epoch}, val_loss {ckpt.val_loss:.4f}).")


def check_last_checkpoint(evidence: Evidence, files: RunFiles) -> Check:
    ev = files.at("checkpoints/last_model.pt")
    threshold = "exists, loads, model state"
    ckpt = evidence.checkpoints.get("last")
    if ckpt is None:
        return failed("last-checkpoint", None, threshold, ev, "The evidence has no last checkpoint entry.")
    problems = _checkpoint_problems(ckpt, need_optimizer=False, need_meta=False)
    if problems:
        return failed("last-checkpoint", "; ".join(problems), threshold, ev,
                      f"last_model.pt is not usable: {'; '.join(problems)}.")
    return passed("last-checkpoint", ckpt.epoch, threshold, ev,
                  f"last_model.pt is valid (epoch {ckpt.epoch}): the run can resume from it.")


def check_periodic_checkpoints(evidence: Evidence, files: RunFiles, checkpoint_every: int | None) -> Check:
    """With interval K and N epochs done, the newest periodic checkpoint is
    ``checkpoint_epoch_{K * (N // K)}.pt`` (retention drops older ones, never
    the newest); a run that wrote others, or none, warns."""
    ev = files.at("checkpoints/")
    if not checkpoint_every:
        return skipped("periodic-checkpoints", "periodic checkpoints are not configured", ev, mandatory=False)
    done = len(evidence.epochs)
    if done < checkpoint_every:
        return skipped("periodic-checkpoints",
                       f"{done} epoch(s) finished, fewer than the interval of {checkpoint_every}",
                       ev, mandatory=False)
    found = evidence.periodic_checkpoints
    newest = f"checkpoint_epoch_{checkpoint_every * (done // checkpoint_every)}.pt"
    threshold = f"checkpoint_epoch_N.pt every {checkpoint_every} epoch(s); newest {newest}"
    if newest in found:
        return passed("periodic-checkpoints", len(found), threshold, ev,
                      f"Periodic checkpoints kept: {first_few(found)}.", mandatory=False)
    seen = f" (found: {first_few(found)})" if found else ""
    return warned("periodic-checkpoints", len(found), threshold, ev,
                  f"No {newest} although every {checkpoint_every} epoch(s) is configured and {done} "
                  f"epoch(s) finished{seen}.", mandatory=False)


def check_logs(evidence: Evidence, files: RunFiles) -> Check:
    ev = f"{files.at(files.log_path)}, {files.at(files.metrics_path)}"
    threshold = "an EPOCH line and a metrics.json entry for every epoch"
    expected = [e.num for e in evidence.epochs]
    problems = []
    if files.log_text is None:
        problems.append("training.log is missing")
        in_log = 0
    else:
        logged = {int(n) for n in EPOCH_LINE.findall(files.log_text)}
        missing = [str(n) for n in expected if n not in logged]
        in_log = len(expected) - len(missing)
        if missing:
            problems.append(f"training.log has no EPOCH line for epoch(s) {first_few(missing)}")
    if files.metrics_json is None:
        problems.append("metrics.json is missing")
        in_metrics = 0
    else:
        entries = files.metrics_json.get("epochs") if isinstance(files.metrics_json, dict) else None
        if not isinstance(entries, list):
            problems.append("metrics.json has no 'epochs' list")
            in_metrics = 0
        else:
            nums = {e.get("num") for e in entries if isinstance(e, dict)}
            missing = [str(n) for n in expected if n not in nums]
            in_metrics = len(expected) - len(missing)
            if missing:
                problems.append(f"metrics.json lacks epoch(s) {first_few(missing)}")
    value = f"{in_log}/{len(expected)} in log, {in_metrics}/{len(expected)} in metrics.json"
    if problems:
        return failed("logs", value, threshold, ev, "Logs incomplete: " + "; ".join(problems) + ".")
    if not expected:
        return failed("logs", value, threshold, ev, "No epoch finished: the logs hold no epoch.")
    return passed("logs", value, threshold, ev,
                  f"training.log and metrics.json both record all {len(expected)} epochs.")


def check_leakage(evidence: Evidence, files: RunFiles, catalog: TaskCatalog = CLASSIFICATION) -> Check:
    ev = files.at(files.metrics_path)
    metric = leakage_metric(catalog)
    if metric is None:
        return skipped("leakage-suspect", f"not applicable: task {catalog.task} reports no validation fraction "
                       "to maximize (a leak shows as one near 1)", ev, mandatory=False)
    what = "val accuracy" if metric.name == "val_acc" else metric.name
    best = best_val(evidence, metric)
    if best is None:
        return skipped("leakage-suspect", f"no finite {what} recorded", ev, mandatory=False)
    if best >= LEAKAGE_VAL_ACC:
        return warned("leakage-suspect", round(best, 6), LEAKAGE_VAL_ACC, ev,
                      f"{what[0].upper() + what[1:]} reached {best:.4f} (>= {LEAKAGE_VAL_ACC}): suspect leakage "
                      "between splits or a trivial task; inspect the data before trusting it.", mandatory=False)
    return passed("leakage-suspect", round(best, 6), LEAKAGE_VAL_ACC, ev,
                  f"Best {what} {best:.4f} is below {LEAKAGE_VAL_ACC}: no sign of leakage.",
                  mandatory=False)


def check_memorization(evidence: Evidence, files: RunFiles) -> Check:
    ev = files.at(files.metrics_path)
    _, final = train_losses(evidence)
    if not is_finite(final) or final is None:
        return skipped("memorization-suspect", "no finite final train loss", ev, mandatory=False)
    if final <= MEMORIZATION_TRAIN_LOSS:
        return warned("memorization-suspect", final, MEMORIZATION_TRAIN_LOSS, ev,
                      f"Final train loss {final:.2e} is ~0: the model may have memorized the training set.",
                      mandatory=False)
    return passed("memorization-suspect", round(final, 6), MEMORIZATION_TRAIN_LOSS, ev,
                  f"Final train loss {final:.4f} is not ~0.", mandatory=False)


def check_overfit_gap(evidence: Evidence, files: RunFiles, spec: PipelineSpec) -> Check:
    ev = files.at(files.metrics_path)
    gap_max = spec.gates.overfit_gap
    if not evidence.epochs:
        return skipped("overfit-gap", "no epoch finished", ev, mandatory=False)
    if spec.task != "classification":
        return _loss_gap(evidence, files)
    last = evidence.epochs[-1]
    if last.train_acc is None or last.val_acc is None:
        return skipped("overfit-gap", "train or val accuracy is not recorded", ev, mandatory=False)
    gap = last.train_acc - last.val_acc
    if not is_finite(gap):
        return skipped("overfit-gap", "train or val accuracy is not finite", ev, mandatory=False)
    value = round(gap, 4)
    if gap > gap_max:
        return warned("overfit-gap", value, gap_max, ev,
                      f"Train accuracy {last.train_acc:.3f} exceeds val {last.val_acc:.3f} by {gap:.3f} "
                      f"(> {gap_max}) at the last epoch: overfitting.", mandatory=False)
    return passed("overfit-gap", value, gap_max, ev,
                  f"Train-val accuracy gap {gap:.3f} at the last epoch (at most {gap_max}).", mandatory=False)


def _loss_gap(evidence: Evidence, files: RunFiles) -> Check:
    """A task without accuracies: the engine's relative loss gap,
    (val_loss - train_loss) / train_loss, at the last epoch. Warn-only (seed
    004, truth 7: "overfitting detection warns but continues")."""
    ev = files.at(files.metrics_path)
    threshold = OVERFIT_LOSS_GAP
    last = evidence.epochs[-1]
    if not (is_finite(last.train_loss) and last.train_loss > 0):
        return skipped("overfit-gap", f"the relative gap needs a finite, positive train loss (epoch {last.num}: "
                       f"{last.train_loss})", ev, mandatory=False)
    gap = last.loss_gap if is_finite(last.loss_gap) else (last.val_loss - last.train_loss) / last.train_loss
    if not is_finite(gap):
        return skipped("overfit-gap", f"epoch {last.num}'s val loss is not finite", ev, mandatory=False)
    value = round(gap, 4)
    losses = f"val loss {last.val_loss:.4f} vs train loss {last.train_loss:.4f} at epoch {last.num}"
    if gap > threshold:
        return warned("overfit-gap", value, threshold, ev,
                      f"{losses}: a gap of {gap:.1%}, over {threshold:.0%}: overfitting; training continues "
                      "(warn only), the diagnosis recommends regularization (augmentation, weight decay"
                      + (", a smaller latent" if evidence.task == "vae" else "") + ").",
                      mandatory=False)
    return passed("overfit-gap", value, threshold, ev,
                  f"{losses}: a gap of {gap:.1%}, within {threshold:.0%}.", mandatory=False)


def execution_checks(
    evidence: Evidence,
    files: RunFiles,
    gpu: GpuMeasurement | None,
    spec: PipelineSpec,
    phase_budget_seconds: float | None,
    *,
    checkpoint_every: int | None = 1,
    keep_periodic: int | None = 3,
    preview_every: int | None = None,
) -> list[Check]:
    """Phase 2's execution checks, in the order docs/gates.md lists them
    ("Execution checks").

    ``gpu`` None falls back to the trainer's own NVML mean in the evidence.
    ``checkpoint_every`` is the job config's ``train.checkpointEvery`` (the
    trainer's default, 1); None: periodic checkpoints are not configured.
    ``keep_periodic`` (``train.keepPeriodic``) and ``preview_every``
    (``vae.previewEvery``) are read by the VAE's retention and previews
    checks only.
    """
    catalog = catalog_for(spec)
    checks = [
        *_generic_checks(evidence, files, gpu, spec, phase_budget_seconds, checkpoint_every),
        check_leakage(evidence, files, catalog),
        check_memorization(evidence, files),
        check_overfit_gap(evidence, files, spec),
    ]
    if catalog.task == "vae":
        checks += vae_checks(evidence, files, checkpoint_every=checkpoint_every, keep_periodic=keep_periodic,
                             preview_every=preview_every)
    return checks


def _generic_checks(
    evidence: Evidence,
    files: RunFiles,
    gpu: GpuMeasurement | None,
    spec: PipelineSpec,
    phase_budget_seconds: float | None,
    checkpoint_every: int | None,
) -> list[Check]:
    """The checks every task shares: the engine's health, whatever it trained."""
    return [
        check_completed(evidence, files),
        check_loss_decreased(evidence, files),
        check_loss_decrease_ratio(evidence, files, spec),
        check_losses_finite(evidence, files),
        check_gpu_utilization(evidence, gpu, spec),
        check_duration(evidence, files, phase_budget_seconds),
        check_epoch_time(evidence, files, spec),
        check_best_checkpoint(evidence, files),
        check_last_checkpoint(evidence, files),
        check_periodic_checkpoints(evidence, files, checkpoint_every),
        check_logs(evidence, files),
    ]


def execution_passed(checks: list[Check]) -> bool:
    """No mandatory execution check failed."""
    return not any(c.result == "fail" and c.mandatory for c in checks)
