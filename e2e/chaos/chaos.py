#!/usr/bin/env python3
"""Fault-injection harness: does every frozen config change roll its workload out exactly once,
and nothing else, under API faults, restarts and races?

    e2e/chaos/chaos.py --profile short|long [--seed N] [--classes a,b]

One throw-away local cluster (e2e/cluster) per run. The operator (the real envroll binary)
reaches the API server only through the fault proxy (e2e/chaos/faultproxy), which injects HTTP
faults at rates switched per phase; the harness also kills and restarts kube-apiserver, etcd
(with a compaction, so watches get 410 Gone) and the operator, and fails over between two
leader-elected replicas. The run moves through one phase per fault class; each phase makes a
seeded, random sequence of changes (config edits of counted and uncounted keys, template edits,
deletes and re-creates, races of both on one workload), then turns the faults off, waits for
quiescence and checks every workload against the harness's own model of the decision matrix
(docs/decision-matrix.md), never against envroll's code:

  missed     a frozen change with no later new pod template (by anyone), or a workload whose
             `envroll explain` still says a rollout is pending after quiescence
  spurious   an envroll rollout (a new envroll.dev/config-hash) with no frozen change since
             envroll's previous rollout of that workload, or since it adopted it
  redundant  an envroll rollout whose frozen changes a user's template edit had already
             carried (reported, not a failure)
  crashes    an operator process that exited without being asked, or a panic in its log

Ordering comes from resourceVersions (etcd revisions, compared as integers): those of the
harness's own writes and those of the template changes it observes by watching Deployments
directly on the API server (not through the proxy). A template change the watch could not see
(one first seen in a re-list after the watch broke, while the API server was down) cannot be
ordered exactly: it is reported as "unobserved", may carry earlier changes, and is never judged
spurious.

CHAOS_SEED=N reproduces the sequence of changes and faults (real-time interleaving still varies).
Everything the harness starts (proxy, operators, cluster, restarted control-plane processes) is
stopped when it ends, also on Ctrl-C or SIGTERM. Exit code 1 on any missed, spurious or crash.
"""

import argparse
import base64
import concurrent.futures
import dataclasses
import datetime
import hashlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "e2e", "bench"))
# bench.py's REST client, operator processes and cluster clean-up serve this harness unchanged.
import bench  # noqa: E402

BUILD_PROXY = os.path.join(ROOT, "e2e", "chaos", "build-faultproxy")
NS = "chaos"
LEASE_NS = "default"
LEASE = "envroll-chaos"
LEASE_SECONDS = 6
IMAGE = "registry.invalid/chaos/app"
HASH = "envroll.dev/config-hash"
APPLIED = "envroll.dev/applied"
AUTO = {"envroll.dev/auto": "true"}
INITIAL_LIST_DONE = "initial list of ConfigMaps and Secrets complete"

# Fault classes: proxy fault rates (see faultproxy's Faults), a disruption repeated during the
# phase, and how many operator replicas run.
READS_AND_PATCHES = ["get", "list", "patch"]
EVERY_VERB = ["get", "list", "watch", "create", "update", "patch", "delete"]
FAULT_CLASSES = {
    "none": dict(faults={}),
    "http-errors": dict(faults=dict(verbs=READS_AND_PATCHES, error_rate=0.2, error_codes=[429, 500, 503])),
    "watch-cuts": dict(faults=dict(watch_cut_rate=1.0, watch_cut_max_seconds=15)),
    "slow-stall": dict(faults=dict(verbs=EVERY_VERB, slow_rate=0.5, slow_max_seconds=2,
                                   stall_rate=0.1, stall_seconds=8)),
    "conn-resets": dict(faults=dict(verbs=EVERY_VERB, reset_rate=0.25)),
    "apiserver-kill": dict(faults={}, disruption="apiserver", every=(6, 15)),
    "etcd-compaction": dict(faults=dict(watch_cut_rate=0.5, watch_cut_max_seconds=20),
                            disruption="etcd", every=(8, 18)),
    "operator-kill": dict(faults={}, disruption="operator-kill", every=(4, 10)),
    "operator-term": dict(faults={}, disruption="operator-term", every=(4, 10)),
    "leader-failover": dict(faults={}, disruption="leader", every=(8, 15), replicas=2),
}
PROFILES = {
    # Part of `make test`: a few fault classes, a few minutes on two cores.
    "short": dict(classes=["http-errors", "watch-cuts", "apiserver-kill", "operator-kill", "leader-failover"],
                  changes=60, instances=3, max_burst=6, max_pause=2.5, quiet=8, converge_limit=60),
    "long": dict(classes=list(FAULT_CLASSES), changes=1000, instances=3, max_burst=8, max_pause=1.5,
                 quiet=10, converge_limit=180),
}


def log(message):
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[chaos {stamp}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The model: workloads, the sources they consume, and which changes need a rollout.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Use:
    """One workload's consumption of one source, as the decision matrix judges it."""
    kind: str
    name: str
    keys: frozenset | None  # the counted keys; None: every key
    optional: bool
    rolls_out: bool  # frozen consumption, a named list, or volumes: rollout


@dataclasses.dataclass
class Source:
    kind: str
    name: str
    data: dict | None  # None while deleted
    immutable: bool = False
    ignored: bool = False
    deletable: bool = False  # the harness deletes and re-creates it

    def manifest(self):
        metadata = {"name": self.name, "namespace": NS}
        if self.ignored:
            metadata["annotations"] = {"envroll.dev/ignore": "true"}
        body = {"apiVersion": "v1", "kind": self.kind, "metadata": metadata}
        if self.kind == "Secret":
            body["type"] = "Opaque"
            body["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in self.data.items()}
        else:
            body["data"] = dict(self.data)
        if self.immutable:
            body["immutable"] = True
        return body

    def collection(self):
        return f"/api/v1/namespaces/{NS}/{'secrets' if self.kind == 'Secret' else 'configmaps'}"

    def path(self):
        return f"{self.collection()}/{self.name}"


@dataclasses.dataclass
class Workload:
    name: str
    shape: str
    annotations: dict
    pod_spec: dict
    uses: list

    def managed(self):
        return any(k in self.annotations for k in ("envroll.dev/auto", "envroll.dev/configmaps", "envroll.dev/secrets"))

    def rollout_sources(self):
        """(kind, name) -> (counted keys or None, optional) over the uses that roll out."""
        merged = {}
        for use in self.uses:
            if not use.rolls_out or not self.managed():
                continue
            key = (use.kind, use.name)
            keys, optional = merged.get(key, (frozenset(), True))
            keys = None if keys is None or use.keys is None else keys | use.keys
            merged[key] = (keys, optional and use.optional)
        return merged

    def manifest(self):
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": self.name, "namespace": NS, "annotations": self.annotations,
                         "labels": {"chaos-shape": self.shape}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": self.name}},
                "template": {"metadata": {"labels": {"app": self.name}},
                             "spec": {"terminationGracePeriodSeconds": 0, **self.pod_spec}},
            },
        }


SHAPES = [
    "env-key", "secret-key", "env-from", "env-from-prefix-secret", "volume", "projected",
    "volume-rollout", "items-rollout", "sub-path", "init-env", "init-volume", "immutable-volume",
    "optional-env-from", "optional-secret-key", "required-env-from", "named-configmaps",
    "named-secret", "ignored", "unmanaged", "shared",
]
SHARED = Source("ConfigMap", "shared-env", None)


def design(shape, name, rng):
    """Workload `name` consuming its own sources the way `shape` says, and what each use means."""
    main = {"name": "app", "image": f"{IMAGE}:0"}
    pod = {"containers": [main]}
    annotations = dict(AUTO)
    sources, uses = [], []

    def source(kind, role, **flags):
        s = Source(kind, f"{name}-{role}", fresh_data(rng), **flags)
        sources.append(s)
        return s.name

    def key_ref(kind, source_name, key, optional=False):
        ref = {"name": source_name, "key": key, **({"optional": True} if optional else {})}
        selector = "secretKeyRef" if kind == "Secret" else "configMapKeyRef"
        return {"name": f"V_{key.upper()}", "valueFrom": {selector: ref}}

    def volume(kind, source_name, items=None):
        if kind == "Secret":
            spec = {"secret": {"secretName": source_name}}
        else:
            spec = {"configMap": {"name": source_name}}
        if items:
            next(iter(spec.values()))["items"] = [{"key": k, "path": f"{k}.conf"} for k in items]
        pod.setdefault("volumes", []).append({"name": "config", **spec})

    def use(kind, source_name, keys=None, optional=False, rolls_out=True):
        uses.append(Use(kind, source_name, frozenset(keys) if keys else None, optional, rolls_out))

    if shape == "env-key":
        cm = source("ConfigMap", "env")
        main["env"] = [key_ref("ConfigMap", cm, "a")]
        use("ConfigMap", cm, {"a"})
    elif shape == "secret-key":
        secret = source("Secret", "creds")
        main["env"] = [key_ref("Secret", secret, "a")]
        use("Secret", secret, {"a"})
    elif shape == "env-from":
        cm = source("ConfigMap", "env")
        main["envFrom"] = [{"configMapRef": {"name": cm}}]
        use("ConfigMap", cm)
    elif shape == "env-from-prefix-secret":
        secret = source("Secret", "creds")
        main["envFrom"] = [{"prefix": "DB_", "secretRef": {"name": secret}}]
        use("Secret", secret)
    elif shape in ("volume", "volume-rollout"):
        cm = source("ConfigMap", "files")
        volume("ConfigMap", cm)
        main["volumeMounts"] = [{"name": "config", "mountPath": "/etc/app"}]
        if shape == "volume-rollout":
            annotations["envroll.dev/volumes"] = "rollout"
        use("ConfigMap", cm, rolls_out=shape == "volume-rollout")
    elif shape == "projected":
        cm, secret = source("ConfigMap", "files"), source("Secret", "creds")
        pod["volumes"] = [{"name": "config", "projected": {"sources": [
            {"configMap": {"name": cm}}, {"secret": {"name": secret}}]}}]
        main["volumeMounts"] = [{"name": "config", "mountPath": "/etc/app"}]
        use("ConfigMap", cm, rolls_out=False)
        use("Secret", secret, rolls_out=False)
    elif shape == "items-rollout":
        cm = source("ConfigMap", "files")
        volume("ConfigMap", cm, items=["a"])
        main["volumeMounts"] = [{"name": "config", "mountPath": "/etc/app"}]
        annotations["envroll.dev/volumes"] = "rollout"
        use("ConfigMap", cm, {"a"})
    elif shape == "sub-path":
        cm = source("ConfigMap", "files")
        volume("ConfigMap", cm)
        main["volumeMounts"] = [{"name": "config", "mountPath": "/etc/app/a.conf", "subPath": "a"}]
        use("ConfigMap", cm, {"a"})
    elif shape == "init-env":
        cm = source("ConfigMap", "env")
        pod["initContainers"] = [{"name": "init", "image": f"{IMAGE}-init:0",
                                  "envFrom": [{"configMapRef": {"name": cm}}]}]
        use("ConfigMap", cm)
    elif shape == "init-volume":
        cm = source("ConfigMap", "templates")
        volume("ConfigMap", cm)
        pod["initContainers"] = [{"name": "render", "image": f"{IMAGE}-init:0",
                                  "volumeMounts": [{"name": "config", "mountPath": "/templates"}]}]
        use("ConfigMap", cm)
    elif shape == "immutable-volume":
        cm = source("ConfigMap", "release", immutable=True, deletable=True)
        volume("ConfigMap", cm)
        main["volumeMounts"] = [{"name": "config", "mountPath": "/etc/release"}]
        use("ConfigMap", cm)
    elif shape == "optional-env-from":
        cm = source("ConfigMap", "overrides", deletable=True)
        main["envFrom"] = [{"configMapRef": {"name": cm, "optional": True}}]
        use("ConfigMap", cm, optional=True)
    elif shape == "optional-secret-key":
        secret = source("Secret", "token", deletable=True)
        main["env"] = [key_ref("Secret", secret, "a", optional=True)]
        use("Secret", secret, {"a"}, optional=True)
    elif shape == "required-env-from":
        cm = source("ConfigMap", "env", deletable=True)
        main["envFrom"] = [{"configMapRef": {"name": cm}}]
        use("ConfigMap", cm)
    elif shape == "named-configmaps":
        # Without auto only the listed names are sources: the envFrom ConfigMap is not one.
        mounted, unreferenced, env = source("ConfigMap", "files"), source("ConfigMap", "flags"), source("ConfigMap", "env")
        annotations = {"envroll.dev/configmaps": f"{mounted}, {unreferenced}"}
        volume("ConfigMap", mounted)
        main["volumeMounts"] = [{"name": "config", "mountPath": "/etc/app"}]
        main["envFrom"] = [{"configMapRef": {"name": env}}]
        use("ConfigMap", mounted)
        use("ConfigMap", unreferenced)
        use("ConfigMap", env, rolls_out=False)
    elif shape == "named-secret":
        secret = source("Secret", "creds")
        annotations = {"envroll.dev/secrets": secret}
        use("Secret", secret)
    elif shape == "ignored":
        ignored, counted = source("ConfigMap", "ignored", ignored=True), source("ConfigMap", "env")
        main["envFrom"] = [{"configMapRef": {"name": ignored}}]
        main["env"] = [key_ref("ConfigMap", counted, "a")]
        use("ConfigMap", ignored)
        use("ConfigMap", counted, {"a"})
    elif shape == "unmanaged":
        cm = source("ConfigMap", "env")
        annotations = {}
        main["envFrom"] = [{"configMapRef": {"name": cm}}]
        use("ConfigMap", cm)
    elif shape == "shared":
        main["envFrom"] = [{"configMapRef": {"name": SHARED.name}}]
        use("ConfigMap", SHARED.name)
    else:
        raise ValueError(shape)
    return Workload(name, shape, annotations, pod, uses), sources


def fresh_data(rng):
    return {"a": token(rng), "b": token(rng)}


def token(rng):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10))


class Model:
    """The cluster's config as the harness wrote it, and each workload's frozen view of it."""

    def __init__(self, rng, instances):
        self.sources, self.workloads = {}, {}
        SHARED.data = fresh_data(rng)
        self._add_source(SHARED)
        for shape in SHAPES:
            for i in range(instances):
                workload, sources = design(shape, f"{shape}-{i}", rng)
                self.workloads[workload.name] = workload
                for source in sources:
                    self._add_source(source)
        self.consumers = {}
        for workload in self.workloads.values():
            for key in workload.rollout_sources():
                self.consumers.setdefault(key, []).append(workload)
        # The last value of each required source a workload counts: while it is deleted, that
        # is what the workload's pods would still need (deleting it never rolls out).
        self.held = {}
        for workload in self.workloads.values():
            self.view(workload)

    def _add_source(self, source):
        self.sources[(source.kind, source.name)] = source

    def view(self, workload):
        """What the workload's frozen consumption sees; a change of it needs a rollout."""
        seen = []
        for (kind, name), (keys, optional) in sorted(workload.rollout_sources().items()):
            source = self.sources[(kind, name)]
            if source.ignored:
                continue
            if source.data is not None:
                value = tuple(sorted((k, v) for k, v in source.data.items() if keys is None or k in keys))
                self.held[(workload.name, kind, name)] = value
            elif optional:
                value = "missing"
            else:
                value = self.held[(workload.name, kind, name)]
            seen.append((kind, name, value))
        return tuple(seen)

    def affected_by(self, source, change):
        """Apply `change` (a function of the source); returns {workload: digest of its new view}
        for the workloads whose view changed."""
        consumers = self.consumers.get((source.kind, source.name), [])
        before = {w.name: self.view_digest(w) for w in consumers}
        change(source)
        after = {w.name: self.view_digest(w) for w in consumers}
        return {name: digest for name, digest in after.items() if digest != before[name]}

    def view_digest(self, workload):
        """The view without the values (which may be a Secret's)."""
        return hashlib.sha256(repr(self.view(workload)).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Processes: the fault proxy, the operators, control-plane components.
# --------------------------------------------------------------------------------------------


class FaultProxy:
    def __init__(self, binary, upstream, credentials, seed, log_path):
        self.log_file = open(log_path, "ab")
        self.process = subprocess.Popen(
            [binary, "-upstream", upstream, "-ca", credentials["ca"], "-cert", credentials["cert"],
             "-key", credentials["key"], "-seed", str(seed)],
            stdout=subprocess.PIPE, stderr=self.log_file, stdin=subprocess.DEVNULL, start_new_session=True)
        announcement = json.loads(self.process.stdout.readline())
        self.url, self.control = announcement["proxy"], announcement["control"]

    def set_faults(self, faults):
        request = urllib.request.Request(self.control + "/faults", data=json.dumps(faults).encode(), method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stats(self):
        with urllib.request.urlopen(self.control + "/stats", timeout=10) as response:
            return json.loads(response.read())

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.log_file.close()


class Operator(bench.Operator):
    """An envroll process that knows whether its last exit was asked for."""

    def __init__(self, label, argv, env, log_path):
        super().__init__(label, argv, env, log_path)
        self.expected_down = False
        self.log_offset = 0

    def kill(self):
        self.expected_down = True
        self.process.kill()
        self.stop()

    def terminate(self):
        self.expected_down = True
        self.stop()

    def restart(self):
        self.start()
        self.expected_down = False

    def crashed(self):
        """The exit status when the process exited on its own, else None."""
        if self.expected_down or self.process is None or self.process.poll() is None:
            return None
        return self.process.returncode

    def new_panics(self):
        """Panic lines logged since the last call."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            text = f.read().decode(errors="replace")
            self.log_offset = f.tell()
        return [line for line in text.splitlines() if "panicked at" in line]


class ControlPlane:
    """Kills and restarts single components of a kwokctl cluster (binary runtime), whose
    processes carry their cluster directory in their command lines."""

    def __init__(self, cluster_dir):
        self.cluster_dir = cluster_dir
        self.restarted = {}  # component -> the Popen this harness started (to reap it)

    def find(self, component):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = [a.decode() for a in f.read().split(b"\0") if a]
                with open(f"/proc/{entry}/stat") as f:
                    zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                continue
            if (argv and not zombie and os.path.basename(argv[0]) == component
                    and any(self.cluster_dir in a for a in argv)):
                return int(entry), argv
        raise RuntimeError(f"no {component} process of {self.cluster_dir}")

    def client_url(self, component, flag):
        _pid, argv = self.find(component)
        for i, arg in enumerate(argv):
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1].split(",")[0]
            if arg == flag:
                return argv[i + 1].split(",")[0]
        raise RuntimeError(f"{component} has no {flag}")

    def kill_and_restart(self, component, down_seconds, sig=signal.SIGKILL):
        pid, argv = self.find(component)
        cwd = os.readlink(f"/proc/{pid}/cwd")
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.decode().split("=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        os.kill(pid, sig)
        previous = self.restarted.get(component)
        if previous is not None:
            previous.wait()
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(down_seconds)
        log_dir = os.path.join(self.cluster_dir, "logs")
        os.makedirs(log_dir, exist_ok=True)
        with open(os.path.join(log_dir, f"{component}.log"), "ab") as log_file:
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.restarted[component] = process
        # kwokctl stops a cluster's components by their pid files.
        pid_file = os.path.join(self.cluster_dir, "pids", f"{component}.pid")
        if os.path.exists(pid_file):
            with open(pid_file, "w") as f:
                f.write(str(process.pid))

    def compact_etcd(self):
        """Compact etcd's history at its current revision (the v3 HTTP gateway)."""
        url = self.client_url("etcd", "--advertise-client-urls")
        head = post_json(url + "/v3/kv/range", {"key": base64.b64encode(b"/registry").decode(), "limit": 1})
        revision = head["header"]["revision"]
        post_json(url + "/v3/kv/compaction", {"revision": revision, "physical": True})
        return int(revision)


def post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


# --------------------------------------------------------------------------------------------
# Watching Deployments: every new pod template with its resourceVersion.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Observation:
    template: str  # the pod template, canonical JSON
    rv: int
    config_hash: str | None
    seen: float  # monotonic
    after_gap: bool  # first seen in a re-list: earlier templates may have been missed


class SpecWatch(threading.Thread):
    def __init__(self, kube):
        super().__init__(daemon=True)
        self.kube = kube
        self.lock = threading.Lock()
        self.observations = {}  # name -> [Observation]
        self.applied = {}  # name -> bool: envroll's baseline annotation present
        self.last_change = time.monotonic()
        self.stopping = False
        self.synced = threading.Event()
        self.conn = None

    def _record(self, obj, relisted=False):
        # Not the generation: a Deployment's generation also grows when its annotations change.
        m, template = obj["metadata"], obj["spec"]["template"]
        observation = Observation(json.dumps(template, sort_keys=True), int(m["resourceVersion"]),
                                  template["metadata"].get("annotations", {}).get(HASH),
                                  time.monotonic(), relisted)
        with self.lock:
            self.applied[m["name"]] = APPLIED in m.get("annotations", {})
            history = self.observations.setdefault(m["name"], [])
            if not history or history[-1].template != observation.template:
                history.append(observation)
                self.last_change = observation.seen

    def run(self):
        while not self.stopping:
            try:
                listing = self.kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments")
                for item in listing["items"]:
                    self._record(item, relisted=self.synced.is_set())
                self.synced.set()
                version = listing["metadata"]["resourceVersion"]
                while not self.stopping and version is not None:
                    version = self._watch(version)
            except Exception as problem:  # the API server is down: list again when it is back
                if self.stopping:
                    return
                log(f"deployment watch restarting: {str(problem)[:200]}")
                time.sleep(1)

    def _watch(self, version):
        conn = self.kube.connect(timeout=120)
        self.conn = conn
        conn.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments?watch=1&allowWatchBookmarks=true"
                            f"&timeoutSeconds=60&resourceVersion={version}", headers=self.kube.headers)
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"watch: HTTP {response.status}")
        while True:
            line = response.readline()
            if not line:
                conn.close()
                return version
            event = json.loads(line)
            if event["type"] == "ERROR":  # 410 Gone: list again
                conn.close()
                return None
            obj = event["object"]
            version = obj["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED"):
                self._record(obj)

    def stop(self):
        self.stopping = True
        if self.conn is not None and self.conn.sock is not None:
            try:
                self.conn.sock.shutdown(2)
            except OSError:
                pass

    def history(self, name):
        with self.lock:
            return list(self.observations.get(name, []))


# --------------------------------------------------------------------------------------------
# The driver: writes with their resourceVersions, retried through API-server restarts.
# --------------------------------------------------------------------------------------------


class ApiUnavailable(Exception):
    pass


@dataclasses.dataclass
class Event:
    rv: int
    at: float  # monotonic
    phase: int
    what: str
    view: str | None = None  # a frozen change: the digest of the workload's view after it


class Driver:
    def __init__(self, kube, model, rng):
        self.kube, self.model, self.rng = kube, model, rng
        self.frozen = {name: [] for name in model.workloads}  # name -> [Event]: changes needing a rollout
        self.initial_view = {name: model.view_digest(w) for name, w in model.workloads.items()}
        self.user_edits = {name: [] for name in model.workloads}  # name -> [Event]: template edits
        self.changes = 0
        self.phase = 0
        self.image_counter = 0

    def request(self, method, path, body=None, content_type="application/json", accept=(200, 201), limit=300):
        """One write or read, retried while the API server is unreachable or overloaded. A
        retried write is harmless: patches set absolute values, a create that already happened
        answers 409, a delete that already happened 404 (both accepted by the callers)."""
        deadline = time.monotonic() + limit
        while True:
            try:
                status, payload = self.kube.request(method, path, body, content_type)
                if status in accept:
                    return status, json.loads(payload) if payload else {}
                if status not in (429, 500, 502, 503, 504):
                    raise RuntimeError(f"{method} {path}: HTTP {status} {payload[:300]!r}")
            except (OSError, http.client.HTTPException) as problem:
                if time.monotonic() > deadline:
                    raise ApiUnavailable(f"{method} {path}: {problem}") from problem
            if time.monotonic() > deadline:
                raise ApiUnavailable(f"{method} {path}: still failing after {limit}s")
            time.sleep(0.5)

    def current_rv(self):
        """The store's current revision: a quorum list reads it from etcd."""
        _, listing = self.request("GET", f"/api/v1/namespaces/{NS}/configmaps?limit=1")
        return int(listing["metadata"]["resourceVersion"])

    def _record(self, affected, rv, what):
        self.changes += 1
        now = time.monotonic()
        for name, view in affected.items():
            self.frozen[name].append(Event(rv, now, self.phase, what, view))

    # -- changes ------------------------------------------------------------------------------

    def edit_source(self, source):
        if source.immutable:
            self.delete_source(source)
            self.create_source(source, fresh_data(self.rng))
            return
        data = dict(source.data)
        if self.rng.random() < 0.2:
            what = "toggle key x"
            if "x" in data:
                del data["x"]
            else:
                data["x"] = token(self.rng)
        else:
            key = self.rng.choice(sorted(data))
            what = f"edit key {key}"
            data[key] = token(self.rng)
        encoded = ({k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
                   if source.kind == "Secret" else data)
        # A merge patch cannot remove a key by omission: null deletes it.
        patch = {"data": {**{k: None for k in source.data if k not in data}, **encoded}}
        affected = self.model.affected_by(source, lambda s: setattr(s, "data", data))
        _, obj = self.request("PATCH", source.path(), patch, "application/merge-patch+json")
        self._record(affected, int(obj["metadata"]["resourceVersion"]), f"{source.kind}/{source.name}: {what}")

    def delete_source(self, source):
        affected = self.model.affected_by(source, lambda s: setattr(s, "data", None))
        self.request("DELETE", source.path(), accept=(200, 202, 404))
        # A delete's answer carries the object as it was; the revision right after the delete
        # is an upper bound of the deletion's, and nothing but the operator writes in between.
        self._record(affected, self.current_rv(), f"{source.kind}/{source.name}: delete")

    def create_source(self, source, data):
        affected = self.model.affected_by(source, lambda s: setattr(s, "data", data))
        status, obj = self.request("POST", source.collection(), source.manifest(), accept=(201, 409))
        if status == 409:  # an earlier attempt got through
            _, obj = self.request("GET", source.path())
        self._record(affected, int(obj["metadata"]["resourceVersion"]), f"{source.kind}/{source.name}: create")

    def edit_template(self, workload):
        self.image_counter += 1
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": f"{IMAGE}:{self.image_counter}"}]}}}}
        _, obj = self.request("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{workload.name}", patch,
                              "application/strategic-merge-patch+json")
        self.changes += 1
        self.user_edits[workload.name].append(Event(
            int(obj["metadata"]["resourceVersion"]), time.monotonic(), self.phase, "template edit"))

    def random_change(self):
        """One step of the seeded sequence; returns the number of writes it made."""
        before = self.changes
        roll = self.rng.random()
        sources = sorted(self.model.sources.values(), key=lambda s: (s.kind, s.name))
        workloads = sorted(self.model.workloads.values(), key=lambda w: w.name)
        if roll < 0.15:
            self.edit_template(self.rng.choice(workloads))
        elif roll < 0.25:
            # A race inside the debounce window: a frozen change and a template edit of the
            # same workload, in either order.
            workload = self.rng.choice([w for w in workloads if w.managed()])
            candidates = [self.model.sources[k] for k in workload.rollout_sources()
                          if self.model.sources[k].data is not None]
            steps = [lambda: self.edit_template(workload)]
            if candidates:
                source = self.rng.choice(candidates)
                steps.append(lambda: self.edit_source(source))
            self.rng.shuffle(steps)
            for step in steps:
                step()
        elif roll < 0.37:
            source = self.rng.choice([s for s in sources if s.deletable])
            if source.data is None:
                self.create_source(source, self.recreated_data(source))
            else:
                self.delete_source(source)
        else:
            source = self.rng.choice([s for s in sources if s.data is not None])
            self.edit_source(source)
        return self.changes - before

    def recreated_data(self, source):
        """Half of the re-creations bring back the old data: no rollout is needed for those."""
        held = [v for (w, k, n), v in self.model.held.items() if (k, n) == (source.kind, source.name)]
        if held and self.rng.random() < 0.5:
            return dict(held[0])
        return fresh_data(self.rng)

    def restore_required(self):
        """Re-create every deleted source whose absence blocks its workloads (a required one)."""
        for source in sorted(self.model.sources.values(), key=lambda s: s.name):
            if source.data is None and not all(
                    w.rollout_sources()[(source.kind, source.name)][1]
                    for w in self.model.consumers.get((source.kind, source.name), [])):
                self.create_source(source, self.recreated_data(source))


# --------------------------------------------------------------------------------------------
# The checker.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Phase:
    """What happened in one phase, besides rollouts."""
    fault_class: str
    changes: int = 0
    crashes: list = dataclasses.field(default_factory=list)
    converged: bool = True
    injected: dict = dataclasses.field(default_factory=dict)
    pending_after: dict = dataclasses.field(default_factory=dict)  # `envroll explain` after quiescence


@dataclasses.dataclass
class Verdict:
    """What the checker made of one phase's rollouts."""
    needed: int = 0
    done: int = 0
    missed: int = 0
    spurious: int = 0
    redundant: int = 0
    unobserved: int = 0
    converge: float = 0.0
    missed_workloads: set = dataclasses.field(default_factory=set)
    details: list = dataclasses.field(default_factory=list)


def judge(model, driver, watch, boundaries):
    """Walk each workload's frozen changes, user edits and envroll rollouts in resourceVersion
    order. `boundaries[k]` is the revision at which phase k began; returns a Verdict per phase."""
    results = [Verdict() for _ in boundaries]

    def phase_of(rv):
        phase = 0
        for k, start in enumerate(boundaries):
            if rv > start:
                phase = k
        return phase

    for name, workload in sorted(model.workloads.items()):
        history = watch.history(name)
        if not history:
            continue
        user = driver.user_edits[name]
        user_rvs = {e.rv for e in user}
        events = [(e.rv, 0, "frozen", e) for e in driver.frozen[name]]
        events += [(e.rv, 1, "user", e) for e in user]
        for previous, seen in zip(history, history[1:]):
            if seen.config_hash == previous.config_hash and (seen.rv in user_rvs or seen.after_gap):
                continue  # a template edit of the driver's, already among the events
            if seen.after_gap:
                results[phase_of(seen.rv)].unobserved += 1
                events.append((seen.rv, 1, "unobserved", seen))
            else:
                events.append((seen.rv, 1, "envroll", seen))
        events.sort(key=lambda e: (e[0], e[1]))
        walk = WorkloadWalk(workload, driver.initial_view[name], results)
        for rv, _order, kind, event in events:
            while walk.phase + 1 < len(boundaries) and rv > boundaries[walk.phase + 1]:
                walk.end_phase()
            walk.step(rv, kind, event)
        walk.end_phase()
    return results


class WorkloadWalk:
    """One workload's events in resourceVersion order, judged as they come."""

    def __init__(self, workload, initial_view, results):
        self.workload, self.results, self.phase = workload, results, 0
        self.pending = []  # frozen changes since the last new template
        self.since_envroll = 0  # frozen changes since envroll's last rollout (or adoption)
        self.frozen_view = initial_view  # the view after the latest frozen change
        self.template_view = initial_view  # the view the newest template's pods started with
        self.overdue = []  # changes reported missed at the end of an earlier phase

    def step(self, rv, kind, event):
        result, name = self.results[self.phase], f"{self.workload.name} ({self.workload.shape})"
        if kind == "frozen":
            result.needed += 1
            self.pending.append(event)
            self.since_envroll += 1
            self.frozen_view = event.view
            return
        # A new pod template: its pods read the config as it is now.
        self.template_view = self.frozen_view
        result.done += len(self.pending)
        if self.overdue:
            result.details.append(f"late: {name}: new template at rv {rv} for the change at rv {self.overdue[0].rv} "
                                  "reported missed in an earlier phase")
        if kind == "envroll":
            if self.pending:
                result.converge = max(result.converge, max(event.seen - f.at for f in self.pending))
            elif self.overdue:
                pass
            elif self.since_envroll:
                result.redundant += 1
                result.details.append(f"redundant: {name} rolled out at rv {rv} after a template edit had "
                                      "carried every change")
            else:
                result.spurious += 1
                result.details.append(f"spurious: {name} rolled out at rv {rv} with no frozen change since its "
                                      "previous rollout")
        if kind != "user":
            self.since_envroll = 0
        self.pending, self.overdue = [], []

    def end_phase(self):
        """Changes still pending at the end of a phase were missed, unless later changes of the
        phase brought the view back to what the newest template started with."""
        result = self.results[self.phase]
        if self.pending and self.frozen_view == self.template_view:
            result.needed -= len(self.pending)
        elif self.pending:
            result.missed += len(self.pending)
            result.missed_workloads.add(self.workload.name)
            changes = "; ".join(f"{e.what} (rv {e.rv})" for e in self.pending)
            result.details.append(f"missed: {self.workload.name} ({self.workload.shape}): no new template after "
                                  f"{changes}")
            self.overdue = self.pending
        self.pending = []
        self.phase = min(self.phase + 1, len(self.results) - 1)


def explain_pending(envroll, kubeconfig, model):
    """Managed workloads whose `envroll explain` says a rollout is pending."""

    def pending(workload):
        out = subprocess.run([envroll, "explain", f"deployment/{workload.name}", "-n", NS, "-o", "json"],
                             env={**os.environ, "KUBECONFIG": kubeconfig},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        if out.returncode != 0:
            return f"explain failed: {out.stderr.strip()[:200]}"
        document = json.loads(out.stdout)
        explanation = document["workloads"][0] if "workloads" in document else document
        return "rollout pending" if explanation.get("rolloutPending") else None

    managed = [w for w in model.workloads.values() if w.managed()]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        verdicts = list(pool.map(pending, managed))
    return {w.name: v for w, v in zip(managed, verdicts) if v}


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


class Run:
    def __init__(self, args, profile, seed, work):
        self.args, self.profile, self.seed, self.work = args, profile, seed, work
        self.rng = random.Random(seed)
        self.disruption_rng = random.Random(seed ^ 0x5EED)
        self.operators = []
        self.proxy = None
        self.watch = None

    # -- set-up -------------------------------------------------------------------------------

    def setup(self):
        name = f"chaos-{os.getpid() % 100000}-{self.seed % 10000}"
        env = {**os.environ, "ENVROLL_CLUSTER": name, "ENVROLL_NODES": "3", "ENVROLL_SET_CURRENT": "0"}
        log(f"starting cluster {name}")
        bench.CLUSTERS.append(name)
        out = subprocess.run([bench.CLUSTER, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-4000:])
            raise RuntimeError("e2e/cluster up failed")
        self.kubeconfig = re.search(r"export KUBECONFIG=(\S+)", out.stdout).group(1).strip("'\"")
        self.control_plane = ControlPlane(os.path.dirname(self.kubeconfig))
        components = dict(re.findall(r"^(?:export )?(\w+)=['\"]?([^'\"\n]*)", subprocess.run(
            [bench.COMPONENTS, "env"], stdout=subprocess.PIPE, text=True, check=True).stdout, re.M))
        self.kubectl = components["ENVROLL_BIN_KUBECTL"]
        self.kube = bench.Kube(self.kubeconfig, self.kubectl)

        proxy_binary = subprocess.run([BUILD_PROXY], stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
        self.proxy = FaultProxy(proxy_binary, self.kube.server, self.credentials(), self.seed,
                                os.path.join(self.work, "faultproxy.log"))
        log(f"fault proxy {self.proxy.url} (control {self.proxy.control})")
        self.proxy_kubeconfig = os.path.join(self.work, "proxy.kubeconfig")
        with open(self.proxy_kubeconfig, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "chaos",
                       "clusters": [{"name": "chaos", "cluster": {"server": self.proxy.url}}],
                       "users": [{"name": "chaos", "user": {}}],
                       "contexts": [{"name": "chaos", "context": {"cluster": "chaos", "user": "chaos"}}]}, f)

        self.model = Model(self.rng, self.profile["instances"])
        self.driver = Driver(self.kube, self.model, self.rng)
        self.driver.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                            "metadata": {"name": NS}}, accept=(201, 409))
        for source in self.model.sources.values():
            self.driver.request("POST", source.collection(), source.manifest(), accept=(201,))
        for workload in self.model.workloads.values():
            self.driver.request("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", workload.manifest(),
                                accept=(201,))
        log(f"created {len(self.model.workloads)} Deployments ({len(SHAPES)} kinds of consumption) and "
            f"{len(self.model.sources)} ConfigMaps and Secrets in namespace {NS}")
        self.watch = SpecWatch(self.kube)
        self.watch.start()
        if not self.watch.synced.wait(60):
            raise RuntimeError("the Deployment watch did not sync")

    def credentials(self):
        """The admin kubeconfig's CA and client certificate as files, for the proxy."""
        config = json.loads(subprocess.check_output(
            [self.kubectl, "--kubeconfig", self.kubeconfig, "config", "view", "--raw", "--minify", "-o", "json"]))
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        base = os.path.dirname(self.kubeconfig)
        files = {}
        for name, source, file_key in (("ca", cluster, "certificate-authority"),
                                       ("cert", user, "client-certificate"), ("key", user, "client-key")):
            if source.get(file_key + "-data"):
                files[name] = os.path.join(self.work, f"upstream-{name}.pem")
                with open(files[name], "wb") as f:
                    f.write(base64.b64decode(source[file_key + "-data"]))
            else:
                files[name] = os.path.join(base, source[file_key])
        return files

    # -- operators ----------------------------------------------------------------------------

    def operator(self, identity, leader_election):
        # No rollout budget: the driver changes each workload more often than a production
        # budget allows, and the checker judges precision, which a budget would only delay.
        argv = [self.args.envroll_bin, "run", "--metrics-address", "127.0.0.1:0", "--log-format", "json",
                "--pod-namespace", LEASE_NS, "--max-rollouts-per-hour", "0"]
        if leader_election:
            argv += ["--leader-election", "--lease-name", LEASE, "--identity", identity,
                     "--lease-duration", str(LEASE_SECONDS)]
        env = {**os.environ, "KUBECONFIG": self.proxy_kubeconfig, "NO_COLOR": "1",
               "RUST_LOG": os.environ.get("RUST_LOG", "info,envroll=debug")}
        return Operator(f"envroll-{identity}", argv + self.args.operator_arg, env,
                        os.path.join(self.work, f"envroll-{identity}.log"))

    def ensure_operators(self, replicas):
        if len(self.operators) == replicas:
            return
        for operator in self.operators:
            operator.terminate()
        self.operators = [self.operator(identity, replicas > 1) for identity in "ab"[:replicas]]
        for operator in self.operators:
            operator.start()
        log(f"{replicas} operator replica(s) running: {', '.join(o.label for o in self.operators)}")

    def wait_adopted(self, limit=120):
        """Changes made before the operator adopted a workload are its baseline, not a change."""
        managed = [w.name for w in self.model.workloads.values() if w.managed()]
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self.watch.lock:
                if all(self.watch.applied.get(name) for name in managed):
                    return
            self.check_operators(None)
            time.sleep(0.5)
        raise RuntimeError(f"the operator did not adopt every managed workload within {limit}s")

    def leader(self):
        _, lease = self.driver.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{LEASE}",
                                       accept=(200, 404))
        holder = (lease.get("spec") or {}).get("holderIdentity")
        return next((o for o in self.operators if o.label == f"envroll-{holder}" and o.alive()), None)

    def check_operators(self, phase):
        """Record (and restart) operators that exited on their own; record panics."""
        for operator in self.operators:
            panics = operator.new_panics()
            status = operator.crashed()
            if phase is not None:
                phase.crashes += [f"{operator.label} panicked: {line[:300]}" for line in panics]
                if status is not None:
                    phase.crashes.append(f"{operator.label} exited with status {status} unasked")
            if status is not None:
                log(f"{operator.label} exited with status {status} unasked; restarting it")
                operator.stop()
                operator.restart()

    # -- disruptions --------------------------------------------------------------------------

    def disrupt(self, kind):
        rng = self.disruption_rng
        if kind == "apiserver":
            log("disruption: kube-apiserver SIGKILL")
            self.control_plane.kill_and_restart("kube-apiserver", rng.uniform(1, 4))
            self.wait_api_ready()
        elif kind == "etcd":
            revision = self.control_plane.compact_etcd()
            log(f"disruption: etcd compacted at revision {revision}, then SIGKILL")
            self.control_plane.kill_and_restart("etcd", rng.uniform(1, 3))
            self.wait_api_ready()
        elif kind in ("operator-kill", "operator-term"):
            operator = self.operators[0]
            log(f"disruption: {operator.label} {'SIGKILL' if kind == 'operator-kill' else 'SIGTERM'}")
            operator.kill() if kind == "operator-kill" else operator.terminate()
            time.sleep(rng.uniform(0, 4))
            operator.restart()
        elif kind == "leader":
            leader = self.leader()
            if leader is None:
                return
            log(f"disruption: leader {leader.label} SIGKILL")
            leader.kill()
            time.sleep(rng.uniform(0, 3))
            leader.restart()

    def wait_api_ready(self, limit=120):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                if self.kube.request("GET", "/readyz", attempts=1)[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the API server was not ready within {limit}s of its restart")

    # -- phases -------------------------------------------------------------------------------

    def run_phase(self, index, phase):
        fault_class = phase.fault_class
        spec = FAULT_CLASSES[fault_class]
        self.driver.phase = index
        self.ensure_operators(spec.get("replicas", 1))
        self.proxy.set_faults(spec["faults"])
        injected_before = self.proxy.stats()["injected"]
        log(f"phase {index + 1}: {fault_class}: {self.profile['changes']} changes")
        stop_disrupting = threading.Event()
        disruptor, disruption_failures = None, []
        if spec.get("disruption"):
            low, high = spec["every"]

            def disrupt_repeatedly():
                # The first one comes early, so that even a short phase has one.
                delay = self.disruption_rng.uniform(1, low)
                try:
                    while not stop_disrupting.wait(delay):
                        self.disrupt(spec["disruption"])
                        delay = self.disruption_rng.uniform(low, high)
                except Exception as problem:
                    disruption_failures.append(problem)

            disruptor = threading.Thread(target=disrupt_repeatedly, daemon=True)
            disruptor.start()
        changes_before = self.driver.changes
        while self.driver.changes - changes_before < self.profile["changes"]:
            for _ in range(self.rng.randint(1, self.profile["max_burst"])):
                self.driver.random_change()
            self.check_operators(phase)
            time.sleep(self.rng.uniform(0, self.profile["max_pause"]))
        stop_disrupting.set()
        if disruptor is not None:
            disruptor.join()
        if disruption_failures:
            raise RuntimeError(f"the {fault_class} disruption failed") from disruption_failures[0]
        self.driver.restore_required()
        self.proxy.set_faults({})
        injected_after = self.proxy.stats()["injected"]
        phase.injected = {k: v - injected_before.get(k, 0) for k, v in injected_after.items()
                          if v - injected_before.get(k, 0)}
        phase.changes = self.driver.changes - changes_before
        self.quiesce(phase)

    def pending(self):
        """Workloads with a frozen change of this phase newer than their newest template change
        (as seen so far). An earlier phase's miss is reported there and not waited for again."""
        waiting = []
        for name, frozen in self.driver.frozen.items():
            if not frozen or frozen[-1].phase != self.driver.phase:
                continue
            history = self.watch.history(name)
            newest = max([o.rv for o in history] + [e.rv for e in self.driver.user_edits[name]])
            started_with = next((e.view for e in reversed(frozen) if e.rv < newest), self.driver.initial_view[name])
            if frozen[-1].rv > newest and frozen[-1].view != started_with:
                waiting.append(name)
        return waiting

    def quiesce(self, phase):
        limit, quiet = self.profile["converge_limit"], self.profile["quiet"]
        started = time.monotonic()
        while True:
            self.check_operators(phase)
            with self.watch.lock:
                idle = time.monotonic() - self.watch.last_change
            waiting = self.pending()
            if not waiting and idle >= quiet:
                break
            if time.monotonic() - started > limit:
                phase.converged = False
                log(f"not converged after {limit}s; still waiting for: {', '.join(waiting[:10])}")
                break
            time.sleep(0.5)
        phase.pending_after = explain_pending(self.args.envroll_bin, self.kubeconfig, self.model)

    def execute(self):
        """Runs every phase; returns (phases, verdicts)."""
        self.setup()
        self.ensure_operators(1)
        self.wait_adopted()
        log("every managed workload is adopted")
        phases, boundaries = [], []
        for index, fault_class in enumerate(self.args.classes or self.profile["classes"]):
            phases.append(Phase(fault_class))
            boundaries.append(self.driver.current_rv())
            self.run_phase(index, phases[index])
            verdicts = judge(self.model, self.driver, self.watch, boundaries)
            log(f"phase {index + 1} ({fault_class}) done: " + ", ".join(
                f"{k} {v}" for k, v in table_row(phases[index], verdicts[index]).items() if k != "fault class"))
        return phases, verdicts


def table_row(phase, verdict):
    """One line of the report. A workload `envroll explain` still finds pending after quiescence
    counts as missed unless a frozen change of it already did."""
    stale = [name for name in phase.pending_after if name not in verdict.missed_workloads]
    return {
        "fault class": phase.fault_class, "changes": phase.changes, "rollouts needed": verdict.needed,
        "done": verdict.done, "missed": verdict.missed + len(stale), "spurious": verdict.spurious,
        "redundant": verdict.redundant, "unobserved": verdict.unobserved, "crashes": len(phase.crashes),
        "max converge": f"{verdict.converge:.1f}s" + ("" if phase.converged else " (limit)"),
    }


def details(phase, verdict):
    return ([f"crash: {c}" for c in phase.crashes] + verdict.details +
            [f"after quiescence, envroll explain: {name}: {v}" for name, v in sorted(phase.pending_after.items())])


def render_table(rows):
    header = list(rows[0])
    cells = [[str(row[k]) for k in header] for row in rows]
    widths = [max(len(x) for x in column) for column in zip(header, *cells)]
    lines = ["| " + " | ".join(x.ljust(w) for x, w in zip(row, widths)) + " |" for row in [header] + cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--seed", type=int, default=None, help="default: $CHAOS_SEED, else random")
    parser.add_argument("--classes", type=lambda s: [c for c in s.split(",") if c], default=None,
                        help=f"fault classes to run, in order (default: the profile's); any of {', '.join(FAULT_CLASSES)}")
    parser.add_argument("--changes", type=int, default=None, help="changes per fault class (default: the profile's)")
    parser.add_argument("--envroll-bin", default=os.environ.get("ENVROLL_BIN")
                        or os.path.join(ROOT, "target", "release", "envroll"))
    parser.add_argument("--operator-arg", action="append", default=[],
                        help="an extra argument of `envroll run` (repeatable), e.g. --operator-arg=--debounce=1s")
    parser.add_argument("--work", default=os.path.join(ROOT, "target", "chaos"))
    args = parser.parse_args()
    unknown = [c for c in args.classes or [] if c not in FAULT_CLASSES]
    if unknown:
        parser.error(f"unknown fault classes {unknown}; known: {', '.join(FAULT_CLASSES)}")
    if not os.access(args.envroll_bin, os.X_OK):
        sys.exit(f"chaos: {args.envroll_bin} is missing; run `cargo build --release` first")
    seed = args.seed if args.seed is not None else int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    profile = dict(PROFILES[args.profile])
    if args.changes:
        profile["changes"] = args.changes
    work = os.path.join(args.work, f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{seed}")
    os.makedirs(work, exist_ok=True)
    print(f"chaos: profile {args.profile}, seed {seed} (CHAOS_SEED={seed} reproduces it); logs in "
          f"{os.path.relpath(work, ROOT)}", flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    started = time.monotonic()
    run = Run(args, profile, seed, work)
    try:
        phases, verdicts = run.execute()
    except (Interrupted, KeyboardInterrupt) as problem:
        log(f"interrupted ({problem}); stopping everything this run started")
        return 130
    finally:
        if run.watch is not None:
            run.watch.stop()
        for operator in run.operators:
            operator.terminate()
        if run.proxy is not None:
            run.proxy.stop()
        bench.cleanup()
    minutes = (time.monotonic() - started) / 60
    rows = [table_row(p, v) for p, v in zip(phases, verdicts)]
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump({"seed": seed, "profile": args.profile, "minutes": round(minutes, 1), "rows": rows,
                   "details": {p.fault_class: details(p, v) for p, v in zip(phases, verdicts)},
                   "injected": {p.fault_class: p.injected for p in phases}}, f, indent=2)
    for phase, verdict in zip(phases, verdicts):
        lines = details(phase, verdict)
        for line in lines[:25]:
            print(f"  [{phase.fault_class}] {line}")
        if len(lines) > 25:
            print(f"  [{phase.fault_class}] ... {len(lines) - 25} more in results.json")
        if phase.injected:
            print(f"  [{phase.fault_class}] injected: " + ", ".join(f"{k} {v}" for k, v in sorted(phase.injected.items())))
    print(render_table(rows))
    failed = sum(row["missed"] + row["spurious"] + row["crashes"] for row in rows)
    print(f"chaos: seed {seed}, {minutes:.1f} minutes: " + ("FAILED" if failed else "passed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
