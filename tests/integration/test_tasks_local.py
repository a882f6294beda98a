"""`trainpipe run` for the VAE, real training on the CPU: examples/tones-vae.yaml
goes through every phase; fewer than 5 audio files fail Planning naming the
count. (A collapsing VAE and a task defined outside trainpipe:
test_tasks_local_collapse_custom.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from tests.integration.local_tasks import REPO, check, run, state, vae_manifest
from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.results import ExportReport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PHASES = ["Pending", "Planning", "Baseline"]


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
