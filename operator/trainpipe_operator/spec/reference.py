"""The manifest reference table, rendered from the spec models: the README
carries this exact text (a test compares), so the documentation cannot
drift from the fields the code accepts."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from trainpipe_operator.spec.pipeline import PipelineSpec


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return _type_name(rest[0]) + " or null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.validate_default and field.default is None:
        return "(required)"  # a null default a validator refuses (spec.data.source)
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, BaseModel) else f"`{value}`"
    if field.default is PydanticUndefined:
        return "(required)"
    return "null" if field.default is None else f"`{field.default}`"


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _section(annotation: Any) -> tuple[type[BaseModel], str, str] | None:
    """(model, path suffix, type shown) of a section that is a model inside
    ``M | None`` or ``list[M]``: its fields get their own rows."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (list, tuple) and args and _is_model(args[0]):
        return args[0], "[]", "list of objects"
    if type(None) in typing.get_args(annotation) and len(args) == 1 and _is_model(args[0]):
        return args[0], "", "object or null"
    return None


def rows(model: type[BaseModel] = PipelineSpec, prefix: str = "spec.") -> list[tuple[str, str, str, str]]:
    out = []
    for name, field in model.model_fields.items():
        path = prefix + (field.alias or name)
        annotation = field.annotation
        section = _section(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += rows(annotation, path + ".")
        elif section is not None:
            nested, suffix, shown = section
            out.append((path, shown, _default(field), field.description or ""))
            out += rows(nested, path + suffix + ".")
        else:
            if field.validate_default and field.default is None:  # required: null is refused
                annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
            out.append((path, _type_name(annotation), _default(field), field.description or ""))
    return out


def markdown_table() -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{p}` | {t} | {d} | {m} |" for p, t, d, m in rows()]
    return "\n".join(lines)
