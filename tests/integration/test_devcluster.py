"""The dev cluster's real components: kube-apiserver with RBAC and token
users, a Ray head with token authentication, and the ``devcluster`` CLI
bringing all of them (and Prometheus) up and down."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from trainpipe_operator.devcluster import ControlPlane, RayHead
from trainpipe_operator.devcluster._proc import pid_alive

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH")
    return subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def _operator_core(operator_kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(operator_kubeconfig)))


def test_admin_creates_namespace_and_configmap(admin_api, control_plane: ControlPlane):
    core = client.CoreV1Api(admin_api)
    ns = _name("itest-admin")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="settings"), data={"lr": "0.003"}))
    assert core.read_namespaced_config_map("settings", ns).data == {"lr": "0.003"}
    assert control_plane.ca_file is not None  # TLS verified against the apiserver's own CA
    assert _kubectl(control_plane.kubeconfig, "get", "configmap", "settings", "-n", ns).returncode == 0


def test_operator_user_has_no_permissions_of_its_own(operator_kubeconfig: Path):
    can = _kubectl(operator_kubeconfig, "auth", "can-i", "list", "secrets", "--all-namespaces")
    assert can.stdout.strip() == "no", can
    with pytest.raises(ApiException) as refused:
        _operator_core(operator_kubeconfig).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=_name("itest-forbidden"))))
    assert refused.value.status == 403


def test_rbac_grants_the_operator_user_what_it_binds(admin_api, operator_kubeconfig: Path):
    core, rbac = client.CoreV1Api(admin_api), client.RbacAuthorizationV1Api(admin_api)
    granted, other = _name("itest-granted"), _name("itest-other")
    for ns in (granted, other):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        core.create_namespaced_config_map(ns, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="settings"), data={"k": ns}))
    role = _name("itest-configmap-reader")
    rbac.create_cluster_role(client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=role),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get"])]))
    rbac.create_namespaced_role_binding(granted, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=role),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
        subjects=[client.RbacV1Subject(kind="User", name="trainpipe-operator",
                                       api_group="rbac.authorization.k8s.io")]))

    operator = _operator_core(operator_kubeconfig)
    deadline = time.monotonic() + 10  # the authorizer's informers catch up within moments
    while True:
        try:
            assert operator.read_namespaced_config_map("settings", granted).data == {"k": granted}
            break
        except ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert _kubectl(operator_kubeconfig, "auth", "can-i", "get", "configmaps", "-n", granted
                    ).stdout.strip() == "yes"
    with pytest.raises(ApiException) as refused:
        operator.read_namespaced_config_map("settings", other)
    assert refused.value.status == 403
    assert _kubectl(operator_kubeconfig, "auth", "can-i", "list", "secrets", "--all-namespaces"
                    ).stdout.strip() == "no"


def _http(method: str, url: str, body: dict | None = None, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _finished_job_logs(jobs_client: Any, job: str, timeout: float = 120) -> str:
    """The job's logs once it succeeded (fails with them otherwise)."""
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    while (status := jobs_client.get_job_status(job)) not in (
            JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, f"job {job} still {status}: {jobs_client.get_job_logs(job)[-2000:]}"
        time.sleep(0.5)
    logs = jobs_client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs
    return str(logs)


def _jobs_client(head: RayHead) -> Any:
    """A Job API client that sends ``head``'s token as a header. Not through
    ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``: Ray reads the auth mode once per
    process, so an env var set after any earlier Ray call is ignored."""
    from ray.job_submission import JobSubmissionClient

    from trainpipe_operator.pipeline.launchers import auth_headers

    return JobSubmissionClient(head.address, headers=auth_headers(head.token))


def test_ray_head_runs_jobs_with_the_token_only(ray_head: RayHead):
    jobs = f"{ray_head.address}/api/jobs/"
    refused_id = _name("itest-no-token")
    entry = {"entrypoint": "echo should-not-run", "submission_id": refused_id}
    assert _http("POST", jobs, entry) == 401
    assert _http("POST", jobs, entry, token="not-the-token") == 403

    jobs_client = _jobs_client(ray_head)
    job = jobs_client.submit_job(entrypoint='python -c "import sys; print(sys.executable)"')
    logs = _finished_job_logs(jobs_client, job)
    # The job's `python` is this environment's: the head runs with its bin first on PATH.
    assert Path(logs.strip().splitlines()[-1]).parent == ray_head.bin_dir.absolute()
    assert refused_id not in {j.submission_id for j in jobs_client.list_jobs()}


def test_a_job_joins_its_own_head_when_another_head_started_later(ray_head: RayHead, tmp_path: Path) -> None:
    """Two heads on one machine (two test workers, or a dev cluster beside
    the tests): a job's driver joins the head it was submitted to, not the
    one that started last (Ray's supervisor resolves "auto" through its
    temp dir)."""
    with RayHead(tmp_path / "later", num_cpus=1):
        jobs_client = _jobs_client(ray_head)
        job = jobs_client.submit_job(entrypoint='python -c "import ray; ray.init(); '
                                                "print('GCS', ray.get_runtime_context().gcs_address)\"")
        logs = _finished_job_logs(jobs_client, job)
    (line,) = [x for x in logs.splitlines() if x.startswith("GCS ")]
    assert line.endswith(f":{ray_head.port}"), (line, ray_head.port)


def _devcluster(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainpipe_operator.devcluster", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def _wait_for_scrape(prometheus_url: str, expr: str, timeout: float = 30) -> None:
    """Until ``expr`` has a sample equal to 1 (discovery takes about 5 s)."""
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=5) as resp:
            result = json.load(resp)["data"]["result"]
        if any(sample["value"][1] == "1" for sample in result):
            return
        assert time.monotonic() < deadline, f"{expr} not 1 within {timeout}s: {result}"
        time.sleep(0.5)


def test_devcluster_cli_up_status_down(envtest_assets_dir: Path, tmp_path: Path):
    folder = tmp_path / "dev"
    common = ("--dir", str(folder))
    pids: dict[str, dict] = {}
    try:
        up = _devcluster("up", *common, "--assets", str(envtest_assets_dir))
        assert up.returncode == 0, up.stderr
        env = dict(line.removeprefix("export ").split("=", 1)
                   for line in (folder / "env").read_text().splitlines())
        assert {"KUBECONFIG", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "PROMETHEUS_URL", "MLFLOW_TRACKING_URI"} <= env.keys()
        assert (folder / "operator.kubeconfig").exists()

        status = _devcluster("status", *common, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "readyz answers 200" in status.stdout

        assert _kubectl(folder / "kubeconfig", "get", "namespaces").returncode == 0
        if (REPO / "crds" / "trainingpipelines.trainpipe.io.yaml").exists():
            crd = _kubectl(folder / "kubeconfig", "get", "crd", "trainingpipelines.trainpipe.io")
            assert crd.returncode == 0, crd.stderr
        # The operator user holds the operator's RBAC, and nothing more.
        operator = folder / "operator.kubeconfig"
        assert _kubectl(operator, "auth", "can-i", "watch", "trainingpipelines.trainpipe.io",
                        "--all-namespaces").stdout.strip() == "yes"
        assert _kubectl(operator, "auth", "can-i", "list", "secrets", "--all-namespaces"
                        ).stdout.strip() == "no"
        assert _http("GET", f"{env['RAY_ADDRESS']}/api/jobs/") == 401
        assert _http("GET", f"{env['RAY_ADDRESS']}/api/jobs/", token=env["RAY_AUTH_TOKEN"]) == 200
        assert _http("GET", f"{env['PROMETHEUS_URL']}/-/ready") == 200
        _wait_for_scrape(env["PROMETHEUS_URL"], 'up{job="ray"}')  # it scrapes the Ray head
        assert _http("GET", f"{env['MLFLOW_TRACKING_URI']}/health") == 200
        pids = json.loads((folder / "pids.json").read_text())["components"]
        assert set(pids) == {"etcd", "kube-apiserver", "ray", "prometheus", "mlflow"}

        # A job still running when the cluster goes down: Ray starts its
        # driver in a session of its own, so only `down` can end it.
        driver_pid_file = tmp_path / "driver.pid"
        job_id = _name("itest-running-at-down")
        entry = {"submission_id": job_id, "entrypoint": (
            "python -c 'import os, time, pathlib; "
            f"pathlib.Path(\"{driver_pid_file}\").write_text(str(os.getpid())); time.sleep(900)'")}
        assert _http("POST", f"{env['RAY_ADDRESS']}/api/jobs/", entry, token=env["RAY_AUTH_TOKEN"]) == 200
        deadline = time.monotonic() + 120
        while not driver_pid_file.exists() or not driver_pid_file.read_text():
            assert time.monotonic() < deadline, f"the job's driver did not start within 120 s ({job_id})"
            time.sleep(0.2)
        driver_pid = int(driver_pid_file.read_text())
        assert pid_alive(driver_pid, "time.sleep(900)")
    finally:
        down = _devcluster("down", *common, timeout=180)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(entry["pid"], entry["expect"]) for entry in pids.values())
    assert f"stopped Ray job {job_id}" in down.stderr
    assert not pid_alive(driver_pid), f"the Ray job's driver (pid {driver_pid}) outlived `down`"
    assert _devcluster("status", *common, timeout=60).returncode == 1

