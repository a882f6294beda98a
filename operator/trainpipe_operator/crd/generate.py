"""The ``TrainingPipeline`` CustomResourceDefinition, generated from the
pydantic models (``spec/pipeline.py``, ``spec/status.py``): one source of
truth, so the CRD cannot drift from what ``trainpipe validate``, ``trainpipe
run`` and the operator accept. ``trainpipe crd --write`` writes it to
``crds/trainingpipelines.trainpipe.io.yaml``; a unit test fails when that
file differs from :func:`render_crd_yaml`.

The pydantic JSON schema (draft 2020-12) becomes a Kubernetes *structural*
OpenAPI v3 schema (the API server the tests use is v1.20: no CEL rules):

* every ``$ref`` / ``$defs`` is inlined;
* ``anyOf: [X, {type: null}]`` becomes X with ``nullable: true``; a null
  default is dropped (absent and null mean the same to the models);
* a union of scalars that is not ``X | None`` (``CheckStatus.value`` and
  ``threshold``) becomes ``x-kubernetes-preserve-unknown-fields: true`` with
  no type, the one untyped field structural schemas allow;
* numeric ``exclusiveMinimum: n`` becomes ``minimum: n, exclusiveMinimum:
  true`` (OpenAPI 3.0's boolean form), the same for maximum; ``const``
  becomes a one-value ``enum``; ``title`` is dropped;
* ``additionalProperties: false`` is dropped (structural schemas forbid it
  next to ``properties``); ``dict[str, X]`` keeps ``additionalProperties: X``;
* a field with a ``default_factory`` gets the factory's value as its
  ``default``: ``{}`` for a nested model (the API server then applies the
  nested fields' own defaults), the list for a list. So the stored object
  shows every value the operator will use, and ``kubectl get`` shows the
  target even when the manifest leaves it out;
* a string whose default is empty (``message: str = ""``) is ``nullable``
  with no default. The v1.20 API server the tests build from source (with a
  current Go) validates ``""`` as if it were null (its go-openapi type check
  compares against the type's zero value, which newer Go runtimes share for
  empty strings): without ``nullable`` it rejects the CRD's ``default: ""``
  and every status the operator writes with ``message: ""``. The models
  fill in ``""`` when the field is absent;
* ``metadata`` is ``{type: object}`` (structural schemas may say nothing else
  about it; Kubernetes validates names itself).

What the schema cannot say, and where it is enforced instead:

* Unknown fields. The API server prunes them silently (v1.20 has no strict
  field validation), so a typo like ``spec.baseline.epoch`` would vanish.
  kubectl's client-side validation against the published schema catches
  it (unless ``--validate=false``; other clients skip it), and
  ``trainpipe validate`` and the operator validate the whole object with
  the pydantic models (``extra="forbid"``): the operator sets the pipeline
  Failed with the field named.
* Rules across fields (model validators): the split sums to 1,
  ``gates.gpuUtilWarn <= gates.gpuUtilMin``, an accuracy target is at most 1,
  and ``budget.maxDuration`` is positive (the pattern admits ``""`` and
  ``0s``). Also the stricter name rule (a DNS-1123 label, 63 characters,
  no dots; Kubernetes itself admits a DNS subdomain). Enforced by the same
  pydantic validation: ``trainpipe validate`` exits 2, the operator sets
  Failed with the message.

The Gate printer column is ``.status.lastGate``: the last gate evaluated
and its result (``baseline: passed``), written with every gate. The target
is shown by name, whatever the task: TargetMetric (``.status.metrics.
targetMetric``: val_acc, the VAE's val_recon, a custom task's), Metric (its
best value so far) and Target (``.spec.target.value``). The last decision's
reason (``.status.message``) is the Message column, shown with ``-o wide``.

``spec.model.name``, ``spec.data.augment`` and ``spec.target.metric`` are
plain strings here: which names are valid depends on ``spec.task`` (its
catalog), a rule across fields the models check; so is ``spec.data.source``
being required (the schema cannot require it and still default ``spec`` to
``{}``; the models refuse it missing, naming the field).
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from trainpipe_operator.spec.pipeline import API_GROUP, KIND, TrainingPipeline

VERSION = "v1alpha1"
PLURAL = "trainingpipelines"
SINGULAR = "trainingpipeline"
SHORT_NAMES = ["tp"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"
CRD_FILE = f"crds/{CRD_NAME}.yaml"

ROOT_DESCRIPTION = (
    "TrainingPipeline: a gated training pipeline (Planning, Baseline, Diagnostics, "
    "Optimization, Finalization), run by the trainpipe operator."
)
UNION_DESCRIPTION = "a string, number or boolean"

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "the pipeline's phase"},
    {"name": "Gate", "type": "string", "jsonPath": ".status.lastGate",
     "description": "the last gate evaluated and its result (e.g. baseline: passed)"},
    {"name": "TargetMetric", "type": "string", "jsonPath": ".status.metrics.targetMetric",
     "description": "the target's metric, by name (val_acc, val_recon, a custom task's)"},
    {"name": "Metric", "type": "number", "jsonPath": ".status.metrics.bestTargetMetric",
     "description": "the best value of the target metric so far"},
    {"name": "Target", "type": "number", "jsonPath": ".spec.target.value",
     "description": "the target metric's production-ready value"},
    {"name": "Iteration", "type": "integer", "jsonPath": ".status.iteration",
     "description": "optimization iterations done"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary",
     "description": "the running job's phase and epochs done of its epochs (e.g. Baseline 12/20)"},
    {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta",
     "description": "the time the pipeline may still need, an upper bound (status.progress)"},
    {"name": "Suspended", "type": "string", "jsonPath": ".status.suspension.state",
     "description": "Suspending, Suspended (spec.suspend) or WaitingForAdmission (a Kueue queue); empty: running"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1,
     "description": "the reason for the last decision"},
]

# Output key order: metadata of the node, then its type and constraints, then
# its children. Every key the converter emits is listed here.
_KEY_ORDER = (
    "description", "type", "nullable", "enum", "default",
    "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern", "minItems", "maxItems",
    "items", "properties", "additionalProperties", "required",
    "x-kubernetes-preserve-unknown-fields",
)
# Draft 2020-12 keywords the converter passes through unchanged.
_PASS_THROUGH = frozenset({
    "description", "type", "enum", "default", "minimum", "maximum", "multipleOf",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "required",
})
_SCALARS = frozenset({"string", "number", "integer", "boolean"})


class SchemaConversionError(ValueError):
    """The models use a JSON-schema construct no structural schema can hold."""


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    unknown = set(node) - set(_KEY_ORDER)
    if unknown:  # a converter bug, not a model problem
        raise AssertionError(f"unordered schema keys {sorted(unknown)}")
    return {key: node[key] for key in _KEY_ORDER if key in node}


class _Converter:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def ref(self, ref: str) -> dict[str, Any]:
        prefix = "#/$defs/"
        if not ref.startswith(prefix) or ref[len(prefix):] not in self.defs:
            raise SchemaConversionError(f"unresolvable $ref {ref!r}")
        return self.defs[ref[len(prefix):]]

    def convert(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        node = dict(node)
        node.pop("title", None)
        if "$ref" in node:  # siblings (description, default) override the target's
            target = self.convert(self.ref(node.pop("$ref")), where)
            return _ordered({**target, **self.convert_keywords(node, where)})
        if "allOf" in node:  # older pydantic: allOf: [$ref] with siblings
            parts = node.pop("allOf")
            if len(parts) != 1:
                raise SchemaConversionError(f"{where}: allOf with {len(parts)} schemas")
            return _ordered({**self.convert(parts[0], where), **self.convert_keywords(node, where)})
        if "oneOf" in node:
            raise SchemaConversionError(f"{where}: oneOf (a discriminated union) has no structural form")
        if "anyOf" in node:
            return self.convert_union(node, where)
        return _ordered(self.convert_keywords(node, where))

    def convert_union(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        members = node.pop("anyOf")
        nullable = any(m.get("type") == "null" for m in members)
        others = [m for m in members if m.get("type") != "null"]
        if node.get("default", ...) is None:
            del node["default"]
        if len(others) == 1:
            out = {**self.convert(others[0], where), **self.convert_keywords(node, where)}
        elif all(set(m) == {"type"} and m["type"] in _SCALARS for m in others):
            # Any JSON scalar: no structural type can say "string or number
            # or boolean", so the field keeps whatever it is given.
            out = self.convert_keywords(node, where)
            out.setdefault("description", UNION_DESCRIPTION)
            out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            raise SchemaConversionError(f"{where}: a union of non-scalars has no structural form")
        if nullable:
            out["nullable"] = True
        return _ordered(out)

    def convert_keywords(self, node: dict[str, Any], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "title":
                continue
            if key == "default" and value == "":
                # The test API server validates "" as null: see the module docstring.
                out["nullable"] = True
                continue
            if key in _PASS_THROUGH:
                out[key] = value
            elif key == "const":
                out["enum"] = [value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                if bound in node:
                    raise SchemaConversionError(f"{where}: both {bound} and {key}")
                out[bound] = value
                out[key] = True
            elif key == "items":
                out["items"] = self.convert(value, f"{where}[]")
            elif key == "properties":
                out["properties"] = {
                    name: self.convert(sub, f"{where}.{name}") for name, sub in value.items()
                }
            elif key == "additionalProperties":
                if isinstance(value, dict):
                    out["additionalProperties"] = self.convert(value, f"{where}.*")
                # false: structural pruning drops unknown fields instead;
                # true: an open object, handled below.
            else:
                raise SchemaConversionError(f"{where}: JSON-schema keyword {key!r} is not supported")
        if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
            out["x-kubernetes-preserve-unknown-fields"] = True
        if out.get("type") == "array" and "items" not in out:
            raise SchemaConversionError(f"{where}: an array needs an item type")
        return out


def _factory_defaults(model: type[BaseModel], node: dict[str, Any]) -> None:
    """Give fields with a ``default_factory`` the factory's value as default,
    recursively through nested models (``node`` is the converted schema)."""
    properties = node.get("properties", {})
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in properties:
            continue
        if field.default_factory is not None and "default" not in properties[key]:
            value = field.default_factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):  # {}: the nested fields default themselves
                value = value.model_dump(mode="json", by_alias=True, exclude_unset=True)
            properties[key] = _ordered({**properties[key], "default": to_jsonable_python(value)})
        nested = _nested_model(field.annotation)
        if nested is not None:
            prop = properties[key]
            target = prop.get("additionalProperties", prop)
            _factory_defaults(nested, target.get("items", target))


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``M``, ``M | None``, ``list[M]`` or ``dict[str, M]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def build_schema() -> dict[str, Any]:
    """The version's ``openAPIV3Schema``: structural, generated from the models."""
    source = TrainingPipeline.model_json_schema(by_alias=True, mode="validation")
    converter = _Converter(source.pop("$defs", {}))
    root = converter.convert(source, "")
    # metadata is Kubernetes' ObjectMeta: a structural schema may say no more
    # than that it is an object (trainpipe's stricter name rule is the
    # models'; see the module docstring).
    root["properties"]["metadata"] = {"type": "object"}
    root["description"] = ROOT_DESCRIPTION
    _factory_defaults(TrainingPipeline, root)
    return _ordered(root)


def build_crd() -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of ``TrainingPipeline``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(col) for col in PRINTER_COLUMNS],
                    "schema": {"openAPIV3Schema": build_schema()},
                }
            ],
        },
    }


HEADER = f"""\
# GENERATED by `trainpipe crd` from the pydantic models in
# operator/trainpipe_operator/spec/ -- do not edit by hand.
# Regenerate with: trainpipe crd --write   (a unit test fails on drift)
#
# The API server prunes unknown fields, and cannot check rules across fields
# (the split sums to 1, gpuUtilWarn <= gpuUtilMin, an accuracy target <= 1,
# a positive maxDuration, a model, augmentation or target metric of the
# task, data.source given). `trainpipe validate` and the operator check the
# whole object with the models and reject both (the operator sets Failed,
# naming the field). See operator/trainpipe_operator/crd/generate.py.
#
# kubectl get {SHORT_NAMES[0]}: Gate is the decision the last gate led to.
"""


def render_crd_yaml() -> str:
    """The CRD file's text: the header comment, then YAML in a stable key order."""
    body = yaml.safe_dump(build_crd(), sort_keys=False, default_flow_style=False, width=100,
                          allow_unicode=True)
    return HEADER + "---\n" + body
