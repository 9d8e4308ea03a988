"""(c) Round trip through Kafka: gateway -> Kafka -> echo processor -> Kafka -> gateway. Highest
sustained rate, latency at 25/50/75 % of it and at 1k, 5k and 10k msgs/s, the 10k point with other
linger.ms; the same with the direct reply path (processor -> gateway over TCP, docs/GATEWAY.md
"Direct replies"): its highest rate, 1k/5k/10k, and those points with the gateway's linger.ms at
5, 1 and 0 (its produce is the only Kafka hop left); Centrifugo's client publish round trip
through its Redis engine (two nodes). Every wsgate run records the per-hop breakdown from the
daemons' histograms (wsgate-load --hops-from)."""

import secrets
import time

from ..common import ROUNDTRIP_CONNS, BenchError, log
from ..search import echo_args, search_rate, sustained
from ..stats import latency_summary, summarize_trials


def latency_points(ctx, name, run_at, best, labels=("25%", "50%", "75%", "1k", "5k", "10k")):
    pts = {}
    for label, rate in [("25%", best * 0.25), ("50%", best * 0.5), ("75%", best * 0.75),
                        ("1k", 1000), ("5k", 5000), ("10k", 10000)]:
        if rate < 1 or label not in labels:
            continue
        rs = [run_at(int(rate)) for _ in range(ctx.repeats)]
        pts[label] = latency_summary(rs, int(rate))
        log(f"{name} at {int(rate)}/s: p50 {pts[label]['p50']:.2f} ms, "
            f"p99 {pts[label]['p99']:.2f} ms")
    return pts


def hops_from(*daemons):
    """wsgate-load's flag for the per-hop breakdown from these daemons' /metrics."""
    return ["--hops-from", ",".join(d.metrics_url for d in daemons)]


def settle(ctx, pr, timeout_s=60):
    """Waits until the processor has handled every inbound record (its lag gauge at 0), at most
    timeout_s: a trial the previous one overloaded would otherwise start behind its backlog and
    measure it (a direct-path point after a 85k/s trial read p50 6.9 s, 72 % lost)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ctx.metric([pr], "wsgate_processor_consumer_lag") <= 0:
            return
        time.sleep(0.5)
    log(f"processor lag not 0 after {timeout_s} s; measuring anyway")


def try_at(ctx, run_at, rate):
    ctx.sample_load("roundtrip")
    res = run_at(rate)
    return sustained(res), res


def run(ctx):
    out = {}
    t = ctx.topics("rt")
    prefix = ctx.unique("rt") + ":"
    procs = []
    conns = 50 if ctx.quick else ctx.scaled(ROUNDTRIP_CONNS)
    try:
        gw = ctx.start_gateway(0, t, prefix)
        procs.append(gw)
        pr = ctx.start_processor(0, t, prefix, "echo", ctx.unique("rt-group"))
        procs.append(pr)

        def run_at(rate):
            settle(ctx, pr)
            return ctx.load("roundtrip", "echo", [gw.url], conns, *echo_args(ctx, rate),
                            *hops_from(gw, pr), cpu={"gateway": gw, "processor": pr})
        run_at(500)  # warm-up: producer ids, group assignment, metadata
        if ctx.quick:
            r = run_at(200)
            if r["run"]["received_measured"] == 0 or not sustained(r):
                raise BenchError(f"quick round trip did not come back: {r['run']}")
            out["wsgate"] = {"quick": latency_summary([r], 200)}
        else:
            best, _, trials = search_rate("wsgate round trip", 7500,
                                          lambda r: try_at(ctx, run_at, r))
            out["wsgate"] = {"best": best, "trials": summarize_trials(trials),
                             "points": latency_points(ctx, "wsgate round trip", run_at, best)
                             if best else {}}
    finally:
        for p in reversed(procs):
            p.stop()
    # With --gateway-arg / --processor-arg the knob under test could override the linger.ms this
    # table sets: the table belongs to runs with the defaults only.
    if not ctx.quick and not (ctx.args.gateway_arg or ctx.args.processor_arg):
        out["linger"] = linger(ctx, conns)
    if not ctx.quick:
        out["wsgate-direct"] = direct(ctx, conns)
    if not ctx.quick and not ctx.args.no_peers:
        out["centrifugo"] = centrifugo(ctx)
    return out


def linger(ctx, conns):
    """What Kafka batching costs and saves: the 10k msgs/s point with the producers' linger.ms
    (gateway and processor) at 0 and 20 instead of the default 5."""
    out = {}
    for ms in (0, 20):
        t = ctx.topics(f"rt-linger{ms}")
        prefix = ctx.unique("rtl") + ":"
        procs = []
        try:
            kafka = ["-X", f"linger.ms={ms}"]
            gw = ctx.start_gateway(0, t, prefix, kafka)
            procs.append(gw)
            pr = ctx.start_processor(0, t, prefix, "echo", ctx.unique("rtl-group"), kafka)
            procs.append(pr)

            def run_at(rate):
                ctx.sample_load("roundtrip")
                return ctx.load("roundtrip-linger", "echo", [gw.url], conns,
                                *echo_args(ctx, rate), *hops_from(gw, pr),
                                cpu={"gateway": gw, "processor": pr})
            run_at(500)
            out[str(ms)] = latency_summary([run_at(10000) for _ in range(ctx.repeats)], 10000)
            log(f"linger.ms={ms} at 10000/s: p50 {out[str(ms)]['p50']:.2f} ms")
        finally:
            for p in reversed(procs):
                p.stop()
    return out


def direct_flags(ctx, i):
    """The gateway's and the processor's flags for the direct reply path; the gateway listens on
    base+800+i."""
    f = ctx.run_dir / "direct-secret"
    if not f.exists():
        f.write_text(secrets.token_hex(24) + "\n")
        f.chmod(0o600)
    return (["--direct-listen", f"127.0.0.1:{ctx.port(800 + i)}", "--direct-secret-file", f],
            ["--direct-secret-file", f])


def start_direct_pair(ctx, scn, gw_extra=()):
    """A gateway with its direct listener and an echo processor that uses it; both returned."""
    t = ctx.topics(scn)
    prefix = ctx.unique(scn) + ":"
    gflags, pflags = direct_flags(ctx, 0)
    gw = ctx.start_gateway(0, t, prefix, [*gflags, *gw_extra])
    try:
        pr = ctx.start_processor(0, t, prefix, "echo", ctx.unique(f"{scn}-group"), pflags)
    except BaseException:
        gw.stop()
        raise
    return gw, pr


def direct(ctx, conns):
    """The direct reply path beside the Kafka one: its highest sustained rate and 1k/5k/10k, then
    those points with the gateway's linger.ms at 1 and 0 (the default 5 is the first set)."""
    out = {}
    # linger.ms 5 named: --direct-listen alone now selects 1, which the sweep below measures.
    gw, pr = start_direct_pair(ctx, "rtd", ["-X", "linger.ms=5"])
    try:
        def run_at(rate):
            settle(ctx, pr)
            return ctx.load("roundtrip-direct", "echo", [gw.url], conns, *echo_args(ctx, rate),
                            *hops_from(gw, pr), cpu={"gateway": gw, "processor": pr})
        run_at(500)  # warm-up, and the processor's direct connection comes up
        if ctx.metric([pr], "wsgate_processor_direct_frames_total") < 1:
            raise BenchError("the processor sent nothing on the direct path")
        best, _, trials = search_rate("wsgate-direct round trip", 7500,
                                      lambda r: try_at(ctx, run_at, r))
        out = {"best": best, "trials": summarize_trials(trials),
               "points": latency_points(ctx, "wsgate-direct round trip", run_at, best)
               if best else {},
               "fallbacks": ctx.metric([pr], "wsgate_processor_direct_fallbacks_total")}
    finally:
        pr.stop()
        gw.stop()
    out["gateway_linger"] = {"5": {k: v for k, v in out.get("points", {}).items()
                                   if k in ("1k", "5k", "10k")}}
    for ms in (1, 0):
        gw, pr = start_direct_pair(ctx, f"rtd-linger{ms}", ["-X", f"linger.ms={ms}"])
        try:
            def run_at(rate):
                settle(ctx, pr)
                ctx.sample_load("roundtrip")
                return ctx.load("roundtrip-direct-linger", "echo", [gw.url], conns,
                                *echo_args(ctx, rate), *hops_from(gw, pr),
                                cpu={"gateway": gw, "processor": pr})
            run_at(500)
            out["gateway_linger"][str(ms)] = latency_points(
                ctx, f"wsgate-direct gateway linger.ms={ms}", run_at, 0, ("1k", "5k", "10k"))
            if ms == 1:  # the setting that meets the latency goals: what does it sustain?
                best1, _, _ = search_rate("wsgate-direct round trip, gateway linger.ms=1", 7500,
                                          lambda r: try_at(ctx, run_at, r))
                out["gateway_linger_best"] = {"1": best1}
        finally:
            pr.stop()
            gw.stop()
    return out


def centrifugo(ctx):
    """The peer: its client publish to a channel the same connection is subscribed to."""
    peer = ctx.peer("centrifugo")
    if peer.missing():
        return {"skipped": peer.missing()}
    nodes = peer.start(2)
    try:
        def run_at(rate):
            return ctx.load("centrifugo-rt", "echo", [n.url for n in nodes],
                            ctx.scaled(ROUNDTRIP_CONNS), "--proto", "centrifugo", "--room", "rt",
                            *echo_args(ctx, rate),
                            cpu={f"centrifugo{i}": n for i, n in enumerate(nodes)},
                            servers=("redis",))
        run_at(500)
        best, _, trials = search_rate("centrifugo round trip", 5000,
                                      lambda r: try_at(ctx, run_at, r))
        # The points both systems are measured at (the time of a whole run does not allow all
        # five for both).
        pts = latency_points(ctx, "centrifugo round trip", run_at, best,
                             ("1k", "5k", "10k")) if best else {}
        return {"best": best, "trials": summarize_trials(trials), "points": pts}
    finally:
        peer.stop()
