"""`trainpipe run` for the tasks beyond classification, real training on the
CPU: the VAE on builtin:tones and a task defined outside trainpipe
(examples/custom-task) go through every phase; a VAE configured to collapse
is caught at the post-baseline gate and diagnosed; fewer than 5 audio files
fail Planning naming the count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import yaml

from trainpipe_operator.spec.status import PipelineStatus
from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.results import ExportReport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TRAINPIPE = str(Path(sys.executable).parent / "trainpipe")
PHASES = ["Pending", "Planning", "Baseline"]


def run(path: Path, run_dir: Path, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([TRAINPIPE, "run", str(path), "--run-dir", str(run_dir)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)


def state(run_dir: Path) -> PipelineStatus:
    return PipelineStatus.model_validate_json((run_dir / "state.json").read_text())


def check(status: PipelineStatus, gate: str, check_id: str):  # type: ignore[no-untyped-def]
    return next(c for c in status.gates[gate].checks if c.id == check_id)


def vae_manifest(tmp_path: Path, name: str, **spec: Any) -> Path:
    base = yaml.safe_load((REPO / "examples" / "tones-vae.yaml").read_text())
    base["metadata"]["name"] = name
    for key, value in spec.items():
        base["spec"][key] = {**base["spec"].get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_examples_tones_vae_runs_every_phase_to_succeeded(tmp_path: Path) -> None:
    run_dir = tmp_path / "tones"
    result = run(REPO / "examples" / "tones-vae.yaml", run_dir, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = state(run_dir)
    assert status.phase == "Succeeded", status.message
    assert [d.phase for d in status.decisions][:3] == PHASES and status.decisions[-1].phase == "Finalization"
    assert status.metrics.target_metric == "val_recon"
    for gate, ids in {"baseline": ("posterior-collapse", "recon-decreased", "previews"),
                      "finalization": ("test-evaluated", "exported", "export-parity")}.items():
        for check_id in ids:
            assert check(status, gate, check_id).result == "pass", (gate, check_id)
    baseline = Evidence.read(run_dir / "02_baseline/evidence.json")
    assert baseline.previews, "no previews listed"
    for preview in baseline.previews:
        wave, rate = sf.read(run_dir / "02_baseline" / preview.wav)
        assert rate == 16000 and len(wave) == 16000
    export = ExportReport.read(run_dir / "05_finalization/export.json")
    assert export.ok and "decoder" in export.parts
    assert (run_dir / "05_finalization/decoder.onnx").exists()
    assert "log_mel_to_audio" in (run_dir / "05_finalization/deployment_guide.md").read_text()
    assert ".wav" in (run_dir / "05_finalization/test_results.md").read_text()


def test_a_collapsing_vae_fails_the_posterior_collapse_check_and_is_diagnosed(tmp_path: Path) -> None:
    run_dir = tmp_path / "collapse"
    path = vae_manifest(tmp_path, "collapse", vae={"beta": 200.0, "freeBits": 0.0, "klAnneal": {"schedule": "none"}},
                        baseline={"epochs": 4}, optimization={"maxIterations": 1}, budget={"maxDuration": "20m"})
    run(path, run_dir)
    # The first baseline's own gate record: the status keeps only the latest
    # attempt, which runs with the diagnosis' fix.
    first_gate = json.loads((run_dir / "02_baseline" / "gate.json").read_text())
    first = next(c for c in first_gate["checks"] if c["id"] == "posterior-collapse")
    assert first["result"] == "fail" and "posterior collapse" in first["message"], first
    report = (run_dir / "03_diagnostics" / "iter_1" / "diagnostic_report.md").read_text()
    assert "posterior-collapse" in report
    assert report.index("warm") < report.index("beta") or report.index("free bits") < report.index("beta")
    decisions = [(d.phase, d.decision) for d in state(run_dir).decisions]
    assert ("Baseline", "fix") in decisions and ("Diagnostics", "baseline-again") in decisions, decisions


def test_fewer_than_five_audio_files_fail_planning_naming_the_count(tmp_path: Path) -> None:
    from trainpipe_trainer.tasks.vae.tones import ensure_tones

    tones = ensure_tones(str(tmp_path / "cache"))
    data = tmp_path / "three"
    data.mkdir()
    for f in sorted(tones.glob("*.wav"))[:3]:
        (data / f.name).write_bytes(f.read_bytes())
    (data / "broken.wav").write_bytes(b"RIFF not really a wav")
    run_dir = tmp_path / "few"
    result = run(vae_manifest(tmp_path, "few", data={"source": str(data)}), run_dir)
    assert result.returncode == 1
    status = state(run_dir)
    reachable = check(status, "planning", "data-reachable")
    assert reachable.result == "fail" and "3 usable audio files" in reachable.message
    finite = check(status, "planning", "samples-finite")
    assert "broken.wav" in finite.message  # listed, not fatal to the report
    assert not (run_dir / "02_baseline").exists()


def test_a_task_defined_outside_trainpipe_runs_every_phase(tmp_path: Path) -> None:
    run_dir = tmp_path / "custom"
    result = run(REPO / "examples" / "custom-task" / "pipeline.yaml", run_dir,
                 env={"PYTHONPATH": str(REPO / "examples" / "custom-task")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = state(run_dir)
    assert status.phase == "Succeeded", status.message
    assert status.metrics.target_metric == "val_mse"
    assert check(status, "finalization", "target-met-on-test").result in ("pass", "warn")
    assert Evidence.read(run_dir / "02_baseline/evidence.json").task == "custom"
    assert ExportReport.read(run_dir / "05_finalization/export.json").ok
