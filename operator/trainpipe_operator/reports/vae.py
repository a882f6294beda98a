"""The ``vae`` task's parts of the reports: the ELBO's terms instead of
accuracy, the audio previews (linked in a training report, embedded in the
final one), and a deployment guide that samples audio from the exported
decoder. ``training`` and ``finalization`` call these for a VAE run; a
classifier's reports do not change.

Preview paths come from ``evidence.json`` (relative to the run directory, as
the reports are written there); a path that is not ``safe_relative`` is
shown as text, never linked.
"""

from __future__ import annotations

from collections.abc import Sequence

from trainpipe_operator.gates.inputs import safe_relative
from trainpipe_operator.gates.test_figures import test_metric
from trainpipe_operator.gates.vae_finalization import DECODER, SAMPLING_CALL
from trainpipe_operator.reports.markdown import fmt, table
from trainpipe_trainer.contract.evidence import EpochRecord, Evidence, PreviewRecord
from trainpipe_trainer.contract.job_config import AudioConfig, VaeConfig
from trainpipe_trainer.contract.results import ExportReport, TestEvaluation

KIND_ORDER = {"original": 0, "reconstruction": 1, "prior": 2}


def link(text: str, path: str | None) -> str:
    """``[text](path)``; angle brackets where the path holds spaces or
    parentheses; the bare path (no link) where it is not safe."""
    if not path:
        return "n/a"
    if not safe_relative(path):
        return f"{path} (not under the run directory: not linked)"
    return f"[{text}]({_target(path)})"


def _target(path: str) -> str:
    return f"<{path}>" if any(c in path for c in " ()<>") else path


def _m(record: EpochRecord | None, name: str) -> float | None:
    return record.metric(name) if record is not None else None


def final_metric_rows(last: EpochRecord, best: EpochRecord | None) -> list[tuple[object, ...]]:
    """Final Metrics for a VAE: the negative ELBO and its terms (nats per
    sample), labelled with the metric names the catalog and the gates use."""
    return [
        ("train loss (negative ELBO)", last.train_loss, best.train_loss if best else None),
        ("val loss (negative ELBO)", last.val_loss, best.val_loss if best else None),
        ("val_recon (reconstruction)", _m(last, "val_recon"), _m(best, "val_recon")),
        ("val_kl (nats per sample)", _m(last, "val_kl"), _m(best, "val_kl")),
        ("train_recon (reconstruction)", _m(last, "train_recon"), _m(best, "train_recon")),
        ("train_kl (nats per sample)", _m(last, "train_kl"), _m(best, "train_kl")),
        ("KL weight", _m(last, "kl_weight"), _m(best, "kl_weight")),
        ("active latent units", _m(last, "active_units"), _m(best, "active_units")),
        ("train-val loss gap", last.loss_gap, best.loss_gap if best else None),
    ]


EPOCH_HEADERS = ["epoch", "train loss", "val loss", "val recon", "val KL", "KL weight", "active units", "lr",
                 "seconds", "skipped"]


def epoch_rows(evidence: Evidence) -> list[tuple[object, ...]]:
    return [(e.num, e.train_loss, e.val_loss, e.metric("val_recon"), e.metric("val_kl"), e.metric("kl_weight"),
             e.metric("active_units"), e.lr, e.epoch_seconds, e.skipped_steps) for e in evidence.epochs]


def _ordered(previews: Sequence[PreviewRecord]) -> list[PreviewRecord]:
    return sorted(previews, key=lambda p: (p.epoch, KIND_ORDER.get(p.kind, 9), p.index))


def preview_lines(previews: Sequence[PreviewRecord]) -> list[str]:
    """The Previews section of a training report: every preview linked."""
    lines = ["## Previews", ""]
    if not previews:
        return lines + ["No preview was written.", ""]
    lines += ["Audio previews, relative to this folder: originals (validation clips), their reconstructions, "
              "and samples from the prior. Each has its mel spectrogram.", ""]
    rows = [(p.epoch, p.kind, p.index, link(p.wav.rsplit("/", 1)[-1], p.wav), link("mel", p.png), p.peak, p.rms,
             p.source or "") for p in _ordered(previews)]
    return lines + [table(["epoch", "kind", "clip", "audio", "mel", "peak", "rms", "source"], rows), ""]


def last_previews(previews: Sequence[PreviewRecord]) -> list[PreviewRecord]:
    """The previews of the latest epoch that wrote any."""
    if not previews:
        return []
    newest = max(p.epoch for p in previews)
    return _ordered([p for p in previews if p.epoch == newest])


def embedded_preview_lines(previews: Sequence[PreviewRecord]) -> list[str]:
    """The last previews embedded: the mel image shown, the wav linked."""
    shown = last_previews(previews)
    lines = ["## Previews", ""]
    if not shown:
        return lines + ["The final training wrote no preview.", ""]
    lines += [f"The last previews of the final training (epoch {shown[0].epoch}): the mel spectrogram of each clip "
              "and its audio.", ""]
    for p in shown:
        source = f", from `{p.source}`" if p.source else ""
        lines += [f"### {p.kind.capitalize()} {p.index}{source}", ""]
        if p.png and safe_relative(p.png):
            lines += [f"![mel spectrogram, {p.kind} {p.index}]({_target(p.png)})", ""]
        lines += [f"Audio: {link(p.wav.rsplit('/', 1)[-1], p.wav)} ({p.num_samples} samples at {p.sample_rate} Hz, "
                  f"peak {fmt(p.peak)}, rms {fmt(p.rms)})", ""]
    return lines


def render_vae_test_results(test: TestEvaluation, target: str, previews: Sequence[PreviewRecord] = ()) -> str:
    loss, recon, kl = (test_metric(test, n) for n in ("test_loss", "test_recon", "test_kl"))
    lines = [
        "# Test results",
        "",
        "The held-out test split, never used for training or model selection, evaluated once.",
        "",
        table(["", ""], [
            ("samples (chunks)", test.samples),
            ("negative ELBO (test loss, nats per sample)", loss),
            ("reconstruction", recon),
            ("KL (nats per sample)", kl),
            ("target", target),
            ("checkpoint", f"{test.checkpoint} (epoch {test.checkpoint_epoch})"),
        ]),
        "",
        "The negative ELBO is the reconstruction term plus the KL term (before beta), averaged per chunk.",
        "",
        *embedded_preview_lines(previews),
    ]
    return "\n".join(lines)


def _sampling_code(decoder: str, input_name: str, latent_dim: int, audio: AudioConfig, n_iter: int) -> list[str]:
    return [
        "```python",
        "import numpy as np",
        "import onnxruntime as ort",
        "import soundfile as sf",
        "",
        "from trainpipe_trainer.contract.job_config import AudioConfig",
        f"from trainpipe_trainer.tasks.vae.mel import {SAMPLING_CALL}",
        "",
        f"audio_config = AudioConfig(sample_rate={audio.sample_rate}, chunk_seconds={audio.chunk_seconds!r}, "
        f"n_mels={audio.n_mels}, n_fft={audio.n_fft}, hop_length={audio.hop_length})",
        f'decoder = ort.InferenceSession("{decoder}", providers=["CPUExecutionProvider"])',
        f"z = np.random.default_rng(0).standard_normal((4, {latent_dim})).astype(np.float32)  # z ~ N(0, I)",
        f'log_mels = decoder.run(None, {{"{input_name}": z}})[0]',
        "for i, log_mel in enumerate(log_mels):",
        "    log_mel = log_mel.reshape(log_mel.shape[-2], log_mel.shape[-1])  # [n_mels, frames]",
        f"    audio = {SAMPLING_CALL}(log_mel, audio_config, {n_iter})",
        '    sf.write(f"sample_{i}.wav", audio, audio_config.sample_rate)',
        "```",
    ]


def render_vae_deployment_guide(export: ExportReport, model_name: str, test: TestEvaluation | None,
                                vae: VaeConfig | None = None, audio: AudioConfig | None = None) -> str:
    """How to sample audio from the exported decoder; the same sections as a
    classifier's guide (Inputs, Preprocessing, Outputs, Loading), plus
    Sampling audio and Parity."""
    vae = vae or VaeConfig()
    audio = audio or AudioConfig()
    decoder = export.parts.get(DECODER)
    encoder = export.parts.get("encoder")
    loss, recon, kl = (test_metric(test, n) for n in ("test_loss", "test_recon", "test_kl"))
    frames = 1 + int(audio.chunk_seconds * audio.sample_rate) // audio.hop_length
    shape = export.input_shape or ["N", vae.latent_dim]
    scores = (f", test negative ELBO {fmt(loss)} (reconstruction {fmt(recon)} + KL {fmt(kl)} nats per sample)"
              if loss is not None else "")
    lines = [
        "# Deployment guide",
        "",
        f"Model `{model_name}` (task vae): a variational autoencoder of {audio.chunk_seconds:g}s log-mel "
        f"spectrograms at {audio.sample_rate} Hz, latent dimension {vae.latent_dim}{scores}.",
        "",
        "Exported parts: " + (", ".join(f"{k} `{v}`" for k, v in export.parts.items()) or "none recorded") + ".",
        "",
        "## Inputs",
        "",
        f"The decoder (`{decoder or 'not exported'}`) takes a latent vector z: a float32 tensor of shape "
        f"`{shape}` (`N x {vae.latent_dim}`), ONNX input name `{export.input_name}`; the batch dimension is "
        + ("dynamic." if export.dynamic_batch else "fixed at export time."),
    ]
    if encoder:
        lines.append(f"The encoder (`{encoder}`) takes log-mel spectrograms `[N, 1, {audio.n_mels}, frames]` and "
                     "returns the posterior's mean and log-variance.")
    lines += [
        "",
        "## Preprocessing",
        "",
        f"Sampling needs none: draw z from the prior, z ~ N(0, I), {vae.latent_dim} independent standard normal "
        "values per clip (`numpy.random.default_rng(seed).standard_normal((N, latent_dim))`, as float32).",
        f"To encode audio instead: mono, resampled to {audio.sample_rate} Hz, cut into {audio.chunk_seconds:g}s "
        f"chunks, log-mel with {audio.n_mels} mel bands, n_fft {audio.n_fft}, hop {audio.hop_length} "
        "(the training's `data.audio` settings).",
        "",
        "## Outputs",
        "",
        f"The decoder outputs log-mel spectrograms, about `[N, {audio.n_mels}, {frames}]` (mel bands x frames; "
        f"ONNX output `{export.output_name}`; a channel axis of 1 may precede the mel axis). They are not audio "
        "yet: the documented inversion maps the log-mel (decibels scaled to [0, 1]) back to mel power, maps "
        "the mel bands back to linear frequency bins (the mel filter bank's pseudo-inverse), and recovers the "
        "phase with Griffin-Lim "
        f"(the training's previews used {vae.griffin_lim_iters} iterations). `trainpipe_trainer.tasks.vae.mel."
        f"{SAMPLING_CALL}(log_mel, audio_config, n_iter)` does exactly that with the training's settings and "
        f"returns a float32 waveform at {audio.sample_rate} Hz.",
        "",
        "## Sampling audio",
        "",
        "Draw z ~ N(0, I), run the decoder, invert each log-mel, write a wav:",
        "",
        *_sampling_code(decoder or "decoder.onnx", export.input_name, vae.latent_dim, audio, vae.griffin_lim_iters),
        "",
        "## Loading",
        "",
    ]
    for artifact in export.artifacts:
        state = "ok" if artifact.checker_ok and not artifact.error else f"FAILED: {artifact.error}"
        lines += [f"### {artifact.format} (`{artifact.path}`, {artifact.kind}, {state})", "", "```python",
                  artifact.load, "```", ""]
    lines += [
        "### PyTorch checkpoint (`checkpoints/best_model.pt` of the final training)",
        "",
        "```python",
        "import torch",
        "state = torch.load('checkpoints/best_model.pt', map_location='cpu', weights_only=True)",
        "model.load_state_dict(state['model_state_dict'])  # model built as in the training config",
        "```",
        "",
        "## Parity",
        "",
        table(["runtime", "samples", "max abs diff", "allclose (rtol, atol)"], [
            (p.runtime, p.samples, p.max_abs_diff, f"{fmt(p.allclose)} ({p.rtol}, {p.atol})")
            for p in export.parity
        ]),
        "",
    ]
    return "\n".join(lines)
