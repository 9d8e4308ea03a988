#!/usr/bin/env python3
"""Operational checks of a rendered overlay: what keeps it running once applied.

  - Kafka's disks: every KafkaTopic bounds its retention by time and bytes; the partition
    replicas a broker holds, each up to retention.bytes + segment.bytes (Kafka deletes whole
    segments), fit in 80 % of a broker's disk (persistent volume, or the ephemeral sizeLimit); a
    topic annotated with its design rate (wsgate.io/design-bytes-per-second) keeps its time
    retention at that rate (the byte cap is not reached first); broker metrics (JMX exporter) and
    the consumer-lag exporter are on; an overlay with persistent Kafka storage ships the disk
    alert.

usage: check_ops.py [--expect-error REGEX] PATH
Exit status: 0 consistent (or the expected error seen), 1 not, 77 tools missing (skip).
"""
import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_render  # noqa: E402

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

    def run(self):
        self.check_kafka()


def main():
    args = k8s_render.overlay_args(__doc__, "yaml")
    try:
        objs = k8s_render.render(args.path)
    except k8s_render.RenderError as e:
        errors = [str(e)]
    else:
        ops = Ops(objs)
        ops.run()
        errors = ops.errors
        print(f"{args.path}: {len(objs)} objects")
    return k8s_render.verdict(errors, args.expect_error, "problem(s)")


if __name__ == "__main__":
    sys.exit(main())
