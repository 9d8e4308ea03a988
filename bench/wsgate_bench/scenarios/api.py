"""(g) The API for backends (issue 19): POST /v1/send to wsgate-api over keep-alive HTTP, through
the commands topic, an echo processor (the commands executor) and the gateway, to connected
clients. Runs of wsgate-load --mode api: at a rate above what the API accepts, for the sustained
accepted commands/s over 64 connections, with single sends and with /v1/batch of API_BATCHES
sends per request; at 2,000/s for the request -> delivery latency on a connected client, with the
per-hop breakdown of the gateway and the processor."""

from ..common import (API_BATCHES, API_CLIENTS, API_CONNS, API_FLOOD_RATE, API_LATENCY_RATE, RUN_S,
                      WARMUP_S, BenchError, log)
from ..stats import latency_summary
from .roundtrip import hops_from


# The receivers drain until they hold every delivery of an accepted send (wsgate-load's parent
# compares their counts with the sender's); this is only the deadline. With a fixed 3 s drain, the
# batch-100 flood counted 123,108 of its 419,900 accepted sends: the rest was still on its way.
API_DRAIN = "60s"


def api_args(ctx, api, rate, clients=API_CLIENTS, batch=1):
    run_s, warm_s = (3, 1) if ctx.quick else (RUN_S, WARMUP_S)
    return ["--api-url", api.url, "--api-clients", str(clients), "--rate", str(rate),
            "--duration", f"{run_s}s", "--warmup", f"{warm_s}s", "--drain", API_DRAIN,
            *(["--api-batch", str(batch)] if batch > 1 else [])]


def summary(res, rate):
    """The figures of one run: accepted/s, request and delivery latency, what was lost."""
    run, api = res["run"], res["run"].get("api") or {}
    window = (run.get("duration_s") or 0) - (run.get("warmup_s") or 0)
    out = latency_summary([res], rate)
    out.update({
        "batch": api.get("batch", 1),
        "accepted_per_s": api.get("accepted_per_second"),
        "requests_per_s": (api.get("requests_window") or 0) / window if window > 0 else None,
        "delivered_per_s": run.get("rate_measured"),
        "expected": run.get("expected_measured"), "received": run.get("received_measured"),
        "failed": api.get("failed"), "statuses": api.get("statuses"),
        "request_p50": (api.get("request_ms") or {}).get("p50"),
        "request_p99": (api.get("request_ms") or {}).get("p99"),
        "send_lag_p99": run["send_lag_ms"]["p99"],
        "accepted": api.get("accepted"), "delivered": run.get("received"),
        "sender_cpu_s": api.get("cpu_s"), "receivers_cpu_s": api.get("cpu_receivers_s"),
    })
    # CPU per accepted send (µs), each part of the path and the load generator's two halves.
    acc = api.get("accepted") or 0
    cpu = dict(res.get("cpu") or {})
    cpu.pop("wsgate-load", None)
    cpu["sender"], cpu["receivers"] = api.get("cpu_s") or 0, api.get("cpu_receivers_s") or 0
    out["cpu_us_per_send"] = {k: v * 1e6 / acc for k, v in cpu.items()} if acc else None
    return out


def run(ctx):
    t = ctx.topics("api")
    cmd = ctx.commands_topic("api")
    prefix = ctx.unique("api") + ":"
    procs = []
    conns = 50 if ctx.quick else ctx.scaled(API_CONNS)
    out = {"conns": conns, "clients": API_CLIENTS}
    try:
        gw = ctx.start_gateway(0, t, prefix)
        procs.append(gw)
        pr = ctx.start_processor(0, t, prefix, "echo", ctx.unique("api-group"),
                                 ["--commands-topic", cmd])
        procs.append(pr)
        api = ctx.start_api(0, t, cmd, prefix)
        procs.append(api)

        def run_at(name, rate, batch=1):
            ctx.sample_load("api")
            return ctx.load(name, "api", [gw.url], conns, *api_args(ctx, api, rate, batch=batch),
                            *hops_from(gw, pr), env={"WSGATE_LOAD_API_KEY": api.key},
                            cpu={"gateway": gw, "processor": pr, "api": api})
        run_at("api-warmup", 200)  # producer ids, transactions, group assignment, metadata
        if ctx.quick:
            r = summary(run_at("api-quick", 100), 100)
            if not r["received"] or r["received"] != r["expected"] or r["failed"]:
                raise BenchError(f"quick API run lost sends: {r}")
            out["quick"] = r
            return out
        floods = [summary(run_at("api-flood", API_FLOOD_RATE), API_FLOOD_RATE)
                  for _ in range(ctx.repeats)]
        out["flood"] = floods
        log("api: accepted/s " + ", ".join(f"{f['accepted_per_s']:.0f}" for f in floods))
        points = [summary(run_at("api-latency", API_LATENCY_RATE), API_LATENCY_RATE)
                  for _ in range(ctx.repeats)]
        out["latency"] = points
        log("api at 2000/s: p50 " + ", ".join(f"{p['p50']:.2f}" for p in points) + " ms, p99 " +
            ", ".join(f"{p['p99']:.2f}" for p in points) + " ms")
        # The batch form: sends accepted per second when each request carries n of them. Last:
        # the delivery side lags far behind these floods (their runs drain it), and a latency run
        # should not start on a Kafka and a processor still busy with it.
        out["batch"] = [summary(run_at(f"api-flood-b{n}", API_FLOOD_RATE, n), API_FLOOD_RATE)
                        for n in API_BATCHES]
        log("api batches: accepted/s " + ", ".join(
            f"{b['batch']}/request {b['accepted_per_s']:.0f}" for b in out["batch"]))
    finally:
        for p in reversed(procs):
            p.stop()
    return out
