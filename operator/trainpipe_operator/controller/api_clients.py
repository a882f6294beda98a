"""The Kubernetes API clients the reconciler uses (CoreV1 for Secrets,
CustomObjects for RayJobs), from a kubeconfig or the pod's service account."""

from __future__ import annotations

from pathlib import Path


def kubernetes_clients(kubeconfig: Path | None) -> tuple[object, object]:
    from kubernetes import client, config

    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig))
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.CoreV1Api(), client.CustomObjectsApi()
