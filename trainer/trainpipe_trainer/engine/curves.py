"""``learning_curves.png``: loss and accuracy per epoch, train and val."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainpipe_trainer.contract.evidence import EpochRecord


def save_learning_curves(history: Sequence[EpochRecord], path: Path) -> Path:
    """Two panels, loss (train/val) and accuracy (train/val), one point per
    epoch, written to ``path`` (temp file and rename). Raises ``ValueError``
    for an empty history."""
    if not history:
        raise ValueError("no epoch to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [record.num for record in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [r.train_loss for r in history], marker="o", label="train")
    loss_ax.plot(epochs, [r.val_loss for r in history], marker="o", label="val")
    loss_ax.set_title("loss")
    acc_ax.plot(epochs, [r.train_acc for r in history], marker="o", label="train")
    acc_ax.plot(epochs, [r.val_acc for r in history], marker="o", label="val")
    acc_ax.set_title("accuracy")
    acc_ax.set_ylim(0.0, 1.0)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=80, format="png")
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
