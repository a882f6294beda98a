"""A training job's Weights & Biases run (``JobConfig.tracking.wandb``).

The run id is stable per job (``runId``), opened with ``resume="allow"``, so
every attempt of a job continues one W&B run. Offline by default: the run is
written under ``<dir>/wandb/offline-run-*`` (``dir`` defaults to the job's run
directory) for ``wandb sync`` later; offline, wandb never touches the network.

The step axes. W&B's own ``_step`` counts ``log`` calls and restarts at 0 in
every offline attempt of a resumed run, so charts do not use it: each epoch
metric is defined against the metric ``epoch`` (the epoch number, as in
``metrics.json``) and each ``step/<name>`` against ``global_step`` (the
optimizer step). A resumed attempt never logs an epoch or a step at or below
the last one logged (kept in ``<dir>/wandb/trainpipe-progress-<runId>.json``,
and, online, the run's summary), so the axes never rewind or repeat.

What wandb changes in the process, and nothing more is changed here: it
starts its ``wandb-core`` service (one per process, ended at exit or by
``wandb.teardown()``), sets ``WANDB_SERVICE`` in ``os.environ`` for it, chains
its handler onto ``sys.excepthook``, and writes a debug log under
``~/.cache/wandb``. Runs are opened with ``reinit="create_new"`` so another
wandb run of the same process is never finished by this one. The console is
not captured (``console="off"``), git, code and requirements are not saved.

Credentials: offline needs none. Online needs ``WANDB_API_KEY`` in the job's
environment, which wandb reads itself; without it the sink refuses to start
(wandb would otherwise prompt on a terminal), and the job trains on.

``wandb`` is imported only when a W&B run is configured (``start``): the
control plane imports this module without wandb (and never torch).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainpipe_trainer.contract.tracking import WandbJobTarget
from trainpipe_trainer.tracking.sink import JobStatus, MediaFile, Sink

log = logging.getLogger("trainpipe.train")

EPOCH_AXIS = "epoch"
STEP_AXIS = "global_step"
STEP_PREFIX = "step/"
EXIT_CODES = {"completed": 0, "early_stopped": 0, "failed": 1, "interrupted": 75}
#: How long wandb.init may wait for its service / an online server (seconds).
INIT_TIMEOUT_S = 30.0


class WandbCredentialsMissing(RuntimeError):
    """An online W&B run without ``WANDB_API_KEY`` in the job's environment."""


def wandb_dir(target: WandbJobTarget, run_dir: Path) -> Path:
    """The ``dir`` given to ``wandb.init``: wandb writes into ``<it>/wandb``."""
    return Path(target.dir) if target.dir else Path(run_dir)


def init_run(target: WandbJobTarget, run_dir: Path, config: Mapping[str, Any] | None = None, *,
             has_api_key: bool | None = None, job_type: str | None = None) -> Any:
    """Open (or continue) the W&B run ``target.run_id``; returns wandb's Run.

    Never prompts: online without an API key (``has_api_key``; default:
    whether ``WANDB_API_KEY`` is set in this process's environment, where
    wandb reads it) raises :class:`WandbCredentialsMissing`. Also for the
    control plane (the model artifact at Finalization).

    Raises:
        WandbCredentialsMissing: online mode without an API key.
        wandb.errors.Error: wandb could not open the run.
    """
    if has_api_key is None:
        has_api_key = bool(os.environ.get("WANDB_API_KEY"))
    if target.mode == "online" and not has_api_key:
        raise WandbCredentialsMissing(
            f"W&B run {target.run_id} (project {target.project}) is online but WANDB_API_KEY is not set in "
            "the job's environment: set it (the launcher fills it from the configured Secret) or use mode offline"
        )
    import wandb

    directory = wandb_dir(target, run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(
        console="off", silent=True, show_info=False, disable_git=True, save_code=False,
        disable_job_creation=True, x_save_requirements=False, init_timeout=INIT_TIMEOUT_S,
    )
    return wandb.init(
        project=target.project, entity=target.entity, id=target.run_id, resume="allow",
        group=target.group, name=target.run_name, dir=str(directory), mode=target.mode,
        config=dict(config or {}), tags=list(target.tags), job_type=job_type,
        reinit="create_new", settings=settings,
    )


def log_model_artifact(run: Any, files: Sequence[Path] | Mapping[str, Path], aliases: Sequence[str], *,
                       name: str | None = None, metadata: Mapping[str, Any] | None = None) -> Any:
    """Log the exported model as a W&B artifact of type ``model`` with
    ``aliases`` (``candidate``; later ``champion``). ``files``: paths (stored
    by file name) or ``{name in the artifact: path}``. Logging the same files
    again with other aliases adds them to the same version (same digest): how
    ``champion`` follows an approval. Returns wandb's Artifact.

    For the control plane: ``log_model_artifact(init_run(target, run_dir), ...)``.
    """
    import wandb

    artifact = wandb.Artifact(name or f"model-{run.id}", type="model", metadata=dict(metadata or {}))
    items = files.items() if isinstance(files, Mapping) else ((Path(f).name, Path(f)) for f in files)
    for stored_as, path in items:
        artifact.add_file(str(path), name=stored_as)
    return run.log_artifact(artifact, aliases=list(aliases))


class WandbSink(Sink):
    name = "wandb"

    def __init__(self, target: WandbJobTarget, run_dir: Path, extra_config: Mapping[str, str] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.target = target
        self.run_dir = Path(run_dir)
        self.extra_config = dict(extra_config or {})
        environ = os.environ if env is None else env
        self._has_api_key = bool(environ.get("WANDB_API_KEY"))  # wandb reads the key itself
        directory = wandb_dir(target, self.run_dir)
        self.server = (f"W&B offline ({directory / 'wandb'})" if target.mode == "offline"
                       else f"W&B {environ.get('WANDB_BASE_URL') or 'default server'} "
                            f"(project {target.project})")
        self.progress_file = directory / "wandb" / f"trainpipe-progress-{target.run_id}.json"
        self.run: Any = None
        self.last_epoch = 0
        self.last_step = 0
        self._defined: set[str] = set()

    def __repr__(self) -> str:
        return f"WandbSink(server={self.server!r}, run_id={self.target.run_id!r})"

    def is_unavailable(self, exc: BaseException) -> bool:
        try:
            from wandb.errors import AuthenticationError, CommError
        except ImportError:
            return False
        return isinstance(exc, CommError) and not isinstance(exc, AuthenticationError)

    # ---------------------------------------------------------------- calls
    def start(self, params: Mapping[str, str]) -> None:
        self.run = init_run(self.target, self.run_dir, {**params, **self.extra_config},
                            has_api_key=self._has_api_key)
        self.run.define_metric(EPOCH_AXIS)
        self.run.define_metric(STEP_AXIS)
        self.run.define_metric(f"{STEP_PREFIX}*", step_metric=STEP_AXIS)
        saved = self._read_progress()
        self.last_epoch = max(saved.get("epoch", 0), self._summary_int(EPOCH_AXIS))
        self.last_step = max(saved.get("step", 0), self._summary_int(STEP_AXIS))

    def epoch(self, epoch: int, metrics: Mapping[str, float], media: Sequence[MediaFile] = ()) -> None:
        if epoch <= self.last_epoch:
            return
        import wandb

        row: dict[str, Any] = {EPOCH_AXIS: epoch, **metrics}
        for item in media:
            if item.kind == "audio":
                row[item.key] = wandb.Audio(str(item.path), sample_rate=item.sample_rate, caption=item.caption)
            else:
                row[item.key] = wandb.Image(str(item.path), caption=item.caption)
        for key in row:
            if key != EPOCH_AXIS and key not in self._defined:
                self.run.define_metric(key, step_metric=EPOCH_AXIS)
                self._defined.add(key)
        self.run.log(row)
        self.last_epoch = epoch
        self._write_progress()

    def step(self, step: int, metrics: Mapping[str, float]) -> None:
        if step <= self.last_step:
            return
        self.run.log({STEP_AXIS: step, **metrics})
        self.last_step = step
        self._write_progress()

    def artifact(self, path: Path, artifact_path: str = "") -> None:
        """The file into the run's files (``<artifact_path>/<name>``), uploaded
        by wandb (online now, offline at ``wandb sync``)."""
        files = Path(self.run.dir)
        target = files / artifact_path / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)  # a checkpoint is not copied when a link will do
        except OSError:
            shutil.copyfile(path, target)
        self.run.save(str(target), base_path=str(files), policy="now")

    def finish(self, status: JobStatus) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        if status == "interrupted":
            run.mark_preempting()
        run.finish(exit_code=EXIT_CODES[status])

    # -------------------------------------------------------------- helpers
    def _summary_int(self, key: str) -> int:
        try:
            value = self.run.summary.get(key)
        except Exception:  # noqa: BLE001 - an offline run has no server-side summary
            return 0
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    def _read_progress(self) -> dict[str, int]:
        try:
            data = json.loads(self.progress_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: int(v) for k, v in data.items() if k in ("epoch", "step") and isinstance(v, int)}

    def _write_progress(self) -> None:
        self.progress_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.progress_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"epoch": self.last_epoch, "step": self.last_step}), encoding="utf-8")
        tmp.replace(self.progress_file)
