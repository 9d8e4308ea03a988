#!/usr/bin/env python3
"""Checks the hardening of ELF executables from their headers (readelf), one TAP line per
binary and property:
  PIE               ELF type DYN (ET_DYN) with the PIE flag
  full RELRO        a GNU_RELRO segment and BIND_NOW (DT_BIND_NOW or DF_BIND_NOW / DF_1_NOW)
  stack protector   __stack_chk_fail imported
  _FORTIFY_SOURCE   (with --fortify) at least one __*_chk function imported

usage: check_hardening.py [--readelf PATH] [--fortify] BINARY...
"""
import argparse
import os
import re
import subprocess
import sys


def readelf(exe, opts, binary):
    return subprocess.run([exe, "-W"] + opts + [binary], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def properties(exe, binary, fortify):
    header = readelf(exe, ["-h"], binary)
    segments = readelf(exe, ["-l"], binary)
    dynamic = readelf(exe, ["-d"], binary)
    imported = set(re.findall(r"\bUND\s+([^\s@]+)", readelf(exe, ["--dyn-syms"], binary)))
    checks = [
        ("PIE (ET_DYN, flag PIE)",
         re.search(r"Type:\s+DYN\b", header) is not None and re.search(r"FLAGS_1.*\bPIE\b", dynamic) is not None),
        ("full RELRO (GNU_RELRO + BIND_NOW)",
         "GNU_RELRO" in segments and re.search(r"\bBIND_NOW\b|FLAGS_1.*\bNOW\b", dynamic) is not None),
        ("stack protector (__stack_chk_fail imported)", "__stack_chk_fail" in imported),
    ]
    if fortify:
        chk = sorted(s for s in imported if re.fullmatch(r"__\w+_chk", s) and s != "__stack_chk_fail")
        checks.append((f"_FORTIFY_SOURCE (__*_chk imported: {', '.join(chk[:4]) or 'none'})", bool(chk)))
    return checks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readelf", default="readelf")
    ap.add_argument("--fortify", action="store_true")
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    n = failed = 0
    for binary in args.binaries:
        for what, ok in properties(args.readelf, binary, args.fortify):
            n += 1
            failed += not ok
            print(f"{'ok' if ok else 'not ok'} {n} - {os.path.basename(binary)}: {what}")
    print(f"1..{n}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
