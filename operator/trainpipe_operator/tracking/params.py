"""The pipeline run's params: the resolved spec flattened with dots
(``spec.baseline.lr``), and the spec's hash (what the run directory pins)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from trainpipe_operator.spec.pipeline import PipelineSpec


def flatten(data: Any, prefix: str) -> dict[str, str]:
    """Nested mappings -> ``{"a.b.c": "value"}``; a list is one value (JSON),
    so ``spec.data.augment`` reads ``["hflip", "crop"]``."""
    if isinstance(data, dict):
        if not data:
            return {prefix: "{}"}
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}"))
        return out
    if isinstance(data, (list, tuple)):
        return {prefix: json.dumps(data, default=str)}
    if isinstance(data, bool):
        return {prefix: "true" if data else "false"}
    return {prefix: "null" if data is None else str(data)}


def spec_hash(spec: PipelineSpec) -> str:
    """16 hex digits of the resolved spec (camelCase, no unset optionals)."""
    blob = json.dumps(spec.dump(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def spec_params(spec: PipelineSpec) -> dict[str, str]:
    """The parent run's params: every resolved spec field, and ``spec_hash``.
    The spec holds no credential (a tracking URI with user information is
    refused by the spec model)."""
    return {**flatten(spec.dump(), "spec"), "spec_hash": spec_hash(spec)}
