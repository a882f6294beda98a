"""The VAE loss, the KL weight schedules and active units (``tasks/vae/loss.py``)."""

from __future__ import annotations

import math

import pytest
import torch

from trainpipe_trainer.contract.job_config import KlAnnealConfig, VaeConfig
from trainpipe_trainer.tasks.vae.loss import active_units, kl_weight, vae_loss


def test_recon_is_the_squared_error_summed_per_sample_and_averaged_over_the_batch() -> None:
    x = torch.zeros(2, 1, 4, 5)
    x_hat = torch.full_like(x, 0.5)
    x_hat[1] = 1.0  # sample 0: 20 * 0.25 = 5; sample 1: 20 * 1 = 20
    zeros = torch.zeros(2, 3)
    loss = vae_loss(x_hat, x, zeros, zeros, kl_weight=1.0, free_bits=0.0)
    assert float(loss.recon) == pytest.approx(12.5)
    assert float(loss.kl) == 0.0 and float(loss.total) == pytest.approx(12.5)


def test_kl_is_in_nats_per_sample_summed_over_dimensions() -> None:
    mu = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # KL 0.5 and 4.5 in dim 0
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, math.log(4.0)]])  # 0.5 * (4 - 1 - ln 4) in dim 1
    dim1 = 0.5 * (4.0 - 1.0 - math.log(4.0))
    x = torch.zeros(2, 1, 2, 2)
    loss = vae_loss(x, x, mu, logvar, kl_weight=2.0, free_bits=0.0)
    assert float(loss.kl) == pytest.approx((0.5 + 4.5) / 2 + dim1)
    assert float(loss.kl_penalty) == pytest.approx(float(loss.kl))
    assert float(loss.total) == pytest.approx(2.0 * float(loss.kl))


def test_free_bits_floor_each_dimension_and_leave_the_reported_kl_raw() -> None:
    mu = torch.tensor([[0.1, 2.0, 0.0], [-0.1, 2.0, 0.0]], requires_grad=True)
    logvar = torch.zeros(2, 3)
    x = torch.zeros(2, 1, 2, 2)
    loss = vae_loss(x, x, mu, logvar, kl_weight=1.0, free_bits=0.5)
    # per dim mean KL: 0.005, 2.0, 0.0 -> penalty max(0.5, .) summed = 0.5 + 2.0 + 0.5
    assert float(loss.kl.detach()) == pytest.approx(2.005)
    assert float(loss.kl_penalty.detach()) == pytest.approx(3.0)
    loss.total.backward()
    assert mu.grad is not None
    assert float(mu.grad[:, 0].abs().sum()) == 0.0  # under the floor: no pressure
    assert float(mu.grad[:, 1].abs().sum()) > 0.0


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="differs"):
        vae_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3), torch.zeros(1, 2), torch.zeros(1, 2), 1.0, 0.0)


def vae(schedule: str, beta: float = 2.0, warmup: float = 4.0, cycles: int = 2) -> VaeConfig:
    return VaeConfig(beta=beta, kl_anneal=KlAnnealConfig(schedule=schedule, warmup_epochs=warmup, cycles=cycles))


def test_linear_rises_to_beta_at_warmup_and_holds() -> None:
    cfg = vae("linear")
    assert kl_weight(0.0, cfg, 10) == 0.0
    assert kl_weight(1.0, cfg, 10) == pytest.approx(0.5)
    assert kl_weight(2.5, cfg, 10) == pytest.approx(1.25)  # moves within an epoch
    assert kl_weight(4.0, cfg, 10) == pytest.approx(2.0)
    assert kl_weight(9.0, cfg, 10) == pytest.approx(2.0)


def test_cyclical_rises_over_each_first_half_holds_and_restarts() -> None:
    cfg = vae("cyclical", cycles=2)  # 10 epochs: cycles [0, 5) and [5, 10)
    assert kl_weight(0.0, cfg, 10) == 0.0
    assert kl_weight(1.25, cfg, 10) == pytest.approx(1.0)
    assert kl_weight(2.5, cfg, 10) == pytest.approx(2.0)
    assert kl_weight(4.9, cfg, 10) == pytest.approx(2.0)
    assert kl_weight(5.0, cfg, 10) == 0.0  # restart
    assert kl_weight(6.25, cfg, 10) == pytest.approx(1.0)
    assert kl_weight(10.0, cfg, 10) == pytest.approx(2.0)  # the end weighs the KL fully


def test_none_is_beta_from_the_start() -> None:
    cfg = vae("none", beta=3.0)
    assert [kl_weight(p, cfg, 10) for p in (0.0, 0.5, 7.0)] == [3.0, 3.0, 3.0]


def test_active_units_count_dimensions_whose_mean_varies() -> None:
    torch.manual_seed(0)
    mu = torch.zeros(200, 4)
    mu[:, 0] = torch.randn(200)  # variance ~1
    mu[:, 1] = 0.05 * torch.randn(200)  # variance ~0.0025: inactive
    mu[:, 2] = 3.0  # constant: inactive
    mu[:, 3] = 0.5 * torch.randn(200)  # variance ~0.25
    assert active_units(mu) == 2
    assert active_units(mu, threshold=0.001) == 3
    assert active_units(mu[:1]) == 0
