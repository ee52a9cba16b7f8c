"""Runs rendered Kubernetes workloads as local processes, the way a kubelet would run them.

For each pod of each Deployment/StatefulSet the container's command, args, env, ports, volume
mounts and probes are taken from the manifest and executed. What cannot be the same on one
host is translated, and only that:
  - the image's binary (/usr/local/bin/X) is BIN_DIR/X;
  - a volume is a local directory (ConfigMap data written out, the model PVC a directory
    holding the model, emptyDirs empty), and paths under a mountPath point into it;
  - every pod gets its own host ports: a containerPort P is a free local port, and a flag
    value equal to P (`--port=P`, `host:P`) is rewritten to it;
  - Service DNS names (`svc`, `svc.ns`, `svc.ns.svc.cluster.local`) resolve to 127.0.0.1
    and the Service port to the local port of a pod it selects; status.podIP is 127.0.0.1.
    A headless Service (clusterIP: None) resolves to every pod it selects, as its DNS A
    records do: `svc:port` becomes `127.0.0.1:p1,127.0.0.1:p2,...` (pods share one address
    here, so the port tells them apart; consumers of such names take a comma list).
Env follows Kubernetes: values, fieldRef, configMapKeyRef, secretKeyRef (from the secrets
the test provides), and $(VAR) expansion in env, command and args ($$ escapes).
Probes are the kubelet's gRPC probes: grpc.health.v1.Health/Check with the probe's service,
success only on SERVING, with the probe's period, timeout and failure threshold.
"""
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc

PR_SET_PDEATHSIG = 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def grpc_health(address, service="", timeout=1.0):
    """grpc.health.v1.Health/Check as the kubelet sends it: the serving status (1 = SERVING)
    or an error string. Protobuf by hand: HealthCheckRequest{string service = 1},
    HealthCheckResponse{ServingStatus status = 1}."""
    request = b"" if not service else b"\x0a" + _varint(len(service)) + service.encode()
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            reply = check(request, timeout=timeout)
        except grpc.RpcError as e:
            return f"{e.code().name}: {e.details()}"
    return reply[1] if reply[:1] == b"\x08" and len(reply) >= 2 else 0


def _field(number, payload):
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _top_level_fields(message):
    """Field numbers at the top level of a protobuf message (varint and length-delimited)."""
    fields, i = [], 0
    while i < len(message):
        key, i = _read_varint(message, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _read_varint(message, i)
        elif wire == 2:
            length, i = _read_varint(message, i)
            i += length
        else:
            raise ValueError(f"unexpected wire type {wire}")
        fields.append(number)
    return fields


def _read_varint(data, i):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def raw_generate(address, prompt_ids, max_tokens, tier="", api_key=None, timeout=30):
    """gka.serving.v1.GenerateService/Generate with protobuf written by hand:
    GenerateRequest{token_ids = 3 {ids = 1}, sampling = 5 {max_tokens = 9}, tier = 6}.
    Returns (status code name, number of responses, whether a Final (field 3) arrived)."""
    packed = b"".join(_varint(i) for i in prompt_ids)
    request = (_field(3, _field(1, packed)) + _field(5, _varint(9 << 3) + _varint(max_tokens))
               + (_field(6, tier.encode()) if tier else b""))
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    count, final = 0, False
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_stream("/gka.serving.v1.GenerateService/Generate")
        try:
            for reply in call(request, timeout=timeout, metadata=metadata):
                count += 1
                final = final or 3 in _top_level_fields(reply)
        except grpc.RpcError as e:
            return e.code().name, count, final
    return "OK", count, final


def cli_has_remote_generate(gka):
    """Whether this gka's `generate` takes --addr (the client path through a router)."""
    p = subprocess.run([gka, "generate", "--help"], capture_output=True, text=True)
    return "--addr" in p.stdout


def expand(text, env):
    """Kubernetes $(VAR) expansion: known variables are replaced, unknown ones stay as
    written, $$ is a literal $."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


class Pod:
    def __init__(self, name, owner, labels, spec):
        self.name = name
        self.owner = owner
        self.labels = labels
        self.spec = spec
        self.ports = {}  # containerPort -> local port
        for c in spec["containers"]:
            for p in c.get("ports", []):
                self.ports[p["containerPort"]] = free_port()
        self.procs = []  # (container name, Popen, log path)

    def port(self, container_port):
        return self.ports[container_port]


class Cluster:
    """Pods of the rendered manifests, started as processes. Use as a context manager."""

    def __init__(self, docs, bin_dir, work, volumes, secrets, namespace):
        self.docs = docs
        self.bin_dir = Path(bin_dir).resolve()
        self.work = Path(work).resolve()
        self.volume_sources = volumes  # PVC claim name -> local directory
        self.secrets = secrets  # Secret name -> {key: value}
        self.namespace = namespace
        self.config_maps = {d["metadata"]["name"]: d.get("data", {})
                            for d in docs if d["kind"] == "ConfigMap"}
        self.services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        self.pods = []
        for d in docs:
            if d["kind"] not in ("Deployment", "StatefulSet"):
                continue
            name = d["metadata"]["name"]
            template = d["spec"]["template"]
            for i in range(d["spec"].get("replicas", 1)):
                # StatefulSet pods are <name>-<ordinal>; Deployment pods get a suffix.
                pod_name = f"{name}-{i}" if d["kind"] == "StatefulSet" else f"{name}-7d9f8-{i:05d}"
                self.pods.append(Pod(pod_name, d, template["metadata"]["labels"],
                                     template["spec"]))

    # --- names -----------------------------------------------------------------------------
    def pods_of(self, service):
        selector = self.services[service]["spec"]["selector"]
        return [p for p in self.pods if all(p.labels.get(k) == v for k, v in selector.items())]

    def _pod_address(self, pod, service_port):
        """127.0.0.1:<local port> of `pod` for a Service port (targetPort by number or name)."""
        target = service_port.get("targetPort", service_port["port"])
        if isinstance(target, str):  # a named port
            target = next(p["containerPort"] for c in pod.spec["containers"]
                          for p in c.get("ports", []) if p.get("name") == target)
        return f"127.0.0.1:{pod.port(target)}"

    def _service_pods(self, service, port):
        sp = next(p for p in self.services[service]["spec"]["ports"] if p["port"] == port)
        pods = self.pods_of(service)
        if not pods:
            raise RuntimeError(f"Service {service} selects no pod")
        return sp, pods

    def service_address(self, service, port):
        """127.0.0.1:<local port> for Service `service` port `port` (its first pod)."""
        sp, pods = self._service_pods(service, port)
        return self._pod_address(pods[0], sp)

    def headless_addresses(self, service, port):
        """Every selected pod's 127.0.0.1:<local port> for a headless Service's port."""
        sp, pods = self._service_pods(service, port)
        return ",".join(self._pod_address(pod, sp) for pod in pods)

    def _rewrite(self, value, pod, mounts):
        # Service DNS names with a port.
        def svc(m):
            host, port = m.group(1), int(m.group(2))
            base = host.split(".")[0]
            suffixes = {base, f"{base}.{self.namespace}", f"{base}.{self.namespace}.svc",
                        f"{base}.{self.namespace}.svc.cluster.local"}
            if base in self.services and host in suffixes:
                if self.services[base]["spec"].get("clusterIP") == "None":
                    return self.headless_addresses(base, port)
                return self.service_address(base, port)
            return m.group(0)
        value = re.sub(r"([a-z0-9][a-z0-9.-]*):(\d+)", svc, value)
        # The pod's own ports, as a whole flag value or after a host.
        def port(m):
            n = int(m.group(2))
            return f"{m.group(1)}{pod.ports[n]}" if n in pod.ports else m.group(0)
        value = re.sub(r"(^|=|:)(\d{2,5})$", port, value)
        # Paths under a volume mount (the whole value, or a --flag=value's value), once.
        flag, sep, path = value.partition("=") if value.startswith("-") else ("", "", value)
        for mount_path, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if path == mount_path or path.startswith(mount_path + "/"):
                return flag + sep + str(local) + path[len(mount_path):]
        return value

    def _volumes(self, pod):
        root = self.work / pod.name / "volumes"
        local = {}
        for v in pod.spec.get("volumes", []):
            d = root / v["name"]
            if "configMap" in v:
                d.mkdir(parents=True, exist_ok=True)
                for key, text in self.config_maps[v["configMap"]["name"]].items():
                    (d / key).write_text(text)
            elif "persistentVolumeClaim" in v:
                d = Path(self.volume_sources[v["persistentVolumeClaim"]["claimName"]])
            elif "emptyDir" in v:
                d.mkdir(parents=True, exist_ok=True)
            elif "secret" in v:
                # The kubelet's secret volume: one file per key, with the volume's mode.
                d.mkdir(parents=True, exist_ok=True)
                for key, text in self.secrets[v["secret"]["secretName"]].items():
                    (d / key).write_text(text)
                    (d / key).chmod(v["secret"].get("defaultMode", 0o644))
            else:
                raise RuntimeError(f"{pod.name}: volume {v['name']} of an unsupported kind")
            local[v["name"]] = d
        return local

    def _env(self, pod, container):
        env = {}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
                continue
            ref = e["valueFrom"]
            if "fieldRef" in ref:
                field = ref["fieldRef"]["fieldPath"]
                env[e["name"]] = {"metadata.name": pod.name, "status.podIP": "127.0.0.1",
                                  "metadata.namespace": self.namespace}[field]
            elif "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                env[e["name"]] = self.config_maps[r["name"]][r["key"]]
            elif "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                env[e["name"]] = self.secrets[r["name"]][r["key"]]
            else:
                raise RuntimeError(f"{pod.name}: env {e['name']}: unsupported valueFrom {ref}")
        return env

    def command_line(self, pod, container):
        """(argv, env, cwd) for a container, translated as the module docstring says."""
        volumes = self._volumes(pod)
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        env = self._env(pod, container)
        argv = [expand(a, env) for a in container.get("command", []) + container.get("args", [])]
        image_bin = argv[0]
        if not image_bin.startswith("/usr/local/bin/"):
            raise RuntimeError(f"{pod.name}: command {image_bin} is not an image binary")
        argv[0] = str(self.bin_dir / Path(image_bin).name)
        argv[1:] = [self._rewrite(a, pod, mounts) for a in argv[1:]]
        env = {k: self._rewrite(v, pod, mounts) for k, v in env.items()}
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod.name,
                    "HOME": str(mounts.get("/tmp", self.work)), **env}
        return argv, full_env, mounts.get("/tmp", self.work)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, pods=None):
        """Starts every container of `pods` (default: all) at once, as a kubelet would."""
        for pod in pods or self.pods:
            for c in pod.spec["containers"]:
                argv, env, cwd = self.command_line(pod, c)
                log = self.work / pod.name / f"{c['name']}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                (self.work / pod.name / f"{c['name']}.cmd.json").write_text(
                    json.dumps({"argv": argv, "env": env}, indent=1))
                proc = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                    preexec_fn=lambda: ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG,
                                                                      signal.SIGKILL))
                pod.procs.append((c["name"], proc, log))

    def probe(self, pod, container, kind, deadline_s=None):
        """Runs one probe like the kubelet until it succeeds; raises with the last answer
        when failureThreshold consecutive checks fail (or deadline_s passes)."""
        p = container[kind]
        grpc_spec = p["grpc"]
        address = f"127.0.0.1:{pod.port(grpc_spec['port'])}"
        period = p.get("periodSeconds", 10)
        timeout = p.get("timeoutSeconds", 1)
        threshold = p.get("failureThreshold", 3)
        if deadline_s is not None:
            threshold = max(1, int(deadline_s / period) + 1)
        # Poll faster than the kubelet so the test is quick, but count failures in periods.
        fast = min(period, 0.5)
        budget = threshold * period
        start = time.monotonic()
        last = None
        while time.monotonic() - start < budget:
            self.check_alive(pod)
            last = grpc_health(address, grpc_spec.get("service", ""), timeout)
            if last == 1:
                return time.monotonic() - start
            time.sleep(fast)
        raise RuntimeError(f"{pod.name}/{container['name']}: {kind} on {address} "
                           f"(service '{grpc_spec.get('service', '')}') failed for {budget:.0f} s;"
                           f" last answer {last!r}\n{self.log_tail(pod)}")

    def check_alive(self, pod):
        for name, proc, log in pod.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{pod.name}/{name} exited {proc.returncode}\n"
                                   f"{self.log_tail(pod)}")

    def log_tail(self, pod, lines=30):
        out = []
        for name, _, log in pod.procs:
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {pod.name}/{name} log:\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self):
        """SIGTERM to every container, SIGKILL after its pod's grace period (kubelet)."""
        results = {}
        for pod in self.pods:
            for name, proc, _ in pod.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        for pod in self.pods:
            grace = pod.spec.get("terminationGracePeriodSeconds", 30)
            for name, proc, _ in pod.procs:
                try:
                    results[f"{pod.name}/{name}"] = proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    results[f"{pod.name}/{name}"] = "killed after the grace period"
        return results

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
