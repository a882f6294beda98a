"""``logs/training.log``: the same lines on the console and in the file, so a
person reading either sees every epoch, every skipped step and the outcome."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = "trainpipe.train"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_training_log(log_dir: Path | None, rank: int) -> logging.Logger:
    """Rank 0 logs to the file and the console; other ranks to the console,
    warnings only, prefixed with their rank."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    console = logging.StreamHandler(sys.stderr)
    if rank == 0:
        console.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(console)
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(log_dir / "training.log", encoding="utf-8")
            file_handler.setFormatter(logging.Formatter(_FORMAT))
            logger.addHandler(file_handler)
    else:
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter(f"[rank {rank}] {_FORMAT}"))
        logger.addHandler(console)
    return logger
