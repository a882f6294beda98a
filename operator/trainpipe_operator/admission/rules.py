"""What the CRD's schema cannot check, as pure rules the admission webhook
runs on every created or changed spec.

A rule is ``(spec: dict, namespace: str, settings) -> list[str]``: the raw
``spec`` as the API server holds it (camelCase, defaults already applied by
the server or not), the pipeline's namespace, and the operator's
``OperatorSettings``. Each message starts with the field path
(``spec.runtime.type: ...``) and says what is allowed. Adding a rule is one
line in ``RULES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from trainpipe_operator import tenancy
from trainpipe_operator.spec.pipeline import PipelineSpec
from trainpipe_operator.tasks import BUILTIN, custom_catalog
from trainpipe_trainer.contract.validation_errors import format_validation_error

Rule = Callable[[dict[str, Any], str, Any], list[str]]

# The metrics a target may name, per task: a built-in task's from its catalog
# (trainpipe_operator.tasks); a custom task's are the ones its spec declares
# (customTask.metrics), so its row is empty here. A new task adds its catalog.
TASK_METRICS: Mapping[str, tuple[str, ...]] = {
    **{task: catalog.targetable() for task, catalog in BUILTIN.items()},
    "custom": (),
}
OPERATOR_RUNTIMES = ("ray", "rayjob")


def _get(spec: Mapping[str, Any], *path: str, default: Any = None) -> Any:
    node: Any = spec
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def cross_field(spec: dict[str, Any], namespace: str, settings: Any) -> list[str]:
    """The spec models' own rules across fields (the split sums to 1,
    gpuUtilWarn <= gpuUtilMin, an accuracy target <= 1, a positive
    maxDuration): an API server without CEL cannot check them."""
    try:
        PipelineSpec.model_validate(spec)
    except ValidationError as exc:
        return ["spec." + line.removeprefix("-: ") for line in format_validation_error(exc, source="-")]
    return []


def target_metric_of_task(spec: dict[str, Any], namespace: str, settings: Any) -> list[str]:
    """A target names a metric its task reports (a custom task: one it
    declares); none named is the task's primary metric."""
    task = _get(spec, "task", default="classification")
    metric = _get(spec, "target", "metric")
    if task == "custom":
        try:
            produced: tuple[str, ...] | None = custom_catalog(_get(spec, "customTask", "metrics") or []).targetable()
        except (ValueError, KeyError, TypeError, AttributeError):
            return []  # a missing or malformed customTask: cross_field names it
    else:
        produced = TASK_METRICS.get(task)
    if produced is None:
        return [f"spec.task: {task!r} is not a task trainpipe runs; allowed: {', '.join(TASK_METRICS)}"]
    if metric is not None and metric not in produced:
        return [f"spec.target.metric: {metric!r} is not produced by task {task!r}; allowed: {', '.join(produced)}"]
    return []


def operator_runtime(spec: dict[str, Any], namespace: str, settings: Any) -> list[str]:
    runtime = _get(spec, "runtime", "type", default="local")
    if runtime in OPERATOR_RUNTIMES:
        return []
    return [f"spec.runtime.type: {runtime!r} runs with `trainpipe run` on one machine, not in the cluster; "
            "allowed here: 'ray' (Ray Job API) or 'rayjob' (KubeRay)"]


def ray_address_known(spec: dict[str, Any], namespace: str, settings: Any) -> list[str]:
    if _get(spec, "runtime", "type") != "ray" or _get(spec, "runtime", "ray", "address"):
        return []
    if getattr(settings, "ray_address", None):
        return []
    return ["spec.runtime.ray.address: empty, and the operator has no default Ray address "
            "(chart value operator.rayAddress); name the Ray Job API address (http://host:8265)"]


def ray_fields_only_for_ray(spec: dict[str, Any], namespace: str, settings: Any) -> list[str]:
    runtime = _get(spec, "runtime", "type")
    if runtime != "rayjob":
        return []
    return [f"spec.runtime.ray.{key}: only read when spec.runtime.type is 'ray'; a 'rayjob' pipeline runs on the "
            "RayJob's own cluster: remove it"
            for key in ("address", "tokenSecret") if _get(spec, "runtime", "ray", key)]


def tenancy_boundary(spec: dict[str, Any], namespace: str, settings: Any) -> list[str]:
    """Paths in the namespace's own folder, Ray addresses on the allow-list:
    the same pure rules the operator enforces at reconcile (``tenancy``)."""
    return tenancy.check_all(spec, namespace, settings.tenancy())


RULES: tuple[Rule, ...] = (
    cross_field,
    target_metric_of_task,
    operator_runtime,
    ray_address_known,
    ray_fields_only_for_ray,
    tenancy_boundary,
)


def check_spec(spec: dict[str, Any] | None, namespace: str, settings: Any,
               rules: tuple[Rule, ...] = RULES) -> list[str]:
    """Every rule's messages, in rule order (empty: admitted)."""
    return [message for rule in rules for message in rule(dict(spec or {}), namespace, settings)]
