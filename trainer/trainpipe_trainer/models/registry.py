"""Name -> model factory. ``@register("name")`` adds a factory; ``build_model``
looks it up and loads optional pretrained weights from a local file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelBuildRequest:
    num_classes: int
    image_size: int
    in_channels: int = 3
    dropout: float = 0.0


ModelFactory = Callable[[ModelBuildRequest], nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


class UnknownModelError(ValueError):
    """``model.name`` is not a registered model."""


class PretrainedWeightsError(ValueError):
    """``model.pretrained`` does not point at a loadable weights file."""


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory`` under ``name``.

    Raises:
        ValueError: the name is already taken (two models would shadow each other).
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorator


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, request: ModelBuildRequest, pretrained: str | None = None) -> nn.Module:
    """Build the registered model ``name``; load ``pretrained`` weights if given.

    Raises:
        UnknownModelError: ``name`` is not registered (the message lists the names that are).
        PretrainedWeightsError: the weights file is missing or does not load with
            ``weights_only=True``.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        raise UnknownModelError(
            f"model.name: {name!r} is not a registered model; "
            f"allowed: {', '.join(registered_names())}"
        )
    model = factory(request)
    if pretrained:
        load_pretrained(model, Path(pretrained))
    return model


def load_pretrained(model: nn.Module, path: Path) -> None:
    """Load weights from a local file, skipping tensors whose shape differs
    (the classifier head, when the class count differs). Never downloads."""
    if not path.is_file():
        raise PretrainedWeightsError(
            f"model.pretrained: {str(path)!r} does not exist; give a local weights file "
            "(trainpipe never downloads weights)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        # The exception's type only: torch's text quotes what it read from
        # the file, and this message reaches the pipeline's status.
        raise PretrainedWeightsError(
            f"model.pretrained: {str(path)!r} does not load as a state dict ({type(exc).__name__}); "
            "give a file saved with torch.save(model.state_dict())"
        ) from exc
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    if not usable:
        raise PretrainedWeightsError(
            f"model.pretrained: {str(path)!r} shares no tensor with this model's architecture"
        )
    model.load_state_dict(usable, strict=False)
    if skipped:
        log.info("pretrained weights: skipped %d tensors with other shapes: %s", len(skipped), skipped[:5])
