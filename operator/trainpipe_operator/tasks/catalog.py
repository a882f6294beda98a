"""A task's catalog: its metrics (names, directions, kinds), the metric a
target defaults to, its models and augmentations, its built-in datasets.

``catalog_for(spec)`` is the one way the control plane asks "what does this
pipeline's task measure, and which way is better": the built-in tasks'
catalogs are fixed (``tasks/builtin.py``), a ``custom`` task's is built from
the metrics its spec declares (``spec.customTask.metrics``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from trainpipe_operator.tasks.metrics import Metric

# The metrics the engine itself reports for every task (EpochRecord.val_loss,
# TestEvaluation.loss): a custom task that does not declare them still has them.
ENGINE_METRICS: tuple[Metric, ...] = (
    Metric("val_loss", "min", "loss", "the task's validation loss (what the engine minimizes)", "val"),
    Metric("test_loss", "min", "loss", "the task's loss on the held-out test split", "test"),
)


class UnknownMetric(KeyError):
    """A metric name the task does not report."""

    def __str__(self) -> str:  # KeyError quotes its argument; this is a sentence
        return str(self.args[0]) if self.args else ""


def quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


@dataclass(frozen=True)
class TaskCatalog:
    """What the control plane knows of one task.

    ``models`` None: any non-empty name (a custom task reads it);
    ``augmentations`` None: any name (a custom task checks its own);
    ``datasets``: the ``builtin:<name>`` sources the task reads (None: any).
    ``model_ladder``: the built-in models by capacity, smallest first, for
    recommendations that grow or shrink the model (empty: none).
    """

    task: str
    metrics: tuple[Metric, ...]
    primary: str
    default_model: str
    models: tuple[str, ...] | None
    model_ladder: tuple[str, ...] = ()
    augmentations: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.task}: a metric is listed twice in {names}")
        if self.primary not in names:
            raise ValueError(f"task {self.task}: primary metric {self.primary!r} is not one of {names}")

    # -------------------------------------------------------------- metrics
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def get(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    def metric(self, name: str) -> Metric:
        """The metric called ``name``.

        Raises:
            UnknownMetric: the task does not report it (the message lists what it does).
        """
        found = self.get(name)
        if found is None:
            raise UnknownMetric(f"{name!r} is not a metric of task {self.task}; it reports: {quoted(self.names())}")
        return found

    def targetable(self) -> tuple[str, ...]:
        """The metrics a target may name, in catalog order."""
        return tuple(m.name for m in self.metrics if m.targetable)

    @property
    def primary_metric(self) -> Metric:
        return self.metric(self.primary)

    def of_split(self, split: str) -> tuple[Metric, ...]:
        return tuple(m for m in self.metrics if m.split == split)

    def is_better(self, name: str, a: float | None, b: float | None) -> bool:
        """``a`` is strictly better than ``b`` in metric ``name``'s direction."""
        return self.metric(name).is_better(a, b)

    def met(self, name: str, value: float | None, target: float) -> bool:
        return self.metric(name).met(value, target)

    def tracked(self, name: str) -> Metric:
        """What stands for ``name`` before Finalization: the held-out test
        split is evaluated once (seed 001), so a ``test_X`` target is tracked
        through its validation counterpart ``val_X``."""
        metric = self.metric(name)
        if metric.split == "test":
            proxy = self.get("val_" + name.removeprefix("test_"))
            if proxy is not None:
                return proxy
        return metric

    def on_test(self, name: str) -> Metric | None:
        """The test-split metric a target is judged on in Finalization:
        ``test_X`` itself, or the ``test_X`` of a ``val_X`` target (None: the
        task reports no such test metric)."""
        metric = self.metric(name)
        if metric.split == "test":
            return metric
        return self.get("test_" + name.removeprefix("val_"))

    # --------------------------------------------------------------- models
    def allows_model(self, name: str) -> bool:
        return bool(name) and (self.models is None or name in self.models)

    def bigger_model(self, name: str) -> str | None:
        ladder = self.model_ladder
        i = ladder.index(name) if name in ladder else -1
        return ladder[i + 1] if 0 <= i < len(ladder) - 1 else None

    def smaller_model(self, name: str) -> str | None:
        ladder = self.model_ladder
        i = ladder.index(name) if name in ladder else 0
        return ladder[i - 1] if i > 0 else None

    def is_largest_model(self, name: str) -> bool:
        return bool(self.model_ladder) and name == self.model_ladder[-1]

    def is_smallest_model(self, name: str) -> bool:
        return bool(self.model_ladder) and name == self.model_ladder[0]

    def allows_augmentation(self, name: str) -> bool:
        return self.augmentations is None or name in self.augmentations

    def allows_dataset(self, source: str) -> bool:
        """A ``builtin:`` source must be one of the task's; a path is the task's to read."""
        if not source.startswith("builtin:") or self.datasets is None:
            return True
        return source in self.datasets

    def describe(self) -> dict[str, Any]:
        """The catalog as plain data (for reports and status)."""
        return {
            "task": self.task,
            "primary": self.primary,
            "metrics": [
                {"name": m.name, "direction": m.direction, "kind": m.kind, "split": m.split,
                 "targetable": m.targetable, "description": m.description}
                for m in self.metrics
            ],
        }
