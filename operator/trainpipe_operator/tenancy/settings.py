"""What the tenancy rules are configured with: a plain value, so the rules
stay pure functions (the operator builds it from its own settings; the
admission webhook can build the same one)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from dataclasses import field as dataclass_field


@dataclass(frozen=True)
class TenancySettings:
    artifact_root: str
    """The artifact store as the operator and its jobs see it; namespace
    ``ns`` owns ``<artifact_root>/ns`` and nothing else of it."""

    ray_allowed_addresses: tuple[str, ...] = ()
    """Ray Job API addresses a ``runtime.type: ray`` pipeline may name
    (exact, after normalisation: scheme, host and port, no trailing slash)."""

    default_ray_address: str | None = None
    """The operator's own default address: chosen by whoever configured the
    operator, so always allowed."""

    tracking_allowed_uris: tuple[str, ...] = ()
    """MLflow tracking URIs a pipeline's ``spec.tracking.mlflow.trackingUri``
    may name (exact, after the same normalisation); empty: none."""

    def namespace_root(self, namespace: str) -> str:
        return posixpath.join(clean(self.artifact_root), namespace)


def clean(path: str) -> str:
    """Lexically normalised: one slash between parts, no ``.``, no trailing
    slash (``//a/./b/`` -> ``/a/b``). ``..`` is refused before this is used."""
    collapsed = posixpath.normpath(path)
    # POSIX keeps a leading "//" (implementation-defined); a path here has one root.
    return "/" + collapsed.lstrip("/") if collapsed.startswith("/") else collapsed


@dataclass
class Resolved:
    """A rule's outcome for one field: the path the job will use, or why not."""

    field: str
    value: str
    path: str | None = None
    problems: list[str] = dataclass_field(default_factory=list)
