"""Read a manifest file into a TrainingPipeline, or a list of problems, one
line each, naming the field path, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from trainpipe_operator.spec.overrides import OverrideError, apply_overrides
from trainpipe_operator.spec.pipeline import TrainingPipeline, redact_userinfo
from trainpipe_trainer.contract.validation_errors import format_validation_error


class ManifestError(Exception):
    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.path = path
        self.problems = problems


def load_manifest(path: Path, overrides: list[str] | None = None) -> TrainingPipeline:
    """Raises ManifestError with one line per problem (never a traceback).

    ``overrides`` are ``--set PATH=VALUE`` strings (spec/overrides.py),
    applied before validation; a problem they cause names the field and the
    --set options as its source."""
    try:
        with open(path, encoding="utf-8") as handle:
            docs = [d for d in yaml.safe_load_all(handle) if d is not None]
    except OSError as exc:
        raise ManifestError(path, [f"{path}: cannot read: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise ManifestError(path, [f"{path}: not valid YAML: {exc}"]) from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ManifestError(path, [f"{path}: expected one TrainingPipeline mapping, found {len(docs)} document(s)"])
    document, source = docs[0], str(path)
    if overrides:
        try:
            document = apply_overrides(document, overrides)
        except OverrideError as exc:
            raise ManifestError(path, [f"{path}: {redact_userinfo(str(exc))}"]) from None
        # never echo a credential someone put into a URL
        source = f"{path} with " + " ".join(f"--set {redact_userinfo(o)}" for o in overrides)
    try:
        return TrainingPipeline.model_validate(document)
    except ValidationError as exc:
        raise ManifestError(path, format_validation_error(exc, source=source)) from None
