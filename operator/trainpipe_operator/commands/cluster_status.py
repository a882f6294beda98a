"""``trainpipe status NAME -n NAMESPACE``: the cluster object's status, and
the progress lines both forms of ``trainpipe status`` print."""

from __future__ import annotations

from trainpipe_operator.spec.status import PipelineStatus

GROUP, VERSION, PLURAL = "trainpipe.io", "v1alpha1", "trainingpipelines"


def read_cluster_status(name: str, namespace: str | None) -> tuple[PipelineStatus | None, str]:
    """The TrainingPipeline's status through the kubeconfig ($KUBECONFIG,
    else ~/.kube/config, else in-cluster); (None, why) when it cannot be read."""
    from kubernetes import client, config

    try:
        try:
            config.load_kube_config()
            _, context = config.list_kube_config_contexts()
            namespace = namespace or (context.get("context") or {}).get("namespace") or "default"
        except config.ConfigException:
            config.load_incluster_config()
            namespace = namespace or "default"
        body = client.CustomObjectsApi().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except Exception as exc:  # noqa: BLE001 - said to the person, with what to do
        return None, (f"{name}: not a run directory, and TrainingPipeline {namespace or '<kubeconfig namespace>'}/"
                      f"{name} could not be read ({type(exc).__name__}: {getattr(exc, 'reason', exc)}); give a run "
                      "directory, or a pipeline's name with -n NAMESPACE and a kubeconfig")
    from trainpipe_operator.controller.reconcile import read_status

    return read_status(dict(body) if isinstance(body, dict) else {}), ""


def progress_lines(status: PipelineStatus) -> list[str]:
    """``progress: Baseline 12/20, step 480, 812.0 samples/s, job ETA 2m, pipeline ETA 1h5m``,
    and the job's attempt when it was resubmitted (Stalled: the watchdog)."""
    from trainpipe_operator.pipeline.job_progress import duration

    lines = []
    p = status.progress
    if p is not None:
        parts = [p.summary, f"step {p.step}"]
        if p.samples_per_second is not None:
            parts.append(f"{p.samples_per_second:.1f} samples/s")
        parts.append(f"job ETA {duration(p.job_eta_seconds) if p.job_eta_seconds is not None else 'n/a'}")
        parts.append(f"pipeline ETA {p.eta or 'n/a'}")
        lines.append(f"progress: {', '.join(parts)} (heartbeat {p.heartbeat_at})")
    job = status.job
    if job.submission_id:
        line = f"job: {job.submission_id} {job.state} attempt {job.attempt}"
        if job.reason:
            line += f" ({job.reason}: {job.message})"
        lines.append(line)
    return lines
