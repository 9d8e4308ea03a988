"""(h) Channel fan-out (issue 15): one channel with 1,000 and 10,000 subscribers over 2 gateways,
published through the processor's `publish` handler: deliveries/s at p99 <= 1 s, server CPU per
delivery (gateways + processor + Kafka + Redis), Redis CPU and Kafka records per publication
(they should not grow with the subscribers), and the load generator's own CPU per delivery;
nchan's fan-out to as many subscribers in the same run."""

from ..common import FANOUT_MEMBERS, RUN_S, WARMUP_S, BenchError
from ..search import search_rate, sustained
from ..stats import fanout_summary, summarize_trials
from . import fanout

SIZES = (1000, FANOUT_MEMBERS)


def run(ctx):
    out = {}
    for size in SIZES:
        members = 20 if ctx.quick else ctx.scaled(size)
        out[f"wsgate_{size}"] = wsgate(ctx, members)
        if ctx.quick:
            break
    if not ctx.quick and not ctx.args.no_peers:
        out["nchan"] = fanout.nchan(ctx, ctx.scaled(FANOUT_MEMBERS))
    return out


def per_publication(res, gws, pr):
    """Costs of one run, per delivery and per publication."""
    sent = max(1, res["run"]["sent"])
    got = max(1, res["run"].get("received", res["run"].get("received_measured", 0)))
    cpu = res.get("cpu", {})
    server = sum(v for k, v in cpu.items() if k != "wsgate-load")
    return {"server_cpu_us_per_delivery": 1e6 * server / got,
            "load_cpu_us_per_delivery": 1e6 * cpu.get("wsgate-load", 0) / got,
            "redis_cpu_us_per_publication": 1e6 * cpu.get("redis", 0) / sent}


def wsgate(ctx, members):
    t = ctx.topics("channels")
    prefix = ctx.unique("chan") + ":"
    channel = "bench:" + ctx.unique("ch").replace("-", "_")
    procs = []
    try:
        gws = [ctx.start_gateway(i, t, prefix) for i in range(2)]
        procs += gws
        pr = ctx.start_processor(0, t, prefix, "publish", ctx.unique("chan-group"),
                                 extra=["--channel-namespace", "bench=history_size=1000"])
        procs.append(pr)

        def run_at(rate):
            d, w = (3, 1) if ctx.quick else (RUN_S, WARMUP_S)
            r0 = ctx.metric(gws, "wsgate_gateway_outbound_records_total")
            res = ctx.load("channels", "fanout", [g.url for g in gws], members, "--proto",
                           "channel", "--room", channel, "--rate", rate, "--duration", f"{d}s",
                           "--warmup", f"{w}s", "--drain", "10s", "--connect-rate", "5000",
                           "--size", "64", "--user-offset", "6000000",
                           cpu={"gateway1": gws[0], "gateway2": gws[1], "processor": pr})
            r1 = ctx.metric(gws, "wsgate_gateway_outbound_records_total")
            # Subscribes are answered by the gateway: every outbound record is a publication's.
            res["kafka_per_msg"] = (r1 - r0) / max(1, res["run"]["sent"])
            res["costs"] = per_publication(res, gws, pr)
            return res

        if ctx.quick:
            res = run_at(5)
            if res["run"]["received_measured"] == 0:
                raise BenchError(f"quick channel fan-out delivered nothing: {res['run']}")
            return {"quick": fanout_summary([res]), "costs": res["costs"]}

        def try_rate(rate):
            ctx.sample_load("channels")
            res = run_at(rate)
            return sustained(res, p99_max_ms=1000.0), res
        best, _, trials = search_rate(f"wsgate channel fan-out, {members} subscribers "
                                      "(publications/s)", 3, try_rate, limit=1000)
        confirm = [run_at(best) for _ in range(ctx.repeats)] if best else []
        return {"best": best, "members": members, "trials": summarize_trials(trials),
                "confirm": fanout_summary(confirm) if confirm else None,
                "costs": [c["costs"] for c in confirm]}
    finally:
        for p in reversed(procs):
            p.stop()
