"""collect_environment / write_environment: the Planning phase's environment.json."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trainpipe_trainer.engine import environment as envmod
from trainpipe_trainer.engine.environment import collect_environment, write_environment

FIELDS = {
    "collected_at",
    "hostname",
    "platform",
    "python_version",
    "python_implementation",
    "python_executable",
    "cpu_count",
    "cpu_count_usable",
    "torch_version",
    "cuda_version",
    "cudnn_version",
    "cuda_available",
    "gpu_count",
    "gpus",
    "nvidia_driver_version",
    "ray_version",
    "code_version",
    "seeds",
    "deterministic_algorithms",
    "cudnn_deterministic",
    "cudnn_benchmark",
    "notes",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def git_checkout(tmp_path, monkeypatch):
    """A git repo holding a fake package folder, which environment.py takes as its own."""
    repo = tmp_path / "repo"
    pkg = repo / "trainer" / "trainpipe_trainer"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "init")
    monkeypatch.setattr(envmod, "_PACKAGE_DIR", pkg)
    return repo, pkg


def test_fields_on_this_machine():
    env = collect_environment({"seed": 42, "data_split_seed": 7})
    assert set(env) == FIELDS
    assert env["python_version"] == platform.python_version()
    assert env["torch_version"] == torch.__version__
    assert env["cuda_version"] == torch.version.cuda
    assert env["cuda_available"] == torch.cuda.is_available()
    assert env["ray_version"] == metadata.version("ray")
    assert env["cpu_count"] == os.cpu_count()
    assert env["hostname"] and env["platform"]
    assert env["seeds"] == {"seed": 42, "data_split_seed": 7}
    assert env["deterministic_algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert env["code_version"]["package_version"] == metadata.version("trainpipe")
    json.dumps(env)  # JSON-ready as it is


def test_every_null_field_has_a_note():
    env = collect_environment({})
    nulls = [k for k, v in env.items() if v is None]
    nulls += [f"code_version.{k}" for k, v in env["code_version"].items() if v is None]
    for key in nulls:
        if key == "code_version.git_dirty":
            continue  # explained by the git_commit note
        assert env["notes"].get(key), f"{key} is null without a note"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU record")
def test_no_gpu_is_recorded_as_null_with_notes(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML either
    env = collect_environment({})
    assert env["gpus"] is None and env["gpu_count"] == 0
    assert env["nvidia_driver_version"] is None
    assert "no CUDA GPU" in env["notes"]["gpus"]
    assert "NVML" in env["notes"]["nvidia_driver_version"]


def test_driver_and_gpus_from_nvml(monkeypatch):
    fake = SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: "550.54.15",
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=85_520_809_984),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    env = collect_environment({})
    assert env["nvidia_driver_version"] == "550.54.15"
    assert env["gpus"] == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 85_520_809_984}
    ]
    assert env["gpu_count"] == 1
    assert "nvidia_driver_version" not in env["notes"] and "gpus" not in env["notes"]


def test_ray_is_not_imported():
    code = (
        "import sys; from trainpipe_trainer.engine.environment import collect_environment; "
        "env = collect_environment({}); assert env['ray_version']; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_git_commit_and_dirty_flag(git_checkout):
    repo, pkg = git_checkout
    code = collect_environment({})["code_version"]
    assert code["source"] == "git"
    assert code["git_commit"] == git(repo, "rev-parse", "HEAD")
    assert code["git_dirty"] is False
    (pkg / "__init__.py").write_text("x = 2\n")
    assert collect_environment({})["code_version"]["git_dirty"] is True


def test_not_a_checkout_falls_back_to_the_package_version(tmp_path, monkeypatch):
    monkeypatch.setattr(envmod, "_PACKAGE_DIR", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    env = collect_environment({})
    assert env["code_version"] == {
        "source": "package",
        "git_commit": None,
        "git_dirty": None,
        "package_version": metadata.version("trainpipe"),
    }
    assert "git" in env["notes"]["code_version.git_commit"]


def test_package_in_an_ignored_folder_is_not_that_checkout(git_checkout, monkeypatch):
    repo, _ = git_checkout
    (repo / ".gitignore").write_text(".venv/\n")
    site = repo / ".venv" / "lib" / "trainpipe_trainer"
    site.mkdir(parents=True)
    monkeypatch.setattr(envmod, "_PACKAGE_DIR", site)
    env = collect_environment({})
    assert env["code_version"]["git_commit"] is None
    assert "ignored" in env["notes"]["code_version.git_commit"]


def test_git_hang_or_absence_is_a_note_not_a_failure(tmp_path, monkeypatch, git_checkout):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text("#!/bin/sh\nexec sleep 30\n")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(envmod, "GIT_TIMEOUT_S", 0.3)
    started = time.monotonic()
    env = collect_environment({})
    assert time.monotonic() - started < 10
    assert env["code_version"]["git_commit"] is None
    assert "timed out" in env["notes"]["code_version.git_commit"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    env = collect_environment({})
    assert env["code_version"]["source"] == "package"
    assert "code_version.git_commit" in env["notes"]


def test_write_environment(tmp_path):
    path = tmp_path / "01_planning" / "environment.json"
    env = write_environment(path, {"seed": 1})
    assert json.loads(path.read_text()) == env
    assert env["seeds"] == {"seed": 1}
    assert [p.name for p in path.parent.iterdir()] == ["environment.json"]  # no temp file left
