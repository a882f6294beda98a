"""The held-out test split's figures by name, as ``test_evaluation.json``
holds them: one reading for the production-ready gate, the VAE's checks and
the Finalization reports, so a figure a report quotes is the one the gate
judged."""

from __future__ import annotations

from trainpipe_operator.gates.checks import is_finite
from trainpipe_trainer.contract.results import TestEvaluation

# What a test_evaluation.json written before metrics-by-name holds instead.
LEGACY_TEST_FIELDS = {"test_acc": "accuracy", "test_loss": "loss", "test_top5": "top5"}
TEST_LABELS = {"test_acc": "test accuracy", "test_loss": "test loss", "test_top5": "test top-5 accuracy"}


def test_metric(test: TestEvaluation | None, name: str) -> float | None:
    """A test-split metric by name: ``metrics[name]``, else the classification
    field an older file holds it in (``test_loss``: ``loss``, the task's own
    loss, the VAE's negative ELBO); None when absent or not finite."""
    if test is None:
        return None
    value = test.metrics.get(name)
    if value is None and name in LEGACY_TEST_FIELDS:
        value = getattr(test, LEGACY_TEST_FIELDS[name])
    return value if value is not None and is_finite(value) else None
