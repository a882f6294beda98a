"""Phase 4: turn ranked recommendations into the next job's settings (what
``optimization_config.yaml`` holds).

Changes are applied in the recommendations' order (best ranked first). The
first change to a path wins; a later change to the same path is skipped and
noted, as is a change that would make the settings invalid (out of the job
config's bounds, warmup or patience not shorter than training) or that is a
no-op. ``plan_changes`` returns the skipped ones too, for the report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from trainpipe_operator.diagnosis.recommendations import ConfigChange, Recommendation
from trainpipe_operator.diagnosis.settings import PATHS, TrainSettings

log = logging.getLogger(__name__)


@dataclass
class ApplyPlan:
    settings: TrainSettings
    applied: list[ConfigChange] = field(default_factory=list)
    skipped: list[ConfigChange] = field(default_factory=list)


def plan_changes(
    settings: TrainSettings,
    recommendations: Sequence[Recommendation],
    top_k: int | None = None,
) -> ApplyPlan:
    """Apply the first ``top_k`` recommendations (all when None) to a copy of ``settings``."""
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    current = settings.model_copy(deep=True)
    plan = ApplyPlan(settings=current)
    changed_by: dict[str, str] = {}
    chosen = list(recommendations) if top_k is None else list(recommendations)[:top_k]
    for rec in chosen:
        for change in rec.changes:
            rid = change.recommendation_id or rec.id
            reason = _why_not(current, change, changed_by)
            if reason is None:
                candidate, reason = _try(current, change)
                if candidate is not None:
                    plan.applied.append(change.model_copy(update={
                        "old": current.get(change.path), "recommendation_id": rid, "note": "",
                    }))
                    current = candidate
                    changed_by[change.path] = rid
                    continue
            skipped = change.model_copy(update={"recommendation_id": rid, "note": reason})
            log.info("Skipped %s (%s): %s", change.describe(), rid, reason)
            plan.skipped.append(skipped)
    plan.settings = current
    return plan


def apply_recommendations(
    settings: TrainSettings,
    recommendations: Sequence[Recommendation],
    top_k: int | None = None,
) -> tuple[TrainSettings, list[ConfigChange]]:
    """The new settings and the changes applied (``old`` is the value replaced).
    Skipped changes are logged; ``plan_changes`` returns them."""
    plan = plan_changes(settings, recommendations, top_k)
    return plan.settings, plan.applied


def _why_not(current: TrainSettings, change: ConfigChange, changed_by: dict[str, str]) -> str | None:
    if change.path not in current.paths():
        if change.path in PATHS:
            return f"{change.path} is not read by task {current.task}"
        return f"unknown config path {change.path!r}"
    if change.path in changed_by:
        return f"{change.path} already changed by {changed_by[change.path]}"
    if current.get(change.path) == change.new:
        return f"no-op: {change.path} is already {change.new!r}"
    return None


def _try(current: TrainSettings, change: ConfigChange) -> tuple[TrainSettings | None, str]:
    values = current.model_dump()
    values[PATHS[change.path]] = change.new
    try:
        candidate = TrainSettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        return None, f"invalid: {change.path} = {change.new!r}: {first['msg']}"
    introduced = [p for p in candidate.problems() if p not in current.problems()]
    if introduced:
        return None, f"invalid: {'; '.join(introduced)}"
    return candidate, ""
