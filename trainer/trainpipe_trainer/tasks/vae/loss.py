"""The VAE's loss, its KL weight schedule, and the active-units count.

Units (what ``val_recon`` and ``val_kl`` mean in the metrics):

* ``recon``: squared error summed over every bin of the normalised log-mel
  (``n_mels * frames`` values in [0, 1]) per sample, averaged over the batch.
  A sum, not a mean, so it is the negative log-likelihood of a Gaussian
  decoder (up to a constant) and weighs against the KL in nats at beta 1.
* ``kl``: KL(q(z|x) || N(0, I)) in nats per sample, summed over the latent
  dimensions, averaged over the batch: the raw figure, before beta and free
  bits (the posterior-collapse gate reads it).
* ``kl_penalty``: what is optimised, with free bits: per latent dimension,
  ``max(free_bits, that dimension's KL averaged over the batch)``, summed.
  Below ``free_bits`` nats a dimension's KL has no gradient, so the encoder is
  never pushed to give up the last bits a dimension carries.
* ``total = recon + kl_weight * kl_penalty``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainpipe_trainer.contract.job_config import VaeConfig


@dataclass
class VaeLoss:
    total: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    kl_penalty: torch.Tensor


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """[B, latent] KL of each dimension's posterior from N(0, 1), in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def vae_loss(
    x_hat: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    kl_weight: float,
    free_bits: float,
) -> VaeLoss:
    """The loss of one batch (see the module doc for the units)."""
    if x_hat.shape != x.shape:
        raise ValueError(f"reconstruction shape {tuple(x_hat.shape)} differs from input {tuple(x.shape)}")
    x_hat, x = x_hat.float(), x.float()
    recon = (x_hat - x).pow(2).flatten(1).sum(dim=1).mean()
    per_dim = kl_per_dimension(mu.float(), logvar.float())
    kl = per_dim.sum(dim=1).mean()
    kl_penalty = per_dim.mean(dim=0).clamp_min(float(free_bits)).sum()
    return VaeLoss(total=recon + float(kl_weight) * kl_penalty, recon=recon, kl=kl, kl_penalty=kl_penalty)


def kl_weight(epoch_progress: float, vae: VaeConfig, total_epochs: int) -> float:
    """The KL weight after ``epoch_progress`` epochs (fractional: it may move every step).

    ``none``: beta throughout. ``linear``: 0 rising to beta over
    ``klAnneal.warmupEpochs``, then beta. ``cyclical``: the run is cut into
    ``klAnneal.cycles`` equal cycles; each rises linearly from 0 over its
    first half and holds beta over its second (``warmupEpochs`` is not used).
    At or past ``total_epochs`` the weight is beta, so the last validation
    weighs the KL fully.
    """
    beta = float(vae.beta)
    anneal = vae.kl_anneal
    progress = max(0.0, float(epoch_progress))
    if anneal.schedule == "none":
        return beta
    if anneal.schedule == "linear":
        return beta * min(1.0, progress / anneal.warmup_epochs)
    total = max(1, int(total_epochs))
    if progress >= total:
        return beta
    cycle_length = total / anneal.cycles
    position = (progress % cycle_length) / cycle_length
    return beta * min(1.0, position / 0.5)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across the data (variance > threshold).

    ``mu``: [N, latent], the posterior means of N samples. A collapsed
    dimension outputs the same mean for every input: variance near 0.
    """
    if mu.dim() != 2:
        raise ValueError(f"active_units expects mu shaped [samples, latent], got {tuple(mu.shape)}")
    if mu.shape[0] < 2:
        return 0
    return int((mu.float().var(dim=0, unbiased=False) > threshold).sum())
