"""A real Kubernetes control plane without nodes (envtest style): etcd and
kube-apiserver on loopback, token users, RBAC on.

Users (tokens random per start):
- ``admin``: group ``system:masters``, may do anything;
- ``trainpipe-operator``: a plain user whose permissions come only from the
  RBAC applied to the cluster, so that the operator's RBAC is really tested.

Files in ``workdir``: ``etcd/`` (data), ``certs/`` (the serving cert the
apiserver generates; its CA is what the kubeconfigs trust), ``tokens.csv``,
``sa.key``/``sa.pub``, ``etcd.log``, ``kube-apiserver.log``, ``kubeconfig``
(admin) and ``operator.kubeconfig``.

``assets_dir`` holds ``kube-apiserver`` and ``etcd`` (``hack/envtest.sh``
prints such a folder; ``KUBEBUILDER_ASSETS`` names one).
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from ._proc import free_ports, http_status, log_tail, port_clash, spawn, stop_process

K8S_VERSION = "1.20.2"
ADMIN_USER = "admin"
OPERATOR_USER = "trainpipe-operator"
ASSETS_HINT = "run hack/envtest.sh (it prints such a folder) or set KUBEBUILDER_ASSETS"


def has_assets(folder: Path | str | None) -> bool:
    """Whether ``folder`` holds executable ``kube-apiserver`` and ``etcd``."""
    if not folder:
        return False
    return all(os.access(Path(folder) / name, os.X_OK) for name in ("kube-apiserver", "etcd"))


def default_assets_dir(version: str = K8S_VERSION) -> Path:
    """Where ``hack/envtest.sh`` caches the binaries it builds."""
    cache = os.environ.get("TRAINPIPE_CACHE_HOME") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trainpipe"
    )
    return Path(cache) / "envtest" / f"kube-apiserver-{version}"


def find_assets() -> Path | None:
    """``KUBEBUILDER_ASSETS`` if it holds both binaries, else the envtest cache, else None."""
    for candidate in (os.environ.get("KUBEBUILDER_ASSETS"), default_assets_dir()):
        if has_assets(candidate):
            return Path(candidate)  # type: ignore[arg-type]
    return None


def write_service_account_keys(key_path: Path, pub_path: Path) -> None:
    """An RSA key pair for signing service-account tokens (cryptography, else openssl)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError(
                "cannot generate the service-account key: neither the python package "
                "`cryptography` nor `openssl` is installed; install one of them"
            ) from None
        for cmd in ([openssl, "genrsa", "-out", str(key_path), "2048"],
                    [openssl, "rsa", "-in", str(key_path), "-pubout", "-out", str(pub_path)]):
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}") from None
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))
    pub_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
    ))
    key_path.chmod(0o600)


class ControlPlane:
    """etcd + kube-apiserver. ``start()`` (or ``with``) → ``url``, ``kubeconfig``,
    ``operator_kubeconfig``, ``admin_token``, ``operator_token``; ``stop()``."""

    def __init__(self, assets_dir: Path | str, workdir: Path | str, ready_timeout: float = 60.0):
        self.assets_dir = Path(assets_dir)
        self.workdir = Path(workdir).absolute()
        self.ready_timeout = ready_timeout
        self.etcd: subprocess.Popen[bytes] | None = None
        self.apiserver: subprocess.Popen[bytes] | None = None
        self.etcd_url = ""
        self.url = ""
        self.admin_token = secrets.token_hex(16)
        self.operator_token = secrets.token_hex(16)
        self.ready_seconds: float | None = None
        self.kubeconfig = self.workdir / "kubeconfig"
        self.operator_kubeconfig = self.workdir / "operator.kubeconfig"
        self.cert_dir = self.workdir / "certs"
        self.etcd_log = self.workdir / "etcd.log"
        self.apiserver_log = self.workdir / "kube-apiserver.log"

    # -- lifecycle ---------------------------------------------------------
    def start(self, attempts: int = 3) -> ControlPlane:
        if not has_assets(self.assets_dir):
            raise FileNotFoundError(
                f"{self.assets_dir} does not hold executable kube-apiserver and etcd: {ASSETS_HINT}"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert_dir.mkdir(exist_ok=True)
        self._write_credentials()
        try:
            self._retry(self._start_etcd, self.etcd_log, attempts)
            started = time.monotonic()
            self._retry(self._start_apiserver, self.apiserver_log, attempts)
            self.ready_seconds = time.monotonic() - started
            self._write_kubeconfigs()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, then SIGKILL after ``timeout``)."""
        for proc in (self.apiserver, self.etcd):
            if proc is not None:
                stop_process(proc, timeout)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in
                (("etcd", self.etcd), ("kube-apiserver", self.apiserver)) if proc is not None}

    @property
    def ca_file(self) -> Path | None:
        """The apiserver's self-signed serving cert (with its CA), once it wrote it."""
        path = self.cert_dir / "apiserver.crt"
        return path if path.exists() else None

    def api_client(self, user: str = ADMIN_USER) -> Any:
        """A ``kubernetes.client.ApiClient`` for ``admin`` or the operator user."""
        from kubernetes import config

        path = self.kubeconfig if user == ADMIN_USER else self.operator_kubeconfig
        return config.new_client_from_config(config_file=str(path))

    # -- internals ---------------------------------------------------------
    @staticmethod
    def _retry(start: Any, log_path: Path, attempts: int) -> None:
        for attempt in range(attempts):
            try:
                start()
                return
            except (RuntimeError, TimeoutError):
                # A port chosen free may have been taken before the bind: try others.
                if attempt + 1 < attempts and port_clash(log_path):
                    continue
                raise

    def _write_credentials(self) -> None:
        (self.workdir / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},uid-admin,"system:masters"\n'
            f"{self.operator_token},{OPERATOR_USER},uid-{OPERATOR_USER}\n"
        )
        (self.workdir / "tokens.csv").chmod(0o600)
        key, pub = self.workdir / "sa.key", self.workdir / "sa.pub"
        if not (key.exists() and pub.exists()):
            write_service_account_keys(key, pub)

    def _start_etcd(self) -> None:
        client, peer = free_ports(2)
        data = self.workdir / "etcd"
        shutil.rmtree(data, ignore_errors=True)  # a fresh cluster each start
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.etcd = spawn([
            str(self.assets_dir / "etcd"), "--name=default", f"--data-dir={data}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
        ], self.etcd_log)
        self._wait("etcd", self.etcd, self.etcd_log, f"{self.etcd_url}/health", None, {})

    def _start_apiserver(self) -> None:
        (port,) = free_ports(1)
        self.url = f"https://127.0.0.1:{port}"
        self.apiserver = spawn([
            str(self.assets_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--secure-port={port}", "--bind-address=127.0.0.1", "--insecure-port=0",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={self.cert_dir}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self.workdir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
            # As controller-runtime's envtest: no controller-manager creates the
            # default ServiceAccount, so its admission plugin would refuse pods.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
        ], self.apiserver_log)
        self._wait("kube-apiserver", self.apiserver, self.apiserver_log, f"{self.url}/readyz",
                   "certs", {"Authorization": f"Bearer {self.admin_token}"})

    def _tls(self) -> ssl.SSLContext:
        ca = self.ca_file
        if ca is not None:
            return ssl.create_default_context(cafile=str(ca))
        context = ssl.create_default_context()  # not written yet: nothing listens yet either
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def _wait(self, name: str, proc: subprocess.Popen[bytes], log_path: Path, url: str,
              tls: str | None, headers: dict[str, str]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last: int | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode} while starting; "
                    f"its log ({log_path}) ends:\n{log_tail(log_path)}"
                )
            last = http_status(url, 2.0, headers, self._tls() if tls else None)
            if last == 200:
                return
            time.sleep(0.2)
        stop_process(proc)
        raise TimeoutError(
            f"{name} did not answer 200 at {url} within {self.ready_timeout:.0f}s "
            f"(last answer: {last}); its log ({log_path}) ends:\n{log_tail(log_path)}"
        )

    def _write_kubeconfigs(self) -> None:
        for path, user, token in ((self.kubeconfig, ADMIN_USER, self.admin_token),
                                  (self.operator_kubeconfig, OPERATOR_USER, self.operator_token)):
            self._write_kubeconfig(path, user, token)

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        ca = self.ca_file
        cluster: dict[str, Any] = {"server": self.url}
        if ca is not None:
            cluster["certificate-authority"] = str(ca)
        else:
            cluster["insecure-skip-tls-verify"] = True
        doc = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "trainpipe-dev", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "trainpipe-dev", "user": user}}],
            "current-context": user,
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path, duration: str = "4h") -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name``
        with a token from the TokenRequest API: what a pod running as that
        ServiceAccount (the Helm chart's operator) presents. The
        ServiceAccount must exist."""
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), "create", "token", name, "-n", namespace,
             f"--duration={duration}"], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"no token for ServiceAccount {namespace}/{name}: {result.stderr.strip()}")
        self._write_kubeconfig(path, f"system:serviceaccount:{namespace}:{name}", result.stdout.strip())
        return path
