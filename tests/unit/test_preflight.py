"""``action: preflight``: a real batch per split and one finite forward/backward pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainpipe_trainer.contract.data_report import DataReport
from trainpipe_trainer.contract.results import PreflightReport
from trainpipe_trainer.engine import exit_codes
from trainpipe_trainer.preflight import run_preflight
from trainpipe_trainer.run import main as run_main


def _npy_folder(root: Path, poison: bool) -> Path:
    """Two classes of 8x8 float arrays; with ``poison`` every array holds a NaN."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            array = rng.random((8, 8), dtype=np.float32)
            if poison:
                array[i % 8, 0] = np.nan
            np.save(root / cls / f"s{i}.npy", array)
    return root


def test_preflight_passes_on_digits_with_smallcnn(make_job) -> None:
    config = make_job("pf", action="preflight")
    report = run_preflight(config)

    assert report.ok, report
    assert report.error is None
    assert report.batch_shape == [64, 3, 8, 8] and report.batch_dtype == "float32"
    assert report.labels_in_range and report.num_classes == 10
    assert report.loss is not None and report.loss_finite and report.grads_finite
    assert report.params_with_nonfinite_grad == []
    assert set(report.splits) == {"train", "val", "test"}
    for split, check in report.splits.items():
        assert check.ok and check.error is None, split
        assert check.samples > 0 and check.batch_shape is not None and check.batch_shape[1:] == [3, 8, 8]

    run_dir = Path(config.run_dir)
    assert PreflightReport.read(run_dir / "preflight.json") == report
    assert DataReport.read(run_dir / "data_report.json").classes == [str(d) for d in range(10)]
    assert json.loads((run_dir / "environment.json").read_text())["seeds"]["torch"] == 7
    assert "Preflight passed" in (run_dir / "logs" / "preflight.log").read_text()


def test_preflight_reports_a_nonfinite_loss(make_job, tmp_path: Path) -> None:
    source = _npy_folder(tmp_path / "poisoned", poison=True)
    config = make_job("nan", action="preflight", data={"source": str(source), "batchSize": 8})
    report = run_preflight(config)

    assert not report.ok
    assert report.error is None  # the batch loaded; the pass itself is not finite
    assert all(check.ok for check in report.splits.values())
    assert report.labels_in_range
    assert report.loss_finite is False and report.loss is None
    assert report.grads_finite is False and report.params_with_nonfinite_grad
    written = PreflightReport.read(Path(config.run_dir) / "preflight.json")
    assert not written.ok and not written.loss_finite
    assert "Preflight FAILED" in (Path(config.run_dir) / "logs" / "preflight.log").read_text()


def test_a_clean_npy_folder_passes_so_the_nan_is_what_fails(make_job, tmp_path: Path) -> None:
    source = _npy_folder(tmp_path / "clean", poison=False)
    report = run_preflight(make_job("clean", action="preflight", data={"source": str(source), "batchSize": 8}))
    assert report.ok and report.loss_finite and report.grads_finite


def test_an_exception_becomes_a_failed_report_not_a_crash(make_job, tmp_path: Path) -> None:
    config = make_job("missing", action="preflight", data={"source": str(tmp_path / "no-such-folder")})
    report = run_preflight(config)
    assert not report.ok
    assert report.error and "no-such-folder" in report.error
    assert PreflightReport.read(Path(config.run_dir) / "preflight.json").error == report.error


def test_run_entry_point_exits_0_for_ok_and_1_for_a_failed_preflight(make_job, tmp_path: Path) -> None:
    good = make_job("cli-ok", action="preflight")
    bad = make_job("cli-bad", action="preflight",
                   data={"source": str(_npy_folder(tmp_path / "p", poison=True)), "batchSize": 8})
    for config, expected in ((good, exit_codes.OK), (bad, exit_codes.FAILED)):
        path = tmp_path / f"{config.name}.yaml"
        path.write_text(config.to_yaml())
        assert run_main(["--config", str(path)]) == expected
        assert (Path(config.run_dir) / "preflight.json").is_file()
        assert not (Path(config.run_dir) / "evidence.json").exists()  # nothing was trained
