#!/usr/bin/env python3
"""Generated docs against the program output they are generated from.

Usage: check_generated.py DOC_FILE COMMAND [ARGS...]
         Runs COMMAND ARGS (e.g. `wsgate-gateway --help-markdown`) and fails, printing a unified
         diff and the command that regenerates the file, unless its standard output is exactly
         DOC_FILE's content.
       check_generated.py --covered DOCS_DIR KIND NAME...
         Fails when DOCS_DIR holds a KIND-<name>.md (KIND: CONFIG, METRICS) whose name is not
         among NAME... (a generated file nobody checks).
"""

import difflib
import glob
import os
import subprocess
import sys


def covered(docs, kind, names):
    rc = 0
    for path in sorted(glob.glob(os.path.join(docs, f"{kind}-*.md"))):
        name = os.path.basename(path)[len(kind) + 1:-len(".md")]
        if name not in names:
            print(f"{path} has no check: add its program to {kind.lower()}_docs in "
                  "tests/docs/meson.build", file=sys.stderr)
            rc = 1
    return rc


def check(doc, cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        print(f"`{' '.join(cmd)}` exited {proc.returncode}: {proc.stderr.strip()}", file=sys.stderr)
        return 1
    with open(doc, encoding="utf-8") as f:
        have = f.read()
    if have == proc.stdout:
        print(f"{os.path.basename(doc)} matches `{os.path.basename(cmd[0])} {' '.join(cmd[1:])}`")
        return 0
    diff = difflib.unified_diff(have.splitlines(keepends=True), proc.stdout.splitlines(keepends=True),
                                fromfile=doc, tofile=" ".join(cmd))
    sys.stderr.writelines(diff)
    # Absolute, so the printed command works from anywhere (meson runs tests in the build directory).
    regen = " ".join([os.path.abspath(cmd[0]), *cmd[1:]])
    print(f"\n{doc} differs from the program's tables (diff above: - the file, + the program).\n"
          f"Regenerate it after building:\n  {regen} > {doc}", file=sys.stderr)
    return 1


def main(argv):
    if len(argv) >= 4 and argv[1] == "--covered":
        return covered(argv[2], argv[3], argv[4:])
    if len(argv) < 3 or argv[1].startswith("--"):
        print(__doc__, file=sys.stderr)
        return 2
    return check(argv[1], argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
