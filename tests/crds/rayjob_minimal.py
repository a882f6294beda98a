"""The project's own RayJob CRD (``rayjob-minimal.yaml``): KubeRay's
``ray.io/v1`` RayJob schema cut down to the fields trainpipe writes
(``kuberay/rayjob.py``'s ``build_rayjob``) and reads (``rayjob_outcome``),
so that the RayJob runtime is tested on a clone without KubeRay's CRDs.

``FIELDS`` is the one list of those fields: ``True`` keeps KubeRay's whole
schema below a field (a container's ``resources``), a mapping keeps only the
fields it names (array items are descended into). Everything else in an
object our code writes is absent, so the API server prunes it and
``validate_against_kuberay`` reports it (``additionalProperties: false``),
as KubeRay's own schema does for a misspelt field. Nowhere does the cut add
``x-kubernetes-preserve-unknown-fields``.

Dropped from KubeRay's schema, as ``tests/integration/operator_harness.py``
drops them to install KubeRay's CRD on the v1.20 API server: CEL rules
(``x-kubernetes-validations``), defaults and the list-map markers; and the
descriptions. ``tests/unit/test_rayjob_crd.py`` checks that this file is
exactly that cut of KubeRay's CRD wherever KubeRay's is present.

Regenerate (with KubeRay's CRDs at ``$TRAINPIPE_KUBERAY_CRDS`` or
``../shared/kuberay-crds``): ``python -m tests.crds.rayjob_minimal --write``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

MINIMAL_RAYJOB_CRD = Path(__file__).resolve().parent / "rayjob-minimal.yaml"
DROPPED = ("description", "default", "x-kubernetes-validations", "x-kubernetes-list-map-keys",
           "x-kubernetes-list-type")

Shape = dict[str, Any]  # field -> True (all of it) or a Shape (only these)

_CONTAINER: Shape = {f: True for f in ("name", "image", "imagePullPolicy", "resources", "ports", "volumeMounts",
                                       "securityContext", "env")}
_POD_SPEC: Shape = {
    **{f: True for f in ("securityContext", "serviceAccountName", "restartPolicy", "tolerations")},
    "containers": _CONTAINER,
    "volumes": {"name": True, "persistentVolumeClaim": True, "emptyDir": True},
}
_POD_TEMPLATE: Shape = {"metadata": {"labels": True}, "spec": _POD_SPEC}
FIELDS: Shape = {
    "apiVersion": True,
    "kind": True,
    "metadata": True,
    "spec": {
        **{f: True for f in ("entrypoint", "submissionMode", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished",
                             "suspend")},  # suspend: created suspended for Kueue (kuberay/queue.py)
        "submitterPodTemplate": _POD_TEMPLATE,
        "rayClusterSpec": {
            "rayVersion": True,
            "headGroupSpec": {"rayStartParams": True, "template": _POD_TEMPLATE},
            "workerGroupSpecs": {
                **{f: True for f in ("groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams")},
                "template": _POD_TEMPLATE,
            },
        },
    },
    # What rayjob_outcome reads, and what KubeRay writes beside it that the tests write back.
    "status": {f: True for f in ("jobStatus", "jobDeploymentStatus", "reason", "message", "failed", "succeeded",
                                 "rayClusterName", "jobId", "dashboardURL", "startTime", "endTime",
                                 "observedGeneration")},
}


def strip(node: Any) -> Any:
    """KubeRay's schema below a field, without what ``DROPPED`` names."""
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in DROPPED}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def cut(schema: dict[str, Any], shape: Shape, path: str = "") -> dict[str, Any]:
    """``schema`` (an object's, or an array of objects') with only the
    properties ``shape`` names.

    Raises:
        KeyError: ``shape`` names a field KubeRay's schema does not have.
        ValueError: a field KubeRay requires is left out (objects we write
            would then be refused).
    """
    if schema.get("type") == "array":
        return {**strip({k: v for k, v in schema.items() if k != "items"}),
                "items": cut(schema["items"], shape, f"{path}[]")}
    properties = schema.get("properties") or {}
    missing = sorted(set(shape) - set(properties))
    if missing:
        raise KeyError(f"{path or '<root>'}: KubeRay's schema has no {missing}")
    dropped_required = sorted(set(schema.get("required") or []) - set(shape))
    if dropped_required:
        raise ValueError(f"{path or '<root>'}: KubeRay requires {dropped_required}; add them to FIELDS")
    out = strip({k: v for k, v in schema.items() if k != "properties"})
    out["properties"] = {
        name: strip(properties[name]) if sub is True else cut(properties[name], sub, f"{path}.{name}".lstrip("."))
        for name, sub in shape.items()
    }
    return out


def minimal_crd(kuberay: dict[str, Any]) -> dict[str, Any]:
    """The minimal CRD made from KubeRay's RayJob CRD (its ``v1`` version)."""
    (v1,) = [v for v in kuberay["spec"]["versions"] if v["name"] == "v1"]
    version = {k: v for k, v in v1.items() if k != "schema"}
    version["schema"] = {"openAPIV3Schema": cut(v1["schema"]["openAPIV3Schema"], FIELDS)}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kuberay["metadata"]["name"],
            "annotations": {"trainpipe.io/made-by": "tests/crds/rayjob_minimal.py from KubeRay's "
                                                    "ray.io_rayjobs.yaml: only the fields trainpipe uses"},
        },
        "spec": {"group": kuberay["spec"]["group"], "names": kuberay["spec"]["names"],
                 "scope": kuberay["spec"]["scope"], "versions": [version]},
    }


HEADER = ("# Generated by tests/crds/rayjob_minimal.py from KubeRay's RayJob CRD (Apache-2.0):\n"
          "# the ray.io/v1 RayJob fields trainpipe writes and reads. Do not edit; regenerate.\n")


def render(kuberay: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(minimal_crd(kuberay), sort_keys=False, width=120)


def rayjob_crd_for_tests() -> tuple[Path, str]:
    """The RayJob CRD the tests install and validate against: KubeRay's own
    where it is found, else ours; with which one it is, for messages."""
    from trainpipe_operator.kuberay.schema import kuberay_crd_path

    path = kuberay_crd_path()
    if path is not None:
        return path, f"KubeRay's {path}"
    return MINIMAL_RAYJOB_CRD, f"the project's own {MINIMAL_RAYJOB_CRD.name} (KubeRay's CRDs not found)"


def main(argv: list[str] | None = None) -> int:
    from trainpipe_operator.kuberay.schema import crd_missing_reason, kuberay_crd_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {MINIMAL_RAYJOB_CRD.name} (else print it)")
    args = parser.parse_args(argv)
    source = kuberay_crd_path()
    if source is None:
        print(crd_missing_reason(), file=sys.stderr)
        return 2
    text = render(yaml.safe_load(source.read_text(encoding="utf-8")))
    if args.write:
        MINIMAL_RAYJOB_CRD.write_text(text, encoding="utf-8")
        print(f"wrote {MINIMAL_RAYJOB_CRD}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
