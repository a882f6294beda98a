"""The run directory's layout and its small file operations, in one place.

    <run>/pipeline.yaml  state.json  summary.md  approval.json
    <run>/01_planning/   training_config.yaml preflight.json data_report.json environment.json
                         reproducibility_gate.md gate.json
    <run>/02_baseline/   (a training job's outputs) baseline_results.md gate.json gate_report.md
    <run>/02_baseline_attempt_N/   a baseline redone with a fix applied
    <run>/03_diagnostics/iter_K/   diagnostic_report.md recommendations.json gate.json
    <run>/04_optimization/iter_K/  optimization_config.yaml optimization_results.md (+ training outputs)
    <run>/05_finalization/ (training outputs) test_results.md confusion_matrix.png model.onnx model.ts
                         export.json deployment_guide.md production_ready.md gate.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainpipe_operator.spec.status import PipelineStatus
from trainpipe_trainer.contract import yaml_io

PLANNING = "01_planning"
FINALIZATION = "05_finalization"


def baseline_dir(attempt: int) -> str:
    return "02_baseline" if attempt <= 1 else f"02_baseline_attempt_{attempt}"


def diagnostics_dir(run: int) -> str:
    return f"03_diagnostics/iter_{run}"


def optimization_dir(iteration: int) -> str:
    return f"04_optimization/iter_{iteration}"


def write_text(path: Path, text: str) -> None:
    """Temp file + rename: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    write_text(path, yaml_io.dump(data))


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def load_state(run_dir: Path) -> PipelineStatus | None:
    path = run_dir / "state.json"
    if not path.exists():
        return None
    return PipelineStatus.model_validate_json(path.read_text(encoding="utf-8"))


def save_state(run_dir: Path, status: PipelineStatus) -> None:
    write_text(run_dir / "state.json", status.model_dump_json(by_alias=True, indent=2) + "\n")


def read_yaml_dict(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = yaml_io.load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    return data
