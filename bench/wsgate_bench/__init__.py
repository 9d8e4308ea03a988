"""wsgate's benchmark runner, launched by scripts/bench (whose header lists the flags, scenarios and
environment). Standard library only, for Debian's python3.

Modules: main (flags, the run, the --quick checks), context (set-up, servers, ports, the wsgate
daemons, wsgate-load), search (the rate search), scenarios/ (one module per scenario), centrifugo
and nchan (the peers), stats (medians and summaries of runs), report and plots (the tables of
docs/BENCHMARKS.md and docs/bench/*.png). Process management is scripts/lib/wsgate_procs.py,
shared with the chaos suite.
"""

import sys
from pathlib import Path

# scripts/lib holds wsgate_procs, the process plumbing shared with tests/chaos.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lib"))
