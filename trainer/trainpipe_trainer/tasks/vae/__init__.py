"""The ``vae`` task's building blocks: a generative VAE on small audio datasets.

Audio files in (``audio_files``, ``tones`` for ``builtin:tones``), split by
file and cut into chunks (``chunks``, ``audio_data``), augmented per
(seed, epoch, index) (``augment``), turned into log-mel spectrograms on the
batch's device (``mel``), encoded and decoded by a convolutional VAE
(``model``) trained with ``loss``, and heard back through Griffin-Lim
previews (``mel.log_mel_to_audio``, ``preview``). Each module is pure and
tested on its own; the engine's ``Task`` wires them together.
"""
