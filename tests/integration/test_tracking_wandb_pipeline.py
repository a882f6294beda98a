"""A pipeline's set of W&B runs (issue 13): `trainpipe run` of the tiny
digits pipeline with spec.tracking.wandb (offline), each training job's
offline run read back with wandb's own records: one run per job folder,
its id stable per (pipeline run, folder), all in the group of the pipeline
run, each with its phase's tags and its epochs equal to its metrics.json;
the finalization run holds the model artifact, candidate and champion
(Succeeded without approval). One pipeline run; offline: no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.local_pipelines import manifest, run, state
from tests.unit.test_tracking_runner_wandb import wandb_sandbox as wandb_sandbox  # noqa: F401 - autouse fixture
from tests.unit.test_tracking_wandb import (
    assert_epoch_rows_equal_metrics_json,
    read_offline_run,
    read_records,
)
from trainpipe_operator.tracking.runs import wandb_run_id

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The folders with a training job (Planning's preflight reports nothing).
JOBS = {"02_baseline": "baseline", "05_finalization": "finalization"}


def _run_record(folder: Path, run_id: str):  # type: ignore[no-untyped-def]
    for record in read_records(folder / f"run-{run_id}.wandb"):
        if record.WhichOneof("record_type") == "run":
            return record.run
    raise AssertionError(f"no run record in {folder}")


def test_a_pipelines_wandb_runs_one_per_job_in_the_pipeline_runs_group(tmp_path: Path) -> None:
    name = "digits-wb"
    run_dir = tmp_path / "wb"
    path = manifest(tmp_path, name, tracking={"wandb": {"project": "digits", "mode": "offline"}})
    result = run(path, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    status = state(run_dir)
    assert status.phase == "Succeeded", status.message
    assert status.run_id is not None and status.tracking is not None
    assert status.tracking.wandb_aliases == ["candidate", "champion"]

    ids = set()
    for folder, phase in JOBS.items():
        run_id = wandb_run_id(status.run_id, folder)
        ids.add(run_id)
        offline = read_offline_run(run_dir / folder, run_id)
        # One run per job (one attempt); Finalization's run is resumed once more by the control
        # plane, which attaches the model artifact to it (a second offline folder, the same run id).
        assert len(offline.folders) == (2 if folder == "05_finalization" else 1), (folder, offline.folders)
        record = _run_record(offline.folders[0], run_id)
        assert record.run_group == f"{name}-{status.run_id}"  # grouped by the pipeline run
        assert record.display_name == f"{name}/{folder}"
        assert record.project == "digits"
        assert set(record.tags) == {name, phase}
        assert offline.config["trainpipe.jobKey"] == folder and offline.config["trainpipe.runId"] == status.run_id
        assert_epoch_rows_equal_metrics_json(offline, run_dir / folder)
        assert offline.exit_codes and set(offline.exit_codes) == {0}
        if folder == "05_finalization":
            # Succeeded without approval: one version, logged with both aliases at once.
            [model] = offline.artifacts
            assert (model.type, model.name) == ("model", name)
            assert {"candidate", "champion"} <= set(model.aliases)
            assert json.loads(model.metadata)["runId"] == status.run_id
    assert len(ids) == len(JOBS)  # a run of its own per job
