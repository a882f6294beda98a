"""The fixed bars the gates and the diagnosis share (docs/gates.md, "Fixed
thresholds"). One definition each: a gate that calls a run "not learning" and
a diagnosis that calls it "convergence-stall" must draw the line in the same
place, or the pipeline contradicts itself between two phases."""

from __future__ import annotations

# Best val accuracy at or above this: leakage between splits (or a trivial task)
# is suspected: the execution check `leakage-suspect` warns, the diagnosis fires
# `val-acc-near-perfect`.
LEAKAGE_VAL_ACC = 0.999
# (initial - final) / initial train loss under this is no learning: Baseline
# decides `fix`, the diagnosis fires `loss-flat` (convergence-stall).
NO_LEARNING_DECREASE = 0.05
# (val_loss - train_loss) / train_loss above this at the last epoch: overfitting
# for a task without accuracies (seed 004: "overfitting gap over 20% warns and
# training continues"): the execution check `overfit-gap` warns, the diagnosis
# fires `loss-gap`. Seed 004's truth 7: "Validation loss tracks within 20% of
# training loss (overfitting detection warns but continues)".
OVERFIT_LOSS_GAP = 0.2

# -- the vae task (seed 004, "Phase 3: Core Training Engine", /work/shared/seeds/004_*.txt)
# TRAIN-01: "Train on 5-500 audio files". Fewer usable files fail Planning's
# data-reachable; more are allowed and noted (the contract's AudioDataReport
# carries the same bounds as min_files/max_files).
AUDIO_MIN_FILES = 5
AUDIO_MAX_FILES = 500
# Truth 8: "KL divergence remains above 0.5 (posterior collapse prevented via
# annealing + free bits)": the last epoch's val_kl, nats per sample, before
# beta and free bits. Below it the gate check `posterior-collapse` fails and
# the diagnosis names posterior-collapse.
POSTERIOR_COLLAPSE_KL = 0.5
# A preview whose RMS is at or under this (-80 dBFS) is silence: the decoder
# produced nothing audible. Deliberately below the data's own silence bar
# (data.audio.silenceDbfs, -60 dBFS by default) so a quiet but real preview of
# an early epoch passes; a preview with peak 0 is silent whatever its RMS.
PREVIEW_SILENT_RMS = 1e-4
