"""A task defined outside trainpipe (examples/custom-task/regression_task.py)
trains, resumes, evaluates and exports through the same engine, with no
change to trainpipe's code; a bad entrypoint is refused, naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.results import ExportReport, TestEvaluation
from trainpipe_trainer.engine.stop import StopSignal
from trainpipe_trainer.evaluate import run_evaluate_job
from trainpipe_trainer.job import run_job
from trainpipe_trainer.tasks import TaskLoadError, resolve_task

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom-task"


@pytest.fixture
def regression_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))

    def factory(name: str = "reg", **train) -> JobConfig:
        return JobConfig.model_validate({
            "name": name, "runDir": str(tmp_path / name), "seed": 3, "task": "custom",
            "customTask": {"entrypoint": "regression_task:Regression", "options": {"hidden": 16}},
            "data": {"source": str(EXAMPLE / "regression.csv"), "batchSize": 32},
            "model": {"name": "mlp"},
            "train": {"epochs": 4, "lr": 0.01, "logEverySteps": 5, "scheduler": "none", **train},
            "ray": {"enabled": False},
        })

    return factory


def test_a_custom_task_trains_evaluates_and_exports(regression_job) -> None:
    config = regression_job()
    evidence = run_job(config)
    assert evidence.status == "completed", evidence.reason
    assert evidence.task == "custom"
    mse = [e.metric("val_mse") for e in evidence.epochs]
    assert all(m is not None for m in mse) and mse[-1] < mse[0]
    run_dir = Path(config.run_dir)
    on_disk = json.loads((run_dir / "logs" / "metrics.json").read_text())["epochs"]
    assert [e["val_mse"] for e in on_disk] == mse
    assert "val_mse=" in (run_dir / "logs" / "training.log").read_text()

    evaluate = config.model_copy(update={"action": "evaluate", "run_dir": str(run_dir / "eval")})
    evaluate = JobConfig.model_validate({**evaluate.model_dump(by_alias=True),
                                         "evaluate": {"checkpoint": str(run_dir / "checkpoints" / "best_model.pt")}})
    result = run_evaluate_job(evaluate)
    assert result.ok, result.reason
    test = TestEvaluation.read(run_dir / "eval" / "test_evaluation.json")
    assert test.task == "custom" and test.metrics["test_mse"] is not None and test.accuracy is None
    export = ExportReport.read(run_dir / "eval" / "export.json")
    assert export.ok and {p.runtime for p in export.parity} >= {"onnxruntime"}
    assert all(not p.top1_applicable for p in export.parity)


def test_a_custom_task_resumes_exactly(regression_job) -> None:
    whole = run_job(regression_job("whole"))
    stop = StopSignal()
    first = run_job(regression_job("split"), stop=stop, on_step=lambda step: stop.request("test") if step == 11 else None)
    assert first.status == "interrupted"
    resumed = run_job(regression_job("split"))
    assert resumed.status == "completed" and resumed.resumed_from_epoch is not None
    assert [e.metric("val_mse") for e in resumed.epochs] == pytest.approx(
        [e.metric("val_mse") for e in whole.epochs], rel=0, abs=1e-7
    )


@pytest.mark.parametrize(("entrypoint", "says"), [
    ("no_such_module_xyz:Task", "does not import"),
    ("regression_task:Missing", "has no 'Missing'"),
    ("regression_task:Rows", "not a subclass of trainpipe_trainer.tasks.Task"),
])
def test_a_bad_entrypoint_is_refused_naming_it(regression_job, entrypoint: str, says: str) -> None:
    config = regression_job().model_copy(deep=True)
    assert config.custom_task is not None
    config.custom_task.entrypoint = entrypoint
    with pytest.raises(TaskLoadError, match=f"customTask.entrypoint {entrypoint!r}.*{says}"):
        resolve_task(config)


def test_a_custom_task_without_its_section_is_refused() -> None:
    with pytest.raises(ValueError, match="task: custom needs a `customTask` section"):
        JobConfig.model_validate({"runDir": "x", "task": "custom"})
    assert torch.tensor(1)  # the trainer side is importable without the example on the path
