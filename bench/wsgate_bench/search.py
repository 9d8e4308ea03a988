"""The rate search: the highest rate a system sustains, and what sustained means."""

from .common import RUN_S, WARMUP_S, log

# Steps a rate search takes below its start when the start is already too much.
MAX_STEPS_DOWN = 6


def sustained(res, loss_max=0.001, p99_max_ms=500.0):
    """No message dropped, at most loss_max unanswered, p99 under p99_max_ms."""
    run = res["run"]
    lat = run["latency_ms"]
    return (run["dropped"] == 0 and run["loss_fraction"] <= loss_max
            and lat["count"] > 0 and lat["p99"] <= p99_max_ms)


def search_rate(name, start, try_rate, limit=2_000_000, factor=1.5, refine=2):
    """Highest rate for which try_rate(rate) -> (ok, result) holds: geometric steps up (or down,
    to at least start/factor^MAX_STEPS_DOWN, when the start already fails), then bisection between
    the last success and the first failure. Returns (best or None, its result, every trial)."""
    best, best_res, fail, trials = None, None, None, []

    def trial(rate):
        ok, res = try_rate(int(rate))
        trials.append({"rate": int(rate), "ok": ok, "res": res})
        log(f"{name}: {int(rate)}/s {'sustained' if ok else 'not sustained'}")
        return ok, res

    rate = start
    while rate <= limit:
        ok, res = trial(rate)
        if not ok:
            fail = rate
            break
        best, best_res = rate, res
        rate *= factor
    down = 0
    while best is None and down < MAX_STEPS_DOWN and int(fail / factor) >= 1 and \
            int(fail / factor) < int(fail):
        down += 1
        rate = fail / factor
        ok, res = trial(rate)
        if ok:
            best, best_res = rate, res
        else:
            fail = rate
    lo, hi = best, fail
    for _ in range(refine):
        if lo is None or hi is None or hi - lo < 0.05 * hi:
            break
        mid = (lo + hi) / 2
        ok, res = trial(mid)
        if ok:
            lo, best, best_res = mid, mid, res
        else:
            hi = mid
    return (int(best) if best else None), best_res, trials


def echo_args(ctx, rate, size=64, duration=None, warmup=None):
    """wsgate-load's flags for one echo trial at rate (short ones in --quick)."""
    d = duration or (3 if ctx.quick else RUN_S)
    w = warmup or (1 if ctx.quick else WARMUP_S)
    return ["--rate", rate, "--size", size, "--duration", f"{d}s", "--warmup", f"{w}s",
            "--drain", "5s", "--connect-rate", "5000"]
