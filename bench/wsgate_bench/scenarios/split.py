"""(c') The gateway's CPU split per frame in and per reply out (issue 18), at fixed rates, all in
one invocation: (a) lws_echo --sink (bare libwebsockets receive), (b) lws_echo (receive + write),
(c) the gateway with no processor (frames in -> Kafka only) and (d) the gateway with an echo
processor on the direct reply path. Per frame in = (c)'s gateway; per reply out = (d) - (c);
bare libwebsockets' per frame out = (b) - (a), the floor one small loopback write costs here.
Each window also counts the gateway's system calls (perf stat on its pid), and in (d) those on
the direct socket alone."""

import os
import subprocess
import time

from ..common import ROUNDTRIP_CONNS, BenchError, log
from ..search import echo_args
from ..stats import median
from .roundtrip import direct_flags, settle

RATES = (5000, 20000)
QUICK_RATE = 500
# The gateway's calls counted per window (perf stat -e syscalls:sys_enter_NAME -p PID).
SYSCALLS = ("sendto", "recvfrom", "epoll_wait", "epoll_ctl", "writev", "write", "read",
            "getsockopt", "futex", "poll")
# Counted again on the direct socket only (a tracepoint filter on its descriptor).
DIRECT_SYSCALLS = ("recvfrom", "sendto")


def perf_ok():
    try:
        return subprocess.run(["perf", "stat", "-e", "syscalls:sys_enter_sendto", "--", "true"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def socket_fd(pid, port):
    """The descriptor of pid's established TCP socket whose local port is port, or None."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                for line in list(f)[1:]:
                    col = line.split()
                    if col[3] == "01" and int(col[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(col[9])
        except OSError:
            pass
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        try:
            link = os.readlink(f"{fds}/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return int(fd)
    return None


def perf_stat_start(ctx, pid, seconds, direct_fd=None):
    """perf stat counting the gateway's calls for seconds (in the background); perf_stat_read()
    returns them."""
    out = ctx.raw / f"perf-stat-{pid}-{time.monotonic_ns()}.csv"
    argv = ["perf", "stat", "-x", ",", "-o", str(out), "-p", str(pid)]
    for name in SYSCALLS:
        argv += ["-e", f"syscalls:sys_enter_{name}"]
    if direct_fd is not None:
        for name in DIRECT_SYSCALLS:
            argv += ["-e", f"syscalls:sys_enter_{name}", "--filter", f"fd == {direct_fd}"]
    argv += ["--", "sleep", f"{seconds:.2f}"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def perf_stat_read(started, direct):
    proc, out = started
    if proc.wait(60) != 0 or not out.exists():
        return None
    counts = []
    for line in out.read_text().splitlines():
        col = line.split(",")
        if len(col) > 2 and col[2].startswith("syscalls:"):
            counts.append(int(col[0]) if col[0].isdigit() else 0)
    names = list(SYSCALLS) + ([f"direct {n}" for n in DIRECT_SYSCALLS] if direct else [])
    return dict(zip(names, counts)) if len(counts) == len(names) else None


def window(ctx, name, url, rate, conns, counters, cpu, servers=(), auth="jwt", syscalls=None):
    """One open-loop run at rate; over its measured window: each counter's growth per second,
    the CPU µs of each process in cpu (and servers) per message of counters' first, and with
    syscalls=(pid, direct_fd) the gateway's calls per message."""
    d, w = (3, 1) if ctx.quick else (7, 2)
    ctx.sample_load("split")
    p = ctx.load_bg(name, "echo", [url], conns, *echo_args(ctx, rate, duration=d, warmup=w),
                    "--drain", "1s", auth=auth)
    ctx.wait_phase(p)
    time.sleep(0.2 + w)
    span = max(0.5, d - w - 0.5)
    c0, m0, u0 = {k: f() for k, f in counters.items()}, time.monotonic(), ctx.cpu_of(cpu, servers)
    st = perf_stat_start(ctx, syscalls[0], span, syscalls[1]) if syscalls else None
    time.sleep(span)
    c1, m1, u1 = {k: f() for k, f in counters.items()}, time.monotonic(), ctx.cpu_of(cpu, servers)
    res = ctx.load_result(p)
    grown = {k: c1[k] - c0[k] for k in c0}
    per = max(1, grown[next(iter(counters))])
    out = {"rate": rate, "per_s": {k: v / (m1 - m0) for k, v in grown.items()},
           "cpu_us": {k: (u1[k] - u0[k]) * 1e6 / per for k in u0},
           "latency_ms": res["run"]["latency_ms"], "loss": res["run"]["loss_fraction"],
           "dropped": res["run"]["dropped"], "cmd": p.cmd}
    if st:
        calls = perf_stat_read(st, syscalls[1] is not None)
        # perf counts over its own sleep, about the window: per message at the measured rate.
        out["syscalls"] = {k: v / (per / (m1 - m0) * span) for k, v in calls.items()} \
            if calls else None
    log(f"split {name} at {rate}/s: {out['per_s']}, CPU µs {out['cpu_us']}")
    return out


def summary(runs):
    """The runs of one part at one rate: each figure the median (latency: of the run with the
    median p99), the runs kept."""
    if len(runs) == 1:
        return runs[0]
    out = dict(sorted(runs, key=lambda r: r["latency_ms"].get("p99") or 0)[len(runs) // 2])
    for field in ("per_s", "cpu_us", "syscalls"):
        if all(r.get(field) for r in runs):
            out[field] = {k: median([r[field][k] for r in runs]) for k in runs[0][field]}
    out["runs"] = runs
    return out


def rates(ctx):
    return (QUICK_RATE,) if ctx.quick else RATES


def conns_of(ctx):
    return 50 if ctx.quick else ctx.scaled(ROUNDTRIP_CONNS)


def bare(ctx, sink):
    """(a) or (b) at each rate."""
    lws = ctx.start_lws_echo(0, sink=sink)
    try:
        return {str(r): summary([window(
            ctx, "split-sink" if sink else "split-echo", lws.url, r, conns_of(ctx),
            {"frames": lambda: ctx.lws_received(lws)}, {"lws_echo": lws}, auth="none")
            for _ in range(ctx.repeats)]) for r in rates(ctx)}
    finally:
        lws.stop()


def gateways(ctx, trace, gw_extra=(), pr_extra=()):
    """(c) and (d), their windows alternated (c, d, c, d... per rate) so that both see the same
    neighbours on a shared box. (c): gateway 1, its direct listener included (so the same
    linger.ms as (d)), no processor: frames in -> Kafka. (d): gateway 0 and an echo processor on
    the direct reply path."""
    procs = []
    try:
        t_c = ctx.topics("split-in")
        c_flags, _ = direct_flags(ctx, 1)
        gc = ctx.start_gateway(1, t_c, ctx.unique("split-in") + ":", [*c_flags, *gw_extra])
        procs.append(gc)
        t_d = ctx.topics("split-rt")
        prefix = ctx.unique("split-rt") + ":"
        d_flags, pflags = direct_flags(ctx, 0)
        gd = ctx.start_gateway(0, t_d, prefix, [*d_flags, *gw_extra])
        procs.append(gd)
        pr = ctx.start_processor(0, t_d, prefix, "echo", ctx.unique("split-rt-group"),
                                 [*pflags, *pr_extra])
        procs.append(pr)
        ctx.load("split-warmup", "echo", [gd.url], conns_of(ctx),
                 *echo_args(ctx, 500, duration=3, warmup=1))
        if ctx.metric([pr], "wsgate_processor_direct_frames_total") < 1:
            raise BenchError("the processor sent nothing on the direct path")

        def c_window(r):
            return window(ctx, "split-gw", gc.url, r, conns_of(ctx), {
                "frames_in": lambda: ctx.metric([gc], "wsgate_gateway_kafka_delivered_total")},
                {"gateway": gc}, ("kafka", "redis"), syscalls=(gc.pid, None) if trace else None)

        def d_window(r):
            settle(ctx, pr)
            dfd = socket_fd(gd.pid, int(d_flags[1].rsplit(":", 1)[1])) if trace else None
            return window(ctx, "split-direct", gd.url, r, conns_of(ctx), {
                "frames_in": lambda: ctx.metric([gd], "wsgate_gateway_kafka_delivered_total"),
                "replies_out": lambda: ctx.metric([gd], "wsgate_gateway_direct_frames_total"),
                "acks": lambda: ctx.metric([gd], "wsgate_gateway_direct_acks_total")},
                {"gateway": gd, "processor": pr}, ("kafka", "redis"),
                syscalls=(gd.pid, dfd) if trace else None)
        out_c, out_d = {}, {}
        for r in rates(ctx):
            cs, ds = [], []
            for _ in range(ctx.repeats):
                cs.append(c_window(r))
                ds.append(d_window(r))
            out_c[str(r)], out_d[str(r)] = summary(cs), summary(ds)
            out_d[str(r)]["fallbacks"] = ctx.metric([pr],
                                                   "wsgate_processor_direct_fallbacks_total")
        return out_c, out_d
    finally:
        for p in reversed(procs):
            p.stop()


def kept_up(v):
    """An echo part whose replies did not queue (p50 <= 20 ms, loss <= 0.1 %): a saturated run's
    CPU per message is lower (bigger reads and writes), so no difference is taken from it."""
    return bool(v) and v["loss"] <= 0.001 and (v["latency_ms"].get("p50") or 1e9) <= 20


def derive(out):
    """Per rate: per frame in, per reply out, the bare-lws write floor (µs); None where a part it
    needs did not keep up."""
    der = {}
    for r in out.get("gateway", {}):
        def cpu(part, name):
            v = out.get(part, {}).get(r, {})
            if part in ("lws_echo", "direct") and not kept_up(v):
                return None
            return v.get("cpu_us", {}).get(name)
        c, d = cpu("gateway", "gateway"), cpu("direct", "gateway")
        a, b = cpu("lws_sink", "lws_echo"), cpu("lws_echo", "lws_echo")
        der[r] = {"frame_in": c, "reply_out": d - c if c is not None and d is not None else None,
                  "lws_frame_out": b - a if a is not None and b is not None else None,
                  "lws_frame_in": a}
    return der


def run(ctx):
    trace = perf_ok()
    if not trace:
        log("split: perf stat cannot count system calls here; CPU only")
    out = {"rates": list(rates(ctx)), "conns": conns_of(ctx), "syscalls_counted": trace}
    out["lws_sink"] = bare(ctx, True)
    out["lws_echo"] = bare(ctx, False)
    out["gateway"], out["direct"] = gateways(ctx, trace)
    out["derived"] = derive(out)
    return out
