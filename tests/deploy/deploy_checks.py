#!/usr/bin/python3
"""Static checks of deploy/ with the real tools (ctest label `unit`, one subcommand per test).

    tests/deploy/deploy_checks.py SUBCOMMAND [--work DIR]

  helm-lint             helm lint --strict: default, production and all-features values
  k8s-validate          every rendered manifest against its kind's schema and field names
                        (validate_k8s.mjs), plus what the chart promises (probes, non-root, ...)
  validator-catches     validate_k8s.mjs fails on fixtures/bad-manifests.yaml as expected
  schema-rejects        every bad-values/*.yaml fails `helm template` with its expected message
  example-current       deploy/examples/production.yaml is what the chart renders now
  rules                 promtool check/test rules, runbooks, tier targets chart == script
  dashboard             gkaserve.json is build_dashboard.py's output, passes tsc against
                        @grafana/schema, and each of its queries parses with promtool
  metric-names          every metric the dashboard, rules and chart use is in docs/metrics.md
  docker                Dockerfile installs what the chart runs; runtime-packages.sh works

Tools come from scripts/deps.sh (helm in third_party/npm/k8s, node packages in
third_party/npm/node_modules, promtool from Debian). A missing tool makes a test skip (exit 77)
with the reason, unless GKA_REQUIRE_TOOLS=1 or CI is set: there deps.sh has run, so a missing
tool is a failure.
"""
import argparse
import difflib
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHART = ROOT / "deploy/helm/gkaserve"
PRODUCTION = CHART / "values-production.yaml"
ALL_FEATURES = HERE / "values-all-features.yaml"
# Under every other values file: names the Secret with the routers' and workers' certificates,
# which the chart requires unless tls.insecure (a bad-values file clears it again).
TLS_SECRET = HERE / "values-tls-secret.yaml"
RULES_DIR = ROOT / "deploy/prometheus/rules"
DASHBOARD = ROOT / "deploy/grafana/gkaserve.json"
EXAMPLE = ROOT / "deploy/examples/production.yaml"
NPM = ROOT / "third_party/npm"
NODE_MODULES = NPM / "node_modules"
SKIP = 77
BIN_DIR = None  # --bin-dir: this build's binaries (the docker check maps their libraries)

# The example's release: `helm template gkaserve ... --namespace gkaserve`.
EXAMPLE_RELEASE = "gkaserve"
EXAMPLE_HEADER = """\
# Rendered by: make -C deploy example
#   (helm template gkaserve deploy/helm/gkaserve --namespace gkaserve
#      -f deploy/helm/gkaserve/values-production.yaml)
# Do not edit: tests/deploy (deploy_example_current) fails when this differs from the chart.
"""


class Skip(Exception):
    pass


class Failed(Exception):
    pass


def skip_exit_code(reason):
    """A missing tool: SKIP (exit code 77) on a developer's machine, a failure (1) where the
    tools are required (CI, GKA_REQUIRE_TOOLS=1). Prints which."""
    if os.environ.get("GKA_REQUIRE_TOOLS") == "1" or os.environ.get("CI"):
        print(f"FAIL (tools are required here): {reason}")
        return 1
    print(f"SKIP: {reason}")
    return SKIP


def skip(reason):
    """Ends the process with skip_exit_code's verdict."""
    sys.exit(skip_exit_code(reason))


def require(condition, message):
    if not condition:
        raise Failed(message)


def find_tool(name, path=None):
    """`path` when it exists, else `name` on PATH (path=None) or a Skip naming what is missing."""
    found = str(path) if path and Path(path).exists() else (None if path else shutil.which(name))
    if not found:
        raise Skip(f"{name} not found ({path or 'PATH'}); scripts/deps.sh installs it")
    return found


def helm_path():
    return find_tool("helm", os.environ.get("GKA_HELM") or NPM / "k8s/helm/helm")


def run(cmd, check=True, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise Failed(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def helm(*args, check=True):
    p = run([helm_path(), *args], check=False)
    # Helm notes that the chart's files/ links (to deploy/prometheus/rules and deploy/grafana)
    # were followed; that is expected, not a finding.
    p.stderr = "\n".join(l for l in p.stderr.splitlines()
                         if "found symbolic link in path" not in l)
    if check and p.returncode != 0:
        raise Failed(f"helm {' '.join(args)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p


def render(*values, release="t", namespace="default", extra=()):
    args = ["template", release, str(CHART), "--namespace", namespace, *extra]
    for v in (TLS_SECRET, *values):
        args += ["-f", str(v)]
    return helm(*args).stdout


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


VALUE_SETS = {"default": (), "production": (PRODUCTION,), "all-features": (ALL_FEATURES,)}


# ---------------------------------------------------------------------------------------------
def cmd_helm_lint(work):
    for name, values in VALUE_SETS.items():
        args = ["lint", "--strict", str(CHART)]
        for v in (TLS_SECRET, *values):
            args += ["-f", str(v)]
        p = helm(*args, check=False)
        require(p.returncode == 0, f"helm lint ({name} values) failed:\n{p.stdout}{p.stderr}")
        require("0 chart(s) failed" in p.stdout, f"helm lint ({name}): {p.stdout}")
        print(f"ok helm lint --strict ({name} values)")


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d, d["spec"]["template"]["spec"]


def check_chart_promises(docs, values_name):
    """What the chart promises beyond the schemas: probes, security, GPUs, ports."""
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    require(not any(k == "Secret" for k, _ in kinds), "the chart must not render Secrets")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for extra in (TLS_SECRET, *VALUE_SETS[values_name]):
        merge(values, yaml.safe_load(Path(extra).read_text()))
    for d, spec in pod_specs(docs):
        name = d["metadata"]["name"]
        require(spec.get("automountServiceAccountToken") is False, f"{name}: token mounted")
        require(spec["securityContext"].get("runAsNonRoot") is True, f"{name}: may run as root")
        for c in spec["containers"]:
            where = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            require(sc.get("readOnlyRootFilesystem") is True, f"{where}: writable root fs")
            require(sc.get("allowPrivilegeEscalation") is False, f"{where}: may escalate")
            require(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: keeps caps")
            component = d["metadata"]["labels"]["app.kubernetes.io/component"]
            # Workers' gRPC port is mutual TLS, which the kubelet cannot speak: their probes
            # go to the plaintext health port. The router's public port is plaintext.
            probed = "health" if component in ("prefill", "decode") else "grpc"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                grpc = c.get(probe, {}).get("grpc")
                require(grpc is not None, f"{where}: {probe} is not a gRPC health probe")
                ports = {p["containerPort"] for p in c["ports"] if p["name"] == probed}
                require(grpc["port"] in ports, f"{where}: {probe} port {grpc['port']} is not "
                        f"the {probed} containerPort {ports}")
            # Routers and workers talk mutual TLS: the certificate Secret, mounted read-only.
            args = c.get("args", [])
            if values["tls"].get("insecure"):
                require("--insecure" in args, f"{where}: tls.insecure but no --insecure")
            else:
                require("--tls-cert=/etc/gkaserve-tls/tls.crt" in args and "--insecure" not in args,
                        f"{where}: no mutual TLS flags")
                tls_mount = next((m for m in c["volumeMounts"] if m["name"] == "tls"), None)
                require(tls_mount and tls_mount.get("readOnly") is True and
                        tls_mount["mountPath"] == "/etc/gkaserve-tls", f"{where}: TLS mount")
                tls_vol = next(v for v in spec["volumes"] if v["name"] == "tls")
                require(tls_vol["secret"]["secretName"] == values["tls"]["existingSecret"],
                        f"{where}: TLS volume {tls_vol}")
            require(c.get("resources", {}).get("limits", {}).get("memory"),
                    f"{where}: no memory limit")
            if component in ("prefill", "decode"):
                role = values[component]
                gpus = c["resources"]["limits"].get("nvidia.com/gpu")
                want = role["tpSize"] if role["backend"] == "cuda" else None
                require(gpus == want, f"{where}: nvidia.com/gpu {gpus}, tpSize says {want}")
                env = {e["name"]: e.get("value") for e in c["env"]}
                rng = values["ucx"]["tcpPortRange"]
                require(env.get("UCX_TCP_PORT_RANGE") == f"{rng['start']}-{rng['end']}",
                        f"{where}: UCX_TCP_PORT_RANGE {env.get('UCX_TCP_PORT_RANGE')}")
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                vols = {v["name"]: v for v in spec["volumes"]}
                require(vols[mounts["/dev/shm"]].get("emptyDir", {}).get("medium") == "Memory",
                        f"{where}: /dev/shm is not memory-backed")
                caps = c["securityContext"]["capabilities"].get("add", [])
                require(("IPC_LOCK" in caps) == bool(values["ucx"]["ipcLock"]),
                        f"{where}: IPC_LOCK {caps} vs ucx.ipcLock {values['ucx']['ipcLock']}")
    # The workers' NetworkPolicy lets the UCX range through.
    for d in docs:
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-workers"):
            rng = values["ucx"]["tcpPortRange"]
            ports = [p for rule in d["spec"]["ingress"] for p in rule.get("ports", [])]
            require(any(p["port"] == rng["start"] and p.get("endPort") == rng["end"]
                        for p in ports), f"workers NetworkPolicy lacks the UCX range {rng}")


def merge(base, override):
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v


def cmd_k8s_validate(work):
    node = find_tool("node")
    find_tool("tsc", NODE_MODULES / ".bin/tsc")
    find_tool("kubernetes-models", NODE_MODULES / "kubernetes-models/package.json")
    for name, values in VALUE_SETS.items():
        out = work / f"{name}.yaml"
        out.write_text(render(*values))
        p = run([node, HERE / "validate_k8s.mjs", NODE_MODULES, work / f"ts-{name}", out],
                check=False)
        print(p.stdout.rstrip())
        require(p.returncode == 0, f"{name} values: manifests failed validation\n{p.stderr}")
        docs = documents(out.read_text())
        check_chart_promises(docs, name)
        kinds = sorted({d["kind"] for d in docs})
        print(f"ok {name}: {len(docs)} manifests valid ({', '.join(kinds)})")
    prod = documents((work / "production.yaml").read_text())
    for kind in ("PodMonitor", "PrometheusRule"):
        require(any(d["kind"] == kind for d in prod), f"production values render no {kind}")
    sts = next(d for d in prod if d["kind"] == "StatefulSet")
    require(sts["spec"]["replicas"] == 8, "production: decode replicas != 8")
    dep = next(d for d in prod if d["kind"] == "Deployment" and "prefill" in d["metadata"]["name"])
    require(dep["spec"]["replicas"] == 4, "production: prefill replicas != 4")


def expectations(path):
    return [l[len("# expect: "):].rstrip("\n") for l in Path(path).read_text().splitlines()
            if l.startswith("# expect: ")]


def cmd_validator_catches(work):
    node = find_tool("node")
    find_tool("kubernetes-models", NODE_MODULES / "kubernetes-models/package.json")
    fixture = HERE / "fixtures/bad-manifests.yaml"
    p = run([node, HERE / "validate_k8s.mjs", NODE_MODULES, work / "ts-bad", fixture],
            check=False)
    print(p.stdout.rstrip())
    require(p.returncode == 1, f"validator exited {p.returncode} on bad manifests\n{p.stderr}")
    for e in expectations(fixture):
        require(e in p.stdout, f"validator output lacks: {e}")
    print(f"ok validator caught all {len(expectations(fixture))} expected problems")


def cmd_schema_rejects(work):
    files = sorted((HERE / "bad-values").glob("*.yaml"))
    require(files, "no bad-values files")
    for f in files:
        exp = expectations(f)
        require(len(exp) == 1, f"{f.name}: needs exactly one '# expect:' line")
        p = helm("template", "t", str(CHART), "-f", str(TLS_SECRET), "-f", str(f), check=False)
        require(p.returncode != 0, f"{f.name}: helm template accepted it")
        require(exp[0] in p.stderr, f"{f.name}: error lacks '{exp[0]}':\n{p.stderr}")
        print(f"ok {f.name}: rejected ({exp[0]})")


def example_text():
    return EXAMPLE_HEADER + render(PRODUCTION, release=EXAMPLE_RELEASE, namespace=EXAMPLE_RELEASE)


def cmd_example_current(work):
    want = example_text()
    have = EXAMPLE.read_text() if EXAMPLE.exists() else ""
    if want != have:
        diff = "".join(difflib.unified_diff(have.splitlines(True), want.splitlines(True),
                                            "deploy/examples/production.yaml", "rendered", n=1))
        raise Failed(f"{EXAMPLE} is stale; run `make -C deploy example`:\n{diff[:4000]}")
    print(f"ok {EXAMPLE.relative_to(ROOT)} matches the chart ({len(want.splitlines())} lines)")


# ---------------------------------------------------------------------------------------------
def rule_files():
    return sorted(RULES_DIR.glob("*.yml"))


def load_rules():
    groups = []
    for f in rule_files():
        groups += yaml.safe_load(f.read_text())["groups"]
    return groups


def github_anchors(markdown):
    """Anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def target_value(expr):
    m = re.fullmatch(r"vector\(([0-9.eE+-]+)\)", expr.strip())
    require(m, f"tier target expression is not vector(number): {expr}")
    return float(m.group(1))


def normalised_targets(group):
    return sorted((r["record"], r["labels"]["tier"], target_value(r["expr"]))
                  for r in group["rules"])


def cmd_rules(work):
    promtool = find_tool("promtool")
    run([promtool, "check", "rules", *rule_files()])
    print(f"ok promtool check rules ({len(rule_files())} files)")
    p = run([promtool, "test", "rules", HERE / "prometheus/alerts_test.yml"], check=False)
    require(p.returncode == 0, f"promtool test rules failed:\n{p.stdout}{p.stderr}")
    print("ok promtool test rules tests/deploy/prometheus/alerts_test.yml")

    docs = (ROOT / "docs/deploy.md")
    anchors = github_anchors(docs.read_text()) if docs.exists() else set()
    tests = (HERE / "prometheus/alerts_test.yml").read_text()
    alerts = [r for g in load_rules() for r in g["rules"] if "alert" in r]
    require(alerts, "no alerting rules")
    for r in alerts:
        name = r["alert"]
        url = r.get("annotations", {}).get("runbook_url", "")
        require(url == f"docs/deploy.md#{name.lower()}",
                f"{name}: runbook_url {url!r}, want docs/deploy.md#{name.lower()}")
        require(name.lower() in anchors, f"{name}: docs/deploy.md has no heading '{name}'")
        require(r.get("labels", {}).get("severity") in ("page", "ticket"),
                f"{name}: severity must be page or ticket")
        require(r.get("annotations", {}).get("summary"), f"{name}: no summary")
        require(f"alertname: {name}\n" in tests, f"{name}: no promtool unit test")
    print(f"ok {len(alerts)} alerts: runbooks in docs/deploy.md, severities, unit tests")

    # The chart's tier targets (from values) equal tier_targets.py's (from a tier file).
    for name, values in (("default", ()), ("production", (PRODUCTION,))):
        rendered = documents(render(*values, extra=["--set", "monitoring.prometheusRule.enabled=true"]))
        cm = next(d for d in rendered if d["kind"] == "ConfigMap" and "tiers.json" in d["data"])
        tier_file = work / f"tiers-{name}.json"
        tier_file.write_text(cm["data"]["tiers.json"])
        script = json.loads(run([sys.executable, ROOT / "deploy/prometheus/tier_targets.py",
                                 tier_file]).stdout)["groups"][0]
        rule = next(d for d in rendered if d["kind"] == "PrometheusRule")
        groups = rule["spec"]["groups"]
        chart = next(g for g in groups if g["name"] == "gkaserve-tier-targets")
        require(normalised_targets(chart) == normalised_targets(script),
                f"{name}: chart tier targets {normalised_targets(chart)} != "
                f"tier_targets.py {normalised_targets(script)}")
        require(script["rules"], f"{name}: the tiers have no targets to alert on")
        # The PrometheusRule carries the rule files unchanged (runbook base URL aside).
        files = load_rules()
        require([g["name"] for g in groups] == [g["name"] for g in files] + [chart["name"]],
                f"{name}: PrometheusRule groups {[g['name'] for g in groups]}")
        for fg, cg in zip(files, groups):
            for fr, cr in zip(fg["rules"], cg["rules"]):
                a, b = dict(fr), dict(cr)
                a.pop("annotations", None), b.pop("annotations", None)
                require(a == b, f"{name}: PrometheusRule differs from the files: {a} != {b}")
        # And a promtool check of exactly what the chart deploys.
        out = work / f"chart-rules-{name}.yml"
        out.write_text(yaml.safe_dump({"groups": groups}))
        run([promtool, "check", "rules", out])
        print(f"ok {name}: chart PrometheusRule == rule files + {len(script['rules'])} tier "
              "targets (== tier_targets.py), promtool-clean")


# ---------------------------------------------------------------------------------------------
def dashboard_targets(dash):
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            yield panel, t


def promql_for_promtool(expr):
    """Grafana variables replaced so promtool can parse the query."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    # Variables inside label matcher strings are fine as they are; elsewhere they stand for
    # numbers (the MFU textboxes).
    parts = re.split(r'("(?:[^"\\]|\\.)*")', expr)
    return "".join(p if p.startswith('"') else re.sub(r"\$\w+", "1", p) for p in parts)


ALLOWED_TARGET_KEYS = {"refId", "datasource", "expr", "legendFormat", "instant", "range",
                       "interval", "format", "hide"}


def cmd_dashboard(work):
    built = run([sys.executable, ROOT / "deploy/grafana/build_dashboard.py"]).stdout
    require(built == DASHBOARD.read_text(),
            "deploy/grafana/gkaserve.json is not build_dashboard.py's output; run "
            "`make -C deploy dashboard`")
    print("ok gkaserve.json == build_dashboard.py output")
    dash = json.loads(built)

    # Structure Grafana's types cannot see.
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    require(variables.get("datasource", {}).get("type") == "datasource"
            and variables["datasource"].get("query") == "prometheus",
            "no Prometheus datasource variable")
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    for want in ("Overview", "Prefill", "Decode", "Transfer"):
        require(any(r.startswith(want) for r in rows), f"no '{want}' row: {rows}")
    repeats = {p.get("repeat") for p in dash["panels"] if p["type"] == "row"}
    require({"prefill_worker", "decode_worker"} <= repeats, "no per-worker drill-down rows")
    ids = [p["id"] for p in dash["panels"]]
    require(len(ids) == len(set(ids)), "duplicate panel ids")
    occupied = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        require(g["x"] + g["w"] <= 24, f"panel '{p['title']}' wider than the grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                require((x, y) not in occupied,
                        f"panels '{occupied.get((x, y))}' and '{p['title']}' overlap")
                occupied[(x, y)] = p["title"]
    for panel, t in dashboard_targets(dash):
        extra = set(t) - ALLOWED_TARGET_KEYS
        require(not extra, f"panel '{panel['title']}': unknown target keys {extra}")
        for ds in (panel.get("datasource"), t.get("datasource")):
            require(ds == {"type": "prometheus", "uid": "${datasource}"},
                    f"panel '{panel['title']}': datasource {ds} is not the variable")
    print(f"ok structure: {len(rows)} rows, {len(ids) - len(rows)} panels, no overlaps")

    # Grafana's own types, with excess-property checks (object literal, not a JSON import).
    tsc = find_tool("tsc", NODE_MODULES / ".bin/tsc")
    find_tool("@grafana/schema", NODE_MODULES / "@grafana/schema/package.json")
    ts = work / "dashboard-ts"
    ts.mkdir(exist_ok=True)
    link = ts / "node_modules"
    if not link.exists():
        link.symlink_to(NODE_MODULES)
    (ts / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "noEmit": True, "module": "nodenext",
                            "moduleResolution": "nodenext", "skipLibCheck": True,
                            "target": "es2022"}, "files": ["dashboard.ts"]}))
    (ts / "dashboard.ts").write_text('import type { Dashboard } from "@grafana/schema";\n'
                                     f"export const dashboard: Dashboard = {built};\n")
    p = run([tsc, "-p", ts], check=False)
    require(p.returncode == 0, f"tsc: the dashboard does not fit @grafana/schema:\n{p.stdout}")
    print("ok tsc: gkaserve.json fits @grafana/schema's Dashboard")

    # Every query parses: wrapped as recording rules, checked by promtool.
    promtool = find_tool("promtool")
    rules = [{"record": f"dashboard:panel{panel['id']}:{t['refId'].lower()}",
              "expr": promql_for_promtool(t["expr"])} for panel, t in dashboard_targets(dash)]
    f = work / "dashboard-queries.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([promtool, "check", "rules", f])
    print(f"ok promtool parsed all {len(rules)} dashboard queries")


# ---------------------------------------------------------------------------------------------
def catalogue():
    """docs/metrics.md: metric name -> type."""
    names = {}
    for line in (ROOT / "docs/metrics.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`gka_"):
            for n in re.findall(r"`(gka_[a-z0-9_]+)`", cells[0]):
                names[n] = cells[1]
    require(names, "docs/metrics.md lists no metrics")
    return names


def series_names(metric, kind):
    if kind == "histogram":
        return {f"{metric}_bucket", f"{metric}_sum", f"{metric}_count"}
    return {metric}


KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan", "le"}


def metric_names(expr):
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names or values (strings, matchers, grouping lists, durations removed first)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\w+", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", e):
        if m.group(2) or m.group(1).lower() in KEYWORDS or re.fullmatch(r"\d.*", m.group(1)):
            continue
        names.add(m.group(1))
    return names


def used_metrics():
    """(where, name) for every metric the dashboard, the rules and the chart reference."""
    used = []
    dash = json.loads(DASHBOARD.read_text())
    for panel, t in dashboard_targets(dash):
        used += [(f"dashboard '{panel['title']}'", n) for n in metric_names(t["expr"])]
    for v in dash["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict):
            for m in re.finditer(r"label_values\(\s*([\w:]+)\s*,", q["query"]):
                used.append((f"dashboard variable ${v['name']}", m.group(1)))
    for g in load_rules():
        for r in g["rules"]:
            used += [(f"rule {r.get('record') or r.get('alert')}", n)
                     for n in metric_names(r["expr"])]
    # The chart's HPA metric (rendered with the HPA on).
    hpa = [d for d in documents(render(ALL_FEATURES)) if d["kind"] == "HorizontalPodAutoscaler"]
    require(hpa, "all-features values render no HPA")
    for m in hpa[0]["spec"]["metrics"]:
        used.append(("chart HPA", m["pods"]["metric"]["name"]))
    return used


def recorded_names():
    names = {r["record"] for g in load_rules() for r in g["rules"] if "record" in r}
    # The per-tier targets are recorded by the chart / tier_targets.py, not by the files.
    return names | {"tier:gka_ttft_seconds:target", "tier:gka_itl_seconds:target"}


def cmd_metric_names(work):
    cat = catalogue()
    allowed = {s for n, kind in cat.items() for s in series_names(n, kind)}
    recorded = recorded_names()
    used = used_metrics()
    bad = [(w, n) for w, n in used if n not in allowed and n not in recorded]
    for w, n in bad:
        hint = ""
        if n in cat:
            hint = f" ({cat[n]}: use {', '.join(sorted(series_names(n, cat[n])))})"
        print(f"FAIL {w}: {n} is not in docs/metrics.md{hint}")
    require(not bad, f"{len(bad)} metric names outside docs/metrics.md")
    base = {re.sub(r"_(bucket|sum|count)$", "", n) for _, n in used}
    unused = sorted(set(cat) - base)
    print(f"ok {len({n for _, n in used})} metric names used, all in docs/metrics.md or "
          f"recorded; catalogue entries not charted: {', '.join(unused) or 'none'}")


# ---------------------------------------------------------------------------------------------
def cmd_docker(work):
    dockerfile = (ROOT / "deploy/docker/Dockerfile").read_text()
    docs = documents(render(ALL_FEATURES))
    commands = {c["command"][0] for _, s in pod_specs(docs) for c in s["containers"]}
    for cmd in sorted(commands):
        binary = Path(cmd).name
        require(cmd.startswith("/usr/local/bin/"), f"chart runs {cmd}, not from /usr/local/bin")
        require(re.search(rf"ninja -C /build [^\n]*\b{re.escape(binary)}\b", dockerfile),
                f"Dockerfile does not build {binary}")
        require(f"/build/bin/{binary}" in dockerfile, f"Dockerfile does not install {binary}")
    uid = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]["runAsUser"]
    require(f"USER {uid}:{uid}" in dockerfile, f"Dockerfile USER is not the chart's uid {uid}")
    ignore = (ROOT / "deploy/docker/Dockerfile.dockerignore").read_text().split()
    for must in ("/build*", "/third_party/npm", ".git"):
        require(must in ignore, f"Dockerfile.dockerignore does not exclude {must}")
    print(f"ok Dockerfile builds and installs {', '.join(sorted(commands))} and runs as {uid}")
    check_dockerfile_parts(dockerfile, [
        l.strip() for l in (ROOT / "deploy/docker/Dockerfile.dockerignore").read_text().splitlines()
        if l.strip() and not l.lstrip().startswith("#")])

    # runtime-packages.sh on the binaries of this build, as the Dockerfile runs it.
    names = ("gka", "gka-router", "gka-prefill-worker", "gka-decode-worker")
    found = {n: BIN_DIR / n for n in names if BIN_DIR and (BIN_DIR / n).exists()}
    if not found:
        print(f"note: no gka binaries in {BIN_DIR}; runtime-packages.sh not exercised")
        return
    find_tool("dpkg-query")
    p = run([ROOT / "deploy/docker/runtime-packages.sh", *found.values()], check=False)
    require(p.returncode == 0, f"runtime-packages.sh failed:\n{p.stderr}")
    lines = p.stdout.split()
    require(lines and all(re.fullmatch(r"[a-z0-9][a-z0-9+.-]*=[\w.:~+-]+", l) for l in lines),
            f"runtime-packages.sh printed {lines}")
    require(any(l.startswith("libc6=") for l in lines), "libc6 missing from the package list")
    # NFC has its own tables (common/text/unicode_tables.inc): ICU's 31 MB of data must not
    # come back into the binaries (the image, and the bundle carried to GPU machines).
    icu = [l for l in lines if l.startswith("libicu")]
    require(not icu, f"the binaries link ICU again ({', '.join(icu)}); common/text needs none")
    print(f"ok runtime-packages.sh on {', '.join(found)}: {len(lines)} packages")


def dockerfile_instructions(text):
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def ignored(path, patterns):
    """Whether .dockerignore `patterns` (no negations used here) exclude repository `path`."""
    rel = path.strip("/")
    for pat in patterns:
        pat = pat.strip("/")
        parts = rel.split("/")
        # A pattern excludes a path and everything below a match.
        if any(fnmatch.fnmatch("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
            return True
    return False


def check_dockerfile_parts(dockerfile, ignore):
    """What can be checked of the image build without a container engine (none runs on the
    development machines or in CI): the Dockerfile parses and lints clean with
    dockerfile-utils (and the linter does catch a broken copy); every file it COPYs from the
    build context exists and is not excluded by the .dockerignore; the scripts it runs exist
    and are executable; the CMake options it sets exist; its build binaries are this
    project's targets."""
    lint = find_tool("dockerfile-utils", NODE_MODULES / ".bin/dockerfile-utils")
    p = run([lint, "lint", ROOT / "deploy/docker/Dockerfile"], check=False)
    require(p.returncode == 0 and not p.stdout.strip(),
            f"dockerfile-utils lint deploy/docker/Dockerfile:\n{p.stdout}{p.stderr}")
    with tempfile.TemporaryDirectory() as tmp:
        broken = Path(tmp) / "Dockerfile"
        broken.write_text(dockerfile.replace("\nFROM ", "\nFORM ", 1))
        p = run([lint, "lint", broken], check=False)
        require(p.returncode != 0 and "Unknown instruction" in p.stdout,
                f"dockerfile-utils did not catch FORM for FROM: {p.stdout}")
    instructions = dockerfile_instructions(dockerfile)
    require(sum(1 for i, _ in instructions if i == "FROM") == 2, "not a two-stage Dockerfile")
    copied = []
    for ins, args in instructions:
        if ins != "COPY" or "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for src in sources:
            if src == ".":
                continue
            require((ROOT / src).exists(), f"Dockerfile COPYs {src}, which does not exist")
            require(not ignored(src, ignore),
                    f"Dockerfile COPYs {src}, which Dockerfile.dockerignore excludes")
            copied.append(src)
    runs = " ".join(args for ins, args in instructions if ins == "RUN")
    scripts = sorted(set(re.findall(r"(?:\./)?((?:scripts|deploy)/[\w./-]+\.sh)", runs)))
    require(scripts, "the Dockerfile runs none of the project's scripts")
    for script in scripts:
        require(os.access(ROOT / script, os.X_OK), f"Dockerfile runs {script}: not executable")
        require(not ignored(script, ignore), f"Dockerfile runs {script}, which is ignored")
    cmake_text = "\n".join(p.read_text() for p in ROOT.glob("**/CMakeLists.txt")
                           if "third_party" not in p.parts and not p.parts[len(ROOT.parts)]
                           .startswith("build"))
    for option in sorted(set(re.findall(r"-D(GKA_\w+)=", runs))):
        require(re.search(rf"\b{option}\b", cmake_text), f"Dockerfile sets unknown {option}")
    targets = re.search(r"ninja -C /build ([^&]+)", runs).group(1).split()
    for t in targets:
        require(re.search(rf"NAME {re.escape(t)}\b|add_executable\({re.escape(t)}\b",
                          cmake_text), f"Dockerfile builds {t}, not a target of this project")
    print(f"ok Dockerfile lints clean (dockerfile-utils; a broken copy is caught); COPY sources "
          f"{', '.join(copied)} exist and are not ignored; runs {', '.join(scripts)}; CMake "
          f"targets {', '.join(targets)}")
    print("note: the image itself is not built: no container engine runs here (docker is a "
          "client only); the build stage also needs NVIDIA's CUDA repository")


COMMANDS = {
    "helm-lint": cmd_helm_lint,
    "k8s-validate": cmd_k8s_validate,
    "validator-catches": cmd_validator_catches,
    "schema-rejects": cmd_schema_rejects,
    "example-current": cmd_example_current,
    "rules": cmd_rules,
    "dashboard": cmd_dashboard,
    "metric-names": cmd_metric_names,
    "docker": cmd_docker,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=sorted(COMMANDS) + ["write-example"])
    ap.add_argument("--work", help="scratch directory (default: a temporary one)")
    ap.add_argument("--bin-dir", help="this build's bin directory (default: build/bin)")
    a = ap.parse_args()
    global BIN_DIR
    BIN_DIR = Path(a.bin_dir or ROOT / "build/bin").resolve()
    if a.command == "write-example":
        EXAMPLE.parent.mkdir(parents=True, exist_ok=True)
        EXAMPLE.write_text(example_text())
        print(f"wrote {EXAMPLE}")
        return 0
    with tempfile.TemporaryDirectory(prefix=f"gka-deploy-{a.command}-") as tmp:
        work = Path(a.work) if a.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            COMMANDS[a.command](work)
        except Skip as e:
            return skip_exit_code(e)
        except Failed as e:
            print(f"FAIL: {e}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
