"""(b) Gateway-only throughput: gateway -> Kafka frames/s (the gateway has no echo path), against
the like-for-like ceiling of bare libwebsockets receiving (lws_echo --sink) and lws_echo's echo;
then both receivers' CPU per frame at one fixed rate, the gateway's split by thread."""

import time

from wsgate_procs import sleeps, thread_cpu

from ..common import ECHO_CONNS, RUN_S, WARMUP_S
from ..search import echo_args, search_rate, sustained
from ..stats import confirm_summary, cpu_per_message, median, span, summarize_trials

# The rate at which lws_echo --sink and the gateway are compared by CPU per frame
# (--ingest-rate): one both sustain on 2 shared cores. At each one's ceiling the figure also holds
# the contention of that ceiling (the generator and Kafka on the same cores), which differs.
FIXED_RATE = 100000


def thread_group(pid, tid, comm):
    """Which part of the gateway a thread is: its event loop is the main thread; librdkafka names
    its own (rdk:main, rdk:broker<id>); gw_kafka names the outbound consumer's."""
    if tid == pid:
        return "event loop"
    if comm.startswith("rdk:broker"):
        return "librdkafka brokers"
    if comm.startswith("rdk:"):
        return "librdkafka main"
    return comm


def threads_used(pid, t0, t1):
    """CPU seconds per thread group between two thread_cpu() samples (threads born in between
    count from 0)."""
    out = {}
    for tid, (comm, s1) in t1.items():
        g = thread_group(pid, tid, comm)
        out[g] = out.get(g, 0.0) + s1 - t0.get(tid, (comm, 0.0))[1]
    return out


def trial(ctx, name, url, rate, counter, cpu, servers=(), auth="jwt", threads=None):
    """Sends at `rate` for a few seconds with nobody answering; the rate is what `counter()`
    (frames taken in by the server) grew by per second while the load ran, res["cpu_us"] the CPU
    µs per frame of `cpu` ({name: Proc}) and `servers` over the same window, and with `threads`
    (a Proc) res["threads_us"] that process's µs per frame by thread group and
    res["frames_per_wake"] the frames its main thread took in per wake-up: at a fixed rate the
    CPU per frame follows it (a read, an epoll_wait and a task switch shared by fewer frames)."""
    d, w = (3, 1) if ctx.quick else (RUN_S, WARMUP_S)
    p = ctx.load_bg(name, "echo", [url], ctx.scaled(ECHO_CONNS),
                    *echo_args(ctx, rate, duration=d, warmup=w), "--drain", "1s", auth=auth)
    ctx.wait_phase(p)
    time.sleep(0.2 + w)
    t0 = thread_cpu(threads.pid) if threads else {}
    s0 = sleeps(threads.pid) if threads else 0
    c0, m0, u0 = counter(), time.monotonic(), ctx.cpu_of(cpu, servers)
    time.sleep(max(0.5, d - w - 0.5))
    c1, m1, u1 = counter(), time.monotonic(), ctx.cpu_of(cpu, servers)
    t1 = thread_cpu(threads.pid) if threads else {}
    s1 = sleeps(threads.pid) if threads else 0
    res = ctx.load_result(p)
    n = max(1, c1 - c0)
    res["ingest_rate"] = (c1 - c0) / (m1 - m0)
    res["cpu_us"] = {k: (u1[k] - u0[k]) * 1e6 / n for k in u0}
    if threads:
        res["threads_us"] = {k: v * 1e6 / n for k, v in threads_used(threads.pid, t0, t1).items()}
        res["frames_per_wake"] = n / max(1, s1 - s0)
    ok = res["run"]["dropped"] == 0 and res["ingest_rate"] >= 0.97 * rate
    return ok, res


def at_fixed_rate(ctx, rate, try_rate):
    """--repeats runs at one rate: medians of the measured rate and of each CPU figure."""
    runs = [try_rate(rate) for _ in range(ctx.repeats)]
    res = [r for _, r in runs]
    out = {"rate": rate, "sustained": sum(ok for ok, _ in runs), "runs": len(runs),
           "ingest_rate": median([r["ingest_rate"] for r in res]),
           "cpu_us": ingest_cpu(res),
           "cpu_range": {k: span([r["cpu_us"][k] for r in res]) for k in res[0]["cpu_us"]},
           "cmd": res[0]["_cmd"]}
    if res[0].get("frames_per_wake"):
        out["frames_per_wake"] = median([r["frames_per_wake"] for r in res])
    if res[0].get("threads_us"):
        groups = sorted({g for r in res for g in r["threads_us"]})
        out["threads_us"] = {g: median([r["threads_us"].get(g, 0.0) for r in res])
                             for g in groups}
    return out


def searched(ctx, name, start, try_rate, cpu_us, rate_of, key=None):
    """The highest rate try_rate sustains, confirmed by --repeats more runs at it."""
    best, _, trials = search_rate(name, start, try_rate)
    confirm = [try_rate(best)[1] for _ in range(ctx.repeats)] if best else []
    return {"best": best, "trials": summarize_trials(trials, key=key),
            "cpu_us": cpu_us(confirm) if confirm else None,
            **confirm_summary(confirm, rate_of)}


def ingest_cpu(confirm):
    return {k: median([c["cpu_us"][k] for c in confirm]) for k in confirm[0]["cpu_us"]}


def lws_echo_ceiling(ctx):
    lws = ctx.start_lws_echo(0)
    try:
        def try_lws(rate):
            res = ctx.load("lws-echo", "echo", [lws.url], ctx.scaled(ECHO_CONNS),
                           *echo_args(ctx, rate), auth="none", cpu={"lws_echo": lws},
                           servers=())
            return sustained(res, p99_max_ms=100.0), res
        return searched(ctx, "lws_echo echo", 20000, try_lws, cpu_per_message,
                        lambda c: c["run"]["rate_measured"])
    finally:
        lws.stop()


def run(ctx):
    out = {}
    rate = getattr(ctx.args, "ingest_rate", None) or FIXED_RATE
    rate = min(rate, 5000) if ctx.quick else rate
    search = not getattr(ctx.args, "ingest_fixed_only", False)
    # The like-for-like ceiling of the gateway's ingest: bare libwebsockets receiving and
    # reassembling each frame and sending nothing back (lws_echo --sink).
    sink = ctx.start_lws_echo(0, sink=True)
    try:
        def try_sink(rate):
            return trial(ctx, "lws-sink", sink.url, rate, lambda: ctx.lws_received(sink),
                         {"lws_echo --sink": sink}, auth="none", threads=sink)
        if search:
            out["lws_sink"] = searched(ctx, "lws_echo --sink", 45000, try_sink, ingest_cpu,
                                       lambda c: c["ingest_rate"], key="ingest_rate")
        out["lws_sink_fixed"] = at_fixed_rate(ctx, rate, try_sink)
    finally:
        sink.stop()
    # The ceiling: bare libwebsockets echoing (each frame read and written once).
    if search:
        out["lws"] = lws_echo_ceiling(ctx)
    # The gateway has no echo path (see docs/BENCHMARKS.md): frames in -> records acked by Kafka,
    # measured from its own counter while the load runs, no processor.
    t = ctx.topics("ingest")
    gw = ctx.start_gateway(0, t, ctx.unique("ingest") + ":")
    try:
        def try_gw(rate):
            return trial(ctx, "gw-ingest", gw.url, rate, lambda: ctx.metric(
                [gw], "wsgate_gateway_kafka_delivered_total"), {"gateway": gw},
                ("kafka", "redis"), threads=gw)
        if search:
            out["gateway"] = searched(ctx, "gateway ingest", 45000, try_gw, ingest_cpu,
                                      lambda c: c["ingest_rate"], key="ingest_rate")
        out["gateway_fixed"] = at_fixed_rate(ctx, rate, try_gw)
        out["gateway_args"] = list(getattr(ctx.args, "gateway_arg", []))
    finally:
        gw.stop()
    return out
