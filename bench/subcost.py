#!/usr/bin/env python3
"""What a channel subscription that is never published to costs (docs/BENCHMARKS.md,
"Subscriptions that are never published to").

Two runs per configuration against a PRIVATE redis-server (it is FLUSHALLed and its stats reset):
wsgate-load --mode idle holds --conns connections, first without subscribing (--proto raw), then
each subscribed once (--proto channel, --rooms). The subscription's cost is the difference of
the two, divided by the connections: Redis keys, used_memory, commands and CPU to open, per
minute while idle, to close; the gateways' RSS. With --kill the gateways are SIGKILLed while
holding instead, and the keys left once their lease is gone are counted.

  bench/subcost.py --build build --redis-port 37450 --conns 15000 --rooms 15000 [--presence]

Threads: one.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def redis(args, *cmd):
    out = subprocess.run(["redis-cli", "-p", str(args.redis_port), *cmd], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return out


def info(args, section):
    d = {}
    for line in redis(args, "INFO", section).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            d[k] = v.strip()
    return d


def snapshot(args, gws):
    """Redis keys, memory, CPU seconds, calls per command; the gateways' RSS in bytes."""
    calls = {}
    for k, v in info(args, "commandstats").items():
        if k.startswith("cmdstat_"):
            calls[k[8:]] = int(dict(x.split("=") for x in v.split(","))["calls"])
    cpu = info(args, "cpu")
    rss = 0
    for g in gws:
        if g.poll() is None:
            for line in Path(f"/proc/{g.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
    return {"keys": int(redis(args, "DBSIZE").strip()),
            "mem": int(info(args, "memory")["used_memory"]),
            "cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            "calls": calls, "rss": rss, "t": time.monotonic()}


def delta(a, b):
    calls = {k: b["calls"].get(k, 0) - a["calls"].get(k, 0) for k in b["calls"]}
    return {"keys": b["keys"] - a["keys"], "mem": b["mem"] - a["mem"], "cpu": b["cpu"] - a["cpu"],
            "calls": {k: v for k, v in calls.items() if v}, "rss": b["rss"] - a["rss"],
            "secs": b["t"] - a["t"]}


def metric(url, name):
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return -1
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1


def wait_for(what, pred, timeout):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return
        time.sleep(0.5)
    sys.exit(f"subcost: timed out waiting for {what}")


def start_gateways(args, run):
    gws = []
    for i in range(args.gateways):
        port, http = args.base_port + i, args.base_port + 100 + i
        argv = [str(args.build / "gateway/wsgate-gateway"), "--kafka-brokers", args.kafka,
                "--redis-port", str(args.redis_port), "--listen-addr", "127.0.0.1",
                "--listen-port", str(port), "--http-addr", "127.0.0.1", "--http-port", str(http),
                "--jwt-secret-file", str(args.secret), "--max-upgrades-per-sec", "0",
                "--max-conns-per-addr", "0", "--max-pending-per-addr", "0",
                "--max-upgrades-per-addr", "0", "--rate-msgs", "0", "--rate-bytes", "0",
                "--max-conns-per-user", "0", "--inbound-topic", "chancost.in",
                "--outbound-topic", "chancost.out", "--redis-prefix", "cc:", "--gateway-id",
                f"cc-gw{i}", "--log-level", "warn", "--drain-window", "1s",
                "--drain-grace", "10s", "--redis-timeout", "10s",
                "--channel-namespace", "p=presence=true", *args.gateway_arg]
        log = open(args.run_dir / f"{run}-gw{i}.log", "w")
        g = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        g.url, g.metrics = f"ws://127.0.0.1:{port}/", f"http://127.0.0.1:{http}/metrics"
        gws.append(g)
    try:
        for g in gws:
            wait_for(f"gateway ready (see {args.run_dir}/{run}-gw*.log)",
                     lambda: metric(g.metrics, "wsgate_gateway_connections") >= 0
                     or g.poll() is not None, 60)
            if g.poll() is not None:
                sys.exit(f"subcost: a gateway exited, see {args.run_dir}/{run}-gw*.log")
    except SystemExit:
        for g in gws:
            g.kill()
        raise
    return gws


def total(gws, name):
    return sum(metric(g.metrics, name) for g in gws)


def trial(args, proto):
    """One run; returns its snapshots' deltas: open, idle (per minute), close, stop."""
    run = f"{proto}-{args.conns}-{args.rooms}{'-p' if args.presence else ''}"
    redis(args, "FLUSHALL")
    gws = start_gateways(args, run)
    time.sleep(3)
    redis(args, "CONFIG", "RESETSTAT")
    s0 = snapshot(args, gws)
    room = ("p:" if args.presence else "") + "cc"
    load = subprocess.Popen(
        [str(args.build / "bench/load/wsgate-load"), "--mode", "idle",
         "--url", ",".join(g.url for g in gws), "--conns", str(args.conns),
         "--procs", str(args.procs), "--jwt-secret-file", str(args.secret), "--hold",
         f"{args.idle + 15}s", "--connect-rate", str(args.connect_rate), "--proto", proto,
         "--room", room, *(["--rooms", str(args.rooms)] if proto == "channel" else []),
         "--no-progress", "--output", "json"],
        stdout=subprocess.PIPE, stderr=open(args.run_dir / f"{run}-load.log", "w"))
    want_subs = args.conns if proto == "channel" else 0
    def opened():
        if load.poll() is not None:
            for g in gws:
                g.kill()
            sys.exit(f"subcost: wsgate-load exited early, see {args.run_dir}/{run}-load.log")
        return (total(gws, "wsgate_gateway_connections") >= args.conns and
                total(gws, "wsgate_gateway_channel_subscriptions") >= want_subs)
    wait_for("connections", opened, 600)
    time.sleep(3)
    s1 = snapshot(args, gws)
    chans = total(gws, "wsgate_gateway_channels")
    idx = total(gws, "wsgate_gateway_channel_memory_bytes")
    if args.kill:
        for g in gws:
            g.send_signal(signal.SIGKILL)
            g.wait()
        load.kill()
        load.wait()
        time.sleep(args.kill_wait)  # the lease (15 s) is gone; with a short TTL, the keys too
        s2 = snapshot(args, [])
        left = {}
        for k in redis(args, "--scan", "--pattern", "cc:*").split():
            kind = k.rsplit(":", 1)[-1] if ":ch:" in k else k.split(":")[1]
            kind = "p:<member>" if kind.startswith("cc-gw") else kind
            left[kind] = left.get(kind, 0) + 1
        ttl = [int(redis(args, "TTL", k).strip()) for k in
               redis(args, "--scan", "--pattern", "cc:ch:*").split()[:20]]
        return {"open": delta(s0, s1), "after_kill": delta(s0, s2), "left": left,
                "ttl_sample": sorted(set(ttl)), "channels": chans}
    time.sleep(args.idle)
    s2 = snapshot(args, gws)
    out, _ = load.communicate(timeout=args.idle + 200)
    wait_for("closes", lambda: total(gws, "wsgate_gateway_connections") == 0, 120)
    time.sleep(3)
    s3 = snapshot(args, gws)
    for g in gws:
        g.send_signal(signal.SIGTERM)
    for g in gws:
        g.wait(timeout=60)
    time.sleep(1)
    s4 = snapshot(args, [])
    res = json.loads(out)
    idle = delta(s1, s2)
    per_min = 60.0 / idle["secs"]
    idle["calls"] = {k: round(v * per_min, 1) for k, v in idle["calls"].items()}
    idle["cpu"] *= per_min
    return {"open": delta(s0, s1), "idle_per_min": idle, "close": delta(s2, s3),
            "stop": delta(s3, s4), "channels": chans, "index_bytes": idx,
            "ready": res.get("ready", res.get("connections"))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", type=Path, default=REPO / "build")
    ap.add_argument("--redis-port", type=int, default=37450)
    ap.add_argument("--kafka", default="127.0.0.1:39092")
    ap.add_argument("--conns", type=int, default=5000)
    ap.add_argument("--rooms", type=int, default=0, help="0: all subscribe to one channel")
    ap.add_argument("--presence", action="store_true", help="a presence=true namespace")
    ap.add_argument("--gateways", type=int, default=1)
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--connect-rate", type=int, default=2000)
    ap.add_argument("--idle", type=int, default=60, help="seconds held idle, measured")
    ap.add_argument("--kill", action="store_true", help="SIGKILL the gateways while holding")
    ap.add_argument("--kill-wait", type=float, default=20,
                    help="seconds after --kill before the keys are counted (the lease: 15 s; "
                         "more to see a short --channel-key-ttl expire)")
    ap.add_argument("--base-port", type=int, default=37480)
    ap.add_argument("--run-dir", type=Path, default=Path("/tmp/chancost-run"))
    ap.add_argument("--gateway-arg", action="append", default=[])
    ap.add_argument("--only", choices=["raw", "channel"])
    args = ap.parse_args()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    args.secret = args.run_dir / "jwt-secret"
    if not args.secret.exists():
        args.secret.write_text(os.urandom(24).hex() + "\n")
    subprocess.run([str(args.build / "tools/wsgate-admin"), "-b", args.kafka, "topics", "ensure",
                    "--topic", "chancost.in", "--partitions", "8", "--topic", "chancost.out",
                    "--partitions", "16"], check=True, stdout=subprocess.DEVNULL)
    res = {p: trial(args, p) for p in (["channel"] if args.kill else
                                       [args.only] if args.only else ["raw", "channel"])}
    json.dump({"conns": args.conns, "rooms": args.rooms, "presence": args.presence,
               "gateways": args.gateways, **res}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
