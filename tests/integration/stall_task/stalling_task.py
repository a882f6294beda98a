"""Test only: the custom-task example's regression, whose training data
loader blocks forever after ``stallAfter`` samples, on the first process
that gets there only (it leaves ``stallMarker``): a job that stops making
progress, as a hung data loader or collective would. With ``startMarker``,
the first training job blocks before it begins to train (while building
its data), as a process group that never forms or a download that never
ends would."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples" / "custom-task"))

from regression_task import Regression  # noqa: E402

from trainpipe_trainer.tasks import TaskData  # noqa: E402


class Stalling(Dataset):
    def __init__(self, inner: Dataset, after: int, marker: Path) -> None:
        self.inner, self.after, self.marker, self.served = inner, after, marker, 0

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        self.served += 1
        if self.served > self.after and not self.marker.exists():
            self.marker.write_text("stalled once\n", encoding="utf-8")
            while True:  # hung: no step completes, SIGTERM or not
                time.sleep(3600)
        return self.inner[key]


class StallingRegression(Regression):
    def build_data(self) -> TaskData:
        options = self.config.custom_task.options if self.config.custom_task else {}
        start_marker = Path(options["startMarker"]) if "startMarker" in options else None
        if start_marker is not None and self.config.action == "train" and not start_marker.exists():
            start_marker.write_text("hung before training once\n", encoding="utf-8")
            while True:  # no heartbeat ever: SIGTERM or not
                time.sleep(3600)
        data = super().build_data()
        data.train = Stalling(data.train, int(options["stallAfter"]), Path(options["stallMarker"]))
        return data
