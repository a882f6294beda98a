"""Where a pipeline may read from, in the operator path: ``spec.data.source``
and ``spec.model.pretrained`` resolve under the namespace's own folder on
the artifact store (``<artifactRoot>/<namespace>/``), so one team cannot
train on, or read through gate messages, another team's data or runs.

Accepted, for a pipeline in namespace ``ns``:
- ``builtin:<name>`` (``data.source`` only): a dataset the trainer ships;
- a relative path: resolved under ``<artifactRoot>/ns/``;
- an absolute path (or ``file:///path``) under ``<artifactRoot>/ns/``.
Refused, naming the field: ``..`` anywhere (also percent-encoded in a
``file://`` URI), ``~`` (the trainer would expand it to its own home), any
other scheme (``pvc://``, ``s3://``, ...), a ``file://`` URI naming a host,
control characters and backslashes, and anything outside that folder
(compared by path components: ``/artifacts/team-a-old`` is not under
``/artifacts/team-a``).

``check_paths`` is pure (the admission webhook runs it too);
``check_real_paths`` is the one check that reads the file system: a path
that is lexically inside but reaches outside through a symbolic link.
``trainpipe run`` (the local runner) uses none of this: on the user's own
machine any path is theirs to read.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any
from urllib.parse import unquote, urlparse

from trainpipe_operator.tenancy.settings import Resolved, TenancySettings, clean

FIELDS = (("spec.data.source", ("data", "source")), ("spec.model.pretrained", ("model", "pretrained")))
BUILTIN = re.compile(r"^builtin:[a-z0-9-]+$")
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


def _allowed(field: str, root: str) -> str:
    builtin = "builtin:<name>, " if field == "spec.data.source" else ""
    return f"allowed: {builtin}a path relative to {root}/ or an absolute path under {root}/"


def within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it, by whole path components."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def resolve(field: str, value: Any, namespace: str, settings: TenancySettings) -> Resolved:
    """The absolute path ``value`` names for a pipeline in ``namespace``, or
    the problems (each starting with ``field``)."""
    root = settings.namespace_root(namespace)
    out = Resolved(field, str(value))
    shown = repr(value)

    def refuse(why: str) -> Resolved:
        out.problems.append(f"{field}: {shown} {why}; {_allowed(field, root)}")
        return out

    if not isinstance(value, str) or not value.strip():
        return refuse("is empty")
    text = value.strip()
    if field == "spec.data.source" and text.startswith("builtin:"):
        if not BUILTIN.match(text):
            return refuse("is not a builtin dataset name (builtin: then lowercase letters, digits, '-')")
        out.path = text
        return out
    if UNSAFE.search(text):
        return refuse("holds a control character or a backslash")
    scheme = SCHEME.match(text)
    if scheme:
        if scheme.group(1).lower() != "file" or not text.lower().startswith("file://"):
            return refuse(f"uses scheme {scheme.group(1)!r}, which the operator does not read "
                          "(the artifact store is the namespace's folder: give a path)")
        parsed = urlparse(text)
        if parsed.netloc:
            return refuse(f"names host {parsed.netloc!r}; a file:// URI must be local (file:///path)")
        if parsed.query or parsed.fragment or parsed.params:
            return refuse("has a query or fragment; a file:// URI is a path only")
        text = unquote(parsed.path)  # what the trainer opens
        if UNSAFE.search(text):
            return refuse("holds a control character or a backslash once decoded")
        if not text.startswith("/"):
            return refuse("is not an absolute file:// URI (file:///path)")
    if text.startswith("~"):
        return refuse("starts with '~', which the trainer would expand to its own home folder")
    if ".." in text.split("/"):
        return refuse(f"contains '..', which may leave namespace {namespace!r}'s root")
    path = clean(text if text.startswith("/") else posixpath.join(root, text))
    if not within(path, root):
        return refuse(f"leaves namespace {namespace!r}'s root")
    out.path = path
    return out


def resolve_paths(spec: dict[str, Any], namespace: str, settings: TenancySettings) -> list[Resolved]:
    """Every path field the spec sets (``spec`` in its camelCase YAML shape)."""
    results = []
    for field, (section, key) in FIELDS:
        value = (spec.get(section) or {}).get(key)
        if value is None:
            continue
        results.append(resolve(field, value, namespace, settings))
    return results


def check_paths(spec: dict[str, Any], namespace: str, settings: TenancySettings) -> list[str]:
    """Rule: the pipeline's paths stay in its namespace's root (pure)."""
    return [p for r in resolve_paths(spec, namespace, settings) for p in r.problems]


def check_real_paths(spec: dict[str, Any], namespace: str, settings: TenancySettings) -> list[str]:
    """Rule, reading the file system: a path inside the root lexically must
    stay inside after following symbolic links (a link in the namespace's
    folder pointing at another team's)."""
    root = settings.namespace_root(namespace)
    real_root = os.path.realpath(root)
    problems = []
    for result in resolve_paths(spec, namespace, settings):
        if result.problems or result.path is None or result.path.startswith("builtin:"):
            continue
        if not within(os.path.realpath(result.path), real_root):
            problems.append(f"{result.field}: {result.value!r} leads through a symbolic link out of namespace "
                            f"{namespace!r}'s root; {_allowed(result.field, root)} (no links leaving it)")
    return problems
