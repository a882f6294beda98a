"""A ``custom`` task's catalog, built from the metrics its spec declares
(``spec.customTask.metrics``): the control plane cannot ask the task (it
lives in the trainer image, behind torch), so the spec says what it reports
and which way is better."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trainpipe_operator.tasks.builtin import CUSTOM_DEFAULT_MODEL
from trainpipe_operator.tasks.catalog import ENGINE_METRICS, TaskCatalog
from trainpipe_operator.tasks.metrics import Metric

DIRECTIONS = {"maximize": "max", "minimize": "min", "max": "max", "min": "min"}


def declared_metric(name: str, direction: str, kind: str | None = None, description: str | None = None) -> Metric:
    """One declared metric; ``direction`` is the spec's word (maximize | minimize)."""
    split = "test" if name.startswith("test_") else "val"
    return Metric(
        name=name,
        direction=DIRECTIONS[direction],  # type: ignore[arg-type]
        kind=(kind or "value"),  # type: ignore[arg-type]
        description=description or f"declared by the custom task ({direction})",
        split=split,  # type: ignore[arg-type]
    )


def custom_catalog(metrics: Iterable[Any]) -> TaskCatalog:
    """From declared metrics (objects or mappings with ``name``, ``direction``
    and an optional ``kind``). The primary metric, a target's default, is the
    first declared ``val_`` metric; the engine's ``val_loss`` and
    ``test_loss`` are added when not declared.

    Raises:
        ValueError: no metric, a name twice, or no ``val_`` metric.
    """
    declared = []
    for m in metrics:
        fields = m if isinstance(m, dict) else {k: getattr(m, k, None) for k in ("name", "direction", "kind")}
        declared.append(declared_metric(str(fields["name"]), str(fields["direction"]), fields.get("kind")))
    if not declared:
        raise ValueError("a custom task declares at least one metric")
    names = [m.name for m in declared]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"metric(s) declared twice: {', '.join(twice)}")
    primary = next((m.name for m in declared if m.split == "val"), None)
    if primary is None:
        raise ValueError(
            f"no val_ metric among {', '.join(names)}: the pipeline compares runs on the validation split "
            "before the test split is touched, so declare at least one val_ metric"
        )
    extra = tuple(m for m in ENGINE_METRICS if m.name not in names)
    return TaskCatalog(
        task="custom",
        metrics=(*declared, *extra),
        primary=primary,
        default_model=CUSTOM_DEFAULT_MODEL,
        models=None,
        augmentations=None,
        datasets=None,
    )
