"""The README stays true: every job-config field and every exported metric
is documented, and the two commands are the Makefile's."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from trainpipe_trainer.contract.job_config import JobConfig
from trainpipe_trainer.engine.telemetry import METRICS, markdown_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        path = prefix + (field.alias or name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += field_paths(annotation, path + ".")
        else:
            paths.append(path)
    return paths


def test_every_job_config_field_is_in_the_reference() -> None:
    missing = [p for p in field_paths(JobConfig) if f"`{p}`" not in README]
    assert not missing, f"document these fields in README.md: {missing}"


def test_the_metrics_table_is_the_exported_one() -> None:
    assert markdown_table() in README
    assert all(spec.name in README for spec in METRICS)


def test_the_manifest_reference_is_generated_from_the_spec_models() -> None:
    from trainpipe_operator.spec.reference import markdown_table as spec_table

    assert spec_table() in README


def test_the_two_commands_are_make_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "make run " in README and "make test " in README
    assert "\nrun:" in makefile and "\ntest:" in makefile
    # make run runs the embedded default (EXAMPLE=... picks another example)
    assert "EXAMPLE ?= examples/digits.yaml" in makefile and "trainpipe run $(EXAMPLE)" in makefile
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_the_helm_values_table_is_generated_from_the_chart_schema() -> None:
    from tests.chart_render import values_table

    assert values_table() in README, "README's Helm values table is stale: paste tests.chart_render.values_table()"


def test_the_readme_names_every_alert_the_chart_ships() -> None:
    from tests.chart_render import alert_rules, render

    for rule in alert_rules(render(sets={"metrics.prometheusRule.enabled": "true"})):
        assert f"`{rule['alert']}`" in README, rule["alert"]
