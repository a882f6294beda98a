"""``catalog_for(spec)``: the catalog of a pipeline's task."""

from __future__ import annotations

from typing import Any

from trainpipe_operator.tasks.builtin import BUILTIN
from trainpipe_operator.tasks.catalog import TaskCatalog
from trainpipe_operator.tasks.custom import custom_catalog
from trainpipe_trainer.contract.job_config import TASKS


def catalog_for_task(task: str, custom_metrics: Any = None) -> TaskCatalog:
    """A task's catalog by name; ``custom`` needs the declared metrics.

    Raises:
        ValueError: an unknown task, or ``custom`` without metrics.
    """
    if task in BUILTIN:
        return BUILTIN[task]
    if task == "custom":
        if not custom_metrics:
            raise ValueError("task custom: its metrics come from spec.customTask.metrics, and none are declared")
        return custom_catalog(custom_metrics)
    raise ValueError(f"{task!r} is not a task trainpipe runs; allowed: {', '.join(TASKS)}")


def catalog_for(spec: Any) -> TaskCatalog:
    """The catalog of ``spec``'s task (a ``PipelineSpec``; anything with
    ``task`` and, for ``custom``, ``custom_task.metrics``)."""
    task = getattr(spec, "task", "classification")
    custom = getattr(spec, "custom_task", None)
    return catalog_for_task(task, getattr(custom, "metrics", None) if custom is not None else None)
