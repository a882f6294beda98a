"""YAML read and written with libyaml's C parser and emitter where PyYAML
has them (the pure-Python ones otherwise): the same safe subset, about ten
times faster. The operator reads and writes a pipeline's run-directory YAML
on every reconcile; at hundreds of pipelines, the pure-Python parser was
the largest share of a phase transition's CPU (bench/operator_scale.py)."""

from __future__ import annotations

from typing import IO, Any

import yaml

SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
    """``yaml.safe_load``, with the C parser when there is one."""
    return yaml.load(stream, Loader=SafeLoader)  # noqa: S506 - a safe loader, C or Python


def dump(data: Any, sort_keys: bool = False) -> str:
    """``yaml.safe_dump(data, sort_keys=...)``, with the C emitter when there is one."""
    return str(yaml.dump(data, Dumper=SafeDumper, sort_keys=sort_keys))
