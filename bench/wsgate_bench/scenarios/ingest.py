"""(b) Gateway-only throughput: gateway -> Kafka frames/s (the gateway has no echo path), against
the like-for-like ceiling of bare libwebsockets receiving (lws_echo --sink) and lws_echo's echo."""

import time

from ..common import ECHO_CONNS, RUN_S, WARMUP_S
from ..search import echo_args, search_rate, sustained
from ..stats import confirm_summary, cpu_per_message, median, summarize_trials


def trial(ctx, name, url, rate, counter, cpu, servers=(), auth="jwt"):
    """Sends at `rate` for a few seconds with nobody answering; the rate is what `counter()`
    (frames taken in by the server) grew by per second while the load ran, res["cpu_us"] the CPU
    µs per frame of `cpu` ({name: Proc}) and `servers` over the same window."""
    d, w = (3, 1) if ctx.quick else (RUN_S, WARMUP_S)
    p = ctx.load_bg(name, "echo", [url], ctx.scaled(ECHO_CONNS),
                    *echo_args(ctx, rate, duration=d, warmup=w), "--drain", "1s", auth=auth)
    ctx.wait_phase(p)
    time.sleep(0.2 + w)
    c0, m0, u0 = counter(), time.monotonic(), ctx.cpu_of(cpu, servers)
    time.sleep(max(0.5, d - w - 0.5))
    c1, m1, u1 = counter(), time.monotonic(), ctx.cpu_of(cpu, servers)
    res = ctx.load_result(p)
    res["ingest_rate"] = (c1 - c0) / (m1 - m0)
    res["cpu_us"] = {k: (u1[k] - u0[k]) * 1e6 / max(1, c1 - c0) for k in u0}
    ok = res["run"]["dropped"] == 0 and res["ingest_rate"] >= 0.97 * rate
    return ok, res


def searched(ctx, name, start, try_rate, cpu_us, rate_of, key=None):
    """The highest rate try_rate sustains, confirmed by --repeats more runs at it."""
    best, _, trials = search_rate(name, start, try_rate)
    confirm = [try_rate(best)[1] for _ in range(ctx.repeats)] if best else []
    return {"best": best, "trials": summarize_trials(trials, key=key),
            "cpu_us": cpu_us(confirm) if confirm else None,
            **confirm_summary(confirm, rate_of)}


def ingest_cpu(confirm):
    return {k: median([c["cpu_us"][k] for c in confirm]) for k in confirm[0]["cpu_us"]}


def run(ctx):
    out = {}
    # The like-for-like ceiling of the gateway's ingest: bare libwebsockets receiving and
    # reassembling each frame and sending nothing back (lws_echo --sink).
    sink = ctx.start_lws_echo(0, sink=True)
    try:
        def try_sink(rate):
            return trial(ctx, "lws-sink", sink.url, rate, lambda: ctx.lws_received(sink),
                         {"lws_echo --sink": sink}, auth="none")
        out["lws_sink"] = searched(ctx, "lws_echo --sink", 45000, try_sink, ingest_cpu,
                                   lambda c: c["ingest_rate"], key="ingest_rate")
    finally:
        sink.stop()
    # The ceiling: bare libwebsockets echoing (each frame read and written once).
    lws = ctx.start_lws_echo(0)
    try:
        def try_lws(rate):
            res = ctx.load("lws-echo", "echo", [lws.url], ctx.scaled(ECHO_CONNS),
                           *echo_args(ctx, rate), auth="none", cpu={"lws_echo": lws},
                           servers=())
            return sustained(res, p99_max_ms=100.0), res
        out["lws"] = searched(ctx, "lws_echo echo", 20000, try_lws, cpu_per_message,
                              lambda c: c["run"]["rate_measured"])
    finally:
        lws.stop()
    # The gateway has no echo path (see docs/BENCHMARKS.md): frames in -> records acked by Kafka,
    # measured from its own counter while the load runs, no processor.
    t = ctx.topics("ingest")
    gw = ctx.start_gateway(0, t, ctx.unique("ingest") + ":")
    try:
        def try_gw(rate):
            return trial(ctx, "gw-ingest", gw.url, rate, lambda: ctx.metric(
                [gw], "wsgate_gateway_kafka_delivered_total"), {"gateway": gw},
                ("kafka", "redis"))
        out["gateway"] = searched(ctx, "gateway ingest", 45000, try_gw, ingest_cpu,
                                  lambda c: c["ingest_rate"], key="ingest_rate")
    finally:
        gw.stop()
    return out
