"""Shared by the task test files: running `trainpipe run` (from the
repository root, with extra environment), reading the state back, and the
tones-vae example with some spec sections replaced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from trainpipe_operator.spec.status import CheckStatus, PipelineStatus

REPO = Path(__file__).resolve().parents[2]
TRAINPIPE = str(Path(sys.executable).parent / "trainpipe")


def run(path: Path, run_dir: Path, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([TRAINPIPE, "run", str(path), "--run-dir", str(run_dir)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)


def state(run_dir: Path) -> PipelineStatus:
    return PipelineStatus.model_validate_json((run_dir / "state.json").read_text())


def check(status: PipelineStatus, gate: str, check_id: str) -> CheckStatus:
    return next(c for c in status.gates[gate].checks if c.id == check_id)


def vae_manifest(tmp_path: Path, name: str, **spec: Any) -> Path:
    base = yaml.safe_load((REPO / "examples" / "tones-vae.yaml").read_text())
    base["metadata"]["name"] = name
    for key, value in spec.items():
        base["spec"][key] = {**base["spec"].get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path
