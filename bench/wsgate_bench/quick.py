"""--quick: the machinery, not the speed (scripts/test runs it). Every part must come up, connect
and answer: lws_echo echoes, a gateway holds 50 idle connections, a round trip through Kafka and
an echo processor comes back, with its per-hop breakdown, the split scenario's four parts each
measure something, sends posted to wsgate-api reach 50
connected clients, every one, and a channel's publications reach its 20 subscribers on 2
gateways with one record per gateway. Each check prints a TAP line; main prints the "N passed,
N failed" line scripts/test counts. `--quick --only a,b` runs only the checks named (CHECKS)."""

import json
import subprocess

from wsgate_procs import ProcError

from .common import BenchError, log
from .scenarios import api, channels, split
from .scenarios.roundtrip import hops_from, start_direct_pair
from .search import echo_args, sustained

# The checks, in the order they run: the name --quick --only takes, the TAP line's name.
CHECKS = [("lws_echo", "bench_quick_lws_echo"), ("idle", "bench_quick_gateway_idle"),
          ("roundtrip", "bench_quick_roundtrip"),
          ("roundtrip_direct", "bench_quick_roundtrip_direct"), ("split", "bench_quick_split"),
          ("api", "bench_quick_api"),
          ("channels", "bench_quick_channels")]


def chosen(only):
    """The names of the checks --only picks (all without it); BenchError on an unknown one."""
    names = [n for n, _ in CHECKS]
    if not only:
        return names
    picked = [s.strip() for s in only.split(",") if s.strip()]
    for s in picked:
        if s not in names:
            raise BenchError(f"--quick --only: unknown check {s} ({', '.join(names)})")
    return [n for n in names if n in picked]


def run(ctx, results, only=None):
    """Appends one bool per check chosen (chosen(only)) to results, in order (kept when a set-up
    step raises)."""
    picked = chosen(only)
    tap = dict(CHECKS)

    def check(key, fn):
        if key not in picked:
            return True
        name = tap[key]
        try:
            fn()
        except (ProcError, OSError, subprocess.SubprocessError, KeyError, ValueError) as e:
            results.append(False)
            print(f"not ok {len(results)} - {name}", flush=True)
            log(f"quick: {name}: {e}")
            return False
        results.append(True)
        print(f"ok {len(results)} - {name}", flush=True)
        return True

    def lws_echo():
        lws = ctx.start_lws_echo(0)
        try:
            r = ctx.load("quick-lws", "echo", [lws.url], 10, *echo_args(ctx, 200), auth="none")
            if r["connect"]["ready"] != 10 or not sustained(r):
                raise BenchError(f"lws_echo echo failed: {json.dumps(r['connect'])} "
                                 f"{json.dumps(r['run'])}")
        finally:
            lws.stop()
    check("lws_echo", lws_echo)
    procs = []
    try:
        gw = t = prefix = None

        def gateway():
            """The topics and gateway of the idle and round-trip checks, made by the first that
            runs."""
            nonlocal gw, t, prefix
            if t is None:
                t, prefix = ctx.topics("quick"), ctx.unique("quick") + ":"
            if gw is None:
                gw = ctx.start_gateway(0, t, prefix, extra=["--insecure-dev-user"])
                procs.append(gw)
            return gw

        def idle():
            gateway()
            r = ctx.load("quick-idle", "idle", [gw.url], 50, "--hold", "1s", auth="dev")
            if r["connect"]["ready"] != 50 or r["held"]["held_at_end"] != 50:
                raise BenchError(f"50 idle connections not held: "
                                 f"{json.dumps(r['connect'])} {json.dumps(r['held'])}")

        def echo():
            gateway()
            pr = ctx.start_processor(0, t, prefix, "echo", ctx.unique("quick-group"))
            procs.append(pr)
            r = ctx.load("quick-echo", "echo", [gw.url], 20, *echo_args(ctx, 100),
                         *hops_from(gw, pr))
            if r["run"]["received_measured"] == 0 or not sustained(r, p99_max_ms=5000.0):
                raise BenchError(f"echo through Kafka failed: {json.dumps(r['run'])}")
            hops = r.get("hops") or {}
            # Every hop of a round trip; the commands topic's hop has nothing to count here.
            frame_hops = {k: h for k, h in hops.items() if "command" not in k}
            if len(frame_hops) < 4 or not all(h["count"] > 0 for h in frame_hops.values()):
                raise BenchError(f"no per-hop breakdown: {json.dumps(hops)}")
            log(f"quick: echo via Kafka p50 {r['run']['latency_ms']['p50']:.1f} ms, "
                f"{r['run']['received_measured']} of {r['run']['expected_measured']} replies")
        check("idle", idle)
        check("roundtrip", echo)
    finally:
        for p in reversed(procs):
            p.stop()

    def echo_direct():
        gw, pr = start_direct_pair(ctx, "quick-direct")
        try:
            r = ctx.load("quick-echo-direct", "echo", [gw.url], 20, *echo_args(ctx, 100),
                         *hops_from(gw, pr))
            sent = ctx.metric([pr], "wsgate_processor_direct_frames_total")
            if r["run"]["received_measured"] == 0 or not sustained(r, p99_max_ms=5000.0) or \
                    sent < 1:
                raise BenchError(f"echo through the direct path failed ({sent:.0f} frames sent "
                                 f"direct): {json.dumps(r['run'])}")
            log(f"quick: echo via the direct path p50 {r['run']['latency_ms']['p50']:.1f} ms, "
                f"{sent:.0f} replies sent direct")
        finally:
            pr.stop()
            gw.stop()
    check("roundtrip_direct", echo_direct)

    def split_parts():
        r = split.run(ctx)
        d = r["derived"][str(split.QUICK_RATE)]
        if any(d.get(k) is None for k in ("frame_in", "reply_out", "lws_frame_out")) or \
                r["direct"][str(split.QUICK_RATE)]["per_s"]["replies_out"] <= 0:
            raise BenchError(f"split: a part measured nothing: {json.dumps(d)}")
        log(f"quick: split per frame in {d['frame_in']:.1f} µs, per reply out "
            f"{d['reply_out']:.1f} µs (a short low-rate run: not a measurement)")
    check("split", split_parts)

    def api_send():
        r = api.run(ctx)["quick"]
        log(f"quick: API send -> delivery p50 {r['p50']:.1f} ms, {r['received']} of "
            f"{r['expected']} deliveries")
    check("api", api_send)
    # After the gateways above have stopped: the channel check's gateways take ports 0 and 1.
    check("channels", lambda: channels.quick(ctx))
