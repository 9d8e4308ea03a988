"""One module per scenario, each with run(ctx) -> its section of results.json. docs/BENCHMARKS.md
explains each; report.py writes its tables."""

from . import capacity, channels, channels50k, connect, fanout, idle, ingest, roundtrip

# In the order a full run takes them (common.ALL_SCENARIOS names the same).
SCENARIOS = {"idle": idle.run, "capacity": capacity.run, "ingest": ingest.run,
             "roundtrip": roundtrip.run, "fanout": fanout.run, "channels": channels.run,
             "channels50k": channels50k.run, "connect": connect.run}
