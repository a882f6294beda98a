"""``--set PATH=VALUE``: Helm-style overrides of a manifest's ``spec``.

``--set baseline.lr=0.01 --set model.name=resnet50 --set data.augment=[hflip,crop]``:
the path is dotted camelCase field names under ``spec`` (the names the
manifest uses), the value is parsed as YAML (``0.01`` is a number, ``[a,b]``
a list, ``true`` a boolean, ``"42"`` a string). Each path is checked against
the spec models before anything is validated, so an unknown field is refused
naming the path and the fields that exist there; the overridden manifest is
then validated by the same models as the file, so a bad value is refused
naming its field and what is allowed. What the run records (``pipeline.yaml``
in the run directory) is the resolved spec, overrides applied.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from trainpipe_operator.spec.pipeline import PipelineSpec


class OverrideError(ValueError):
    """An override that cannot be applied; the message names the --set."""


@dataclass(frozen=True)
class Override:
    text: str
    path: tuple[str, ...]
    value: Any


def parse_override(text: str) -> Override:
    """``a.b=value`` -> Override(path=("a", "b"), value=<YAML of value>)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise OverrideError(f"--set {text!r}: expected PATH=VALUE under spec, e.g. --set baseline.lr=0.01")
    if key.startswith("spec."):
        key = key[len("spec."):]
    path = tuple(key.split("."))
    if any(not part for part in path):
        raise OverrideError(f"--set {text!r}: {key!r} has an empty field name; use dotted names like baseline.lr")
    if not raw.strip():
        raise OverrideError(f"--set {text!r}: no value after '='; give one (YAML: 0.01, true, [hflip, crop], 'text')")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise OverrideError(f"--set {text!r}: the value is not valid YAML: {exc}") from None
    return Override(text=text, path=path, value=value)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (through Optional/Union), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _is_mapping(annotation: Any) -> bool:
    """A free-form mapping (customTask.options): any key below it is the user's."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_mapping(arg) for arg in typing.get_args(annotation))
    return annotation is dict or origin is dict


def _field_names(model: type[BaseModel]) -> dict[str, str]:
    """camelCase alias (and the Python name) -> the alias the manifest uses."""
    names: dict[str, str] = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        names[alias] = alias
        names[name] = alias
    return names


def _resolve_path(override: Override) -> tuple[str, ...]:
    """The override's path in manifest (camelCase) names, every field checked."""
    model: type[BaseModel] | None = PipelineSpec
    resolved: list[str] = []
    for depth, part in enumerate(override.path):
        if model is None:
            where = "spec." + ".".join(resolved)
            raise OverrideError(f"--set {override.text}: {where} is a value, not a group of fields; "
                                f"set it whole: --set {'.'.join(resolved)}=VALUE")
        names = _field_names(model)
        if part not in names:
            where = "spec" + "".join(f".{p}" for p in resolved)
            allowed = ", ".join(sorted({info.alias or n for n, info in model.model_fields.items()}))
            raise OverrideError(f"--set {override.text}: {where} has no field {part!r}; allowed: {allowed}")
        alias = names[part]
        resolved.append(alias)
        annotation = model.model_fields[_python_name(model, alias)].annotation
        if _is_mapping(annotation):
            return tuple(resolved) + override.path[depth + 1:]
        model = _model_in(annotation)
    return tuple(resolved)


def _python_name(model: type[BaseModel], alias: str) -> str:
    return next(name for name, info in model.model_fields.items() if (info.alias or name) == alias)


def apply_overrides(document: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of the manifest with each ``--set`` applied to its spec, in order
    (a later one wins). Raises OverrideError naming the first bad one."""
    result = copy.deepcopy(document)
    spec = result.get("spec")
    if spec is None:
        spec = result["spec"] = {}
    if not isinstance(spec, dict):
        raise OverrideError("--set: the manifest's spec is not a mapping; fix the file first")
    for text in overrides:
        override = parse_override(text)
        path = _resolve_path(override)
        node = spec
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = "spec." + ".".join(path[:i + 1])
                raise OverrideError(f"--set {override.text}: the manifest's {where} is not a mapping "
                                    f"({child!r}); set {where} whole instead")
            node = child
        node[path[-1]] = override.value
    return result
