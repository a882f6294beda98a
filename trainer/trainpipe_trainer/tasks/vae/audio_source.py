"""Resolve ``data.source`` for the ``vae`` task.

``builtin:tones`` is the audio task's builtin dataset (``tones.py``); every
other source (a local folder, ``file://``) goes through the classification
layer's ``data.sources.resolve_source`` unchanged, so classification keeps
its own list of builtins and never sees ``tones``. An image builtin
(``builtin:digits``) is refused here: it holds no audio, and saying so beats
a report of zero files.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainpipe_trainer.data.sources import ALLOWED, DataSourceError, resolve_source
from trainpipe_trainer.tasks.vae.tones import ensure_tones

AUDIO_ALLOWED = "builtin:tones, a local folder of audio files, file:///path"

AUDIO_BUILTINS = {"tones": ensure_tones}


def resolve_audio_source(source: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The local folder of audio files for ``source``; ``DataSourceError`` when there is none."""
    text = source.strip() if isinstance(source, str) else source
    if isinstance(text, str) and text.startswith("builtin:"):
        name = text[len("builtin:") :]
        if name in AUDIO_BUILTINS:
            return AUDIO_BUILTINS[name](cache_dir)
        raise DataSourceError(
            f"data.source: {source!r} is not a builtin audio dataset (task vae); allowed: {AUDIO_ALLOWED}"
        )
    try:
        return resolve_source(source, cache_dir)
    except DataSourceError as exc:
        message = str(exc).replace(f"allowed: {ALLOWED}", f"allowed: {AUDIO_ALLOWED}")
        message = message.replace("an ImageFolder root", "a folder of audio files")
        raise DataSourceError(message) from exc
