"""A small convolutional network: fast enough to train on two CPU cores, used
by the examples and tests."""

from __future__ import annotations

from torch import nn

from trainpipe_trainer.models.registry import ModelBuildRequest, register


class SmallCNN(nn.Module):
    def __init__(self, request: ModelBuildRequest, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(request.in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width * 2, 3, padding=1),
            nn.BatchNorm2d(width * 2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(request.dropout),
            nn.Linear(width * 2 * 16, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, request.num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register("smallcnn")
def build_smallcnn(request: ModelBuildRequest) -> nn.Module:
    return SmallCNN(request)
