"""(e) Cost of a connect: Redis commands and Kafka records per connect and disconnect, connect
latency and the connect rate without a limit."""

import re
import time

from wsgate_procs import wait_until

from ..common import CONNECT_COST_CONNS
from ..stats import median, span

DELIVERED = "wsgate_gateway_kafka_delivered_total"


def cmdstats(ctx):
    text = ctx.check_call(["redis-cli", "-p", ctx.redis_port, "INFO", "commandstats"])
    out = {}
    for m in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", text, re.M):
        if m.group(1).split("|")[0] not in ("info", "config"):  # this script's own
            out[m.group(1)] = int(m.group(2))
    return out


def settled_cmdstats(ctx):
    """Command counts once the gateway's asynchronous Redis work has stopped growing."""
    last = None
    for _ in range(20):
        cur = cmdstats(ctx)
        if cur == last:
            return cur
        last = cur
        time.sleep(0.5)
    return last


def reset_stats(ctx):
    ctx.check_call(["redis-cli", "-p", ctx.redis_port, "CONFIG", "RESETSTAT"])


def run(ctx):
    n = 20 if ctx.quick else ctx.scaled(CONNECT_COST_CONNS)
    runs = []
    for rep in range(ctx.repeats):
        ctx.sample_load("connect")
        t = ctx.topics("connect")
        gw = ctx.start_gateway(0, t, ctx.unique("conn") + ":")
        try:
            time.sleep(1.0)
            # What the gateway does to Redis on its own (lease renewals) over 10 s.
            reset_stats(ctx)
            time.sleep(2 if ctx.quick else 10)
            idle = cmdstats(ctx)
            idle_s = 2 if ctx.quick else 10
            k0 = ctx.metric([gw], DELIVERED)
            reset_stats(ctx)
            ts = time.monotonic()
            p = ctx.load_bg("connect", "idle", [gw.url], n, "--hold", "600s",
                            "--connect-rate", "500")
            ctx.wait_phase(p)
            wait_until(lambda: ctx.metric([gw], DELIVERED) - k0 >= n, 30, "registrations")
            on_connect = settled_cmdstats(ctx)
            t_conn = time.monotonic() - ts
            k1 = ctx.metric([gw], DELIVERED)
            reset_stats(ctx)
            td = time.monotonic()
            p.stop()
            wait_until(lambda: ctx.metric([gw], "wsgate_gateway_connections") == 0 and
                       ctx.metric([gw], DELIVERED) - k1 >= n, 60, "disconnects")
            on_close = settled_cmdstats(ctx)
            t_close = time.monotonic() - td
            k2 = ctx.metric([gw], DELIVERED)
            lat = ctx.load("connect-latency", "idle", [gw.url], n, "--hold", "0s",
                           "--connect-rate", "500", "--user-offset", "9000000")
            fast = ctx.load("connect-rate", "idle", [gw.url], 5 * n, "--hold", "0s",
                            "--connect-rate", "0", "--user-offset", "8000000")
        finally:
            gw.stop()

        def per(stats, secs):
            return {c: (v - idle.get(c, 0) * secs / idle_s) / n for c, v in stats.items()}
        runs.append({"connect_cmds": per(on_connect, t_conn),
                     "close_cmds": per(on_close, t_close),
                     "kafka_per_connect": (k1 - k0) / n, "kafka_per_close": (k2 - k1) / n,
                     "latency": lat["connect"]["latency_ms"],
                     "rate": fast["connect"]["per_second"],
                     "rate_failed": fast["connect"]["failed"], "cmd": lat["_cmd"],
                     "cmd_rate": fast["_cmd"]})
    cmds = sorted({c for r in runs for c in list(r["connect_cmds"]) + list(r["close_cmds"])})
    return {"n": n, "runs": runs,
            "connect_cmds": {c: median([r["connect_cmds"].get(c, 0) for r in runs]) for c in cmds},
            "close_cmds": {c: median([r["close_cmds"].get(c, 0) for r in runs]) for c in cmds},
            "kafka_per_connect": median([r["kafka_per_connect"] for r in runs]),
            "kafka_per_close": median([r["kafka_per_close"] for r in runs]),
            "p50": median([r["latency"]["p50"] for r in runs]),
            "p99": median([r["latency"]["p99"] for r in runs]),
            "rate": median([r["rate"] for r in runs]),
            "rate_range": span([r["rate"] for r in runs])}
