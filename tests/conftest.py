"""Shared fixtures: the builtin digits cache (written once per session) and a
small job config factory for engine tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainpipe_trainer.contract.job_config import JobConfig


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def make_job(tmp_path: Path, digits_cache: Path):
    """``make_job(name, **overrides)``: a small CPU job on builtin digits."""

    def factory(name: str = "job", **overrides: Any) -> JobConfig:
        base = {
            "name": name,
            "runDir": str(tmp_path / name),
            "seed": 7,
            "data": {"source": "builtin:digits", "imageSize": 8, "batchSize": 64, "cacheDir": str(digits_cache)},
            "model": {"name": "smallcnn"},
            "train": {"epochs": 2, "lr": 0.003, "logEverySteps": 5},
            "ray": {"enabled": False},
        }
        return JobConfig.model_validate(_merge(base, overrides))

    return factory
