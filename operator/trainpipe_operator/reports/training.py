"""``baseline_results.md`` (and the same shape for optimization and final
training runs): Configuration, Final Metrics, Training Profile, Checkpoints,
Learning Curves, Decision, Environment — the sections the post-baseline
gate asks for. The metrics are the task's, by name (its catalog): a
classifier's accuracies, a VAE's reconstruction and KL, a custom task's
declared metrics."""

from __future__ import annotations

import statistics
from typing import Any

import yaml

from trainpipe_operator.reports import vae
from trainpipe_operator.reports.markdown import fmt, seconds, table
from trainpipe_operator.tasks import CLASSIFICATION, TaskCatalog
from trainpipe_trainer.contract.evidence import EpochRecord, Evidence

SECTIONS = (
    "Configuration", "Final Metrics", "Training Profile", "Checkpoints",
    "Learning Curves", "Decision", "Environment",
)


def _task_rows(catalog: TaskCatalog, epochs: list[EpochRecord]) -> list[tuple[str, str]]:
    """(label, metric name) of the task's per-epoch metrics: each validation
    metric, preceded by its train counterpart where the epochs report one."""
    if catalog.task == "classification":
        return [("train accuracy", "train_acc"), ("val accuracy", "val_acc"), ("val top-5", "val_top5")]
    rows = []
    for metric in catalog.of_split("val"):
        if metric.name == "val_loss":
            continue
        train = "train_" + metric.name.removeprefix("val_")
        if any(e.metric(train) is not None for e in epochs):
            rows.append((train, train))
        rows.append((metric.name, metric.name))
    return rows


def render_training_results(
    title: str, evidence: Evidence, job_config: dict[str, Any], decision: tuple[str, str] | None,
    catalog: TaskCatalog = CLASSIFICATION,
) -> str:
    is_vae = catalog.task == "vae"  # the ELBO's terms instead of accuracy, and the previews
    last = evidence.epochs[-1] if evidence.epochs else None
    best = next((e for e in evidence.epochs if e.num == evidence.best_epoch), None)
    task_rows = _task_rows(catalog, evidence.epochs)
    keys = {"classification": ("seed", "data", "model", "train", "resources"),
            "vae": ("seed", "task", "vae", "data", "model", "train", "resources")}.get(
        catalog.task, ("seed", "task", "customTask", "data", "model", "train", "resources"))
    config_yaml = yaml.safe_dump({k: job_config[k] for k in keys if k in job_config}, sort_keys=False)
    lines = [f"# {title}", "", f"Status: **{evidence.status}** ({evidence.reason})", ""]

    lines += ["## Configuration", "", "```yaml", config_yaml.rstrip(), "```", ""]

    lines += ["## Final Metrics", ""]
    if last is None:
        lines += ["No epoch completed.", ""]
    else:
        rows: list[tuple[object, ...]] = vae.final_metric_rows(last, best) if is_vae else [
            ("train loss", last.train_loss, best.train_loss if best else None),
            ("val loss", last.val_loss, best.val_loss if best else None),
            *((label, last.metric(name), best.metric(name) if best else None) for label, name in task_rows),
            ("train-val loss gap", last.loss_gap, best.loss_gap if best else None),
        ]
        lines += [table(["metric", f"final (epoch {last.num})", f"best (epoch {evidence.best_epoch})"], rows), ""]
        if evidence.initial_train_loss and evidence.final_train_loss is not None:
            drop = (evidence.initial_train_loss - evidence.final_train_loss) / evidence.initial_train_loss
            lines += [f"Train loss {fmt(evidence.initial_train_loss)} -> {fmt(evidence.final_train_loss)} "
                      f"({fmt(100 * drop, 3)}% decrease).", ""]

    times = evidence.timings.epoch_seconds
    lines += ["## Training Profile", ""]
    profile = [
        ("epochs", f"{len(evidence.epochs)} of {evidence.epochs_planned}"),
        ("total time", seconds(evidence.timings.total_seconds)),
        ("median epoch time", seconds(statistics.median(times)) if times else "n/a"),
        ("throughput (last epoch)", f"{fmt(last.samples_per_second, 5)} samples/s" if last else "n/a"),
        ("skipped steps (non-finite)", evidence.skipped_steps_total),
        ("workers", evidence.world_size),
        ("GPU utilization (mean)", f"{fmt(evidence.gpu_util_mean, 3)}%" if evidence.gpu_util_mean is not None else "n/a (no GPU)"),
        ("resumed from", f"epoch {evidence.resumed_from_epoch}, step {evidence.resumed_from_step}" if evidence.resumed_from_epoch is not None else "no resume"),
    ]
    lines += [table(["", ""], profile), ""]
    if evidence.epochs and is_vae:
        lines += [table(vae.EPOCH_HEADERS, vae.epoch_rows(evidence)), ""]
    elif evidence.epochs:
        if catalog.task == "classification":
            columns = [("train acc", "train_acc"), ("val acc", "val_acc")]
        else:
            columns = task_rows
        per_epoch = [(e.num, e.train_loss, e.val_loss, *(e.metric(name) for _, name in columns), e.lr,
                      e.epoch_seconds, e.skipped_steps) for e in evidence.epochs]
        headers = ["epoch", "train loss", "val loss", *(label for label, _ in columns), "lr", "seconds", "skipped"]
        lines += [table(headers, per_epoch), ""]

    lines += ["## Checkpoints", ""]
    rows = [(name, c.path, c.exists, c.loads, c.epoch, c.val_loss, c.error or "") for name, c in evidence.checkpoints.items()]
    lines += [table(["checkpoint", "path", "exists", "loads", "epoch", "val loss", "error"], rows), ""]
    if evidence.periodic_checkpoints:
        lines += ["Periodic: " + ", ".join(f"`checkpoints/{p}`" for p in evidence.periodic_checkpoints), ""]

    lines += ["## Learning Curves", "", "![learning curves](learning_curves.png)", "",
              "Per-epoch numbers: `logs/metrics.json`; the full log: `logs/training.log`.", ""]
    if is_vae:
        lines += vae.preview_lines(evidence.previews)

    lines += ["## Decision", ""]
    lines += [f"**{decision[0]}**: {decision[1]}" if decision else "No decision yet.", ""]

    env = evidence.environment
    lines += ["## Environment", ""]
    env_rows = [
        ("python", env.get("python_version")), ("torch", env.get("torch_version")),
        ("CUDA", env.get("cuda_version")), ("cuDNN", env.get("cudnn_version")),
        ("GPUs", ", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"),
        ("Ray", env.get("ray_version")), ("CPUs", env.get("cpu_count")), ("host", env.get("hostname")),
        ("code", (env.get("code_version") or {}).get("git_commit") or (env.get("code_version") or {}).get("package_version")),
        ("seeds", env.get("seeds")),
    ]
    lines += [table(["", ""], env_rows), "", "Full record: `environment.json`.", ""]
    if evidence.exception:
        lines += ["## Failure", "", f"`{evidence.exception.type}`: {evidence.exception.message}", ""]
    return "\n".join(lines)
