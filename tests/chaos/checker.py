"""The reliability checker: numbered messages per user through a wsgate cluster whose processors
run the `echo` handler, and what came back.

Each user keeps one WebSocket connection (to one of the gateway URLs, its "home" first) and sends
text messages "<user>|<seq>|<conn>|<k>": seq numbers the user's messages from 1, conn numbers the
user's connections, k numbers the sends on that connection (resends included). The echo handler
returns every message to the connection that sent it.

What counts (docs/RELIABILITY.md):
- a message is *acknowledged* when its echo has come back: wsgate gives no per-message ack, and a
  client cannot tell which of its unanswered frames reached Kafka before a gateway died;
- after a reconnect the checker resends, in order, every message not acknowledged yet (the
  at-least-once client protocol); with resend_after set it also resends on the same connection
  what stayed unanswered that long (for faults where wsgate documents lost replies);
- lost: sent but never acknowledged by the end (after the final wait);
- duplicates: echoes of a seq already acknowledged (processor redelivery, or a resend whose first
  copy had got in after all);
- order: on one connection, first echoes must come back in the order they were sent (k rises);
  the user's acknowledged seqs must also rise in first-echo order unless resends were involved.

Threads: one asyncio loop (the caller's thread).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException


@dataclass
class ConnRecord:
    url: str
    opened: float
    closed: float = 0.0
    close_code: int | None = None  # None while open; 1006 when no close frame came
    close_reason: str = ""


@dataclass
class User:
    name: str
    home: int
    next_seq: int = 1
    sent: dict = field(default_factory=dict)  # seq -> first send time
    last_try: dict = field(default_factory=dict)  # seq -> latest send time
    acked: dict = field(default_factory=dict)  # seq -> first echo time
    latency: list = field(default_factory=list)  # (send time, seconds) of first echoes
    duplicates: int = 0
    dup_times: list = field(default_factory=list)  # when each duplicate echo arrived
    resends: int = 0
    order_violations: list = field(default_factory=list)
    conns: list = field(default_factory=list)  # ConnRecord per connection
    connect_failures: collections.Counter = field(default_factory=collections.Counter)
    last_seq_echoed: int = 0
    seq_order_breaks: int = 0


class Checker:
    """Runs `users` users against `urls` at `rate` messages/s each until stop() and finish()."""

    def __init__(self, urls: list[str], users: int, rate: float, size: int = 64,
                 window: int = 200, resend_after: float | None = None, prefix: str = "u",
                 backoff_max: float = 2.0):
        self.urls = urls
        self.rate = rate
        self.size = size
        self.window = window
        self.resend_after = resend_after
        self.backoff_max = backoff_max
        self.users = [User(f"{prefix}{i}", home=i % len(urls)) for i in range(users)]
        self.sending = True
        self.running = True
        self.tasks: list[asyncio.Task] = []
        self.connected: dict[str, bool] = {}
        self.t0 = time.monotonic()
        self.errors: list[str] = []

    # -- public ------------------------------------------------------------------------------

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._run_user(u)) for u in self.users]

    def stop_sending(self) -> None:
        self.sending = False

    def outstanding(self) -> int:
        return sum(len(u.sent) - len(u.acked) for u in self.users)

    def unanswered_before(self, t: float) -> int:
        """Messages first sent before monotonic time t and not acknowledged yet."""
        return sum(1 for u in self.users for seq, ts in list(u.sent.items())
                   if ts < t and seq not in u.acked)

    def all_connected(self) -> bool:
        return all(self.connected.get(u.name) for u in self.users)

    def sent_total(self) -> int:
        return sum(len(u.sent) for u in self.users)

    async def finish(self, timeout: float) -> None:
        """Stops sending, waits up to timeout for every echo, then closes every connection."""
        self.stop_sending()
        deadline = time.monotonic() + timeout
        while self.outstanding() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.running = False
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def summary(self) -> dict:
        s = {
            "users": len(self.users),
            "sent": self.sent_total(),
            "acked": sum(len(u.acked) for u in self.users),
            "lost": sum(len(u.sent) - len(u.acked) for u in self.users),
            "duplicates": sum(u.duplicates for u in self.users),
            "resends": sum(u.resends for u in self.users),
            "order_violations": sum(len(u.order_violations) for u in self.users),
            "connections": sum(len(u.conns) for u in self.users),
            "reconnects": sum(max(0, len(u.conns) - 1) for u in self.users),
            "close_codes": dict(collections.Counter(
                c.close_code for u in self.users for c in u.conns if c.close_code is not None)),
            "checker_errors": self.errors[:5],
            "connect_failures": dict(sum((u.connect_failures for u in self.users),
                                         collections.Counter())),
        }
        lost = [(u.name, sorted(set(u.sent) - set(u.acked))[:5]) for u in self.users
                if len(u.sent) != len(u.acked)]
        if lost:
            s["lost_examples"] = lost[:5]
        viol = [(u.name, u.order_violations[:3]) for u in self.users if u.order_violations]
        if viol:
            s["order_examples"] = viol[:5]
        return s

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """First-echo latencies (s) of messages first sent in [since, until) (monotonic times)."""
        return sorted(lat for u in self.users for (t, lat) in u.latency if since <= t < until)

    def duplicates_since(self, since: float) -> int:
        return sum(1 for u in self.users for t in u.dup_times if t >= since)

    def sent_between(self, since: float, until: float) -> int:
        return sum(1 for u in self.users for t in u.sent.values() if since <= t < until)

    def closes(self, url: str | None = None) -> list[ConnRecord]:
        return [c for u in self.users for c in u.conns
                if c.close_code is not None and (url is None or c.url == url)]

    # -- per user ----------------------------------------------------------------------------

    def _payload(self, u: User, seq: int, conn: int, k: int) -> str:
        head = f"{u.name}|{seq}|{conn}|{k}|"
        return head + "x" * max(0, self.size - len(head))

    async def _connect(self, u: User):
        """Connects to the home URL, then the others, with jittered exponential backoff between
        rounds (full jitter, so a gateway's clients do not all come back in the same instant)."""
        attempt = 0
        order = self.urls[u.home:] + self.urls[:u.home]
        while self.running:
            for url in order:
                try:
                    ws = await connect(f"{url}?user={u.name}", ping_interval=None,
                                       open_timeout=5, close_timeout=2, max_size=2**24,
                                       max_queue=None)
                    return ws, url
                except InvalidStatus as e:
                    u.connect_failures[f"http {e.response.status_code}"] += 1
                except (OSError, asyncio.TimeoutError, WebSocketException) as e:
                    u.connect_failures[type(e).__name__] += 1
            attempt += 1
            await asyncio.sleep(random.uniform(0, min(self.backoff_max, 0.05 * 2**attempt)))
        return None, None

    async def _run_user(self, u: User) -> None:
        try:
            while self.running:
                ws, url = await self._connect(u)
                if ws is None:
                    return
                rec = ConnRecord(url=url, opened=time.monotonic())
                u.conns.append(rec)
                self.connected[u.name] = True
                try:
                    await self._session(u, ws, len(u.conns))
                except ConnectionClosed:
                    pass
                finally:
                    self.connected[u.name] = False
                    rec.closed = time.monotonic()
                    # The code the gateway sent (websockets reports 1006 when no close frame
                    # arrived).
                    rec.close_code = ws.close_code if ws.close_code is not None else 1006
                    rec.close_reason = ws.close_reason or ""
                    if not self.running:
                        rec.close_code = None  # our own close at the end: not an event
        except asyncio.CancelledError:
            pass
        except Exception as e:  # a bug of the checker itself: never hide it
            self.errors.append(f"{u.name}: {type(e).__name__}: {e}")

    async def _session(self, u: User, ws, conn: int) -> None:
        k = 0
        max_k_echoed = 0

        async def send(seq: int, resend: bool) -> None:
            nonlocal k
            k += 1
            p = self._payload(u, seq, conn, k)
            now = time.monotonic()
            u.last_try[seq] = now
            if resend:
                u.resends += 1
            else:
                u.sent[seq] = now
            await ws.send(p)

        async def receiver() -> None:
            nonlocal max_k_echoed
            async for msg in ws:
                now = time.monotonic()
                try:
                    _, seq_s, conn_s, k_s, _ = msg.split("|", 4)
                    seq, c, kk = int(seq_s), int(conn_s), int(k_s)
                except ValueError:
                    u.order_violations.append(f"unparsable echo {msg[:40]!r}")
                    continue
                if seq in u.acked:
                    u.duplicates += 1
                    u.dup_times.append(now)
                    continue
                u.acked[seq] = now
                if c == conn:
                    if kk < max_k_echoed:
                        u.order_violations.append(
                            f"conn {conn}: echo of send #{kk} after #{max_k_echoed}")
                    max_k_echoed = max(max_k_echoed, kk)
                if seq < u.last_seq_echoed:
                    u.seq_order_breaks += 1
                u.last_seq_echoed = max(u.last_seq_echoed, seq)
                t_sent = u.sent.get(seq)
                if t_sent is not None and kk == seq_first_k.get(seq):
                    u.latency.append((t_sent, now - t_sent))

        seq_first_k: dict[int, int] = {}
        # Resend, in order, what was sent on earlier connections and never acknowledged.
        for seq in sorted(s for s in u.sent if s not in u.acked):
            await send(seq, resend=True)
        recv_task = asyncio.create_task(receiver())
        try:
            interval = 1.0 / self.rate if self.rate > 0 else None
            next_t = time.monotonic()
            last_resend_scan = time.monotonic()
            while not recv_task.done():
                now = time.monotonic()
                if self.resend_after and now - last_resend_scan >= self.resend_after / 2:
                    last_resend_scan = now
                    for seq in sorted(s for s in u.sent if s not in u.acked):
                        if now - u.last_try[seq] >= self.resend_after:
                            await send(seq, resend=True)
                if (self.sending and interval and now >= next_t
                        and len(u.sent) - len(u.acked) < self.window):
                    seq = u.next_seq
                    u.next_seq += 1
                    seq_first_k[seq] = k + 1
                    await send(seq, resend=False)
                    next_t += interval
                    if next_t < now - 1.0:
                        next_t = now  # paused by the window: do not burst to catch up
                    continue
                wait = 0.05 if not interval else max(0.0, min(0.05, next_t - now))
                await asyncio.wait({recv_task}, timeout=wait or 0.001)
            recv_task.result()
        finally:
            if not recv_task.done():
                recv_task.cancel()
            if not self.running:
                try:
                    await asyncio.wait_for(ws.close(), 2)
                except (asyncio.TimeoutError, WebSocketException, OSError):
                    pass


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _main() -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="run the checker against a running echo cluster")
    ap.add_argument("--url", action="append", required=True, help="gateway URL (repeatable)")
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--rate", type=float, default=10, help="messages per second per user")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    c = Checker(args.url, args.users, args.rate, args.size)
    c.start()
    await asyncio.sleep(args.duration)
    await c.finish(15)
    s = c.summary()
    lat = c.latencies()
    s["p50_ms"] = round(percentile(lat, 0.5) * 1000, 2)
    s["p99_ms"] = round(percentile(lat, 0.99) * 1000, 2)
    print(json.dumps(s, indent=1))


if __name__ == "__main__":
    asyncio.run(_main())
