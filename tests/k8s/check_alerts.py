#!/usr/bin/env python3
"""The alert rules and the Grafana dashboard of k8s/components/monitoring, offline.

  - the PrometheusRule's groups pass `promtool check rules` and the cases of
    tests/k8s/alerts/alerts_test.yaml pass `promtool test rules`;
  - every alert has a case that fires and a case that does not;
  - every wsgate_* metric an alert or a dashboard query names is one the daemons serve
    (docs/METRICS-gateway.md, docs/METRICS-processor.md, generated from their tables).
The dashboard's queries are run against a live Prometheus by tests/monitoring/run.

usage: check_alerts.py --rules PROMETHEUSRULE --tests ALERTS_TEST --dashboard JSON
Exit status: 0 all passed, 1 not, 77 promtool missing (skip).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_render  # noqa: E402

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def served_metrics():
    names = set()
    for daemon in ("gateway", "processor"):
        with open(os.path.join(DOCS, f"METRICS-{daemon}.md"), encoding="utf-8") as f:
            names |= set(re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", f.read(), re.M))
    return names


def unknown_metrics(expr, served):
    bad = []
    for m in re.findall(r"\b(wsgate_[a-z0-9_]+)", expr):
        base = next((m[: -len(s)] for s in HISTOGRAM_SUFFIXES if m.endswith(s) and m[: -len(s)] in served), m)
        if base not in served:
            bad.append(m)
    return bad


def dashboard_exprs(path):
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets") or []:
                out.append((p.get("title"), t.get("expr", "")))
            walk(p.get("panels") or [])
    walk(dash.get("panels") or [])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rules", required=True)
    ap.add_argument("--tests", required=True)
    ap.add_argument("--dashboard", required=True)
    args = ap.parse_args()
    k8s_render.ensure_modules("yaml")
    import yaml

    promtool = shutil.which("promtool")
    if not promtool:
        k8s_render.skip("promtool not found (Debian's prometheus package): run scripts/setup")
    errors = []
    with open(args.rules, encoding="utf-8") as f:
        groups = yaml.safe_load(f)["spec"]["groups"]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    served = served_metrics()
    for r in alerts:
        for m in unknown_metrics(r["expr"], served):
            errors.append(f"alert {r['alert']}: {m} is not a metric the daemons serve (docs/METRICS-*.md)")
    exprs = dashboard_exprs(args.dashboard)
    if not exprs:
        errors.append(f"{args.dashboard}: no panel with a query")
    for title, expr in exprs:
        if not expr.strip():
            errors.append(f"dashboard panel {title!r}: a target without a query")
        for m in unknown_metrics(expr, served):
            errors.append(f"dashboard panel {title!r}: {m} is not a metric the daemons serve")
    with open(args.tests, encoding="utf-8") as f:
        cases = yaml.safe_load(f)
    fires, quiet = set(), set()
    for t in cases["tests"]:
        for c in t.get("alert_rule_test") or []:
            (fires if c.get("exp_alerts") else quiet).add(c["alertname"])
    for r in alerts:
        if r["alert"] not in fires:
            errors.append(f"alert {r['alert']}: no promtool case in which it fires")
        if r["alert"] not in quiet:
            errors.append(f"alert {r['alert']}: no promtool case in which it stays quiet")
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "rules.yml")
        with open(rules, "w", encoding="utf-8") as f:
            yaml.safe_dump({"groups": groups}, f, sort_keys=False)
        shutil.copy(args.tests, os.path.join(tmp, "alerts_test.yaml"))
        for cmd in ([promtool, "check", "rules", rules], [promtool, "test", "rules", os.path.join(tmp, "alerts_test.yaml")]):
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            print(p.stdout.strip())
            if p.returncode != 0:
                errors.append(f"{' '.join(cmd[1:3])} failed:\n{p.stdout}{p.stderr}")
    print(f"{len(alerts)} alerts, {len(exprs)} dashboard queries")
    return k8s_render.verdict(errors, None, "problem(s)")


if __name__ == "__main__":
    sys.exit(main())
