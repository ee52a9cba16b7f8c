#!/usr/bin/python3
"""What the chart renders actually runs (ctest: deploy_rendered_chart_runs, integration).

    rendered_chart_runs.py --bin-dir build/bin --gka build/bin/gka [--work DIR]

1. Renders deploy/helm/gkaserve with tests/deploy/values-local.yaml (CPU backend, small sizes:
   1 router, 1 prefill pod, 2 decode pods).
2. Starts every container of every rendered Deployment/StatefulSet at once as a local
   process with the rendered command, args, env, ports and volumes (podsim.py says what is
   translated: binary path, volume directories, host ports, Service names).
3. Probes each like the kubelet: startup, then readiness, then liveness (gRPC health; the
   router's readiness asks for gka.serving.v1.GenerateService, SERVING only once workers
   registered through the registry Service).
4. Answers a request through the router Service:
   gka generate --addr <router Service> --prompt-ids 1,2,3 --max-tokens 4 --json; and one
   through the Service's HTTP port (the OpenAI gateway): /v1/models, /v1/completions.
5. Checks every pod's `metrics` port serves Prometheus text, and that the decode pods are
   registered under their StatefulSet names (the `worker` label).
6. With apiKey.existingSecret set, the rendered router refuses calls without the key and
   accepts them with it (the key travels Secret -> env GKA_API_KEY -> router).
   Routers and workers talk over mutual TLS with the Secret tls.existingSecret names
   (certificates from `gka make-certs` with the DNS name tls.serverName, mounted as files);
   the kubelet's probes reach the workers on their plaintext health port.
7. SIGTERM to everything: each process exits 0 within its pod's grace period.
8. router.replicas=2 (run_two_routers): both routers get every worker (through the headless
   registry Service) and serve; kill -9 of one leaves the other serving with its workers
   healthy past the heartbeat timeout; the killed one started again serves again.
Exit 77 (skip) only when a binary or tool is missing, unless GKA_REQUIRE_TOOLS=1 or CI is set.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import deploy_checks  # noqa: E402  (helm lookup and rendering)
import podsim  # noqa: E402

RELEASE = "rt"
NAMESPACE = "gka-test"
API_KEY = "test-key-6f1c"


def render(*extra):
    return [d for d in yaml.safe_load_all(deploy_checks.render(
        HERE / "values-local.yaml", release=RELEASE, namespace=NAMESPACE, extra=extra)) if d]


def component(pod):
    return pod.labels["app.kubernetes.io/component"]


def healthy_workers(metrics_text, role):
    """gka_workers{role=ROLE,state="healthy"} from the router's /metrics text."""
    for line in metrics_text.splitlines():
        if (line.startswith("gka_workers{") and f'role="{role}"' in line
                and 'state="healthy"' in line):
            return float(line.rsplit(" ", 1)[1])
    return None


def generate(a, cluster, address):
    """One request through the router at `address`; returns what it answered, in words."""
    if podsim.cli_has_remote_generate(a.gka):
        p = subprocess.run([a.gka, "generate", "--addr", address, "--prompt-ids", "1,2,3",
                            "--max-tokens", "4", "--json"], capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"gka generate through {address} failed:\n"
                               f"{p.stdout}{p.stderr}\n" +
                               "\n".join(cluster.log_tail(x) for x in cluster.pods))
        out = json.loads(p.stdout.strip().splitlines()[-1])
        ids = out.get("token_ids", [])
        assert 1 <= len(ids) <= 4 and out.get("finish_reason"), out
        return f"gka generate: token_ids {ids}, finish_reason {out['finish_reason']}"
    # This build's `gka generate` has no --addr: the same request, by hand.
    code, n, final = podsim.raw_generate(address, [1, 2, 3], 4)
    if code != "OK" or not final:
        raise RuntimeError(f"Generate through {address}: {code}, {n} responses, final {final}\n"
                           + "\n".join(cluster.log_tail(x) for x in cluster.pods))
    return (f"Generate: {n} responses ending in a Final (this gka generate has no --addr; "
            "the request was hand-encoded)")


def router_counts(address, roles):
    """{role: healthy workers} from the router's /metrics at `address`."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    return {role: healthy_workers(text, role) for role in roles}


def run_cluster(a, work):
    docs = render()
    model_root = work / "pvc-models"
    model_root.mkdir()
    (model_root / "tiny").symlink_to(a.model)
    cluster = podsim.Cluster(docs, a.bin_dir, work / "pods", {"gkaserve-models": model_root},
                             a.secrets, NAMESPACE)
    roles = sorted(component(p) for p in cluster.pods)
    assert roles == ["decode", "decode", "prefill", "router"], roles
    with cluster:
        cluster.start()
        t0 = time.monotonic()
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            for pod in cluster.pods:
                for c in pod.spec["containers"]:
                    # Readiness: the router needs the workers; allow the startup budget.
                    deadline = 90 if kind == "readinessProbe" else None
                    took = cluster.probe(pod, c, kind, deadline_s=deadline)
                    print(f"ok {pod.name}: {kind} SERVING after {took:.1f} s "
                          f"(service '{c[kind]['grpc'].get('service', '')}')")
        print(f"ok all {len(cluster.pods)} pods started, ready and live in "
              f"{time.monotonic() - t0:.1f} s")

        router = cluster.service_address(f"{RELEASE}-gkaserve-router", 50051)
        print(f"ok {generate(a, cluster, router)} via Service {RELEASE}-gkaserve-router "
              f"({router})")

        # The OpenAI-compatible gateway on the Service's http port (router.http).
        http = cluster.service_address(f"{RELEASE}-gkaserve-router", 8000)
        models = json.loads(urllib.request.urlopen(f"http://{http}/v1/models",
                                                   timeout=10).read())
        model = models["data"][0]["id"]
        body = json.dumps({"model": model, "prompt": "Hi", "max_tokens": 2}).encode()
        req = urllib.request.Request(f"http://{http}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        done = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert done["choices"] and done["usage"]["completion_tokens"] >= 1, done
        print(f"ok HTTP gateway via Service port 8000 ({http}): /v1/models lists {model}, "
              f"/v1/completions answered {done['usage']['completion_tokens']} token(s)")

        # What a PodMonitor would scrape: every pod's `metrics` port.
        for pod in cluster.pods:
            port = next(pp["containerPort"] for c in pod.spec["containers"]
                        for pp in c["ports"] if pp["name"] == "metrics")
            url = f"http://127.0.0.1:{pod.port(port)}/metrics"
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            assert "# TYPE gka_" in text, f"{url} serves no gka_ metrics"
            if component(pod) != "router":
                assert f'worker="{pod.name}"' in text, f"{url}: no worker=\"{pod.name}\" label"
        print("ok every pod's metrics port serves gka_ metrics; workers are labelled by pod name")
        # Every worker registers under its pod name (workers retry until the router answers).
        router_pod = next(p for p in cluster.pods if component(p) == "router")
        want = {"prefill": 1, "decode": 2}
        deadline = time.monotonic() + 30
        while True:
            seen = router_counts(f"127.0.0.1:{router_pod.port(9400)}", want)
            if seen == want:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the router counts {seen} healthy workers, want {want}")
            time.sleep(0.5)
        print("ok the router counts 1 healthy prefill and 2 healthy decode workers")

        results = cluster.stop()
    bad = {k: v for k, v in results.items() if v != 0}
    assert not bad, f"not a clean exit on SIGTERM: {bad}"
    print(f"ok SIGTERM: all {len(results)} processes exited 0 within their grace periods")


def run_two_routers(a, work):
    """router.replicas=2 in front of the same workers: each worker registers with both
    routers through the headless registry Service; both routers serve; after kill -9 of one
    the other keeps serving with the workers still healthy in its view; the killed one,
    started again, gets the workers back (they keep retrying it) and serves again."""
    docs = render("--set", "router.replicas=2", "--set", "decode.replicas=1")
    model_root = work / "pvc-models-2r"
    model_root.mkdir()
    (model_root / "tiny").symlink_to(a.model)
    cluster = podsim.Cluster(docs, a.bin_dir, work / "pods-2r", {"gkaserve-models": model_root},
                             a.secrets, NAMESPACE)
    routers = [p for p in cluster.pods if component(p) == "router"]
    workers = [p for p in cluster.pods if component(p) != "router"]
    assert len(routers) == 2 and len(workers) == 2, [p.name for p in cluster.pods]
    # The workers are told every router: the headless Service's name, which resolves to
    # both router pods' internal ports (podsim: the comma list of their addresses).
    grpc_of = {r.name: f"127.0.0.1:{r.port(50051)}" for r in routers}
    internal = sorted(f"127.0.0.1:{r.port(50052)}" for r in routers)
    for w in workers:
        argv, _, _ = cluster.command_line(w, w.spec["containers"][0])
        flag = next(x for x in argv if x.startswith("--router-service="))
        assert sorted(flag.split("=", 1)[1].split(",")) == internal, flag
    roles = ("prefill", "decode")
    with cluster:
        cluster.start()
        for kind in ("startupProbe", "readinessProbe"):
            for pod in cluster.pods:
                c = pod.spec["containers"][0]
                cluster.probe(pod, c, kind, deadline_s=90 if kind == "readinessProbe" else None)
        # Readiness of a router asks for GenerateService: SERVING only with a prefill and a
        # decode worker registered with that router, so both routers have both workers.
        print("ok both routers Ready: each sees a prefill and a decode worker")
        for r in routers:
            print(f"ok {r.name}: {generate(a, cluster, grpc_of[r.name])}")
            counts = router_counts(f"127.0.0.1:{r.port(9400)}", roles)
            assert counts == {"prefill": 1, "decode": 1}, (r.name, counts)

        dead, alive = routers
        for _, proc, _ in dead.procs:
            proc.kill()
            proc.wait()
        print(f"ok kill -9 {dead.name}")
        # Longer than the router's heartbeat timeout: the survivor must still count the
        # workers healthy (their heartbeats to it do not wait on the dead router).
        timeout_s = docs_value(docs, "--heartbeat-timeout-ms=") / 1000
        t_end = time.monotonic() + timeout_s + 1
        n = 0
        while time.monotonic() < t_end:
            generate(a, cluster, grpc_of[alive.name])
            n += 1
        counts = router_counts(f"127.0.0.1:{alive.port(9400)}", roles)
        assert counts == {"prefill": 1, "decode": 1}, counts
        print(f"ok {alive.name} answered {n} requests in the {timeout_s + 1:.0f} s after; "
              f"it still counts {counts} healthy workers")

        dead.procs = []
        cluster.start([dead])
        took = cluster.probe(dead, dead.spec["containers"][0], "readinessProbe", deadline_s=30)
        print(f"ok {dead.name} restarted: Ready after {took:.1f} s (the workers registered "
              f"again); {generate(a, cluster, grpc_of[dead.name])}")
        results = cluster.stop()
    bad = {k: v for k, v in results.items() if v != 0}
    assert not bad, f"not a clean exit on SIGTERM: {bad}"


def docs_value(docs, prefix):
    """The integer value of the router container's `prefix` flag in the rendered docs."""
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-router"):
            for arg in d["spec"]["template"]["spec"]["containers"][0]["args"]:
                if arg.startswith(prefix):
                    return int(arg[len(prefix):])
    raise RuntimeError(f"no router argument {prefix}")


def run_api_key(a, work):
    """The rendered router with apiKey.existingSecret: the key arrives from the Secret."""
    docs = render("--set", "apiKey.existingSecret=gkaserve-api-keys")
    env = next(c for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-router")
               for c in d["spec"]["template"]["spec"]["containers"])["env"]
    assert any(e["name"] == "GKA_API_KEY" and "secretKeyRef" in e.get("valueFrom", {}) for e in env)
    assert not any(API_KEY in json.dumps(d) for d in docs), "the key leaked into a manifest"
    model_root = work / "pvc-models-auth"
    model_root.mkdir()
    (model_root / "tiny").symlink_to(a.model)
    cluster = podsim.Cluster(docs, a.bin_dir, work / "pods-auth",
                             {"gkaserve-models": model_root},
                             {**a.secrets, "gkaserve-api-keys": {"api-key": API_KEY}},
                             NAMESPACE)
    router = [p for p in cluster.pods if component(p) == "router"]
    with cluster:
        cluster.start(router)
        c = router[0].spec["containers"][0]
        cluster.probe(router[0], c, "startupProbe")
        address = cluster.service_address(f"{RELEASE}-gkaserve-router", 50051)
        without, wrong, right = (podsim.raw_generate(address, [1, 2, 3], 4, api_key=k,
                                                     timeout=10)[0]
                                 for k in (None, "nope", API_KEY))
        assert without == "UNAUTHENTICATED" and wrong == "UNAUTHENTICATED", (without, wrong)
        # No workers run here: the right key gets past authentication to placement.
        assert right != "UNAUTHENTICATED", right
        print(f"ok API key from the Secret: no key {without}, wrong key {wrong}, "
              f"right key {right} (no workers in this run)")
        # The HTTP gateway takes the same key.
        http = cluster.service_address(f"{RELEASE}-gkaserve-router", 8000)
        codes = []
        for key in (None, API_KEY):
            req = urllib.request.Request(f"http://{http}/v1/models", headers=(
                {"Authorization": f"Bearer {key}"} if key else {}))
            try:
                codes.append(urllib.request.urlopen(req, timeout=10).status)
            except urllib.error.HTTPError as e:
                codes.append(e.code)
        assert codes == [401, 200], codes
        print(f"ok HTTP /v1/models: {codes[0]} without the key, {codes[1]} with it")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--gka", required=True)
    ap.add_argument("--work")
    a = ap.parse_args()
    a.gka = str(Path(a.gka).resolve())
    for b in ("gka-router", "gka-prefill-worker", "gka-decode-worker"):
        if not (Path(a.bin_dir) / b).exists():
            deploy_checks.skip(f"{b} is not built in {a.bin_dir}")
    try:
        deploy_checks.helm_path()
    except deploy_checks.Skip as e:
        deploy_checks.skip(str(e))
    with tempfile.TemporaryDirectory(prefix="gka-chart-runs-") as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        a.model = work / "model"
        p = subprocess.run([a.gka, "make-tiny-model", "--out", a.model], capture_output=True,
                           text=True)
        if p.returncode != 0:
            print(f"FAIL: gka make-tiny-model: {p.stderr}")
            return 1
        # The Secret values-local.yaml names: one certificate for every pod, as cert-manager
        # would keep it (ca.crt, tls.crt, tls.key), carrying the chart's tls.serverName.
        certs = work / "certs"
        p = subprocess.run([a.gka, "make-certs", "--out", certs, "--names", "cluster", "--dns",
                            "gkaserve-internal"], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"FAIL: gka make-certs: {p.stderr}")
            return 1
        a.secrets = {"gkaserve-tls": {"ca.crt": (certs / "ca.pem").read_text(),
                                      "tls.crt": (certs / "cluster.pem").read_text(),
                                      "tls.key": (certs / "cluster.key").read_text()}}
        try:
            run_cluster(a, work)
            run_two_routers(a, work)
            run_api_key(a, work)
        except (RuntimeError, AssertionError, OSError, subprocess.TimeoutExpired) as e:
            print(f"FAIL: {e}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
