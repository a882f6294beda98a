"""Shared fixtures: the builtin digits cache (written once per session) and a
small job config factory for engine tests. And the session's leak check:
every process the tests start carries a marker in its environment, and a
process still carrying it when the session ends fails the run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests import process_leaks
from trainpipe_trainer.contract.job_config import JobConfig

SESSION_MARKER = process_leaks.mark_this_session()

# Under pytest-xdist two workers share the cores: one torch (OpenMP) thread
# per process, inherited by every trainer the tests start. Two trainings of
# two threads each side by side on 2 cores spin against each other (seen
# here: each took well over twice as long as alone).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controller checks once for all
    left = process_leaks.leftovers(SESSION_MARKER)
    if not left:
        return
    process_leaks.kill(left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["processes started by the tests outlived the session (now killed):",
             *(f"  {p}" for p in left)]
    if reporter is not None:
        reporter.write_sep("=", "leaked processes", red=True)
        reporter.write_line("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


# pytest-xdist (`--dist loadfile`) hands whole files to the workers in
# collection order. The files that run whole pipelines take minutes each; run
# last, one of them decides when the suite ends while the other worker idles.
# So they go first, longest first (measured with --durations: unit files
# that train for minutes too), then the other integration files, then the
# many short unit files that fill in around them.
LONGEST_FIRST = (
    "test_pipeline_local.py",
    "test_engine.py",
    "test_operator.py",
    "test_operator_jobs.py",
    "test_run_entrypoint.py",
    "test_operator_suspend.py",
    "test_approval.py",
    "test_tracking_operator.py",
    "test_tracking_server_stopped.py",
    "test_operator_progress.py",
    "test_operator_tasks.py",
    "test_devcluster.py",
    "test_pipeline_local_resume.py",
    "test_tasks_local_collapse_custom.py",
    "test_watchdog_local.py",
    "test_vae_audio_data.py",
    "test_tasks_local.py",
    "test_tracking_pipeline.py",
    "test_tenancy.py",
)


def _file_rank(item: pytest.Item) -> tuple[int, int]:
    path = Path(str(item.fspath))
    if path.name in LONGEST_FIRST:
        return (0, LONGEST_FIRST.index(path.name))
    return (1, 0) if "integration" in path.parts else (2, 0)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # sorted() is stable: within a file, and among files of one rank, the
    # collection order stays.
    items[:] = sorted(items, key=_file_rank)
