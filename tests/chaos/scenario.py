"""What every chaos scenario shares: its result, a wait that keeps the checker running, the
traffic criteria and the start of the checker. chaos.py (the faults) and attacks.py (the hostile
clients of issue 16) both build on it.

Threads: the caller's asyncio loop.
"""

from __future__ import annotations

import asyncio

from checker import Checker, percentile
from harness import ChaosError, Cluster, deadline


class Result:
    """What a scenario found: failures (each a sentence) and figures (shown either way)."""

    def __init__(self):
        self.failures: list[str] = []
        self.figures: dict = {}

    def check(self, cond: bool, msg: str) -> bool:
        if not cond:
            self.failures.append(msg)
        return cond

    def fig(self, **kw) -> None:
        self.figures.update(kw)


async def until(fn, timeout: float, interval: float = 0.1):
    """Awaits fn() truthy (returns it) or timeout seconds (returns None); the checker keeps
    running meanwhile."""
    for _ in deadline(timeout):
        v = fn()
        if v:
            return v
        await asyncio.sleep(interval)
    return None


def check_traffic(res: Result, chk: Checker, *, strict: bool, max_dups: int | None = None,
                  dups_since: float = 0.0) -> dict:
    """The criteria every traffic scenario shares: nothing lost, per-connection order kept;
    strict: no connection dropped and nothing resent (wsgate alone kept every message);
    max_dups: at most that many duplicates arrived from dups_since on."""
    s = chk.summary()
    lat = chk.latencies()
    s["p50_ms"] = round(percentile(lat, 0.5) * 1000, 1)
    s["p99_ms"] = round(percentile(lat, 0.99) * 1000, 1)
    res.fig(traffic=s)
    res.check(s["sent"] > 0, "the checker sent nothing")
    res.check(not s["checker_errors"], f"the checker itself failed: {s['checker_errors']}")
    res.check(s["lost"] == 0, f"{s['lost']} of {s['sent']} messages never acknowledged "
              f"(examples: {s.get('lost_examples')})")
    res.check(s["order_violations"] == 0, f"{s['order_violations']} echoes out of order "
              f"(examples: {s.get('order_examples')})")
    if strict:
        res.check(s["reconnects"] == 0, f"{s['reconnects']} reconnects where every connection "
                  f"should have stayed open (closes: {s['close_codes']})")
        res.check(s["resends"] == 0, f"{s['resends']} resends in a scenario without them")
    if max_dups is not None:
        d = chk.duplicates_since(dups_since)
        res.fig(duplicates_after_fault=d)
        res.check(d <= max_dups, f"{d} duplicates after the fault, more than the bound {max_dups}")
    return s


async def start_checker(c: Cluster, form: dict, **kw) -> Checker:
    chk = Checker(c.urls(), kw.pop("users", form["users"]), kw.pop("rate", form["rate"]), **kw)
    chk.start()
    # 30 s: the attack scenarios connect 200 users on a loaded box.
    if not await until(chk.all_connected, 30):
        raise ChaosError(f"the checker's users did not all connect: {chk.summary()}")
    await asyncio.sleep(form["settle"])
    return chk
