"""The built-in tasks' catalogs, fixed: ``classification`` (ImageFolder
images, seed 002) and ``vae`` (small audio datasets, seed 004).

The model names are the trainer's registry, named here because the control
plane never imports torch (a test keeps them equal); the augmentations are
the job-config contract's (``AUGMENTATIONS_BY_TASK``, pure pydantic).
"""

from __future__ import annotations

from trainpipe_operator.tasks.catalog import TaskCatalog
from trainpipe_operator.tasks.metrics import Metric
from trainpipe_trainer.contract.job_config import AUGMENTATIONS_BY_TASK

CLASSIFICATION_MODELS = ("resnet18", "resnet50", "smallcnn")
VAE_MODELS = ("vae-small", "vae-medium", "vae-large")

CLASSIFICATION = TaskCatalog(
    task="classification",
    metrics=(
        Metric("val_acc", "max", "fraction", "validation accuracy, top-1", "val"),
        Metric("val_top5", "max", "fraction", "validation top-5 accuracy", "val"),
        Metric("val_loss", "min", "loss", "validation cross-entropy", "val"),
        Metric("test_acc", "max", "fraction", "accuracy on the held-out test split", "test"),
        Metric("test_top5", "max", "fraction", "top-5 accuracy on the held-out test split", "test"),
        Metric("test_loss", "min", "loss", "cross-entropy on the held-out test split", "test"),
    ),
    primary="val_acc",
    default_model="smallcnn",
    models=CLASSIFICATION_MODELS,
    model_ladder=("smallcnn", "resnet18", "resnet50"),
    augmentations=AUGMENTATIONS_BY_TASK["classification"],
    datasets=("builtin:digits",),
)

VAE = TaskCatalog(
    task="vae",
    metrics=(
        Metric("val_recon", "min", "loss", "validation reconstruction loss per sample", "val"),
        Metric("val_loss", "min", "loss", "validation negative ELBO per sample (reconstruction + beta * KL)", "val"),
        Metric("val_kl", "min", "nats", "validation KL divergence per sample (nats, before beta and free bits); "
               "informational: posterior collapse is a gate check, not a target", "val", targetable=False),
        Metric("test_recon", "min", "loss", "reconstruction loss per sample on the held-out test split", "test"),
        Metric("test_loss", "min", "loss", "negative ELBO per sample on the held-out test split", "test"),
        Metric("test_kl", "min", "nats", "KL divergence per sample on the held-out test split (informational)",
               "test", targetable=False),
    ),
    primary="val_recon",
    default_model="vae-small",
    models=VAE_MODELS,
    model_ladder=VAE_MODELS,
    augmentations=AUGMENTATIONS_BY_TASK["vae"],
    datasets=("builtin:tones",),
)

BUILTIN: dict[str, TaskCatalog] = {c.task: c for c in (CLASSIFICATION, VAE)}
# A custom task's models are whatever it reads; this name asks it for its own default.
CUSTOM_DEFAULT_MODEL = "default"
