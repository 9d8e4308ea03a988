"""What every module of the runner shares: where things are, the scale of a full run, errors and
the log line."""

import sys
from pathlib import Path

from wsgate_procs import ProcError

REPO = Path(__file__).resolve().parents[2]

SCRIPTS = REPO / "scripts"
ALL_SCENARIOS = ["idle", "capacity", "ingest", "roundtrip", "split", "fanout", "channels",
                 "channels50k", "connect", "api"]
# Run only when named by --only (they write no block of docs/BENCHMARKS.md).
EXTRA_SCENARIOS = ["rcluster", "overload"]

# Scale. One process may hold 20,000 descriptors here; a gateway keeps 256 for itself.
IDLE_STEPS = [6500, 13000, 19500]
# Held past one keepalive round (pings every 30 s), and past the idle timeout (60 s) for capacity.
IDLE_HOLD_S = 34
CAPACITY_HOLD_S = 66
# Each echo/fan-out trial: seconds of sending, of which the first WARMUP_S are not measured.
RUN_S, WARMUP_S = 7, 2
CAPACITY_PER_GATEWAY = 19500
FANOUT_MEMBERS = 10000
ROUNDTRIP_CONNS = 1000
ECHO_CONNS = 100
CONNECT_COST_CONNS = 2000
# The API scenario: receivers (one user each), the HTTP connections of the sender, the latency
# point of issue 19 and a rate above what one wsgate-api accepts (the throughput run).
API_CONNS = 1000
API_CLIENTS = 64
API_LATENCY_RATE = 2000
API_FLOOD_RATE = 60000
# One channel's subscribers across 3 gateways (issue 15), held this long while receiving.
CHANNELS50K = 50000
CHANNELS50K_HOLD_S = 30
API_BATCHES = (20, 100)  # sends per /v1/batch request in the batch-form floods


class BenchError(ProcError):
    """A benchmark could not run; the message says what to do. The shared process plumbing
    raises its base, ProcError: catch that."""


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)
