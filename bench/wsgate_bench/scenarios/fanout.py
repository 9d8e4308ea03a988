"""(d) Room fan-out: a chat room of 10k members over 2 gateways (deliveries/s, Kafka records per
room message), with resume on and off; nchan's publish fan-out to as many subscribers."""

from ..common import FANOUT_MEMBERS, RUN_S, WARMUP_S, BenchError
from ..search import search_rate, sustained
from ..stats import fanout_summary, summarize_trials

ROOM_NS = ["--channel-namespace", "room=history_size=1000,history_ttl=10m,presence=true,subscribe=handler"]


def run(ctx):
    out = {}
    members = 20 if ctx.quick else ctx.scaled(FANOUT_MEMBERS)
    # The default, then the same room with resume off (--resume-window 0): every delivery to a
    # user is otherwise also stored in the user's replay stream in Redis, which is where most of
    # a delivery's CPU goes (findings in docs/BENCHMARKS.md).
    variants = [("wsgate", [])]
    if not ctx.quick:
        variants.append(("wsgate_noresume", ["--resume-window", "0"]))
    for key, proc_extra in variants:
        out[key] = wsgate(ctx, members, proc_extra)
    if not ctx.quick and not ctx.args.no_peers:
        out["nchan"] = nchan(ctx, members)
    return out


def searched(ctx, label, start, run_at, members):
    """The highest room rate run_at sustains (p99 under 1 s), confirmed by --repeats runs."""
    def try_rate(rate):
        ctx.sample_load("fanout")
        res = run_at(rate)
        return sustained(res, p99_max_ms=1000.0), res
    best, _, trials = search_rate(label, start, try_rate, limit=1000)
    confirm = [run_at(best) for _ in range(ctx.repeats)] if best else []
    return {"best": best, "members": members, "trials": summarize_trials(trials),
            "confirm": fanout_summary(confirm) if confirm else None}


def wsgate(ctx, members, proc_extra):
    t = ctx.topics("fanout")
    prefix = ctx.unique("fan") + ":"
    procs = []
    room = ctx.unique("room").replace("-", "_")
    try:
        # The chat handler's rooms are channels room:<R> (docs/HANDLERS.md): the namespace
        # scripts/cluster and k8s/base give them, history on.
        gws = [ctx.start_gateway(i, t, prefix, extra=ROOM_NS) for i in range(2)]
        procs += gws
        pr = ctx.start_processor(0, t, prefix, "chat", ctx.unique("fan-group"),
                                 extra=[*ROOM_NS, *proc_extra])
        procs.append(pr)

        def run_at(rate):
            d, w = (3, 1) if ctx.quick else (RUN_S, WARMUP_S)
            r0 = ctx.metric(gws, "wsgate_gateway_outbound_records_total")
            res = ctx.load("fanout", "fanout", [g.url for g in gws], members, "--proto", "chat",
                           "--room", room, "--rate", rate, "--duration", f"{d}s", "--warmup",
                           f"{w}s", "--drain", "10s", "--connect-rate", "5000", "--size", "64",
                           "--user-offset", "5000000",
                           cpu={"gateway1": gws[0], "gateway2": gws[1], "processor": pr})
            r1 = ctx.metric(gws, "wsgate_gateway_outbound_records_total")
            # Each join is answered by two outbound records: the reply and the subscribe.
            res["kafka_per_msg"] = ((r1 - r0 - 2 * res["connect"]["ready"]) /
                                    max(1, res["run"]["sent"]))
            return res

        if ctx.quick:
            res = run_at(5)
            if res["run"]["received_measured"] == 0:
                raise BenchError(f"quick fan-out delivered nothing: {res['run']}")
            return {"quick": fanout_summary([res])}
        label = "wsgate fan-out (room msgs/s)" + (
            f" with processor {' '.join(proc_extra)}" if proc_extra else "")
        return {**searched(ctx, label, 3, run_at, members), "processor_extra": proc_extra}
    finally:
        for p in reversed(procs):
            p.stop()


def nchan(ctx, members):
    """The peer: WebSocket subscribers on one channel, a WebSocket publisher, 2 workers."""
    peer = ctx.peer("nchan")
    if peer.missing():
        return {"skipped": peer.missing()}
    ng = peer.start(workers=2)
    try:
        def run_at(rate):
            return ctx.load("nchan-fanout", "fanout", [ng.sub_url], members, "--sender-url",
                            ng.pub_url, "--rate", rate, "--duration", f"{RUN_S}s", "--warmup",
                            f"{WARMUP_S}s", "--drain", "10s", "--connect-rate", "5000", "--size",
                            "64", auth="none", cpu={"nginx workers": lambda: ng.cpu_s(True)},
                            servers=())
        return searched(ctx, "nchan fan-out (msgs/s)", 10, run_at, members)
    finally:
        ng.stop()
