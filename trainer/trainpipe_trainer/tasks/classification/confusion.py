"""Confusion matrix: counted during validation, drawn as a PNG each time; and
top-k hits."""

from __future__ import annotations

from pathlib import Path

import torch


def update_confusion(matrix: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
    preds = logits.argmax(dim=1).cpu()
    n = matrix.shape[0]
    matrix += torch.bincount(targets.cpu() * n + preds, minlength=n * n).reshape(n, n)


def save_confusion_png(matrix: torch.Tensor, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = matrix.numpy()
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(classes) <= 20:
        peak = data.max() if data.size else 0
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                color = "white" if data[i, j] > peak / 2 else "black"
                ax.text(j, i, str(int(data[i, j])), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def topk_correct(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """Count of samples whose target is the top-1 / among the top-5 predictions
    (top-5 falls back to top-k with k = the class count when it is under 5)."""
    k = min(5, logits.shape[1])
    top = logits.detach().topk(k, dim=1).indices
    hits = top.eq(targets.view(-1, 1))
    return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())
