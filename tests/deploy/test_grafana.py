"""Grafana provisioning and dashboards: one fixed datasource uid, and queries that name only
metrics verisolve defines (so a renamed metric cannot leave a panel silently empty)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from verisolve import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Series Prometheus itself writes, which the dashboards and rules may use too.
PROMETHEUS_SERIES = {"up"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
KEYWORDS = {"bool", "and", "or", "unless", "offset", "inf", "nan"}


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced by values PromQL accepts."""
    expr = re.sub(r"\$__(?:rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values query) reads."""
    expr = grafana_to_promql(expr)
    found = set(re.findall(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,", expr))
    expr = re.sub(r"label_values\([^)]*\)", "", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(GROUPING, " ", expr)
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        if match[2] is None and match[1] not in KEYWORDS:
            found.add(match[1])
    return found


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("verisolve_jobs", {"verisolve_jobs"}),
        ('sum by (le, stage) (rate(a_bucket{x="y"}[$__rate_interval]))', {"a_bucket"}),
        ('time() - b{job_id=~"$job_id"}', {"b"}),
        ("label_values(c_info, job_id)", {"c_info"}),
        ("d > 0 and on (queue) e == 0", {"d", "e"}),
        ("1e3 * f offset 5m", {"f"}),
        ('histogram_quantile(0.9, sum by (le) (rate(g{a="by (x)"}[5m])))', {"g"}),
    ],
)
def test_metric_names_are_read_from_expressions(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # rows


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expression) for every panel target and templating query."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield f"{board['uid']} / {panel['title']}", target["expr"]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            yield f"{board['uid']} / ${variable['name']}", query


def datasource_uid() -> str:
    config = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    return str(source["uid"])


def test_there_is_a_dashboard_for_each_concern() -> None:
    titles = {dashboard(p)["uid"] for p in DASHBOARDS}
    assert titles == {
        "verisolve-throughput",
        "verisolve-queues",
        "verisolve-latency",
        "verisolve-jobs",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_uses_the_provisioned_datasource(path: Path) -> None:
    uid = datasource_uid()
    board = dashboard(path)
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_names_only_metrics_that_verisolve_defines(path: Path) -> None:
    defined = metrics.sample_names() | PROMETHEUS_SERIES
    for where, expr in queries(dashboard(path)):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= defined, f"{where}: unknown {sorted(names - defined)} in {expr!r}"


def test_alert_rules_name_only_metrics_that_verisolve_defines() -> None:
    defined = metrics.sample_names() | PROMETHEUS_SERIES
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names, rule["alert"]
            assert names <= defined, f"{rule['alert']}: {sorted(names - defined)}"


def test_every_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses rule expressions: one recording rule per dashboard query checks them all.
    exprs = [
        grafana_to_promql(expr)
        for path in DASHBOARDS
        for _, expr in queries(dashboard(path))
        if not expr.startswith("label_values(")
    ]
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
