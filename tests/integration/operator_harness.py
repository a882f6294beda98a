"""Running the real operator (`trainpipe operator`, a separate process, as
the least-privilege `trainpipe-operator` user) against the test API server,
and reading what it does through kubectl and the Kubernetes API."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TRAINPIPE = str(Path(sys.executable).parent / "trainpipe")
CRD_FILE = REPO / "crds" / "trainingpipelines.trainpipe.io.yaml"
TOKEN_SECRET = "ray-token"
RAY_TOKEN_TYPE = "trainpipe.io/ray-token"
# The Ray Job API addresses the operator of a test cluster may use, by the
# operator's kubeconfig (start_cluster registers its Ray head): an
# OperatorProcess allows them unless told otherwise.
ALLOWED_RAY_ADDRESSES: dict[str, list[str]] = {}


def ray_token_secret(name: str, namespace: str, address: str, token: str) -> dict[str, Any]:
    """A Secret the operator uses for a Ray token: its type, and the address the token belongs to."""
    return {"apiVersion": "v1", "kind": "Secret", "type": RAY_TOKEN_TYPE,
            "metadata": {"name": name, "namespace": namespace},
            "data": {"address": base64.b64encode(address.encode()).decode(),
                     "token": base64.b64encode(token.encode()).decode()}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], input=input,
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


def apply(kubeconfig: Path, obj: dict[str, Any] | list[dict[str, Any]], *extra: str) -> subprocess.CompletedProcess:
    docs = obj if isinstance(obj, list) else [obj]
    return kubectl(kubeconfig, "apply", *extra, "-f", "-", input=yaml.safe_dump_all(docs))


def get(kubeconfig: Path, name: str, namespace: str = "default") -> dict[str, Any]:
    return json.loads(kubectl(kubeconfig, "get", "tp", name, "-n", namespace, "-o", "json").stdout)


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {str(last)[:2000]}")


def pipeline_manifest(name: str, ray_address: str, token_secret: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data": {"source": "builtin:digits", "imageSize": 8, "batchSize": 64},
        "target": {"metric": "val_acc", "value": 0.5},
        "baseline": {"epochs": 2, "lr": 0.003},
        "finalization": {"epochs": 2, "patience": 2},
        "runtime": {"type": "ray", "ray": {"address": ray_address, "tokenSecret": token_secret}},
    }
    for key, value in spec.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return {"apiVersion": "trainpipe.io/v1alpha1", "kind": "TrainingPipeline", "metadata": {"name": name},
            "spec": base}


class OperatorProcess:
    """`trainpipe operator` as a child process with its own log file."""

    def __init__(self, kubeconfig: Path, artifact_root: Path, workdir: Path, prometheus_url: str | None = None,
                 poll_seconds: float = 1.0, trainer_metrics_port: int | None = None, webhook: bool = False,
                 ray_allowed_addresses: list[str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.artifact_root = artifact_root
        self.log_path = workdir / "operator.log"
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.prometheus_url = prometheus_url
        self.poll_seconds = poll_seconds
        self.trainer_metrics_port = trainer_metrics_port
        # The admission webhook on loopback, with a self-signed certificate
        # (install_webhook points the chart's configurations at it).
        self.webhook_port = free_port() if webhook else 0
        self.webhook_certs = workdir / "webhook-certs"
        self.ray_allowed_addresses = (ALLOWED_RAY_ADDRESSES.get(str(kubeconfig), [])
                                      if ray_allowed_addresses is None else ray_allowed_addresses)
        self.proc: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        command = [TRAINPIPE, "operator", "--kubeconfig", str(self.kubeconfig), "--artifact-root",
                   str(self.artifact_root), "--metrics-port", str(self.metrics_port), "--liveness-port",
                   str(self.liveness_port), "--poll-seconds", str(self.poll_seconds)]
        if self.prometheus_url:
            command += ["--prometheus-url", self.prometheus_url]
        if self.trainer_metrics_port:
            command += ["--trainer-metrics-port", str(self.trainer_metrics_port)]
        if self.webhook_port:
            from trainpipe_operator.admission.certs import write_self_signed

            write_self_signed(self.webhook_certs, ["127.0.0.1"])
            command += ["--webhook-port", str(self.webhook_port), "--webhook-cert-dir", str(self.webhook_certs),
                        "--operator-user", OPERATOR_USER]
        for address in self.ray_allowed_addresses:
            command += ["--ray-allowed-address", address]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        self.proc = subprocess.Popen(command, stdout=self.log_path.open("a"), stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)
        wait_for("the operator's liveness endpoint", self.alive, timeout=60)
        if self.webhook_port:
            wait_for("the operator's admission webhook", self.webhook_listens, timeout=60, interval=0.5)
        return self

    def webhook_listens(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log_tail()
        try:
            with socket.create_connection(("127.0.0.1", self.webhook_port), timeout=2):
                return True
        except OSError:
            return False

    def alive(self) -> bool:
        import urllib.request

        assert self.proc is not None and self.proc.poll() is None, self.log_tail()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a node failure would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def resource_use(self) -> tuple[int, float]:
        """(peak resident memory in bytes, CPU seconds used) of the running
        operator process, from /proc (Linux): what the chart's defaults for
        requests and limits are measured against."""
        assert self.proc is not None and self.proc.poll() is None, self.log_tail()
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        (peak_kib,) = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return peak_kib * 1024, (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else ""


PRUNED = ("x-kubernetes-validations", "default", "x-kubernetes-list-map-keys", "x-kubernetes-list-type")


def _prune(node: Any) -> Any:
    """Drop what a v1.20 API server cannot take: CEL rules and defaults
    (and the list-map markers, whose keys then lose their required default).
    The schema still checks every field's name and type."""
    if isinstance(node, dict):
        return {k: _prune(v) for k, v in node.items() if k not in PRUNED}
    if isinstance(node, list):
        return [_prune(v) for v in node]
    return node


def install_rayjob_crd(kubeconfig: Path) -> Path:
    """A RayJob CRD: KubeRay's own where it is found, pruned for v1.20 (its
    README's second way), else the project's own cut of it
    (tests/crds/rayjob-minimal.yaml, already free of what v1.20 refuses).
    Returns the file installed (what the tests validate RayJobs against)."""
    from tests.crds.rayjob_minimal import rayjob_crd_for_tests

    path, _ = rayjob_crd_for_tests()
    crd = _prune(yaml.safe_load(Path(path).read_text()))
    result = kubectl(kubeconfig, "create", "-f", "-", input=yaml.safe_dump(crd), check=False)
    if result.returncode != 0 and "AlreadyExists" not in result.stderr:
        raise AssertionError(f"installing the RayJob CRD {path} failed: {result.stderr[-2000:]}")
    wait_established(kubeconfig, "rayjobs.ray.io")
    return path


def wait_established(kubeconfig: Path, crd: str) -> None:
    path = '{.status.conditions[?(@.type=="Established")].status}'
    wait_for(f"CRD {crd} established",
             lambda: kubectl(kubeconfig, "get", "crd", crd, "-o", f"jsonpath={path}", check=False).stdout == "True",
             timeout=60, interval=0.5)


CHART_NAMESPACE = "trainpipe-system"
OPERATOR_USER = f"system:serviceaccount:{CHART_NAMESPACE}:trainpipe"  # the chart's ServiceAccount
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def install_webhook(admin: Path, operator: OperatorProcess) -> None:
    """The chart's webhook configurations (rules, paths, failurePolicy as
    rendered), pointed at the operator's webhook on loopback: no Service can
    route here (no nodes), so the Service reference becomes a URL."""
    from tests.chart_render import render

    ca = base64.b64encode((operator.webhook_certs / "ca.crt").read_bytes()).decode()
    configs = [d for d in render(release="trainpipe", namespace=CHART_NAMESPACE) if d["kind"] in WEBHOOK_KINDS]
    for config in configs:
        for hook in config["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{operator.webhook_port}{path}", "caBundle": ca}
    apply(admin, configs)


def remove_webhook(admin: Path) -> None:
    for kind in WEBHOOK_KINDS:
        kubectl(admin, "delete", kind.lower(), "trainpipe", "--ignore-not-found")


def operator_as_chart_service_account(control_plane: Any, path: Path) -> Path:
    """Install the Helm chart's ServiceAccount and cluster RBAC (default
    values, release "trainpipe") and return a kubeconfig with a token of that
    ServiceAccount: the operator then runs with exactly the chart's rights."""
    from tests.chart_render import render

    admin = control_plane.kubeconfig
    kubectl(admin, "create", "namespace", CHART_NAMESPACE, check=False)
    docs = render(release="trainpipe", namespace=CHART_NAMESPACE)
    apply(admin, [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")])
    return Path(control_plane.service_account_kubeconfig(CHART_NAMESPACE, "trainpipe", path))



@dataclass
class Cluster:
    admin: Path
    operator_kubeconfig: Path
    ray_address: str
    ray_token: str
    artifact_root: Path
    workdir: Path
    rayjob_crd: Path  # the RayJob CRD installed: KubeRay's where found, else tests/crds/rayjob-minimal.yaml

    def run_dir(self, name: str, namespace: str = "default") -> Path:
        uid = get(self.admin, name, namespace)["metadata"]["uid"]
        return self.artifact_root / namespace / f"{name}-{uid[:8]}"

    def ray_client(self) -> Any:
        """A Job API client that sends this head's token as a header, as the
        operator does. Not through ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``: Ray
        reads the auth mode once per process, so a test that ran a Ray call
        earlier in the same worker would leave the client without a token."""
        from ray.job_submission import JobSubmissionClient

        from trainpipe_operator.pipeline.launchers import auth_headers

        return JobSubmissionClient(self.ray_address, headers=auth_headers(self.ray_token))

    def ray_jobs(self) -> list[Any]:
        return self.ray_client().list_jobs()


def start_cluster(control_plane: Any, ray_head: Any, workdir: Path) -> Cluster:
    """The CRD, the chart's ServiceAccount and RBAC, a RayJob CRD (KubeRay's
    where it is found, else the project's own), and the Ray token Secret, on
    a test API server and Ray head."""
    admin = control_plane.kubeconfig
    kubectl(admin, "apply", "-f", str(CRD_FILE))
    wait_established(admin, "trainingpipelines.trainpipe.io")
    # The operator runs as the Helm chart's ServiceAccount, with the chart's RBAC.
    operator_kubeconfig = operator_as_chart_service_account(control_plane, workdir / "operator.kubeconfig")
    rayjob_crd = install_rayjob_crd(admin)
    apply(admin, ray_token_secret(TOKEN_SECRET, "default", ray_head.address, ray_head.token))
    ALLOWED_RAY_ADDRESSES[str(operator_kubeconfig)] = [ray_head.address]
    return Cluster(admin, operator_kubeconfig, ray_head.address, ray_head.token,
                   workdir / "artifacts", workdir, rayjob_crd)


def phase_of(cluster: Cluster, name: str) -> str:
    return (get(cluster.admin, name).get("status") or {}).get("phase", "")


def wait_phase(cluster: Cluster, operator: OperatorProcess, name: str, phases: tuple[str, ...], timeout: float) -> dict:
    def probe() -> dict | None:
        assert operator.proc is not None and operator.proc.poll() is None, operator.log_tail()
        obj = get(cluster.admin, name)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    return wait_for(f"{name} in {phases}", probe, timeout)


def baseline_running_with_an_epoch(cluster: Cluster, name: str) -> bool:
    status = get(cluster.admin, name).get("status") or {}
    if status.get("phase") != "Baseline" or (status.get("job") or {}).get("state") != "RUNNING":
        return False
    metrics = cluster.run_dir(name) / "02_baseline" / "logs" / "metrics.json"
    try:
        return len(json.loads(metrics.read_text())["epochs"]) >= 1
    except (OSError, ValueError, KeyError):
        return False


def submissions(cluster: Cluster, prefix: str) -> list[str]:
    return sorted(job.submission_id for job in cluster.ray_jobs() if (job.submission_id or "").startswith(prefix))
