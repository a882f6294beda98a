"""Pydantic errors as one line per problem: the field path (camelCase, as the
user wrote it; list items as ``field[0]``), the value given, and what is
allowed."""

from __future__ import annotations

from pydantic import ValidationError

_VALUE_ERROR_PREFIX = "Value error, "


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def format_validation_error(exc: ValidationError, source: str) -> list[str]:
    lines = []
    for error in exc.errors():
        path = _path(error["loc"])
        kind = error["type"]
        message = error["msg"]
        if kind == "extra_forbidden":
            message = "unknown field (check the spelling; see the configuration reference)"
        elif kind == "missing":
            message = "required field is missing"
        elif kind in ("bool_parsing", "bool_type"):
            message = "expected a boolean: true or false"
        elif message.startswith(_VALUE_ERROR_PREFIX):
            # our own validators: their message already says what is allowed
            message = message[len(_VALUE_ERROR_PREFIX):]
        value = error.get("input")
        # a message of ours may already quote the string it rejects
        quoted = isinstance(value, str) and repr(value) in message
        shown = "" if kind == "missing" or quoted else f" (got {value!r})"
        lines.append(f"{source}: {path}: {message}{shown}")
    return lines
