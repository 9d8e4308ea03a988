"""(h) Redis beyond one node: connects/s of one gateway against one Redis node and against a
3-primary Redis Cluster (scripts/redis start --cluster) on the same box, plain and resumable
(`wsgate.v1+seq`), with the Redis CPU per connect (INFO cpu summed over the primaries, before and
after). Not part of a full run: `scripts/bench --only rcluster --out FILE` (its figures are
quoted in docs/BENCHMARKS.md, "Redis Cluster"); the per-operation Redis costs are
bench/micro/redis_cluster_bench's."""

import os
import re
import subprocess

from ..common import SCRIPTS, log

CONNS = 10000


def redis_cpu(ports):
    """CPU seconds (user + sys) of the redis-servers on ports so far."""
    total = 0.0
    for p in ports:
        text = subprocess.run(["redis-cli", "-p", str(p), "INFO", "cpu"], capture_output=True,
                              text=True, timeout=30).stdout
        for field in ("used_cpu_user", "used_cpu_sys"):
            m = re.search(rf"^{field}:([0-9.]+)", text, re.M)
            total += float(m.group(1)) if m else 0.0
    return total


def primaries(port):
    """Ports of the primaries that serve slots (CLUSTER NODES: flags "master", then slots)."""
    out = subprocess.run(["redis-cli", "-p", str(port), "CLUSTER", "NODES"], capture_output=True,
                         text=True, timeout=30).stdout
    ports = set()
    for line in out.splitlines():
        f = line.split()
        if len(f) > 8 and "master" in f[2].split(","):
            ports.add(int(f[1].split("@")[0].rsplit(":", 1)[1]))
    return sorted(ports)


def cluster_script(ctx, action, port):
    env = dict(os.environ, WSGATE_RUN_DIR=str(ctx.run_dir.parent),
               WSGATE_REDIS_CLUSTER_PORT=str(port))
    subprocess.run([str(SCRIPTS / "redis"), action, "--cluster"], env=env, check=True,
                   timeout=120, capture_output=True)


def measure(ctx, target, extra, ports, n, offset):
    t = ctx.topics(f"rc-{target}")
    gw = ctx.start_gateway(0, t, ctx.unique("rc") + ":", extra)
    res = {}
    try:
        for mode, sub in (("plain", []), ("seq", ["--subprotocol", "wsgate.v1+seq"])):
            offset += n
            c0 = redis_cpu(ports)
            r = ctx.load(f"rc-{target}-{mode}", "idle", [gw.url], n, "--hold", "0s",
                         "--connect-rate", "0", "--user-offset", str(offset), *sub)
            c1 = redis_cpu(ports)
            res[mode] = {"rate": r["connect"]["per_second"], "failed": r["connect"]["failed"],
                         "redis_cpu_us": (c1 - c0) / n * 1e6, "cmd": r["_cmd"]}
            log(f"rcluster {target} {mode}: {res[mode]['rate']:.0f} connects/s, "
                f"{res[mode]['redis_cpu_us']:.1f} us of Redis CPU each")
    finally:
        gw.stop()
    return res


def run(ctx):
    n = 20 if ctx.quick else ctx.scaled(CONNS)
    port = int(os.environ.get("WSGATE_BENCH_REDIS_CLUSTER_PORT", "21601"))
    out = {"n": n, "runs": []}
    for rep in range(ctx.repeats):
        ctx.sample_load("rcluster")
        run_ = {"node": measure(ctx, "node", [], [ctx.redis_port], n, 7000000 + rep * 100000)}
        cluster_script(ctx, "start", port)
        try:
            seed = f"127.0.0.1:{port}"
            run_["cluster"] = measure(ctx, "cluster", ["--redis-cluster", seed], primaries(port),
                                      n, 7500000 + rep * 100000)
        finally:
            cluster_script(ctx, "stop", port)
        out["runs"].append(run_)
    return out
