"""(a) Idle connections: RSS per connection (slope over steps up to ~19.5k) and CPU while holding
them, for one gateway, bare libwebsockets (lws_echo, with and without its keepalive timers),
Centrifugo and nchan."""

import time

from ..common import IDLE_HOLD_S, IDLE_STEPS, log
from ..stats import median, slope, span

PEERS = ("centrifugo", "nchan")


def server(ctx, kind):
    """Starts a fresh server of `kind`; returns (proc, url, measure-children-only, stop)."""
    if kind in ("gateway", "gateway-rx128"):
        t = ctx.topics("idle")
        extra = ["--rx-buffer", "128"] if kind == "gateway-rx128" else []
        p = ctx.start_gateway(0, t, ctx.unique("idle") + ":", extra)
        return p, p.url, False, p.stop
    if kind in ("lws", "lws-nokeepalive"):
        p = ctx.start_lws_echo(0, ping=0 if kind == "lws-nokeepalive" else 30)
        return p, p.url, False, p.stop
    if kind == "centrifugo":
        peer = ctx.peer("centrifugo")
        nodes = peer.start(1)
        return nodes[0], nodes[0].url, False, peer.stop
    if kind == "nchan":
        p = ctx.peer("nchan").start(workers=1)
        return p, p.sub_url, True, p.stop
    raise ValueError(kind)


def measure(ctx, kind):
    steps = [25, 50] if ctx.quick else [ctx.scaled(n) for n in IDLE_STEPS]
    runs = []
    for rep in range(ctx.repeats):
        ctx.sample_load("idle")
        srv, url, children, stop = server(ctx, kind)
        proto = ["--proto", "centrifugo"] if kind == "centrifugo" else []
        auth = "none" if kind in ("lws", "lws-nokeepalive", "nchan") else "jwt"
        loaders = []
        try:
            time.sleep(1.0)
            points = [(0, srv.rss_kib(children))]
            held, t_ramp0, cpu0 = 0, time.monotonic(), srv.cpu_s(children)
            for i, n in enumerate(steps):
                p = ctx.load_bg(f"idle-{kind}", "idle", [url], n - held, "--hold", "900s",
                                "--connect-rate", "5000", "--user-offset", 1000000 * (i + 1),
                                "--room", "idle", *proto, auth=auth)
                loaders.append(p)
                ready, failed = ctx.wait_phase(p)
                held += ready
                time.sleep(2.0 if kind != "centrifugo" else 4.0)
                points.append((held, srv.rss_kib(children)))
            ramp_s = time.monotonic() - t_ramp0
            cpu_ramp = srv.cpu_s(children) - cpu0
            # Hold past one keepalive round (pings every 30 s) and measure the CPU it costs.
            cpu1, t1 = srv.cpu_s(children), time.monotonic()
            time.sleep(2 if ctx.quick else IDLE_HOLD_S)
            cpu_hold = srv.cpu_s(children) - cpu1
            hold_s = time.monotonic() - t1
            rss_end = srv.rss_kib(children)
            alive = srv.alive()
        finally:
            for p in loaders:
                p.stop()
            stop()
        s = slope(points)
        runs.append({"points": points, "slope_kb": s, "bytes_per_conn": s * 1024 if s else None,
                     "held": held, "ramp_s": ramp_s, "cpu_ramp_s": cpu_ramp,
                     "cpu_hold_s": cpu_hold, "hold_s": hold_s, "rss_end_kb": rss_end,
                     "alive": alive, "cmd": loaders[0].cmd if loaders else ""})
        log(f"idle {kind} run {rep + 1}: {held} conns, "
            f"{(s or 0) * 1024:.0f} B/conn, ramp cpu {cpu_ramp:.1f} s, "
            f"hold cpu {cpu_hold:.1f} s/{hold_s:.0f} s")
    return {"runs": runs,
            "bytes_per_conn": median([r["bytes_per_conn"] for r in runs]),
            "bytes_range": span([r["bytes_per_conn"] for r in runs]),
            "held": median([r["held"] for r in runs]),
            "cpu_hold_per_min": median([r["cpu_hold_s"] * 60 / r["hold_s"] for r in runs]),
            "cpu_ramp_s": median([r["cpu_ramp_s"] for r in runs]),
            "ramp_s": median([r["ramp_s"] for r in runs])}


def run(ctx):
    kinds = ["gateway", "gateway-rx128", "lws", "lws-nokeepalive"]
    if not ctx.quick and not ctx.args.no_peers:
        kinds += list(PEERS)
    out = {}
    for kind in kinds:
        why = ctx.peer(kind).missing() if kind in PEERS else None
        out[kind] = {"skipped": why} if why else measure(ctx, kind)
    return out
