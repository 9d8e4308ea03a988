#!/usr/bin/env python3
"""The close codes' mirrors against their one table.

Usage: check_close_codes.py SOURCE_ROOT

GW_CLOSE_MAP (gateway/gw_server.h) is the table of every close code the gateway sends. Its
mirrors are prose and another language, so they are written by hand (docs/DEVELOPMENT.md,
"Adding a close code"); this fails, naming the file and the code, when one of them lacks a row
for a code of the table:
  docs/PROTOCOL.md   "Close codes the gateway sends" (what a client should do)
  docs/GATEWAY.md    "Closes and their bounds" (when the connection ends at the latest)
  docs/CLIENTS.md    "Close codes" (the JS client's action)
  clients/js/src/policy.ts  CLOSE_ACTIONS (the action itself)
"""

import os
import re
import sys


def read(root, rel):
    with open(os.path.join(root, rel), encoding="utf-8") as f:
        return f.read()


def table_codes(text, heading):
    """The 4-digit numbers in the first cell of each row of the first table after `heading`."""
    start = text.find(heading)
    if start < 0:
        return None
    codes, in_table = set(), False
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            in_table = True
            codes.update(int(n) for n in re.findall(r"\b\d{4}\b", line.split("|")[1]))
        elif in_table:
            break
    return codes


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = argv[1]
    header = read(root, "gateway/gw_server.h")
    table = header[header.index("#define GW_CLOSE_MAP(X)"):]
    table = table[:table.index("\n\n")]
    codes = sorted({int(c) for c in re.findall(r"X\(\s*\w+,\s*(\d+),", table)})
    if not codes:
        print("gateway/gw_server.h: no rows found in GW_CLOSE_MAP", file=sys.stderr)
        return 1
    mirrors = {
        "docs/PROTOCOL.md": table_codes(read(root, "docs/PROTOCOL.md"),
                                        "### Close codes the gateway sends"),
        "docs/GATEWAY.md": table_codes(read(root, "docs/GATEWAY.md"), "### Closes and their bounds"),
        "docs/CLIENTS.md": table_codes(read(root, "docs/CLIENTS.md"), "## Close codes"),
        "clients/js/src/policy.ts": {
            int(c) for c in re.findall(r"^\s*(\d{4}):\s*'", read(root, "clients/js/src/policy.ts"),
                                       re.MULTILINE)},
    }
    rc = 0
    for path, have in mirrors.items():
        if have is None:
            print(f"{path}: its close code table's heading is gone (see this script's list)",
                  file=sys.stderr)
            rc = 1
            continue
        missing = [c for c in codes if c not in have]
        for c in missing:
            print(f"{path}: no row for close code {c} of GW_CLOSE_MAP (gateway/gw_server.h); "
                  "add one (docs/DEVELOPMENT.md, \"Adding a close code\")", file=sys.stderr)
            rc = 1
        if not missing:
            print(f"{path}: every close code of GW_CLOSE_MAP ({len(codes)})")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
