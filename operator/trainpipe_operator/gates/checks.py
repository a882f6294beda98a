"""A gate is a list of checks. Each yields pass, warn (passes, with a note),
fail, or skip (not applicable, with the reason). A gate passes when no
mandatory check fails. Every result carries the measured value, the
threshold and where the evidence came from."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal, TypeGuard

from trainpipe_operator.spec.status import CheckStatus, GateStatus

Outcome = Literal["pass", "warn", "fail", "skip"]
Value = str | float | int | bool | None


@dataclass(frozen=True)
class Check:
    id: str
    result: Outcome
    value: Value = None
    threshold: str | float | int | None = None
    evidence: str = ""
    message: str = ""
    mandatory: bool = True

    def to_status(self) -> CheckStatus:
        return CheckStatus(
            id=self.id, result=self.result, mandatory=self.mandatory, value=self.value,
            threshold=self.threshold, evidence=self.evidence, message=self.message,
        )


def passed(id: str, value: Value = None, threshold: str | float | int | None = None,
           evidence: str = "", message: str = "", mandatory: bool = True) -> Check:
    return Check(id, "pass", value, threshold, evidence, message, mandatory)


def warned(id: str, value: Value = None, threshold: str | float | int | None = None,
           evidence: str = "", message: str = "", mandatory: bool = True) -> Check:
    return Check(id, "warn", value, threshold, evidence, message, mandatory)


def failed(id: str, value: Value = None, threshold: str | float | int | None = None,
           evidence: str = "", message: str = "", mandatory: bool = True) -> Check:
    return Check(id, "fail", value, threshold, evidence, message, mandatory)


def skipped(id: str, reason: str, evidence: str = "", mandatory: bool = True) -> Check:
    return Check(id, "skip", None, None, evidence, reason, mandatory)


@dataclass
class GateResult:
    gate: str  # e.g. "reproducibility", "post-baseline"
    phase: str  # e.g. "Planning"
    checks: list[Check] = field(default_factory=list)
    iteration: int = 0

    @property
    def passed(self) -> bool:
        return not any(c.result == "fail" and c.mandatory for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.result == "fail" and c.mandatory]

    def check(self, id: str) -> Check:
        for c in self.checks:
            if c.id == id:
                return c
        raise KeyError(f"gate {self.gate} has no check {id!r}")

    def to_status(self, now: datetime | None = None) -> GateStatus:
        stamp = (now or datetime.now(timezone.utc)).isoformat()
        return GateStatus(
            gate=self.gate, phase=self.phase, passed=self.passed, iteration=self.iteration,
            evaluated_at=stamp, checks=[c.to_status() for c in self.checks],
        )


# ---------------------------------------------------------------- helpers
# Small, pure helpers the gate modules share. None of them import torch.

def field_of(obj: object, name: str, default: object = None) -> object:
    """``obj.name`` or ``obj[name]``: the result contracts may arrive as pydantic
    models or as the plain dicts read from their JSON."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def is_finite(value: object) -> TypeGuard[float]:
    """A real number that is neither NaN nor infinite (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def first_few(items: list[str], limit: int = 5) -> str:
    """``a, b, c (and 4 more)``: long lists stay readable in a message."""
    shown = ", ".join(items[:limit])
    rest = len(items) - limit
    return f"{shown} (and {rest} more)" if rest > 0 else shown


_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def markdown_headings(text: str) -> list[str]:
    """The text of every ATX heading (``## Final Metrics``), in order."""
    return [m.group(1).strip() for m in _HEADING.finditer(text)]


def missing_sections(text: str, sections: tuple[str, ...] | list[str]) -> list[str]:
    """The sections with no heading that contains their name (case-insensitive):
    ``## Checkpoints Saved`` counts as Checkpoints, ``## Decision Point`` as Decision."""
    headings = [h.lower() for h in markdown_headings(text)]
    return [s for s in sections if not any(s.lower() in h for h in headings)]


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def quotes_figure(text: str, value: float, tolerance: float | None = None) -> bool:
    """Whether ``text`` quotes ``value``: some number in it equals the value to
    the precision a report prints (4 decimals, or 0.1% relative for large
    values). A report a reader trusts must carry the measured figures."""
    tol = tolerance if tolerance is not None else max(abs(value) * 1e-3, 6e-5)
    for match in _NUMBER.finditer(text):
        try:
            number = float(match.group())
        except ValueError:
            continue
        if abs(number - value) <= tol:
            return True
    return False
