"""``trainpipe run``, ``validate``, ``status`` and ``approve``: the local
runner's commands."""

from __future__ import annotations

import getpass
import os
import shutil
import sys
from pathlib import Path

import yaml

from trainpipe_operator.pipeline import rundir
from trainpipe_operator.pipeline.launchers import (
    Launcher,
    ProcessLauncher,
    RayJobLauncher,
    local_token,
)
from trainpipe_operator.pipeline.progress import Progress
from trainpipe_operator.pipeline.runner import (
    JobFailedToStart,
    LocalRunner,
    NotAwaitingApproval,
    PipelineInterrupted,
)
from trainpipe_operator.spec.load import ManifestError, load_manifest
from trainpipe_operator.spec.pipeline import TrainingPipeline
from trainpipe_trainer.tracking.mlflow_rest import MlflowCredentials

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def validate(path: Path, overrides: list[str] | None = None) -> int:
    try:
        pipeline = load_manifest(path, overrides)
    except ManifestError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    print(f"{path}: valid TrainingPipeline {pipeline.metadata.name!r}")
    return EXIT_OK


def _launcher(pipeline: TrainingPipeline) -> tuple[Launcher, str]:
    runtime = pipeline.spec.runtime
    if runtime.type == "rayjob":
        raise ManifestError(Path("."), [
            "spec.runtime.type: 'rayjob' needs the operator on Kubernetes (KubeRay); "
            "`trainpipe run` supports local and ray"])
    if runtime.type == "ray":
        token = local_token() if runtime.ray.address else None  # a local head makes its own
        return RayJobLauncher(runtime.ray.address, token=token), "ray"
    return ProcessLauncher(), "local"


def _prepare_run_dir(pipeline: TrainingPipeline, run_dir: Path, fresh: bool) -> None:
    stored = run_dir / "pipeline.yaml"
    if fresh and run_dir.exists():
        if not (stored.exists() or (run_dir / "state.json").exists()):
            raise ManifestError(run_dir, [f"{run_dir}: not a trainpipe run directory; refusing to delete it for --fresh"])
        shutil.rmtree(run_dir)
    if stored.exists():
        before = TrainingPipeline.model_validate(yaml.safe_load(stored.read_text(encoding="utf-8")))
        if before.spec != pipeline.spec:
            raise ManifestError(run_dir, [
                f"{run_dir} holds a run of a different spec; continue it with the same file, "
                "or start over with --fresh (or another --run-dir)"])
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_yaml(stored, pipeline.dump())


def _tracking_credentials(pipeline: TrainingPipeline) -> MlflowCredentials | None:
    """The MLflow server's credentials, read once from this process's
    environment (MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD) and handed to the runner's client only: never
    written to the status, the run directory, a log or the params. The jobs
    this command starts inherit the same environment."""
    tracking = pipeline.spec.tracking
    if tracking is None or tracking.mlflow is None:
        return None
    try:
        return MlflowCredentials.from_env(dict(os.environ))
    except ValueError as exc:  # a username without a password, or the reverse
        raise ManifestError(Path("."), [f"spec.tracking.mlflow: {exc}"]) from None


def run(path: Path, run_dir: Path | None, fresh: bool, quiet: bool = False,
        overrides: list[str] | None = None) -> int:
    """Runs the pipeline in ``path`` (with ``--set`` overrides applied) to its
    end. The run directory records the resolved spec; rerunning continues it
    only with the same resolved spec."""
    try:
        pipeline = load_manifest(path, overrides)
        credentials = _tracking_credentials(pipeline)
        run_dir = run_dir or Path("runs") / pipeline.metadata.name
        _prepare_run_dir(pipeline, run_dir, fresh)
        launcher, runtime = _launcher(pipeline)
    except ManifestError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    runner = LocalRunner(pipeline, run_dir, launcher, runtime, Progress(enabled=not quiet),
                         tracking_credentials=credentials)
    try:
        status = runner.run()
    except PipelineInterrupted as exc:
        print(f"trainpipe: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except JobFailedToStart as exc:
        print(f"trainpipe: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        close = getattr(launcher, "close", None)
        if close:
            close()
    print(f"trainpipe: {pipeline.metadata.name}: {status.phase}: {status.message}")
    print(f"trainpipe: summary: {run_dir / 'summary.md'}")
    return EXIT_OK if status.phase in ("Succeeded", "AwaitingApproval") else EXIT_FAILED


def show_status(run_dir: Path, namespace: str | None = None) -> int:
    """A run directory's state, or (``namespace`` given, or no such folder)
    the cluster's TrainingPipeline of that name: the same lines either way."""
    if namespace is not None or not run_dir.exists():
        from trainpipe_operator.commands.cluster_status import read_cluster_status

        status, problem = read_cluster_status(str(run_dir), namespace)
        if status is None:
            print(problem, file=sys.stderr)
            return EXIT_INVALID
    else:
        status = rundir.load_state(run_dir)
    if status is None:
        print(f"{run_dir}: no state.json: not a trainpipe run directory (or not started)", file=sys.stderr)
        return EXIT_INVALID
    print(f"phase: {status.phase}  iteration: {status.iteration}  {status.message}")
    from trainpipe_operator.commands.cluster_status import progress_lines

    for line in progress_lines(status):
        print(line)
    for key, gate in status.gates.items():
        print(f"gate {key}: {'passed' if gate.passed else 'FAILED'}")
        for c in gate.checks:
            print(f"  {c.result:4} {c.id}: value={c.value} threshold={c.threshold} ({c.evidence}) {c.message}")
    print("decisions:")
    for d in status.decisions:
        print(f"  {d.time} {d.phase} -> {d.decision}: {d.reason}")
    print("artifacts:")
    for name, rel in sorted(status.artifacts.items()):
        print(f"  {name}: {run_dir / rel}")
    tracking = status.tracking
    if tracking is not None:
        print(f"tracking: experiment {tracking.experiment_id}, pipeline run {tracking.mlflow_parent_run_id}"
              + (f", model {tracking.registered_model} version {tracking.model_version} "
                 f"({', '.join(tracking.aliases)})" if tracking.model_version else ""))
        for folder, run_id in tracking.child_runs.items():
            print(f"  {folder}: run {run_id}")
        if tracking.degraded or tracking.jobs_degraded:
            print(f"  degraded: {'; '.join([*([tracking.degraded] if tracking.degraded else []), *tracking.jobs_degraded.values()])}")
        if tracking.pending:
            print(f"  to retry after {tracking.retry_after}: {', '.join(tracking.pending)}")
    return EXIT_OK


def approve(run_dir: Path, approver: str | None) -> int:
    status = rundir.load_state(run_dir)
    stored = run_dir / "pipeline.yaml"
    if status is None or not stored.exists():
        print(f"{run_dir}: not a trainpipe run directory", file=sys.stderr)
        return EXIT_INVALID
    pipeline = TrainingPipeline.model_validate(yaml.safe_load(stored.read_text(encoding="utf-8")))
    try:
        credentials = _tracking_credentials(pipeline)
    except ManifestError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return EXIT_INVALID
    runner = LocalRunner(pipeline, run_dir, ProcessLauncher(), "local", Progress(enabled=False),
                         tracking_credentials=credentials)
    try:
        status = runner.approve(status, approver or getpass.getuser())
    except NotAwaitingApproval as exc:
        print(f"{run_dir}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"trainpipe: {pipeline.metadata.name}: {status.phase}: {status.message}")
    return EXIT_OK if status.phase == "Succeeded" else EXIT_FAILED
