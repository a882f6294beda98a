"""Pydantic errors as one line per problem: the field path (camelCase, as the
user wrote it), the value given, and what is allowed."""

from __future__ import annotations

from pydantic import ValidationError


def format_validation_error(exc: ValidationError, source: str) -> list[str]:
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see the configuration reference)"
        elif error["type"] == "missing":
            message = "required field is missing"
        value = error.get("input")
        shown = "" if error["type"] in ("missing",) else f" (got {value!r})"
        lines.append(f"{source}: {path}: {message}{shown}")
    return lines
