#!/usr/bin/env python3
"""Renders the sonde chart with real Helm and validates every object.

    chart.py render CHART [-f VALUES.yaml]... [--name R] [--namespace N]

Helm is the Helm v4 SDK (PyPI helm-python-sdk, no helm binary): `helm lint
--strict` with the same values, the chart's values.schema.json, then the render.
Every object goes through kubernetes-validate --strict against the oldest and the
newest Kubernetes the chart supports; custom resources (ServiceMonitor,
PrometheusRule...) have no schema there and are listed as such. Prints one JSON
object on stdout:

    {"objects": [...], "files": {"template path": [kind/name...]},
     "lint": [messages], "validated": {"Kind/name": ["1.25", ...]},
     "no_schema": ["Kind/name"], "errors": [...]}

and exits 1 when `errors` is not empty. Needs PYTHONPATH with the packages of
tests/kubernetes/requirements.txt.
"""

import argparse
import json
import sys

import yaml

import helm_python as helm
from kubernetes_validate import utils as kv

KUBE_VERSIONS = ["1.25.0", kv.latest_version() + ".0"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["render"])
    p.add_argument("chart")
    p.add_argument("-f", "--values", action="append", default=[])
    p.add_argument("--name", default="sonde")
    p.add_argument("--namespace", default="sonde")
    a = p.parse_args()

    values = {}
    for f in a.values:
        with open(f) as fh:
            values = merge(values, yaml.safe_load(fh) or {})

    out = {"objects": [], "files": {}, "lint": [], "validated": {}, "no_schema": [], "errors": []}
    report = helm.lint(a.chart, values, strict=True, namespace=a.namespace, kube_version="v1.25.0")
    for m in report.get("messages", []):
        out["lint"].append(m)
        # 1 info, 2 warning, 3 error: strict lint fails on warnings too.
        if m.get("severity", 0) >= 2:
            out["errors"].append(f"helm lint: {m.get('path')}: {m.get('error')}")
    out["errors"] += [f"helm lint: {e}" for e in report.get("errors", [])]

    with helm.Chart.load(a.chart) as chart:
        try:
            chart.validate_schema(values)
        except helm.HelmError as e:
            out["errors"].append(f"values.schema.json: {e}")
            print(json.dumps(out))
            return 1
        rendered = chart.render(values, name=a.name, namespace=a.namespace, is_install=True)

    for path in sorted(rendered):
        if not path.endswith((".yaml", ".yml")):
            continue
        names = []
        for doc in yaml.safe_load_all(rendered[path]):
            if not doc:
                continue
            out["objects"].append(doc)
            kn = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            names.append(kn)
            for v in KUBE_VERSIONS:
                try:
                    kv.validate(doc, v, strict=True)
                    out["validated"].setdefault(kn, []).append(v)
                except kv.SchemaNotFoundError:
                    if kn not in out["no_schema"]:
                        out["no_schema"].append(kn)
                except kv.ValidationError as e:
                    where = ".".join(str(x) for x in e.path)
                    out["errors"].append(f"{path}: {kn} (Kubernetes {v}): {where}: {e.message}")
        if names:
            out["files"][path] = names

    print(json.dumps(out))
    return 1 if out["errors"] else 0


def merge(a, b):
    """Helm's rule for -f files: maps merge, everything else is replaced."""
    if isinstance(a, dict) and isinstance(b, dict):
        r = dict(a)
        for k, v in b.items():
            r[k] = merge(a.get(k), v) if k in a else v
        return r
    return b


if __name__ == "__main__":
    sys.exit(main())
