"""Shared by the `trainpipe run` test files: a small digits manifest, running
the CLI on it, and reading the run directory's state back. (The files are
split so that pytest-xdist's `--dist loadfile` spreads them over workers.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from trainpipe_operator.spec.status import PipelineStatus

REPO = Path(__file__).resolve().parents[2]
TRAINPIPE = str(Path(sys.executable).parent / "trainpipe")


def manifest(tmp_path: Path, name: str, **spec: Any) -> Path:
    base: dict[str, Any] = {
        "data": {"source": "builtin:digits", "imageSize": 8, "batchSize": 64},
        "target": {"metric": "val_acc", "value": 0.5},
        "baseline": {"epochs": 2, "lr": 0.003},
        "finalization": {"epochs": 2, "patience": 2},
    }
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline",
                                    "metadata": {"name": name}, "spec": base}))
    return path


def run(path: Path, run_dir: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([TRAINPIPE, "run", str(path), "--run-dir", str(run_dir), *extra],
                          capture_output=True, text=True, timeout=timeout)


def state(run_dir: Path) -> PipelineStatus:
    return PipelineStatus.model_validate_json((run_dir / "state.json").read_text())


def decisions(run_dir: Path) -> list[tuple[str, str]]:
    return [(d.phase, d.decision) for d in state(run_dir).decisions]


