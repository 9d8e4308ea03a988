"""scripts/bench's partial runs, without a benchmark: the runner's main() with every scenario and
every server replaced by a stub (results.json's saved figures stand in for a scenario's).

1. `--only roundtrip` rewrites docs/BENCHMARKS.md's roundtrip block and nothing else, byte for
   byte; an --out file without markers gets that block alone.
2. results.json keeps the previous run's other scenarios, each with its own stamp, so a later
   --report-only renders the same roundtrip block and the others from the earlier run; a
   scenario that fails in a partial run keeps the earlier figures and block.
3. `--quick --only a,b` runs only those checks: one TAP line each, then "N passed, N failed".

Usage: partial_test.py <repo>   (meson runs it; standard library only)"""

import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

MARKED = re.compile(r"<!-- scripts/bench: begin (\S+) -->.*?<!-- scripts/bench: end \1 -->", re.S)

REPO = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(REPO / "bench"))

from wsgate_bench import main as bench_main  # noqa: E402
from wsgate_bench.common import BenchError  # noqa: E402
from wsgate_bench.context import Context  # noqa: E402

FIXTURE = json.loads((REPO / "bench" / "tests" / "results-a01cd17.json").read_text())


class StubContext(Context):
    """The real Context with no servers: every method a scenario or a check calls raises."""

    def prepare(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def stop_servers(self):
        pass


def no_servers(*_a, **_k):
    raise BenchError("stub: no servers in this test")


for _name, _value in list(vars(Context).items()):
    if callable(_value) and not _name.startswith("_") and _name not in ("prepare",
                                                                        "stop_servers"):
        setattr(StubContext, _name, no_servers)


def bench(*argv):
    """main() with argv; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["scripts/bench", *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = bench_main.main()
            except SystemExit as e:
                rc = e.code
    finally:
        sys.argv = saved
    return rc, out.getvalue(), err.getvalue()


def blocks(text):
    """{part: its whole marked block} and the text between the blocks."""
    return ({m.group(1): m.group(0) for m in MARKED.finditer(text)},
            MARKED.sub("<>", text))


def check_partial(tmp, failures):
    run_dir = tmp / "bench"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps(FIXTURE))
    doc = tmp / "docs" / "BENCHMARKS.md"
    doc.parent.mkdir()
    shutil.copy(REPO / "docs" / "BENCHMARKS.md", doc)
    before = doc.read_text()
    # The "measured" round trip: the fixture's, with another best rate to tell it apart.
    measured = json.loads(json.dumps(FIXTURE["roundtrip"]))
    measured["wsgate"]["best"] = 12345
    bench_main.SCENARIOS["roundtrip"] = lambda ctx: json.loads(json.dumps(measured))
    rc, _, err = bench("--only", "roundtrip", "--repeats", "1", "--out", str(doc))
    if rc != 0:
        failures.append(f"--only roundtrip exited {rc}: {err}")
        return
    old_blocks, old_between = blocks(before)
    new_blocks, new_between = blocks(doc.read_text())
    if new_between != old_between:
        failures.append("--only roundtrip changed the text between the blocks")
    changed = sorted(p for p in old_blocks if new_blocks.get(p) != old_blocks[p])
    if changed != ["roundtrip"]:
        failures.append(f"--only roundtrip changed the blocks {changed}, not just roundtrip")
    rt = new_blocks.get("roundtrip", "")
    if "| wsgate | 12,345 |" not in rt or "Measured by a separate run: `scripts/bench --only " \
            "roundtrip" not in rt:
        failures.append(f"the roundtrip block lacks the new figure or its stamp:\n{rt[:600]}")

    saved = json.loads((run_dir / "results.json").read_text())
    kept = [s for s in ("idle", "capacity", "ingest", "fanout", "connect")
            if saved.get(s, {}).get("stamp", {}).get("started") != FIXTURE["started"]]
    if kept:
        failures.append(f"results.json lost the earlier run's stamp of {kept}")
    if saved.get("started") != FIXTURE["started"]:
        failures.append("results.json's top-level stamp is no longer the full run's")
    if saved.get("roundtrip", {}).get("stamp", {}).get("only") != "roundtrip":
        failures.append("results.json's roundtrip has not the partial run's stamp")

    # A later --report-only renders the same roundtrip block, and the others from the fixture.
    full = tmp / "full.md"
    shutil.copy(doc, full)
    rc, _, err = bench("--report-only", "--out", str(full))
    if rc != 0:
        failures.append(f"--report-only exited {rc}: {err}")
        return
    fb, _ = blocks(full.read_text())
    if fb.get("roundtrip") != rt:
        failures.append("--report-only renders roundtrip otherwise than the partial run did")
    if "| wsgate | 34,804 |" in fb.get("roundtrip", ""):
        failures.append("--report-only lost the partial run's roundtrip figures")
    if "`a01cd17`" not in fb.get("run", ""):
        failures.append(f"the run block is not the full run's: {fb.get('run', '')[:300]}")
    if "round trip through Kafka, sustained | ≥ 100,000 msgs/s (50,000 at least) | 12,345" \
            not in fb.get("targets", ""):
        failures.append("the targets table lacks the partial run's round trip")

    # A scenario that fails in a partial run keeps the earlier figures and block.
    def failing(ctx):
        raise BenchError("stub: the scenario failed")
    bench_main.SCENARIOS["connect"] = failing
    before = doc.read_text()
    rc, _, err = bench("--only", "connect", "--repeats", "1", "--out", str(doc))
    if rc != 0 or doc.read_text() != before:
        failures.append(f"a failed --only connect changed the document (exit {rc}): {err[-300:]}")
    saved = json.loads((run_dir / "results.json").read_text())
    if saved.get("connect", {}).get("stamp", {}).get("started") != FIXTURE["started"] or \
            saved["connect"].get("error"):
        failures.append("a failed --only connect replaced the earlier figures in results.json")

    # An --out file without markers gets only the block that ran.
    bare = tmp / "bare.md"
    bare.write_text("# scratch\n")
    rc, _, err = bench("--only", "roundtrip", "--repeats", "1", "--out", str(bare))
    got = list(blocks(bare.read_text())[0])
    if rc != 0 or got != ["roundtrip"]:
        failures.append(f"an --out file without markers got the blocks {got} (exit {rc})")


def check_quick(tmp, failures):
    env = {"WSGATE_TEST_KAFKA": "127.0.0.1:1", "WSGATE_TEST_REDIS_PORT": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        rc, out, err = bench("--quick", "--only", "api,lws_echo")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    want = ["not ok 1 - bench_quick_lws_echo", "not ok 2 - bench_quick_api", "0 passed, 2 failed"]
    if out.splitlines() != want or rc != 1:
        failures.append(f"--quick --only api,lws_echo printed {out.splitlines()} (exit {rc}), "
                        f"expected {want} (exit 1):\n{err[-800:]}")
    rc, _, err = bench("--quick", "--only", "nonesuch")
    if rc != 2 or "unknown check nonesuch" not in err:
        failures.append(f"--quick --only nonesuch exited {rc}: {err[-300:]}")


def main():
    tests = [("bench_partial_run", check_partial), ("bench_quick_only", check_quick)]
    print(f"1..{len(tests)}")
    rc = 0
    for i, (name, fn) in enumerate(tests, 1):
        failures = []
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["WSGATE_RUN_DIR"] = tmp
            fn(Path(tmp), failures)
        if failures:
            rc = 1
            print(f"not ok {i} - {name}\n" + "\n".join("# " + line for f in failures
                                                      for line in f.splitlines()))
        else:
            print(f"ok {i} - {name}")
    return rc


if __name__ == "__main__":
    bench_main.Context = StubContext
    os.environ["PATH"] = "/usr/bin:/bin"
    sys.exit(main())
