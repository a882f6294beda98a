"""``action: evaluate``: the test split once, then ONNX / torch.export with parity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from trainpipe_trainer.contract.results import ExportReport, TestEvaluation
from trainpipe_trainer.data import build_datasets
from trainpipe_trainer.engine import checkpoint as ckpt
from trainpipe_trainer.evaluate import (
    ClassMismatchError,
    preprocessing_for,
    run_evaluate_job,
    run_evaluation,
)
from trainpipe_trainer.export import export_model
from trainpipe_trainer.job import run_job
from trainpipe_trainer.models import ModelBuildRequest, build_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def trained(make_job) -> Path:
    """best_model.pt of a 1-epoch run_job on digits."""
    config = make_job("train", train={"epochs": 1})
    evidence = run_job(config)
    assert evidence.status == "completed", evidence.reason
    return Path(config.run_dir)


def _eval_job(make_job, run_dir: Path, name: str = "eval", **evaluate):
    return make_job(name, action="evaluate",
                    evaluate={"checkpoint": str(run_dir / "checkpoints" / "best_model.pt"), **evaluate})


def _model_from(checkpoint: Path, num_classes: int = 10) -> torch.nn.Module:
    model = build_model("smallcnn", ModelBuildRequest(num_classes=num_classes, image_size=8))
    model.load_state_dict(ckpt.load_checkpoint(checkpoint)["model_state_dict"])
    return model.eval()


def test_training_writes_learning_curves(trained: Path) -> None:
    assert (trained / "learning_curves.png").read_bytes()[:8] == PNG_MAGIC


def test_evaluation_matches_an_independent_pass_over_the_test_split(make_job, trained: Path) -> None:
    config = _eval_job(make_job, trained)
    result = run_evaluation(config)

    # An independent pass: the same checkpoint over the same test split.
    bundle = build_datasets(config.data, config.seed)
    model = _model_from(trained / "checkpoints" / "best_model.pt")
    inputs = torch.stack([bundle.test[i][0] for i in range(len(bundle.test))])
    targets = torch.tensor(bundle.test.targets)
    with torch.no_grad():
        logits = model(inputs)
    expected = np.zeros((10, 10), dtype=int)
    np.add.at(expected, (targets.numpy(), logits.argmax(1).numpy()), 1)

    matrix = np.array(result.confusion_matrix)
    assert result.split == "test" and result.samples == len(bundle.test)
    assert (matrix == expected).all()
    assert result.accuracy == pytest.approx(np.trace(matrix) / matrix.sum())
    assert result.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, targets)), rel=1e-4)
    assert sum(c.support for c in result.per_class) == len(bundle.test)
    for i, metrics in enumerate(result.per_class):
        assert metrics.class_name == str(i) and metrics.support == matrix[i].sum()
        assert metrics.recall == pytest.approx(matrix[i, i] / matrix[i].sum())
        assert metrics.precision == pytest.approx(matrix[i, i] / max(matrix[:, i].sum(), 1))
    assert result.macro_f1 == pytest.approx(np.mean([c.f1 for c in result.per_class]))
    assert result.checkpoint_epoch == 1

    run_dir = Path(config.run_dir)
    assert TestEvaluation.read(run_dir / "test_evaluation.json") == result
    assert (run_dir / "confusion_matrix.png").read_bytes()[:8] == PNG_MAGIC


def test_exports_pass_the_checker_and_match_pytorch_on_test_inputs(make_job, trained: Path) -> None:
    config = _eval_job(make_job, trained, paritySamples=32)
    result = run_evaluate_job(config)
    assert result.ok, result.reason
    run_dir = Path(config.run_dir)
    report = ExportReport.read(run_dir / "export.json")
    assert report == result.export and report.ok and report.dynamic_batch
    assert report.classes == [str(d) for d in range(10)] and report.preprocessing.image_size == 8

    onnx_entry = report.artifact("onnx")
    assert onnx_entry is not None and onnx_entry.checker_ok and onnx_entry.error is None
    onnx.checker.check_model(str(run_dir / "model.onnx"))
    parity = report.parity_for("onnxruntime")
    assert parity is not None and parity.samples == 32
    assert parity.max_abs_diff is not None and parity.max_abs_diff <= 1e-4
    assert parity.allclose and parity.top1_agree == 32 and parity.top1_agree_all

    # Check it here too, on a batch size the export never saw.
    bundle = build_datasets(config.data, config.seed)
    inputs = torch.stack([bundle.test[i][0] for i in range(5)])
    with torch.no_grad():
        reference = _model_from(trained / "checkpoints" / "best_model.pt")(inputs).numpy()
    session = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run([report.output_name], {report.input_name: inputs.numpy()})[0]
    assert np.abs(got - reference).max() <= 1e-4
    assert (got.argmax(1) == reference.argmax(1)).all()

    program = report.artifact("torchscript")
    assert program is not None and program.checker_ok and program.path is not None
    if program.kind == "torch.export":
        loaded = torch.export.load(str(run_dir / program.path)).module()
    else:
        loaded = torch.jit.load(str(run_dir / program.path))
    with torch.no_grad():
        assert np.abs(loaded(inputs).numpy() - reference).max() <= 1e-4
    program_parity = report.parity_for(program.kind or "")
    assert program_parity is not None and program_parity.allclose and program_parity.top1_agree_all


def test_a_failing_format_is_recorded_and_the_others_still_export(
    tmp_path: Path, make_job, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", broken)
    model = build_model("smallcnn", ModelBuildRequest(num_classes=3, image_size=8)).eval()
    inputs = torch.randn(6, 3, 8, 8)
    report = export_model(model, inputs[:1], ["a", "b", "c"], tmp_path / "out", ["onnx", "torchscript"],
                          inputs, preprocessing_for(make_job()))

    assert not report.ok
    onnx_entry = report.artifact("onnx")
    assert onnx_entry is not None and not onnx_entry.checker_ok
    assert onnx_entry.error is not None and "exporter exploded" in onnx_entry.error
    assert not (tmp_path / "out" / "model.onnx").exists()
    program = report.artifact("torchscript")
    assert program is not None and program.checker_ok and program.error is None
    assert ExportReport.read(tmp_path / "out" / "export.json") == report


def test_a_class_mismatch_between_checkpoint_and_data_is_a_clear_error(make_job, tmp_path: Path) -> None:
    model = build_model("smallcnn", ModelBuildRequest(num_classes=2, image_size=8))
    checkpoint = tmp_path / "other.pt"
    ckpt.save_checkpoint({"model_state_dict": model.state_dict(), "classes": ["cat", "dog"], "epoch": 3},
                         checkpoint)
    config = make_job("mismatch", action="evaluate", evaluate={"checkpoint": str(checkpoint)})

    with pytest.raises(ClassMismatchError, match=r"class mismatch: .*2 classes \['cat', 'dog'\].*10 classes"):
        run_evaluation(config)
    result = run_evaluate_job(config)
    assert not result.ok and result.error is not None and "class mismatch" in result.error
    assert not (Path(config.run_dir) / "test_evaluation.json").exists()
    assert not (Path(config.run_dir) / "model.onnx").exists()


def test_run_entry_point_evaluates_and_exports(make_job, trained: Path, tmp_path: Path) -> None:
    config = _eval_job(make_job, trained, name="cli-eval", paritySamples=8)
    config_path = tmp_path / "eval.yaml"
    config_path.write_text(config.to_yaml())
    done = subprocess.run(
        [sys.executable, "-m", "trainpipe_trainer.run", "--config", str(config_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = Path(config.run_dir)
    for name in ("test_evaluation.json", "confusion_matrix.png", "model.onnx", "export.json",
                 "data_report.json", "logs/evaluate.log"):
        assert (run_dir / name).is_file(), name
    assert ExportReport.read(run_dir / "export.json").ok
    assert TestEvaluation.read(run_dir / "test_evaluation.json").samples > 0
