"""Records the software and hardware a run used: the Planning phase's ``environment.json``.

Why: the reproducibility gate compares runs, and a result is only comparable
with the versions, hardware, code commit and seeds that made it. Every field is
always present; a field that has no value here (no GPU, not a git checkout) is
null and ``notes[field]`` says why, so the gate can tell "looked for and absent"
from "forgot to record".

Ray is looked up through its installed metadata, never imported: importing ray
costs seconds and starts nothing we need here.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

GIT_TIMEOUT_S = 5.0
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # trainpipe_trainer/


def _git(*args: str) -> str:
    """Run git in the package's folder; raise on failure or timeout."""
    out = subprocess.run(
        ["git", "-C", str(_PACKAGE_DIR), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if out.returncode != 0:
        first_line = (out.stderr.strip().splitlines() or [""])[0]
        raise RuntimeError(first_line or f"git {' '.join(args)} exited {out.returncode}")
    return out.stdout.strip()


def _code_version(notes: dict[str, str]) -> dict[str, Any]:
    """Git commit and dirty flag when the source is a git checkout; the package version always."""
    try:
        package_version: str | None = metadata.version("trainpipe")
    except metadata.PackageNotFoundError:
        package_version = None
        notes["code_version.package_version"] = "the trainpipe distribution is not installed"
    commit: str | None = None
    dirty: bool | None = None
    try:
        commit = _git("rev-parse", "HEAD")
        # A package installed into a (git-ignored) venv inside some checkout is not that checkout's code.
        ignored = subprocess.run(
            ["git", "-C", str(_PACKAGE_DIR), "check-ignore", "-q", "."],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        if ignored.returncode == 0:
            raise RuntimeError("the package lies in a git-ignored folder of another checkout")
        dirty = bool(_git("status", "--porcelain"))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        commit, dirty = None, None
        notes["code_version.git_commit"] = f"not a usable git checkout: {exc}"
    return {
        "source": "git" if commit else "package",
        "git_commit": commit,
        "git_dirty": dirty,
        "package_version": package_version,
    }


def _torch_info(env: dict[str, Any], notes: dict[str, str]) -> None:
    try:
        import torch
    except ImportError as exc:
        for key in ("torch_version", "cuda_version", "cudnn_version", "deterministic_algorithms"):
            notes[key] = f"torch is not importable: {exc}"
        return
    env["torch_version"] = torch.__version__
    env["cuda_version"] = torch.version.cuda  # the CUDA torch was built against
    if torch.version.cuda is None:
        notes["cuda_version"] = "torch was built without CUDA"
    env["cudnn_version"] = (
        torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    )
    if env["cudnn_version"] is None:
        notes["cudnn_version"] = "cuDNN is not available to torch"
    env["cuda_available"] = torch.cuda.is_available()
    env["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    env["cudnn_deterministic"] = bool(torch.backends.cudnn.deterministic)
    env["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    if env["cuda_available"]:
        env["gpus"] = [
            {
                "index": i,
                "name": torch.cuda.get_device_properties(i).name,
                "memory_total_bytes": int(torch.cuda.get_device_properties(i).total_memory),
            }
            for i in range(torch.cuda.device_count())
        ]
        env["gpu_count"] = len(env["gpus"])


def _nvml_info(env: dict[str, Any], notes: dict[str, str]) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:
        notes["nvidia_driver_version"] = f"NVML unavailable (no NVIDIA driver or GPU): {exc}"
        return
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        env["nvidia_driver_version"] = version.decode() if isinstance(version, bytes) else version
        if env["gpus"] is None:  # torch cannot use them, but record what is installed
            gpus = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
                gpus.append(
                    {
                        "index": i,
                        "name": name.decode() if isinstance(name, bytes) else name,
                        "memory_total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                    }
                )
            env["gpus"], env["gpu_count"] = gpus, len(gpus)
    except Exception as exc:
        notes["nvidia_driver_version"] = f"NVML query failed: {exc}"
    finally:
        pynvml.nvmlShutdown()


def collect_environment(seeds: dict[str, Any]) -> dict[str, Any]:
    """Describe this machine, its software, the code version and the run's seeds (JSON-ready)."""
    notes: dict[str, str] = {}
    env: dict[str, Any] = {
        "collected_at": datetime.now(timezone.utc).isoformat(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "cpu_count_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_version": None,
        "cuda_version": None,
        "cudnn_version": None,
        "cuda_available": False,
        "gpu_count": 0,
        "gpus": None,
        "nvidia_driver_version": None,
        "ray_version": None,
        "code_version": None,
        "seeds": dict(seeds),
        "deterministic_algorithms": None,
        "cudnn_deterministic": None,
        "cudnn_benchmark": None,
        "notes": notes,
    }
    _torch_info(env, notes)
    _nvml_info(env, notes)
    if not env["gpus"]:
        env["gpus"] = None
        notes["gpus"] = (
            "no CUDA GPU visible (torch.cuda.is_available() is False and NVML lists none)"
        )
    try:
        env["ray_version"] = metadata.version("ray")
    except metadata.PackageNotFoundError:
        notes["ray_version"] = "ray is not installed"
    env["code_version"] = _code_version(notes)
    return env


def write_environment(path: str | os.PathLike[str], seeds: dict[str, Any]) -> dict[str, Any]:
    """Collect the environment and write it as JSON to ``path`` (atomically); returns it."""
    env = collect_environment(seeds)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(env, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, target)
    return env
