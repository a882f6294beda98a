"""Phase 3's remedies for a ``vae`` run: per primary issue, concrete changes
to the job config that Optimization applies (``apply.plan_changes``), in the
shape and ranking of ``recommendations`` (impact, then effort, then gain).

* posterior-collapse: a longer KL warm-up, more free bits, a lower beta, a
  cyclical KL schedule (in that order: the first two let the encoder build a
  code before the KL term presses on it, without changing the objective at
  convergence; a lower beta changes what the model optimizes; a cyclical
  schedule restarts the warm-up several times).
* overfitting: audio augmentation (gain, shift, noise, mask), more weight
  decay, a smaller latent, a smaller vae model, early stopping.
* underfitting: a larger vae model, more epochs, a higher learning rate, a
  larger latent.
* convergence-stall: a higher learning rate, AdamW, a larger vae model.
* data-quality: a person fixes the split or the files (``requires_human``).
* nan-loss, resource-inefficiency, crash: the engine's remedies, as for any task.

``recommendations.recommend`` picks this table for a diagnosis whose task is ``vae``.
"""

from __future__ import annotations

from collections.abc import Callable

from trainpipe_operator.diagnosis.recommendations import (
    WEIGHT_DECAY_CAP,
    Recommendation,
    _Context,
    _crash,
    _keep,
    _more_warmup,
    _nan_loss,
    _resource,
    _scale_lr,
    _sig,
)
from trainpipe_operator.tasks import VAE

FREE_BITS_MIN = 0.25  # nats per latent dimension a collapse fix raises free bits to, at least
FREE_BITS_CAP = 2.0
LATENT_MIN = 2
LATENT_CAP = 1024


def longer_kl_warmup(epochs: int, current: float) -> float | None:
    """Twice the warm-up (at least 2 epochs more), at most half the run:
    past that the KL weight reaches beta too late to shape the code."""
    cap = epochs / 2
    longer = min(max(current * 2, current + 2), cap)
    return _sig(longer) if longer > current else None


def _posterior_collapse(c: _Context) -> list[Recommendation]:
    s, basis = c.s, c.room
    kl = c.d.measurements.val_kl
    seen = f"val_kl {kl:.3f} nats per sample" if kl is not None else "val_kl under 0.5"
    warmup = longer_kl_warmup(s.epochs, s.kl_warmup_epochs)
    warm_changes: list[tuple[str, object]] = [("vae.klAnneal.warmupEpochs", warmup)]
    if s.kl_schedule == "none":
        warm_changes.append(("vae.klAnneal.schedule", "linear"))
    free_bits = _sig(min(max(s.free_bits * 2, FREE_BITS_MIN), FREE_BITS_CAP))
    beta = _sig(s.beta / 2) if s.beta > 0 else None
    return _keep(
        c.rec("posterior-collapse", "kl-warmup",
              f"Lengthen the KL warm-up ({s.kl_warmup_epochs:g} -> {warmup:g} epochs)",
              f"Posterior collapse ({seen}): the KL term pressed the posterior onto the prior before the "
              "encoder had learned a useful code. A longer warm-up lets the decoder learn to rely on z first.",
              warm_changes, "high", c.gain(0.1, basis), "low") if warmup is not None else None,
        c.rec("posterior-collapse", "free-bits", f"Raise free bits ({s.free_bits:g} -> {free_bits:g} nats per dimension)",
              "Free bits stop the KL term from pushing a latent dimension under that many nats, so the "
              "encoder can keep information in every dimension without paying for it.",
              [("vae.freeBits", free_bits)], "high", c.gain(0.08, basis), "low"),
        c.rec("posterior-collapse", "lower-beta", f"Lower beta ({s.beta:g} -> {beta:g})",
              "A smaller KL weight makes using the latent code cheaper (at the price of a less regular "
              "prior: check the prior samples).",
              [("vae.beta", beta)], "medium", c.gain(0.06, basis), "low") if beta is not None else None,
        c.rec("posterior-collapse", "cyclical-schedule",
              f"Use a cyclical KL schedule ({s.kl_cycles} cycles)",
              "Restarting the KL warm-up several times lets the encoder rebuild its code after each "
              "collapse (Fu et al., 2019).",
              [("vae.klAnneal.schedule", "cyclical")], "medium", c.gain(0.05, basis), "low"),
    )


def _overfitting(c: _Context) -> list[Recommendation]:
    s, gap = c.s, c.gap
    missing = [a for a in VAE.augmentations or () if a not in s.augment]
    wd = 0.05 if s.weight_decay == 0 else _sig(min(s.weight_decay * 10, WEIGHT_DECAY_CAP))
    latent = max(LATENT_MIN, s.latent_dim // 2)
    smaller = VAE.smaller_model(s.model_name)
    patience = min(5, s.epochs // 4) if s.patience is None and s.epochs >= 4 else None
    loss_gap = c.d.measurements.loss_gap
    seen = f"val loss {loss_gap:.0%} above train" if loss_gap is not None else "val loss above train"
    return _keep(
        c.rec("overfitting", "augmentation", f"Add audio augmentation ({', '.join(missing)})",
              f"More varied training chunks are the most direct cure for memorizing a few recordings ({seen}).",
              [("data.augment", [*s.augment, *missing])], "high", c.gain(0.35, gap), "low") if missing else None,
        c.rec("overfitting", "weight-decay", f"Raise weight decay ({s.weight_decay:g} -> {wd:g})",
              "Stronger L2 regularization shrinks the weights the decoder uses to memorize the training set.",
              [("train.weightDecay", wd)], "high", c.gain(0.3, gap), "low"),
        c.rec("overfitting", "smaller-latent", f"Use a smaller latent ({s.latent_dim} -> {latent} dimensions)",
              "A narrower bottleneck leaves less room to encode each training clip by heart.",
              [("vae.latentDim", latent)], "medium", c.gain(0.2, gap), "low") if latent < s.latent_dim else None,
        c.rec("overfitting", "smaller-model", f"Use a smaller model ({s.model_name} -> {smaller})",
              "Fewer parameters leave less room to memorize a small dataset.",
              [("model.name", smaller)], "medium", c.gain(0.15, gap), "medium") if smaller else None,
        c.rec("overfitting", "early-stopping", f"Stop early (patience {patience} epochs)",
              "Stops once val loss has not improved for a few epochs; the best checkpoint is kept.",
              [("train.patience", patience)], "low", c.gain(0.02, gap), "low") if patience else None,
    )


def _underfitting(c: _Context) -> list[Recommendation]:
    s, short = c.s, c.shortfall
    bigger = VAE.bigger_model(s.model_name)
    improving = c.d.measurements.val_still_improving
    epochs = min(s.epochs * 2, 100000)
    lr = _scale_lr(s.lr, 3.0)
    latent = min(s.latent_dim * 2, LATENT_CAP)
    return _keep(
        c.rec("underfitting", "bigger-model", f"Use a larger model ({s.model_name} -> {bigger})",
              f"Train and val losses both miss the target by a similar margin (shortfall {short:.3f}): "
              "the encoder and decoder lack capacity.",
              [("model.name", bigger)], "high", c.gain(0.5, short), "medium") if bigger else None,
        c.rec("underfitting", "longer-training", f"Train longer ({s.epochs} -> {epochs} epochs)",
              "The val loss was still falling at the last epoch; more epochs continue the curve."
              if improving else "More epochs give the optimizer time to fit the training set.",
              [("train.epochs", epochs)], "high" if improving else "medium",
              c.gain(0.4 if improving else 0.3, short), "low"),
        c.rec("underfitting", "raise-lr", f"Raise the learning rate 3x ({s.lr:g} -> {lr:g})",
              "A larger step size fits faster within the same epoch budget.",
              [("train.lr", lr)], "medium", c.gain(0.2, short), "low"),
        c.rec("underfitting", "larger-latent", f"Use a larger latent ({s.latent_dim} -> {latent} dimensions)",
              "A wider bottleneck lets the code carry more of each clip, lowering the reconstruction loss.",
              [("vae.latentDim", latent)], "medium", c.gain(0.15, short), "low") if latent > s.latent_dim else None,
    )


def _convergence_stall(c: _Context) -> list[Recommendation]:
    s, basis = c.s, c.room
    factor = 10.0 if s.lr < 1e-4 else 3.0
    bigger = VAE.bigger_model(s.model_name)
    return _keep(
        c.rec("convergence-stall", "raise-lr",
              f"Raise the learning rate {factor:g}x ({s.lr:g} -> {_scale_lr(s.lr, factor):g})",
              "The negative ELBO barely moved: the steps are too small to make progress.",
              [("train.lr", _scale_lr(s.lr, factor))], "high", c.gain(0.5, basis), "low"),
        c.rec("convergence-stall", "adamw", "Switch the optimizer from SGD to AdamW",
              "Adaptive steps escape flat regions SGD crawls through.",
              [("train.optimizer", "adamw")], "medium", c.gain(0.25, basis), "low"),
        c.rec("convergence-stall", "bigger-model", f"Use a larger model ({s.model_name} -> {bigger})",
              "A decoder with too little capacity cannot lower the reconstruction loss further.",
              [("model.name", bigger)], "medium", c.gain(0.2, basis), "medium") if bigger else None,
        c.rec("convergence-stall", "warmup", f"Warm the learning rate up over {_more_warmup(s):g} epoch(s)",
              "With a higher lr, a warmup keeps the first steps stable.",
              [("train.warmupEpochs", _more_warmup(s))], "low", c.gain(0.05, basis), "low"),
    )


def _data_quality(c: _Context) -> list[Recommendation]:
    d = c.d
    recs: list[Recommendation | None] = []
    if d.fired("chunk-leakage"):
        recs.append(c.rec("data-quality", "split-by-file", "Split by file: no recording's chunks in two splits",
                          "Neighbouring chunks of one recording are nearly the same sound: val grades the model "
                          "on what it trained on. See the data report's audio.chunk_leakage.",
                          [], "high", 0.0, "medium", requires_human=True))
    if d.fired("duplicates-across-splits"):
        recs.append(c.rec("data-quality", "fix-splits", "Remove the audio files duplicated across splits",
                          "Identical recordings in train and val let the model be graded on what it memorized.",
                          [], "high", 0.0, "medium", requires_human=True))
    if d.fired("non-finite-samples"):
        recs.append(c.rec("data-quality", "fix-nonfinite", "Fix or remove the audio files holding NaN/Inf",
                          "Non-finite samples poison the loss; see the data report's nonfinite_samples.",
                          [], "high", 0.0, "low", requires_human=True))
    recs.append(c.rec("data-quality", "listen", "Listen to the silent, clipped and short files",
                      "The data report lists them (audio.silent_files, clipped_files, short_files); remove "
                      "the ones that are not meant to be training material.",
                      [], "medium", 0.0, "medium", requires_human=True))
    recs.append(c.rec("data-quality", "rerun-planning", "Rerun the Planning gate on the fixed data",
                      "The data report (chunk leakage, duplicates, non-finite samples) confirms the fix "
                      "before a new baseline.",
                      [], "low", 0.0, "low", requires_human=True))
    return _keep(*recs)


VAE_BY_ISSUE: dict[str, Callable[[_Context], list[Recommendation]]] = {
    "crash": _crash,
    "nan-loss": _nan_loss,
    "posterior-collapse": _posterior_collapse,
    "convergence-stall": _convergence_stall,
    "overfitting": _overfitting,
    "underfitting": _underfitting,
    "resource-inefficiency": _resource,
    "data-quality": _data_quality,
}
