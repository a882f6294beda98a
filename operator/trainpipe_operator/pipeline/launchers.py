"""How a phase's job runs. The runner hands a launcher a job config file and
gets back the exit code and the evidence the job left in its run directory.

- ``ProcessLauncher`` (``runtime.type: local``): ``python -m
  trainpipe_trainer.run`` as a child process on this machine; the trainer
  trains in one process, or in torch DDP processes when ``workers > 1``.
- ``RayJobLauncher`` (``runtime.type: ray``): the same command submitted
  through Ray's Job Submission API, to ``runtime.ray.address`` or to a Ray
  head started for the pipeline. The submission id is derived from the
  pipeline, phase, iteration and attempt, so running the pipeline again
  attaches to a job already submitted instead of submitting it twice.

The control plane never imports torch: both run the trainer elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trainpipe_trainer.contract.evidence import Evidence

log = logging.getLogger(__name__)

INTERRUPTED = 75  # the trainer's "interrupted, resumable" exit code


class JobPending(Exception):
    """An asynchronous launcher's job has not finished yet: come back later."""

    def __init__(self, submission_id: str, state: str) -> None:
        super().__init__(f"job {submission_id} is {state}")
        self.submission_id = submission_id
        self.state = state


@dataclass
class JobOutcome:
    exit_code: int
    submission_id: str
    output_path: Path
    message: str = ""

    @property
    def interrupted(self) -> bool:
        return self.exit_code == INTERRUPTED


class Launcher(Protocol):
    def run(self, job_file: Path, run_dir: Path, submission_id: str) -> JobOutcome: ...


def trainer_command(job_file: Path, python: str = sys.executable) -> list[str]:
    return [python, "-m", "trainpipe_trainer.run", "--config", str(job_file)]


def entrypoint_gpus(job_file: Path) -> float:
    """GPUs the job's entrypoint (the Ray driver) itself needs: one for a
    one-process job (preflight, evaluate) of a pipeline that asked for GPUs,
    so that Ray places it on a GPU node rather than on a CPU-only head, where
    the preflight would find no CUDA and fail; none for ``train``, whose Ray
    Train workers request their own."""
    from trainpipe_trainer.contract.job_config import JobConfig

    config = JobConfig.from_yaml_file(job_file)
    if config.action in ("preflight", "evaluate") and config.resources.gpus_per_worker > 0:
        return 1.0
    return 0.0


class ProcessLauncher:
    """A child process per job; its output goes to ``<run_dir>/job_output.log``."""

    STOP_GRACE_SECONDS = 15.0

    def __init__(self) -> None:
        self._running: dict[str, subprocess.Popen] = {}

    def run(self, job_file: Path, run_dir: Path, submission_id: str) -> JobOutcome:
        run_dir.mkdir(parents=True, exist_ok=True)
        output = run_dir / "job_output.log"
        with output.open("a", encoding="utf-8") as sink:
            sink.write(f"--- {submission_id}: {' '.join(trainer_command(job_file))}\n")
            sink.flush()
            proc = subprocess.Popen(trainer_command(job_file), stdout=sink, stderr=subprocess.STDOUT)
            self._running[submission_id] = proc
            try:
                code = proc.wait()
            except KeyboardInterrupt:
                # The child got the same SIGINT (same process group): it
                # checkpoints at the next step boundary and exits 75.
                code = _wait_after_interrupt(proc)
            finally:
                self._running.pop(submission_id, None)
        return JobOutcome(exit_code=code, submission_id=submission_id, output_path=output)

    def stop(self, submission_id: str) -> bool:
        """Stop a running job (the watchdog's, from another thread): SIGTERM
        (it checkpoints at the next step boundary, if it reaches one), then,
        a hung job that does not end, SIGKILL to it and the ranks it started."""
        proc = self._running.get(submission_id)
        if proc is None or proc.poll() is not None:
            return False
        children = _children(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=self.STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            for pid in [proc.pid, *children]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return True


def _children(pid: int) -> list[int]:
    """The process's descendants (DDP ranks), from /proc; none where there is no /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def _wait_after_interrupt(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(timeout=120)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.send_signal(signal.SIGKILL)
        return proc.wait()


class RayJobLauncher:
    """Ray Job Submission API. ``address``: the dashboard URL; None starts a
    local head from this Python environment (a job's ``python`` is the one
    first on the head's PATH) and stops it at ``close()``."""

    TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

    def __init__(self, address: str | None, token: str | None = None, poll_seconds: float = 1.0,
                 wait: bool = True, on_submit: Callable[[str], None] | None = None) -> None:
        self.poll_seconds = poll_seconds
        self.wait = wait
        self.on_submit = on_submit
        self._head: subprocess.Popen | None = None
        self.address = address or self._start_local_head()
        token = token or getattr(self, "_local_token", None)
        from ray.job_submission import JobSubmissionClient  # Ray's client: no torch

        # The token travels in this client's own headers, to this address
        # only: never the process environment, where every other client (of
        # every other pipeline, to any address) would send it too.
        self.client = JobSubmissionClient(self.address, headers=auth_headers(token))

    def _start_local_head(self) -> str:
        """A Ray head of its own (``devcluster.RayHead``: ``ray start --head
        --block`` in its own session from this environment): stopping it stops
        this head only, whatever else runs on the machine."""
        import tempfile

        from trainpipe_operator.devcluster.ray_head import RayHead

        head = RayHead(Path(tempfile.mkdtemp(prefix="trainpipe-ray-head-"))).start()
        self._local_head: RayHead | None = head
        self._local_token = head.token
        self._head = head.process
        log.info("started a local Ray head (dashboard %s, log %s)", head.address, head.log_path)
        return head.address

    def run(self, job_file: Path, run_dir: Path, submission_id: str) -> JobOutcome:
        """Submit (or attach to) the job and return its outcome. With
        ``wait=False`` a job still running raises ``JobPending`` instead of
        blocking: the operator polls it again on its next tick."""
        run_dir.mkdir(parents=True, exist_ok=True)
        output = run_dir / "job_output.log"
        if not self.exists(submission_id):
            gpus = entrypoint_gpus(job_file)
            self.client.submit_job(
                entrypoint=" ".join(trainer_command(job_file, python="python")),
                submission_id=submission_id,
                entrypoint_num_gpus=gpus or None,
            )
            log.info("submitted Ray job %s", submission_id)
            if self.on_submit is not None:
                self.on_submit(submission_id)
        if not self.wait:
            info = self.client.get_job_info(submission_id)
            state = _state(info)
            if state not in self.TERMINAL:
                raise JobPending(submission_id, state)
        else:
            try:
                info = self._wait(submission_id)
            except KeyboardInterrupt:
                self.client.stop_job(submission_id)  # SIGTERM to the driver: it checkpoints
                info = self._wait(submission_id)
        output.write_text(self.client.get_job_logs(submission_id), encoding="utf-8")
        code = getattr(info, "driver_exit_code", None)
        if _state(info) == "STOPPED":
            code = INTERRUPTED  # `ray job stop`: the driver checkpointed on SIGTERM; resumable
        elif code is None:
            code = 0 if str(info.status.value if hasattr(info.status, "value") else info.status) == "SUCCEEDED" else 1
        return JobOutcome(exit_code=int(code), submission_id=submission_id, output_path=output,
                          message=status_message(info.message))

    def stop(self, submission_id: str) -> bool:
        """Ask a running job to stop (SIGTERM to its driver: it checkpoints)."""
        if not self.exists(submission_id):
            return False
        return bool(self.client.stop_job(submission_id))

    def exists(self, submission_id: str) -> bool:
        """Whether Ray knows this submission (any state)."""
        try:
            self.client.get_job_info(submission_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return False
            raise
        return True

    def remove(self, prefix: str) -> tuple[list[str], list[str]]:
        """Cleanup (``spec.ttlSecondsAfterFinished``): delete every submission
        whose id starts with ``prefix`` (its record and logs on the head).
        One still running is asked to stop first and deleted on a later call.
        Returns (deleted, still stopping)."""
        deleted, stopping = [], []
        for info in self.client.list_jobs():
            submission = getattr(info, "submission_id", None) or ""
            if not submission.startswith(prefix):
                continue
            if _state(info) not in self.TERMINAL:
                self.client.stop_job(submission)
                stopping.append(submission)
                continue
            if self.client.delete_job(submission):
                deleted.append(submission)
        return deleted, stopping

    def _wait(self, submission_id: str):
        while True:
            info = self.client.get_job_info(submission_id)
            state = info.status.value if hasattr(info.status, "value") else str(info.status)
            if state in self.TERMINAL:
                return info
            time.sleep(self.poll_seconds)

    def close(self) -> None:
        head = getattr(self, "_local_head", None)
        if head is not None:
            head.stop()
        self._local_head = None
        self._head = None


LOG_TAIL_MARKER = ", last available logs"


def status_message(message: str | None) -> str:
    """A job's message as the pipeline's status may show it. Ray (and KubeRay,
    which copies it) appends the job's last 20,000 characters of output to a
    failed job's message: whatever the job printed, file contents included.
    Status and Events keep the sentence before it; the output itself stays
    in ``job_output.log`` in the run directory."""
    text = (message or "").strip()
    if LOG_TAIL_MARKER in text:
        return text.split(LOG_TAIL_MARKER, 1)[0] + " (its output: job_output.log in the phase's run directory)"
    return text.splitlines()[0][:500] if text else ""


def auth_headers(token: str | None) -> dict[str, str]:
    """The Job API's bearer header for ``token``. Without one, an empty
    ``Authorization`` all the same: Ray's client would otherwise add the
    token it finds in ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token`` (when
    ``RAY_AUTH_MODE=token``), sending a credential to an address it was not
    given for."""
    return {"Authorization": f"Bearer {token}" if token else ""}


def local_token() -> str | None:
    """``trainpipe run`` on the user's own machine: their ``RAY_AUTH_TOKEN``,
    else Ray's token file (``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _wait_for_dashboard(address: str, head: subprocess.Popen, timeout: float) -> None:
    from trainpipe_operator.devcluster.ray_head import wait_for_dashboard

    wait_for_dashboard(address, head, timeout)


def _state(info: object) -> str:
    status = getattr(info, "status", "")
    return str(getattr(status, "value", status))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_evidence(run_dir: Path) -> Evidence | None:
    path = run_dir / "evidence.json"
    return Evidence.read(path) if path.exists() else None

