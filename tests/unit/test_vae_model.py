"""The convolutional VAE (``tasks/vae/model.py``): shapes, modes, registry, export."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from trainpipe_trainer.tasks.vae.model import VAE_MODELS, ConvVAE, build_vae


@pytest.mark.parametrize("name", list(VAE_MODELS))
@pytest.mark.parametrize(("n_mels", "frames"), [(64, 63), (40, 44), (33, 17)])
def test_output_shape_equals_input_shape(name: str, n_mels: int, frames: int) -> None:
    model = build_vae(name, n_mels, frames, latent_dim=8)
    x = torch.rand(2, 1, n_mels, frames)
    with torch.no_grad():
        x_hat, mu, logvar = model(x)
    assert x_hat.shape == x.shape
    assert mu.shape == logvar.shape == (2, 8)
    assert float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0  # sigmoid: the LogMel range


def test_sizes_grow() -> None:
    params = [sum(p.numel() for p in build_vae(n, 64, 63, 16).parameters()) for n in VAE_MODELS]
    assert params == sorted(params) and len(set(params)) == 3


def test_training_mode_samples_and_eval_mode_uses_the_mean() -> None:
    torch.manual_seed(0)
    model = build_vae("vae-small", 64, 63, 16)
    x = torch.rand(2, 1, 64, 63)
    model.eval()
    first, mu, _ = model(x)
    torch.testing.assert_close(model(x)[0], first, rtol=0, atol=0)
    torch.testing.assert_close(first, model.decode(mu), rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])


def test_unknown_names_are_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="vae-huge.*allowed: vae-small, vae-medium, vae-large"):
        build_vae("vae-huge", 64, 63, 16)


def test_logvar_is_clamped_finite() -> None:
    model = build_vae("vae-small", 16, 16, 4)
    _, logvar = model.encode(torch.full((1, 1, 16, 16), 1e6))
    assert torch.isfinite(logvar.exp()).all()


def _onnx(module: torch.nn.Module, example: torch.Tensor, path: Path) -> ort.InferenceSession:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def trained_looking_model() -> ConvVAE:
    torch.manual_seed(1)
    model = build_vae("vae-small", 64, 63, 16).eval()
    with torch.no_grad():  # move GroupNorm's affine away from identity
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


def test_decoder_exports_to_onnx_and_matches_onnxruntime(trained_looking_model: ConvVAE, tmp_path: Path) -> None:
    decoder = trained_looking_model.decoder_module().eval()
    session = _onnx(decoder, torch.randn(2, 16), tmp_path / "decoder.onnx")
    z = torch.randn(5, 16)
    [out] = session.run(None, {"input": z.numpy()})
    with torch.no_grad():
        expected = decoder(z).numpy()
    assert out.shape == (5, 1, 64, 63)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)


def test_encoder_exports_to_onnx_as_mu_then_logvar(trained_looking_model: ConvVAE, tmp_path: Path) -> None:
    encoder = trained_looking_model.encoder_module().eval()
    session = _onnx(encoder, torch.rand(2, 1, 64, 63), tmp_path / "encoder.onnx")
    x = torch.rand(3, 1, 64, 63)
    [out] = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        mu, logvar = trained_looking_model.encode(x)
    assert out.shape == (3, 32)
    np.testing.assert_allclose(out[:, :16], mu.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out[:, 16:], logvar.numpy(), atol=1e-4, rtol=0)


def test_parts_export_with_torch_export(trained_looking_model: ConvVAE) -> None:
    batch = torch.export.Dim("batch", min=1)
    z = torch.randn(2, 16)
    decoder = torch.export.export(trained_looking_model.decoder_module(), (z,), dynamic_shapes=({0: batch},))
    other_batch = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(decoder.module()(other_batch), trained_looking_model.decode(other_batch))
    x = torch.rand(2, 1, 64, 63)
    encoder = torch.export.export(trained_looking_model.encoder_module(), (x,), dynamic_shapes=({0: batch},))
    with torch.no_grad():
        torch.testing.assert_close(encoder.module()(x), trained_looking_model.encoder_module()(x))
    whole = torch.export.export(trained_looking_model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(whole.module()(x)[0], trained_looking_model(x)[0])
