"""Tasks: what differs between kinds of training (``base.Task``).

``resolve_task`` turns a job config's ``task`` into a Task object: a
built-in by name, or for ``task: custom`` the object ``customTask.entrypoint``
names (``module:object``), imported from the trainer image.
"""

from __future__ import annotations

import importlib

from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.tasks.base import EvaluatedModel, StepOutput, Task, TaskData

__all__ = ["EvaluatedModel", "StepOutput", "Task", "TaskData", "TaskLoadError", "builtin_tasks", "resolve_task"]


class TaskLoadError(ValueError):
    """``customTask.entrypoint`` does not name a usable Task."""


def builtin_tasks() -> dict[str, type[Task]]:
    from trainpipe_trainer.tasks.classification import ClassificationTask

    tasks: dict[str, type[Task]] = {"classification": ClassificationTask}
    try:
        from trainpipe_trainer.tasks.vae.task import VaeTask
    except ImportError:  # the audio libraries are missing: the vae task says so when asked for
        pass
    else:
        tasks["vae"] = VaeTask
    return tasks


def load_entrypoint(entrypoint: str) -> type[Task]:
    """The Task class ``module:object`` names.

    Raises:
        TaskLoadError: the module does not import, has no such object, or the
            object is not a Task subclass.
    """
    module_name, _, attr = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise TaskLoadError(
            f"customTask.entrypoint {entrypoint!r}: module {module_name!r} does not import "
            f"({type(exc).__name__}: {exc}); install it in the trainer image (or on PYTHONPATH)"
        ) from exc
    obj = getattr(module, attr, None)
    if obj is None:
        raise TaskLoadError(f"customTask.entrypoint {entrypoint!r}: module {module_name!r} has no {attr!r}")
    if not (isinstance(obj, type) and issubclass(obj, Task)):
        raise TaskLoadError(
            f"customTask.entrypoint {entrypoint!r} is a {type(obj).__name__}, not a subclass of "
            "trainpipe_trainer.tasks.Task"
        )
    return obj


def resolve_task(config: JobConfig) -> Task:
    """The task object for ``config``.

    Raises:
        TaskLoadError: a custom entrypoint cannot be loaded, or the built-in
            task's libraries are missing.
    """
    if config.task == "custom":
        assert config.custom_task is not None  # the job config's own validator
        return load_entrypoint(config.custom_task.entrypoint)(config)
    tasks = builtin_tasks()
    if config.task not in tasks:
        raise TaskLoadError(
            f"task {config.task!r} is not available in this trainer image "
            f"(available: {', '.join(sorted(tasks))}); the vae task needs soundfile and librosa "
            "(pip install 'trainpipe[trainer]')"
        )
    return tasks[config.task](config)
