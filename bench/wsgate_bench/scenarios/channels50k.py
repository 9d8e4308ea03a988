"""(h') 50,000 subscribers of one channel across three gateways (issue 15): held and receiving for
CHANNELS50K_HOLD_S at a low publication rate, every delivery counted by the load generator, zero
lost. One run (not in a full run's repeats: it is a capacity check, not a speed figure).

A process may hold 20,000 descriptors here: the subscribers are spread over 4 wsgate-load worker
processes (12,500 each) and 3 gateways (~16,667 each, under a gateway's default
--max-connections: the descriptor limit minus 256 reserved minus --max-handshakes 1024). The
subscribes are paced by the connect rate: each connection subscribes once upgraded."""

from ..common import CHANNELS50K, CHANNELS50K_HOLD_S, log
from ..search import sustained
from .channels import Cluster, costs_summary, windowed

GATEWAYS = 3
LOAD_PROCS = 4
RATE = 1  # publications/s: 50,000 deliveries/s
CONNECT_RATE = 2500


def run(ctx):
    members = 30 if ctx.quick else ctx.scaled(CHANNELS50K)
    hold = 3 if ctx.quick else CHANNELS50K_HOLD_S
    ctx.sample_load("channels50k")
    cl = Cluster(ctx, GATEWAYS, "channels50k")
    try:
        res = windowed(ctx, "channels50k", [g.url for g in cl.gws], members, RATE,
                       ["--proto", "channel", "--room", cl.channel(), "--connect-rate",
                        CONNECT_RATE, "--user-offset", "7000000"],
                       cl.cpu(), counters=cl.counters, duration=hold, warmup=2,
                       procs=LOAD_PROCS, connect_timeout=members / CONNECT_RATE * 4 + 60)
        ctx.sample_load("channels50k")
        # What the gateways saw, for a run that lost deliveries: publications they had to fetch
        # from the history, gaps they reported, and their warnings (a lost Redis, a lost slot).
        seen = {k: ctx.metric(cl.gws, f"wsgate_gateway_channel_{k}_total")
                for k in ("filled", "gaps", "held", "deliveries")}
        # A starved gateway's Redis watchdog: ticks it forgave (replies waiting, a late loop),
        # and connection attempts (3 when no gateway lost Redis; docs/notes/hiredis.md).
        seen["redis_watchdog_deferrals"] = sum(
            ctx.metric(cl.gws, f"wsgate_gateway_{m}redis_watchdog_deferrals_total")
            for m in ("", "channel_"))
        seen["redis_connects"] = ctx.metric(cl.gws, "wsgate_gateway_redis_connects_total")
        warnings = [line for g in cl.gws for line in g.log_text().splitlines()
                    if " WARN " in line or " ERROR " in line][-20:]
    finally:
        cl.stop()
    run_, held = res["run"], res["held"]
    out = {"members": members, "gateways": GATEWAYS, "load_procs": LOAD_PROCS, "rate": RATE,
           "hold_s": hold, "ready": res["connect"]["ready"], "failed": res["connect"]["failed"],
           "ramp_s": res["connect"]["seconds"], "held_at_end": held["held_at_end"],
           "closed": held["closed_after_ready"], "receivers": run_["receivers"],
           "sent": run_["sent"], "received": run_["received"],
           "received_measured": run_["received_measured"],
           "expected_measured": run_["expected_measured"], "lost": run_["lost_measured"],
           "p50": run_["latency_ms"]["p50"], "p99": run_["latency_ms"]["p99"],
           "max": run_["latency_ms"]["max"], "deliveries_per_s": run_["rate_measured"],
           "sustained": sustained(res, loss_max=0.0, p99_max_ms=1000.0),
           "costs": costs_summary([res]), "cmd": res["_cmd"], "gateways_saw": seen,
           "gateway_args": list(getattr(ctx.args, "gateway_arg", [])),
           "gateway_warnings": warnings}
    log(f"channels50k: {out['receivers']} subscribers, {out['received_measured']} of "
        f"{out['expected_measured']} deliveries, {out['lost']} lost, p99 {out['p99']:.1f} ms")
    return out
