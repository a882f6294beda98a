"""The ``vae`` task (seed 004): a convolutional VAE over log-mel spectrograms
of a small folder of audio files (5-500), with KL annealing and free bits
against posterior collapse, and audio previews every ``vae.previewEvery``
epochs.

What the engine records:

- the training loss is the negative ELBO per sample (reconstruction + KL),
  the same quantity as ``val_loss``, so the overfitting gap compares like
  with like; what is back-propagated is the annealed objective
  (reconstruction + kl_weight * KL with free bits);
- per step (``training.log``, telemetry): ``recon_loss``, ``kl_loss``,
  ``kl_weight``;
- per epoch (``metrics.json``): ``train_recon``, ``train_kl``,
  ``val_recon``, ``val_kl`` (nats per sample), ``kl_weight``,
  ``active_units``;
- previews (``previews/epoch_NNN/``): reconstructions of fixed validation
  clips and samples from the prior, as ``.wav`` at the dataset's rate and a
  mel-spectrogram ``.png``, listed in the evidence.

Finalization evaluates the test split once (``test_loss`` = negative ELBO,
``test_recon``, ``test_kl``) and exports the parts ``vae.exportParts`` names
(the decoder by default) with ONNX and torch.export parity.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler

from trainpipe_trainer.contract.evidence import PreviewRecord
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import ExportReport, TestEvaluation
from trainpipe_trainer.tasks.base import (
    EvaluatedModel,
    StepOutput,
    Task,
    TaskData,
    float_or_none,
    int_or_none,
)
from trainpipe_trainer.tasks.vae.loss import active_units, kl_weight, vae_loss
from trainpipe_trainer.tasks.vae.mel import LogMel, frames_for, log_mel_to_audio
from trainpipe_trainer.tasks.vae.model import build_vae

PREVIEW_DIR = "previews"
PARITY_CLIPS = 16


class VaeTask(Task):
    name = "vae"
    curves_panel = ("reconstruction and KL per sample", ("train_recon", "val_recon", "val_kl"), None)

    def __init__(self, config: JobConfig) -> None:
        super().__init__(config)
        self.audio = config.data.audio
        self.vae = config.vae
        self.mel: LogMel | None = None
        self.last_kl_weight: float | None = None
        self.val_mu: list[torch.Tensor] = []
        self.active: int | None = None
        self.preview_clips: list[tuple[torch.Tensor, str]] = []
        self.shard_of: tuple[int, int] = (0, 1)  # (rank, world size); see shard()

    # ------------------------------------------------------------ building
    def shard(self, rank: int, world_size: int) -> None:
        """Decode only this rank's shard of each split (``audio_data.shard_files``)."""
        self.shard_of = (rank, world_size)

    def build_data(self) -> TaskData:
        from trainpipe_trainer.tasks.vae.audio_data import build_audio_data

        rank, world_size = self.shard_of
        data = build_audio_data(self.config.data, self.config.seed, rank=rank, world_size=world_size)
        # Sharded: rank 0 (the one that writes previews) picks them from its own val files.
        self.preview_clips = _preview_clips(data.val, self.vae.preview_clips)
        return TaskData(train=data.train, val=data.val, test=data.test, report=data.report,
                        info={"sample_rate": data.sample_rate, "chunk_samples": data.chunk_samples},
                        sharded=world_size > 1)

    def build_model(self, data: TaskData) -> nn.Module:
        return build_vae(self.config.model.name, self.audio.n_mels, frames_for(self.audio), self.vae.latent_dim)

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        self.mel = LogMel(self.audio).to(device)

    def _log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Log-mel on the training device, in fp32 whatever the autocast."""
        assert self.mel is not None, "setup() first"
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return self.mel(wave.float())

    def check_batch(self, batch: Any) -> str | None:
        wave = batch[0]
        expected = round(self.audio.sample_rate * self.audio.chunk_seconds)
        if wave.dim() != 3 or wave.shape[1] != 1 or wave.shape[2] != expected:
            return f"audio batch of shape {list(wave.shape)}; expected [batch, 1, {expected}]"
        if not bool(torch.isfinite(wave).all()):
            return "audio batch holds NaN or Inf samples"
        return None

    # --------------------------------------------------------------- steps
    def training_step(self, model: nn.Module, batch: Any, epoch_progress: float) -> StepOutput:
        wave = batch[0]
        x = self._log_mel(wave)
        x_hat, mu, logvar = model(x)
        weight = kl_weight(epoch_progress, self.vae, self.config.train.epochs)
        terms = vae_loss(x_hat.float(), x, mu.float(), logvar.float(), weight, self.vae.free_bits)
        recon, kl = float(terms.recon.detach()), float(terms.kl.detach())
        n = int(wave.shape[0])
        self.last_kl_weight = weight
        return StepOutput(
            loss=terms.total, count=n, recorded_loss=recon + kl,
            sums={"recon_sum": recon * n, "kl_sum": kl * n},
            step_metrics={"recon_loss": recon, "kl_loss": kl, "kl_weight": weight},
        )

    def validation_start(self) -> None:
        self.val_mu = []

    def validation_step(self, model: nn.Module, batch: Any) -> tuple[dict[str, float], int]:
        wave = batch[0]
        x = self._log_mel(wave)
        x_hat, mu, logvar = model(x)
        terms = vae_loss(x_hat.float(), x, mu.float(), logvar.float(), 1.0, 0.0)
        n = int(wave.shape[0])
        recon, kl = float(terms.recon), float(terms.kl)
        self.val_mu.append(mu.detach().float().cpu())
        return {"loss_sum": (recon + kl) * n, "recon_sum": recon * n, "kl_sum": kl * n}, n

    def validation_end(self, ctx: Any) -> None:
        local = torch.cat(self.val_mu) if self.val_mu else torch.zeros(0, self.vae.latent_dim)
        if ctx.distributed:
            gathered: list[Any] = [None] * ctx.world_size
            dist.all_gather_object(gathered, local)
            local = torch.cat(gathered)
        self.active = active_units(local) if len(local) > 1 else None

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float | None]:
        def mean(sums: dict[str, float], name: str) -> float | None:
            return sums[name] / sums["count"] if sums.get("count") and name in sums else None

        return {
            "train_recon": mean(train, "recon_sum"),
            "train_kl": mean(train, "kl_sum"),
            "val_recon": mean(val, "recon_sum"),
            "val_kl": mean(val, "kl_sum"),
            "kl_weight": self.last_kl_weight,
            "active_units": float(self.active) if self.active is not None else None,
        }

    def describe_epoch(self, metrics: dict[str, float | None]) -> str:
        def f(name: str) -> str:
            value = metrics.get(name)
            return "n/a" if value is None else f"{value:.4f}"

        return (f"val_recon={f('val_recon')} val_kl={f('val_kl')} kl_weight={f('kl_weight')} "
                f"active_units={f('active_units')}")

    # ------------------------------------------------------------ previews
    def epoch_artifacts(self, model: nn.Module, epoch: int, run_dir: Path, final: bool) -> list[PreviewRecord]:
        if not (final or epoch % self.vae.preview_every == 0) or not self.preview_clips:
            return []
        return self.write_previews(model, epoch, run_dir)

    @torch.no_grad()
    def write_previews(self, model: nn.Module, epoch: int, run_dir: Path) -> list[PreviewRecord]:
        """Reconstructions of the fixed validation clips and samples from
        the prior, mel to audio (Griffin-Lim), as wav + png. The prior's
        draws come from their own generator seeded by (seed, epoch): the
        training's random streams are untouched, so resume stays exact."""
        from trainpipe_trainer.tasks.vae.preview import save_mel_png, wave_stats, write_wav

        was_training = model.training
        model.eval()
        folder = run_dir / PREVIEW_DIR / f"epoch_{epoch:03d}"
        records: list[PreviewRecord] = []

        def emit(kind: str, index: int, log_mel: torch.Tensor, source: str | None) -> None:
            stem = f"{kind}_{index}"
            mel = log_mel.squeeze().float().cpu().numpy()
            wave = np.asarray(log_mel_to_audio(mel, self.audio, self.vae.griffin_lim_iters), dtype=np.float32)
            write_wav(folder / f"{stem}.wav", wave, self.audio.sample_rate)
            save_mel_png(folder / f"{stem}.png", mel, f"{kind} {index}, epoch {epoch}")
            peak, rms = wave_stats(wave)
            records.append(PreviewRecord(
                epoch=epoch, kind=kind, index=index,
                wav=str((folder / f"{stem}.wav").relative_to(run_dir)),
                png=str((folder / f"{stem}.png").relative_to(run_dir)),
                sample_rate=self.audio.sample_rate, num_samples=int(wave.shape[-1]),
                peak=float(peak), rms=float(rms), source=source,
            ))

        try:
            for index, (wave, source) in enumerate(self.preview_clips):
                x = self._log_mel(wave.unsqueeze(0).to(self.device))
                x_hat, _, _ = model(x)
                emit("reconstruction", index, x_hat, source)
            if self.vae.prior_samples:
                generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
                z = torch.randn(self.vae.prior_samples, self.vae.latent_dim, generator=generator)
                decoded = model.decode(z.to(self.device))  # type: ignore[operator]
                for index in range(self.vae.prior_samples):
                    emit("prior", index, decoded[index], None)
        finally:
            model.train(was_training)
        return records

    # -------------------------------------------------------- finalization
    def evaluate(self, model: nn.Module, data: TaskData, run_dir: Path, state: dict[str, Any]) -> EvaluatedModel:
        from trainpipe_trainer.data import EpochSampler

        config = self.config
        loader = DataLoader(data.test, batch_size=config.data.batch_size,
                            sampler=EpochSampler(SequentialSampler(data.test)),  # type: ignore[arg-type]
                            num_workers=config.data.num_workers)
        recon_sum = kl_sum = 0.0
        count = 0
        kept: list[torch.Tensor] = []
        with torch.no_grad():
            for batch in loader:
                x = self._log_mel(batch[0].to(self.device))
                x_hat, mu, logvar = model(x)
                terms = vae_loss(x_hat.float(), x, mu.float(), logvar.float(), 1.0, 0.0)
                n = int(x.shape[0])
                recon_sum += float(terms.recon) * n
                kl_sum += float(terms.kl) * n
                count += n
                if sum(len(k) for k in kept) < PARITY_CLIPS:
                    kept.append(x[: PARITY_CLIPS - sum(len(k) for k in kept)].cpu())
        recon, kl = recon_sum / count, kl_sum / count
        elbo_loss = recon + kl
        finite = math.isfinite(elbo_loss)
        evaluation = TestEvaluation(
            task=self.name, samples=count, loss=elbo_loss if finite else None,
            metrics={"test_loss": elbo_loss if finite else None, "test_recon": recon if math.isfinite(recon) else None,
                     "test_kl": kl if math.isfinite(kl) else None},
            confusion_png=None, checkpoint=str(config.evaluate.checkpoint if config.evaluate else ""),
            checkpoint_epoch=int_or_none(state.get("epoch")), checkpoint_val_loss=float_or_none(state.get("val_loss")),
            model=config.model.name, data_source=config.data.source,
            split_fingerprint=data.report.split_fingerprint if data.report else "",
            evaluated_at=datetime.now(timezone.utc).isoformat(),
        )
        return EvaluatedModel(evaluation=evaluation, model=model, parity_inputs=torch.cat(kept))

    def describe_evaluation(self, evaluation: TestEvaluation) -> str:
        m = evaluation.metrics
        return f"negative ELBO {m.get('test_loss')}, reconstruction {m.get('test_recon')}, KL {m.get('test_kl')} nats"

    def export(self, evaluated: EvaluatedModel, run_dir: Path, formats: list[str]) -> ExportReport:
        """Each part in ``vae.exportParts`` as ``<part>.onnx`` / ``<part>.pt2``,
        with parity on real test inputs (the decoder: the posterior means of
        test clips), merged into one ``export.json``."""
        from trainpipe_trainer.contract.results import EXPORT_FILE
        from trainpipe_trainer.export import ExportNaming, export_model

        model = evaluated.model.cpu().float().eval()
        mels = evaluated.parity_inputs.float()
        with torch.no_grad():
            mu, _ = model.encode(mels)  # type: ignore[operator]
        parts: dict[str, tuple[nn.Module, torch.Tensor, ExportNaming]] = {
            "decoder": (model.decoder_module(), mu,  # type: ignore[operator]
                        ExportNaming(stem="decoder", input_name="z", output_name="log_mel", top1=False, part="decoder")),
            "encoder": (model.encoder_module(), mels,  # type: ignore[operator]
                        ExportNaming(stem="encoder", input_name="log_mel", output_name="mu", top1=False, part="encoder")),
            "model": (_Reconstruct(model), mels,
                      ExportNaming(stem="vae", input_name="log_mel", output_name="reconstruction", top1=False,
                                   part="model")),
        }
        merged: ExportReport | None = None
        for part in self.vae.export_parts:
            module, inputs, naming = parts[part]
            report = export_model(module, inputs[:2], [], run_dir, formats, inputs, None, naming, write=False)
            if merged is None:
                merged = report
            else:
                merged.artifacts += report.artifacts
                merged.parity += report.parity
                merged.parts.update(report.parts)
        assert merged is not None  # exportParts has at least one entry (the job config's rule)
        merged.input_name, merged.output_name = "z", "log_mel"
        merged.output = (f"decoder: z [batch, {self.vae.latent_dim}] -> normalised log-mel "
                         f"[batch, 1, {self.audio.n_mels}, {frames_for(self.audio)}]; invert with "
                         "trainpipe_trainer.tasks.vae.mel.log_mel_to_audio")
        merged.ok = merged.compute_ok()
        merged.write(run_dir / EXPORT_FILE)
        return merged


class _Reconstruct(nn.Module):
    """The whole VAE as one input, one output (eval mode: the posterior mean)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def _preview_clips(val: Any, wanted: int) -> list[tuple[torch.Tensor, str]]:
    """The first chunk of each of the first ``wanted`` validation files: the
    same clips every epoch, so previews are comparable across epochs."""
    sources: list[str] = list(getattr(val, "chunk_sources", []))
    chosen: list[tuple[torch.Tensor, str]] = []
    seen: set[str] = set()
    for index, source in enumerate(sources):
        if source in seen:
            continue
        seen.add(source)
        wave, _ = val[(index, 0)]
        chosen.append((wave, source))
        if len(chosen) == wanted:
            break
    return chosen
