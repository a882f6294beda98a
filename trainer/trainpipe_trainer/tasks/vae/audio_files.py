"""Find audio files under a folder and decode one into a mono wave at a fixed rate.

``scan_audio`` walks the folder recursively (symlinks followed, hidden files
and folders skipped, like the image scan in ``data/folder.py``) and returns
the supported files sorted by path, so the same folder always gives the same
order and therefore the same seeded split.

``decode_audio`` reads with soundfile (libsndfile: wav, flac, ogg/vorbis),
mixes the channels down to mono by their mean and resamples with librosa's
soxr backend. Non-finite samples are counted on the source samples (before
mixing and resampling spread them), so the report can name the file; such a
file is still decoded (the samples-finite check fails the gate on it).
Clipping is measured on the source samples too: resampling a hard-clipped
wave overshoots, and mixing channels hides a clipped one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample


class AudioDecodeError(ValueError):
    """An audio file could not be decoded; the message names the file and what to do."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"cannot decode audio file {self.path}: {reason}; re-export it as "
            f"{'/'.join(ext.lstrip('.') for ext in AUDIO_EXTENSIONS)} or remove it from the dataset"
        )


@dataclass(frozen=True)
class DecodedAudio:
    """One file as the model sees it: ``wave`` float32 mono at the requested rate.

    ``source_rate``, ``channels`` and ``seconds`` describe the file as stored.
    ``nan_count``/``inf_count`` and ``clipped_fraction`` are measured on the
    stored samples (all channels).
    """

    wave: np.ndarray
    source_rate: int
    channels: int
    seconds: float
    nan_count: int = 0
    inf_count: int = 0
    clipped_fraction: float = 0.0


def list_audio(root: Path) -> tuple[list[Path], list[Path]]:
    """(supported audio files, other visible files) under ``root``, recursively and sorted."""
    kept: list[Path] = []
    skipped: list[Path] = []
    for current, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(current) / name
            (kept if path.suffix.lower() in AUDIO_EXTENSIONS else skipped).append(path)
    return sorted(kept), sorted(skipped)


def scan_audio(root: Path) -> list[Path]:
    """The audio files under ``root`` (extensions case-insensitive), recursively and sorted."""
    return list_audio(Path(root))[0]


def _resample(wave: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    import librosa

    if source_rate == sample_rate:
        return wave
    if np.isfinite(wave).all():
        out = librosa.resample(wave, orig_sr=source_rate, target_sr=sample_rate, res_type="soxr_hq")
    else:
        # librosa refuses non-finite buffers; soxr (its backend) does not. The
        # result stays non-finite, as the source was: the report says so.
        import soxr

        out = soxr.resample(wave, source_rate, sample_rate, quality="HQ")
        length = int(np.ceil(wave.shape[-1] * sample_rate / source_rate))
        out = librosa.util.fix_length(out, size=length)
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: enough to split the dataset and to predict
    each file's chunk count before (or without) decoding it."""

    frames: int
    source_rate: int
    channels: int

    def length_at(self, sample_rate: int) -> int:
        """Samples after resampling to ``sample_rate``: librosa's own rule
        (``ceil(frames * ratio)``), so the prediction is exact."""
        if self.source_rate == sample_rate:
            return self.frames
        return int(np.ceil(self.frames * (float(sample_rate) / self.source_rate)))


def probe_audio(path: Path) -> AudioInfo:
    """Read ``path``'s header only; raise ``AudioDecodeError`` when it is
    unreadable or holds no samples (the checks ``decode_audio`` makes first).

    Sharded decoding splits the dataset on this verdict, so every rank gets
    the same split without decoding any other rank's files."""
    import soundfile as sf

    path = Path(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        raise AudioDecodeError(path, f"{type(exc).__name__}: {exc}") from exc
    if info.frames <= 0 or info.channels <= 0:
        raise AudioDecodeError(path, "the file holds no audio samples")
    if info.samplerate <= 0:
        raise AudioDecodeError(path, f"invalid sample rate {info.samplerate}")
    return AudioInfo(frames=int(info.frames), source_rate=int(info.samplerate), channels=int(info.channels))


def decode_audio(path: Path, sample_rate: int) -> DecodedAudio:
    """Read ``path`` as float32 mono at ``sample_rate``; raise ``AudioDecodeError`` when unreadable."""
    import soundfile as sf

    path = Path(path)
    try:
        data, source_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        raise AudioDecodeError(path, f"{type(exc).__name__}: {exc}") from exc
    frames, channels = data.shape
    if frames == 0 or channels == 0:
        raise AudioDecodeError(path, "the file holds no audio samples")
    if source_rate <= 0:
        raise AudioDecodeError(path, f"invalid sample rate {source_rate}")
    nan_count = int(np.isnan(data).sum())
    inf_count = int(np.isinf(data).sum())
    clipped = float(np.mean(np.abs(data) >= CLIP_LEVEL))
    mono = data.mean(axis=1, dtype=np.float32) if channels > 1 else data[:, 0]
    wave = _resample(np.ascontiguousarray(mono, dtype=np.float32), int(source_rate), int(sample_rate))
    return DecodedAudio(
        wave=wave,
        source_rate=int(source_rate),
        channels=int(channels),
        seconds=frames / float(source_rate),
        nan_count=nan_count,
        inf_count=inf_count,
        clipped_fraction=clipped,
    )
