"""The entry point of scripts/bench: flags, the run of the chosen scenarios, results.json, and the
document. scripts/bench's header describes the flags, the scenarios and the environment."""

import argparse
import datetime
import json
import os
import signal
import time
from pathlib import Path

from wsgate_procs import ProcError

from . import quick, report
from .common import ALL_SCENARIOS, EXTRA_SCENARIOS, REPO, BenchError, log
from .context import Context
from .scenarios import SCENARIOS
from .system import machine


def run(ctx, results, only):
    scenarios = only.split(",") if only else ALL_SCENARIOS
    for s in scenarios:
        if s not in ALL_SCENARIOS + EXTRA_SCENARIOS:
            raise BenchError(f"--only: unknown scenario {s} "
                             f"({', '.join(ALL_SCENARIOS + EXTRA_SCENARIOS)})")
    results["machine"] = machine()
    results["started"] = datetime.datetime.now().isoformat(timespec="seconds")
    results["repeats"] = ctx.repeats
    results["load_before"] = os.getloadavg()
    if ctx.quick:
        quick.run(ctx, ctx.quick_results)
        return
    for s in scenarios:
        log(f"=== {s} (load average {os.getloadavg()[0]:.2f})")
        t0 = time.monotonic()
        try:
            results[s] = SCENARIOS[s](ctx)
        except ProcError as e:
            log(f"{s} failed: {e}")
            results[s] = {"error": str(e)}
        results[s]["seconds"] = time.monotonic() - t0
        results[s]["load_avg"] = ctx.loads.get(s)
        save(ctx, results)
    results["load_after"] = os.getloadavg()
    results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    save(ctx, results)


def save(ctx, results):
    (ctx.run_dir / "results.json").write_text(json.dumps(results, indent=1))


def main():
    ap = argparse.ArgumentParser(prog="scripts/bench",
                                 description="wsgate's benchmarks (see the header of "
                                 "scripts/bench)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every connection count (a dry run on a small machine: 0.05)")
    ap.add_argument("--out", default=str(REPO / "docs" / "BENCHMARKS.md"))
    ap.add_argument("--gateway-arg", action="append", default=[], metavar="FLAG",
                    help="append FLAG to every gateway's command line (repeat for more; "
                    "e.g. --gateway-arg=--loop-clock --gateway-arg=-X --gateway-arg=linger.ms=1)")
    ap.add_argument("--processor-arg", action="append", default=[], metavar="FLAG",
                    help="append FLAG to every processor's command line (repeat for more)")
    args = ap.parse_args()
    if args.repeats < 1 or args.repeats > 20:
        ap.error("--repeats: 1..20")
    if not 0.001 <= args.scale <= 1.0:
        ap.error("--scale: 0.001..1")
    ctx = Context(args)

    def on_signal(sig, frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    rc = 0
    try:
        if args.report_only:
            res = json.loads((ctx.run_dir / "results.json").read_text())
        else:
            ctx.prepare()
            res = {}
            run(ctx, res, args.only)
        if not args.quick:
            out = Path(args.out)
            report.write_doc(res, out, out.parent / "bench", ctx.run_dir)
    except ProcError as e:
        log(f"error: {e}")
        rc = 1
    except KeyboardInterrupt:
        log("interrupted; stopping what was started")
        rc = 130
    finally:
        ctx.procs.stop_all(timeout=10)
        if not args.report_only:
            ctx.stop_servers()
    if args.quick:
        # The last line, counted by scripts/test's run_runner; an error outside the checks (no
        # binary, no topic) is one failure.
        qr = ctx.quick_results
        passed, failed = sum(qr), len(qr) - sum(qr) + (1 if rc != 0 and all(qr) else 0)
        if failed == 0 and rc == 0:
            log("quick: the benchmark machinery works")
        print(f"{passed} passed, {failed} failed", flush=True)
        return 1 if failed else 0
    return rc
