"""The entry point of scripts/bench: flags, the run of the chosen scenarios, results.json, and the
document. scripts/bench's header describes the flags, the scenarios and the environment."""

import argparse
import datetime
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from wsgate_procs import ProcError

from . import quick, report, results
from .common import ALL_SCENARIOS, EXTRA_SCENARIOS, REPO, BenchError, log
from .context import Context
from .scenarios import SCENARIOS
from .system import machine


def scenarios_of(only):
    """The scenarios --only names, in its order (every block's scenario without it)."""
    scenarios = [s.strip() for s in only.split(",") if s.strip()] if only else ALL_SCENARIOS
    for s in scenarios:
        if s not in ALL_SCENARIOS + EXTRA_SCENARIOS:
            raise BenchError(f"--only: unknown scenario {s} "
                             f"({', '.join(ALL_SCENARIOS + EXTRA_SCENARIOS)})")
    return scenarios


def run(ctx, args, previous):
    """Runs the scenarios; saves results.json (results.merge over previous) after each one.
    Returns the merged results and the scenarios whose figures it replaced: in a partial run, a
    scenario that failed keeps the figures (and block) an earlier run measured."""
    path = ctx.run_dir / "results.json"
    res = {"machine": machine(),
           "started": datetime.datetime.now().isoformat(timespec="seconds"),
           "command": " ".join(["scripts/bench"] + [shlex.quote(a) for a in sys.argv[1:]]),
           "only": args.only or "", "repeats": ctx.repeats, "scale": args.scale,
           "load_before": os.getloadavg()}
    ran = []
    for s in scenarios_of(args.only):
        log(f"=== {s} (load average {os.getloadavg()[0]:.2f})")
        t0 = time.monotonic()
        try:
            res[s] = SCENARIOS[s](ctx)
        except ProcError as e:
            log(f"{s} failed: {e}")
            res[s] = {"error": str(e)}
        res[s]["seconds"] = time.monotonic() - t0
        res[s]["load_avg"] = ctx.loads.get(s)
        earlier = previous.get(s)
        if args.only and res[s].get("error") and isinstance(earlier, dict) \
                and not earlier.get("error"):
            log(f"{s}: keeping the figures of {results.stamp_of(previous, s).get('started', '?')} "
                "in results.json and the document")
            continue
        ran.append(s)
        results.save(path, results.merge(previous, res, ran))
    res["load_after"] = os.getloadavg()
    res["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    merged = results.merge(previous, res, ran)
    results.save(path, merged)
    return merged, ran


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
    ap.add_argument("--ingest-rate", type=int, default=0, metavar="N",
                    help="the ingest scenario's fixed rate (frames/s) at which the gateway and "
                    "lws_echo --sink are compared by CPU per frame (default 100000)")
    ap.add_argument("--ingest-fixed-only", action="store_true",
                    help="the ingest scenario measures only at --ingest-rate (no ceiling "
                    "searches): an A/B of a gateway flag or build in about a minute")
    args = ap.parse_args()
    if args.repeats < 1 or args.repeats > 20:
        ap.error("--repeats: 1..20")
    if not 0 <= args.ingest_rate <= 2_000_000:
        ap.error("--ingest-rate: 1..2000000 frames/s")
    if not 0.001 <= args.scale <= 1.0:
        ap.error("--scale: 0.001..1")
    try:
        if args.quick:
            quick.chosen(args.only)
        else:
            scenarios_of(args.only)
    except BenchError as e:
        ap.error(str(e))
    ctx = Context(args)

    def on_signal(sig, frame):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    rc = 0
    try:
        # A partial run, or --report-only --only, rewrites only its scenarios' blocks.
        parts = None
        if args.quick:
            ctx.prepare()
            quick.run(ctx, ctx.quick_results, args.only)
        elif args.report_only:
            res = results.load(ctx.run_dir / "results.json")
            if not res:
                raise BenchError(f"{ctx.run_dir / 'results.json'}: no results to report "
                                 "(WSGATE_RUN_DIR names the run's directory)")
            parts = scenarios_of(args.only) if args.only else None
        else:
            previous = results.load(ctx.run_dir / "results.json")
            ctx.prepare()
            res, ran = run(ctx, args, previous)
            parts = ran if args.only else None
        if not args.quick:
            out = Path(args.out)
            report.write_doc(res, out, out.parent / "bench", ctx.run_dir, parts)
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
