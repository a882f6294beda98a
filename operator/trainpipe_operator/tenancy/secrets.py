"""The only Secrets the operator uses: a Ray token bound to its address.

A pipeline names a Secret (``spec.runtime.ray.tokenSecret``) in its own
namespace; the operator uses it only when it is
- of type ``trainpipe.io/ray-token`` (a type is fixed when the Secret is
  created: a service-account token, ``kubernetes.io/service-account-token``,
  or any other Secret in the namespace is refused, never sent anywhere);
- holding ``token`` and ``address``: the token is sent to that address and
  no other. A pipeline that names another address is refused; one that
  names none uses the Secret's;
- for an address the operator may use (``ray_access``).
Messages name the Secret and the field, never the token.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from trainpipe_operator.tenancy.ray_access import FIELD as ADDRESS_FIELD
from trainpipe_operator.tenancy.ray_access import address_problems, normalize_address
from trainpipe_operator.tenancy.settings import TenancySettings

FIELD = "spec.runtime.ray.tokenSecret"
SECRET_TYPE = "trainpipe.io/ray-token"
SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"
EXPECTED = (f"a Secret of type {SECRET_TYPE} in the pipeline's namespace with the keys 'address' "
            "(the Ray Job API address the token belongs to) and 'token'")


@dataclass(frozen=True)
class RayCredential:
    """A token and the one address it may be sent to. ``repr`` hides the token."""

    address: str
    token: str

    def __repr__(self) -> str:
        return f"RayCredential(address={self.address!r}, token=<hidden>)"


def secret_value(data: dict[str, Any], key: str) -> str | None:
    """A Secret's ``data[key]``, base64-decoded and stripped; None when absent or not text."""
    raw = data.get(key)
    if not raw:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode().strip() or None
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def check_token_secret(secret: dict[str, Any], spec: dict[str, Any], namespace: str,
                       settings: TenancySettings) -> list[str]:
    """Rule: ``secret`` (the API object as a dict: ``type``, base64 ``data``)
    may give this pipeline its Ray token (pure)."""
    name = f"{namespace}/{(secret.get('metadata') or {}).get('name', '?')}"
    kind = secret.get("type") or "Opaque"
    if kind == SERVICE_ACCOUNT_TOKEN:
        return [f"{FIELD}: Secret {name} is a service-account token ({SERVICE_ACCOUNT_TOKEN}); the operator "
                f"never reads one; allowed: {EXPECTED}"]
    if kind != SECRET_TYPE:
        return [f"{FIELD}: Secret {name} has type {kind!r}, not one meant for trainpipe; allowed: {EXPECTED}"]
    data = secret.get("data") or {}
    missing = [k for k in ("address", "token") if not secret_value(data, k)]
    if missing:
        return [f"{FIELD}: Secret {name} has no (valid base64, non-empty) key {', '.join(repr(k) for k in missing)}; "
                f"allowed: {EXPECTED}"]
    bound = str(secret_value(data, "address"))
    problems = address_problems(f"{FIELD} (Secret {name}, key 'address')", bound, settings)
    named = ((spec.get("runtime") or {}).get("ray") or {}).get("address")
    if named and normalize_address(str(named)) != normalize_address(bound):
        problems.append(f"{ADDRESS_FIELD}: {named!r} is not the address Secret {name} holds its token for "
                        f"({bound!r}); a token is sent only to its own address: name that address, or none")
    return problems


def credential(secret: dict[str, Any], spec: dict[str, Any], namespace: str,
               settings: TenancySettings) -> RayCredential:
    """The token and its address, once ``check_token_secret`` has nothing to say.

    Raises:
        ValueError: what ``check_token_secret`` found.
    """
    problems = check_token_secret(secret, spec, namespace, settings)
    if problems:
        raise ValueError("; ".join(problems))
    data = secret.get("data") or {}
    return RayCredential(str(secret_value(data, "address")), str(secret_value(data, "token")))
