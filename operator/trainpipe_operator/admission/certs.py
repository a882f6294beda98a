"""A self-signed serving certificate for the webhook, for a cluster without
the chart (a dev cluster, the tests): CA-flagged, so that the API server
takes it as its own CA bundle, with the host names / IPs as SANs. kopf's own
generator needs ``certbuilder``, which fails with OpenSSL 3."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

CERT, KEY, CA = "tls.crt", "tls.key", "ca.crt"


def write_self_signed(folder: Path, hosts: list[str], days: int = 365) -> Path:
    """``tls.crt``, ``tls.key`` and ``ca.crt`` (the same certificate) in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / CERT).write_bytes(pem)
    (folder / CA).write_bytes(pem)
    (folder / KEY).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    (folder / KEY).chmod(0o600)
    return folder
