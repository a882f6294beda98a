"""Resolve ``data.source`` to a local folder.

Accepted: ``builtin:digits`` (written to the cache on first use), a local
folder path (``~`` expanded, relative to the working directory), or a
``file://`` URI. Anything else raises ``DataSourceError`` naming the field,
the value and what is allowed, so the Planning gate can show the user one
line that says what to change.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from trainpipe_trainer.data.digits import ensure_builtin_digits

ALLOWED = "builtin:digits, a local folder path, file:///path"

BUILTINS: dict[str, Callable[[str | os.PathLike[str] | None], Path]] = {
    "digits": ensure_builtin_digits,
}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


class DataSourceError(ValueError):
    """``data.source`` cannot be opened; the message says why and what is allowed."""


def _fail(source: str, why: str) -> DataSourceError:
    return DataSourceError(f"data.source: {source!r} {why}; allowed: {ALLOWED}")


def _file_uri_path(source: str) -> Path:
    parsed = urlparse(source)
    if parsed.netloc not in ("", "localhost"):
        raise _fail(
            source, f"names host {parsed.netloc!r}; a file:// URI must be local (file:///path)"
        )
    if not parsed.path:
        raise _fail(source, "has no path")
    return Path(url2pathname(unquote(parsed.path)))


def resolve_source(source: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the local folder for ``source``; raise ``DataSourceError`` when there is none."""
    if not isinstance(source, str) or not source.strip():
        raise _fail(str(source), "is empty")
    source = source.strip()
    if source.startswith("builtin:"):
        name = source[len("builtin:") :]
        if name not in BUILTINS:
            raise _fail(source, "is not a known builtin dataset")
        return BUILTINS[name](cache_dir)
    match = _SCHEME.match(source)
    if match:
        scheme = match.group(1).lower()
        if scheme != "file":
            raise _fail(source, f"uses scheme {scheme!r}, which this trainer cannot read")
        path = _file_uri_path(source)
    else:
        path = Path(source).expanduser()
    path = path.absolute()
    if not path.exists():
        raise _fail(source, f"does not exist (looked for {path})")
    if not path.is_dir():
        raise _fail(source, f"is not a folder ({path}); point it at an ImageFolder root")
    return path
