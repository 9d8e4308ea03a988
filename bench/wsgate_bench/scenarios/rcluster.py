"""(h) Redis beyond one node, against one Redis node and against a 3-primary Redis Cluster
(scripts/redis start --cluster) on the same box, with the Redis CPU per operation (INFO cpu summed
over the primaries, before and after):
- connects/s of one gateway, plain and resumable (`wsgate.v1+seq`);
- resumable deliveries/s end to end: wsgate-api -> the commands topic -> a processor's commands
  executor (each delivery numbered and stored in its user's replay stream, then routed) -> the
  gateway -> DELIVERY_CONNS resumable receivers; each send names DELIVERY_USERS users, so the
  API's own ceiling (a few thousand requests/s here) is not the one measured. The highest rate
  with every delivery back and p99 under 1 s.
Not part of a full run: `scripts/bench --only rcluster --out FILE` (its figures are quoted in
docs/BENCHMARKS.md, "Redis Cluster"); the per-operation Redis costs are
bench/micro/redis_cluster_bench's."""

import os
import re
import subprocess

from ..common import RUN_S, WARMUP_S, SCRIPTS, log
from ..search import search_rate, sustained

CONNS = 10000
DELIVERY_CONNS = 1000
DELIVERY_USERS = 20  # users per API send
SEQ = ["--subprotocol", "wsgate.v1+seq"]


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


def deliveries(ctx, target, extra, ports, offset):
    """The delivery search against one Redis (extra: the daemons' --redis-cluster, or none)."""
    t = ctx.topics(f"rcd-{target}")
    cmd = ctx.commands_topic(f"rcd-{target}")
    prefix = ctx.unique("rcd") + ":"
    conns = 20 if ctx.quick else ctx.scaled(DELIVERY_CONNS)
    per_send = min(DELIVERY_USERS, conns)
    procs = []
    try:
        gw = ctx.start_gateway(0, t, prefix, extra)
        procs.append(gw)
        pr = ctx.start_processor(0, t, prefix, "echo", ctx.unique("rcd-group"),
                                 ["--commands-topic", cmd, *extra])
        procs.append(pr)
        api = ctx.start_api(0, t, cmd, prefix, extra)
        procs.append(api)
        metrics = ("wsgate_processor_resume_appends_total",
                   "wsgate_processor_resume_unsequenced_total")

        def run_at(name, sends):
            d, w = (3, 1) if ctx.quick else (RUN_S, WARMUP_S)
            ctx.sample_load("rcluster")
            m0 = [ctx.metric([pr], m) for m in metrics]
            c0 = redis_cpu(ports)
            r = ctx.load(name, "api", [gw.url], conns, *SEQ, "--api-url", api.url,
                         "--api-clients", "64", "--api-users", per_send, "--rate", sends,
                         "--duration", f"{d}s", "--warmup", f"{w}s", "--drain", "5s",
                         "--user-offset", offset, env={"WSGATE_LOAD_API_KEY": api.key},
                         cpu={"gateway": gw, "processor": pr, "api": api}, servers=("kafka",))
            c1 = redis_cpu(ports)
            m1 = [ctx.metric([pr], m) for m in metrics]
            run = r["run"]
            r["deliveries"] = {
                "offered_per_s": sends * per_send, "per_s": run["rate_measured"],
                "received": run["received"], "appends": m1[0] - m0[0],
                "unsequenced": m1[1] - m0[1],
                # The whole run's Redis CPU (the receivers' connects and lease renewals included:
                # under 1 % of it) over every delivery of the run.
                "redis_cpu_us": (c1 - c0) / max(1, run["received"]) * 1e6,
                "cpu_us": {k: v / max(1, run["received"]) * 1e6 for k, v in r["cpu"].items()},
                "p99_ms": run["latency_ms"]["p99"], "lost": run["lost_measured"]}
            return r

        def try_rate(sends):
            r = run_at(f"rcd-{target}", sends)
            return sustained(r, p99_max_ms=1000.0), r

        # Producer ids, transactions, the group's assignment; the first trials of a search also
        # met a broker spending 3-5 times its later CPU per record.
        run_at(f"rcd-{target}-warmup", 100)
        if ctx.quick:
            return {"quick": run_at(f"rcd-{target}-quick", 10)["deliveries"]}
        best, res, trials = search_rate(f"rcluster {target} resumable deliveries (sends of "
                                        f"{per_send} users/s)", 100, try_rate, limit=5000)
        out = {"best_sends": best, "users_per_send": per_send, "conns": conns,
               "trials": [{"sends": x["rate"], "ok": x["ok"], **x["res"]["deliveries"]}
                          for x in trials], "cmd": res["_cmd"] if res else None}
        if res:
            out.update(res["deliveries"])
            log(f"rcluster {target}: {res['deliveries']['per_s']:.0f} resumable deliveries/s, "
                f"{res['deliveries']['redis_cpu_us']:.1f} us of Redis CPU each")
        return out
    finally:
        for p in reversed(procs):
            p.stop()


def run(ctx):
    n = 20 if ctx.quick else ctx.scaled(CONNS)
    port = int(os.environ.get("WSGATE_BENCH_REDIS_CLUSTER_PORT", "21601"))
    out = {"n": n, "runs": []}
    for rep in range(ctx.repeats):
        ctx.sample_load("rcluster")
        base = 7000000 + rep * 100000
        run_ = {"node": measure(ctx, "node", [], [ctx.redis_port], n, base),
                "node_deliveries": deliveries(ctx, "node", [], [ctx.redis_port], base + 90000)}
        cluster_script(ctx, "start", port)
        try:
            seed = ["--redis-cluster", f"127.0.0.1:{port}"]
            ports = primaries(port)
            run_["cluster"] = measure(ctx, "cluster", seed, ports, n, base + 500000)
            run_["cluster_deliveries"] = deliveries(ctx, "cluster", seed, ports, base + 590000)
        finally:
            cluster_script(ctx, "stop", port)
        out["runs"].append(run_)
    return out
