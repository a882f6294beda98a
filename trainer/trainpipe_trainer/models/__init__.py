"""The model registry: every model trainpipe can train, by name."""

from trainpipe_trainer.models import resnet, smallcnn  # noqa: F401  (registers the models)
from trainpipe_trainer.models.registry import (
    ModelBuildRequest,
    UnknownModelError,
    build_model,
    register,
    registered_names,
)

__all__ = [
    "ModelBuildRequest",
    "UnknownModelError",
    "build_model",
    "register",
    "registered_names",
]
