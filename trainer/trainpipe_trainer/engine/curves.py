"""``learning_curves.png``: loss per epoch (train and val), and the task's
own curves beside it (classification: accuracy; the VAE: reconstruction and
KL)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainpipe_trainer.contract.evidence import EpochRecord


def save_learning_curves(
    history: Sequence[EpochRecord],
    path: Path,
    panel: tuple[str, Sequence[str], tuple[float, float] | None] | None = None,
) -> Path:
    """Loss (train/val) and, when given, the task's ``panel`` (title, metric
    names, y range or None), one point per epoch, written to ``path`` (temp
    file and rename). Raises ``ValueError`` for an empty history."""
    if not history:
        raise ValueError("no epoch to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [record.num for record in history]
    fig, axes = plt.subplots(1, 2 if panel else 1, figsize=(10 if panel else 5, 4), squeeze=False)
    loss_ax = axes[0][0]
    loss_ax.plot(epochs, [r.train_loss for r in history], marker="o", label="train")
    loss_ax.plot(epochs, [r.val_loss for r in history], marker="o", label="val")
    loss_ax.set_title("loss")
    if panel:
        title, names, limits = panel
        task_ax = axes[0][1]
        for name in names:
            values = [r.metric(name) for r in history]
            task_ax.plot(epochs, [float("nan") if v is None else v for v in values], marker="o", label=name)
        task_ax.set_title(title)
        if limits is not None:
            task_ax.set_ylim(*limits)
    for ax in axes[0]:
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
