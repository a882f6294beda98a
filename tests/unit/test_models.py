"""The model registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from trainpipe_trainer.models import (
    ModelBuildRequest,
    UnknownModelError,
    build_model,
    registered_names,
)
from trainpipe_trainer.models.registry import PretrainedWeightsError, register


def test_registered_models() -> None:
    assert {"resnet18", "resnet50", "smallcnn"} <= set(registered_names())


def test_an_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(UnknownModelError) as err:
        build_model("resnet101", ModelBuildRequest(num_classes=10, image_size=32))
    message = str(err.value)
    assert "model.name" in message and "'resnet101'" in message
    for name in ("resnet18", "resnet50", "smallcnn"):
        assert name in message


def test_a_name_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("smallcnn")(lambda request: nn.Identity())


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "smallcnn"])
def test_models_classify_small_images_into_the_data_classes(name: str) -> None:
    model = build_model(name, ModelBuildRequest(num_classes=7, image_size=16)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)


def test_resnet_uses_a_small_image_stem_under_64_px_only() -> None:
    small = build_model("resnet18", ModelBuildRequest(num_classes=10, image_size=32))
    large = build_model("resnet18", ModelBuildRequest(num_classes=10, image_size=224))
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, nn.MaxPool2d)


def test_pretrained_weights_load_from_a_local_file_except_a_mismatched_head(tmp_path: Path) -> None:
    source = build_model("resnet18", ModelBuildRequest(num_classes=1000, image_size=32))
    weights = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), weights)
    model = build_model("resnet18", ModelBuildRequest(num_classes=10, image_size=32), pretrained=str(weights))
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 10


def test_missing_pretrained_weights_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="model.pretrained.*does not exist"):
        build_model("smallcnn", ModelBuildRequest(num_classes=10, image_size=16), pretrained=str(tmp_path / "x.pt"))


def test_a_file_that_is_not_weights_is_refused_without_quoting_it(tmp_path: Path) -> None:
    """The message reaches the pipeline's status: it names the file and the
    problem, never what the file holds (torch's own text quotes it)."""
    notes = tmp_path / "notes.pt"
    notes.write_text("password=hunter2\n")
    with pytest.raises(PretrainedWeightsError) as caught:
        build_model("smallcnn", ModelBuildRequest(num_classes=10, image_size=16), pretrained=str(notes))
    message = str(caught.value)
    assert message == (f"model.pretrained: {str(notes)!r} does not load as a state dict (UnpicklingError); "
                       "give a file saved with torch.save(model.state_dict())")
