"""The model registry: Finalization's exported model as a version of the
registered model, alias ``candidate``; alias ``champion`` once approved (or,
without ``approval.required``, once Succeeded), with the approver on it.
Aliases, not stages (stages are deprecated in MLflow). W&B gets the same
files as a ``model`` artifact of the finalization job's W&B run, with the
same aliases (``log_wandb_model``; wandb is imported only there).

Idempotent: a version is found again by its tags (pipeline, runId) before
one is created, so a registration retried after a server outage, or by the
next reconcile, never makes a second version."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainpipe_operator.pipeline import rundir
from trainpipe_operator.spec.status import PipelineStatus
from trainpipe_trainer.contract.results import ExportReport, TestEvaluation
from trainpipe_trainer.contract.tracking import WandbJobTarget
from trainpipe_trainer.tracking.mlflow_rest import MlflowRest

FOLDER = rundir.FINALIZATION
MODEL_PATH = "model"  # the artifact folder of the finalization run the version points at
DOCUMENTS = ("deployment_guide.md", "test_results.md", "export.json")
EXPORT_NAMES = ("model.onnx", "model.onnx.data", "model.pt2", "model.ts")
# What the evidence digest covers: what the production-ready gate judged.
EVIDENCE = ("evidence.json", "test_evaluation.json", "export.json")
DESCRIPTION_LIMIT = 5000  # MLflow's model version description column


def model_files(folder: Path) -> list[Path]:
    """The exported files (export.json's artifacts, every part of a VAE, and
    an ONNX model's external data) and the documents a user deploys with."""
    found: list[Path] = []
    raw = rundir.read_json(folder / "export.json")
    if raw:
        for artifact in ExportReport.model_validate(raw).artifacts:
            if artifact.path:
                found += [p for p in (folder / artifact.path, folder / f"{artifact.path}.data") if p.is_file()]
    found += [folder / name for name in EXPORT_NAMES + DOCUMENTS if (folder / name).is_file()]
    unique: dict[Path, None] = dict.fromkeys(p.resolve() for p in found)
    return list(unique)


def evidence_digest(folder: Path) -> str:
    """sha256 over the evidence the production-ready gate judged (the job's
    evidence.json, the test evaluation, the export report), by name."""
    digest = hashlib.sha256()
    for name in EVIDENCE:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()


def version_tags(folder: Path, pipeline: str, namespace: str | None, run_id: str) -> dict[str, str]:
    """pipeline, runId (the idempotency key), namespace, the test metrics,
    and the evidence digest."""
    tags = {"pipeline": pipeline, "runId": run_id, "evidenceDigest": evidence_digest(folder)}
    if namespace:
        tags["namespace"] = namespace
    raw = rundir.read_json(folder / "test_evaluation.json")
    if raw:
        test = TestEvaluation.model_validate(raw)
        for name, value in sorted(test.metrics.items()):
            if value is not None:
                tags[name] = f"{value:.6g}"
    return tags


def description(folder: Path) -> str:
    """The deployment guide and the test results (cut to MLflow's limit; the
    whole documents are the version's files under model/)."""
    parts = [text for text in (rundir.read_text(folder / "deployment_guide.md"),
                               rundir.read_text(folder / "test_results.md")) if text]
    text = "\n\n".join(parts)
    if len(text) > DESCRIPTION_LIMIT:
        note = "\n\n(cut to MLflow's limit: the whole documents are under model/ in the version's files)"
        text = text[:DESCRIPTION_LIMIT - len(note)] + note
    return text


def register_candidate(client: MlflowRest, name: str, run: str, folder: Path, *, pipeline: str,
                       namespace: str | None, run_id: str) -> str:
    """Log the model files to ``run`` under model/ and register them as a
    version of ``name`` with alias candidate (once per pipeline run).
    Returns the version."""
    key = {"pipeline": pipeline, "runId": run_id}
    client.ensure_registered_model(name, f"trained by trainpipe pipeline {pipeline}")
    version = client.find_model_version(name, key)
    if version is None:
        for path in model_files(folder):
            client.log_artifact(run, path, MODEL_PATH)
        version = client.create_model_version(name, f"runs:/{run}/{MODEL_PATH}", run,
                                              version_tags(folder, pipeline, namespace, run_id), description(folder))
    client.set_alias(name, "candidate", version)
    return version


def promote_champion(client: MlflowRest, name: str, version: str, approver: str | None) -> None:
    """Alias champion -> ``version``; the approver on it when there was one."""
    client.set_alias(name, "champion", version)
    if approver:
        client.set_model_version_tag(name, version, "approved_by", approver)


def approver(run_dir: Path, status: PipelineStatus) -> str | None:
    """Who approved this run: the operator's verified approval, else
    ``trainpipe approve``'s approval.json (for this run id only)."""
    if status.approval is not None and status.approval.run_id == status.run_id:
        return status.approval.by
    data = rundir.read_json(run_dir / "approval.json")
    if isinstance(data, dict) and data.get("approved") and data.get("runId") == status.run_id and data.get("by"):
        return str(data["by"])
    return None


def wandb_artifact_name(name: str) -> str:
    """W&B's artifact name characters (letters, digits, '-', '_', '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "model"


def log_wandb_model(target: WandbJobTarget, folder: Path, name: str, aliases: list[str],
                    metadata: Mapping[str, Any]) -> list[str]:
    """The model files as a W&B ``model`` artifact of the finalization job's
    run (continued: the same run id), with ``aliases``. Logging the same files
    again with champion adds the alias to the same version (same digest).
    Offline runs are written under the folder's ``wandb/`` like the job's.
    Returns the aliases given."""
    from trainpipe_trainer.tracking.wandb_sink import init_run, log_model_artifact  # imports wandb

    run = init_run(target, folder, job_type="registry")
    try:
        log_model_artifact(run, {p.name: p for p in model_files(folder)}, aliases,
                           name=wandb_artifact_name(name), metadata=dict(metadata))
    finally:
        run.finish()
    return list(aliases)
