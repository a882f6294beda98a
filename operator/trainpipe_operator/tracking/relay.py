"""The relay: a training job on a shared Ray cluster (``runtime.type: ray``
under the operator) whose MLflow server needs credentials logs nothing
remote itself; when it has ended, the control plane sends what it left in
its folder to its child run, with the operator's credentials.

Why: a Ray Job API job gets its environment through ``runtime_env``, which
the Ray dashboard shows to everyone who can reach it (and the jobs of a
shared cluster belong to many teams), so the credentials never go there.
The control plane holds them already (tracking/credentials.py).

What is sent is what the job itself would have sent at its epochs, read
from its files with the job's own names (``tracking.job_tracker``): the
params (the job config flattened, ``config_hash``), every epoch of
``evidence.json`` (the rows of ``logs/metrics.json``), the confusion matrix
and audio previews per epoch, ``learning_curves.png`` (and the checkpoints
with ``logCheckpoints``), and the run's status. Per-step metrics
(``step/*``) are not in those files and are not relayed; nothing shows in
MLflow while the job runs. The sink asks the run for the last epoch it
holds first, so relaying again (a later attempt, a replayed reconcile)
never repeats or rewinds one. Like the job's own reporting it never
raises: a server that does not answer is written to the folder's
``tracking_status.json``, which becomes ``TrackingDegraded``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from trainpipe_trainer.contract.evidence import Evidence
from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.contract.tracking import MlflowJobTarget, TrackingConfig
from trainpipe_trainer.tracking.job_tracker import JobTracker
from trainpipe_trainer.tracking.mlflow_rest import MlflowCredentials
from trainpipe_trainer.tracking.mlflow_sink import MlflowSink

log = logging.getLogger("trainpipe.tracking")

#: In the job's folder: the digest of the evidence.json last relayed. A
#: reconcile replays a phase up to the job it waits for (Finalization's
#: evaluate job waits after its training job ended): relayed once, not per tick.
RELAYED_FILE = ".tracking_relayed"


def relay_job(target: MlflowJobTarget, credentials: MlflowCredentials | None, job_dir: Path,
              config: JobConfig, tracking: TrackingConfig) -> bool:
    """Send a finished training job's record in ``job_dir`` to ``target``'s
    run. ``config``: the job's config as submitted (its params; the folder's
    job.yaml may be a later job's, e.g. Finalization's evaluate job).
    ``tracking``: the job's tracking settings (step filter, checkpoints).
    False when there is nothing (new) to send: no evidence.json, or this
    evidence.json was relayed already."""
    evidence_path = job_dir / "evidence.json"
    if not evidence_path.is_file():
        return False
    digest = hashlib.sha256(evidence_path.read_bytes()).hexdigest()
    marker = job_dir / RELAYED_FILE
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == digest:
        return False
    evidence = Evidence.read(evidence_path)
    config = config.model_copy(update={
        "run_dir": str(job_dir), "tracking": tracking.model_copy(update={"mlflow": target, "wandb": None})})
    tracker = JobTracker(config, [MlflowSink(target, credentials)])
    tracker.start()
    for record in evidence.epochs:
        tracker.on_epoch(record, evidence.previews)
    tracker.finish(evidence)
    if tracker.fanout.status() is None:  # all of it went out: not again (else the next replay tries)
        marker.write_text(digest + "\n", encoding="utf-8")
    return True
