#!/usr/bin/env python3
"""Structural checks of deploy/ configs (run by check.sh; needs PyYAML).

Parses every YAML file, then checks what a mistake would break: the compose services,
images/builds, ports, depends_on and health checks; the Kubernetes objects and the names
that tie them together (selectors, Services, Ingress backends, probes, resources); and that
the routing IDs agree across compose.yaml, routing.map, haproxy.cfg and the Ingress.
"""
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent
errors = []


def err(msg):
    errors.append(msg)


def load_all(path):
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        err(f"{path.relative_to(ROOT)}: not valid YAML: {e}")
        return []


HEX6 = re.compile(r"^[0-9a-fA-F]{6}$")

# Every YAML file parses.
docs = {p: load_all(p) for p in sorted(ROOT.rglob("*.yaml")) + sorted(ROOT.rglob("*.yml"))}

# ---- compose ----
compose_path = ROOT / "compose" / "compose.yaml"
compose = (docs.get(compose_path) or [{}])[0]
services = compose.get("services") or {}
if not services:
    err("compose.yaml: no services")
relays = {n: s for n, s in services.items() if n.startswith("relay-")}
if len(relays) != 3:
    err(f"compose.yaml: want 3 relay services, found {sorted(relays)}")
for need in ("nats", "haproxy"):
    if need not in services:
        err(f"compose.yaml: no {need} service")
compose_rids = {}
for name, svc in services.items():
    if not isinstance(svc, dict):
        err(f"compose.yaml: service {name} is not a mapping")
        continue
    if "image" not in svc and "build" not in svc:
        err(f"compose.yaml: service {name} has neither image nor build")
    b = svc.get("build")
    if isinstance(b, dict):
        df = (compose_path.parent / b.get("context", ".") / b.get("dockerfile", "Dockerfile")).resolve()
        if not df.is_file():
            err(f"compose.yaml: {name}: build dockerfile {df} does not exist")
    deps = svc.get("depends_on") or {}
    for d in (deps if isinstance(deps, (list, dict)) else []):
        if d not in services:
            err(f"compose.yaml: {name} depends on unknown service {d}")
        elif isinstance(deps, dict) and deps[d].get("condition") == "service_healthy" and "healthcheck" not in services[d]:
            err(f"compose.yaml: {name} waits for {d} to be healthy, but {d} has no healthcheck")
    for p in svc.get("ports") or []:
        if not re.match(r"^(\d+\.\d+\.\d+\.\d+:)?\d+(:\d+)?(/(tcp|udp))?$", str(p)):
            err(f"compose.yaml: {name}: malformed port {p!r}")
    for v in svc.get("volumes") or []:
        src = str(v).split(":")[0]
        if src.startswith("."):
            if src != "./certs" and not (compose_path.parent / src).exists():
                err(f"compose.yaml: {name}: bind-mount source {src} does not exist")
        elif src not in (compose.get("volumes") or {}):
            err(f"compose.yaml: {name}: named volume {src} not declared")
    hc = svc.get("healthcheck")
    if hc is not None and not (isinstance(hc.get("test"), list) and hc["test"] and hc["test"][0] in ("CMD", "CMD-SHELL")):
        err(f"compose.yaml: {name}: healthcheck.test must be [CMD, ...] or [CMD-SHELL, ...]")
for name, svc in relays.items():
    env = svc.get("environment") or {}
    rid = str(env.get("HYBRIDGE_RELAY_ROUTING_ID", ""))
    if not HEX6.match(rid):
        err(f"compose.yaml: {name}: HYBRIDGE_RELAY_ROUTING_ID {rid!r} is not 6 hex characters")
    compose_rids[rid.lower()] = name
    if not str(env.get("HYBRIDGE_RELAY_NATS", "")).startswith("nats://"):
        err(f"compose.yaml: {name}: HYBRIDGE_RELAY_NATS must point at the nats service")
    if "healthcheck" not in svc:
        err(f"compose.yaml: {name}: no healthcheck")
if len(compose_rids) != len(relays):
    err("compose.yaml: relay routing IDs are not distinct")
nats_cmd = " ".join(map(str, services.get("nats", {}).get("command", [])))
if "--jetstream" not in nats_cmd and "-js" not in nats_cmd:
    err("compose.yaml: nats must run with JetStream (--jetstream)")

# ---- HAProxy routing map vs compose vs haproxy.cfg ----
cfg = (ROOT / "compose" / "haproxy" / "haproxy.cfg").read_text()
backends = set(re.findall(r"^backend\s+(\S+)", cfg, re.M))
servers = set(re.findall(r"^\s+server\s+\S+\s+([\w-]+):", cfg, re.M))
mapped = {}
for line in (ROOT / "compose" / "haproxy" / "routing.map").read_text().splitlines():
    line = line.split("#")[0].strip()
    if not line:
        continue
    rid, backend = line.split()
    if rid != rid.lower() or not HEX6.match(rid):
        err(f"routing.map: {rid} must be 6 lower-case hex characters (the lookup key is lower-cased)")
    if backend not in backends:
        err(f"routing.map: backend {backend} is not defined in haproxy.cfg")
    mapped[rid] = backend
if set(mapped) != set(compose_rids):
    err(f"routing.map {sorted(mapped)} != compose routing IDs {sorted(compose_rids)}")
for rid, backend in mapped.items():
    owner = compose_rids.get(rid)
    first = re.search(rf"^backend {backend}\n(?:.*\n)*?\s+server\s+\S+\s+([\w-]+):\d+\s*$", cfg, re.M)
    if owner and (not first or first.group(1) != owner):
        err(f"haproxy.cfg: backend {backend}'s first (primary) server must be {owner}")
for s in servers:
    if s not in services:
        err(f"haproxy.cfg: server address {s} is not a compose service")

# ---- Kubernetes ----
k8s = {}
kust = (docs.get(ROOT / "k8s" / "kustomization.yaml") or [{}])[0]
for r in kust.get("resources", []):
    if not (ROOT / "k8s" / r).is_file():
        err(f"kustomization.yaml: resource {r} does not exist")
for p, ds in docs.items():
    if p.parent.name != "k8s" or p.name == "kustomization.yaml":
        continue
    if p.name not in kust.get("resources", []):
        err(f"k8s/{p.name} is not listed in kustomization.yaml")
    for d in ds:
        for f in ("apiVersion", "kind", "metadata"):
            if f not in d:
                err(f"k8s/{p.name}: an object has no {f}")
        name = d.get("metadata", {}).get("name")
        if not name:
            err(f"k8s/{p.name}: a {d.get('kind')} has no metadata.name")
        k8s[(d.get("kind"), name)] = d


def pod_labels_of(kind_name):
    d = k8s.get(kind_name)
    return d["spec"]["template"]["metadata"]["labels"] if d else {}


sts = k8s.get(("StatefulSet", "hybridge-relay"))
relay_pod_labels = {}
if not sts:
    err("k8s: no StatefulSet hybridge-relay")
else:
    spec = sts["spec"]
    relay_pod_labels = dict(spec["template"]["metadata"]["labels"])
    if not all(relay_pod_labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()):
        err("k8s: StatefulSet selector does not match its pod labels")
    headless = k8s.get(("Service", spec.get("serviceName")))
    if not headless or headless["spec"].get("clusterIP") != "None":
        err("k8s: StatefulSet serviceName must name a headless Service")
    c = spec["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        if probe not in c:
            err(f"k8s: relay container has no {probe}")
    res = c.get("resources", {})
    if not res.get("requests") or not res.get("limits"):
        err("k8s: relay container needs resource requests and limits")
    ports = {p["name"] for p in c.get("ports", [])}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        port = c.get(probe, {}).get("httpGet", {}).get("port")
        if port is not None and port not in ports:
            err(f"k8s: {probe} uses port {port} that the container does not name")
    sc = spec["template"]["spec"].get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        err("k8s: relay pods must run as non-root")

# Services select pods that exist and target named ports.
all_pod_labels = [pod_labels_of(k) for k in k8s if k[0] in ("StatefulSet", "Deployment")]
for (kind, name), d in k8s.items():
    if kind != "Service":
        continue
    sel = dict(d["spec"].get("selector", {}))
    sel.pop("statefulset.kubernetes.io/pod-name", None)
    if not any(all(l.get(k) == v for k, v in sel.items()) for l in all_pod_labels):
        err(f"k8s: Service {name} selects no pods")
    pod = d["spec"].get("selector", {}).get("statefulset.kubernetes.io/pod-name")
    if pod and sts:
        m = re.match(r"^hybridge-relay-(\d+)$", pod)
        if not m or int(m.group(1)) >= sts["spec"]["replicas"]:
            err(f"k8s: Service {name} selects pod {pod} that the StatefulSet does not have")

ing = k8s.get(("Ingress", "hybridge-relay"))
if not ing:
    err("k8s: no Ingress hybridge-relay")
else:
    for rule in ing["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            svc = path["backend"]["service"]["name"]
            if ("Service", svc) not in k8s:
                err(f"k8s: Ingress path {path['path']} -> unknown Service {svc}")
            m = re.match(r"^/cable/connect/([^/]+)/$", path["path"])
            if m:
                rid = m.group(1)
                if not re.match(r"^[0-9]{6}$", rid):
                    err(f"k8s: Ingress routing ID {rid} must be 6 decimal digits (case-free hex)")
                want = f"hybridge-relay-{int(rid)}"
                if svc != want:
                    err(f"k8s: Ingress sends routing ID {rid} to {svc}, but pod {want} owns it")

pdb = k8s.get(("PodDisruptionBudget", "hybridge-relay"))
if not pdb:
    err("k8s: no PodDisruptionBudget")
elif not all(relay_pod_labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()):
    err("k8s: PodDisruptionBudget selects no relay pods")
nats = k8s.get(("StatefulSet", "nats"))
if nats and "--jetstream" not in nats["spec"]["template"]["spec"]["containers"][0]["args"]:
    err("k8s: NATS must run with --jetstream")

for e in errors:
    print(f"  {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
