"""``trainpipe suspend|resume NAME``: ``spec.suspend`` patched on a
TrainingPipeline in the cluster (what ``kubectl patch`` would do)."""

from __future__ import annotations

import sys
from pathlib import Path

GROUP, VERSION, PLURAL = "trainpipe.io", "v1alpha1", "trainingpipelines"


def set_suspend(name: str, namespace: str | None, suspend: bool, kubeconfig: Path | None = None) -> int:
    """Patch ``spec.suspend``; 1 with a message saying what to do when the
    pipeline is missing or cannot be reached."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        if kubeconfig is not None:
            api_client = config.new_client_from_config(str(kubeconfig))
            _, active = config.list_kube_config_contexts(str(kubeconfig))
        else:
            api_client = config.new_client_from_config()
            _, active = config.list_kube_config_contexts()
    except (ConfigException, OSError) as exc:
        print(f"trainpipe: no cluster to talk to ({exc}); set KUBECONFIG or pass --kubeconfig", file=sys.stderr)
        return 1
    namespace = namespace or (active.get("context") or {}).get("namespace") or "default"
    api = client.CustomObjectsApi(api_client)
    verb = "suspend" if suspend else "resume"
    try:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": {"suspend": suspend}})
    except ApiException as exc:
        if exc.status == 404:
            print(f"trainpipe {verb}: no TrainingPipeline {name!r} in namespace {namespace!r}; "
                  f"list them with `kubectl get trainingpipelines -n {namespace}`", file=sys.stderr)
        elif exc.status == 403:
            print(f"trainpipe {verb}: not allowed to patch TrainingPipeline {namespace}/{name} "
                  "(RBAC: verb patch on trainingpipelines.trainpipe.io)", file=sys.stderr)
        else:
            print(f"trainpipe {verb}: patching TrainingPipeline {namespace}/{name} failed: "
                  f"{exc.status} {exc.reason}", file=sys.stderr)
        return 1
    if suspend:
        print(f"{namespace}/{name}: spec.suspend set; its running job stops at the next checkpoint "
              f"(kubectl get tp {name} -n {namespace} shows Suspending, then Suspended)")
    else:
        print(f"{namespace}/{name}: spec.suspend cleared; it resumes its phase from the checkpoint")
    return 0
