"""``python -m trainpipe_operator.devcluster up|down|status [--dir .dev]``.

``up`` starts etcd + kube-apiserver, a Ray head, Prometheus (scraping the
Ray head's metrics and any ``--scrape host:port``) and an MLflow tracking
server (SQLite store and proxied artifacts in the folder; ``--no-mlflow``
skips it) detached from this process, installs the CRD and the operator RBAC when the repository has them
(the RBAC's roles are also bound to the ``trainpipe-operator`` user of
``operator.kubeconfig``), and writes into the folder: ``kubeconfig``,
``operator.kubeconfig``, ``env`` (``source`` it) and ``pids.json``. It either
succeeds or leaves nothing running. ``down`` stops what ``pids.json`` names;
``status`` prints what runs (exit 0 only when everything does). The cluster
keeps no state across ``down``/``up``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ._proc import http_status, pid_alive, stop_pid
from .apiserver import ASSETS_HINT, OPERATOR_USER, ControlPlane, find_assets, has_assets
from .mlflow_server import MlflowServer
from .prometheus import PrometheusServer
from .ray_head import RayHead, stop_jobs

CRD_FILE = Path("crds/trainingpipelines.trainpipe.io.yaml")
STOP_ORDER = ("mlflow", "prometheus", "ray", "kube-apiserver", "etcd")


def _say(message: str) -> None:
    print(f"devcluster: {message}", file=sys.stderr, flush=True)


def _state_path(folder: Path) -> Path:
    return folder / "pids.json"


def load_state(folder: Path) -> dict[str, Any] | None:
    path = _state_path(folder)
    return json.loads(path.read_text()) if path.exists() else None


def running(state: dict[str, Any]) -> dict[str, bool]:
    return {name: pid_alive(entry["pid"], entry["expect"])
            for name, entry in state["components"].items()}


# -- manifests ---------------------------------------------------------------
def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        raise RuntimeError("kubectl is not on PATH: install it to apply the CRD and RBAC")
    cmd = [binary, f"--kubeconfig={kubeconfig}", *args]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`kubectl {' '.join(args)}` failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()}")
    return done.stdout


def _wait_established(kubeconfig: Path, crd: str, timeout: float = 60.0) -> None:
    # Polled: `kubectl wait` races a v1.20 server that has not written the
    # CRD's conditions yet ("conditions accessor error").
    path = '{.status.conditions[?(@.type=="Established")].status}'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if kubectl(kubeconfig, "get", "crd", crd, "-o", f"jsonpath={path}") == "True":
                return
        except RuntimeError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"CRD {crd} was not established within {timeout:.0f} s")


def apply_manifests(kubeconfig: Path, repo_root: Path) -> list[str]:
    """Apply the CRD and the operator's RBAC (the rules the chart renders),
    bound to the dev operator user; return what was applied."""
    from trainpipe_operator.rbac import cluster_role, cluster_role_binding

    applied = []
    crd = repo_root / CRD_FILE
    if crd.exists():
        kubectl(kubeconfig, "apply", "-f", str(crd))
        _wait_established(kubeconfig, "trainingpipelines.trainpipe.io")
        applied.append(str(CRD_FILE))
    docs = [cluster_role(), cluster_role_binding({"kind": "User", "name": OPERATOR_USER})]
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    applied.append("ClusterRole/ClusterRoleBinding trainpipe-operator")
    return applied


# -- commands ----------------------------------------------------------------
def write_env(folder: Path, values: dict[str, str]) -> Path:
    path = folder / "env"
    path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


def up(folder: Path, assets: Path | None, repo_root: Path, scrape: list[str],
       mlflow: str | None = None, with_mlflow: bool = True) -> int:
    state = load_state(folder)
    if state is not None:
        alive = running(state)
        if all(alive.values()):
            _say(f"already running (see {_state_path(folder)}); `down` first to restart")
            return 0
        if any(alive.values()):
            _say(f"partly running ({', '.join(n for n, a in alive.items() if a)}): run `down` first")
            return 1
    assets = assets or find_assets()
    if not has_assets(assets):
        _say(f"no kube-apiserver/etcd found: {ASSETS_HINT} (or pass --assets)")
        return 2
    assert assets is not None
    folder = folder.absolute()
    started: list[Any] = []
    try:
        began = time.monotonic()
        plane = ControlPlane(assets, folder).start()
        started.append(plane)
        _say(f"kube-apiserver ready at {plane.url} ({plane.ready_seconds:.1f} s after etcd)")
        ray = RayHead(folder / "ray").start()
        started.append(ray)
        _say(f"Ray head ready at {ray.address}")
        targets = {"ray": [ray.metrics_address]}
        if scrape:
            targets["trainpipe"] = scrape
        prom = PrometheusServer.start(targets, folder / "prometheus")
        started.append(prom)
        _say(f"Prometheus ready at {prom.url}")
        tracking: MlflowServer | None = None
        if with_mlflow:
            tracking = MlflowServer.start(folder / "mlflow", binary=mlflow)
            started.append(tracking)
            _say(f"MLflow tracking server ready at {tracking.uri} ({tracking.started_in_s:.1f} s)")
        for item in apply_manifests(plane.kubeconfig, repo_root):
            _say(f"applied {item}")
    except BaseException as exc:
        for component in reversed(started):
            component.stop()
        _say(f"up failed, stopped what had started: {exc}")
        return 1
    env = {
        "KUBECONFIG": str(plane.kubeconfig),
        "TRAINPIPE_OPERATOR_KUBECONFIG": str(plane.operator_kubeconfig),
        "RAY_ADDRESS": ray.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray.token,
        "PROMETHEUS_URL": prom.url,
    }
    assert plane.etcd is not None and plane.apiserver is not None and ray.process is not None
    components = {
        "etcd": {"pid": plane.etcd.pid, "expect": str(plane.assets_dir / "etcd")},
        "kube-apiserver": {"pid": plane.apiserver.pid,
                           "expect": str(plane.assets_dir / "kube-apiserver")},
        "ray": {"pid": ray.process.pid, "expect": f"{ray.bin_dir / 'ray'} start"},
        "prometheus": {"pid": prom.pid, "expect": "prometheus"},
    }
    urls = {"kube-apiserver": plane.url, "etcd": plane.etcd_url, "ray": ray.address,
            "prometheus": prom.url}
    if tracking is not None:
        env["MLFLOW_TRACKING_URI"] = tracking.uri
        components["mlflow"] = {"pid": tracking.pid, "expect": f"{tracking.binary} server"}
        urls["mlflow"] = tracking.uri
    write_env(folder, env)
    _state_path(folder).write_text(json.dumps({
        "components": components, "urls": urls, "kubeconfig": str(plane.kubeconfig),
    }, indent=2))
    _say(f"up in {time.monotonic() - began:.1f} s; `source {folder / 'env'}`")
    return 0


def down(folder: Path) -> int:
    state = load_state(folder)
    if state is None:
        _say(f"nothing to stop ({_state_path(folder)} does not exist)")
        return 0
    components = state["components"]
    ray = components.get("ray")
    token = _env_value(folder, "RAY_AUTH_TOKEN")
    if ray and token and pid_alive(ray["pid"], ray["expect"]):
        # The jobs first, through the head: each driver checkpoints and ends,
        # instead of being orphaned (their own sessions) when the head goes.
        for job in stop_jobs(state["urls"]["ray"], token):
            _say(f"stopped Ray job {job}")
    for name in STOP_ORDER:
        entry = components.get(name)
        if entry and stop_pid(entry["pid"], entry["expect"], timeout=60 if name == "ray" else 15):
            _say(f"stopped {name} (pid {entry['pid']})")
    _state_path(folder).unlink()
    return 0


def _env_value(folder: Path, key: str) -> str | None:
    """A value ``up`` wrote into ``<folder>/env`` (``export KEY=value`` lines)."""
    try:
        lines = (folder / "env").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and words[1].startswith(f"{key}="):
            return words[1].split("=", 1)[1]
    return None


def status(folder: Path) -> int:
    state = load_state(folder)
    if state is None:
        print(f"not running ({_state_path(folder)} does not exist)")
        return 1
    alive = running(state)
    for name, entry in state["components"].items():
        url = state["urls"].get(name, "")
        print(f"{name:15} pid {entry['pid']:<8} {'running' if alive[name] else 'STOPPED':8} {url}")
    if alive.get("kube-apiserver"):
        token = yaml.safe_load(Path(state["kubeconfig"]).read_text())["users"][0]["user"]["token"]
        code = http_status(f"{state['urls']['kube-apiserver']}/readyz", 3.0,
                           {"Authorization": f"Bearer {token}"}, _insecure())
        print(f"{'':15} /readyz answers {code}")
    return 0 if all(alive.values()) else 1


def _insecure() -> Any:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainpipe_operator.devcluster",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--dir", type=Path, default=Path(".dev"), help="state folder (.dev)")
    parser.add_argument("--assets", type=Path, default=None,
                        help="folder with kube-apiserver and etcd (default: KUBEBUILDER_ASSETS, "
                             "then hack/envtest.sh's cache)")
    parser.add_argument("--repo-root", type=Path, default=Path.cwd(),
                        help="where crds/ and charts/ are (default: the current folder)")
    parser.add_argument("--scrape", action="append", default=[], metavar="HOST:PORT",
                        help="another target for Prometheus (job trainpipe); repeatable")
    parser.add_argument("--mlflow", default=None, metavar="PATH",
                        help="the mlflow executable for the tracking server (default: MLFLOW_SERVER, "
                             "then hack/mlflow.sh's cached venv)")
    parser.add_argument("--no-mlflow", action="store_true", help="start no MLflow tracking server")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.dir, args.assets, args.repo_root, args.scrape, args.mlflow, not args.no_mlflow)
    if args.command == "down":
        return down(args.dir)
    return status(args.dir)
