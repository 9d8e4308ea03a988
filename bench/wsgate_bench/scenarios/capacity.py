"""Box capacity: 3 gateways x 19.5k connections from 3 load processes, held past a ping round
and the idle timeout."""

import time

from ..common import CAPACITY_HOLD_S, CAPACITY_PER_GATEWAY, log
from ..stats import median
from ..system import meminfo

GATEWAYS = 3


def run(ctx):
    n_gw = GATEWAYS
    per = 30 if ctx.quick else ctx.scaled(CAPACITY_PER_GATEWAY)
    hold = 5 if ctx.quick else CAPACITY_HOLD_S
    runs = []
    for rep in range(ctx.repeats):
        ctx.sample_load("capacity")
        t = ctx.topics("capacity")
        prefix = ctx.unique("cap") + ":"
        gws = []
        try:
            gws = [ctx.start_gateway(i, t, prefix) for i in range(n_gw)]
            time.sleep(1.0)
            mem0, rss0 = meminfo(), sum(g.rss_kib() for g in gws)
            cpu0 = [g.cpu_s() for g in gws]
            p = ctx.load_bg("capacity", "idle", [g.url for g in gws], per * n_gw, "--hold",
                            f"{hold}s", "--connect-rate", "6000", procs=n_gw)
            ctx.wait_phase(p, timeout=900)
            time.sleep(3.0)
            mem1, rss1 = meminfo(), sum(g.rss_kib() for g in gws)
            res = ctx.load_result(p, timeout=hold + 300)
            runs.append({"ready": res["connect"]["ready"],
                         "failed": res["connect"]["failed"],
                         "held_at_end": res["held"]["held_at_end"],
                         "closed": res["held"]["closed_after_ready"],
                         "close_codes": res["held"]["close_codes"],
                         "ramp_s": res["connect"]["seconds"],
                         "rss_kb": rss1 - rss0,
                         # Everything the machine gave up while they were held: gateways, load
                         # generator and the kernel's socket buffers.
                         "mem_used_kb": mem0["MemAvailable"] - mem1["MemAvailable"],
                         "cpu_s": [g.cpu_s() - c for g, c in zip(gws, cpu0)],
                         "hold_s": hold, "cmd": res["_cmd"]})
            log(f"capacity run {rep + 1}: {res['held']['held_at_end']} held at the end")
        finally:
            for g in gws:
                g.stop()
    return {"gateways": n_gw, "per_gateway": per, "runs": runs,
            "ready": median([r["ready"] for r in runs]),
            "held_at_end": median([r["held_at_end"] for r in runs]),
            "rss_per_conn": median([r["rss_kb"] * 1024 / max(1, r["ready"]) for r in runs]),
            "mem_per_conn": median([r["mem_used_kb"] * 1024 / max(1, r["ready"]) for r in runs])}
