#!/usr/bin/env python3
"""A generated doc file against the program output it is generated from.

Usage: check_generated.py DOC_FILE COMMAND [ARGS...]

Runs COMMAND ARGS (e.g. `wsgate-gateway --help-metrics`) and fails, printing a unified diff and
the command that regenerates the file, unless its standard output is exactly DOC_FILE's content.
"""

import difflib
import os
import subprocess
import sys


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    doc, cmd = argv[1], argv[2:]
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
    regen = " ".join([os.path.abspath(cmd[0]), *cmd[1:]])
    print(f"\n{doc} is out of date; regenerate it from the build with:\n  {regen} > {doc}",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
