"""Render the Helm chart with the real helm binary (hack/helm.sh provides
it), for the chart's unit tests and the integration tests that apply it."""

from __future__ import annotations

import json
import re
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "trainpipe"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))


@lru_cache(maxsize=1)
def helm_binary() -> str:
    """The cached helm (hack/helm.sh fetches it once; `make test` runs it first)."""
    result = subprocess.run([str(REPO / "hack" / "helm.sh")], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"hack/helm.sh could not provide helm: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def render(*value_files: Path, sets: dict[str, str] | None = None, release: str = "trainpipe",
           namespace: str = "trainpipe-system", include_crds: bool = False) -> list[dict[str, Any]]:
    """``helm template`` -> the rendered objects (empty documents dropped)."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    for path in value_files:
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (configmap,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    (text,) = configmap["data"].values()
    return json.loads(text)


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query target of every panel."""
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]


def alert_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rule = one(docs, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


_METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[|\)|$|\s)")
_PROMQL_WORDS = {
    "sum", "avg", "max", "min", "count", "by", "without", "rate", "increase", "histogram_quantile", "time",
    "absent", "or", "and", "unless", "on", "ignoring", "vector", "le", "bool",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (good enough for our own queries:
    label matchers and strings removed, then identifiers that are not PromQL words)."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "{}", bare)
    bare = re.sub(r"\[[^\]]*\]", "[]", bare)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    return {m for m in _METRIC.findall(bare) if m not in _PROMQL_WORDS and not m.startswith("$")}


def values_table() -> str:
    """The chart's values as a Markdown table (key, type, default,
    description), from values.schema.json and values.yaml: the README's
    table must equal it."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        props = node.get("properties")
        if node.get("type") == "object" and props and path.split(".")[-1] not in ("resources",):
            for key, child in props.items():
                walk(child, (value or {}).get(key) if isinstance(value, dict) else None, f"{path}.{key}" if path else key)
            return
        kind = node.get("type", "object")
        if "enum" in node:
            kind = " \\| ".join(f"`{v}`" for v in node["enum"])
        default = json.dumps(value) if value not in (None, "") else '`""`' if value == "" else ""
        default = f"`{default}`" if default and not default.startswith("`") else default
        rows.append(f"| `{path}` | {kind} | {default} | {node.get('description', '')} |")

    walk(schema, defaults, "")
    return "\n".join(rows) + "\n"
