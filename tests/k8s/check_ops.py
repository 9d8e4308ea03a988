#!/usr/bin/env python3
"""Operational checks of a rendered overlay: what keeps it running once applied.

  - Kafka's disks: every KafkaTopic bounds its retention by time and bytes; the partition
    replicas a broker holds, each up to retention.bytes + segment.bytes (Kafka deletes whole
    segments), fit in 80 % of a broker's disk (persistent volume, or the ephemeral sizeLimit); a
    topic annotated with its design rate (wsgate.io/design-bytes-per-second) keeps its time
    retention at that rate (the byte cap is not reached first); broker metrics (JMX exporter) and
    the consumer-lag exporter are on; an overlay with persistent Kafka storage ships the disk
    alert.
  - Scaling: the gateway's autoscaler scales up by a percentage (a reconnect storm is absorbed in
    minutes); an HPA on a custom metric (Pods, Object, External) or a ScaledObject on a
    Prometheus query comes with the monitoring component (else the metric is missing and the
    HPA never scales down); a Prometheus trigger treats an empty result as an error (0 would
    scale the gateways down), queries its own namespace, and names metrics the daemons serve
    (docs/METRICS-*.md).
  - Services have no two ports of one name or number (the API server refuses them).
  - With --no-operator-crds (dev): no object needs the Prometheus Operator's CRDs.

usage: check_ops.py [--no-operator-crds] [--expect-error REGEX] PATH
Exit status: 0 consistent (or the expected error seen), 1 not, 77 tools missing (skip).
"""
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_render  # noqa: E402

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs")

DISK_FILL_MAX = 0.8
# Kafka's default segment.bytes.
SEGMENT_DEFAULT = 1 << 30
DESIGN_RATE = "wsgate.io/design-bytes-per-second"
UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 1 << 10, "Mi": 1 << 20,
         "Gi": 1 << 30, "Ti": 1 << 40}


def quantity(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kMGT]i?)?", str(text))
    return float(m.group(1)) * UNITS[m.group(2) or ""] if m else None


def gib(n):
    return f"{n / (1 << 30):.1f} GiB"


class Ops:
    def __init__(self, objs):
        self.objs = objs
        self.errors = []
        self.by_kind = {}
        for o in objs:
            self.by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o

    def ok(self, cond, msg):
        if not cond:
            self.errors.append(msg)
        return cond

    def kinds(self, kind):
        return self.by_kind.get(kind, {})

    # --- Kafka ---------------------------------------------------------------------------------

    def broker_disk(self, cluster):
        """(broker count, bytes of log disk per broker or None if unbounded, persistent?)"""
        brokers, disks, persistent = 0, [], False
        for name, pool in self.kinds("KafkaNodePool").items():
            if (pool["metadata"].get("labels") or {}).get("strimzi.io/cluster") != cluster:
                continue
            if "broker" not in pool["spec"].get("roles", []):
                continue
            brokers += pool["spec"].get("replicas", 0)
            st = pool["spec"].get("storage") or {}
            vols = st.get("volumes", []) if st.get("type") == "jbod" else [st]
            size = 0
            for v in vols:
                if v.get("type") == "persistent-claim":
                    persistent = True
                    size += quantity(v.get("size")) or 0
                elif v.get("type") == "ephemeral" and v.get("sizeLimit"):
                    size += quantity(v["sizeLimit"]) or 0
                else:
                    self.ok(False, f"KafkaNodePool/{name}: {v.get('type')} storage without a size: "
                            "nothing bounds the log, a full disk takes the node with it (set sizeLimit)")
                    size = None
                    break
            if size is not None:
                disks.append(size)
        return brokers, (min(disks) if disks else None), persistent

    def check_kafka(self):
        for cluster, kafka in self.kinds("Kafka").items():
            spec = kafka["spec"]
            self.ok(spec["kafka"].get("metricsConfig"),
                    f"Kafka/{cluster}: no spec.kafka.metricsConfig: broker metrics (log sizes, "
                    "under-replicated partitions) are off")
            ref = ((spec["kafka"].get("metricsConfig") or {}).get("valueFrom") or {}).get("configMapKeyRef")
            if ref:
                cm = self.kinds("ConfigMap").get(ref["name"])
                self.ok(cm and ref["key"] in (cm.get("data") or {}),
                        f"Kafka/{cluster}: metricsConfig names ConfigMap/{ref['name']} key {ref['key']}, not rendered")
            self.ok("kafkaExporter" in spec, f"Kafka/{cluster}: no kafkaExporter: consumer lag is not exported")
            brokers, disk, persistent = self.broker_disk(cluster)
            if not self.ok(brokers > 0, f"Kafka/{cluster}: no broker node pool"):
                continue
            held, lines = 0, []
            for name, t in self.kinds("KafkaTopic").items():
                if (t["metadata"].get("labels") or {}).get("strimzi.io/cluster") != cluster:
                    continue
                cfg = t["spec"].get("config") or {}
                ms, cap = cfg.get("retention.ms"), cfg.get("retention.bytes")
                seg = int(cfg.get("segment.bytes", SEGMENT_DEFAULT))
                self.ok(ms is not None and int(ms) > 0, f"KafkaTopic/{name}: no retention.ms (time bound)")
                if not self.ok(cap is not None and int(cap) > 0,
                               f"KafkaTopic/{name}: no retention.bytes: nothing bounds the log by size, "
                               "a faster producer than planned fills the brokers' disks"):
                    continue
                parts, reps = t["spec"]["partitions"], t["spec"].get("replicas", 1)
                per_broker = math.ceil(parts * reps / brokers)
                held += per_broker * (int(cap) + seg)
                lines.append(f"{name}: {per_broker} partition replicas x ({gib(int(cap))} + segment {gib(seg)})")
                rate = (t["metadata"].get("annotations") or {}).get(DESIGN_RATE)
                if rate is None:
                    self.ok(not persistent, f"KafkaTopic/{name}: no {DESIGN_RATE} annotation: the retention of a "
                            "persistent Kafka must be sized from the capacity plan (docs/KUBERNETES.md)")
                elif ms is not None:
                    need = float(rate) / parts * int(ms) / 1000
                    self.ok(need <= int(cap),
                            f"KafkaTopic/{name}: at {DESIGN_RATE}={rate} a partition takes {gib(need)} in "
                            f"retention.ms={ms}, over retention.bytes={gib(int(cap))}: the byte cap cuts "
                            f"retention to {int(cap) / (float(rate) / parts) / 60:.0f} min")
            if disk is not None:
                self.ok(held <= DISK_FILL_MAX * disk,
                        f"Kafka/{cluster}: a broker holds up to {gib(held)} of log ({'; '.join(lines)}) on "
                        f"{brokers} brokers, over {DISK_FILL_MAX:.0%} of its {gib(disk)} disk: add brokers or "
                        "disk, or lower retention.bytes")
            if persistent:
                self.ok(self.has_alert(r"kubelet_volume_stats_available_bytes"),
                        f"Kafka/{cluster}: persistent brokers but no PrometheusRule alert on their volumes' "
                        "free space (kubelet_volume_stats_available_bytes): add the monitoring component")

    def alerts(self):
        for name, r in self.kinds("PrometheusRule").items():
            for g in r["spec"].get("groups", []):
                for rule in g.get("rules", []):
                    if "alert" in rule:
                        yield name, rule

    def has_alert(self, pattern):
        return any(re.search(pattern, str(rule.get("expr"))) for _, rule in self.alerts())

    # --- scaling -------------------------------------------------------------------------------

    def daemon_metrics(self):
        names = set()
        for daemon in ("gateway", "processor"):
            with open(os.path.join(DOCS, f"METRICS-{daemon}.md"), encoding="utf-8") as f:
                names |= set(re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", f.read(), re.M))
        return names

    def monitored(self):
        return bool(self.kinds("ServiceMonitor") or self.kinds("PodMonitor"))

    def check_scaling(self):
        served = self.daemon_metrics()
        scalers = [(f"HorizontalPodAutoscaler/{n}", h, h["spec"].get("behavior"), h["spec"].get("metrics") or [])
                   for n, h in self.kinds("HorizontalPodAutoscaler").items()]
        scalers += [(f"ScaledObject/{n}", s, ((s["spec"].get("advanced") or {}).get("horizontalPodAutoscalerConfig")
                                              or {}).get("behavior"), [])
                    for n, s in self.kinds("ScaledObject").items()]
        for what, obj, behavior, metrics in scalers:
            if obj["spec"]["scaleTargetRef"]["name"] == "wsgate-gateway":
                up = (behavior or {}).get("scaleUp") or {}
                self.ok(any(p["type"] == "Percent" for p in up.get("policies") or [])
                        and up.get("selectPolicy", "Max") == "Max",
                        f"{what}: the gateway scales up without a Percent policy (selectPolicy Max): "
                        "a fixed number of pods per minute takes half an hour to absorb a reconnect storm")
            for m in metrics:
                if m["type"] in ("Pods", "Object", "External"):
                    name = m[m["type"].lower()]["metric"]["name"]
                    self.ok(self.monitored(), f"{what}: scales on {name}, but nothing in this overlay has "
                            "Prometheus scrape it (the monitoring component): the metric is missing and an "
                            "HPA with a missing metric never scales down")
            for t in obj["spec"].get("triggers") or [] if obj["kind"] == "ScaledObject" else []:
                if t["type"] != "prometheus":
                    continue
                md, ns = t["metadata"], obj["metadata"].get("namespace")
                self.ok(self.monitored(), f"{what}: a Prometheus trigger, but nothing in this overlay has "
                        "Prometheus scrape the gateways (the monitoring component)")
                self.ok(str(md.get("ignoreNullValues", "true")).lower() == "false",
                        f"{what}: the Prometheus trigger takes an empty result as 0 (ignoreNullValues): "
                        "broken scraping would scale the gateways down to the minimum")
                q = md.get("query", "")
                for metric in re.findall(r"\b(wsgate_[a-z0-9_]+)", q):
                    self.ok(metric in served, f"{what}: query uses {metric}, which no daemon serves "
                            "(docs/METRICS-gateway.md, docs/METRICS-processor.md)")
                nss = re.findall(r'namespace="([^"]*)"', q)
                self.ok(nss and all(n == ns for n in nss),
                        f"{what}: the query selects namespace {nss or 'none'}, the object is in {ns!r}")

    def check_no_operator(self):
        for o in self.objs:
            self.ok(not o.get("apiVersion", "").startswith("monitoring.coreos.com/"),
                    f"{o['kind']}/{o['metadata']['name']}: needs the Prometheus Operator's CRDs, which this "
                    "overlay must not (monitoring is an opt-in component)")

    def check_namespaces(self):
        """One namespace for every namespaced object: an object without one lands in whatever
        namespace kubectl's context names (a component added after an overlay's namespace)."""
        cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                          "APIService", "PriorityClass", "StorageClass"}
        nss = {}
        for o in self.objs:
            if o["kind"] not in cluster_scoped:
                nss.setdefault(o["metadata"].get("namespace"), []).append(f"{o['kind']}/{o['metadata']['name']}")
        self.ok(len(nss) == 1, "objects in more than one namespace: " + "; ".join(
            f"{ns or '(none: the context default)'}: {', '.join(v[:4])}{' ...' if len(v) > 4 else ''}"
            for ns, v in nss.items()))

    def check_service_ports(self):
        """The API server refuses a Service with two ports of one name or number (a strategic
        merge patch adds a port by number instead of replacing it)."""
        for name, svc in self.kinds("Service").items():
            ports = svc["spec"].get("ports") or []
            for key in ("name", "port"):
                values = [str(p.get(key)) for p in ports]
                self.ok(len(values) == len(set(values)), f"Service/{name}: two ports with one {key}: {values}")

    def run(self, no_operator_crds=False):
        self.check_namespaces()
        self.check_service_ports()
        self.check_kafka()
        self.check_scaling()
        if no_operator_crds:
            self.check_no_operator()


def main():
    args = k8s_render.overlay_args(__doc__, "yaml", flags=("--no-operator-crds",))
    try:
        objs = k8s_render.render(args.path)
    except k8s_render.RenderError as e:
        errors = [str(e)]
    else:
        ops = Ops(objs)
        ops.run(args.no_operator_crds)
        errors = ops.errors
        print(f"{args.path}: {len(objs)} objects")
    return k8s_render.verdict(errors, args.expect_error, "problem(s)")


if __name__ == "__main__":
    sys.exit(main())
