"""Cut a wave into the fixed-length chunks the VAE trains on.

Chunks do not overlap: overlapping chunks of one file would make the model
see the same samples twice per epoch and, worse, tempt a by-chunk split that
leaks a file into two splits. The last partial chunk is zero-padded when it
holds at least half a chunk of audio and dropped otherwise (mostly padding
teaches silence). A file shorter than one chunk is padded to one chunk, so
no usable file yields nothing; the data report lists it as short.
"""

from __future__ import annotations

import numpy as np

from trainpipe_trainer.contract.job_config import AudioConfig


def chunk_samples_for(audio: AudioConfig) -> int:
    """Samples per chunk: ``chunkSeconds * sampleRate``, rounded."""
    return max(1, int(round(audio.chunk_seconds * audio.sample_rate)))


def chunk_wave(wave: np.ndarray, chunk_samples: int) -> tuple[list[np.ndarray], int]:
    """(chunks of exactly ``chunk_samples`` float32 samples, trailing samples dropped)."""
    if chunk_samples <= 0:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    n = wave.shape[0]
    if n < chunk_samples:
        return [np.pad(wave, (0, chunk_samples - n))], 0
    full, rest = divmod(n, chunk_samples)
    chunks = [wave[i * chunk_samples : (i + 1) * chunk_samples].copy() for i in range(full)]
    dropped = 0
    if rest:
        if 2 * rest >= chunk_samples:
            chunks.append(np.pad(wave[full * chunk_samples :], (0, chunk_samples - rest)))
        else:
            dropped = rest
    return chunks, dropped


def chunk_count(length: int, chunk_samples: int) -> int:
    """How many chunks ``chunk_wave`` cuts from a wave of ``length`` samples
    (without the wave: sharded decoding numbers every chunk of a split from
    the files' headers alone)."""
    if chunk_samples <= 0:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
    if length < chunk_samples:
        return 1
    full, rest = divmod(length, chunk_samples)
    return full + (1 if rest and 2 * rest >= chunk_samples else 0)
