"""wsgate's reliability and conformance suite: faults injected into a real cluster while the
checker (checker.py) counts what the clients got, Autobahn|Testsuite against an echo
configuration, and valgrind over a start-traffic-stop cycle of each daemon.

Run through scripts/chaos (it picks the build, the Python and the ports). Output is TAP on stdout
(one line per scenario, with the measured figures as YAML under a failing line and as # comments
under a passing one); progress goes to stderr. Exit status 0 when every scenario passed.

Each scenario states its pass criterion in its docstring; docs/RELIABILITY.md lists them beside
the guarantees they show.

Threads: the main thread runs one asyncio loop; blocking waits (a daemon's exit, Kafka restarts)
go to worker threads so the checker keeps running meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checker import Checker, percentile  # noqa: E402
from churn import ChurnProcess  # noqa: E402
from harness import (REPO, ChaosError, Cluster, ProcError, Redis, Runner,  # noqa: E402
                     log, metrics, rss_kib)
from scenario import Result, check_traffic, start_checker, until, until_thread  # noqa: E402
import attacks  # noqa: E402
from attacks import masked_frame, raw_upgrade  # noqa: E402
import autobahn_results  # noqa: E402

# Sizes of each form. The short form runs in the test command on a loaded 2-core machine: a few
# seconds of traffic per scenario; the long form is what docs/RELIABILITY.md reports.
FORMS = {
    "short": dict(users=12, rate=20.0, settle=1.5, broker_down=3.0, storm_conns=2000,
                  storm_window=1.0, storm_upgrades_per_sec=500, stop_extra=1.5, tail=2.0,
                  # 9.1 and 9.2: single messages of 64 KiB to 16 MiB. 9.3-9.6 (fragmented and
                  # chunked 4 MiB) and 9.7-9.8 (1,000 round trips through Kafka, ~15 s each)
                  # run in the long form.
                  autobahn_cases=["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.1.*",
                                  "9.2.*", "10.*"],
                  # permessage-deflate, 1,000 round trips each (~10 s): small messages,
                  # 128 KiB ones (12.2.18, where libwebsockets' deflate assertion fired before
                  # 152c9ff) and the last 13.x parameter set (window bits, context takeover).
                  autobahn_deflate_cases=["12.1.1", "12.2.18", "13.7.1"],
                  valgrind_users=3, valgrind_seconds=2.0, reshard_slots=256,
                  rc_users=100, rc_rate=1.0, rc_churn=20.0,
                  # the attack scenarios (attacks.py): well-behaved clients, their quiet phase,
                  # and each attack's size
                  attack_users=12, attack_rate=20.0, attack_quiet=3.0, door_sockets=40,
                  flood_conns=40, ghosts=2000, ghost_window=50, big_frames=[16 << 20],
                  frame_rounds=1),
    "long": dict(users=50, rate=40.0, settle=5.0, broker_down=20.0, storm_conns=5000,
                 storm_window=2.0, storm_upgrades_per_sec=1000, stop_extra=5.0, tail=10.0,
                 autobahn_cases=["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"],
                 autobahn_deflate_cases=["12.*", "13.*"], valgrind_users=10,
                 valgrind_seconds=10.0, reshard_slots=8192,
                 rc_users=1000, rc_rate=0.2, rc_churn=100.0,
                 attack_users=200, attack_rate=5.0, attack_quiet=10.0, door_sockets=200,
                 flood_conns=200, ghosts=20000, ghost_window=250,
                 big_frames=[1 << 20, 16 << 20, 64 << 20, 256 << 20], frame_rounds=10),
}

LEASE_TTL = 3.0  # --lease-ttl of every chaos gateway (seconds); renew every second
DRAIN_GRACE = 8.0  # --drain-grace (harness.Cluster.start_gateway)
PROC_SESSION_TIMEOUT = 6.0  # session.timeout.ms of the chaos processors


async def group_settled(c: Cluster) -> None:
    """Waits until the processors own every inbound partition between them, each at least one:
    the start-up rebalances are over, so their redeliveries do not mix with the fault's."""
    def settled():
        owned = [p.metrics().get("wsgate_processor_assigned_partitions", -1)
                 for p in c.processors]
        return all(n > 0 for n in owned) and sum(owned) == c.IN_PARTITIONS

    if not await until(settled, 30, 0.2):
        raise ChaosError("the processors' consumer group did not settle within 30 s")


# --- scenarios -----------------------------------------------------------------------------------


async def sc_gateway_kill9(r: Runner, form: dict, res: Result) -> None:
    """kill -9 of one of two gateways. Pass: its clients reconnect (jittered backoff) to the other
    within 15 s; its lease (gateway record and slot key) is gone within the lease TTL + 5 s, so
    every route to it is recognisably stale; every user then routes to the live gateway; after
    resending what was unacknowledged nothing is lost and per-connection order holds."""
    c = Cluster(r, "kill9")
    gw1, gw2 = c.start_gateway(), c.start_gateway()
    c.start_processor()
    chk = await start_checker(c, form)
    on_gw1 = [u for u in chk.users if u.home == 0]
    slot = c.gw_record(gw1).get("slot")
    t0 = time.monotonic()
    gw1.signal(signal.SIGKILL)
    back = await until(lambda: all(len(u.conns) >= 2 for u in on_gw1) and chk.all_connected(),
                       15, 0.02)
    t_back = time.monotonic() - t0
    res.check(bool(back), f"clients of the killed gateway not all reconnected after 15 s "
              f"({chk.summary()['connect_failures']})")
    gone = await until(lambda: not c.gw_record(gw1) and c.slot_holder(slot) != gw1.extra["id"],
                       LEASE_TTL + 5 + 2, 0.1)
    t_gone = time.monotonic() - t0
    res.check(bool(gone) and t_gone <= LEASE_TTL + 5,
              f"the killed gateway's lease still present {t_gone:.1f}s after the kill "
              f"(limit: lease TTL {LEASE_TTL:.0f}s + 5s)")
    await asyncio.sleep(form["tail"])
    live_id = gw2.extra["id"]
    unrouted = [u for u, conns in c.routes([u.name for u in chk.users]).items()
                if live_id not in conns.values()]
    res.check(not unrouted, f"users without a route to the live gateway: {unrouted[:5]}")
    await chk.finish(20)
    res.fig(reconnect_s=round(t_back, 2), lease_gone_s=round(t_gone, 2),
            clients_on_killed=len(on_gw1))
    s = check_traffic(res, chk, strict=False)
    res.check(s["reconnects"] >= len(on_gw1),
              f"only {s['reconnects']} reconnects for {len(on_gw1)} clients of the killed gateway")
    res.check(gw2.alive(), "the surviving gateway died")
    for p in c.stop_all():
        res.failures.append(p)


async def sc_gateway_sigterm(r: Runner, form: dict, res: Result) -> None:
    """SIGTERM of one of two gateways (the drain). Pass: every connection it had is closed with
    1001 and the reason "draining; reconnect_ms=<N>"; it exits 0 within --drain-grace; its slot,
    gateway record and connection entries are gone from Redis; its clients reconnect to the
    other gateway; nothing is lost and order holds."""
    c = Cluster(r, "sigterm")
    gw1, gw2 = c.start_gateway(), c.start_gateway()
    c.start_processor()
    chk = await start_checker(c, form)
    n_gw1 = sum(1 for u in chk.users if u.home == 0)
    slot = c.gw_record(gw1).get("slot")
    t0 = time.monotonic()
    gw1.signal(signal.SIGTERM)
    rc = await asyncio.to_thread(gw1.wait, DRAIN_GRACE + 10)
    took = time.monotonic() - t0
    res.check(rc == 0, f"the drained gateway exited with status {rc}")
    res.check(took <= DRAIN_GRACE + 0.5, f"the drain took {took:.1f}s, over --drain-grace "
              f"{DRAIN_GRACE:.0f}s")
    res.check(bool(await until(chk.all_connected, 15, 0.02)), "clients did not all reconnect")
    await asyncio.sleep(form["tail"])
    leftovers = []
    if c.gw_record(gw1):
        leftovers.append("gateway record")
    if c.slot_holder(slot) == gw1.extra["id"]:
        leftovers.append(f"slot {slot}")
    for u, conns in c.routes([u.name for u in chk.users]).items():
        leftovers += [f"user {u} entry {k}" for k, g in conns.items() if g == gw1.extra["id"]]
    res.check(not leftovers, f"the drained gateway left in Redis: {leftovers[:5]}")
    await chk.finish(20)
    closes = chk.closes(gw1.extra["url"])
    wrong = [(x.close_code, x.close_reason) for x in closes
             if x.close_code != 1001 or not x.close_reason.startswith("draining; reconnect_ms=")]
    res.check(len(closes) == n_gw1, f"{len(closes)} closes seen from the drained gateway, "
              f"{n_gw1} clients were on it")
    res.check(not wrong, f"closes other than 1001 'draining; reconnect_ms=N': {wrong[:5]}")
    res.fig(drain_s=round(took, 2), closed_1001=len(closes) - len(wrong))
    check_traffic(res, chk, strict=False)
    for p in c.stop_all():
        res.failures.append(p)


async def sc_processor_kill9(r: Runner, form: dict, res: Result) -> None:
    """kill -9 of one of two processors mid-stream. Pass (strict): no client connection drops and
    nothing is resent, yet every message is echoed (the survivor takes the partitions over after
    the session timeout and resumes from the committed offsets); per-connection order holds;
    duplicates are at most the uncommitted window: records past the group's committed offsets
    just before the kill plus what was sent between that reading and the kill (counted from that
    reading; the suite waits for the group to settle first, so start-up rebalances add none)."""
    c = Cluster(r, "prockill")
    c.start_gateway()
    p1, p2 = c.start_processor(), c.start_processor()
    await group_settled(c)
    chk = await start_checker(c, form)
    t_snap = time.monotonic()
    offs = await asyncio.to_thread(r.offsets, c.group, c.in_topic)
    t_kill = time.monotonic()
    p1.signal(signal.SIGKILL)
    window = sum(e - max(cm, 0) for cm, e in offs.values()) + chk.sent_between(t_snap, t_kill)
    await asyncio.sleep(PROC_SESSION_TIMEOUT + form["tail"])
    await chk.finish(30)
    res.fig(uncommitted_window=window)
    check_traffic(res, chk, strict=True, max_dups=window, dups_since=t_snap)
    res.check(p2.alive(), "the surviving processor died")
    for p in c.stop_all():
        res.failures.append(p)


async def sc_broker_stop(r: Runner, form: dict, res: Result) -> None:
    """The Kafka broker stopped (controlled shutdown) for broker_down seconds, then started again
    on the same data. The gateway runs with a 2 MiB producer queue so that the outage fills it.
    Pass (strict): no client is dropped (reading is paused: the gateway's backpressure gauge goes
    to 1), the gateway's memory stays bounded (RSS within 48 MiB of what it was before the
    outage), and after the restart every message is echoed, in order, without a resend."""
    c = Cluster(r, "broker")
    gw = c.start_gateway(["-X", "queue.buffering.max.kbytes=2048"])
    c.start_processor()
    chk = await start_checker(c, form, size=1024, rate=form["rate"] * 4, window=400)
    rss0 = rss_kib(gw.pid)
    t_stop = time.monotonic()
    saved = await asyncio.to_thread(r.kafka_stop_in_place)
    t_down = time.monotonic()
    rss_max, pressure, sent0 = rss0, 0.0, chk.sent_total()
    while time.monotonic() - t_down < form["broker_down"]:
        rss_max = max(rss_max, rss_kib(gw.pid))
        pressure = max(pressure, metrics(gw.http_port).get("wsgate_gateway_kafka_backpressure", 0))
        await asyncio.sleep(0.2)
    sent_during = chk.sent_total() - sent0
    t_start = time.monotonic()
    await asyncio.to_thread(r.kafka_start_in_place, saved)
    t_up = time.monotonic()
    # Everything sent until the broker was back must come through; the checker keeps sending.
    drained = await until(lambda: chk.unanswered_before(t_up) == 0, 90, 0.2)
    res.fig(stop_s=round(t_down - t_stop, 1), down_s=round(t_start - t_down, 1),
            start_s=round(t_up - t_start, 1), sent_while_down=sent_during,
            catch_up_s=round(time.monotonic() - t_up, 1), rss_before_kib=rss0,
            rss_max_kib=rss_max)
    res.check(bool(drained), f"{chk.unanswered_before(t_up)} messages sent before the broker came "
              "back still unanswered 90 s later")
    res.check(pressure == 1, "the gateway never paused its clients (backpressure gauge stayed 0)")
    res.check(rss_max - rss0 <= 48 * 1024, f"gateway RSS grew by {(rss_max - rss0) // 1024} MiB "
              "during the outage (bound 48 MiB)")
    await asyncio.sleep(1)
    await chk.finish(20)
    check_traffic(res, chk, strict=True)
    for p in c.stop_all():
        res.failures.append(p)


def churn_checks(res: Result, f: dict, rate: float) -> None:
    """The short-lived clients' figures (churn.Churn.summary()): every one routed, and started
    at 90 % of the rate asked or more (the child's loop keeping up)."""
    res.fig(churn_started=f["started"], churn_per_s=round(f["per_s"], 1),
            churn_routed=f["routed"], churn_refused=f["refused"], churn_resent=f["resent"],
            churn_errors=f["errors"],
            churn_p99_s=round(f["p99_s"], 2) if f["p99_s"] is not None else None)
    res.check(f["failed_count"] == 0 and f["routed"] == f["started"],
              f"{f['failed_count']} of {f['started']} short-lived clients not routed: "
              f"{f['failed'][:3]}")
    res.check(f["per_s"] >= 0.9 * rate,
              f"short-lived clients started at {f['per_s']:.1f}/s of the {rate:.0f}/s asked")


def route_problems(c: Cluster, users) -> list[str]:
    """c.route_problems() with one connection each; Redis not answering (a failover) is one."""
    try:
        return c.route_problems(users, expect_conns=1)
    except (OSError, ConnectionError, RuntimeError) as e:
        return [f"Redis: {e}"]


def routing_consistent(c: Cluster, users) -> bool:
    return not route_problems(c, users)


async def routing_fault(r: Runner, form: dict, res: Result, name: str, fault,
                        redis_cluster: bool = False, users: int | None = None,
                        rate: float | None = None, churn: float = 0.0,
                        stale_limit: float = 2 * LEASE_TTL) -> None:
    """The frame of the faults that cost leases: two gateways, a processor, the checker with
    resends after 3 s (replies addressed to a slot a gateway had to give up are documented as
    lost); `fault(cluster, checker)` does the damage and returns when the fault is over. Then,
    within two lease periods (2 x the lease TTL), every live gateway must hold a slot again
    (record and slot key agreeing) and every user exactly one connection entry, pointing at a
    gateway that holds a lease: no stale route survives (within stale_limit). No connection may drop
    and nothing may be lost. users and rate override the form's; churn > 0 also runs that many
    short-lived clients a second (churn.ChurnProcess) from before the fault to the end, every one of
    which must be routed."""
    c = Cluster(r, name, redis_cluster=redis_cluster)
    c.start_gateway(), c.start_gateway()
    c.start_processor()
    kw = {k: v for k, v in (("users", users), ("rate", rate)) if v is not None}
    chk = await start_checker(c, form, resend_after=3.0, **kw)
    users = [u.name for u in chk.users]
    ch = ChurnProcess(c.urls(), churn) if churn > 0 else None
    try:
        if ch:
            await ch.start()
        await fault(c, chk)
        t_over = time.monotonic()
        # Counted to the start of the first check that found it consistent: a check reads every
        # user (1,000 in redis_cluster_failover's long form), which takes a while by itself.
        started = [t_over]

        def consistent():
            started[0] = time.monotonic()
            return routing_consistent(c, users)

        ok = await until_thread(consistent, 4 * LEASE_TTL, 0.05)
        took = started[0] - t_over
        res.fig(check_s=round(time.monotonic() - started[0], 2))
        res.check(bool(ok) and took <= stale_limit,
                  f"routing not consistent {took:.1f}s after the fault ended (limit "
                  f"{stale_limit:.0f}s): {route_problems(c, users)[:5]}")
        res.fig(consistent_after_s=round(took, 2))
        await asyncio.sleep(form["tail"])
        if ch:
            churn_checks(res, await ch.finish(), churn)
    finally:
        if ch:
            await ch.kill()
    await chk.finish(20)
    s = check_traffic(res, chk, strict=False)
    res.check(s["reconnects"] == 0, f"{s['reconnects']} connections dropped")
    for p in c.stop_all():
        res.failures.append(p)


async def sc_redis_restart_empty(r: Runner, form: dict, res: Result) -> None:
    """redis-server stopped and started again with nothing in it. Pass: routing_fault's
    criterion, counted from the moment Redis answers again."""

    async def fault(c, chk):
        await asyncio.to_thread(r.redis_restart_empty)

    await routing_fault(r, form, res, "redis", fault)


def redis_cluster_primaries(c: Cluster) -> list[tuple[int, str]]:
    """(port, node id) of every primary serving slots, from CLUSTER SLOTS."""
    seen = {}
    for entry in c.redis.cmd("CLUSTER", "SLOTS"):
        seen[int(entry[2][1])] = entry[2][2]
    return sorted(seen.items())


def redis_at(port: int, *args):
    """One command on the node at port; None if it does not answer (killed, or in failover)."""
    conn = Redis(port)
    try:
        return conn.cmd(*args)
    except (OSError, ConnectionError, RuntimeError):
        return None
    finally:
        conn.close()


def redis_cluster_ok(port: int) -> bool:
    return "cluster_state:ok" in (redis_at(port, "CLUSTER", "INFO") or "")


def redis_info(port: int, field: str) -> str:
    text = (redis_at(port, "INFO", "server") or "") + (redis_at(port, "INFO", "replication") or "")
    m = re.search(rf"^{field}:(.*)$", text, re.M)
    return m.group(1).strip() if m else ""


async def sc_redis_cluster_failover(r: Runner, form: dict, res: Result) -> None:
    """On a Redis Cluster (3 primaries, 3 replicas): rc_users clients exchanging messages
    (rc_rate each a second) and rc_churn short-lived clients connecting a second; a live reshard
    of reshard_slots slots (half of the 16,384 in the long form) around the primaries, then
    kill -9 of the primary serving the first client's entry; the cluster is removed afterwards.
    Pass: the replica takes over within 30 s, then routing_fault's criterion from the takeover
    (the 3 s leases may run out during the failover) with no stale route left one lease period
    after it, and every short-lived client routed."""

    async def fault(c, chk):
        users = [u.name for u in chk.users]
        await asyncio.sleep(form["settle"])
        await reshard_around(c, form["reshard_slots"], res)
        settled = await until_thread(lambda: routing_consistent(c, users), 2 * LEASE_TTL)
        res.check(settled is not None, f"routing inconsistent after the reshard: "
                  f"{route_problems(c, users)[:5]}")
        slot = c.redis.cmd("CLUSTER", "KEYSLOT", f"{c.prefix}user:{users[0]}")
        victim = next(int(e[2][1]) for e in c.redis.cmd("CLUSTER", "SLOTS")
                      if e[0] <= slot <= e[1])
        pid = int(redis_info(victim, "process_id"))
        survivor = next(p for p, _ in redis_cluster_primaries(c) if p != victim)
        c.redis.close()
        c.redis = Redis(survivor)  # the seed may be the victim
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        def taken_over():
            """The victim's slot is served by another node, and the cluster says ok."""
            slots = redis_at(survivor, "CLUSTER", "SLOTS") or []
            owner = next((int(e[2][1]) for e in slots if e[0] <= slot <= e[1]), victim)
            return owner != victim and redis_cluster_ok(survivor)

        res.check(bool(await until_thread(taken_over, 30, 0.1)),
                  "the cluster did not recover within 30 s of the kill")
        res.fig(failover_s=round(time.monotonic() - t_kill, 2))

    await asyncio.to_thread(r.start_redis_cluster)
    try:
        await routing_fault(r, form, res, "rcfail", fault, redis_cluster=True,
                            users=form["rc_users"], rate=form["rc_rate"], churn=form["rc_churn"],
                            stale_limit=LEASE_TTL)
    finally:
        await asyncio.to_thread(r.stop_redis_cluster)


async def reshard_around(c: Cluster, slots: int, res: Result) -> None:
    """Moves `slots` slots around the ring of primaries A->B, B->C, C->A, a third each: every
    primary keeps slots (a primary left with none becomes a replica, and two primaries cannot
    elect a replacement for one)."""
    prims = redis_cluster_primaries(c)

    def agreed():
        """redis-cli --cluster check finds nothing to fix (a reshard refuses to start otherwise:
        the last one's configuration takes a moment to reach every node)."""
        out = subprocess.run(["redis-cli", "--cluster", "check", f"127.0.0.1:{prims[0][0]}"],
                             capture_output=True, text=True, timeout=60)
        return "[ERR]" not in out.stdout and "[WARNING]" not in out.stdout

    t0 = time.monotonic()
    for (a_port, a_id), (_, b_id) in zip(prims, prims[1:] + prims[:1]):
        await until_thread(agreed, 30, 0.5)
        out = await asyncio.to_thread(
            subprocess.run, ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{a_port}",
                             "--cluster-from", a_id, "--cluster-to", b_id, "--cluster-slots",
                             str(slots // len(prims)), "--cluster-yes"],
            capture_output=True, text=True, timeout=600)
        res.check(out.returncode == 0, f"redis-cli --cluster reshard failed: {out.stderr[-300:]}")
    res.fig(reshard_slots=slots, reshard_s=round(time.monotonic() - t0, 1))


async def sc_sigstop_gateway(r: Runner, form: dict, res: Result) -> None:
    """SIGSTOP of a gateway until its lease has expired (plus stop_extra seconds), then SIGCONT.
    Pass: the lease expires while it is stopped, then routing_fault's criterion from SIGCONT."""

    async def fault(c, chk):
        gw1 = c.gateways[0]
        gw1.signal(signal.SIGSTOP)
        try:
            expired = await until(lambda: not c.gw_record(gw1), LEASE_TTL + 3, 0.1)
            res.check(bool(expired), "the stopped gateway's lease did not expire")
            await asyncio.sleep(form["stop_extra"])
        finally:
            gw1.signal(signal.SIGCONT)

    await routing_fault(r, form, res, "stopgw", fault)


async def sc_sigstop_processor(r: Runner, form: dict, res: Result) -> None:
    """SIGSTOP of one of two processors past its session timeout, then SIGCONT. Pass (strict): the
    group's committed offsets never go backwards (a zombie commit from the stopped member would
    move one back), the stopped processor is ready again after SIGCONT, no connection drops,
    nothing is resent and every message is echoed in order."""
    c = Cluster(r, "stopproc")
    c.start_gateway()
    p1, p2 = c.start_processor(), c.start_processor()
    await group_settled(c)
    chk = await start_checker(c, form)
    history: dict[int, int] = {}
    regressions: list[str] = []
    polls = 0

    def poll():
        nonlocal polls
        polls += 1
        for part, (committed, _) in r.offsets(c.group, c.in_topic).items():
            if committed < history.get(part, -1):
                regressions.append(f"partition {part}: {history[part]} -> {committed}")
            history[part] = max(history.get(part, -1), committed)

    async def poller(stop: asyncio.Event):
        while not stop.is_set():
            await asyncio.to_thread(poll)
            await asyncio.sleep(0.2)

    stop_poll = asyncio.Event()
    poll_task = asyncio.create_task(poller(stop_poll))
    p1.signal(signal.SIGSTOP)
    await asyncio.sleep(PROC_SESSION_TIMEOUT + form["stop_extra"])
    p1.signal(signal.SIGCONT)
    t_cont = time.monotonic()
    ready = await until(p1.ready, 30, 0.2)
    res.fig(ready_after_cont_s=round(time.monotonic() - t_cont, 1))
    res.check(bool(ready), "the stopped processor is not ready 30 s after SIGCONT")
    await asyncio.sleep(form["tail"])
    await chk.finish(30)
    await asyncio.sleep(1.5)  # a commit interval: the last commits land while we still poll
    stop_poll.set()
    await poll_task
    res.fig(offset_polls=polls, commit_errors=[
        p.metrics().get('wsgate_processor_commits_total{result="error"}') for p in (p1, p2)])
    res.check(polls >= 5, f"committed offsets read only {polls} times")
    res.check(not regressions, f"committed offsets went backwards (zombie commit): {regressions}")
    check_traffic(res, chk, strict=True)
    for p in c.stop_all():
        res.failures.append(p)


async def sc_sigstop_redis(r: Runner, form: dict, res: Result) -> None:
    """SIGSTOP of redis-server for longer than the lease TTL (every lease expires meanwhile), then
    SIGCONT. Pass: routing_fault's criterion from SIGCONT."""

    async def fault(c, chk):
        pid = r.redis_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(LEASE_TTL + form["stop_extra"])
        finally:
            os.kill(pid, signal.SIGCONT)

    await routing_fault(r, form, res, "stopredis", fault)


async def sc_sigstop_kafka(r: Runner, form: dict, res: Result) -> None:
    """SIGSTOP of the Kafka broker for broker_down seconds, then SIGCONT (a hung broker rather than
    a stopped one: connections stay open, requests time out). Pass (strict): no client dropped,
    every message echoed in order without a resend once the broker runs again."""
    c = Cluster(r, "stopkafka")
    c.start_gateway()
    c.start_processor()
    chk = await start_checker(c, form)
    pid = r.kafka_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(form["broker_down"])
    finally:
        os.kill(pid, signal.SIGCONT)
    t_cont = time.monotonic()
    drained = await until(lambda: chk.unanswered_before(t_cont) == 0, 90, 0.2)
    res.fig(catch_up_s=round(time.monotonic() - t_cont, 1))
    res.check(bool(drained), f"{chk.unanswered_before(t_cont)} messages sent before SIGCONT still "
              "unanswered 90 s later")
    await chk.finish(20)
    check_traffic(res, chk, strict=True)
    for p in c.stop_all():
        res.failures.append(p)


async def sc_slow_reader(r: Runner, form: dict, res: Result) -> None:
    """A client that never reads (4 KiB receive buffer), beside normal clients, on a gateway with
    --sendq-hard 256k. It sends 16 KiB messages, whose echoes pile up for it, until it is closed
    (4 MiB at most). Pass: the gateway closes it at its send-queue limit (exactly one 4001
    counted) within 15 s, the bytes queued for clients return to 0 (memory freed), no other
    client is closed, and the others' p99 latency from the slow reader's first byte to 2 s after
    its close stays within 3x their p99 before plus 50 ms."""
    c = Cluster(r, "slow")
    gw = c.start_gateway(["--sendq-hard", "256k", "--sendq-soft", "128k", "--sendq-soft-time",
                          "2s"])
    c.start_processor()
    chk = await start_checker(c, form)
    t_base = time.monotonic()
    await asyncio.sleep(form["settle"])
    t_slow = time.monotonic()
    s = await asyncio.to_thread(raw_upgrade, "slowpoke", gw.extra["port"], 4096)
    chunk = masked_frame(2, os.urandom(16384))
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    m4001 = 'wsgate_gateway_closes_total{code="4001"}'
    # One message every 30 ms, until it is closed: every echo it does not read piles up for it,
    # first in the socket buffers, then in the gateway's send queue, so that the queue passes its
    # limit only once not even a close frame fits in the socket (the case that matters: a client
    # that has stopped reading altogether). More would only load Kafka and the processor.
    sent = 0
    closed = seen = False
    deadline = time.monotonic() + 15
    while not closed and time.monotonic() < deadline:
        if sent < 4 << 20:
            try:
                await asyncio.wait_for(loop.sock_sendall(s, chunk), 1)
                sent += 16384
            except (OSError, asyncio.TimeoutError):
                sent = 4 << 20  # closed, or no longer read: it has done its part
        await asyncio.sleep(0.03)
        m = gw.metrics()
        conns = m.get("wsgate_gateway_connections")
        seen = seen or conns == len(chk.users) + 1
        closed = m.get(m4001, 0) >= 1 or (seen and conns == len(chk.users))
    res.fig(slow_reader_sent_kib=sent // 1024)
    t_closed = time.monotonic()
    res.check(bool(closed), "the slow reader was not closed within 15 s")
    freed = await until(lambda: gw.metrics().get("wsgate_gateway_sendq_bytes", -1) == 0, 15, 0.1)
    res.check(bool(freed), f"sendq bytes still {gw.metrics().get('wsgate_gateway_sendq_bytes')} "
              "after the slow reader was closed")
    gone = await until(lambda: gw.metrics().get("wsgate_gateway_connections") == len(chk.users),
                       10, 0.1)
    res.check(bool(gone), "the slow reader's connection is still counted")
    await asyncio.sleep(2)  # the aftermath of the close belongs to the measured window
    t_after = time.monotonic()
    res.check(gw.metrics().get(m4001) == 1, f"{gw.metrics().get(m4001)} connections counted as "
              "closed with 4001, expected the slow reader alone (0: a close whose frame could not "
              "be written went uncounted, fixed bug 3 of docs/RELIABILITY.md)")
    s.close()
    await chk.finish(20)
    base = chk.latencies(t_base, t_slow)
    during = chk.latencies(t_slow, t_after)
    p99b, p99d = percentile(base, 0.99), percentile(during, 0.99)
    res.fig(close_after_s=round(t_closed - t_slow, 2), p99_before_ms=round(p99b * 1000, 1),
            p99_during_ms=round(p99d * 1000, 1), samples_during=len(during))
    res.check(len(during) >= 50, f"only {len(during)} latency samples while the slow reader "
              "filled and was closed")
    res.check(p99d <= 3 * p99b + 0.05, f"other clients' p99 rose from {p99b * 1000:.0f} ms to "
              f"{p99d * 1000:.0f} ms while the slow reader filled")
    check_traffic(res, chk, strict=True)
    for p in c.stop_all():
        res.failures.append(p)


async def _storm_client(port: int, user: str, stats: dict, conns: list, deadline: float):
    """One client of the connect storm: upgrade; on 503 wait Retry-After plus up to 1 s of jitter
    and try again; on a connection error back off and try again; keeps the socket when it gets
    101."""
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, asyncio.TimeoutError) as e:
            stats[f"connect {type(e).__name__}"] = stats.get(f"connect {type(e).__name__}", 0) + 1
            await asyncio.sleep(random.uniform(0.1, 0.2 * attempt))
            continue
        try:
            writer.write((f"GET /?user={user} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            stats[f"upgrade {type(e).__name__}"] = stats.get(f"upgrade {type(e).__name__}", 0) + 1
            writer.close()
            await asyncio.sleep(random.uniform(0.1, 0.2 * attempt))
            continue
        status = head.split(b" ", 2)[1].decode()
        if status == "101":
            stats["101"] = stats.get("101", 0) + 1
            conns.append(writer)
            return
        body = b""
        m = re.search(rb"Content-Length: *(\d+)", head, re.I)
        if m:
            try:
                body = await asyncio.wait_for(reader.readexactly(int(m.group(1))), 5)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                pass
        err = re.search(rb'"error": *"([a-z_]+)"', body)
        key = f"{status} {err.group(1).decode() if err else ''}".strip()
        stats[key] = stats.get(key, 0) + 1
        writer.close()
        ra = re.search(rb"Retry-After: *(\d+)", head, re.I)
        await asyncio.sleep((int(ra.group(1)) if ra else 1) + random.uniform(0, 1))


async def sc_connect_storm(r: Runner, form: dict, res: Result) -> None:
    """storm_conns upgrades started within storm_window seconds against one gateway limited to
    storm_upgrades_per_sec. Pass: admission control answers the excess with 503 upgrade_rate
    (seen at least once) and nothing else goes wrong (no other status, no connection error); the
    gateway stays up; every client is connected within N / limit + 15 s after retrying with
    Retry-After plus jitter; the gateway and its Redis record count exactly N connections; all of
    them are gone again after the clients close."""
    n, window, limit = form["storm_conns"], form["storm_window"], form["storm_upgrades_per_sec"]
    c = Cluster(r, "storm")
    gw = c.start_gateway(["--max-upgrades-per-sec", str(limit)])
    c.start_processor()
    stats: dict = {}
    conns: list = []
    t0 = time.monotonic()
    deadline = t0 + n / limit + 15
    loop_tasks = []
    for i in range(n):
        at = t0 + window * i / n
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        loop_tasks.append(asyncio.create_task(_storm_client(gw.extra["port"], f"s{i}", stats,
                                                            conns, deadline)))
    await asyncio.gather(*loop_tasks)
    took = time.monotonic() - t0
    counted = await until(lambda: gw.metrics().get("wsgate_gateway_connections") == n, 10, 0.2)
    rec = c.gw_record(gw)
    res.fig(connected=len(conns), all_connected_s=round(took, 1), answers=stats,
            gateway_record_conns=rec.get("conns"))
    res.check(gw.alive(), "the gateway died")
    res.check(len(conns) == n, f"only {len(conns)} of {n} connected by the deadline")
    res.check(stats.get("503 upgrade_rate", 0) > 0, "admission control never answered 503 "
              "upgrade_rate")
    others = {k: v for k, v in stats.items() if k not in ("101", "503 upgrade_rate")}
    res.check(not others, f"answers other than 101 and 503 upgrade_rate: {others}")
    res.check(bool(counted), f"the gateway counts {gw.metrics().get('wsgate_gateway_connections')}"
              f" connections, expected {n}")
    recorded = await until(lambda: c.gw_record(gw).get("conns") == str(n), 2 * LEASE_TTL, 0.2)
    res.check(bool(recorded), f"the gateway record says conns={c.gw_record(gw).get('conns')}")
    for w in conns:
        w.close()
    emptied = await until(lambda: gw.metrics().get("wsgate_gateway_connections") == 0, 30, 0.2)
    res.check(bool(emptied), "connections still counted 30 s after every client closed")
    for p in c.stop_all():
        res.failures.append(p)


# --- valgrind ------------------------------------------------------------------------------------

VALGRIND = ["valgrind", "--tool=memcheck", "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite", "--error-exitcode=99", "--track-origins=no",
            f"--suppressions={REPO / 'tests' / 'valgrind.supp'}"]


async def _valgrind_cycle(r: Runner, form: dict, res: Result, which: str) -> None:
    c = Cluster(r, f"vg{which[:4]}")
    vlog = r.run_dir / f"valgrind-{which}-%p.log"
    wrapper = VALGRIND + [f"--log-file={vlog}"]
    if which == "gateway":
        d = c.start_gateway(wrapper=wrapper)
        c.start_processor()
    else:
        c.start_gateway()
        d = c.start_processor(wrapper=wrapper)
    chk = Checker(c.urls(), form["valgrind_users"], 10.0)
    chk.start()
    await until(chk.all_connected, 30)
    await asyncio.sleep(form["valgrind_seconds"])
    await chk.finish(30)
    s = chk.summary()
    res.check(s["acked"] > 0 and s["lost"] == 0, f"traffic under valgrind: {s}")
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    rc = await asyncio.to_thread(d.wait, 60)
    res.fig(exit_status=rc, stop_s=round(time.monotonic() - t0, 1), messages=s["acked"])
    logs = sorted(r.run_dir.glob(f"valgrind-{which}-*.log"))
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    m = re.search(r"definitely lost: ([\d,]+) bytes", text)
    errs = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    res.fig(definitely_lost=m.group(1) if m else "0 (no leak summary: all freed)",
            error_summary=errs.group(1) if errs else "?", valgrind_log=str(logs[-1]) if logs else "")
    res.check(rc == 0, f"{which} under valgrind exited with {rc} (99: memcheck errors or "
              f"definite leaks; see {logs[-1] if logs else vlog})")
    res.check(errs is not None and errs.group(1) == "0",
              f"valgrind reports {errs.group(1) if errs else 'no summary'} errors")
    for p in c.stop_all():
        res.failures.append(p)


async def sc_valgrind_gateway(r, form, res):
    """wsgate-gateway under valgrind memcheck (--leak-check=full --errors-for-leak-kinds=definite):
    start, echo traffic, SIGTERM. Pass: exit status 0 and an error summary of 0 (no invalid access,
    no definite leak)."""
    await _valgrind_cycle(r, form, res, "gateway")


async def sc_valgrind_processor(r, form, res):
    """The same for wsgate-processor."""
    await _valgrind_cycle(r, form, res, "processor")


# --- Autobahn ------------------------------------------------------------------------------------


async def sc_autobahn(r: Runner, form: dict, res: Result, deflate: bool = False) -> None:
    """Autobahn|Testsuite's fuzzingclient against a gateway + echo processor with --max-message
    16m (topics allowing 20 MiB records). Pass: every case run ends OK, NON-STRICT or
    INFORMATIONAL, and no close behaviour is FAILED or UNCLEAN, apart from the exclusions listed
    with their reasons in autobahn_results.py and docs/CONFORMANCE.md."""
    wstest = os.environ.get("WSGATE_AUTOBAHN_WSTEST", "")
    if not wstest or not os.access(wstest, os.X_OK):
        raise ChaosError(f"wstest not found at '{wstest}': scripts/setup builds the Autobahn "
                         "virtualenv ($WSGATE_CACHE/autobahn-venv) from pyenv's Python 2.7")
    name = "abdefl" if deflate else "autobahn"
    c = Cluster(r, name)
    big = "20971520"
    for t in (c.in_topic, c.out_topic):
        await asyncio.to_thread(r.chaos_kafka, "topic-config", "-t", t, f"max.message.bytes={big}")
    # linger.ms=0: Autobahn's round-trip cases (9.7, 9.8, 12, 13) send 1,000 messages one after
    # the other; the default 5 ms linger of each producer would make them take minutes.
    # Conformance, not limits: the default per-connection rates (issue 16) would pace 9.x.
    gw_extra = ["--max-message", "16m", "--sendq-hard", "64m", "--sendq-soft", "64m",
                "--rate-msgs", "0", "--rate-bytes", "0",
                "-X", f"message.max.bytes={big}", "-X", "linger.ms=0"]
    if deflate:
        gw_extra.append("--deflate")
    gw = c.start_gateway(gw_extra)
    c.start_processor(["--max-payload", "17m", "-X", f"message.max.bytes={big}",
                       "-X", "linger.ms=0"])
    cases = form["autobahn_deflate_cases"] if deflate else form["autobahn_cases"]
    if os.environ.get("WSGATE_CHAOS_AUTOBAHN_CASES"):  # for a quick look at a few cases
        cases = os.environ["WSGATE_CHAOS_AUTOBAHN_CASES"].split(",")
    outdir = r.run_dir / f"{name}-reports"
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": "wsgate", "url": f"{gw.extra['url']}?user=autobahn"}],
        "cases": cases,
        "exclude-cases": sorted(autobahn_results.EXCLUDED),
        "exclude-agent-cases": {},
    }
    spec_path = r.run_dir / f"{name}-fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    t0 = time.monotonic()
    with open(r.run_dir / f"{name}-wstest.log", "w") as out:
        proc = await asyncio.create_subprocess_exec(
            wstest, "-m", "fuzzingclient", "-s", str(spec_path), cwd=str(r.run_dir),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = await asyncio.wait_for(proc.wait(), 3600)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    res.fig(wstest_exit=rc, seconds=round(time.monotonic() - t0, 1), report=str(outdir))
    index = outdir / "index.json"
    if not index.exists():
        res.failures.append(f"wstest wrote no {index} (exit {rc}); see "
                            f"{r.run_dir / (name + '-wstest.log')}")
    else:
        report = autobahn_results.evaluate(json.loads(index.read_text()))
        res.fig(**report.counts())
        for line in report.problems():
            res.failures.append(line)
        if report.almost:
            res.fig(close_not_by_server=report.almost)
    res.check(gw.alive(), "the gateway died during the conformance run")
    for p in c.stop_all():
        res.failures.append(p)


async def sc_autobahn_deflate(r, form, res):
    """Autobahn cases 12 and 13 (permessage-deflate) against a gateway with --deflate (the short
    form: a subset). Same pass criterion. Regression test of fixed bug 2 (docs/RELIABILITY.md):
    the gateway used to abort on a libwebsockets assertion during case 12.2.18."""
    await sc_autobahn(r, form, res, deflate=True)


# name -> (function, in the short form)
SCENARIOS = {
    "autobahn": (sc_autobahn, True),
    "gateway_kill9": (sc_gateway_kill9, True),
    "gateway_sigterm": (sc_gateway_sigterm, True),
    "processor_kill9": (sc_processor_kill9, True),
    "broker_stop": (sc_broker_stop, True),
    "redis_restart_empty": (sc_redis_restart_empty, True),
    "sigstop_gateway": (sc_sigstop_gateway, True),
    "sigstop_processor": (sc_sigstop_processor, True),
    "sigstop_redis": (sc_sigstop_redis, True),
    "redis_cluster_failover": (sc_redis_cluster_failover, True),
    "sigstop_kafka": (sc_sigstop_kafka, False),
    "slow_reader": (sc_slow_reader, True),
    "connect_storm": (sc_connect_storm, True),
    **attacks.SCENARIOS,
    "valgrind_gateway": (sc_valgrind_gateway, True),
    "valgrind_processor": (sc_valgrind_processor, True),
    "autobahn_deflate": (sc_autobahn_deflate, True),
}


def tap(text: str) -> None:
    """One TAP line (and its YAML block) in a single write, so stderr's progress lines never land
    inside it."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def yaml_block(d: dict) -> str:
    lines = ["  ---"]
    for k, v in d.items():
        lines.append(f"  {k}: {json.dumps(v, default=str)}")
    lines.append("  ...")
    return "\n".join(lines)


async def run(args) -> int:
    form = FORMS[args.form]
    names = [n for n, (_, short) in SCENARIOS.items() if args.form == "long" or short]
    if args.only:
        wanted = args.only.split(",")
        unknown = [w for w in wanted if w not in SCENARIOS]
        if unknown:
            print(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
            return 2
        names = wanted
    bins = {"gateway": args.gateway, "processor": args.processor, "admin": args.admin,
            "chaos_kafka": args.chaos_kafka}
    for k, v in bins.items():
        if not v or not os.access(v, os.X_OK):
            print(f"chaos: the {k} program '{v}' is missing; build first", file=sys.stderr)
            return 2
    runner = Runner(Path(args.run_dir), args.kafka_port, args.kafka_controller_port,
                    args.redis_port, bins)
    tap(f"1..{len(names)}")
    failed = 0
    results = {}
    try:
        try:
            await asyncio.to_thread(runner.start_servers)
        except ProcError as e:
            for i, n in enumerate(names, 1):
                tap(f"not ok {i} - {n}\n" + yaml_block({"message": f"servers: {e}"}))
            return 1
        for i, n in enumerate(names, 1):
            fn = SCENARIOS[n][0]
            res = Result()
            t0 = time.monotonic()
            log(f"scenario {n} ({args.form})")
            try:
                await fn(runner, form, res)
            except ProcError as e:
                res.failures.append(str(e))
            except Exception as e:  # a bug in the suite itself: report it as this scenario's
                res.failures.append(f"{type(e).__name__}: {e}")
                sys.stderr.write(traceback.format_exc())
            finally:
                runner.close()
            res.fig(seconds=round(time.monotonic() - t0, 1))
            results[n] = {"ok": not res.failures, "failures": res.failures, **res.figures}
            if res.failures:
                failed += 1
                tap(f"not ok {i} - {n}\n" + yaml_block(
                    {"message": "; ".join(res.failures), **res.figures}))
            else:
                tap(f"ok {i} - {n}\n" + "\n".join(
                    f"# {n}: {k} = {json.dumps(v, default=str)}" for k, v in res.figures.items()))
    finally:
        runner.close()
        try:
            await asyncio.to_thread(runner.stop_servers)
        except ProcError as e:
            log(f"stopping the servers: {e}")
        if args.results:
            Path(args.results).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--form", choices=sorted(FORMS), default="short")
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--run-dir", required="--list" not in sys.argv)
    ap.add_argument("--kafka-port", type=int, default=60092)
    ap.add_argument("--kafka-controller-port", type=int, default=60093)
    ap.add_argument("--redis-port", type=int, default=60379)
    ap.add_argument("--gateway")
    ap.add_argument("--processor")
    ap.add_argument("--admin")
    ap.add_argument("--chaos-kafka")
    ap.add_argument("--results", help="write every scenario's figures here as JSON")
    args = ap.parse_args()
    if args.list:
        for n, (fn, short) in SCENARIOS.items():
            doc = " ".join((fn.__doc__ or "").split())
            print(f"{n}{'' if short else ' (long form only)'}: {doc}")
        return 0
    # SIGTERM (meson's timeout, a Ctrl-C in scripts/chaos) unwinds through the finally blocks
    # that stop every child and the servers.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
