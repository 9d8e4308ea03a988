#!/usr/bin/env python3
"""Consistency checks of a rendered kustomization against itself and against the binaries.

Schema validation (validate_schemas.py) says each object is well formed; this says they fit
together and fit wsgate:
  - selectors (Deployment, StatefulSet, Service, PDB, NetworkPolicy, ServiceMonitor, topology
    spread) match the labels of the pods they are meant for; Services' targetPorts exist;
  - every WSGATE_* variable a container gets (env, envFrom) is an option of the binary it runs,
    read from `wsgate-gateway --help-markdown`, `wsgate-processor --help-markdown`,
    `wsgate-api --help-markdown` and `wsgate-admin --help`; ConfigMap/Secret references resolve; $(VAR) references are defined;
  - container ports, the WSGATE_*PORT values set in the manifests (or the --help defaults) and
    the probes agree; probes use /healthz (liveness) and /readyz (readiness) on the http port;
  - files named by WSGATE_*_FILE / TLS options lie under a mounted volume, and a Secret volume
    projects their key;
  - direct replies: on at gateways and processors alike, with the same Secret key, the
    listener's port the container port `direct` and the advertised one, on no Service, and
    admitted by NetworkPolicy from processor pods only;
  - terminationGracePeriodSeconds covers the preStop sleep plus WSGATE_DRAIN_GRACE (gateway) or
    WSGATE_SHUTDOWN_TIMEOUT (processor);
  - PDBs let unhealthy pods be evicted (AlwaysAllow); Jobs carry the annotations that make Flux
    and Argo CD recreate them (their template is immutable);
  - HPAs (and KEDA ScaledObjects) target existing workloads that do not set spec.replicas; the gateway's maxReplicas plus its
    rollout maxSurge fits in the slots (OUTBOUND_PARTITIONS), the processor's maxReplicas in
    INBOUND_PARTITIONS; the connection metric is one the gateway binary serves and the one the
    Prometheus Adapter rule exposes; KEDA's offsetResetPolicy is the processors' auto.offset.reset
    (common/, or WSGATE_KAFKA_PROPS); KafkaTopics agree with the wsgate-topics ConfigMap and
    the topic names; brokers and Redis addresses name the rendered services.

usage: check_manifests.py --gateway EXE --processor EXE --admin EXE [--api EXE] [--adapter-config FILE]
                          [--external-secret NAME]... [--expect-error REGEX] PATH
Exit status: 0 consistent (or the expected error seen), 1 not, 77 tools missing (skip).
"""
import argparse
import difflib
import glob
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_render  # noqa: E402

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "DaemonSet")


# --- what the binaries read -------------------------------------------------------------------

def help_markdown_options(exe):
    """{ENV: {"flag", "type", "default"}} from the option table of `EXE --help-markdown`."""
    out = subprocess.run([exe, "--help-markdown"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise SystemExit(f"{exe} --help-markdown failed (exit {out.returncode}): {out.stderr.strip()}")
    opts = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4:
            continue
        env = cells[1].strip("`")
        if re.fullmatch(r"WSGATE_[A-Z0-9_]+", env):
            opts[env] = {"flag": cells[0], "type": cells[2], "default": cells[3].strip("`")}
    if not opts:
        raise SystemExit(f"no WSGATE_* option found in `{exe} --help-markdown`: has its format changed?")
    return opts


def admin_env(exe):
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    names = set(re.findall(r"\benv (WSGATE_[A-Z0-9_]+)", out.stdout + out.stderr))
    if not names:
        raise SystemExit(f"no 'env WSGATE_*' in `{exe} --help`: has its format changed?")
    return {n: {"flag": "", "type": "string", "default": ""} for n in names}


def duration_s(text):
    """Seconds of a wsg_config duration ("25s", "1500ms", "2m", "1h", bare = ms)."""
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h)?\s*", str(text))
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2) or "ms"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def processor_offset_reset(env):
    """The processors' auto.offset.reset: from WSGATE_KAFKA_PROPS if set there, else the consumer
    group default in common/wsg_kafka.c (group_defaults)."""
    m = re.search(r"(?:^|[;,])\s*auto\.offset\.reset\s*=\s*(\w+)", env.get("WSGATE_KAFKA_PROPS") or "")
    if m:
        return m.group(1)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    for src in sorted(glob.glob(os.path.join(root, "common", "**", "*.c"), recursive=True)):
        with open(src, encoding="utf-8") as f:
            block = re.search(r"group_defaults\[\]\s*=\s*\{(.*?)\};", f.read(), re.S)
        m = re.search(r'"auto\.offset\.reset",\s*"(\w+)"', block.group(1) if block else "")
        if m:
            return m.group(1)
    raise SystemExit("no auto.offset.reset in a group_defaults table under common/: has it moved?")


# --- the checker ------------------------------------------------------------------------------

class Checker:
    def __init__(self, objs, binaries, external_secrets, gateway_exe):
        self.objs = objs
        self.binaries = binaries  # basename -> options
        self.external = set(external_secrets)
        self.gateway_exe = gateway_exe
        self.errors = []
        self.checked = 0
        self.by_kind = {}
        seen = set()
        for o in objs:
            key = (o.get("kind"), (o.get("metadata") or {}).get("namespace"), o["metadata"]["name"])
            if key in seen:
                self.err(f"{key[0]}/{key[2]}: defined twice")
            seen.add(key)
            self.by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o

    def err(self, msg):
        self.errors.append(msg)

    def ok(self, cond, msg):
        self.checked += 1
        if not cond:
            self.err(msg)
        return cond

    def get(self, kind, name):
        return self.by_kind.get(kind, {}).get(name)

    # pods of every workload: (workload, pod template)
    def workloads(self):
        for kind in WORKLOAD_KINDS:
            for name, o in self.by_kind.get(kind, {}).items():
                yield o, o["spec"]["template"]

    @staticmethod
    def matches(selector, labels):
        """A LabelSelector (matchLabels + matchExpressions) or a plain map against LABELS."""
        if selector is None:
            return False
        labels = labels or {}
        if "matchLabels" not in selector and "matchExpressions" not in selector:
            return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
        for k, v in (selector.get("matchLabels") or {}).items():
            if labels.get(k) != v:
                return False
        for e in selector.get("matchExpressions") or []:
            op, vals, has = e["operator"], e.get("values") or [], e["key"] in labels
            if op == "In" and not (has and labels[e["key"]] in vals):
                return False
            if op == "NotIn" and has and labels[e["key"]] in vals:
                return False
            if op == "Exists" and not has:
                return False
            if op == "DoesNotExist" and has:
                return False
        return bool(selector.get("matchLabels") or selector.get("matchExpressions"))

    def pods_selected(self, selector):
        return [(w, t) for w, t in self.workloads()
                if self.matches(selector, (t.get("metadata") or {}).get("labels"))]

    # --- environment ------------------------------------------------------------------------

    def config_value(self, kind, name, key, where, optional=False):
        """The value of KEY in ConfigMap/Secret NAME; None if it is not (or cannot be) known."""
        obj = self.get(kind, name)
        if obj is None:
            if kind == "Secret" and name in self.external:
                return None
            self.ok(optional, f"{where}: {kind} {name} is not defined (and not declared external)")
            return None
        data = obj.get("data") or {}
        sdata = obj.get("stringData") or {}
        if key not in data and key not in sdata:
            self.ok(optional, f"{where}: {kind} {name} has no key {key}")
            return None
        if kind == "Secret":
            return "<secret>"
        return str(data[key])

    def container_env(self, where, c):
        """{NAME: value or None (unknown)} of a container, envFrom first, then env."""
        env = {}
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind, ref in (("ConfigMap", src.get("configMapRef")), ("Secret", src.get("secretRef"))):
                if not ref:
                    continue
                obj = self.get(kind, ref["name"])
                if obj is None:
                    if not (kind == "Secret" and ref["name"] in self.external):
                        self.ok(ref.get("optional", False),
                                f"{where}: envFrom {kind} {ref['name']} is not defined")
                    continue
                for k, v in {**(obj.get("data") or {}), **(obj.get("stringData") or {})}.items():
                    env[prefix + k] = None if kind == "Secret" else str(v)
        for e in c.get("env") or []:
            name = e["name"]
            if "value" in e:
                value = str(e["value"])
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                    self.ok(ref in env, f"{where}: env {name} refers to $({ref}), not defined before it")
                    if ref in env and env[ref] is not None:
                        value = value.replace(f"$({ref})", env[ref])
                    elif ref in env:
                        value = None
                        break
                env[name] = value
                continue
            vf = e.get("valueFrom") or {}
            if "configMapKeyRef" in vf:
                r = vf["configMapKeyRef"]
                env[name] = self.config_value("ConfigMap", r["name"], r["key"], f"{where}: env {name}",
                                              r.get("optional", False))
            elif "secretKeyRef" in vf:
                r = vf["secretKeyRef"]
                self.config_value("Secret", r["name"], r["key"], f"{where}: env {name}",
                                  r.get("optional", False))
                env[name] = None
            else:
                env[name] = None  # fieldRef / resourceFieldRef: known only at run time
        return env

    def effective(self, env, opts, name):
        """The value a binary uses for option NAME: the manifest's if set, else its default."""
        if name in env:
            return env[name]
        return (opts.get(name) or {}).get("default")

    # --- workloads --------------------------------------------------------------------------

    def check_workloads(self):
        self.roles = {}  # "gateway"/"processor"/"admin" -> [(workload, template, container, env)]
        self.files = {}  # (workload, container, option) -> (Secret, key) of the file, or None
        for w, t in self.workloads():
            wname = f"{w['kind']}/{w['metadata']['name']}"
            labels = (t.get("metadata") or {}).get("labels") or {}
            if w["kind"] != "Job":
                self.ok(self.matches(w["spec"].get("selector"), labels),
                        f"{wname}: spec.selector does not match its pod template's labels {labels}")
            spec = t["spec"]
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            # A StatefulSet's claim templates are volumes of its pods too.
            claims = {v["metadata"]["name"]: {"name": v["metadata"]["name"]}
                      for v in w["spec"].get("volumeClaimTemplates") or []}
            for v in volumes.values():
                if "secret" in v:
                    sname = v["secret"]["secretName"]
                    self.ok(self.get("Secret", sname) is not None or sname in self.external
                            or v["secret"].get("optional", False),
                            f"{wname}: volume {v['name']} mounts Secret {sname}, which is not defined "
                            "(and not declared external)")
                if "configMap" in v:
                    self.ok(self.get("ConfigMap", v["configMap"]["name"]) is not None,
                            f"{wname}: volume {v['name']} mounts ConfigMap {v['configMap']['name']}, not defined")
            for tsc in spec.get("topologySpreadConstraints") or []:
                self.ok(self.matches(tsc.get("labelSelector"), labels),
                        f"{wname}: a topologySpreadConstraint's labelSelector does not select its own pods")
            for c in spec.get("containers") or []:
                self.check_container(w, wname, spec, {**claims, **volumes}, c)

    def check_container(self, w, wname, spec, volumes, c):
        where = f"{wname} container {c['name']}"
        env = self.container_env(where, c)
        for m in c.get("volumeMounts") or []:
            self.ok(m["name"] in volumes, f"{where}: volumeMount {m['name']} names no volume")
        for arg in (c.get("command") or []) + (c.get("args") or []):
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(arg)):
                self.ok(ref in env, f"{where}: command/args refer to $({ref}), which is not in its env")
        binary = os.path.basename((c.get("command") or [""])[0])
        opts = self.binaries.get(binary)
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        if opts is None:
            self.ok(not any(k.startswith("WSGATE_") for k in env),
                    f"{where}: sets WSGATE_* variables but does not run a wsgate binary (command {binary!r})")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                p = c.get(probe) or {}
                port = (p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
                if isinstance(port, str):
                    self.ok(port in ports, f"{where}: {probe} uses port {port!r}, not a port of the container")
            return
        for name in env:
            if name.startswith("WSGATE_"):
                near = difflib.get_close_matches(name, list(opts), n=1)
                self.ok(name in opts, f"{where}: {name} is not an option of {binary} (not in its "
                        f"--help){f'; did you mean {near[0]}?' if near else ''}")
        role = {"wsgate-gateway": "gateway", "wsgate-processor": "processor",
                "wsgate-admin": "admin", "wsgate-api": "api"}.get(binary, binary)
        self.roles.setdefault(role, []).append((w, spec, c, env))
        if role == "admin":
            return
        # Ports: the container's named ports are the ports the binary listens on.
        want = {"http": "WSGATE_HTTP_PORT"}
        if role == "gateway":
            want["ws"] = "WSGATE_LISTEN_PORT"
        if role == "api":
            want["api"] = "WSGATE_API_LISTEN_PORT"
        for pname, opt in want.items():
            value = self.effective(env, opts, opt)
            self.ok(pname in ports, f"{where}: no container port named {pname!r} ({opt})")
            if pname in ports and value is not None:
                self.ok(str(ports[pname]) == str(value),
                        f"{where}: container port {pname} is {ports[pname]} but {binary} listens on "
                        f"{value} ({opt}{' set in the manifest' if opt in env else ' default'})")
        if role == "gateway":
            self.check_direct_port(where, c, env, ports)
        for pname in ports:
            self.ok(pname in want or (role == "gateway" and pname == "direct"),
                    f"{where}: container port {pname!r} is not one {binary} serves")
        http_port = self.effective(env, opts, "WSGATE_HTTP_PORT")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"),
                            ("startupProbe", "/healthz")):
            p = c.get(probe)
            if not self.ok(p is not None and "httpGet" in p, f"{where}: no {probe} with httpGet"):
                continue
            g = p["httpGet"]
            self.ok(g.get("path") == path, f"{where}: {probe} path is {g.get('path')!r}; {binary} serves {path}")
            port = ports.get(g["port"]) if isinstance(g["port"], str) else g["port"]
            self.ok(str(port) == str(http_port),
                    f"{where}: {probe} port {g['port']!r} is not the operations port {http_port} (WSGATE_HTTP_PORT)")
        self.check_probe_budgets(where, role, c)
        # Files the binary opens must be on a mounted volume, and a Secret's key must be there.
        for name, value in env.items():
            if name in self.FILE_OPTIONS and value:
                self.files[(wname, c["name"], name)] = self.mounted_file(where, volumes, c, name, value)
        # The grace period covers the drain.
        grace = spec.get("terminationGracePeriodSeconds", 30)
        sleep = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
        # The API's longest wait is a request's commit.
        opt = {"gateway": "WSGATE_DRAIN_GRACE",
               "api": "WSGATE_API_TRANSACTION_TIMEOUT"}.get(role, "WSGATE_SHUTDOWN_TIMEOUT")
        drain = duration_s(self.effective(env, opts, opt))
        if drain is not None:
            self.ok(grace > sleep + drain,
                    f"{where}: terminationGracePeriodSeconds {grace} does not exceed the preStop sleep "
                    f"({sleep} s) + {opt} ({drain:g} s): the kubelet would SIGKILL mid-drain")

    FILE_OPTIONS = ("WSGATE_JWT_SECRET_FILE", "WSGATE_JWT_KEY_FILE", "WSGATE_JWT_JWKS_FILE",
                    "WSGATE_DIRECT_SECRET_FILE", "WSGATE_TLS_CERT", "WSGATE_TLS_KEY",
                    "WSGATE_API_KEYS_FILE", "WSGATE_API_TLS_CERT", "WSGATE_API_TLS_KEY")

    def mounted_file(self, where, volumes, c, name, path):
        """Option NAME's file PATH lies under a volumeMount; on a Secret volume, the key it names
        is projected (items) and present in the rendered Secret. Returns (Secret, key) or None."""
        mounts = [(m["mountPath"].rstrip("/") + "/", m) for m in c.get("volumeMounts") or []]
        hits = sorted((m for m in mounts if path.startswith(m[0])), key=lambda m: -len(m[0]))
        if not self.ok(hits, f"{where}: {name}={path} is not under any volumeMount "
                       f"({', '.join(m for m, _ in mounts) or 'none'})"):
            return None
        prefix, m = hits[0]
        rel = path[len(prefix):]
        if m.get("subPath"):
            return None
        sec = (volumes.get(m["name"]) or {}).get("secret")
        if not sec:
            return None
        items = sec.get("items")
        if items is not None:
            keys = {i["path"]: i["key"] for i in items}
            if not self.ok(rel in keys, f"{where}: {name}={path}, but volume {m['name']} projects only "
                           f"{', '.join(sorted(keys)) or 'nothing'} of Secret {sec['secretName']} (items)"):
                return None
            key = keys[rel]
        else:
            key = rel
        obj = self.get("Secret", sec["secretName"])
        if obj is not None and not sec.get("optional", False):
            self.ok(key in (obj.get("data") or {}) or key in (obj.get("stringData") or {}),
                    f"{where}: {name}={path} needs key {key} in Secret {sec['secretName']}, which has none")
        return (sec["secretName"], key)

    def check_direct_port(self, where, c, env, ports):
        """Direct replies (docs/KUBERNETES.md "Direct replies"): the container port `direct` is the
        listener's port, the advertised address the pod's own on that port."""
        listen = env.get("WSGATE_DIRECT_LISTEN")
        if not listen:  # turned off by dropping the variables; a leftover port is harmless
            return
        lport = listen.rpartition(":")[2]
        if not self.ok("direct" in ports, f"{where}: WSGATE_DIRECT_LISTEN={listen} but no container port "
                       "named 'direct' (the NetworkPolicy admits processors by that name)"):
            return
        self.ok(str(ports["direct"]) == lport,
                f"{where}: container port direct is {ports['direct']} but WSGATE_DIRECT_LISTEN={listen}")
        # Unresolved at render time ($(POD_IP)): the raw value's port.
        raw = {e["name"]: e.get("value") for e in c.get("env") or []}
        adv = env.get("WSGATE_DIRECT_ADVERTISE") or raw.get("WSGATE_DIRECT_ADVERTISE") or ""
        self.ok(adv.rpartition(":")[2] == lport,
                f"{where}: WSGATE_DIRECT_ADVERTISE={adv or '(unset)'} is not the pod's address on the "
                f"direct port {lport}: processors could not reach the listener")

    # The longest start-up wait before the operations port opens, in seconds (gateway.c: 30 s per
    # topic, two topics; proc_consumer.c: 10 s per topic, three with a dead-letter topic).
    STARTUP_WAIT_S = {"gateway": 60, "processor": 30}

    def check_probe_budgets(self, where, role, c):
        """The startup probe covers the start-up wait, so liveness can never kill a starting pod;
        liveness tolerates one lost probe and answers within its period."""
        start, live = c.get("startupProbe") or {}, c.get("livenessProbe") or {}
        if not start or not live:
            return
        budget = start.get("failureThreshold", 3) * start.get("periodSeconds", 10)
        wait = self.STARTUP_WAIT_S.get(role)
        if wait is not None:
            self.ok(budget >= wait,
                    f"{where}: startupProbe allows {budget} s (failureThreshold x periodSeconds) but "
                    f"{role} may wait {wait} s for Kafka before it serves /healthz")
        self.ok(live.get("failureThreshold", 3) >= 2,
                f"{where}: livenessProbe failureThreshold {live.get('failureThreshold')} restarts the "
                f"pod on a single lost probe")
        self.ok(live.get("timeoutSeconds", 1) < live.get("periodSeconds", 10),
                f"{where}: livenessProbe timeoutSeconds is not below its periodSeconds")

    # --- services, budgets, policies, monitors ----------------------------------------------

    def check_services(self):
        for name, s in self.by_kind.get("Service", {}).items():
            sel = s["spec"].get("selector")
            pods = self.pods_selected(sel) if sel else []
            if not self.ok(pods, f"Service/{name}: selector {sel} selects no pod of the rendered workloads"):
                continue
            for p in s["spec"].get("ports") or []:
                tp = p.get("targetPort", p["port"])
                for w, t in pods:
                    cports = [cp for c in t["spec"]["containers"] for cp in c.get("ports") or []]
                    hit = [cp for cp in cports if cp.get("name") == tp or cp["containerPort"] == tp]
                    self.ok(hit, f"Service/{name}: targetPort {tp!r} is not a container port of "
                            f"{w['kind']}/{w['metadata']['name']}")
                    self.ok(not any(cp.get("name") == "direct" for cp in hit),
                            f"Service/{name}: port {p['port']} exposes the gateway's direct reply port: "
                            "only processors may reach it, pod to pod (docs/KUBERNETES.md \"Direct replies\")")
            if s["spec"].get("type") == "LoadBalancer":
                roles = {self.role_of(t) for _, t in pods}
                self.ok(roles == {"gateway"}, f"Service/{name}: the LoadBalancer must select only gateway pods")
                self.ok(all(p.get("targetPort") == "ws" for p in s["spec"]["ports"]),
                        f"Service/{name}: the LoadBalancer must target the WebSocket port 'ws'")

    def role_of(self, template):
        for c in template["spec"].get("containers") or []:
            b = os.path.basename((c.get("command") or [""])[0])
            if b.startswith("wsgate-"):
                return b[len("wsgate-"):]
        return None

    def check_budgets_and_policies(self):
        for name, p in self.by_kind.get("PodDisruptionBudget", {}).items():
            self.ok(self.pods_selected(p["spec"].get("selector")),
                    f"PodDisruptionBudget/{name}: selector selects no pod")
            # The default (IfHealthyBudget) lets a crash-looping pod block every node drain.
            self.ok(p["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
                    f"PodDisruptionBudget/{name}: unhealthyPodEvictionPolicy is "
                    f"{p['spec'].get('unhealthyPodEvictionPolicy')!r}, not AlwaysAllow")
        for name, j in self.by_kind.get("Job", {}).items():
            # A Job's template is immutable: GitOps tools must recreate it on a change.
            ann = j["metadata"].get("annotations") or {}
            self.ok(ann.get("kustomize.toolkit.fluxcd.io/force") == "enabled" and
                    "Replace=true" in ann.get("argocd.argoproj.io/sync-options", ""),
                    f"Job/{name}: no annotations that make Flux and Argo CD recreate it when its "
                    "template changes (kustomize.toolkit.fluxcd.io/force, argocd sync-options Replace=true)")
        for name, n in self.by_kind.get("NetworkPolicy", {}).items():
            targets = self.pods_selected(n["spec"].get("podSelector"))
            self.ok(targets, f"NetworkPolicy/{name}: podSelector selects no pod")
            allowed = set()
            for rule in n["spec"].get("ingress") or []:
                for peer in rule.get("from") or []:
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        allowed |= {self.role_of(t) for _, t in self.pods_selected(peer["podSelector"])}
            if any(self.role_of(t) is None for _, t in targets):  # protects a dependency (Redis)
                for role in ("gateway", "processor", "api"):
                    if role == "api" and not self.roles.get("api"):
                        continue
                    self.ok(role in allowed, f"NetworkPolicy/{name}: the {role} pods are not admitted")
        for name, m in self.by_kind.get("ServiceMonitor", {}).items():
            sel = m["spec"].get("selector")
            svcs = [s for s in self.by_kind.get("Service", {}).values()
                    if self.matches(sel, s["metadata"].get("labels"))]
            if not self.ok(svcs, f"ServiceMonitor/{name}: selector selects no Service"):
                continue
            for ep in m["spec"].get("endpoints") or []:
                for s in svcs:
                    self.ok(any(p.get("name") == ep.get("port") for p in s["spec"]["ports"]),
                            f"ServiceMonitor/{name}: Service/{s['metadata']['name']} has no port {ep.get('port')!r}")
                self.ok(ep.get("path", "/metrics") == "/metrics", f"ServiceMonitor/{name}: path is not /metrics")

    def check_direct(self):
        """Direct replies: on at both ends with the same Secret key, and the gateways' direct port
        admitted by NetworkPolicy from processor pods only."""
        gws = [g for g in self.roles.get("gateway", []) if g[3].get("WSGATE_DIRECT_LISTEN")]
        procs = [p for p in self.roles.get("processor", []) if p[3].get("WSGATE_DIRECT_SECRET_FILE")]
        if not gws and not procs:
            return
        self.ok(gws and procs, "direct replies are on at the " + ("gateways" if gws else "processors") +
                " only (WSGATE_DIRECT_LISTEN on gateways, WSGATE_DIRECT_SECRET_FILE on processors): "
                "set both or neither (docs/KUBERNETES.md \"Direct replies\")")
        for w, spec, c, env in gws:
            self.ok(env.get("WSGATE_DIRECT_SECRET_FILE"),
                    f"{w['kind']}/{w['metadata']['name']}: WSGATE_DIRECT_LISTEN without WSGATE_DIRECT_SECRET_FILE")
        sources = {}  # (Secret, key) -> workloads reading it
        for w, spec, c, env in gws + procs:
            wname = f"{w['kind']}/{w['metadata']['name']}"
            src = self.files.get((wname, c["name"], "WSGATE_DIRECT_SECRET_FILE"))
            if src:
                sources.setdefault(src, []).append(wname)
        self.ok(len(sources) <= 1, "the direct secret differs between workloads (" +
                "; ".join(f"Secret {s} key {k}: {', '.join(ws)}" for (s, k), ws in sorted(sources.items())) +
                "): gateways would refuse the processors' hello and every reply goes through Kafka")
        for w, spec, c, env in gws:
            direct = [p for p in c.get("ports") or [] if p.get("name") == "direct"]
            if direct:  # else check_direct_port has said so
                self.check_direct_policy(f"{w['kind']}/{w['metadata']['name']}",
                                         (w["spec"]["template"].get("metadata") or {}).get("labels"), direct[0])

    def only_processors(self, peer):
        """A NetworkPolicy peer that admits processor pods of the policy's namespace and nothing
        else (no namespaceSelector, no ipBlock, a podSelector that selects processors only)."""
        if set(peer) != {"podSelector"}:
            return False
        pods = self.pods_selected(peer["podSelector"])
        return bool(pods) and all(self.role_of(t) == "processor" for _, t in pods)

    def check_direct_policy(self, wname, labels, port):
        policies = [(n, p) for n, p in self.by_kind.get("NetworkPolicy", {}).items()
                    if self.matches(p["spec"].get("podSelector"), labels)
                    and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])]
        if not self.ok(policies, f"{wname}: no NetworkPolicy limits ingress to its pods: the direct "
                       "reply port is open to every pod of the cluster"):
            return
        admitted = False
        for n, pol in policies:
            for rule in pol["spec"].get("ingress") or []:
                ports = rule.get("ports")  # absent or empty: every port
                if ports and not any(q.get("port") in (port["name"], port["containerPort"]) for q in ports):
                    continue
                peers = rule.get("from") or []  # absent or empty: every source
                ok = bool(peers) and all(self.only_processors(peer) for peer in peers)
                self.ok(ok, f"NetworkPolicy/{n}: an ingress rule admits "
                        f"{'anyone' if not peers else 'more than processor pods of its namespace'} "
                        f"to the gateway's direct reply port {port['containerPort']}")
                # Wider than it should be is the error above; here: do the processors get in?
                admitted = admitted or not peers or any(
                    "ipBlock" in peer or any(self.role_of(t) == "processor"
                                             for _, t in self.pods_selected(peer.get("podSelector")))
                    for peer in peers)
        self.ok(admitted, f"{wname}: no NetworkPolicy admits the processor pods to the direct reply "
                f"port {port['containerPort']}: every reply would go through Kafka")

    # --- scaling and Kafka ------------------------------------------------------------------

    def topics(self):
        cms = [o for n, o in self.by_kind.get("ConfigMap", {}).items() if n.startswith("wsgate-topics")]
        if not self.ok(len(cms) == 1, f"expected one wsgate-topics ConfigMap, found {len(cms)}"):
            return None
        d = cms[0].get("data") or {}
        try:
            t = {k: int(d[k]) for k in ("INBOUND_PARTITIONS", "OUTBOUND_PARTITIONS", "REPLICATION_FACTOR")}
            if "COMMANDS_PARTITIONS" in d:  # the commands topic (wsgate-api, docs/API.md)
                t["COMMANDS_PARTITIONS"] = int(d["COMMANDS_PARTITIONS"])
            return t
        except (KeyError, ValueError) as e:
            self.err(f"ConfigMap/{cms[0]['metadata']['name']}: bad or missing partition count: {e}")
            return None

    def workload_role(self, kind, name):
        w = self.get(kind, name)
        return (w, self.role_of(w["spec"]["template"])) if w else (None, None)

    def check_scaling(self, adapter_metric):
        topics = self.topics()
        if topics is None:
            return
        slots, inbound = topics["OUTBOUND_PARTITIONS"], topics["INBOUND_PARTITIONS"]
        for _, _, c, env in self.roles.get("gateway", []):
            if env.get("WSGATE_SLOTS") not in (None, "0"):
                self.ok(str(env["WSGATE_SLOTS"]) == str(slots),
                        f"gateway WSGATE_SLOTS={env['WSGATE_SLOTS']} differs from OUTBOUND_PARTITIONS={slots}")
        scalers = [(f"HorizontalPodAutoscaler/{n}", h["spec"]["scaleTargetRef"], h["spec"].get("minReplicas", 1),
                    h["spec"]["maxReplicas"], h) for n, h in self.by_kind.get("HorizontalPodAutoscaler", {}).items()]
        scalers += [(f"ScaledObject/{n}", s["spec"]["scaleTargetRef"], s["spec"].get("minReplicaCount", 0),
                     s["spec"].get("maxReplicaCount", 100), s) for n, s in self.by_kind.get("ScaledObject", {}).items()]
        targets = {}
        for what, ref, lo, hi, obj in scalers:
            kind = ref.get("kind", "Deployment")
            w, role = self.workload_role(kind, ref["name"])
            if not self.ok(w is not None, f"{what}: scaleTargetRef {kind}/{ref['name']} does not exist"):
                continue
            self.ok(ref["name"] not in targets, f"{what}: {kind}/{ref['name']} is already scaled by "
                    f"{targets.get(ref['name'])}: two autoscalers fight")
            targets[ref["name"]] = what
            # The autoscaler owns the count: a replicas in the manifest makes a server-side
            # apply fail on a field conflict once it has scaled, and a forced, client-side or
            # GitOps apply resets the count (deleting the pods beyond it at once).
            self.ok("replicas" not in w["spec"],
                    f"{what}: {kind}/{ref['name']} sets spec.replicas ({w['spec'].get('replicas')}), "
                    f"which {what.split('/')[0]} owns: remove it from the manifests (docs/KUBERNETES.md "
                    "\"Who owns the replica count\")")
            self.ok(lo <= hi, f"{what}: minReplicas {lo} > maxReplicas {hi}")
            if role == "gateway":
                surge = ((w["spec"].get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge", "25%")
                surge_n = -(-hi * int(surge[:-1]) // 100) if isinstance(surge, str) else int(surge)
                self.ok(hi + surge_n <= slots,
                        f"{what}: maxReplicas {hi} + rollout maxSurge {surge_n} exceeds the gateway slots "
                        f"(OUTBOUND_PARTITIONS={slots}): gateways beyond the slots never become ready")
                if obj.get("kind") == "HorizontalPodAutoscaler":
                    self.check_conn_metric(what, obj, adapter_metric)
            elif role == "processor":
                self.ok(hi <= inbound, f"{what}: maxReplicas {hi} exceeds INBOUND_PARTITIONS={inbound}: "
                        "processors beyond the partition count stay idle")
                if obj.get("kind") == "ScaledObject":
                    self.check_keda(what, obj)
        # The commands topic: the processors' and the API's WSGATE_COMMANDS_TOPIC, which must agree.
        cmd_topics = {e.get("WSGATE_COMMANDS_TOPIC") for role in ("processor", "api")
                      for _, _, _, e in self.roles.get(role, []) if e.get("WSGATE_COMMANDS_TOPIC")}
        self.ok(len(cmd_topics) <= 1, f"the processors and wsgate-api name different commands topics: "
                f"{sorted(cmd_topics)}")
        for name, t in self.by_kind.get("KafkaTopic", {}).items():
            env = dict(self.common_env())
            if cmd_topics and "COMMANDS_PARTITIONS" in topics:
                env["WSGATE_COMMANDS_TOPIC"] = next(iter(cmd_topics))
            topic = t["spec"].get("topicName", name)
            cluster = (t["metadata"].get("labels") or {}).get("strimzi.io/cluster")
            self.ok(self.get("Kafka", cluster) is not None, f"KafkaTopic/{name}: strimzi.io/cluster {cluster!r} is no Kafka")
            for which, opt in (("INBOUND", "WSGATE_INBOUND_TOPIC"), ("OUTBOUND", "WSGATE_OUTBOUND_TOPIC"),
                               ("COMMANDS", "WSGATE_COMMANDS_TOPIC")):
                if topic == env.get(opt):
                    self.ok(t["spec"].get("partitions") == topics[f"{which}_PARTITIONS"],
                            f"KafkaTopic/{name}: {t['spec'].get('partitions')} partitions, but "
                            f"{which}_PARTITIONS={topics[f'{which}_PARTITIONS']}")
                    self.ok(t["spec"].get("replicas") == topics["REPLICATION_FACTOR"],
                            f"KafkaTopic/{name}: replicas {t['spec'].get('replicas')} but "
                            f"REPLICATION_FACTOR={topics['REPLICATION_FACTOR']}")
                    break
            else:
                self.err(f"KafkaTopic/{name}: topic {topic!r} is neither WSGATE_INBOUND_TOPIC, "
                         "WSGATE_OUTBOUND_TOPIC nor WSGATE_COMMANDS_TOPIC")
        for name, p in self.by_kind.get("KafkaNodePool", {}).items():
            cluster = (p["metadata"].get("labels") or {}).get("strimzi.io/cluster")
            self.ok(self.get("Kafka", cluster) is not None, f"KafkaNodePool/{name}: strimzi.io/cluster {cluster!r} is no Kafka")

    def common_env(self):
        for role in ("gateway", "processor"):
            for _, _, _, env in self.roles.get(role, []):
                return env
        return {}

    def check_conn_metric(self, what, hpa, adapter_metric):
        # Optional (CPU alone needs no metrics pipeline; tests/k8s/check_ops.py checks that a
        # custom metric comes with its pipeline): the ones used must exist.
        pods = [m["pods"]["metric"]["name"] for m in hpa["spec"].get("metrics") or [] if m["type"] == "Pods"]
        if not pods:
            return
        with open(self.gateway_exe, "rb") as f:
            image = f.read()
        for name in pods:
            self.ok(name.encode() in image, f"{what}: metric {name} is not served by {self.gateway_exe}")
            if adapter_metric is not None:
                self.ok(name in adapter_metric, f"{what}: metric {name} is not exposed by the Prometheus "
                        f"Adapter rule (it exposes {sorted(adapter_metric)})")

    def check_keda(self, what, so):
        env = {}
        for _, _, _, e in self.roles.get("processor", []):
            env = e
        for trig in so["spec"].get("triggers") or []:
            if trig["type"] != "kafka":
                continue
            md = trig["metadata"]
            self.ok(md.get("consumerGroup") == env.get("WSGATE_GROUP_ID"),
                    f"{what}: consumerGroup {md.get('consumerGroup')!r} is not WSGATE_GROUP_ID {env.get('WSGATE_GROUP_ID')!r}")
            self.ok(md.get("topic") == env.get("WSGATE_INBOUND_TOPIC"),
                    f"{what}: topic {md.get('topic')!r} is not WSGATE_INBOUND_TOPIC {env.get('WSGATE_INBOUND_TOPIC')!r}")
            want = processor_offset_reset(env)
            self.ok(md.get("offsetResetPolicy", "latest") == want,
                    f"{what}: offsetResetPolicy {md.get('offsetResetPolicy', 'latest')!r} is not the "
                    f"processors' auto.offset.reset {want!r}: KEDA misjudges a new group's lag")

    def check_redis_cluster_seeds(self, where, seeds):
        """Each seed of WSGATE_REDIS_CLUSTER is <pod>.<headless Service>[.ns...]:<port> of a
        rendered StatefulSet that serves that Service, with a pod index below its replicas."""
        for seed in seeds.split(","):
            hostpart, _, port = seed.strip().rpartition(":")
            labels = hostpart.split(".")
            svc = self.get("Service", labels[1]) if len(labels) > 1 else None
            if not self.ok(svc is not None and svc["spec"].get("clusterIP") == "None",
                           f"{where}: WSGATE_REDIS_CLUSTER seed {seed} is not <pod>.<headless Service>"):
                continue
            sts = [o for o in self.by_kind.get("StatefulSet", {}).values()
                   if o["spec"].get("serviceName") == labels[1]]
            pod, _, index = labels[0].rpartition("-")
            self.ok(any(o["metadata"]["name"] == pod and index.isdigit()
                        and int(index) < o["spec"].get("replicas", 1) for o in sts),
                    f"{where}: WSGATE_REDIS_CLUSTER seed {seed} names no pod of a StatefulSet of "
                    f"Service/{labels[1]}")
            self.ok(any(str(p["port"]) == port for p in svc["spec"]["ports"]),
                    f"{where}: WSGATE_REDIS_CLUSTER seed {seed}: {port} is not a port of Service/{labels[1]}")

    def check_addresses(self):
        """WSGATE_KAFKA_BROKERS and WSGATE_REDIS_HOST/PORT (or the WSGATE_REDIS_CLUSTER seeds) name
        what this render runs, if it runs them."""
        for role in ("gateway", "processor", "api", "admin"):
            for w, _, c, env in self.roles.get(role, []):
                where = f"{w['kind']}/{w['metadata']['name']} container {c['name']}"
                brokers = env.get("WSGATE_KAFKA_BROKERS")
                kafkas = self.by_kind.get("Kafka", {})
                if kafkas and brokers:
                    want = {f"{k}-kafka-bootstrap:{lst['port']}" for k, o in kafkas.items()
                            for lst in o["spec"]["kafka"]["listeners"]}
                    # A short or fully qualified service name ("name.ns.svc"), with the listener's port.
                    short = {b.rsplit(":", 1)[0].split(".")[0] + ":" + b.rsplit(":", 1)[-1]
                             for b in brokers.split(",")}
                    self.ok(short <= want,
                            f"{where}: WSGATE_KAFKA_BROKERS={brokers} is not a bootstrap service of the rendered "
                            f"Kafka ({', '.join(sorted(want))})")
                if role == "admin":
                    continue
                if env.get("WSGATE_REDIS_CLUSTER"):
                    self.check_redis_cluster_seeds(where, env["WSGATE_REDIS_CLUSTER"])
                    continue
                host = env.get("WSGATE_REDIS_HOST")
                svc = self.get("Service", host) if host else None
                redis_sts = [o for o in self.by_kind.get("StatefulSet", {}).values()
                             if "redis" in o["metadata"]["name"]]
                if redis_sts:
                    if self.ok(svc is not None, f"{where}: WSGATE_REDIS_HOST={host} is not the rendered Redis Service"):
                        port = env.get("WSGATE_REDIS_PORT")
                        self.ok(any(str(p["port"]) == str(port) for p in svc["spec"]["ports"]),
                                f"{where}: WSGATE_REDIS_PORT={port} is not a port of Service/{host}")
        for k, o in self.by_kind.get("Kafka", {}).items():
            for lst in o["spec"]["kafka"]["listeners"]:
                peers = [p for p in lst.get("networkPolicyPeers") or [] if "namespaceSelector" not in p]
                if not self.ok(peers, f"Kafka/{k}: listener {lst['name']} has no networkPolicyPeers: "
                               "any pod could reach the brokers"):
                    continue
                for role in ("gateway", "processor", "api", "admin"):
                    for w, spec, _, _ in self.roles.get(role, []):
                        labels = (w["spec"]["template"].get("metadata") or {}).get("labels")
                        self.ok(any(self.matches(p.get("podSelector"), labels) for p in peers),
                                f"Kafka/{k}: listener {lst['name']}'s networkPolicyPeers do not admit "
                                f"{w['kind']}/{w['metadata']['name']}")

    def run(self, adapter_metric):
        self.check_workloads()
        for role in ("gateway", "processor"):
            self.ok(self.roles.get(role), f"no workload runs wsgate-{role}")
        self.check_services()
        self.check_budgets_and_policies()
        self.check_direct()
        self.check_scaling(adapter_metric)
        self.check_addresses()


def adapter_metrics(path):
    """Metric names the Prometheus Adapter config in PATH (a ConfigMap) exposes."""
    import yaml

    names = set()
    with open(path, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            cfg = yaml.safe_load(doc["data"]["config.yaml"])
            for rule in cfg.get("rules") or []:
                series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"]).group(1)
                name = (rule.get("name") or {})
                if name.get("as"):
                    names.add(re.sub(name.get("matches", "^(.*)$"), name["as"], series))
                else:
                    names.add(series)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--processor", required=True)
    ap.add_argument("--admin", required=True)
    ap.add_argument("--api")
    ap.add_argument("--adapter-config")
    ap.add_argument("--external-secret", action="append", default=[])
    ap.add_argument("--expect-error")
    args = ap.parse_args()
    k8s_render.ensure_modules("yaml")
    binaries = {
        "wsgate-gateway": help_markdown_options(args.gateway),
        "wsgate-processor": help_markdown_options(args.processor),
        "wsgate-admin": admin_env(args.admin),
    }
    if args.api:
        binaries["wsgate-api"] = help_markdown_options(args.api)
    try:
        objs = k8s_render.render(args.path)
    except k8s_render.RenderError as e:
        errors, checked = [str(e)], 0
    else:
        checker = Checker(objs, binaries, args.external_secret, args.gateway)
        checker.run(adapter_metrics(args.adapter_config) if args.adapter_config else None)
        errors, checked = [e for e in checker.errors if e], checker.checked
        print(f"{args.path}: {len(objs)} objects, {checked} checks")
    return k8s_render.verdict(errors, args.expect_error, "inconsistencies")


if __name__ == "__main__":
    sys.exit(main())
