"""Medians, ranges and slopes, and the summaries of several runs that results.json keeps."""

import statistics


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def span(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def slope(points):
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def summarize_trials(trials, key=None):
    out = []
    for t in trials:
        r = t["res"]
        row = {"rate": t["rate"], "ok": t["ok"]}
        if r:
            row["measured"] = r.get(key) if key else r["run"]["rate_measured"]
            row["p99"] = r["run"]["latency_ms"]["p99"]
            row["loss"] = r["run"]["loss_fraction"]
        out.append(row)
    return out


def latency_summary(rs, rate):
    lat = [r["run"]["latency_ms"] for r in rs]
    return {"rate": rate, "runs": len(rs),
            "p50": median([x["p50"] for x in lat]), "p90": median([x["p90"] for x in lat]),
            "p99": median([x["p99"] for x in lat]), "p999": median([x["p99.9"] for x in lat]),
            "max": median([x["max"] for x in lat]),
            "p99_range": span([x["p99"] for x in lat]),
            "p50_range": span([x["p50"] for x in lat]),
            "loss": median([r["run"]["loss_fraction"] for r in rs]),
            "send_lag_p99": median([r["run"]["send_lag_ms"]["p99"] for r in rs]),
            "cpu_us": cpu_per_message(rs),
            "hops": hops_summary(rs),
            "cmd": rs[0]["_cmd"]}


def hops_summary(rs):
    """Median over the runs of each hop's mean, p50 and p99 in ms (wsgate-load --hops-from; None
    when a run has no breakdown)."""
    if not rs or not all(r.get("hops") for r in rs):
        return None
    out = {}
    for name in rs[0]["hops"]:
        hs = [r["hops"].get(name) or {} for r in rs]
        out[name] = {k: median([h.get(k) for h in hs])
                     for k in ("count", "mean_ms", "p50_ms", "p90_ms", "p99_ms")}
    return out


def cpu_per_message(rs, per="received"):
    """Median CPU microseconds each process spent per message (fan-out: per delivery)."""
    if not all(r.get("cpu") for r in rs):
        return None
    names = rs[0]["cpu"].keys()
    return {n: median([r["cpu"][n] * 1e6 / max(1, r["run"][per]) for r in rs]) for n in names}


def fanout_summary(rs):
    s = latency_summary(rs, rs[0]["run"]["rate_target"])
    s["deliveries_per_s"] = median([r["run"]["rate_measured"] for r in rs])
    s["deliveries_range"] = span([r["run"]["rate_measured"] for r in rs])
    s["receivers"] = median([r["run"].get("receivers", 0) for r in rs])
    s["kafka_per_msg"] = median([r.get("kafka_per_msg") for r in rs])
    return s


def confirm_summary(confirm, rate_of):
    """The runs confirming a searched rate: the median measured rate (rate_of(run)), its range and
    one run's command."""
    return {"confirm_rate": median([rate_of(c) for c in confirm]),
            "confirm_range": span([rate_of(c) for c in confirm]),
            "cmd": confirm[0]["_cmd"] if confirm else ""}
