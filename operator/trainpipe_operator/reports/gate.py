"""A gate's markdown report: every check with its result, value, threshold
and evidence source."""

from __future__ import annotations

from trainpipe_operator.gates.checks import GateResult
from trainpipe_operator.reports.markdown import table

ICONS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}


def render_gate(result: GateResult, title: str) -> str:
    verdict = "PASSED" if result.passed else "FAILED"
    rows = [
        (c.id, ICONS[c.result] + ("" if c.mandatory else " (optional)"), c.value, c.threshold, c.evidence, c.message)
        for c in result.checks
    ]
    lines = [
        f"# {title}",
        "",
        f"Gate `{result.gate}` (phase {result.phase}, iteration {result.iteration}): **{verdict}**.",
        "A gate passes when no mandatory check fails; a warning passes with a note.",
        "",
        table(["check", "result", "value", "threshold", "evidence", "note"], rows),
        "",
    ]
    if result.failures:
        lines += ["## What blocks it", ""]
        lines += [f"- `{c.id}`: {c.message}" for c in result.failures]
        lines.append("")
    return "\n".join(lines)
