"""(h) Channel fan-out (issue 15): one channel with 10,000 subscribers over 2 gateways, history on,
published through the processor's `publish` handler: the highest publication rate at p99 <= 1 s
and, at it, server CPU per delivery (gateways + processor + Kafka + Redis) and the load
generator's own; then 1,000 subscribers at the same publication rate, so that Redis CPU, Redis
commands and Kafka records per publication can be compared (they should not grow with the
subscribers); nchan's fan-out to as many subscribers in the same run, at its own highest rate and
at wsgate's.

Costs are taken over the measured window only (after the warm-up, before the drain and the
closes): a whole run's CPU would add 10,000 connects and disconnects to the deliveries'."""

import re
import time

from wsgate_procs import pid_cpu

from ..common import FANOUT_MEMBERS, RUN_S, WARMUP_S, BenchError, log
from ..search import search_rate, sustained
from ..stats import fanout_summary, median, span, summarize_trials
from .connect import cmdstats

SMALL = 1000
# History on: every publication is appended once to the channel's bounded history in Redis.
NAMESPACE = "bench=history_size=1000"
PUB_RECORDS = "wsgate_processor_channel_publish_records_total"
OUT_RECORDS = "wsgate_gateway_outbound_records_total"
# Seconds of Redis's background (leases, the idle cluster) measured before each run, subtracted.
BASELINE_S = 3.0
DELIVERIES = "wsgate_gateway_channel_deliveries_total"
PUBLICATIONS = "wsgate_processor_channel_publications_total"


def run(ctx):
    if ctx.quick:
        return {"quick": quick(ctx)}
    out = {}
    members = ctx.scaled(FANOUT_MEMBERS)
    out["wsgate"] = wsgate_search(ctx, members)
    best = out["wsgate"].get("best")
    if best:
        out["wsgate_small"] = wsgate_fixed(ctx, ctx.scaled(SMALL), best)
    if not ctx.args.no_peers:
        out["nchan"] = nchan(ctx, members, best)
    return out


class Cluster:
    """`n` gateways and one `publish` processor sharing topics, a prefix and the namespace."""

    def __init__(self, ctx, n, scn="channels"):
        self.ctx = ctx
        t = ctx.topics(scn)
        prefix = ctx.unique("chan") + ":"
        ns = ["--channel-namespace", NAMESPACE]
        self.procs = []
        try:
            self.gws = [ctx.start_gateway(i, t, prefix, extra=ns) for i in range(n)]
            self.procs += self.gws
            self.pr = ctx.start_processor(0, t, prefix, "publish", ctx.unique("chan-group"),
                                          extra=ns)
            self.procs.append(self.pr)
        except BaseException:
            self.stop()
            raise

    def channel(self):
        return "bench:" + self.ctx.unique("ch").replace("-", "_")

    def cpu(self):
        out = {f"gateway{i + 1}": g for i, g in enumerate(self.gws)}
        out["processor"] = self.pr
        return out

    def counters(self):
        return {"publications": self.ctx.metric([self.pr], PUBLICATIONS),
                "kafka_records": self.ctx.metric(self.gws, OUT_RECORDS),
                "publish_records": self.ctx.metric([self.pr], PUB_RECORDS),
                "gateway_deliveries": self.ctx.metric(self.gws, DELIVERIES)}

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def redis_sample(ctx):
    """Redis's command calls (INFO commandstats; a script's calls count once for the script and
    once each inside it) and its CPU seconds (INFO cpu: getrusage, finer than /proc's 10 ms
    ticks, which at a few publications per second would be hundreds of µs per publication)."""
    cpu = ctx.check_call(["redis-cli", "-p", ctx.redis_port, "INFO", "cpu"])
    secs = sum(float(m.group(1)) for m in re.finditer(r"^used_cpu_(?:sys|user):([\d.]+)", cpu,
                                                       re.M))
    return {"calls": cmdstats(ctx), "cpu_s": secs, "t": time.monotonic()}


def redis_delta(a, b):
    """b - a per second: {"calls": {cmd: n}, "cpu_s": s, "secs"}."""
    secs = max(1e-3, b["t"] - a["t"])
    return {"calls": {k: (b["calls"][k] - a["calls"].get(k, 0)) / secs for k in b["calls"]},
            "cpu_s": (b["cpu_s"] - a["cpu_s"]) / secs, "secs": secs}


def redis_quiet(ctx, max_calls_per_s=20, timeout=60):
    """A sample once Redis is back to its background: the previous run's closes are cleaned up
    asynchronously (thousands of calls a second for a while), which would otherwise count as
    background and make the next run's figures negative."""
    a = redis_sample(ctx)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        time.sleep(1.0)
        b = redis_sample(ctx)
        if sum(redis_delta(a, b)["calls"].values()) < max_calls_per_s:
            return b
        a = b
    raise BenchError(f"Redis on port {ctx.redis_port} did not quieten below "
                     f"{max_calls_per_s} calls/s in {timeout} s: something else uses it")


def windowed(ctx, name, urls, members, rate, extra, cpu, servers=("kafka", "redis"),
             counters=None, duration=RUN_S, warmup=WARMUP_S, procs=1, auth="jwt",
             connect_timeout=300):
    """One fan-out run of wsgate-load in the background, its costs sampled over the measured
    window: CPU seconds of every process in `cpu` (plus Kafka, Redis and the load generator's
    parent and workers), Redis command calls and counters(): the deltas between two samples
    taken after the warm-up and at the end of the sending, divided by the deliveries and the
    publications of that window (counted by the gateways and the processor where they count
    them, else the load generator's rates times the window). Redis's figures are net of its
    background, measured for BASELINE_S before the run."""
    # --quick shares the test run's Redis with other tests: never quiet, and not asserted.
    redis = "redis" in servers and not ctx.quick
    if redis:
        b0 = redis_quiet(ctx)
        time.sleep(BASELINE_S)
        base = redis_delta(b0, redis_sample(ctx))
    p = ctx.load_bg(name, "fanout", urls, members, "--rate", rate, "--duration", f"{duration}s",
                    "--warmup", f"{warmup}s", "--drain", "15s", "--size", "64", *extra,
                    auth=auth, procs=procs)

    def sample():
        s = ctx.cpu_of(cpu, servers)
        s["wsgate-load"] = sum(pid_cpu(x) for x in p.pids())
        return s, (redis_sample(ctx) if redis else None), \
            (counters() if counters else {}), time.monotonic()
    ctx.wait_phase(p, timeout=connect_timeout)
    # The schedule starts 0.2 s after the "ready" line; the window after the warm-up.
    time.sleep(0.2 + warmup)
    c0, r0, k0, t0 = sample()
    time.sleep(max(0.5, duration - warmup - 0.3))
    c1, r1, k1, t1 = sample()
    res = ctx.load_result(p, timeout=duration + 120)
    secs = t1 - t0
    delta = {k: k1[k] - k0[k] for k in k1}
    got = max(1.0, delta.get("gateway_deliveries") or res["run"]["rate_measured"] * secs)
    pubs = max(1.0, delta.get("publications") or res["run"]["rate_target"] * secs)
    cpu_s = {k: c1[k] - c0.get(k, 0) for k in c1}
    # Not res["cpu"]: stats.cpu_per_message() would divide it by the whole run's deliveries.
    res["window"] = {"seconds": secs, "deliveries": got, "publications": pubs, "cpu_s": cpu_s}
    server = sum(v for k, v in cpu_s.items() if k != "wsgate-load")
    res["costs"] = {
        "server_cpu_us_per_delivery": 1e6 * server / got,
        "load_cpu_us_per_delivery": 1e6 * cpu_s["wsgate-load"] / got,
        "cpu_us_per_delivery": {k: 1e6 * v / got for k, v in cpu_s.items()},
        **{f"{k}_per_publication": v / pubs for k, v in delta.items() if k != "publications"}}
    if redis:
        w = redis_delta(r0, r1)
        res["window"]["redis_background"] = base
        res["costs"]["redis_cpu_us_per_publication"] = \
            1e6 * (w["cpu_s"] - base["cpu_s"]) * w["secs"] / pubs
        calls = {k: (v - base["calls"].get(k, 0)) * w["secs"] / pubs
                 for k, v in w["calls"].items()}
        res["costs"]["redis_calls_per_publication"] = {k: v for k, v in calls.items()
                                                       if abs(v) >= 0.005}
    res["kafka_per_msg"] = res["costs"].get("kafka_records_per_publication")
    return res


def wsgate_run(ctx, cl, channel, members, rate, name="channels"):
    return windowed(ctx, name, [g.url for g in cl.gws], members, rate,
                    ["--proto", "channel", "--room", channel, "--connect-rate", "5000",
                     "--user-offset", "6000000"],
                    cl.cpu(), counters=cl.counters,
                    duration=3 if ctx.quick else RUN_S, warmup=1 if ctx.quick else WARMUP_S)


def costs_summary(rs):
    """Medians over the runs of each cost, with the server CPU's range."""
    cs = [r["costs"] for r in rs]
    out = {k: median([c[k] for c in cs]) for k in cs[0] if not isinstance(cs[0][k], dict)}
    for k in ("cpu_us_per_delivery", "redis_calls_per_publication"):
        names = {n for c in cs for n in c.get(k, {})}
        out[k] = {n: median([c.get(k, {}).get(n, 0) for c in cs]) for n in sorted(names)}
    out["server_cpu_range"] = span([c["server_cpu_us_per_delivery"] for c in cs])
    return out


def confirmed(ctx, run_at, rate):
    rs = [run_at(rate) for _ in range(ctx.repeats)]
    s = fanout_summary(rs)
    s["costs"] = costs_summary(rs)
    s["all_sustained"] = all(sustained(r, p99_max_ms=1000.0) for r in rs)
    s["lost"] = sum(r["run"]["lost_measured"] for r in rs)
    return s


def wsgate_search(ctx, members):
    cl = Cluster(ctx, 2)
    try:
        channel = cl.channel()

        def try_rate(rate):
            ctx.sample_load("channels")
            res = wsgate_run(ctx, cl, channel, members, rate)
            return sustained(res, p99_max_ms=1000.0), res
        best, _, trials = search_rate(f"wsgate channel fan-out, {members} subscribers "
                                      "(publications/s)", 3, try_rate, limit=1000)
        return {"best": best, "members": members, "trials": summarize_trials(trials),
                "confirm": confirmed(ctx, lambda r: wsgate_run(ctx, cl, channel, members, r),
                                     best) if best else None}
    finally:
        cl.stop()


def wsgate_fixed(ctx, members, rate):
    """The same publication rate to fewer subscribers: per-publication costs to compare."""
    cl = Cluster(ctx, 2)
    try:
        channel = cl.channel()
        ctx.sample_load("channels")
        return {"rate": rate, "members": members,
                "confirm": confirmed(ctx, lambda r: wsgate_run(ctx, cl, channel, members, r),
                                     rate)}
    finally:
        cl.stop()


def quick(ctx):
    """20 subscribers over 2 gateways for 3 s at 5 publications/s: every one delivered, one
    Kafka record per gateway per publication."""
    cl = Cluster(ctx, 2)
    try:
        res = wsgate_run(ctx, cl, cl.channel(), 20, 5, name="quick-channels")
        run = res["run"]
        if run["received_measured"] == 0 or run["lost_measured"] != 0:
            raise BenchError(f"quick channel fan-out lost deliveries: {run}")
        per = res["costs"]["publish_records_per_publication"]
        if not 1.5 <= per <= 2.5:
            raise BenchError(f"quick channel fan-out: {per:.2f} publish records per "
                             "publication, expected 2 (one per gateway with subscribers)")
        log(f"quick: channels {run['received_measured']} deliveries, p99 "
            f"{run['latency_ms']['p99']:.1f} ms, {per:.2f} records per publication")
        return fanout_summary([res])
    finally:
        cl.stop()


def nchan(ctx, members, at_rate=None):
    """The peer: WebSocket subscribers on one channel, a WebSocket publisher, 2 workers; its
    CPU over the same window."""
    peer = ctx.peer("nchan")
    if peer.missing():
        return {"skipped": peer.missing()}
    ng = peer.start(workers=2)
    try:
        def run_at(rate):
            return windowed(ctx, "nchan-channels", [ng.sub_url], members, rate,
                            ["--sender-url", ng.pub_url, "--connect-rate", "5000"],
                            {"nginx workers": lambda: ng.cpu_s(True)}, servers=(),
                            auth="none")

        def try_rate(rate):
            ctx.sample_load("channels")
            res = run_at(rate)
            return sustained(res, p99_max_ms=1000.0), res
        best, _, trials = search_rate("nchan channel fan-out (publications/s)", 3, try_rate,
                                      limit=1000)
        out = {"best": best, "members": members, "trials": summarize_trials(trials),
               "confirm": confirmed(ctx, run_at, best) if best else None}
        # CPU per delivery falls as the rate rises (a busy receiver needs no wake-up per
        # frame): the same rate as wsgate's is the like-for-like cost.
        if at_rate and at_rate != best:
            out["at_wsgate"] = {"rate": at_rate, "members": members,
                                "confirm": confirmed(ctx, run_at, at_rate)}
        return out
    finally:
        ng.stop()
