"""torchvision ResNets, with a small-image stem for inputs under 64 px: the
ImageNet stem (7x7 stride 2 + max pool) would shrink an 8-32 px image to
almost nothing before the first block."""

from __future__ import annotations

from typing import cast

from torch import nn
from torchvision.models import resnet18, resnet50

from trainpipe_trainer.models.registry import ModelBuildRequest, register

SMALL_IMAGE_LIMIT = 64


def _adapt(model: nn.Module, request: ModelBuildRequest) -> nn.Module:
    if request.image_size < SMALL_IMAGE_LIMIT:
        model.conv1 = nn.Conv2d(request.in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if request.dropout > 0:
        model.fc = nn.Sequential(nn.Dropout(request.dropout), cast(nn.Module, model.fc))
    return model


@register("resnet18")
def build_resnet18(request: ModelBuildRequest) -> nn.Module:
    return _adapt(resnet18(weights=None, num_classes=request.num_classes), request)


@register("resnet50")
def build_resnet50(request: ModelBuildRequest) -> nn.Module:
    return _adapt(resnet50(weights=None, num_classes=request.num_classes), request)
