"""Judges an Autobahn|Testsuite report (the fuzzingclient's index.json) for wsgate.

A case passes when its behaviour is OK, NON-STRICT or INFORMATIONAL and its close behaviour is
OK, INFORMATIONAL, WRONG CODE (Autobahn's own report shows it as non-strict) or FAILED BY CLIENT
(Autobahn shows it as "almost": the close handshake completed but the client, not the server,
closed the TCP connection; these cases are listed so they stay visible). FAILED, UNCLEAN and
anything else fail, except the cases excluded below, each with its reason (also in
docs/CONFORMANCE.md).

    python3 autobahn_results.py reports/index.json     # prints the verdict, exit 1 on a failure

Threads: none.
"""

from __future__ import annotations

import collections
import json
import sys

# Case id -> why it is not run. Keep docs/CONFORMANCE.md in step.
EXCLUDED = {
    "2.10": "10 pings in a burst: libwebsockets 4.1.6 keeps one pong in flight and drops a ping "
            "that arrives while one is pending (RFC 6455 5.5.3 allows answering only the most "
            "recent ping); libwebsockets' own Autobahn script excludes 2.10 and 2.11 for this",
    "2.11": "the same burst of 10 pings, sent slowly: passes or fails with timing for the same "
            "reason as 2.10",
}

PASS_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASS_CLOSE = {"OK", "INFORMATIONAL", "WRONG CODE", "FAILED BY CLIENT"}


def _key(case_id: str):
    return [int(x) for x in case_id.split(".")]


class Report:
    def __init__(self, cases: dict):
        self.cases = cases
        self.failed = []  # (case, behavior, behaviorClose)
        self.almost = []  # cases whose close was FAILED BY CLIENT
        self.excluded_run = []
        for cid in sorted(cases, key=_key):
            c = cases[cid]
            b, bc = c.get("behavior"), c.get("behaviorClose")
            if cid in EXCLUDED:
                self.excluded_run.append(cid)
                continue
            if b not in PASS_BEHAVIOR or bc not in PASS_CLOSE:
                self.failed.append((cid, b, bc))
            elif bc == "FAILED BY CLIENT":
                self.almost.append(cid)

    def counts(self) -> dict:
        by = collections.Counter(c.get("behavior") for c in self.cases.values())
        by_close = collections.Counter(c.get("behaviorClose") for c in self.cases.values())
        return {"cases": len(self.cases), "behavior": dict(by), "close": dict(by_close),
                "failed": len(self.failed)}

    def problems(self) -> list[str]:
        out = [f"case {cid}: behavior {b}, close {bc}" for cid, b, bc in self.failed]
        if not self.cases:
            out.append("the report lists no case")
        return out


def evaluate(index: dict, agent: str = "wsgate") -> Report:
    if agent not in index:
        return Report({})
    return Report(index[agent])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: autobahn_results.py INDEX.JSON", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        rep = evaluate(json.load(f))
    print(json.dumps(rep.counts()))
    for p in rep.problems():
        print(p)
    if rep.almost:
        print("closed by the client after a completed close handshake:", " ".join(rep.almost))
    return 1 if rep.problems() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
