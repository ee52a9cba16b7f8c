#!/usr/bin/python3
"""The dashboards and rules watch what the services really export (ctest:
deploy_local_observability, integration).

    local_observability.py --gka build/bin/gka [--work DIR]

1. Starts deploy/prometheus/local_prometheus.py (the `make -C deploy prometheus` command): a
   local cluster (gka local: router, 1 prefill, 1 decode worker) on the tiny model with a tier
   file that sets TTFT/ITL targets, and a real Prometheus on 127.0.0.1 scraping every process
   with deploy/prometheus/rules and the tier targets loaded.
2. Sends a few requests in two tiers (gka generate --addr).
3. Scrapes every process's /metrics itself and checks that each metric the dashboard and the
   rules use (deploy_checks.used_metrics) is exported by some process, with the series kind
   docs/metrics.md gives (a histogram's _bucket/_sum/_count).
4. Asks Prometheus for the TTFT p99 by tier (the recording rule tier:gka_ttft_seconds:p99 and
   the same expression computed directly) and requires a finite number for each tier that got
   requests; checks Prometheus loaded every rule group without errors.
"""
import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "deploy/prometheus"))
import deploy_checks  # noqa: E402
import podsim  # noqa: E402
import local_prometheus  # noqa: E402

TIERS = {"default": "standard",
         "tiers": [{"name": "interactive", "prefill_num_iter": 30, "decode_num_iter": 30,
                    "priority": 10, "ttft_target_ms": 500, "itl_target_ms": 50},
                   {"name": "standard", "prefill_num_iter": 10, "decode_num_iter": 10,
                    "priority": 5, "ttft_target_ms": 2000, "itl_target_ms": 100}]}


def exported_names(metrics_text):
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][\w:]*)(?:\{|\s)", metrics_text,
                                            re.MULTILINE)}


def finite(result):
    return [r for r in result if math.isfinite(float(r["value"][1]))]


def check(a, work):
    model = work / "model"
    subprocess.run([a.gka, "make-tiny-model", "--out", model], check=True, capture_output=True)
    tiers = work / "tiers.json"
    tiers.write_text(json.dumps(TIERS))
    args = local_prometheus.parse_args(
        ["--model", str(model), "--gka", a.gka, "--tiers", str(tiers), "--prometheus-port", "0",
         "--router-port", "0", "--work", str(work / "stack"), "--prometheus", a.prometheus])
    stack = local_prometheus.LocalObservability(args)
    try:
        info = stack.start()
        print(f"ok Prometheus {info['prometheus']} scrapes {len(info['targets'])} processes "
              f"({', '.join(t['component'] for t in info['targets'])})")
        url = info["prometheus"]

        # A few requests per tier, so every histogram has observations.
        cli = podsim.cli_has_remote_generate(a.gka)
        for i in range(6):
            tier = ("interactive", "standard")[i % 2]
            ids = [1, 2, 3, 4 + i]
            if cli:
                p = subprocess.run([a.gka, "generate", "--addr", info["router"], "--tier", tier,
                                    "--prompt-ids", ",".join(map(str, ids)), "--max-tokens",
                                    "4", "--json"], capture_output=True, text=True, timeout=60)
                if p.returncode != 0:
                    raise RuntimeError(f"gka generate ({tier}) failed: {p.stdout}{p.stderr}")
            else:
                code, n, final = podsim.raw_generate(info["router"], ids, 4, tier=tier)
                if code != "OK" or not final:
                    raise RuntimeError(f"Generate ({tier}): {code} after {n} responses")
        how = "gka generate --addr" if cli else (
            "hand-encoded GenerateRequests (this gka generate has no --addr)")
        print(f"ok 6 requests answered in tiers interactive and standard ({how})")

        # 3. Every metric the dashboard and rules use is exported by a running process.
        exported = set()
        for t in info["targets"]:
            with urllib.request.urlopen(f"http://{t['instance']}/metrics", timeout=5) as r:
                exported |= exported_names(r.read().decode())
        recorded = deploy_checks.recorded_names()
        used = deploy_checks.used_metrics()
        missing = sorted({(n, w) for w, n in used if n not in recorded and n not in exported})
        for n, w in missing:
            print(f"FAIL {w}: {n} is not exported by the running cluster")
        if missing:
            raise RuntimeError(f"{len(missing)} used metrics not exported")
        print(f"ok all {len({n for _, n in used if n not in recorded})} metric series the "
              "dashboard, rules and chart use are exported by the running cluster")

        # 4. Prometheus: rules loaded, TTFT p99 by tier is a number for both tiers.
        with urllib.request.urlopen(f"{url}/api/v1/rules", timeout=5) as r:
            groups = json.loads(r.read())["data"]["groups"]
        bad = [(g["name"], rule.get("name"), rule.get("lastError"))
               for g in groups for rule in g["rules"] if rule.get("health") == "err"]
        names = {g["name"] for g in groups}
        want = {g["name"] for g in deploy_checks.load_rules()} | {"gkaserve-tier-targets"}
        if bad or not want <= names:
            raise RuntimeError(f"rule groups {sorted(names)} (want {sorted(want)}), errors {bad}")
        print(f"ok Prometheus loaded {len(names)} rule groups, no rule in error")

        direct = ("histogram_quantile(0.99, sum by (tier, le) "
                  "(rate(gka_ttft_seconds_bucket[1m])))")
        deadline = time.monotonic() + 60
        while True:
            # The recorded series has a 5m window; at a 1s interval it is there after the
            # second evaluation that sees two scrapes with the requests.
            recorded_p99 = finite(local_prometheus.query(url, "tier:gka_ttft_seconds:p99"))
            direct_p99 = finite(local_prometheus.query(url, direct))
            tiers_seen = {r["metric"].get("tier") for r in recorded_p99}
            if {"interactive", "standard"} <= tiers_seen and len(direct_p99) >= 2:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no TTFT p99 by tier after 60 s: recorded {recorded_p99}, "
                                   f"direct {direct_p99}")
            time.sleep(1)
        for r in recorded_p99:
            print(f"ok TTFT p99 tier={r['metric']['tier']}: {float(r['value'][1]):.4f} s "
                  "(tier:gka_ttft_seconds:p99)")
        targets = local_prometheus.query(url, "tier:gka_ttft_seconds:target")
        assert {(r["metric"]["tier"], float(r["value"][1])) for r in targets} == {
            ("interactive", 0.5), ("standard", 2.0)}, targets
        print("ok tier targets from the tier file: interactive 0.5 s, standard 2 s")
    finally:
        stack.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gka", required=True)
    ap.add_argument("--prometheus", default="prometheus")
    ap.add_argument("--work")
    a = ap.parse_args()
    bin_dir = Path(a.gka).resolve().parent
    for b in ("gka-router", "gka-prefill-worker", "gka-decode-worker"):
        if not (bin_dir / b).exists():
            deploy_checks.skip(f"{b} is not built in {bin_dir} (gka local starts it from there)")
    import shutil
    a.prometheus = shutil.which(a.prometheus) or a.prometheus
    if not Path(a.prometheus).exists():
        deploy_checks.skip("prometheus not found; scripts/deps.sh installs it")
    with tempfile.TemporaryDirectory(prefix="gka-observability-") as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            check(a, work)
        except (RuntimeError, AssertionError, subprocess.CalledProcessError,
                subprocess.TimeoutExpired) as e:
            print(f"FAIL: {e}\n(logs: {work}/stack)")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
