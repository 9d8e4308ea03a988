"""One module per scenario, each with run(ctx) -> its section of results.json. docs/BENCHMARKS.md
explains each; report.py writes its tables."""

from . import (api, capacity, channels, channels50k, connect, fanout, idle, ingest, overload,
               rcluster, roundtrip, split)

# In the order a full run takes them (common.ALL_SCENARIOS names the same).
SCENARIOS = {"idle": idle.run, "capacity": capacity.run, "ingest": ingest.run,
             "roundtrip": roundtrip.run, "split": split.run,
             "fanout": fanout.run, "channels": channels.run,
             "channels50k": channels50k.run, "connect": connect.run, "api": api.run,
             # Not in a full run (common.EXTRA_SCENARIOS): --only rcluster, --only overload.
             "rcluster": rcluster.run, "overload": overload.run}
