"""scripts/bench --report-only against a saved results.json (the run docs/BENCHMARKS.md shows, at
a01cd17): the report code runs without a benchmark, fills every marked part of the document and
leaves everything outside the markers, the prose, exactly as it was.

Usage: report_test.py <repo>   (meson runs it; standard library only)"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MARKED = re.compile(r"(<!-- scripts/bench: begin (\S+) -->)(.*?)(<!-- scripts/bench: end \2 -->)",
                    re.S)


def prose(text):
    """The document with every marked block emptied: what the report must never change."""
    return MARKED.sub(lambda m: m.group(1) + m.group(4), text)


def main():
    repo = Path(sys.argv[1]).resolve()
    doc = repo / "docs" / "BENCHMARKS.md"
    fixture = repo / "bench" / "tests" / "results-a01cd17.json"
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "bench").mkdir()
        shutil.copy(fixture, tmp / "bench" / "results.json")
        out = tmp / "docs" / "BENCHMARKS.md"
        out.parent.mkdir()
        shutil.copy(doc, out)
        env = dict(os.environ, WSGATE_RUN_DIR=str(tmp), PATH="/usr/bin:/bin")  # no gnuplot needed
        r = subprocess.run([sys.executable, str(repo / "scripts" / "bench"), "--report-only",
                            "--out", str(out)], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            failures.append(f"scripts/bench --report-only exited {r.returncode}:\n{r.stderr}")
        new = out.read_text()
        if prose(new) != prose(doc.read_text()):
            failures.append("the report changed the document outside its markers")
        parts = [m.group(2) for m in MARKED.finditer(new)]
        from_code = re.findall(r'^PARTS = \[(.*?)\]$',
                               (repo / "bench" / "wsgate_bench" / "report.py").read_text(),
                               re.M | re.S)
        expected = re.findall(r'"(\w+)"', from_code[0]) if from_code else []
        if parts != expected:
            failures.append(f"marked parts {parts}, expected {expected} (report.PARTS) in order")
        for m in MARKED.finditer(new):
            if not m.group(3).strip():
                failures.append(f"part {m.group(2)} is empty")
    print("1..1")
    if failures:
        print("not ok 1 - bench_report\n" + "\n".join("# " + f for f in failures))
        return 1
    print("ok 1 - bench_report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
