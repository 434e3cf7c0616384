#!/usr/bin/env python3
"""Benchmark envroll against Stakater Reloader on a local control plane.

    e2e/bench/bench.py --profile full|quick [--out BENCHMARKS.md]

Each tool gets a fresh local cluster (e2e/cluster) with identical objects: managed Deployments
(one ConfigMap each, consumed via envFrom), a precision namespace with one Deployment per kind
of consumption, a canary Deployment per namespace (used only to tell when an operator has
finished its initial list and acts on changes), and bystander Secrets and ConfigMaps that nobody
references. Every workload carries both tools' opt-in annotations. The operators run as local
processes authenticated as ServiceAccounts of their own, so the API requests they make can be
attributed to them through API Priority and Fairness flow schemas (one per verb).

Scenarios (numbers come from the profile and can be overridden with BENCH_* variables):
  1 latency   single ConfigMap updates, spaced; PATCH response -> pod-template change on a watch
  2 memory    peak (VmHWM) and steady (VmRSS) resident memory with all objects loaded
  3 precision a change per kind of consumption; rollouts that happened vs rollouts needed
  4 restart   restart without changes; then changes made while the operator is down
  5 burst     every managed ConfigMap updated at once: time, API requests, CPU
  6 idle      CPU seconds per minute with nothing changing

Only the Python 3 standard library is used. Everything the harness starts (operators and
clusters) is stopped when it exits, also on Ctrl-C or SIGTERM.
"""

import argparse
import base64
import concurrent.futures
import datetime
import hashlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import defaultdict

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLUSTER = os.path.join(ROOT, "e2e", "cluster")
COMPONENTS = os.path.join(ROOT, "e2e", "components")

MANAGED = {"envroll.dev/auto": "true", "reloader.stakater.com/auto": "true"}
IGNORED = {"envroll.dev/ignore": "true", "reloader.stakater.com/ignore": "true"}
LABEL = "envroll-bench"
SYSTEM_NS = "bench-system"
PRECISION_NS = "bench-precision"
IMAGE = "registry.invalid/bench/app:1"

PROFILES = {
    "full": dict(
        namespaces=10, deployments=1000, updates=300, spacing_ms=200,
        bystander_secrets=2000, secret_kib=100, bystander_configmaps=5000,
        idle_seconds=300, burst=1000, restart_changes=10, burst_concurrency=16, settle_seconds=10,
    ),
    "quick": dict(
        namespaces=4, deployments=40, updates=30, spacing_ms=200,
        bystander_secrets=80, secret_kib=100, bystander_configmaps=200,
        idle_seconds=60, burst=40, restart_changes=10, burst_concurrency=8, settle_seconds=3,
    ),
}
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


def log(message):
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


# --------------------------------------------------------------------------------------------
# A small Kubernetes REST client on the standard library.
# --------------------------------------------------------------------------------------------


class Kube:
    def __init__(self, kubeconfig, kubectl):
        raw = subprocess.check_output(
            [kubectl, "--kubeconfig", kubeconfig, "config", "view", "--raw", "--minify", "-o", "json"]
        )
        config = json.loads(raw)
        base = os.path.dirname(os.path.abspath(kubeconfig))
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.tmp = tempfile.mkdtemp(prefix="envroll-bench-kube-")

        def path_or_data(file_key, data_key, name, source):
            if source.get(data_key):
                path = os.path.join(self.tmp, name)
                with open(path, "wb") as f:
                    f.write(base64.b64decode(source[data_key]))
                return path
            if source.get(file_key):
                p = source[file_key]
                return p if os.path.isabs(p) else os.path.join(base, p)
            return None

        server = urllib.parse.urlparse(cluster["server"])
        self.server = cluster["server"]
        self.host, self.port = server.hostname, server.port or 443
        self.ca_file = path_or_data("certificate-authority", "certificate-authority-data", "ca.crt", cluster)
        self.ssl = ssl.create_default_context(cafile=self.ca_file)
        if cluster.get("insecure-skip-tls-verify"):
            self.ssl.check_hostname = False
            self.ssl.verify_mode = ssl.CERT_NONE
        cert = path_or_data("client-certificate", "client-certificate-data", "client.crt", user)
        key = path_or_data("client-key", "client-key-data", "client.key", user)
        if cert and key:
            self.ssl.load_cert_chain(cert, key)
        self.headers = {"Accept": "application/json", "User-Agent": "envroll-bench"}
        if user.get("token"):
            self.headers["Authorization"] = "Bearer " + user["token"]
        self.local = threading.local()

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def connect(self, timeout=60):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ssl, timeout=timeout)

    def _conn(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.connect()
            self.local.conn = conn
        return conn

    def _drop(self):
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
        self.local.conn = None

    def request(self, method, path, body=None, content_type="application/json", attempts=6):
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(attempts):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (http.client.HTTPException, OSError):
                self._drop()
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
                continue
            if response.status in (429, 500, 502, 503, 504) and attempt < attempts - 1:
                retry = response.getheader("Retry-After")
                time.sleep(float(retry) if retry and retry.isdigit() else 0.5 * (attempt + 1))
                continue
            return response.status, payload
        raise RuntimeError("unreachable")

    def get(self, path):
        status, payload = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {payload[:300]!r}")
        return json.loads(payload)

    def create(self, path, obj):
        status, payload = self.request("POST", path, obj)
        if status not in (200, 201, 202, 409):
            raise RuntimeError(f"POST {path}: {status} {payload[:300]!r}")
        return status

    def patch(self, path, obj):
        status, payload = self.request("PATCH", path, obj, "application/merge-patch+json")
        if status != 200:
            raise RuntimeError(f"PATCH {path}: {status} {payload[:300]!r}")

    def raw_text(self, path):
        status, payload = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status}")
        return payload.decode()


def collection_path(kind, namespace):
    core = {"ConfigMap": "configmaps", "Secret": "secrets", "ServiceAccount": "serviceaccounts"}
    if kind in core:
        return f"/api/v1/namespaces/{namespace}/{core[kind]}"
    if kind == "Deployment":
        return f"/apis/apps/v1/namespaces/{namespace}/deployments"
    raise ValueError(kind)


def create_object(kube, obj):
    kind = obj["kind"]
    if kind == "Namespace":
        return kube.create("/api/v1/namespaces", obj)
    if kind == "ClusterRoleBinding":
        return kube.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", obj)
    if kind == "FlowSchema":
        return kube.create("/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas", obj)
    if kind == "PriorityLevelConfiguration":
        return kube.create("/apis/flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations", obj)
    return kube.create(collection_path(kind, obj["metadata"]["namespace"]), obj)


def create_all(kube, objects, concurrency=16, what="objects"):
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in concurrent.futures.as_completed([pool.submit(create_object, kube, o) for o in objects]):
            future.result()
    log(f"created {len(objects)} {what} in {time.monotonic() - start:.1f}s")


# --------------------------------------------------------------------------------------------
# Watching Deployments: every pod-template change, with the time it was seen.
# --------------------------------------------------------------------------------------------


def template_digest(deployment):
    template = deployment.get("spec", {}).get("template", {})
    return hashlib.sha1(json.dumps(template, sort_keys=True).encode()).digest()


class DeploymentWatch(threading.Thread):
    def __init__(self, kube):
        super().__init__(daemon=True)
        self.kube = kube
        self.lock = threading.Lock()
        self.templates = {}
        self.changes = defaultdict(list)
        self.last_event = time.monotonic()
        self.events = 0
        self.stopping = False
        self.synced = threading.Event()
        self.conn = None

    def _record(self, key, digest, seen):
        with self.lock:
            previous = self.templates.get(key)
            self.templates[key] = digest
            if previous is not None and previous != digest:
                self.changes[key].append(seen)
            self.last_event = seen
            self.events += 1

    def _list(self):
        listing = self.kube.get(f"/apis/apps/v1/deployments?labelSelector={LABEL}%3Dyes")
        seen = time.monotonic()
        for item in listing["items"]:
            m = item["metadata"]
            self._record(f"{m['namespace']}/{m['name']}", template_digest(item), seen)
        return listing["metadata"]["resourceVersion"]

    def run(self):
        while not self.stopping:
            try:
                version = self._list()
                self.synced.set()
                while not self.stopping:
                    version = self._watch(version)
                    if version is None:
                        break
            except Exception as problem:  # the watch is restarted from a fresh list
                if self.stopping:
                    return
                log(f"deployment watch restarting: {problem}")
                time.sleep(0.5)

    def _watch(self, version):
        conn = self.kube.connect(timeout=900)
        self.conn = conn
        path = (f"/apis/apps/v1/deployments?watch=1&labelSelector={LABEL}%3Dyes"
                f"&allowWatchBookmarks=true&timeoutSeconds=600&resourceVersion={version}")
        conn.request("GET", path, headers=self.kube.headers)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"watch: {response.status}")
        while True:
            line = response.readline()
            seen = time.monotonic()
            if not line:
                conn.close()
                return version
            event = json.loads(line)
            obj = event.get("object", {})
            if event["type"] == "ERROR":
                conn.close()
                return None  # 410 Gone and friends: list again
            version = obj.get("metadata", {}).get("resourceVersion", version)
            if event["type"] == "BOOKMARK":
                continue
            m = obj["metadata"]
            key = f"{m['namespace']}/{m['name']}"
            if event["type"] == "DELETED":
                with self.lock:
                    self.templates.pop(key, None)
                continue
            self._record(key, template_digest(obj), seen)

    def stop(self):
        self.stopping = True
        if self.conn is not None:
            try:
                self.conn.sock and self.conn.sock.shutdown(2)
            except Exception:
                pass

    def first_change_after(self, key, since):
        with self.lock:
            for seen in self.changes.get(key, ()):
                if seen >= since:
                    return seen
        return None

    def count_changes(self, keys, since, until=None):
        until = until if until is not None else float("inf")
        with self.lock:
            return {k: sum(1 for t in self.changes.get(k, ()) if since <= t <= until) for k in keys}

    def wait_quiet(self, quiet, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self.lock:
                idle = time.monotonic() - self.last_event
            if idle >= quiet:
                return True
            time.sleep(0.2)
        return False


# --------------------------------------------------------------------------------------------
# Operator processes: start, stop, resident memory and CPU time from /proc.
# --------------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, amount, _unit = line.split()
                values[name[:-1]] = int(amount) * 1024
    return values


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Operator:
    def __init__(self, label, argv, env, log_path):
        self.label, self.argv, self.env, self.log_path = label, argv, env, log_path
        self.process = None
        self.samples = []
        self.hwm = 0
        self.last_cpu = 0.0
        self.started_at = None
        self._sampler = None
        self._stop_sampling = threading.Event()

    def start(self):
        self.log_file = open(self.log_path, "ab")
        self.log_file.write(f"\n=== {' '.join(self.argv)}\n".encode())
        self.log_file.flush()
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        RUNNING.add(self)
        self.samples = []
        self.hwm = 0
        self._stop_sampling.clear()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self):
        while not self._stop_sampling.is_set():
            self.sample()
            self._stop_sampling.wait(0.5)

    def sample(self):
        if self.process is None or self.process.poll() is not None:
            return
        try:
            status = proc_status(self.process.pid)
            cpu = proc_cpu_seconds(self.process.pid)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return
        self.hwm = max(self.hwm, status.get("VmHWM", 0))
        self.last_cpu = cpu
        self.samples.append((time.monotonic(), status.get("VmRSS", 0), status.get("VmHWM", 0), cpu))

    def cpu(self):
        self.sample()
        return self.last_cpu

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def rss_between(self, since, until):
        return [rss for t, rss, _hwm, _cpu in self.samples if since <= t <= until]

    def stop(self):
        if self.process is None:
            return
        self.sample()
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stop_sampling.set()
        self.log_file.close()
        RUNNING.discard(self)
        self.process = None


RUNNING = set()
CLUSTERS = []


def cleanup():
    for operator in list(RUNNING):
        try:
            operator.stop()
        except Exception as problem:
            log(f"stopping {operator.label}: {problem}")
    while CLUSTERS:
        name = CLUSTERS.pop()
        log(f"deleting cluster {name}")
        subprocess.run([CLUSTER, "down"], env={**os.environ, "ENVROLL_CLUSTER": name},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


# --------------------------------------------------------------------------------------------
# The objects.
# --------------------------------------------------------------------------------------------


def meta(name, namespace=None, annotations=None, labels=None):
    m = {"name": name, "labels": {LABEL: "yes", **(labels or {})}}
    if namespace:
        m["namespace"] = namespace
    if annotations:
        m["annotations"] = annotations
    return m


def config_map(namespace, name, data, annotations=None):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(name, namespace, annotations),
            "data": data}


def secret(namespace, name, data, annotations=None):
    encoded = {k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode()
               for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(name, namespace, annotations), "data": encoded}


def deployment(namespace, name, pod_spec, replicas=1):
    pod_spec = {"terminationGracePeriodSeconds": 0, **pod_spec}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(name, namespace, dict(MANAGED)),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def container(**extra):
    return {"name": "app", "image": IMAGE, **extra}


def app_config(i):
    return {"LOG_LEVEL": "info", "FEATURE_FLAGS": "a,b,c", "POOL_SIZE": str(10 + i % 7),
            "ENDPOINT": f"http://backend-{i % 13}.example.internal:8080"}


class Plan:
    """Names of every object, derived from the profile."""

    def __init__(self, p):
        self.p = p
        self.namespaces = [f"bench-{i:02d}" for i in range(p["namespaces"])]
        self.apps = []  # (namespace, deployment, configmap)
        for i in range(p["deployments"]):
            ns = self.namespaces[i % len(self.namespaces)]
            self.apps.append((ns, f"app-{i:04d}", f"app-{i:04d}-env"))
        self.watched = self.namespaces + [PRECISION_NS]
        self.precision = precision_cases()

    def app_key(self, app):
        return f"{app[0]}/{app[1]}"

    def managed_keys(self):
        return [self.app_key(a) for a in self.apps] + [f"{PRECISION_NS}/{c['name']}" for c in self.precision]


def precision_cases():
    """One Deployment per kind of consumption; `needed` is the decision-matrix truth."""
    cm = lambda name: {"configMapKeyRef": {"name": name, "key": "A"}}  # noqa: E731
    return [
        dict(name="p-env", kind="ConfigMap", source="p-env", key="A", needed=True,
             what="env valueFrom configMapKeyRef (the referenced key changes)",
             pod={"containers": [container(env=[{"name": "A", "valueFrom": cm("p-env")}])]}),
        dict(name="p-envfrom", kind="ConfigMap", source="p-envfrom", key="A", needed=True,
             what="envFrom configMapRef",
             pod={"containers": [container(envFrom=[{"configMapRef": {"name": "p-envfrom"}}])]}),
        dict(name="p-volume", kind="ConfigMap", source="p-volume", key="A", needed=False,
             what="plain ConfigMap volume (no subPath)",
             pod={"containers": [container(volumeMounts=[{"name": "cfg", "mountPath": "/etc/cfg"}])],
                  "volumes": [{"name": "cfg", "configMap": {"name": "p-volume"}}]}),
        dict(name="p-projected", kind="ConfigMap", source="p-projected", key="A", needed=False,
             what="projected volume (no subPath)",
             pod={"containers": [container(volumeMounts=[{"name": "cfg", "mountPath": "/etc/cfg"}])],
                  "volumes": [{"name": "cfg", "projected": {"sources": [
                      {"configMap": {"name": "p-projected"}}]}}]}),
        dict(name="p-subpath", kind="ConfigMap", source="p-subpath", key="A", needed=True,
             what="ConfigMap volume mounted with subPath (the pinned key changes)",
             pod={"containers": [container(volumeMounts=[
                 {"name": "cfg", "mountPath": "/etc/app/A", "subPath": "A"}])],
                  "volumes": [{"name": "cfg", "configMap": {"name": "p-subpath"}}]}),
        dict(name="p-unreferenced-key", kind="ConfigMap", source="p-keyref", key="B", needed=False,
             what="env valueFrom key A; only key B changes",
             pod={"containers": [container(env=[{"name": "A", "valueFrom": cm("p-keyref")}])]}),
        dict(name="p-ignored", kind="ConfigMap", source="p-ignored", key="A", needed=False,
             what="envFrom of a ConfigMap annotated as ignored (both tools' annotation)",
             pod={"containers": [container(envFrom=[{"configMapRef": {"name": "p-ignored"}}])]},
             annotations=IGNORED),
        dict(name="p-secret-env", kind="Secret", source="p-secret-env", key="A", needed=True,
             what="env valueFrom secretKeyRef (the referenced key changes)",
             pod={"containers": [container(env=[{"name": "A", "valueFrom": {
                 "secretKeyRef": {"name": "p-secret-env", "key": "A"}}}])]}),
        dict(name="p-secret-volume", kind="Secret", source="p-secret-volume", key="A", needed=False,
             what="plain Secret volume (no subPath)",
             pod={"containers": [container(volumeMounts=[{"name": "s", "mountPath": "/etc/s"}])],
                  "volumes": [{"name": "s", "secret": {"secretName": "p-secret-volume"}}]}),
        dict(name="p-init-envfrom", kind="ConfigMap", source="p-init", key="A", needed=True,
             what="envFrom in an init container",
             pod={"initContainers": [{"name": "init", "image": IMAGE,
                                      "envFrom": [{"configMapRef": {"name": "p-init"}}]}],
                  "containers": [container()]}),
    ]


def objects_for(plan):
    p = plan.p
    ns_objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": meta(n)}
                  for n in plan.watched + [SYSTEM_NS]]
    sources, workloads = [], []
    for i, (ns, name, cm) in enumerate(plan.apps):
        sources.append(config_map(ns, cm, app_config(i)))
        workloads.append(deployment(ns, name, {"containers": [container(
            envFrom=[{"configMapRef": {"name": cm}}])]}))
    seen_sources = set()
    for case in plan.precision:
        if case["source"] not in seen_sources:
            seen_sources.add(case["source"])
            data = {"A": "one", "B": "one"}
            make = config_map if case["kind"] == "ConfigMap" else secret
            sources.append(make(PRECISION_NS, case["source"], data, case.get("annotations")))
        workloads.append(deployment(PRECISION_NS, case["name"], case["pod"]))
    for ns in plan.watched:
        sources.append(config_map(ns, "canary", {"probe": "0"}))
        sources.append(secret(ns, "canary", {"probe": "0"}))
        workloads.append(deployment(ns, "canary", {"containers": [container(envFrom=[
            {"configMapRef": {"name": "canary"}}, {"secretRef": {"name": "canary"}}])]}, replicas=0))
    bystanders = []
    for i in range(p["bystander_secrets"]):
        ns = plan.namespaces[i % len(plan.namespaces)]
        # Opaque and incompressible, like a Helm release payload.
        bystanders.append(secret(ns, f"bystander-{i:04d}", {"release": os.urandom(p["secret_kib"] * 1024)}))
    for i in range(p["bystander_configmaps"]):
        ns = plan.namespaces[i % len(plan.namespaces)]
        bystanders.append(config_map(ns, f"unused-{i:04d}", {"setting": f"value-{i}", "other": "x" * 64}))
    return ns_objects, sources, workloads, bystanders


def rbac_and_flow_objects():
    group = f"system:serviceaccounts:{SYSTEM_NS}"
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("envroll", SYSTEM_NS)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("reloader", SYSTEM_NS)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": meta("bench-operators"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group}]},
        {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
         "metadata": meta("bench-operators"),
         "spec": {"type": "Limited", "limited": {
             "nominalConcurrencyShares": 100, "lendablePercent": 0,
             "limitResponse": {"type": "Queue", "queuing": {
                 "queues": 64, "handSize": 6, "queueLengthLimit": 50}}}}},
    ]
    subjects = [{"kind": "Group", "group": {"name": group}}]
    for i, verb in enumerate(VERBS + ["*"]):
        name = "bench-op-" + ("other" if verb == "*" else verb)
        rule = {"subjects": subjects, "resourceRules": [{
            "verbs": [verb], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"],
            "clusterScope": True}]}
        if verb == "*":
            rule["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
        objects.append({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": meta(name),
            "spec": {"priorityLevelConfiguration": {"name": "bench-operators"},
                     "matchingPrecedence": 300 + i, "distinguisherMethod": {"type": "ByUser"},
                     "rules": [rule]}})
    return objects


# --------------------------------------------------------------------------------------------
# API server metrics.
# --------------------------------------------------------------------------------------------

METRIC_LINE = re.compile(r'^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+)$')
LABEL_PAIR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def api_counters(kube):
    """Requests dispatched to the operators' flow schemas (by verb), and all requests by verb."""
    operator, everyone = defaultdict(float), defaultdict(float)
    for line in kube.raw_text("/metrics").splitlines():
        if not line.startswith(("apiserver_flowcontrol_dispatched_requests_total{", "apiserver_request_total{")):
            continue
        match = METRIC_LINE.match(line)
        if not match:
            continue
        name, labels, value = match.group(1), dict(LABEL_PAIR.findall(match.group(2))), float(match.group(3))
        if name == "apiserver_request_total":
            everyone[labels.get("verb", "?")] += value
        elif labels.get("flow_schema", "").startswith("bench-op-"):
            operator[labels["flow_schema"][len("bench-op-"):]] += value
    return operator, everyone


def counter_delta(before, after):
    return {k: int(round(after.get(k, 0) - before.get(k, 0)))
            for k in set(before) | set(after) if round(after.get(k, 0) - before.get(k, 0))}


# --------------------------------------------------------------------------------------------
# One tool on one fresh cluster.
# --------------------------------------------------------------------------------------------


class Session:
    def __init__(self, tool, args, plan, work, components):
        self.tool, self.args, self.plan, self.work, self.components = tool, args, plan, work, components
        self.p = plan.p
        self.results = {"tool": tool}
        self.operator = None
        self.processes = []
        self.probe_counter = 0
        self.change_counter = 0

    # -- cluster and objects --------------------------------------------------------------

    def setup(self):
        p = self.p
        name = f"envroll-bench-{os.getpid() % 100000}-{self.tool[:8]}"
        self.cluster = name
        pods = 2 * p["deployments"] + 60
        nodes = max(2, -(-pods // 100) + 1)
        env = {**os.environ, "ENVROLL_CLUSTER": name, "ENVROLL_NODES": str(nodes)}
        log(f"[{self.tool}] starting cluster {name} with {nodes} fake nodes")
        CLUSTERS.append(name)
        out = subprocess.run([CLUSTER, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-4000:])
            raise RuntimeError("e2e/cluster up failed")
        kubeconfig = re.search(r"export KUBECONFIG=(\S+)", out.stdout).group(1).strip("'\"")
        self.kubeconfig = kubeconfig
        self.kube = Kube(kubeconfig, self.components["ENVROLL_BIN_KUBECTL"])
        version = self.kube.get("/version")
        self.results["kubernetes"] = version.get("gitVersion")
        self.results["nodes"] = nodes

        ns_objects, sources, workloads, bystanders = objects_for(self.plan)
        start = time.monotonic()
        create_all(self.kube, ns_objects, what="namespaces")
        create_all(self.kube, rbac_and_flow_objects(), 4, "RBAC and flow-control objects")
        create_all(self.kube, sources, 16, "referenced ConfigMaps and Secrets")
        create_all(self.kube, workloads, 16, "Deployments")
        create_all(self.kube, bystanders, 16, "bystander Secrets and ConfigMaps")
        self.wait_deployments_ready()
        self.results["setup_seconds"] = round(time.monotonic() - start, 1)

        self.watch = DeploymentWatch(self.kube)
        self.watch.start()
        if not self.watch.synced.wait(60):
            raise RuntimeError("the Deployment watch did not start")
        self.operator_kubeconfig = self.write_sa_kubeconfig("envroll" if self.tool.startswith("envroll") else "reloader")

    def wait_deployments_ready(self):
        limit = self.args.setup_timeout
        deadline = time.monotonic() + limit
        last_report = 0
        while True:
            items = self.kube.get(f"/apis/apps/v1/deployments?labelSelector={LABEL}%3Dyes")["items"]
            ready = 0
            for d in items:
                want = d["spec"].get("replicas", 1)
                s = d.get("status", {})
                if (s.get("observedGeneration", 0) >= d["metadata"]["generation"]
                        and s.get("updatedReplicas", 0) == want and s.get("availableReplicas", 0) == want
                        and s.get("replicas", 0) == want):
                    ready += 1
            if ready == len(items):
                log(f"[{self.tool}] all {ready} Deployments are rolled out and available")
                return
            now = time.monotonic()
            if now > deadline:
                log(f"[{self.tool}] WARNING: only {ready}/{len(items)} Deployments available after {limit}s; going on")
                return
            if now - last_report > 20:
                log(f"[{self.tool}] waiting for Deployments: {ready}/{len(items)} available")
                last_report = now
            time.sleep(2)

    def write_sa_kubeconfig(self, sa):
        status, payload = self.kube.request(
            "POST", f"/api/v1/namespaces/{SYSTEM_NS}/serviceaccounts/{sa}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": 86400}})
        if status not in (200, 201):
            raise RuntimeError(f"token request for {sa}: {status} {payload[:200]!r}")
        token = json.loads(payload)["status"]["token"]
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "bench",
            "clusters": [{"name": "bench", "cluster": {"server": self.kube.server,
                                                        "certificate-authority": self.kube.ca_file}}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": sa, "namespace": SYSTEM_NS}}],
        }
        path = os.path.join(self.work, f"{self.tool}-{sa}.kubeconfig")
        with open(path, "w") as f:
            json.dump(config, f)
        os.chmod(path, 0o600)
        return path

    # -- operators ------------------------------------------------------------------------

    def operator_argv(self, debounce=None):
        namespaces = ",".join(self.plan.watched)
        if self.tool == "reloader":
            return [self.args.reloader_bin, "--reload-strategy=annotations", f"--namespaces={namespaces}"]
        # No rollout budget: Reloader has none, and the scenarios change workloads repeatedly.
        argv = [self.args.envroll_bin, "run", "--namespaces", namespaces, "--metrics-address", "127.0.0.1:0",
                "--max-rollouts-per-hour", "0"]
        if debounce is not None:
            argv += ["--debounce", debounce]
        return argv

    def start_operator(self, label, debounce=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENVROLL_", "POD_", "KUBERNETES_"))}
        env["KUBECONFIG"] = self.operator_kubeconfig
        if self.tool != "reloader":
            env["RUST_LOG"] = env.get("RUST_LOG", "info")
        operator = Operator(label, self.operator_argv(debounce), env,
                            os.path.join(self.work, f"{self.tool}.log"))
        operator.start()
        self.processes.append(operator)
        self.operator = operator
        ready = self.wait_operator_ready(operator)
        log(f"[{self.tool}] {label}: acting on changes {ready:.1f}s after start")
        return operator, ready

    def wait_operator_ready(self, operator):
        """Ready = a change to each namespace's canary Secret, then its canary ConfigMap, rolls out
        that namespace's canary Deployment: the operator has listed both kinds and acts."""
        start = operator.started_at
        deadline = start + self.args.ready_timeout
        for kind in ("Secret", "ConfigMap"):
            pending = set(self.plan.watched)
            while pending:
                if not operator.alive():
                    raise RuntimeError(f"{operator.label} exited; see {operator.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{operator.label} did not act on canary changes within "
                                       f"{self.args.ready_timeout}s; see {operator.log_path}")
                self.probe_counter += 1
                sent = {}
                for ns in pending:
                    sent[ns] = time.monotonic()
                    self.change(kind, ns, "canary", {"probe": f"{self.probe_counter}"})
                wait_until = time.monotonic() + 1.5 + self.debounce_seconds
                while time.monotonic() < wait_until and pending:
                    for ns in list(pending):
                        if self.watch.first_change_after(f"{ns}/canary", sent[ns]) is not None:
                            pending.discard(ns)
                    time.sleep(0.05)
        return time.monotonic() - start

    @property
    def debounce_seconds(self):
        return getattr(self, "_debounce", 0.0)

    def stop_operator(self):
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    def change(self, kind, namespace, name, data):
        path = f"{collection_path(kind, namespace)}/{name}"
        if kind == "Secret":
            data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.kube.patch(path, {"data": data})

    def bump(self, app):
        """A real change of one managed ConfigMap."""
        self.change_counter += 1
        ns, _name, cm = app
        self.change("ConfigMap", ns, cm, {"LOG_LEVEL": f"debug-{self.change_counter}"})

    # -- scenarios ------------------------------------------------------------------------

    def run(self):
        self.setup()
        r = self.results
        rng = random.Random(42)
        apps = list(self.plan.apps)
        managed = self.plan.managed_keys()
        self._debounce = 0.0

        # Install: start, wait until it acts, let adoption finish; nothing may roll out.
        started = time.monotonic()
        _, acting = self.start_operator("install", "0" if self.tool == "envroll" else None)
        r["acting_seconds"] = round(acting, 2)
        operator = self.operator
        self.watch.wait_quiet(3, 300)
        r["ready_seconds"] = round(time.monotonic() - started, 1)
        r["install_rollouts"] = sum(self.watch.count_changes(managed, started).values())

        # 6 idle and 2 memory.
        log(f"[{self.tool}] idle for {self.p['idle_seconds']}s")
        api0, _ = api_counters(self.kube)
        cpu0, t0 = operator.cpu(), time.monotonic()
        self.sleep(self.p["idle_seconds"])
        cpu1, t1 = operator.cpu(), time.monotonic()
        api1, _ = api_counters(self.kube)
        minutes = (t1 - t0) / 60
        steady = operator.rss_between(t0 + (t1 - t0) / 2, t1)
        r["idle"] = {"cpu_seconds_per_minute": (cpu1 - cpu0) / minutes, "minutes": minutes,
                     "api_requests": counter_delta(api0, api1)}
        r["memory"] = {"peak_bytes": operator.hwm, "steady_bytes": sorted(steady)[len(steady) // 2]}
        log(f"[{self.tool}] idle: {(cpu1 - cpu0) / minutes:.3f} CPU s/min, peak RSS "
            f"{operator.hwm / 2**20:.1f} MiB, steady {r['memory']['steady_bytes'] / 2**20:.1f} MiB")

        # 1 latency.
        order = rng.sample(apps, len(apps))
        r["latency"] = {"main": self.latency(order[:self.p["updates"]])}
        if self.tool == "envroll":
            self.stop_operator()
            self._debounce = 2.0
            self.start_operator("default debounce")
            self.watch.wait_quiet(2, 60)
            r["latency"]["default_debounce"] = self.latency(order[-self.p["updates"]:])
            self.stop_operator()
            self._debounce = 0.0
            self.start_operator("main", "0")
            self.watch.wait_quiet(2, 60)

        # 3 precision.
        r["precision"] = self.precision()

        # 4 restart.
        r["restart"] = self.restart(rng.sample(apps, min(self.p["restart_changes"], len(apps))))

        # 5 burst.
        r["burst"] = self.burst(apps[:self.p["burst"]])
        r["memory"]["peak_bytes_whole_run"] = max(o.hwm for o in self.processes)
        self.stop_operator()
        self.watch.stop()
        return r

    def sleep(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.operator is not None and not self.operator.alive():
                raise RuntimeError(f"{self.operator.label} exited; see {self.operator.log_path}")
            time.sleep(min(1.0, end - time.monotonic()) if end > time.monotonic() else 0)

    def latency(self, targets):
        spacing = self.p["spacing_ms"] / 1000
        log(f"[{self.tool}] latency: {len(targets)} single updates {spacing * 1000:.0f} ms apart "
            f"(debounce {self.debounce_seconds:g}s)")
        sent = []
        tick = time.monotonic()
        for app in targets:
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t_send = time.monotonic()
            self.bump(app)
            t_ack = time.monotonic()
            sent.append((self.plan.app_key(app), t_send, t_ack))
            tick += spacing
        deadline = time.monotonic() + 15 + self.debounce_seconds
        while time.monotonic() < deadline:
            if all(self.watch.first_change_after(k, s) is not None for k, s, _ in sent):
                break
            time.sleep(0.1)
        latencies, missed = [], 0
        for key, t_send, t_ack in sent:
            seen = self.watch.first_change_after(key, t_send)
            if seen is None:
                missed += 1
            else:
                latencies.append(max(0.0, seen - t_ack))
        latencies.sort()
        out = {"updates": len(sent), "missed": missed, "debounce": self.debounce_seconds}
        if latencies:
            out.update(p50=percentile(latencies, 50), p99=percentile(latencies, 99), max=latencies[-1],
                       mean=sum(latencies) / len(latencies), all_ms=[round(x * 1000, 2) for x in latencies])
            log(f"[{self.tool}] latency p50 {out['p50'] * 1000:.1f} ms, p99 {out['p99'] * 1000:.1f} ms, "
                f"max {out['max'] * 1000:.1f} ms, missed {missed}")
        self.watch.wait_quiet(2, 30)
        return out

    def precision(self):
        log(f"[{self.tool}] precision: {len(self.plan.precision)} changes")
        start = time.monotonic()
        for case in self.plan.precision:
            self.change(case["kind"], PRECISION_NS, case["source"], {case["key"]: f"two-{self.tool}"})
        self.sleep(self.p["settle_seconds"] + self.debounce_seconds)
        self.watch.wait_quiet(3, 30)
        counts = self.watch.count_changes([f"{PRECISION_NS}/{c['name']}" for c in self.plan.precision], start)
        rows = []
        for case in self.plan.precision:
            happened = counts[f"{PRECISION_NS}/{case['name']}"]
            rows.append({"case": case["name"], "what": case["what"], "needed": case["needed"],
                         "rollouts": happened})
        needed = sum(1 for c in rows if c["needed"])
        return {"cases": rows, "needed": needed,
                "happened": sum(1 for c in rows if c["rollouts"]),
                "unnecessary": sum(1 for c in rows if c["rollouts"] and not c["needed"]),
                "missed": sum(1 for c in rows if c["needed"] and not c["rollouts"]),
                "extra": sum(max(0, c["rollouts"] - 1) for c in rows)}

    def restart(self, changed_apps):
        managed = self.plan.managed_keys()
        debounce = "0" if self.tool == "envroll" else None
        log(f"[{self.tool}] restart without changes")
        self.stop_operator()
        start = time.monotonic()
        self.start_operator("restart", debounce)
        self.watch.wait_quiet(3, 120)
        self.sleep(self.p["settle_seconds"] / 2)
        no_change = sum(self.watch.count_changes(managed, start).values())
        log(f"[{self.tool}] restart without changes caused {no_change} rollouts")

        log(f"[{self.tool}] restart after {len(changed_apps)} changes made while stopped")
        self.stop_operator()
        down_at = time.monotonic()
        for app in changed_apps:
            self.bump(app)
        self.sleep(1)
        self.start_operator("restart after changes", debounce)
        self.watch.wait_quiet(3, 120)
        self.sleep(self.p["settle_seconds"] / 2)
        keys = [self.plan.app_key(a) for a in changed_apps]
        counts = self.watch.count_changes(keys, down_at)
        others = sum(v for k, v in self.watch.count_changes(managed, down_at).items() if k not in keys)
        rolled = sum(1 for k in keys if counts[k])
        log(f"[{self.tool}] changes made while stopped: {rolled}/{len(keys)} rolled out")
        return {"rollouts_without_change": no_change, "changed_while_down": len(keys),
                "rolled_out": rolled, "missed": len(keys) - rolled, "unrelated_rollouts": others}

    def burst(self, targets):
        log(f"[{self.tool}] burst: {len(targets)} ConfigMaps updated at once")
        self.watch.wait_quiet(3, 60)
        operator = self.operator
        api0, all0 = api_counters(self.kube)
        cpu0 = operator.cpu()
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(self.p["burst_concurrency"]) as pool:
            list(pool.map(self.bump, targets))
        acked = time.monotonic()
        keys = [self.plan.app_key(a) for a in targets]
        pending = set(keys)
        last_progress, done_at = time.monotonic(), None
        while pending:
            for k in list(pending):
                if self.watch.first_change_after(k, t0) is not None:
                    pending.discard(k)
                    last_progress = time.monotonic()
            if not operator.alive():
                raise RuntimeError(f"{operator.label} exited during the burst")
            if time.monotonic() - last_progress > self.args.burst_stall:
                break
            time.sleep(0.1)
        seen = [self.watch.first_change_after(k, t0) for k in keys]
        seen = [s for s in seen if s is not None]
        done_at = max(seen) if seen else time.monotonic()
        time.sleep(max(0.0, done_at + 1 - time.monotonic()))
        cpu1 = operator.cpu()
        api1, all1 = api_counters(self.kube)
        out = {"updates": len(targets), "patched": len(seen), "seconds": done_at - t0,
               "updates_acked_seconds": acked - t0, "cpu_seconds": cpu1 - cpu0,
               "api_requests": counter_delta(api0, api1), "apiserver_requests_all": counter_delta(all0, all1)}
        out["api_requests_total"] = sum(out["api_requests"].values())
        log(f"[{self.tool}] burst: {len(seen)}/{len(targets)} patched in {out['seconds']:.1f}s, "
            f"{out['api_requests_total']} operator API requests, {out['cpu_seconds']:.2f} CPU s")
        return out


def percentile(sorted_values, q):
    """Nearest-rank percentile."""
    rank = max(1, -(-q * len(sorted_values) // 100))
    return sorted_values[int(rank) - 1]


# --------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------


def machine_info():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"nproc": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1), "cpu": model,
            "kernel": platform.release(), "python": platform.python_version()}


def git_commit():
    try:
        commit = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], text=True).strip()
        dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "src", "Cargo.toml", "Cargo.lock"]).returncode
        return commit + (" (with uncommitted changes to src/)" if dirty else "")
    except Exception:
        return "unknown"


def ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def mib(b):
    return "n/a" if b is None else f"{b / 2**20:.1f} MiB"


def ratio(a, b):
    if a is None or b is None:
        return "n/a"
    if b == 0:
        return "n/a (Reloader: 0)" if a else "1 (both 0)"
    return f"{a / b:.3g}"


def dig(d, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


def val(v):
    return "n/a" if v is None else str(v)


def render(results, meta_info):
    e, rl = results.get("envroll"), results.get("reloader")
    p = meta_info["profile_values"]
    out = []
    w = out.append
    w("# Benchmarks: envroll and Stakater Reloader\n")
    w(f"Generated by `{meta_info['command']}` on {meta_info['date']} "
      f"(profile `{meta_info['profile']}`, {meta_info['duration_min']:.0f} minutes). "
      "Every figure below comes from that one run on this machine; nothing was edited by hand.\n")
    w("## Setup\n")
    w("| | |\n|---|---|")
    m = meta_info["machine"]
    w(f"| Machine | {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory, Linux {m['kernel']} |")
    w(f"| Kubernetes | {meta_info['kubernetes']} (kube-apiserver, kube-controller-manager, kube-scheduler and etcd "
      f"as local processes; {meta_info['nodes']} kwok fake nodes, so pods become Ready without a kubelet) |")
    w(f"| envroll | commit {meta_info['envroll_commit']}, release build |")
    w(f"| Reloader | {meta_info['reloader_version']} |")
    w(f"| Reproduce | `{meta_info['reproduce']}` |")
    w("")
    w(f"The workload: {p['deployments']:,} managed Deployments (1 replica each) in {p['namespaces']} namespaces, "
      f"each consuming its own ConfigMap through `envFrom`; {p['bystander_secrets']:,} bystander Secrets of "
      f"{p['secret_kib']} KiB (type Opaque, random bytes, like Helm release payloads) and "
      f"{p['bystander_configmaps']:,} small ConfigMaps that nothing references; a namespace of "
      f"{len(precision_cases())} Deployments for the precision scenario; one canary Deployment per namespace. "
      "Every Deployment carries both `envroll.dev/auto: \"true\"` and `reloader.stakater.com/auto: \"true\"`. "
      "All objects exist during every scenario.\n")
    w(meta_info["reloader_prose"] + "\n")
    w("Each tool gets its own fresh cluster with identical objects, created the same way, and runs alone "
      "on it; the two runs follow each other. Both run as local processes (not in pods) authenticated as "
      "ServiceAccounts bound to `cluster-admin`, watching the same namespaces "
      f"(`{', '.join(meta_info['watched'])}`). envroll runs with `--debounce 0` in every scenario except the "
      "second latency row, which restarts it with its default debounce (2 s). Reloader has no debounce.\n")

    w("## Results\n")
    w("The last column divides envroll's figure by Reloader's: below 1, envroll is faster or uses less.\n")
    w("| Scenario | Measure | envroll | Reloader | envroll / Reloader |")
    w("|---|---|---|---|---|")
    le, lr = dig(e, "latency", "main"), dig(rl, "latency", "main")
    ld = dig(e, "latency", "default_debounce")
    n_upd = p["updates"]
    for q in ("p50", "p99", "max"):
        w(f"| 1. Latency, {n_upd} single updates {p['spacing_ms']} ms apart | {q}, envroll `--debounce 0` "
          f"| {ms(dig(le, q))} | {ms(dig(lr, q))} | {ratio(dig(le, q), dig(lr, q))} |")
    for q in ("p50", "p99", "max"):
        w(f"| 1. Latency | {q}, envroll default debounce (2 s) | {ms(dig(ld, q))} | {ms(dig(lr, q))} "
          f"| {ratio(dig(ld, q), dig(lr, q))} |")
    w(f"| 1. Latency | updates never rolled out | {val(dig(le, 'missed'))} (debounce 0), "
      f"{val(dig(ld, 'missed'))} (2 s) | {val(dig(lr, 'missed'))} | |")
    pe, pr = dig(e, "memory", "peak_bytes"), dig(rl, "memory", "peak_bytes")
    se, sr = dig(e, "memory", "steady_bytes"), dig(rl, "memory", "steady_bytes")
    w(f"| 2. Memory | peak RSS (VmHWM), start through idle | {mib(pe)} | {mib(pr)} | {ratio(pe, pr)} |")
    w(f"| 2. Memory | steady RSS (VmRSS, median of the idle window's second half) | {mib(se)} | {mib(sr)} "
      f"| {ratio(se, sr)} |")
    ae, ar = dig(e, "memory", "peak_bytes_whole_run"), dig(rl, "memory", "peak_bytes_whole_run")
    w(f"| 2. Memory | peak RSS over the whole run (incl. the burst) | {mib(ae)} | {mib(ar)} | {ratio(ae, ar)} |")
    for label, field in (("rollouts needed", "needed"), ("rollouts that happened", "happened"),
                         ("unnecessary rollouts", "unnecessary"), ("missed rollouts", "missed")):
        a, b = dig(e, "precision", field), dig(rl, "precision", field)
        w(f"| 3. Precision ({len(precision_cases())} changes) | {label} | {val(a)} | {val(b)} | |")
    for label, field in (("rollouts on install (no change)", None),
                         ("rollouts caused by a restart without changes", "rollouts_without_change"),
                         ("changes made while stopped that rolled out", "rolled_out"),
                         ("changes made while stopped that were missed", "missed")):
        if field is None:
            a, b = dig(e, "install_rollouts"), dig(rl, "install_rollouts")
        else:
            a, b = dig(e, "restart", field), dig(rl, "restart", field)
        scope = "" if field in (None, "rollouts_without_change") else f" (of {dig(e, 'restart', 'changed_while_down')})"
        w(f"| 4. Restart | {label}{scope} | {val(a)} | {val(b)} | |")
    be, br = dig(e, "burst"), dig(rl, "burst")
    w(f"| 5. Burst of {p['burst']:,} updates | time until every consumer is patched "
      f"| {secs(dig(be, 'seconds'))} | {secs(dig(br, 'seconds'))} | {ratio(dig(be, 'seconds'), dig(br, 'seconds'))} |")
    w(f"| 5. Burst | workloads patched | {val(dig(be, 'patched'))} | {val(dig(br, 'patched'))} | |")
    w(f"| 5. Burst | API requests made by the operator | {val(dig(be, 'api_requests_total'))} "
      f"| {val(dig(br, 'api_requests_total'))} "
      f"| {ratio(dig(be, 'api_requests_total'), dig(br, 'api_requests_total'))} |")
    w(f"| 5. Burst | … by verb | {verbs(dig(be, 'api_requests'))} | {verbs(dig(br, 'api_requests'))} | |")
    w(f"| 5. Burst | operator CPU time | {secs(dig(be, 'cpu_seconds'))} | {secs(dig(br, 'cpu_seconds'))} "
      f"| {ratio(dig(be, 'cpu_seconds'), dig(br, 'cpu_seconds'))} |")
    ie, ir = dig(e, "idle", "cpu_seconds_per_minute"), dig(rl, "idle", "cpu_seconds_per_minute")
    w(f"| 6. Idle ({p['idle_seconds'] / 60:.3g} min) | CPU seconds per minute | {num(ie)} | {num(ir)} | {ratio(ie, ir)} |")
    w(f"| 6. Idle | API requests by the operator | {verbs(dig(e, 'idle', 'api_requests'))} "
      f"| {verbs(dig(rl, 'idle', 'api_requests'))} | |")
    w(f"| Start | seconds from start until it acts on changes (install) | {secs(dig(e, 'acting_seconds'))} "
      f"| {secs(dig(rl, 'acting_seconds'))} | |")
    w(f"| Start | … until Deployments are quiet for 3 s (envroll: adoption finished) "
      f"| {secs(dig(e, 'ready_seconds'))} | {secs(dig(rl, 'ready_seconds'))} | |")
    w("")

    w("## Targets\n")
    w("| Target | Result | |\n|---|---|---|")
    for target, result, ok in targets(results):
        w(f"| {target} | {result} | {'pass' if ok else ('FAIL' if ok is not None else 'n/a')} |")
    w("")

    w("## Precision, per change\n")
    w("`needed` is the truth of envroll's decision matrix (the consumption table in the README): env, envFrom, "
      "subPath and init containers freeze what they read; volumes without subPath are updated in place by the kubelet; a key "
      "nobody references and an ignored object change nothing the process can see.\n")
    w("| Change | Needed | envroll rollouts | Reloader rollouts |\n|---|---|---|---|")
    ec = {c["case"]: c for c in (dig(e, "precision", "cases") or [])}
    rc = {c["case"]: c for c in (dig(rl, "precision", "cases") or [])}
    for case in precision_cases():
        w(f"| {case['what']} | {'yes' if case['needed'] else 'no'} | {dig(ec.get(case['name']), 'rollouts')} "
          f"| {dig(rc.get(case['name']), 'rollouts')} |")
    w("")

    w("## How it is measured\n")
    w("- **Latency**: the harness sends one ConfigMap merge-patch at a time to a different Deployment's "
      "ConfigMap, spaced by the interval above, and takes the time when the PATCH response arrives. A watch on "
      "Deployments (same process, monotonic clock) records when each Deployment's `spec.template` changes. "
      "Latency is the difference; percentiles are nearest-rank.")
    w("- **Memory**: `VmHWM` and `VmRSS` from `/proc/<pid>/status` of the operator process, sampled every 0.5 s. "
      "The peak covers the start (initial list of every ConfigMap and Secret in the watched namespaces, "
      "including the bystanders) and the idle window; the steady value is the median of the samples in the "
      "second half of the idle window.")
    w("- **Precision**: each source of the precision namespace is changed once; after the debounce plus "
      f"{p['settle_seconds']} s and a quiet period the harness counts pod-template changes per Deployment.")
    w("- **Restart**: SIGTERM, start again, wait until it acts on a canary change and Deployments are quiet, "
      "count template changes of managed Deployments; then stop, change ConfigMaps consumed through `envFrom`, "
      "start, and count which of those Deployments rolled out.")
    w("- **Burst**: all ConfigMaps updated by "
      f"{p['burst_concurrency']} concurrent clients; time from the first update to the last template change "
      "seen. API requests are those the API server dispatched for the operator's ServiceAccount (API "
      "Priority and Fairness flow schemas per verb, `apiserver_flowcontrol_dispatched_requests_total`), "
      "between the first update and one second after the last template change; watches already open are "
      "not counted again. CPU is `utime + stime` from `/proc/<pid>/stat` over the same window.")
    w("- **Idle**: CPU time and API requests over the idle window, right after the operator has started and "
      "finished adopting the workloads.")
    w("- **Ready**: each namespace has a canary Deployment consuming a canary Secret and ConfigMap; the "
      "operator counts as started once a change to each rolls its canary out. Canaries are excluded from "
      "every count above.")
    w("")
    w("## Caveats\n")
    for c in meta_info["caveats"]:
        w(f"- {c}")
    w("")
    w("## Raw numbers\n")
    w("Whole-API-server request counts during the burst (every client, including kube-controller-manager "
      "rolling the Deployments out and the harness's own updates), by verb:\n")
    w(f"- envroll: {verbs(dig(be, 'apiserver_requests_all'))}")
    w(f"- Reloader: {verbs(dig(br, 'apiserver_requests_all'))}")
    w("")
    w("The harness also writes every raw figure (each latency sample included) as JSON next to its logs, "
      f"`{meta_info['results_json']}` on the machine that ran it; that file is not committed. "
      "`e2e/bench/bench.py --render-only DIR` renders this report again from such a directory.")
    return "\n".join(out) + "\n"


def secs(v):
    return "n/a" if v is None else f"{v:.2f} s"


def num(v):
    return "n/a" if v is None else f"{v:.3g}"


def verbs(d):
    if not d:
        return "n/a" if d is None else "none"
    return ", ".join(f"{k.upper()} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def targets(results):
    e, rl = results.get("envroll"), results.get("reloader")
    out = []
    pe, pr = dig(e, "memory", "peak_bytes"), dig(rl, "memory", "peak_bytes")
    ok = None if pe is None or pr is None else pr >= 10 * pe
    out.append(("Scenario 2: envroll peak RSS at least 10x below Reloader's",
                f"{ratio(pr, pe)}x ({mib(pe)} vs {mib(pr)})" if ok is not None else "n/a", ok))
    p99e, p99r = dig(e, "latency", "main", "p99"), dig(rl, "latency", "main", "p99")
    ok = None if p99e is None or p99r is None else p99e <= p99r
    out.append(("Scenario 1: envroll p99 (`--debounce 0`) no worse than Reloader's",
                f"{ms(p99e)} vs {ms(p99r)}", ok))
    ok = None if p99e is None else p99e < 0.050
    out.append(("Scenario 1: envroll p99 under 50 ms at `--debounce 0`", ms(p99e), ok))
    un, mi = dig(e, "precision", "unnecessary"), dig(e, "precision", "missed")
    ok = None if un is None else (un == 0 and mi == 0)
    out.append(("Scenario 3: envroll, zero unnecessary and zero missed rollouts",
                f"{un} unnecessary, {mi} missed", ok))
    rw, rm, ins = dig(e, "restart", "rollouts_without_change"), dig(e, "restart", "missed"), dig(e, "install_rollouts")
    ok = None if rw is None else (rw == 0 and rm == 0 and ins == 0)
    out.append(("Scenario 4: envroll, zero unnecessary and zero missed rollouts",
                f"{ins} on install, {rw} on restart, {rm} missed of {dig(e, 'restart', 'changed_while_down')}", ok))
    return out


# --------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--out", default=None, help="Markdown report (default: BENCHMARKS.md for full)")
    parser.add_argument("--work", default=os.path.join(ROOT, "target", "bench"))
    parser.add_argument("--envroll-bin", default=os.environ.get("ENVROLL_BIN")
                        or os.path.join(ROOT, "target", "release", "envroll"))
    parser.add_argument("--reloader-bin", default=os.environ.get("RELOADER_BIN"))
    parser.add_argument("--tools", default=os.environ.get("BENCH_TOOLS", "envroll,reloader"))
    parser.add_argument("--setup-timeout", type=int, default=1200)
    parser.add_argument("--ready-timeout", type=int, default=300)
    parser.add_argument("--burst-stall", type=int, default=120,
                        help="give up on the burst after this many seconds without progress")
    parser.add_argument("--command", default=None, help="the command line shown in the report")
    parser.add_argument("--render-only", metavar="DIR", default=None,
                        help="render the report again from DIR/results.json and DIR/meta.json of an earlier run")
    args = parser.parse_args()
    if args.render_only:
        with open(os.path.join(args.render_only, "results.json")) as f:
            results = json.load(f)
        with open(os.path.join(args.render_only, "meta.json")) as f:
            meta_info = json.load(f)
        out_path = args.out or (os.path.join(ROOT, "BENCHMARKS.md") if meta_info["profile"] == "full"
                                else os.path.join(args.render_only, f"BENCHMARKS-{meta_info['profile']}.md"))
        with open(out_path, "w") as f:
            f.write(render(results, meta_info))
        log(f"wrote {out_path}")
        return 0

    profile = dict(PROFILES[args.profile])
    for key in profile:
        env_value = os.environ.get("BENCH_" + key.upper())
        if env_value:
            profile[key] = int(env_value)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if "reloader" in tools:
        if not args.reloader_bin:
            sys.exit("bench: RELOADER_BIN is not set. The comparison needs a prebuilt Stakater Reloader binary:\n"
                     "  build a release of github.com/stakater/Reloader outside this repository with `go build`,\n"
                     "  then run: make bench RELOADER_BIN=/path/to/reloader\n"
                     "(BENCH_TOOLS=envroll measures envroll alone, without ratios.)")
        if not os.access(args.reloader_bin, os.X_OK):
            sys.exit(f"bench: RELOADER_BIN={args.reloader_bin} is not an executable file")
    if "envroll" in tools and not os.access(args.envroll_bin, os.X_OK):
        sys.exit(f"bench: {args.envroll_bin} is missing; run `cargo build --release` first")
    out_path = args.out or (os.path.join(ROOT, "BENCHMARKS.md") if args.profile == "full"
                            else os.path.join(args.work, f"BENCHMARKS-{args.profile}.md"))

    os.makedirs(args.work, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f"run-{args.profile}-", dir=args.work)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    load_at_start = load_average_note()
    log(f"profile {args.profile}: {profile}; logs in {work}")

    components = {}
    env_out = subprocess.run([COMPONENTS, "env"], stdout=subprocess.PIPE, text=True, check=True).stdout
    for line in env_out.splitlines():
        match = re.match(r"^(?:export )?(\w+)=(.*)$", line.strip())
        if match:
            components[match.group(1)] = match.group(2).strip("'\"")

    plan = Plan(profile)
    results, sessions = {}, []
    code = 0
    try:
        for tool in tools:
            session = Session(tool, args, plan, work, components)
            sessions.append(session)
            try:
                results[tool] = session.run()
            finally:
                for operator in list(RUNNING):
                    operator.stop()
                if getattr(session, "watch", None):
                    session.watch.stop()
                if getattr(session, "kube", None):
                    session.kube.close()
                cleanup()
            with open(os.path.join(work, "results.json"), "w") as f:
                json.dump(results, f, indent=2, default=str)
    except (Interrupted, KeyboardInterrupt) as problem:
        log(f"interrupted ({problem}); stopping everything this run started")
        cleanup()
        return 130
    except Exception:
        cleanup()
        raise
    finally:
        cleanup()

    reloader_version = os.environ.get("RELOADER_VERSION") or guess_version(args.reloader_bin)
    command = args.command or f"e2e/bench/bench.py --profile {args.profile}"
    reloader_prose = os.environ.get("RELOADER_BUILD_NOTE") or (
        f"Reloader ({reloader_version}) was built from its release source with `go build` outside this "
        "repository and run as a local process.")
    reloader_prose += (
        " It runs as `reloader --reload-strategy=annotations --namespaces=<the watched namespaces>` with "
        "`KUBECONFIG` pointing at the local cluster, so it rolls workloads out by writing a pod-template "
        "annotation, like envroll, and watches the same namespaces. The precision namespace's ignored "
        "ConfigMap carries both `envroll.dev/ignore: \"true\"` and Reloader's equivalent, "
        "`reloader.stakater.com/ignore: \"true\"`.")
    any_session = next((s for s in sessions if hasattr(s, "results")), None)
    meta_info = {
        "command": command, "profile": args.profile, "profile_values": profile,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_min": (time.monotonic() - started) / 60,
        "machine": machine_info(),
        "kubernetes": next((r.get("kubernetes") for r in results.values() if r.get("kubernetes")), "unknown"),
        "nodes": next((r.get("nodes") for r in results.values() if r.get("nodes")), "?"),
        "envroll_commit": os.environ.get("ENVROLL_COMMIT") or git_commit(),
        "reloader_version": reloader_version if "reloader" in tools else "not run",
        "reloader_prose": reloader_prose if "reloader" in tools else "Reloader was not run (BENCH_TOOLS).",
        "reproduce": os.environ.get("BENCH_REPRODUCE", f"make bench RELOADER_BIN=/path/to/reloader"),
        "watched": plan.watched,
        "results_json": os.path.relpath(os.path.join(work, "results.json"), ROOT),
        "caveats": caveats(results, load_at_start, load_average_note()),
    }
    del any_session
    with open(os.path.join(work, "meta.json"), "w") as f:
        json.dump(meta_info, f, indent=2, default=str)
    report = render(results, meta_info)
    with open(out_path, "w") as f:
        f.write(report)
    log(f"wrote {os.path.relpath(out_path, ROOT)} after {(time.monotonic() - started) / 60:.1f} minutes")
    print(report)
    return code


def guess_version(binary):
    if not binary:
        return "unknown"
    match = re.search(r"v\d+\.\d+\.\d+", os.path.realpath(binary))
    return match.group(0) if match else "unknown version"


def load_average_note():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[:3]
    except OSError:
        return None


def caveats(results, load_start, load_end):
    notes = [
        "One run on a small shared machine: the control plane, the operator and the harness share 2 CPUs, so "
        "latencies include scheduling noise; treat differences of a few milliseconds as noise.",
        "kube-controller-manager really rolls every changed Deployment out (new ReplicaSet, new pod on a kwok "
        "node), so the burst and the scenarios after it run while the control plane is busy with those rollouts, "
        "for both tools alike.",
        "The operators run outside the cluster with a ServiceAccount token and cluster-admin; in a real "
        "installation they run in pods with narrower RBAC, which changes neither memory nor latency.",
        "Reloader's workers handle one item at a time per resource kind and namespace and list the namespace's "
        "workloads for every change; envroll keeps a reverse index and patches only the consumers.",
    ]
    if load_start and load_end:
        notes.append(f"Load average (1, 5, 15 min) when the run started: {' '.join(load_start)}; when the report "
                     f"was written: {' '.join(load_end)}. Anything else running on the machine at the same time "
                     "(other builds, other clusters) competes with the control plane and the operators.")
    return notes


if __name__ == "__main__":
    sys.exit(main())
