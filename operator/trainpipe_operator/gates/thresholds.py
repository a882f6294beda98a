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
# fires `loss-gap`.
OVERFIT_LOSS_GAP = 0.2
