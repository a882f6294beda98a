"""Log-mel spectrograms (``tasks/vae/mel.py``): shape, fixed scale, device, inversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.vae_audio import tone
from trainpipe_trainer.contract.job_config import AudioConfig
from trainpipe_trainer.tasks.vae.chunks import chunk_samples_for
from trainpipe_trainer.tasks.vae.mel import LogMel, frames_for, log_mel_to_audio

SETTINGS = [
    AudioConfig(),
    AudioConfig(sample_rate=22050, chunk_seconds=0.5, n_mels=40, n_fft=512, hop_length=128),
    AudioConfig(sample_rate=8000, chunk_seconds=2.0, n_mels=32, n_fft=256, hop_length=100),
]


@pytest.mark.parametrize("audio", SETTINGS, ids=["default", "22k", "8k"])
def test_shape_agrees_with_frames_for(audio: AudioConfig) -> None:
    waves = torch.randn(3, 1, chunk_samples_for(audio)) * 0.1
    out = LogMel(audio)(waves)
    assert out.shape == (3, 1, audio.n_mels, frames_for(audio))
    assert out.dtype == torch.float32


def test_the_scale_is_fixed_and_within_zero_one() -> None:
    audio = AudioConfig()
    waves = torch.from_numpy(np.stack([tone(1.0, amplitude=1.0), np.zeros(16000, np.float32), tone(1.0, amplitude=0.01)]))
    out = LogMel(audio)(waves.unsqueeze(1))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out[1].max()) == 0.0  # digital silence: the -80 dB floor
    assert 0.8 < float(out[0].max()) < 1.0  # a full-scale sine sits just under 0 dB
    # -40 dB of amplitude is -40 dB of power: half the [0, 1] range lower
    assert float(out[0].max() - out[2].max()) == pytest.approx(0.5, abs=0.01)
    # no data-dependent statistics: a sample's output does not depend on its batch
    torch.testing.assert_close(LogMel(audio)(waves[:1].unsqueeze(1)), out[:1])


def test_runs_on_the_inputs_device() -> None:
    audio = AudioConfig()
    module = LogMel(audio)  # left on the CPU
    out = module(torch.zeros(2, 1, chunk_samples_for(audio), device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 1, audio.n_mels, frames_for(audio))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_cuda_and_matches_the_cpu() -> None:
    audio = AudioConfig()
    waves = torch.from_numpy(np.stack([tone(1.0), tone(1.0, freq=1000.0)])).unsqueeze(1)
    cpu = LogMel(audio)(waves)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gpu = LogMel(audio).cuda()(waves.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


def test_rejects_waves_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\[batch, 1, samples\]"):
        LogMel(AudioConfig())(torch.zeros(2, 16000))


@pytest.mark.parametrize("audio", SETTINGS[:2], ids=["default", "22k"])
def test_log_mel_to_audio_returns_one_chunk_and_sounds_like_the_input(audio: AudioConfig) -> None:
    module = LogMel(audio)
    wave = torch.from_numpy(tone(audio.chunk_seconds, rate=audio.sample_rate, freq=660.0))
    wave = wave[: chunk_samples_for(audio)].view(1, 1, -1)
    log_mel = module(wave)[0, 0]
    out = log_mel_to_audio(log_mel, audio, n_iter=16)
    assert out.shape == (chunk_samples_for(audio),) and out.dtype == np.float32
    assert np.isfinite(out).all()
    again = module(torch.from_numpy(out).view(1, 1, -1))[0, 0]
    assert float((again - log_mel).abs().mean()) < 0.05
    np.testing.assert_array_equal(out, log_mel_to_audio(log_mel.numpy(), audio, n_iter=16))  # deterministic
