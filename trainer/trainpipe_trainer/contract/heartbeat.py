"""``heartbeat.json``: where a training job stands, written by its rank 0 in
the job's run directory while it trains. The control plane reads it for the
status's progress and ETA and for the hang watchdog: a heartbeat whose
``time`` stops moving means no step (and no validation batch) completes.

Pure pydantic: the control plane reads it without importing torch. Written
through a temporary file and a rename, so a reader never sees half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trainpipe_trainer.contract.json_file import write_model_json

HEARTBEAT_FILE = "heartbeat.json"


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    state: Literal["started", "training", "validating", "finished"] = Field(
        ..., description="started: training begins (after a resume); finished: the job's loop ended")
    time: float = Field(..., description="Unix time of this beat (the trainer's clock)")
    started_at: float = Field(..., description="Unix time this process started training")
    global_step: int = Field(..., ge=0, description="optimizer steps completed (a resumed job counts on)")
    completed_epochs: int = Field(..., ge=0, description="epochs completed")
    epochs: int = Field(..., ge=1, description="epochs the job trains")
    step_in_epoch: int = Field(0, ge=0, description="optimizer steps completed in the epoch in progress")
    steps_per_epoch: int = Field(..., ge=1)
    samples_per_second: float | None = Field(None, description="training throughput over the last beat's window")
    step_seconds: float | None = Field(None, description="mean seconds per optimizer step in this process")
    epoch_seconds: float | None = Field(None, description="the last completed epoch's seconds (with validation)")

    def write(self, path: Path) -> Path:
        return write_model_json(self, path)

    @classmethod
    def read(cls, path: Path) -> Heartbeat | None:
        """The heartbeat at ``path``; None when there is none (yet) or it
        cannot be read (a job of an older trainer)."""
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None
