"""The Kubernetes API clients the reconciler uses (CoreV1 for Secrets,
CustomObjects for RayJobs), from a kubeconfig or the pod's service account."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def kubernetes_clients(kubeconfig: Path | None) -> tuple[Any, Any]:
    from kubernetes import client, config

    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig))
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.CoreV1Api(), client.CustomObjectsApi()


class _Loader:
    """Makes both clients once, at the first call either one gets."""

    def __init__(self, kubeconfig: Path | None) -> None:
        self.kubeconfig = kubeconfig
        self.clients: tuple[Any, Any] | None = None

    def get(self, which: int) -> Any:
        if self.clients is None:
            self.clients = kubernetes_clients(self.kubeconfig)
        return self.clients[which]


class LazyApi:
    """Stands in for an API client and makes it at its first use.

    Importing the kubernetes client costs a process about 20 MiB. A reconcile
    worker needs it only for a pipeline that reads a Secret or runs as a
    RayJob, so a worker whose pipelines do neither never pays it. The
    operator's own process makes its clients at start (``kubernetes_clients``),
    so a kubeconfig that does not load stops it there, not in a worker.
    """

    def __init__(self, loader: _Loader, which: int) -> None:
        self._loader, self._which = loader, which

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader.get(self._which), name)


def lazy_kubernetes_clients(kubeconfig: Path | None) -> tuple[Any, Any]:
    """(CoreV1Api, CustomObjectsApi) made when one of them is first used."""
    loader = _Loader(kubeconfig)
    return LazyApi(loader, 0), LazyApi(loader, 1)
