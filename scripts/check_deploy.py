"""Checks deploy/ against the server's own code (run by scripts/check_deploy.sh).

- Every ``smsgw_*`` series the Grafana dashboard and the alert rules name is one the
  server exports: the names and labels are read from the exposition a real
  ``GatewayMetrics`` renders (server/metrics.py), not from a list kept here.
- Every label a selector matches on belongs to that metric (or is job/instance/le).
- The dashboard is valid JSON with unique panel ids, every panel has a query, and its
  PromQL parses: the queries (Grafana's variables given values) are written as
  recording rules to the file named by ``--promql-out`` for ``promtool check rules``.
- The routing file in the Kubernetes ConfigMap is one smsgw accepts.

Exit status 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.metrics import GatewayMetrics  # noqa: E402
from server.routes_file import parse_routing  # noqa: E402

DASHBOARD = ROOT / "deploy/grafana/smsgw-dashboard.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
CONFIGMAP = ROOT / "deploy/kubernetes/configmap.yaml"

NAME = re.compile(r"\bsmsgw_[A-Za-z0-9_]+")
SELECTOR = re.compile(r"\b(smsgw_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance"}
# Grafana's variables, given values that make the query plain PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$datasource": "prometheus",
    "$job": ".*",
    "$instance": ".*",
    "$provider": ".*",
}


def exported_series() -> dict[str, set[str]]:
    """Series name -> label names, from the exposition of the server's metrics."""
    metrics = GatewayMetrics()
    metrics.watch_breakers(lambda: {"loopback": "closed"})
    text = generate_latest(metrics.registry).decode()
    series: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split()
        if name.endswith("_created"):
            continue
        suffixes = {"histogram": ("_bucket", "_count", "_sum")}.get(kind, ("",))
        for suffix in suffixes:
            series[name + suffix] = set()
    # Label names: the wrappers know theirs even before a child exists; a
    # custom collector shows them on the samples it yields.
    for wrapper in vars(metrics).values():
        labelnames = getattr(wrapper, "_labelnames", None)
        base = getattr(wrapper, "_name", None)
        if labelnames is None or base is None:
            continue
        for name in series:
            if name == base or name.startswith(base + "_"):
                series[name] |= set(labelnames)
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name in series:
                series[sample.name] |= set(sample.labels)
    for name in series:
        if name.endswith("_bucket"):
            series[name].add("le")
    return series


def dashboard_queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expression) of every panel target and templating query."""

    def panels(items: list[Any]) -> Iterator[Mapping[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} {target.get('refId')}", target.get("expr", "")
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            text = query.get("query", "") if isinstance(query, dict) else str(query)
            yield f"variable ${variable.get('name')}", text


def alert_expressions(rules: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for group in rules["groups"]:
        for rule in group["rules"]:
            where = f"rule {rule.get('alert') or rule.get('record')}"
            yield where, rule["expr"]
            for key, text in rule.get("annotations", {}).items():
                yield f"{where} annotation {key}", text


def check_names(where: str, text: str, series: Mapping[str, set[str]]) -> list[str]:
    problems = [
        f"{where}: {name} is not a series smsgw exports"
        for name in sorted(set(NAME.findall(text)))
        if name not in series
    ]
    for name, matchers in SELECTOR.findall(text):
        if name not in series:
            continue
        allowed = series[name] | TARGET_LABELS
        for label in MATCHER.findall(matchers):
            if label not in allowed:
                problems.append(f"{where}: {name} has no label {label!r}")
    return problems


def check_dashboard(dashboard: Mapping[str, Any]) -> list[str]:
    problems = []
    ids: set[int] = set()

    def walk(items: list[Any]) -> None:
        for panel in items:
            if panel["id"] in ids:
                problems.append(f"panel id {panel['id']} is used twice")
            ids.add(panel["id"])
            if panel.get("type") != "row" and not panel.get("targets"):
                problems.append(f"panel {panel.get('title')!r} has no query")
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    if not dashboard.get("uid") or not dashboard.get("title"):
        problems.append("the dashboard needs a uid and a title")
    return problems


def promql_rules(dashboard: Mapping[str, Any]) -> dict[str, Any]:
    """The dashboard's panel queries as recording rules, for promtool to parse."""
    rules = []
    for index, (_, expr) in enumerate(dashboard_queries(dashboard)):
        if expr.startswith("label_values("):
            continue
        for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    return {"groups": [{"name": "dashboard", "rules": rules}]}


def check_routing() -> list[str]:
    configmap = yaml.safe_load(CONFIGMAP.read_text())
    document = tomllib.loads(configmap["data"]["smsgw.toml"])

    class AnyCredential(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "set-in-the-secret"

        def get(self, key: str, default: Any = None) -> str:
            return self[key]

        def __contains__(self, key: object) -> bool:
            return True

    try:
        parse_routing(document, AnyCredential())
    except ValueError as exc:
        return [f"{CONFIGMAP.name}: smsgw.toml is refused: {exc}"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promql-out", type=Path, required=True)
    args = parser.parse_args()

    series = exported_series()
    dashboard = json.loads(DASHBOARD.read_text())
    rules = yaml.safe_load(ALERTS.read_text())
    recorded = {
        rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule
    }

    problems = check_dashboard(dashboard)
    for where, text in [*dashboard_queries(dashboard), *alert_expressions(rules)]:
        problems += check_names(where, text, series)
        problems += [
            f"{where}: {name} is not a recording rule of {ALERTS.name}"
            for name in re.findall(r"\bsmsgw:[A-Za-z0-9_:]+", text)
            if name not in recorded
        ]
    problems += check_routing()
    args.promql_out.write_text(yaml.safe_dump(promql_rules(dashboard), sort_keys=False))

    for problem in problems:
        print(problem, file=sys.stderr)
    queries = sum(1 for _ in dashboard_queries(dashboard))
    print(
        f"deploy: {queries} dashboard queries and {sum(1 for _ in alert_expressions(rules))} "
        f"rule texts name only exported series ({len(series)} known); "
        f"{len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
