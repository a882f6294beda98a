"""Which Ray clusters a pipeline may send jobs (and its token) to.

The address a ``runtime.type: ray`` pipeline names is chosen by its author;
the operator sends jobs there, with the token of the pipeline's Secret. So
it may be only one the operator's configuration allows
(``TRAINPIPE_RAY_ALLOWED_ADDRESSES``, the chart's ``ray.allowedAddresses``)
or the operator's own default (``TRAINPIPE_RAY_ADDRESS``). Addresses are
compared after normalisation (scheme and host lowercased, the scheme's
default port made explicit, no trailing slash), never by prefix.
``runtime.type: rayjob`` names no address: KubeRay makes a cluster per job.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from trainpipe_operator.tenancy.settings import TenancySettings

FIELD = "spec.runtime.ray.address"
DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_address(address: str) -> str | None:
    """``HTTP://Head:8265/`` -> ``http://head:8265``; None when it is not a
    plain http(s) URL (credentials, query or fragment in it, no host)."""
    try:
        parts = urlsplit(address.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    if parts.query or parts.fragment:
        return None
    path = parts.path.rstrip("/")
    return f"{scheme}://{parts.hostname.lower()}:{port or DEFAULT_PORTS[scheme]}{path}"


def allowed_addresses(settings: TenancySettings) -> list[str]:
    given = [*settings.ray_allowed_addresses, *([settings.default_ray_address] if settings.default_ray_address else [])]
    return sorted({n for n in (normalize_address(a) for a in given) if n})


def address_problems(field: str, address: str, settings: TenancySettings) -> list[str]:
    """Problems with sending jobs to ``address`` (the pipeline's, or a Secret's)."""
    allowed = allowed_addresses(settings)
    listed = ", ".join(allowed) if allowed else (
        "none (this operator runs runtime.type: rayjob only; an administrator adds Ray clusters "
        "to the operator's ray.allowedAddresses)")
    normal = normalize_address(address)
    if normal is None:
        return [f"{field}: {address!r} is not an http(s) Ray Job API address without credentials, query "
                f"or fragment (like http://ray-head:8265); allowed: {listed}"]
    if normal not in allowed:
        return [f"{field}: {address!r} is not a Ray cluster this operator may use; allowed: {listed}"]
    return []


def check_ray_address(spec: dict[str, Any], namespace: str, settings: TenancySettings) -> list[str]:
    """Rule: a ``runtime.type: ray`` pipeline's address is on the allow-list (pure)."""
    runtime = spec.get("runtime") or {}
    if runtime.get("type") != "ray":
        return []
    address = (runtime.get("ray") or {}).get("address")
    if not address:
        return []  # the token Secret's address or the operator's default: checked where they are read
    return address_problems(FIELD, str(address), settings)
