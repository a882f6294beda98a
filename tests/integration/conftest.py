"""Session-wide real components for the integration tests.

- ``control_plane``: etcd + kube-apiserver (``devcluster.ControlPlane``) from
  the envtest assets: ``KUBEBUILDER_ASSETS`` when it holds both binaries, else
  what ``hack/envtest.sh`` provides (it builds them once and caches them).
  Skips only when the assets cannot be provided.
- ``envtest_assets_dir``: that folder.
- ``admin_api``: a ``kubernetes.client.ApiClient`` for the ``admin`` user.
- ``operator_kubeconfig``: the kubeconfig of the ``trainpipe-operator`` user,
  whose permissions come only from the RBAC a test applies.
- ``ray_head``: a Ray head (``devcluster.RayHead``) with token authentication,
  one per test module.
- ``cluster``: the operator's world on them (CRD, the chart's ServiceAccount
  and RBAC, the Ray token Secret), one per test module.
- ``operator``: ``trainpipe operator`` on that cluster, one per test.
- ``prometheus_factory``: ``start(targets, **kw) -> PrometheusServer`` per test.
- ``mlflow_server``: a real MLflow tracking server (``.uri``; SQLite store,
  proxied local artifacts), one per test module.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from trainpipe_operator.devcluster import ControlPlane, RayHead, has_assets

from .mlflow_server import mlflow_server as mlflow_server  # noqa: F401 - fixture
from .operator_harness import Cluster, OperatorProcess, start_cluster
from .prometheus_server import prometheus_factory as prometheus_factory  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]
ENVTEST = REPO / "hack" / "envtest.sh"


def envtest_assets() -> Path:
    """The folder with kube-apiserver and etcd, or a skip saying why there is none."""
    given = os.environ.get("KUBEBUILDER_ASSETS")
    if given and has_assets(given):
        return Path(given)
    if not ENVTEST.exists():
        pytest.skip(f"no envtest assets: KUBEBUILDER_ASSETS is unset and {ENVTEST} is missing")
    # Prints the cached folder at once; builds it first when there is none (minutes).
    done = subprocess.run(["bash", str(ENVTEST)], capture_output=True, text=True, check=False)
    folder = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not has_assets(folder):
        pytest.skip(
            "cannot provide kube-apiserver and etcd: hack/envtest.sh failed "
            f"({done.returncode}): {done.stderr.strip()[-1500:]}; "
            "set KUBEBUILDER_ASSETS to a folder holding both"
        )
    return Path(folder)


@pytest.fixture(scope="session")
def envtest_assets_dir() -> Path:
    """The folder holding kube-apiserver and etcd (skips when none can be provided)."""
    return envtest_assets()


@pytest.fixture(scope="session")
def control_plane(envtest_assets_dir: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ControlPlane]:
    with ControlPlane(envtest_assets_dir, tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def admin_api(control_plane: ControlPlane) -> Iterator[ApiClient]:
    client = control_plane.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.operator_kubeconfig


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    # Per module, not per session: two Ray clusters alive on one machine
    # confuse Ray's own helpers ("Found multiple active Ray instances ...
    # connecting to latest"), so no head outlives the module that uses it.
    with RayHead(tmp_path_factory.mktemp("ray-head")) as head:
        yield head


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return start_cluster(control_plane, ray_head, tmp_path_factory.mktemp("operator"))


@pytest.fixture
def operator(cluster: Cluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(cluster.operator_kubeconfig, cluster.artifact_root, tmp_path).start()
    yield proc
    proc.stop()
