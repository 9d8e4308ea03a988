"""The hostile-client scenarios of wsgate's chaos suite (issue 16, docs/RELIABILITY.md "Hostile
input"): one per attack class, each bounded in count and time, loopback only, run while the
checker's well-behaved clients (200 in the long form) exchange messages through the same gateway.

Every scenario has the same frame (attacked()): a quiet phase, then the attack, then 2 s of
aftermath. It passes when the attack is contained (the figure of what it managed to hold:
sockets, bytes, Redis keys), the well-behaved clients lose nothing and keep their connections
(success rate 100 %), and their p99 latency during the attack stays within 2x their quiet p99
(or 50 ms above it when that is under 50 ms: scheduler noise on 2 shared cores).

Threads: the caller's asyncio loop; blocking socket work of an attacker goes to worker threads
(asyncio.to_thread) so the checker keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time

from checker import Checker, percentile
from harness import ChaosError, Cluster, Runner, log, rss_kib
from scenario import Result, check_traffic, start_checker, until


# --- raw WebSocket pieces ------------------------------------------------------------------------


def raw_upgrade(user: str, port: int, rcvbuf: int | None = None, src: str = "127.0.0.1",
                timeout: float = 10) -> socket.socket:
    """An upgraded socket for `user` (the chaos gateways run with --insecure-dev-user), with
    nothing after the 101's headers consumed."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    try:
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        s.sendall((f"GET /?user={user} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)  # byte by byte: nothing after the headers is consumed
            if not chunk:
                raise ChaosError("upgrade: connection closed")
            head += chunk
    except BaseException:
        s.close()
        raise
    if not head.startswith(b"HTTP/1.1 101"):
        s.close()
        raise ChaosError(f"upgrade refused: {head[:60]!r}")
    return s


def frame_header(b0: int, n: int) -> bytes:
    """The header of a masked frame of n payload bytes with first byte b0 and a zero mask key
    (legal: the client chooses it, and the payload goes out as it is)."""
    if n < 126:
        hdr = bytes([b0, 0x80 | n])
    elif n < 65536:
        hdr = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        hdr = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    return hdr + b"\0\0\0\0"


def raw_frame(b0: int, payload: bytes) -> bytes:
    return frame_header(b0, len(payload)) + payload


def masked_frame(opcode: int, payload: bytes) -> bytes:
    return raw_frame(0x80 | opcode, payload)


def read_close(s: socket.socket, timeout: float) -> tuple[str, int | None, str]:
    """Reads server frames until a close frame: ("close", code, reason); or how the connection
    ended without one: ("eof" | "reset" | "timeout", None, "")."""
    buf = b""
    end = time.monotonic() + timeout
    while True:
        while len(buf) >= 2:
            n, h = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, h = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, h = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < h + n:
                break
            if buf[0] & 0x0F == 0x8:
                p = buf[h:h + n]
                code = int.from_bytes(p[:2], "big") if n >= 2 else 1005
                return "close", code, p[2:].decode(errors="replace")
            buf = buf[h + n:]
        left = end - time.monotonic()
        if left <= 0:
            return "timeout", None, ""
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return "timeout", None, ""
        except ConnectionResetError:
            return "reset", None, ""
        if not chunk:
            return "eof", None, ""
        buf += chunk


def read_end(s: socket.socket, timeout: float) -> str:
    """Reads and drops until the connection ends: "fin", "reset" or "timeout"."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return "timeout"
        s.settimeout(left)
        try:
            if not s.recv(65536):
                return "fin"
        except socket.timeout:
            return "timeout"
        except ConnectionResetError:
            return "reset"


# --- the frame every attack scenario shares ------------------------------------------------------


class Attacked:
    """A cluster (one gateway, one echo processor) whose checker has had its quiet phase."""

    def __init__(self, c: Cluster, gw, chk: Checker, t_quiet: float, t_attack: float):
        self.c, self.gw, self.chk = c, gw, chk
        self.t_quiet, self.t_attack = t_quiet, t_attack
        self.users = len(chk.users)
        self.port = gw.extra["port"]


async def attacked(r: Runner, form: dict, name: str, gw_flags: list[str]) -> Attacked:
    c = Cluster(r, name)
    gw = c.start_gateway(gw_flags)
    c.start_processor()
    chk = await start_checker(c, form, users=form["attack_users"], rate=form["attack_rate"])
    t_quiet = time.monotonic()
    await asyncio.sleep(form["attack_quiet"])
    log(f"{name}: attack ({len(chk.users)} well-behaved clients)")
    return Attacked(c, gw, chk, t_quiet, time.monotonic())


async def contained(res: Result, a: Attacked) -> None:
    """The end of every attack scenario: 2 s of aftermath, then the well-behaved clients'
    criteria (quiet p99 against attacked p99, nothing lost, no connection dropped)."""
    await asyncio.sleep(2)  # the aftermath of the attack belongs to the measured window
    t_after = time.monotonic()
    res.check(a.gw.alive(), "the gateway died")
    await a.chk.finish(20)
    quiet = a.chk.latencies(a.t_quiet, a.t_attack)
    during = a.chk.latencies(a.t_attack, t_after)
    p99q, p99a = percentile(quiet, 0.99), percentile(during, 0.99)
    s = check_traffic(res, a.chk, strict=True)
    res.fig(clients=a.users, attack_s=round(t_after - a.t_attack, 1),
            p99_quiet_ms=round(p99q * 1000, 1), p99_attacked_ms=round(p99a * 1000, 1),
            p99_ratio=round(p99a / p99q, 2) if p99q else None,
            success_pct=round(100.0 * s["acked"] / s["sent"], 2) if s["sent"] else None,
            load_avg=os.getloadavg()[0])
    res.check(len(quiet) >= 20 and len(during) >= 20, f"too few latency samples: {len(quiet)} "
              f"quiet, {len(during)} during the attack")
    res.check(p99a <= max(2 * p99q, p99q + 0.05), f"the well-behaved clients' p99 rose from "
              f"{p99q * 1000:.0f} ms (quiet) to {p99a * 1000:.0f} ms during the attack")
    for p in a.c.stop_all():
        res.failures.append(p)


# --- unauthenticated sockets and junk upgrades ---------------------------------------------------


def _door_socket(port: int, first: bytes) -> socket.socket | None:
    """A socket from 127.0.0.2 (the attacker's address: loopback is a /8) that sends `first`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.2", 0))
        s.settimeout(2)
        s.connect(("127.0.0.1", port))
        if first:
            s.sendall(first)
        s.setblocking(False)
        return s
    except OSError:
        s.close()
        return None


def _door_open(socks: list) -> int:
    """How many of the attacker's sockets the gateway still holds open: reads what each was
    answered (non-blocking) to its end; an end (EOF or reset) means closed."""
    n = 0
    for s in socks:
        try:
            while True:
                if s.recv(65536) == b"":
                    break  # EOF: the gateway closed it
        except BlockingIOError:
            n += 1  # nothing more to read, and no end: still open
        except OSError:
            pass  # reset: closed
    return n


def _newcomer(port: int, i: int) -> bool:
    """A real user's first upgrade (from 127.0.0.1) while the junk flies: must get 101."""
    try:
        raw_upgrade(f"newcomer-{i}", port, timeout=5).close()
        return True
    except (OSError, ChaosError):
        return False


async def sc_door_flood(r: Runner, form: dict, res: Result) -> None:
    """Unauthenticated socket holders and junk upgrades (issue 16 items 1-3) from one address
    (127.0.0.2) on a gateway with --handshake-timeout 2s, --max-pending-per-addr 32 and
    --max-upgrades-per-addr 20: door_sockets each of silent sockets, CONNECT requests, request
    heads that stop half-way (slowloris) and upgrades with well-shaped tokens whose signature is
    bad; meanwhile a new real user upgrades every 0.25 s from 127.0.0.1. Pass: the gateway holds
    at most 32 attack sockets at any time and none 2 s past the handshake timeout; a CONNECT is
    answered 405 and a junk upgrade 401 or 503 (over the address' budget, seen at least once),
    unless refused at accept; every new real user gets 101 at the first try; the well-behaved
    clients' criteria (module docstring)."""
    a = await attacked(r, form, "door", ["--handshake-timeout", "2s", "--max-pending-per-addr",
                                         "32", "--max-upgrades-per-addr", "20"])
    n = form["door_sockets"]
    junk = (b"GET /?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln HTTP/1.1\r\nHost: x\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    # Answered ones first: the sockets left waiting would take the address' whole pending cap.
    kinds = {"connect": b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", "junk": junk,
             "slowloris": b"GET / HTTP/1.1\r\nX-a: ", "silent": b""}
    newcomers: list[bool] = []
    attacking = True

    async def probe():
        while attacking:
            newcomers.append(await asyncio.to_thread(_newcomer, a.port, len(newcomers)))
            await asyncio.sleep(0.25)

    probe_task = asyncio.create_task(probe())
    socks: list = []
    held_max = 0
    for kind, first in kinds.items():
        for _ in range(n):
            s = await asyncio.to_thread(_door_socket, a.port, first)
            if s:
                socks.append((kind, s))
        await asyncio.sleep(0.2)
        held_max = max(held_max, int(a.gw.metrics().get("wsgate_gateway_handshakes", 0)))
    # What each CONNECT and junk upgrade was answered: a status, or "" (closed unanswered: refused
    # at accept by the address' pending cap).
    answered: dict[str, int] = {}
    for kind, s in socks:
        if kind not in ("junk", "connect"):
            continue
        try:
            head = s.recv(64, socket.MSG_PEEK)
        except OSError:
            head = b""
        key = f"{kind} {head[9:12].decode(errors='replace')}".strip()
        answered[key] = answered.get(key, 0) + 1
    await asyncio.sleep(2.0 + 2.0)  # the handshake timeout, and 2 s of slack on a loaded box
    held_after = _door_open([s for _, s in socks])
    attacking = False
    await probe_task
    m = a.gw.metrics()
    refused = sum(v for k, v in m.items() if k.startswith("wsgate_gateway_accept_refused_total"))
    for _, s in socks:
        s.close()
    res.fig(attack_sockets=len(socks), held_max=held_max, held_after_timeout=held_after,
            refused_at_accept=int(refused), answers=answered, newcomers=len(newcomers),
            newcomers_in=sum(newcomers))
    res.check(held_max <= 32, f"the attacker held {held_max} sockets before their upgrade (cap 32)")
    res.check(held_after == 0, f"{held_after} attack sockets still open 2 s past the timeout")
    res.check(refused > 0, "no socket was refused at accept: the per-address cap did not engage")
    wrong = {k: v for k, v in answered.items()
             if k not in ("connect 405", "connect", "junk 401", "junk 503", "junk")}
    res.check(not wrong, f"answers other than 405 to CONNECT and 401 or 503 to junk: {wrong}")
    res.check(answered.get("connect 405", 0) > 0, "no CONNECT request was answered 405")
    res.check(answered.get("junk 503", 0) > 0, "no junk upgrade was refused for the address' "
              "budget")
    res.check(newcomers and all(newcomers), f"{newcomers.count(False)} of {len(newcomers)} new "
              "real users were refused during the junk flood")
    await contained(res, a)


# --- authenticated users: connections per user, memory --------------------------------------------


async def sc_user_flood(r: Runner, form: dict, res: Result) -> None:
    """Authenticated attacks (issue 16 items 4 and 5) on a gateway with --max-conns-per-user 8 and
    --sendq-max 1m: one user opens `flood_conns` connections (all but 8 must be closed with 4004),
    then 6 users who never read (4 KiB receive buffers) send 16 KiB messages every 30 ms (for
    6-20 s, until the budget closes one) for the echo to pile up (the send queues together must stay
    near --sendq-max, the largest closed with 4001). Pass: the attacks are contained, and the
    well-behaved clients' criteria (module docstring)."""
    a = await attacked(r, form, "uflood", ["--max-conns-per-user", "8", "--sendq-max", "1m",
                                           "--sendq-hard", "2m", "--sendq-soft", "2m",
                                           "--sendq-soft-time", "1h"])
    n = form["flood_conns"]
    flood = []
    for _ in range(n):
        try:
            flood.append(await asyncio.to_thread(raw_upgrade, "mallory", a.port))
        except (OSError, ChaosError):
            pass
    held = await until(lambda: a.gw.metrics().get("wsgate_gateway_connections") == a.users + 8,
                       10, 0.1)
    m = a.gw.metrics()
    refused = int(m.get('wsgate_gateway_closes_total{code="4004"}', 0))
    res.fig(flood_upgraded=len(flood), flood_refused_4004=refused,
            flood_held=int(m.get("wsgate_gateway_connections", 0)) - a.users)
    res.check(bool(held), f"mallory holds {int(m.get('wsgate_gateway_connections', 0)) - a.users}"
              " connections, expected 8 (--max-conns-per-user)")
    res.check(refused == len(flood) - 8, f"{refused} closes with 4004, expected {len(flood) - 8}")
    for s in flood:
        s.close()
    hogs = [await asyncio.to_thread(raw_upgrade, f"hog-{i}", a.port, 4096) for i in range(6)]
    for s in hogs:
        s.setblocking(False)
    loop = asyncio.get_running_loop()
    chunk = masked_frame(2, os.urandom(16384))
    peak = budget = 0
    rss0 = rss_max = rss_kib(a.gw.pid)
    # At least 6 s, and on until the budget has closed a queue (their echoes pile up as fast as
    # the processor returns them: slower on a loaded box), at most 20 s.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20 and (time.monotonic() - t0 < 6 or budget == 0):
        for s in hogs:
            try:
                await asyncio.wait_for(loop.sock_sendall(s, chunk), 0.05)
            except (OSError, asyncio.TimeoutError):
                pass  # closed, or no longer read: it has done its part
        await asyncio.sleep(0.03)
        m = a.gw.metrics()
        peak = max(peak, int(m.get("wsgate_gateway_sendq_bytes", 0)))
        budget = int(m.get("wsgate_gateway_sendq_budget_closes_total", 0))
        rss_max = max(rss_max, rss_kib(a.gw.pid))
    m = a.gw.metrics()
    budget = int(m.get("wsgate_gateway_sendq_budget_closes_total", 0))
    c4001 = int(m.get('wsgate_gateway_closes_total{code="4001"}', 0))
    for s in hogs:
        s.close()
    res.fig(sendq_peak_kib=peak // 1024, sendq_budget_closes=budget, closes_4001=c4001,
            rss_before_kib=rss0, rss_max_kib=rss_max)
    # Sampled between pushes: the bound is enforced on each one, so a sample may exceed it by at
    # most the message in flight.
    res.check(peak <= (1 << 20) + 64 * 1024, f"the send queues held {peak} bytes (--sendq-max 1m)")
    res.check(budget >= 1, "no queue was closed for --sendq-max: the non-readers were not held")
    await contained(res, a)


# --- storage amplification -----------------------------------------------------------------------


async def _dm_flood(url: str, ghosts: int, first: int, window: int) -> int:
    """One connection of mallory's sending chat `dm`s to ghost-<first>..., `window` in flight;
    returns how many got their `offline` answer."""
    from websockets.asyncio.client import connect

    ok = 0
    async with connect(f"{url}?user=mallory", ping_interval=None, max_size=2**20) as ws:
        for base in range(first, first + ghosts, window):
            batch = range(base, min(base + window, first + ghosts))
            for i in batch:
                await ws.send(f'{{"op":"dm","to":"ghost-{i:06d}","text":"boo"}}')
            for _ in batch:
                if '"offline"' in await asyncio.wait_for(ws.recv(), 30):
                    ok += 1
    return ok


def _prefix_usage(c: Cluster) -> tuple[int, int]:
    """(keys, bytes by MEMORY USAGE) under the cluster's Redis prefix."""
    keys = c.redis.keys_matching(f"{c.prefix}*")
    return len(keys), sum(int(c.redis.cmd("MEMORY", "USAGE", k, "SAMPLES", "0") or 0)
                          for k in keys)


def _used_memory(c: Cluster) -> int:
    m = re.search(r"^used_memory:(\d+)", c.redis.cmd("INFO", "memory"), re.M)
    return int(m.group(1)) if m else -1


async def sc_storage_flood(r: Runner, form: dict, res: Result) -> None:
    """Storage amplification (issue 16 item 7): a user of the chat handler sends `ghosts` direct
    messages (2,000 short, 20,000 long) to made-up user ids on one connection, ghost_window in
    flight (50 short, 250 long: at most the gateway's default --rate-msgs, 1,000/s). The chat runs
    as a cluster of its own (gateway, chat processor) on the Redis server and Kafka broker the
    well-behaved echo clients' cluster uses: the shared store is what the attack aims at. Pass:
    every dm gets its `offline` answer; the keys under the chat cluster's prefix and their bytes
    stay flat (not one key per ghost); Redis used_memory grows by less than 2 MiB (before the fix:
    ~4.8 KB per ghost); the well-behaved clients' criteria (module docstring)."""
    a = await attacked(r, form, "storage", [])
    chat = Cluster(r, "chat")
    try:
        cgw = chat.start_gateway()
        # dm_offline=tell: every dm to a ghost is answered `offline`, which paces the flood (the
        # chat default, silent, answers nothing: docs/HANDLERS.md).
        cp = chat.start_processor(["--handler", "chat", "--handler-arg", "dm_offline=tell"])
        url = cgw.extra["url"]
        # Mallory's own keys (her connection, her chat state) exist before the count.
        await _dm_flood(url, 1, 999999, 1)
        keys0, bytes0 = await asyncio.to_thread(_prefix_usage, chat)
        mem0 = await asyncio.to_thread(_used_memory, chat)
        n = form["ghosts"]
        t0 = time.monotonic()
        answered = await _dm_flood(url, n, 0, form["ghost_window"])
        took = time.monotonic() - t0
        keys1, bytes1 = await asyncio.to_thread(_prefix_usage, chat)
        mem1 = await asyncio.to_thread(_used_memory, chat)
        unseq = cp.metrics().get("wsgate_processor_resume_unsequenced_total", 0)
        res.fig(ghosts=n, dm_s=round(took, 1), offline_answers=answered, keys_before=keys0,
                keys_after=keys1, key_bytes_before=bytes0, key_bytes_after=bytes1,
                used_memory_before=mem0, used_memory_after=mem1, unsequenced=int(unseq))
        res.check(answered == n, f"{answered} of {n} dms got their offline answer")
        res.check(keys1 == keys0, f"the flood left {keys1 - keys0} keys behind")
        res.check(bytes1 <= bytes0 + 1024, f"the chat prefix's keys grew by {bytes1 - bytes0} "
                  "bytes")
        res.check(mem1 - mem0 < 2 << 20, f"Redis used_memory grew by {mem1 - mem0} bytes")
    finally:
        for p in chat.stop_all():
            res.failures.append(p)
    await contained(res, a)


# --- oversized and malformed frames --------------------------------------------------------------

# (what, bytes sent after the upgrade, the end expected: a close code, or "drop" when
# libwebsockets ends the connection with or without a close frame; hostile_frames pins each).
MALFORMED = [
    ("reserved opcode 3", raw_frame(0x83, b"hi"), 1002),
    ("RSV1 without an extension", raw_frame(0xC1, b"hi"), 1002),
    ("continuation without a start", raw_frame(0x80, b"x"), 1002),
    ("fragmented ping", raw_frame(0x09, b"p"), 1002),
    ("close code 1005", raw_frame(0x88, b"\x03\xed"), 1002),
    ("an HTTP request after the upgrade", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1002),
    ("overlong UTF-8", raw_frame(0x81, b"\xc0\xaf"), 1007),
    ("UTF-16 surrogate", raw_frame(0x81, b"\xed\xa0\x80"), 1007),
    ("2^36-byte length", frame_header(0x82, 1 << 36) + b"x", 1009),
    ("126-byte ping", raw_frame(0x89, b"p" * 126), "drop"),
    ("64-bit length, top bit set", bytes([0x82, 0xFF, 0x80]) + bytes(11) + b"x", "drop"),
]


def _malformed_round(port: int, data: bytes, expected) -> str:
    """One malformed frame on a fresh connection; returns how it ended ("close <code>", "eof",
    "reset", "timeout") and whether that is the end expected ("ok" prefix)."""
    s = raw_upgrade("malformed", port)
    try:
        s.sendall(data)
        how, code, _ = read_close(s, 10)
    finally:
        s.close()
    got = f"close {code}" if how == "close" else how
    good = (how == "close" and code == expected) or (expected == "drop" and how != "timeout")
    return ("ok " if good else "BAD ") + got


def big_frame_round(port: int, size: int, chunk: int | None, timeout: float = 60,
                    end_timeout: float = 10, pace: float = 0) -> dict:
    """A binary frame of `size` payload bytes, written at full speed in one call (chunk None) or
    in writes of `chunk` bytes (at most `pace` bytes/s if set), by a thread, while this one
    reads. Then, as a real client does
    once its frame is out, our close frame, and the end of the connection. Returns what was
    seen: the close frame (its code, after how many ms) or how the connection ended before it,
    what became of the writer, and whether the connection then ended with a FIN or a reset."""
    s = raw_upgrade("bigframe", port)
    body = bytearray(size)  # calloc'd: untouched zero pages, no memory until read
    writer = {"sent": 0, "error": None}

    def write():
        try:
            s.sendall(frame_header(0x82, size))
            if chunk is None:
                s.sendall(body)
                writer["sent"] = size
            else:
                mv = memoryview(body)
                for off in range(0, size, chunk):
                    s.sendall(mv[off:off + chunk])
                    writer["sent"] = off + chunk
                    if pace and time.monotonic() - t0 < writer["sent"] / pace:
                        time.sleep(writer["sent"] / pace - (time.monotonic() - t0))
        except OSError as e:
            writer["error"] = type(e).__name__
        writer["ms"] = round((time.monotonic() - t0) * 1000)

    t0 = time.monotonic()
    s.settimeout(timeout)  # sendall's total
    rd = s.dup()  # the reader's own timeouts (a socket object's timeout is not per thread)
    w = threading.Thread(target=write, daemon=True)
    w.start()
    try:
        how, code, reason = read_close(rd, timeout)
        close_ms = round((time.monotonic() - t0) * 1000)
        w.join(timeout)
        end = "writer stuck"
        if not w.is_alive():
            if writer["error"] is None:
                try:
                    s.sendall(masked_frame(8, (1009).to_bytes(2, "big")))
                except OSError as e:
                    writer["error"] = f"close: {type(e).__name__}"
            end = read_end(rd, end_timeout)
    finally:
        rd.close()
        s.close()
    return {"mib": round(size / (1 << 20), 2), "writes": "one call" if chunk is None else chunk,
            "seen": f"close {code}" if how == "close" else how, "close_ms": close_ms,
            "reason": reason, "written_mib": round(writer["sent"] / (1 << 20), 1),
            "writer_error": writer["error"], "written_ms": writer.get("ms"), "end": end,
            "ms": round((time.monotonic() - t0) * 1000)}


async def sc_frame_flood(r: Runner, form: dict, res: Result) -> None:
    """Oversized and malformed frames (issue 16 item 8; hostile_frames) on a gateway with
    --max-message 512k: frames of each size in big_frames (long 1, 16, 64 and 256 MiB; short
    16 MiB), each written at full speed in one call and in 4 KiB writes, then the client's close;
    and every frame of MALFORMED frame_rounds times; each on a connection of its own. Pass: every
    oversized frame gets close 1009 with its close frame read by the client, the whole frame is
    taken (no failed write) and the connection ends with a FIN once the client's close follows
    (never a reset); every malformed frame gets its documented end; afterwards no attack
    connection is left and the reassembly buffers are empty; the gateway's RSS grows by less
    than 32 MiB (nothing of a frame is buffered past the limit); the well-behaved clients'
    criteria (module docstring)."""
    a = await attacked(r, form, "frames", ["--max-message", "512k"])
    rss0 = rss_kib(a.gw.pid)
    rss_max = rss0
    big = []
    for size in form["big_frames"]:
        for chunk in (None, 4096):
            big.append(await asyncio.to_thread(big_frame_round, a.port, size, chunk))
            rss_max = max(rss_max, rss_kib(a.gw.pid))
    ends: dict[str, int] = {}
    for _ in range(form["frame_rounds"]):
        for what, data, expected in MALFORMED:
            got = await asyncio.to_thread(_malformed_round, a.port, data, expected)
            ends[f"{what}: {got}"] = ends.get(f"{what}: {got}", 0) + 1
        rss_max = max(rss_max, rss_kib(a.gw.pid))
    left = await until(lambda: a.gw.metrics().get("wsgate_gateway_connections") == a.users, 10,
                       0.1)
    rx = a.gw.metrics().get("wsgate_gateway_rx_buffer_bytes", -1)
    res.fig(big_frames=big, malformed=ends, rss_before_kib=rss0, rss_max_kib=rss_max,
            rx_buffer_bytes_after=rx)
    bad_big = [b for b in big if b["seen"] != "close 1009"]
    res.check(not bad_big, f"oversized frames without their 1009 read: {bad_big}")
    reset = [b for b in big if b["writer_error"] or b["end"] != "fin"]
    res.check(not reset, f"oversized frames whose connection did not end with a FIN after the "
              f"client's close (a reset, a failed write, or still open 10 s later): {reset}")
    bad = {k: v for k, v in ends.items() if k.split(": ")[-1].startswith("BAD")}
    res.check(not bad, f"malformed frames with another end than documented: {bad}")
    res.check(bool(left), f"{a.gw.metrics().get('wsgate_gateway_connections')} connections "
              f"counted after the attack, {a.users} well-behaved")
    res.check(rx == 0, f"{rx} bytes left in reassembly buffers")
    res.check(rss_max - rss0 < 32 * 1024, f"gateway RSS grew by {(rss_max - rss0) // 1024} MiB")
    await contained(res, a)


# name -> (function, in the short form)
SCENARIOS = {
    "door_flood": (sc_door_flood, True),
    "user_flood": (sc_user_flood, True),
    "storage_flood": (sc_storage_flood, True),
    "frame_flood": (sc_frame_flood, True),
}
