"""Validate a RayJob dict against KubeRay's own CRD schema.

The ``v1`` version's ``openAPIV3Schema`` from ``ray.io_rayjobs.yaml`` is
turned into a JSON schema and checked with ``jsonschema`` (a dev
dependency, imported only when a validation runs). The translation:

* ``nullable: true`` -> the type also admits ``null``;
* ``x-kubernetes-int-or-string: true`` -> an integer or a string (the
  ``anyOf`` KubeRay's schema already carries, or one added);
* other ``x-kubernetes-*`` keys (CEL ``x-kubernetes-validations``, list and
  map types) and ``default`` are dropped: a JSON-schema validator cannot
  evaluate CEL, and defaults are the API server's business;
* an object schema with ``properties`` and no ``additionalProperties`` gets
  ``additionalProperties: false``: the API server prunes (or, with strict
  field validation, rejects) an unknown field, so a misspelt field is a
  problem here rather than a silently dropped setting;
* ``format: int32`` / ``int64`` are range-checked; other formats are not;
* ``metadata`` (just ``type: object`` in the CRD: the API server checks it)
  gets a small ObjectMeta schema: name, namespace, string maps for labels
  and annotations, owner references with their required fields.

Where the CRDs live: ``$TRAINPIPE_KUBERAY_CRDS`` (the directory, or the
``ray.io_rayjobs.yaml`` file itself), else ``../shared/kuberay-crds/``
relative to the repository root.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

CRD_ENV = "TRAINPIPE_KUBERAY_CRDS"
RAYJOB_CRD_FILE = "ray.io_rayjobs.yaml"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CRD_DIR = REPO_ROOT.parent / "shared" / "kuberay-crds"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["apiVersion", "kind", "name", "uid"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "name": {"type": "string"},
                    "uid": {"type": "string"},
                    "controller": {"type": "boolean"},
                    "blockOwnerDeletion": {"type": "boolean"},
                },
                "additionalProperties": False,
            },
        },
    },
    # uid, resourceVersion, managedFields ... on objects read back from the API
    "additionalProperties": True,
}

_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def kuberay_crd_path() -> Path | None:
    """``ray.io_rayjobs.yaml``, or None when it is not where it is looked for."""
    configured = os.environ.get(CRD_ENV)
    base = Path(configured) if configured else DEFAULT_CRD_DIR
    path = base if base.suffix in (".yaml", ".yml") else base / RAYJOB_CRD_FILE
    return path if path.is_file() else None


def crd_missing_reason() -> str:
    """Why ``kuberay_crd_path()`` is None, for a test's skip message."""
    configured = os.environ.get(CRD_ENV)
    where = f"${CRD_ENV}={configured}" if configured else str(DEFAULT_CRD_DIR / RAYJOB_CRD_FILE)
    return (
        f"KubeRay's RayJob CRD ({RAYJOB_CRD_FILE}) not found at {where}; "
        f"set {CRD_ENV} to the directory of KubeRay's ray-operator/config/crd/bases/"
    )


def to_json_schema(node: Any) -> Any:
    """An OpenAPI v3 (Kubernetes structural) schema -> a JSON schema."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in (
            "nullable",
            "default",
            "description",
            "example",
        ):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = to_json_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=4)
def _validator(path: str) -> Any:
    import jsonschema
    import yaml

    # libyaml where present: 25k lines of CRD in a fraction of the time
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as handle:
        crd = yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader
    versions = {v.get("name"): v for v in crd.get("spec", {}).get("versions", [])}
    if "v1" not in versions:
        raise ValueError(f"{path}: no v1 version in the CRD (found {sorted(versions)})")
    schema = to_json_schema(versions["v1"]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = OBJECT_META_SCHEMA
    checker = jsonschema.FormatChecker(formats=())
    for name, (low, high) in _INT_RANGES.items():
        checker.checks(name)(functools.partial(_in_range, low=low, high=high))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=checker)


def _in_range(value: Any, low: int, high: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        return True  # the type check reports a non-integer
    return low <= value <= high


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


@functools.cache
def _crd_kind(path: str) -> str:
    import yaml

    return str(yaml.safe_load(Path(path).read_text(encoding="utf-8"))["spec"]["names"]["kind"])


def validate_against_kuberay(obj: dict, crd_path: str | Path | None = None) -> list[str]:
    """Problems with ``obj`` as a ``ray.io/v1`` RayJob (or, given
    ``ray.io_rayclusters.yaml``, a RayCluster), each ``path: message``
    (``spec.rayClusterSpec.workerGroupSpecs[0].replicas: 'two' is not of type
    'integer'``); an empty list: it validates.

    Raises:
        FileNotFoundError: the CRD is not found (see ``crd_missing_reason``).
    """
    path = Path(crd_path) if crd_path else kuberay_crd_path()
    if path is None or not path.is_file():
        raise FileNotFoundError(
            crd_missing_reason() if crd_path is None else f"{crd_path}: not a file"
        )
    problems: list[str] = []
    if obj.get("apiVersion") != "ray.io/v1":
        problems.append(f"apiVersion: expected 'ray.io/v1', got {obj.get('apiVersion')!r}")
    kind = _crd_kind(str(path.resolve()))
    if obj.get("kind") != kind:
        problems.append(f"kind: expected {kind!r}, got {obj.get('kind')!r}")
    validator = _validator(str(path.resolve()))
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    problems.extend(f"{_path(e.absolute_path)}: {e.message}" for e in errors)
    return problems
