#!/usr/bin/env python3
"""A local cluster (`gka local`) and a real Prometheus on 127.0.0.1 scraping every process of
it with the project's rules loaded (deploy/prometheus/rules + the tier targets of the tier
file in use).

    deploy/prometheus/local_prometheus.py --model DIR [--gka build/bin/gka] [--tiers FILE]
        [--prometheus-port 9090] [--router-port 50051] [--work DIR]

Prints the Prometheus URL (stderr) and one JSON line on stdout once Prometheus scrapes:
  {"prometheus": "http://127.0.0.1:9090", "router": "127.0.0.1:50051",
   "targets": [{"component": "router", "instance": "127.0.0.1:41231"}, ...], "work": DIR}
then serves until SIGINT/SIGTERM or until a process of the cluster exits, and stops both.
`make -C deploy prometheus MODEL=DIR` runs it. Needs only the Python standard library.

Targets carry `component` (router, prefill, decode), like the pods' app.kubernetes.io/component
in the chart, and never `role`: gka_workers has its own `role` label, which a target label
would shadow.
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """Child processes get SIGTERM when this script dies, however it dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, alive=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for name, proc in alive:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def http_get(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()
    except OSError:
        return None


def query(prometheus, promql):
    """Prometheus instant query; the result list ([] on error)."""
    body = http_get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    if not body:
        return []
    doc = json.loads(body)
    return doc["data"]["result"] if doc.get("status") == "success" else []


def prometheus_config(processes, rule_files, interval):
    """prometheus.yml as JSON (which is YAML)."""
    static = [{"targets": [p["metrics"]],
               "labels": {"component": p["role"], "process": f"{p['role']}-{p['index']}"}}
              for p in processes if p.get("metrics")]
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(f) for f in rule_files],
        "scrape_configs": [{"job_name": "gkaserve", "static_configs": static}],
    }


class LocalObservability:
    """Starts gka local and Prometheus; stop() ends both (by their own pids)."""

    def __init__(self, a):
        self.a = a
        # A temporary work directory goes away after a clean stop; --work's never does.
        self.owns_work = not a.work
        self.work = Path(a.work or tempfile.mkdtemp(prefix="gka-prometheus-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.cluster = None
        self.prometheus = None

    def start(self):
        a, w = self.a, self.work
        state = w / "cluster.jsonl"
        state.unlink(missing_ok=True)
        (w / "logs").mkdir(exist_ok=True)
        cmd = [a.gka, "local", "--model", a.model, "--port", str(a.router_port),
               "--metrics-port", "0", "--state-file", str(state), "--log-dir", str(w / "logs"),
               "--prefill-workers", str(a.prefill_workers),
               "--decode-workers", str(a.decode_workers)]
        if a.tiers:
            cmd += ["--tiers", a.tiers]
        self.cluster = subprocess.Popen(cmd, stdout=open(w / "local.out", "w"),
                                        stderr=open(w / "local.err", "w"),
                                        preexec_fn=die_with_parent)
        expected = 1 + a.prefill_workers + a.decode_workers
        lines = wait_for(
            lambda: (state.exists() and len(state.read_text().splitlines()) >= expected
                     and state.read_text().splitlines()),
            a.timeout, "the cluster's processes", [("gka local", self.cluster)])
        self.processes = [json.loads(l) for l in lines]

        # Rules: the project's files plus the tier targets of the tier file in use.
        targets = w / "tier-targets.yml"
        tier_cmd = [sys.executable, HERE / "tier_targets.py"] + ([a.tiers] if a.tiers else [])
        targets.write_text(subprocess.run(tier_cmd, check=True, capture_output=True,
                                          text=True).stdout)
        rule_files = sorted((HERE / "rules").glob("*.yml")) + [targets]
        config = w / "prometheus.yml"
        config.write_text(json.dumps(prometheus_config(self.processes, rule_files,
                                                       a.scrape_interval), indent=2))
        promtool = shutil.which("promtool")
        if promtool:
            subprocess.run([promtool, "check", "config", str(config)], check=True,
                           capture_output=True, text=True)

        port = a.prometheus_port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.prometheus = subprocess.Popen(
            [a.prometheus, f"--config.file={config}", f"--storage.tsdb.path={w / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
             "--web.enable-lifecycle"],
            stdout=open(w / "prometheus.log", "w"), stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)
        alive = [("gka local", self.cluster), ("prometheus", self.prometheus)]
        wait_for(lambda: http_get(f"{self.url}/-/ready"), 30, "Prometheus to be ready", alive)
        # The first scrape comes about 5 s after start (the scrape manager's reload delay).
        wait_for(lambda: len(query(self.url, 'up{job="gkaserve"} == 1')) == len(self.processes),
                 60, "Prometheus to scrape every process", alive)
        router = next(p for p in self.processes if p["role"] == "router")
        return {"prometheus": self.url, "router": router["grpc"],
                "targets": [{"component": p["role"], "instance": p["metrics"]}
                            for p in self.processes],
                "work": str(w)}

    def stop(self):
        for proc in (self.prometheus, self.cluster):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.prometheus, self.cluster):
            if proc:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--gka", default=str(ROOT / "build/bin/gka"), help="the gka binary")
    ap.add_argument("--tiers", help="tier file (JSON) for the router and the SLO targets")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "prometheus")
    ap.add_argument("--prometheus-port", type=int, default=9090, help="0: any free port")
    ap.add_argument("--router-port", type=int, default=50051, help="0: any free port")
    ap.add_argument("--prefill-workers", type=int, default=1)
    ap.add_argument("--decode-workers", type=int, default=1)
    ap.add_argument("--scrape-interval", default="1s")
    ap.add_argument("--timeout", type=int, default=120, help="seconds for the cluster to start")
    ap.add_argument("--work", help="directory for config, TSDB and logs (default: temporary)")
    return ap.parse_args(argv)


def main():
    a = parse_args()
    stack = LocalObservability(a)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    rc = 1
    try:
        info = stack.start()
        print(json.dumps(info), flush=True)
        print(f"Prometheus: {info['prometheus']}  (router {info['router']}; rules: "
              f"{info['prometheus']}/rules; Ctrl-C stops everything)", file=sys.stderr)
        while not stop:
            if stack.cluster.poll() is not None or stack.prometheus.poll() is not None:
                print("a process exited; stopping", file=sys.stderr)
                return 1
            time.sleep(0.5)
        rc = 0
    except (RuntimeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or ""
        print(f"local_prometheus: {e} {detail}\n(logs in {stack.work})", file=sys.stderr)
    finally:
        stack.stop()
        if rc == 0 and stack.owns_work:
            shutil.rmtree(stack.work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
