"""The project's own RayJob CRD (tests/crds/rayjob-minimal.yaml): exactly
KubeRay's schema for the fields trainpipe uses (checked wherever KubeRay's
CRD is present), structural, with no field left open, and what the RayJob
tests fall back to on a clone without KubeRay's CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crds.rayjob_minimal import (
    FIELDS,
    MINIMAL_RAYJOB_CRD,
    cut,
    minimal_crd,
    rayjob_crd_for_tests,
    render,
)
from trainpipe_operator.kuberay.schema import (
    crd_missing_reason,
    kuberay_crd_path,
    validate_against_kuberay,
)


def ours() -> dict[str, Any]:
    return yaml.safe_load(MINIMAL_RAYJOB_CRD.read_text())


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def kuberay() -> dict[str, Any]:
    path = kuberay_crd_path()
    if path is None:
        pytest.skip(crd_missing_reason())
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a safe loader


def test_our_crd_is_kuberays_schema_for_the_fields_we_use(kuberay: dict[str, Any]) -> None:
    """Every type, format, enum, pattern, required list and sub-field of the
    fields we use, as KubeRay declares them; nothing of ours KubeRay lacks."""
    assert ours() == minimal_crd(kuberay), "tests/crds/rayjob-minimal.yaml is stale: python -m tests.crds.rayjob_minimal --write"
    assert MINIMAL_RAYJOB_CRD.read_text() == render(kuberay)


def test_our_crd_names_the_same_resource_as_kuberays(kuberay: dict[str, Any]) -> None:
    crd = ours()
    assert crd["metadata"]["name"] == kuberay["metadata"]["name"] == "rayjobs.ray.io"
    assert crd["spec"]["group"] == kuberay["spec"]["group"]
    assert crd["spec"]["names"] == kuberay["spec"]["names"]
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1"]


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return []
    found = [(path or "<root>", node)]
    for name, child in (node.get("properties") or {}).items():
        found += walk(child, f"{path}.{name}".lstrip("."))
    if isinstance(node.get("items"), dict):
        found += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_our_crd_is_structural_and_leaves_no_field_open() -> None:
    crd = ours()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["served"] and version["storage"] and version["subresources"] == {"status": {}}
    for path, node in walk(schema_of(crd)):
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path}: no type (not structural)"
        for key in ("x-kubernetes-validations", "default"):  # what the v1.20 API server cannot take
            assert key not in node, f"{path}: {key}"
    spec = schema_of(crd)["properties"]["spec"]["properties"]
    assert set(spec) == set(FIELDS["spec"])
    container = spec["rayClusterSpec"]["properties"]["headGroupSpec"]["properties"]["template"]["properties"][
        "spec"]["properties"]["containers"]["items"]
    assert container["required"] == ["name"] and "command" not in container["properties"]


def test_our_crd_refuses_what_kuberays_does_for_our_fields() -> None:
    """A few mistakes our code could make, each refused with its path."""
    from tests.unit.test_rayjob import RESOURCES, make

    job = make(RESOURCES["2-gpu-workers"])
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["resources"]["limits"]["memory"] = "lots"
    head["volumes"][0]["persistentVolumeClaim"]["claimname"] = "typo"
    job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "root"
    job["spec"]["shutdownAfterJobFinishes"] = "yes"
    problems = "\n".join(validate_against_kuberay(job, MINIMAL_RAYJOB_CRD))
    assert "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].resources.limits.memory: 'lots'" in problems
    assert "spec.rayClusterSpec.headGroupSpec.template.spec.volumes[0].persistentVolumeClaim: " in problems
    assert "'claimname' was unexpected" in problems
    assert "spec.submitterPodTemplate.spec.containers[0].securityContext.runAsUser: 'root' is not of type" in problems
    assert "spec.shutdownAfterJobFinishes: 'yes' is not of type 'boolean'" in problems


def test_the_status_kuberay_writes_and_we_read_validates_and_a_misspelt_one_does_not() -> None:
    from tests.unit.test_rayjob import RESOURCES, make

    job = make(RESOURCES["cpu-only"])
    job["status"] = {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete", "message": "done", "failed": 0,
                     "succeeded": 1, "rayClusterName": "c", "jobId": "j", "startTime": "2026-01-10T09:00:00Z"}
    assert validate_against_kuberay(job, MINIMAL_RAYJOB_CRD) == []
    job["status"]["jobStatuss"] = "SUCCEEDED"
    assert "status: Additional properties are not allowed ('jobStatuss' was unexpected)" in \
        validate_against_kuberay(job, MINIMAL_RAYJOB_CRD)


def test_without_kuberays_crds_the_tests_use_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINPIPE_KUBERAY_CRDS", str(tmp_path))  # an empty folder: no KubeRay CRDs
    path, which = rayjob_crd_for_tests()
    assert path == MINIMAL_RAYJOB_CRD and "project's own" in which
    (tmp_path / "ray.io_rayjobs.yaml").write_text("kind: CustomResourceDefinition\n")
    path, which = rayjob_crd_for_tests()
    assert path == tmp_path / "ray.io_rayjobs.yaml" and "KubeRay's" in which


def test_the_cut_refuses_an_unknown_field_and_a_dropped_required_one() -> None:
    schema = {"type": "object", "required": ["name"],
              "properties": {"name": {"type": "string", "description": "x"}, "size": {"type": "integer"}}}
    assert cut(schema, {"name": True}) == {"type": "object", "required": ["name"],
                                           "properties": {"name": {"type": "string"}}}
    with pytest.raises(KeyError, match=r"KubeRay's schema has no \['nmae'\]"):
        cut(schema, {"nmae": True})
    with pytest.raises(ValueError, match=r"KubeRay requires \['name'\]"):
        cut(schema, {"size": True})
    array = {"type": "array", "items": schema}
    assert cut(array, {"name": True})["items"]["properties"] == {"name": {"type": "string"}}
