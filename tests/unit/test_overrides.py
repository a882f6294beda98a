"""``--set PATH=VALUE`` overrides: parsed as YAML, every path checked against
the spec models, the result validated like the file (spec/overrides.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainpipe_operator.commands import run as commands
from trainpipe_operator.spec.load import ManifestError, load_manifest
from trainpipe_operator.spec.overrides import OverrideError, apply_overrides, parse_override

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "digits.yaml"
TONES = REPO / "examples" / "tones-vae.yaml"


def test_values_are_parsed_as_yaml() -> None:
    assert parse_override("baseline.lr=0.01").value == 0.01
    assert parse_override("data.augment=[hflip, crop]").value == ["hflip", "crop"]
    assert parse_override("approval.required=true").value is True
    assert parse_override("customTask.options.tag='42'").value == "42"  # quoted: a string
    assert parse_override("spec.seed=7").path == ("seed",)  # a leading spec. is allowed


@pytest.mark.parametrize("text, expected", [
    ("baseline.lr", "expected PATH=VALUE"),
    ("=3", "expected PATH=VALUE"),
    ("baseline..lr=1", "empty field name"),
    ("baseline.lr=", "no value after '='"),
    ("baseline.lr=[1, 2", "not valid YAML"),
])
def test_malformed_overrides_are_refused_saying_why(text: str, expected: str) -> None:
    with pytest.raises(OverrideError, match=expected):
        parse_override(text)


def test_overrides_land_in_the_spec_and_a_later_one_wins() -> None:
    pipeline = load_manifest(DIGITS, ["baseline.lr=0.01", "model.name=resnet18", "data.augment=[hflip, crop]",
                                      "baseline.lr=0.02", "approval.required=true"])
    assert pipeline.spec.baseline.lr == 0.02
    assert pipeline.spec.model.name == "resnet18"
    assert pipeline.spec.data.augment == ["hflip", "crop"]
    assert pipeline.spec.approval.required is True
    untouched = load_manifest(DIGITS)
    assert pipeline.spec.target == untouched.spec.target  # what is not overridden stays the file's


def test_python_names_are_accepted_and_written_under_the_manifest_name() -> None:
    document = yaml.safe_load(TONES.read_text())
    result = apply_overrides(document, ["vae.kl_anneal.warmup_epochs=2"])
    assert result["spec"]["vae"]["klAnneal"]["warmupEpochs"] == 2
    assert document["spec"]["vae"]["klAnneal"]["warmupEpochs"] == 5  # the input is not modified


def test_an_unknown_field_is_refused_naming_the_path_and_what_exists_there() -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(DIGITS, ["baseline.lrr=0.01"])
    (line,) = info.value.problems
    assert "--set baseline.lrr=0.01" in line and "spec.baseline has no field 'lrr'" in line
    assert "allowed:" in line and "lr" in line and "epochs" in line


def test_a_path_below_a_value_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"spec.baseline.lr is a value, not a group of fields"):
        load_manifest(DIGITS, ["baseline.lr.x=1"])


def test_a_bad_value_is_refused_by_the_same_rules_as_the_file() -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(TONES, ["model.name=resnet50", "baseline.lr=abc"])
    text = "\n".join(info.value.problems)
    assert "spec.model.name: 'resnet50' is not a model of task vae; allowed: 'vae-small'" in text
    assert "spec.baseline.lr" in text and "valid number" in text
    assert "--set model.name=resnet50" in text  # the source names the overrides


def test_a_free_form_mapping_takes_any_key() -> None:
    pipeline = load_manifest(REPO / "examples" / "custom-task" / "pipeline.yaml", ["customTask.options.hidden=8"])
    assert pipeline.spec.custom_task is not None and pipeline.spec.custom_task.options["hidden"] == 8


def test_validate_reports_override_problems_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.validate(DIGITS, ["baseline.epochs=0"]) == commands.EXIT_INVALID
    assert "spec.baseline.epochs" in capsys.readouterr().err
    assert commands.validate(DIGITS, ["baseline.epochs=3"]) == commands.EXIT_OK
