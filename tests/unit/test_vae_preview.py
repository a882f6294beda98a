"""Preview files (``tasks/vae/preview.py``): wav, mel PNG, level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from tests.vae_audio import tone
from trainpipe_trainer.contract.job_config import AudioConfig
from trainpipe_trainer.tasks.vae.chunks import chunk_samples_for
from trainpipe_trainer.tasks.vae.mel import LogMel, log_mel_to_audio
from trainpipe_trainer.tasks.vae.preview import save_mel_png, wave_stats, write_wav


def test_a_reconstructed_preview_is_a_valid_wav_of_the_configured_rate_and_length(tmp_path: Path) -> None:
    audio = AudioConfig(sample_rate=22050, chunk_seconds=0.5, n_fft=512, hop_length=128, n_mels=40)
    wave = torch.from_numpy(tone(0.5, rate=22050)).view(1, 1, -1)
    preview = log_mel_to_audio(LogMel(audio)(wave)[0, 0], audio, n_iter=8)
    path = tmp_path / "previews" / "epoch_001_recon_0.wav"
    write_wav(path, preview, audio.sample_rate)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, 1, chunk_samples_for(audio), "PCM_16")
    data, _ = sf.read(str(path), dtype="float32")
    np.testing.assert_allclose(data, np.clip(preview, -1, 1), atol=1 / 16384)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_write_wav_clips_and_zeroes_nonfinite_samples(tmp_path: Path) -> None:
    wave = np.array([0.5, 2.0, -3.0, np.nan, np.inf], dtype=np.float32)
    write_wav(tmp_path / "x.wav", wave, 16000)
    data, rate = sf.read(str(tmp_path / "x.wav"), dtype="float32")
    assert rate == 16000
    np.testing.assert_allclose(data, [0.5, 1.0, -1.0, 0.0, 0.0], atol=1 / 16384)


def test_write_wav_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    write_wav(path, np.zeros(10, np.float32), 16000)
    write_wav(path, np.zeros(20, np.float32), 16000)
    assert sf.info(str(path)).frames == 20


def test_save_mel_png_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "mel.png"
    save_mel_png(path, torch.rand(1, 64, 63), "epoch 1: reconstruction 0")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100
    with pytest.raises(ValueError, match="n_mels, frames"):
        save_mel_png(tmp_path / "bad.png", np.zeros(5), "bad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mel.png"]


def test_wave_stats_give_peak_and_rms() -> None:
    peak, rms = wave_stats(np.array([0.0, -0.5, 0.5, 0.0], dtype=np.float32))
    assert (peak, rms) == (0.5, pytest.approx(0.5 / np.sqrt(2)))
    assert wave_stats(np.zeros(0)) == (0.0, 0.0)
    assert np.isnan(wave_stats(np.array([0.1, np.nan]))[0])
