"""A development cluster made of real components on loopback: etcd +
kube-apiserver (no nodes), a Ray head, Prometheus and an MLflow tracking server. Used by
``python -m trainpipe_operator.devcluster``, ``hack/dev-cluster.sh`` and the
integration tests. Never imports torch."""

from .apiserver import ADMIN_USER, OPERATOR_USER, ControlPlane, find_assets, has_assets
from .mlflow_server import MlflowNotInstalled, MlflowServer, mlflow_binary
from .prometheus import PrometheusNotInstalled, PrometheusServer, prometheus_binary
from .ray_head import RayHead

__all__ = [
    "ADMIN_USER", "OPERATOR_USER", "ControlPlane", "MlflowNotInstalled", "MlflowServer", "PrometheusNotInstalled",
    "PrometheusServer", "RayHead", "find_assets", "has_assets", "mlflow_binary", "prometheus_binary",
]
