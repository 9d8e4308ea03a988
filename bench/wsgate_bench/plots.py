"""The plots of docs/BENCHMARKS.md (docs/bench/*.png), drawn by gnuplot from results.json."""

import shutil
import subprocess

from .common import log

def write(res, out_dir, work, parts=None):
    """docs/bench/*.png with gnuplot, those of the scenarios in parts (all without it); returns
    the files written, or [] without gnuplot."""
    gp = shutil.which("gnuplot")
    if not gp:
        log("gnuplot not found (scripts/setup installs gnuplot-nox): no plots")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if parts is not None:
        res = {k: v for k, v in res.items() if k in parts}
    idle = res.get("idle", {})
    series = []
    for k, label in (("gateway", "wsgate-gateway"), ("lws", "lws (keepalive on)"),
                     ("lws-nokeepalive", "lws (keepalive off)"), ("centrifugo", "Centrifugo"),
                     ("nchan", "nchan")):
        runs = idle.get(k, {}).get("runs")
        if runs:
            f = work / f"idle-{k}.dat"
            f.write_text("\n".join(f"{n} {kb / 1024:.2f}" for n, kb in runs[0]["points"]) + "\n")
            series.append(f"'{f}' using 1:2 with linespoints title '{label}'")
    if series:
        png = out_dir / "idle-rss.png"
        gnuplot(gp, png, "Idle connections: resident memory of one server process",
                "connections", "RSS (MiB)", series)
        written.append(png)
    rt = res.get("roundtrip", {})
    series = []
    for k, label in (("wsgate", "wsgate"), ("centrifugo", "Centrifugo")):
        pts = rt.get(k, {}).get("points", {})
        rows = sorted((p["rate"], p["p50"], p["p99"], p["p999"]) for p in pts.values())
        if rows:
            f = work / f"rt-{k}.dat"
            f.write_text("\n".join(" ".join(str(x) for x in r) for r in rows) + "\n")
            series += [f"'{f}' using 1:2 with linespoints title '{label} p50'",
                       f"'{f}' using 1:3 with linespoints title '{label} p99'",
                       f"'{f}' using 1:4 with linespoints title '{label} p99.9'"]
    if series:
        png = out_dir / "roundtrip-latency.png"
        gnuplot(gp, png, "Round trip latency against offered rate", "messages/s",
                "latency (ms, log)", series, logy=True)
        written.append(png)
    fo = res.get("fanout", {})
    series = []
    for k, label in (("wsgate", "wsgate (2 gateways)"),
                     ("wsgate_noresume", "wsgate, resume off"), ("nchan", "nchan (2 workers)")):
        # Deliveries/s is always the room rate times the members when nothing is lost: what
        # tells the systems apart is how late the deliveries are as the rate grows.
        tr = [t for t in fo.get(k, {}).get("trials", [])
              if t.get("measured") is not None and t.get("p99") is not None]
        if tr:
            f = work / f"fanout-{k}.dat"
            f.write_text("\n".join(f"{t['measured']} {t['p99']}" for t in
                                   sorted(tr, key=lambda t: t["measured"])) + "\n")
            series.append(f"'{f}' using 1:2 with linespoints title '{label}'")
    if series:
        png = out_dir / "fanout.png"
        gnuplot(gp, png, "Room fan-out (10k members): p99 delivery latency against deliveries/s",
                "deliveries/s (every trial of the searches)", "p99 (ms, log scale)", series,
                logy=True)
        written.append(png)
    return written


def gnuplot(gp, png, title, xlabel, ylabel, series, logy=False):
    script = "\n".join([
        "set terminal pngcairo size 900,520 font 'sans,10'",
        f"set output '{png}'",
        f"set title '{title}'",
        f"set xlabel '{xlabel}'",
        f"set ylabel '{ylabel}'",
        "set grid",
        "set key left top",
        "set logscale y" if logy else "",
        "plot " + ", ".join(series),
    ]) + "\n"
    subprocess.run([gp], input=script, text=True, check=True)


