"""Recovery of the direct reply path after a burst far above capacity (issue 18, session 8): the
round trip's direct pair (gateway linger.ms 5, as in roundtrip's search) takes 85,429 msgs/s for a
trial (the rate search's first failing step), then, once the processor's lag is 0 (roundtrip's
settle), 14,238/s (25 % of the 56,953/s the direct path sustains): the point that read p50 6.3 s
and 66 % lost in session 7. Each repeat is the point alone (the baseline on this box, its load
included), one burst, and the point again; the processor's fallbacks by reason, the frames it
re-produced to Kafka and the gateway's barrier waits are counted over each phase, and sampled
every 0.5 s during it (logged). Only with --only overload (writes no block: use --out FILE)."""

import re
import threading
import time

from wsgate_procs import http_get

from ..common import ROUNDTRIP_CONNS, log
from ..search import echo_args
from ..stats import latency_summary
from .roundtrip import hops_from, settle, start_direct_pair

BURST, POINT = 85429, 14238

WATCH = {"pr": ["wsgate_processor_direct_fallbacks_total", "wsgate_processor_direct_reproduced_total",
                "wsgate_processor_direct_barriers_total", "wsgate_processor_direct_frames_total",
                "wsgate_processor_consumer_lag", "wsgate_processor_direct_peers"],
         "gw": ["wsgate_gateway_direct_barrier_waits_total",
                "wsgate_gateway_direct_barrier_abandoned_total", "wsgate_gateway_direct_acks_total",
                "wsgate_gateway_outbound_records_total", "wsgate_gateway_closes_total",
                "wsgate_gateway_outbound_dropped_total"]}


def series(url, names):
    """{name{labels}: value} of the watched metrics in one /metrics answer."""
    out = {}
    text = http_get(url)[1] or ""
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})?\s+(\S+)$", line)
        if m and m.group(1) in names:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def snapshot(gw, pr):
    return {**series(pr.metrics_url, WATCH["pr"]), **series(gw.metrics_url, WATCH["gw"])}


def delta(a, b):
    return {k: b[k] - a.get(k, 0) for k in b if b[k] != a.get(k, 0) and "lag" not in k
            and "peers" not in k}


class Sampler:
    """Logs the watched metrics' changes every 0.5 s while a phase runs."""

    def __init__(self, gw, pr, name):
        self.gw, self.pr, self.name = gw, pr, name
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        t0, prev = time.monotonic(), snapshot(self.gw, self.pr)
        while not self.stop.wait(0.5):
            cur = snapshot(self.gw, self.pr)
            short = {k.replace("wsgate_processor_", "p.").replace("wsgate_gateway_", "g."): v
                     for k, v in delta(prev, cur).items()}
            lag = sum(v for k, v in cur.items() if k.startswith("wsgate_processor_consumer_lag"))
            log(f"  {self.name} +{time.monotonic() - t0:4.1f}s lag {lag:.0f} {short}")
            prev = cur

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()


def run(ctx):
    conns = ctx.scaled(ROUNDTRIP_CONNS)
    gw, pr = start_direct_pair(ctx, "ovl", ["-X", "linger.ms=5"])
    out = {"burst": BURST, "point": POINT, "runs": []}
    try:
        def run_at(rate, name):
            with Sampler(gw, pr, name):
                return ctx.load(f"overload-{name}", "echo", [gw.url], conns,
                                *echo_args(ctx, rate), *hops_from(gw, pr),
                                cpu={"gateway": gw, "processor": pr})
        run_at(500, "warmup")
        points, bases = [], []
        for i in range(ctx.repeats):
            settle(ctx, pr)
            base = run_at(POINT, "baseline")  # the same point on this box, no burst before it
            m0 = snapshot(gw, pr)
            b = run_at(BURST, "burst")
            m1 = snapshot(gw, pr)
            t0 = time.monotonic()
            settle(ctx, pr)
            settled_s = time.monotonic() - t0
            m2 = snapshot(gw, pr)
            r = run_at(POINT, "point")
            m3 = snapshot(gw, pr)
            points.append(r)
            bases.append(base)
            one = {"baseline_summary": latency_summary([base], POINT),
                   "burst_loss": b["run"]["loss_fraction"], "settle_s": round(settled_s, 1),
                   "burst": delta(m0, m1), "settle": delta(m1, m2), "point": delta(m2, m3),
                   "point_summary": latency_summary([r], POINT),
                   "point_run": {k: v for k, v in r["run"].items() if not isinstance(v, dict)}}
            out["runs"].append(one)
            lat, blat = r["run"]["latency_ms"], base["run"]["latency_ms"]
            log(f"overload {i + 1}: baseline {POINT}/s p50 {blat['p50']:.2f} ms, p99 "
                f"{blat['p99']:.2f} ms, loss {base['run']['loss_fraction']:.3f}")
            log(f"overload {i + 1}: after the burst (settled in {settled_s:.1f} s), {POINT}/s: "
                f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, "
                f"loss {r['run']['loss_fraction']:.3f} ({out['runs'][-1]['point_run']}); "
                f"burst {delta(m0, m1)}; "
                f"settle {delta(m1, m2)}; point {delta(m2, m3)}")
        out["point_summary"] = latency_summary(points, POINT)
        out["baseline_summary"] = latency_summary(bases, POINT)
    finally:
        pr.stop()
        gw.stop()
    return out
