"""The TrainingPipeline spec: every invalid manifest gives one line per
problem naming the field path, what is allowed and the value given; the
examples validate; the lists the control plane copies from the trainer stay
equal to the trainer's; durations parse; defaults follow seed 001."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainpipe_operator.spec import pipeline as spec
from trainpipe_operator.spec.load import ManifestError, load_manifest
from trainpipe_operator.spec.pipeline import TrainingPipeline, parse_duration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

# A valid manifest that sets every section, so a change below replaces a
# value the user wrote (not a default).
BASE: dict[str, Any] = {
    "apiVersion": "trainpipe.io/v1alpha1",
    "kind": "TrainingPipeline",
    "metadata": {"name": "digits"},
    "spec": {
        "seed": 42,
        "model": {"name": "smallcnn"},
        "data": {
            "source": "builtin:digits",
            "split": {"train": 0.8, "val": 0.1, "test": 0.1},
            "imageSize": 16,
            "batchSize": 32,
            "augment": ["hflip"],
        },
        "target": {"metric": "val_acc", "value": 0.9},
        "baseline": {"epochs": 3, "lr": 0.001, "optimizer": "adamw", "scheduler": "cosine"},
        "optimization": {"maxIterations": 2},
        "finalization": {"epochs": 8, "patience": 3, "export": ["onnx", "torchscript"]},
        "gates": {"gpuUtilMin": 60, "gpuUtilWarn": 40},
        "budget": {"maxDuration": "1h"},
        "resources": {"workers": 1, "memory": "4Gi"},
        "runtime": {"type": "local"},
        "approval": {"required": False},
    },
}

DELETE = object()


def _manifest(changes: dict[str, Any]) -> dict[str, Any]:
    """BASE with each dotted path set to its value (or removed: DELETE)."""
    out = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return out


def _write(tmp_path: Path, manifest: dict[str, Any], name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.path == path
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


# (changes, field path, fragments the line must hold: what is allowed or
# expected, and the value given)
INVALID = [
    pytest.param({"apiVersion": "v1"}, "apiVersion", ["trainpipe.io/v1alpha1", "'v1'"], id="wrong-apiVersion"),
    pytest.param({"kind": "Pipeline"}, "kind", ["'TrainingPipeline'", "'Pipeline'"], id="wrong-kind"),
    pytest.param({"metadata.name": DELETE}, "metadata.name", ["required field is missing"], id="missing-name"),
    pytest.param({"metadata.name": "Digits"}, "metadata.name", ["lowercase", "'Digits'"], id="uppercase-name"),
    pytest.param({"spec.baselin": {"epochs": 3}}, "spec.baselin", ["unknown field", "{'epochs': 3}"],
                 id="unknown-spec-field"),
    pytest.param({"spec.data.batchsize": 32}, "spec.data.batchsize", ["unknown field", "got 32"],
                 id="unknown-nested-field"),
    pytest.param({"spec.model.name": "vgg16"}, "spec.model.name",
                 ["'resnet18'", "'resnet50'", "'smallcnn'", "'vgg16'"], id="model-not-registered"),
    pytest.param({"spec.data.split.train": 0.7}, "spec.data.split", ["must sum to 1.0", "0.7 + 0.1 + 0.1", "0.9"],
                 id="split-sum"),
    pytest.param({"spec.data.split.train": 0}, "spec.data.split.train", ["greater than 0", "got 0"],
                 id="split-fraction-0"),
    pytest.param({"spec.data.split.test": 1}, "spec.data.split.test", ["less than 1", "got 1"],
                 id="split-fraction-1"),
    pytest.param({"spec.data.imageSize": 4}, "spec.data.imageSize", ["greater than or equal to 8", "got 4"],
                 id="imageSize-too-small"),
    pytest.param({"spec.data.batchSize": 0}, "spec.data.batchSize", ["greater than or equal to 1", "got 0"],
                 id="batchSize-0"),
    pytest.param({"spec.data.augment": ["hflip", "blur"]}, "spec.data.augment[1]",
                 ["'hflip'", "'crop'", "'rotation'", "'colorjitter'", "'blur'"], id="augment-unknown"),
    pytest.param({"spec.target.metric": "f1"}, "spec.target.metric",
                 ["'val_acc'", "'val_loss'", "'test_acc'", "'f1'"], id="target-metric-unknown"),
    pytest.param({"spec.target.value": 1.5}, "spec.target", ["value", "val_acc", "[0, 1]", "1.5"],
                 id="accuracy-target-over-1"),
    pytest.param({"spec.baseline.epochs": 0}, "spec.baseline.epochs", ["greater than or equal to 1", "got 0"],
                 id="baseline-epochs-0"),
    pytest.param({"spec.baseline.lr": -0.001}, "spec.baseline.lr", ["greater than 0", "-0.001"],
                 id="baseline-lr-negative"),
    pytest.param({"spec.baseline.optimizer": "adam"}, "spec.baseline.optimizer", ["'adamw'", "'sgd'", "'adam'"],
                 id="optimizer-unknown"),
    pytest.param({"spec.baseline.scheduler": "linear"}, "spec.baseline.scheduler",
                 ["'cosine'", "'step'", "'none'", "'linear'"], id="scheduler-unknown"),
    pytest.param({"spec.optimization.maxIterations": -1}, "spec.optimization.maxIterations",
                 ["greater than or equal to 1", "got -1"], id="maxIterations-negative"),
    pytest.param({"spec.finalization.export": ["onnx", "pt"]}, "spec.finalization.export[1]",
                 ["'onnx'", "'torchscript'", "'pt'"], id="export-unknown-format"),
    pytest.param({"spec.finalization.export": []}, "spec.finalization.export", ["at least 1 item", "got []"],
                 id="export-empty"),
    pytest.param({"spec.gates.gpuUtilWarn": 70}, "spec.gates", ["gpuUtilWarn (70)", "must not exceed", "gpuUtilMin (60)"],
                 id="gpuUtilWarn-over-min"),
    pytest.param({"spec.budget.maxDuration": "12 hours"}, "spec.budget.maxDuration", ["'12 hours'", "12h", "1h30m"],
                 id="maxDuration-words"),
    pytest.param({"spec.budget.maxDuration": "0h"}, "spec.budget.maxDuration", ["'0h'", "positive duration"],
                 id="maxDuration-zero"),
    pytest.param({"spec.resources.workers": 0}, "spec.resources.workers", ["greater than or equal to 1", "got 0"],
                 id="workers-0"),
    pytest.param({"spec.resources.memory": "lots"}, "spec.resources.memory", ["'lots'", "quantity", "4Gi"],
                 id="memory-not-quantity"),
    pytest.param({"spec.runtime.type": "k8s"}, "spec.runtime.type", ["'local'", "'ray'", "'rayjob'", "'k8s'"],
                 id="runtime-type-unknown"),
    pytest.param({"spec.approval.required": "maybe"}, "spec.approval.required", ["true or false", "'maybe'"],
                 id="approval-not-bool"),
]


def test_the_base_manifest_is_valid(tmp_path: Path) -> None:
    pipeline = load_manifest(_write(tmp_path, BASE))
    assert pipeline.metadata.name == "digits"
    assert pipeline.spec.data.batch_size == 32
    assert pipeline.spec.budget.seconds == 3600


@pytest.mark.parametrize(("changes", "field", "fragments"), INVALID)
def test_an_invalid_manifest_gives_one_line_naming_field_allowed_and_value(
    tmp_path: Path, changes: dict[str, Any], field: str, fragments: list[str]
) -> None:
    path = _write(tmp_path, _manifest(changes))
    problems = _problems(path)
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line
    assert line.startswith(f"{path}: {field}: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    # our messages speak to the user, not in pydantic's or regex terms
    assert "Value error" not in line
    assert "should match pattern" not in line


def test_the_table_covers_at_least_twenty_cases() -> None:
    assert len(INVALID) >= 20


def test_several_problems_give_one_line_each(tmp_path: Path) -> None:
    manifest = _manifest({
        "apiVersion": "v2",
        "spec.baselin": {},
        "spec.baseline.lr": -1,
        "spec.data.batchSize": 0,
        "spec.runtime.type": "k8s",
        "spec.budget.maxDuration": "soon",
    })
    path = _write(tmp_path, manifest)
    problems = _problems(path)
    fields = [line.removeprefix(f"{path}: ").split(": ", 1)[0] for line in problems]
    assert sorted(fields) == sorted([
        "apiVersion", "spec.baselin", "spec.baseline.lr", "spec.data.batchSize", "spec.runtime.type",
        "spec.budget.maxDuration",
    ])
    assert all(line.startswith(f"{path}: ") and "\n" not in line for line in problems)


def test_an_accuracy_bound_does_not_apply_to_a_loss_target(tmp_path: Path) -> None:
    pipeline = load_manifest(_write(tmp_path, _manifest({"spec.target.metric": "val_loss", "spec.target.value": 2.5})))
    assert pipeline.spec.target.value == 2.5


def test_a_file_that_is_not_one_mapping_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text("a: 1\n---\nb: 2\n", encoding="utf-8")
    problems = _problems(path)
    assert len(problems) == 1 and "2 document(s)" in problems[0]


def _cli_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainpipe_operator.cli", "validate", str(path)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )


def test_validate_exits_2_with_the_lines_on_stderr(tmp_path: Path) -> None:
    path = _write(tmp_path, _manifest({"spec.baseline.lr": -1, "spec.model.name": "vgg16"}))
    result = _cli_validate(path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert any(line.startswith(f"{path}: spec.baseline.lr: ") for line in lines)
    assert any(line.startswith(f"{path}: spec.model.name: ") and "smallcnn" in line for line in lines)
    assert "Traceback" not in result.stderr
    assert "valid TrainingPipeline" not in result.stdout


def test_validate_exits_0_on_the_digits_example() -> None:
    result = _cli_validate(EXAMPLES / "digits.yaml")
    assert result.returncode == 0, result.stderr
    assert "valid TrainingPipeline 'digits'" in result.stdout
    assert result.stderr == ""


def _pipeline_examples() -> list[Path]:
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        if any(isinstance(d, dict) and d.get("kind") == spec.KIND for d in docs):
            found.append(path)
    return found


def test_every_pipeline_example_validates() -> None:
    examples = _pipeline_examples()
    assert EXAMPLES / "digits.yaml" in examples
    for path in examples:
        pipeline = load_manifest(path)
        assert pipeline.kind == spec.KIND, path


def test_model_names_are_the_trainer_registry() -> None:
    from trainpipe_operator.tasks import BUILTIN
    from trainpipe_trainer.models import registered_names

    # the classification models are the registry's; whatever else the
    # registry holds is another built-in task's
    assert set(spec.MODEL_NAMES) <= set(registered_names())
    assert set(registered_names()) <= {m for c in BUILTIN.values() for m in c.models or ()}
    assert len(set(spec.MODEL_NAMES)) == len(spec.MODEL_NAMES)
    # the names the manifest is checked against are the same list
    for name in spec.MODEL_NAMES:
        assert spec.PipelineSpec.model_validate(
            {"data": {"source": "builtin:digits"}, "model": {"name": name}}).model.name == name


def test_augmentations_are_the_trainers() -> None:
    from trainpipe_operator.tasks import BUILTIN
    from trainpipe_trainer.contract.job_config import AUGMENTATIONS, AUGMENTATIONS_BY_TASK

    assert tuple(spec.AUGMENTATIONS) == tuple(AUGMENTATIONS)
    for task, catalog in BUILTIN.items():
        assert catalog.augmentations == AUGMENTATIONS_BY_TASK[task]
    accepted = spec.PipelineSpec.model_validate(
        {"data": {"source": "builtin:digits", "augment": list(spec.AUGMENTATIONS)}})
    assert tuple(accepted.data.augment) == tuple(spec.AUGMENTATIONS)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("12h", 43200), ("45m", 2700), ("1h30m", 5400), ("90s", 90), ("2d", 172800), ("1d2h3m4s", 93784)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["12 hours", "", "h", "1.5h", "12H", "-1h", "30m1h", "0h", "0m0s"])
def test_parse_duration_rejects_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


def test_defaults_follow_seed_001(tmp_path: Path) -> None:
    minimal = {"apiVersion": spec.API_VERSION, "kind": spec.KIND, "metadata": {"name": "defaults"},
               "spec": {"data": {"source": "builtin:digits"}}}
    pipeline = load_manifest(_write(tmp_path, minimal))
    s = pipeline.spec
    assert s.baseline.epochs == 20
    assert s.baseline.lr == pytest.approx(1e-3)
    assert s.optimization.max_iterations == 3
    assert s.finalization.epochs == 100
    assert s.finalization.patience == 10
    assert s.budget.max_duration == "12h"
    assert s.budget.seconds == 12 * 3600
    assert s == TrainingPipeline.model_validate(minimal).spec
