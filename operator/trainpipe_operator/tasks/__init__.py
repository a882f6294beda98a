"""What each task measures, as pure data: metric names, directions and
kinds, the target's default metric, the task's models, augmentations and
built-in datasets. The control plane learns a task's metrics from the spec
(``spec.task``, ``spec.customTask.metrics``), never from torch.

- :class:`Metric`: one metric (``direction`` max | min, ``kind``, ``split``)
- :class:`TaskCatalog`: a task's metrics and models (``metric``,
  ``targetable``, ``primary``, ``is_better``, ``met``, ``tracked``, ``on_test``)
- :func:`catalog_for`: the catalog of a pipeline spec's task
"""

from trainpipe_operator.tasks.builtin import (
    BUILTIN,
    CLASSIFICATION,
    CLASSIFICATION_MODELS,
    CUSTOM_DEFAULT_MODEL,
    VAE,
    VAE_MODELS,
)
from trainpipe_operator.tasks.catalog import ENGINE_METRICS, TaskCatalog, UnknownMetric, quoted
from trainpipe_operator.tasks.custom import custom_catalog, declared_metric
from trainpipe_operator.tasks.lookup import catalog_for, catalog_for_task
from trainpipe_operator.tasks.metrics import KINDS, METRIC_NAME_PATTERN, Metric

__all__ = [
    "BUILTIN",
    "CLASSIFICATION",
    "CLASSIFICATION_MODELS",
    "CUSTOM_DEFAULT_MODEL",
    "ENGINE_METRICS",
    "KINDS",
    "METRIC_NAME_PATTERN",
    "VAE",
    "VAE_MODELS",
    "Metric",
    "TaskCatalog",
    "UnknownMetric",
    "catalog_for",
    "catalog_for_task",
    "custom_catalog",
    "declared_metric",
    "quoted",
]
