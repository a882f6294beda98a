"""Finding and decoding audio files (``tasks/vae/audio_files.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.vae_audio import tone, write_audio
from trainpipe_trainer.tasks.vae.audio_files import AudioDecodeError, decode_audio, scan_audio


def test_scan_is_recursive_sorted_case_insensitive_and_skips_hidden(tmp_path: Path) -> None:
    for name in ["b/z.WAV", "a.flac", "b/c/y.Ogg", "notes.txt", ".hidden.wav", ".cache/x.wav", "m.mp4"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in scan_audio(tmp_path)]
    assert found == ["a.flac", "b/c/y.Ogg", "b/z.WAV"]


def test_a_44k_stereo_file_becomes_16k_mono_of_the_right_length(tmp_path: Path) -> None:
    left = tone(1.0, rate=44100, freq=440.0, amplitude=0.8)
    right = tone(1.0, rate=44100, freq=440.0, amplitude=0.2)
    path = write_audio(tmp_path / "stereo.wav", np.stack([left, right], axis=1), rate=44100, subtype="FLOAT")
    decoded = decode_audio(path, 16000)
    assert decoded.source_rate == 44100 and decoded.channels == 2
    assert decoded.seconds == pytest.approx(1.0)
    assert decoded.wave.dtype == np.float32 and decoded.wave.ndim == 1
    assert decoded.wave.shape == (16000,)
    # mono is the mean of the channels: a 440 Hz sine of amplitude 0.5
    middle = decoded.wave[1000:-1000]
    assert np.max(np.abs(middle)) == pytest.approx(0.5, abs=0.01)


def test_same_rate_is_not_resampled(tmp_path: Path) -> None:
    wave = tone(0.5)
    path = write_audio(tmp_path / "a.wav", wave, subtype="FLOAT")
    np.testing.assert_array_equal(decode_audio(path, 16000).wave, wave)


@pytest.mark.parametrize("suffix", [".flac", ".ogg"])
def test_flac_and_ogg_decode(tmp_path: Path, suffix: str) -> None:
    path = write_audio(tmp_path / f"clip{suffix}", tone(1.0, rate=22050), rate=22050)
    decoded = decode_audio(path, 16000)
    assert decoded.source_rate == 22050
    assert decoded.wave.shape == (16000,)
    assert 0.3 < float(np.max(np.abs(decoded.wave))) < 0.7


def test_garbage_named_wav_raises_a_decode_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"this is not audio" * 50)
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(path, 16000)
    assert info.value.path == path
    assert "broken.wav" in str(info.value) and "remove it" in str(info.value)


def test_an_empty_wav_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioDecodeError, match="no audio samples"):
        decode_audio(path, 16000)


def test_nonfinite_and_clipped_samples_are_counted_at_the_source(tmp_path: Path) -> None:
    wave = tone(0.5, rate=8000)
    wave[10], wave[20], wave[30] = np.nan, np.inf, -np.inf
    wave[100:180] = 1.0
    path = write_audio(tmp_path / "odd.wav", wave, rate=8000, subtype="FLOAT")
    decoded = decode_audio(path, 16000)
    assert (decoded.nan_count, decoded.inf_count) == (1, 2)
    assert decoded.clipped_fraction == pytest.approx(82 / 4000)
    assert not np.isfinite(decoded.wave).all()
