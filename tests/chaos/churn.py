"""Short-lived clients for the chaos scenarios, in a process of their own.

Each client connects (retrying a refusal with jittered backoff, as clients do), sends one
message, waits for its echo and closes. The gateway reads nothing from a connection before Redis
has registered it, so the echo proves the client was routed; no echo within 10 s counts as a
resend on a new connection (at-least-once). A client not routed within `give_up` seconds is a
failure.

Why a process: run in the scenario's own asyncio loop beside 1,000 long-lived clients, the
clients started at 67 connects/s of the 100 asked (redis_cluster_failover's long form, docs/
RELIABILITY.md): a websockets handshake is a few milliseconds of Python, and one loop on a busy
core could not start them on time. ChurnProcess runs `python3 churn.py` with its own loop and
reads its figures back when told to stop.

Protocol with the child: it prints "started" once its first client is under way; a line (or
EOF) on its stdin stops it from starting more, and once the clients under way have ended (each
within give_up) it prints one JSON object with its figures and exits. EOF covers a parent that
died: the child never outlives it by more than give_up.

Threads: one asyncio loop per process (the stdin read runs in a worker thread of the child).
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

# Short enough to read in one line of a TAP report.
FAILED_KEPT = 20


class Churn:
    """Short-lived clients at `rate` connects/s over `urls` until finish()."""

    def __init__(self, urls: list[str], rate: float, prefix: str = "churn", give_up: float = 30.0):
        self.urls = urls
        self.rate = rate
        self.prefix = prefix
        self.give_up = give_up
        self.running = False
        self.tasks: list[asyncio.Task] = []
        self.runner: asyncio.Task | None = None
        self.routed = 0
        self.refused = 0  # upgrades answered with an HTTP status (503 while Redis is not ready)
        self.resent = 0
        self.errors: collections.Counter = collections.Counter()
        self.failed: list[str] = []
        self.latency: list[float] = []  # first attempt to echo, per routed client
        self.t_start = self.t_end = 0.0

    def start(self) -> None:
        self.running = True
        self.t_start = time.monotonic()
        self.runner = asyncio.create_task(self._run())

    async def finish(self) -> None:
        """Stops starting clients and waits for those under way (each ends within give_up)."""
        self.running = False
        self.t_end = time.monotonic()
        if self.runner is not None:
            await self.runner
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def summary(self) -> dict:
        lat = sorted(self.latency)
        return {"started": len(self.tasks),
                "per_s": len(self.tasks) / max(1e-9, (self.t_end or time.monotonic()) -
                                               self.t_start),
                "routed": self.routed, "refused": self.refused, "resent": self.resent,
                "errors": dict(self.errors), "failed": self.failed[:FAILED_KEPT],
                "failed_count": len(self.failed),
                "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None}

    async def _run(self) -> None:
        # The schedule is absolute (t0 + i / rate): a loop that fell behind catches up.
        t0 = time.monotonic()
        while self.running:
            i = len(self.tasks)
            self.tasks.append(asyncio.create_task(self._one(i)))
            await asyncio.sleep(max(0.0, t0 + (i + 1) / self.rate - time.monotonic()))

    async def _one(self, i: int) -> None:
        name = f"{self.prefix}{i}"
        url = self.urls[i % len(self.urls)]
        t0 = time.monotonic()
        attempt = 0
        while time.monotonic() - t0 < self.give_up:
            try:
                async with connect(f"{url}?user={name}", ping_interval=None, open_timeout=5,
                                   close_timeout=2) as ws:
                    await ws.send(f"{name}|1|1|{attempt + 1}|churn")
                    msg = await asyncio.wait_for(ws.recv(), 10)
                    if isinstance(msg, str) and msg.startswith(f"{name}|1|"):
                        self.routed += 1
                        self.latency.append(time.monotonic() - t0)
                        return
                    self.failed.append(f"{name}: unexpected echo {str(msg)[:40]!r}")
                    return
            except InvalidStatus:
                self.refused += 1
            except asyncio.TimeoutError:
                self.resent += 1
            except (OSError, WebSocketException) as e:
                self.errors[type(e).__name__] += 1
            attempt += 1
            await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
        self.failed.append(f"{name}: not routed within {self.give_up:.0f} s")


class ChurnProcess:
    """The parent's side: start() launches the child and returns once its clients have begun;
    finish() stops it and returns its summary (Churn.summary()), or raises RuntimeError when the
    child died or printed no figures."""

    def __init__(self, urls: list[str], rate: float, prefix: str = "churn",
                 give_up: float = 30.0):
        self.args = [sys.executable, str(Path(__file__).resolve()), "--rate", str(rate),
                     "--prefix", prefix, "--give-up", str(give_up)]
        for u in urls:
            self.args += ["--url", u]
        self.give_up = give_up
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if line.strip() != b"started":
            await self.kill()
            raise RuntimeError(f"churn.py did not start: {line[:200]!r}")

    async def finish(self) -> dict:
        assert self.proc is not None
        try:
            self.proc.stdin.write(b"stop\n")
            await self.proc.stdin.drain()
            self.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), self.give_up + 30)
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            await self.kill()
            raise RuntimeError("churn.py did not report within give_up + 30 s") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"churn.py exited with status {self.proc.returncode}")
        try:
            return json.loads(out)
        except ValueError:
            raise RuntimeError(f"churn.py printed no figures: {out[:200]!r}") from None

    async def kill(self) -> None:
        """Ends the child (by its own pid) if it still runs."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="short-lived clients against an echo cluster until "
                                 "a line or EOF on stdin; prints their figures as JSON")
    ap.add_argument("--url", action="append", required=True, help="gateway URL (repeatable)")
    ap.add_argument("--rate", type=float, required=True, help="clients started a second")
    ap.add_argument("--prefix", default="churn", help="user ids: <prefix><n>")
    ap.add_argument("--give-up", type=float, default=30.0,
                    help="seconds after which a client not routed counts as failed")
    args = ap.parse_args()
    if not args.rate > 0:
        ap.error("--rate must be above 0")
    ch = Churn(args.url, args.rate, args.prefix, args.give_up)
    ch.start()
    print("started", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await ch.finish()
    print(json.dumps(ch.summary()), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
