"""The status as a JSON merge patch (RFC 7386). Fields the new status no
longer has (``exclude_none``: a cleared ``progress``, a new job's
``reason`` or ``exitCode``) become null, which deletes them: without it the
stored status keeps the old values, and a finished pipeline would still
show its last job's progress, a later job an earlier one's ``Stalled``.
What has not changed is left out: every byte of a patch is parsed,
validated against the CRD's schema and stored by the API server, at every
phase transition of every pipeline."""

from __future__ import annotations

from typing import Any


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if key in old and value == before:
            continue
        patch[key] = merge_patch(before, value) if isinstance(value, dict) and isinstance(before, dict) else value
    for key in old.keys() - new.keys():
        patch[key] = None
    return patch
