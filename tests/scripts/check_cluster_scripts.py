#!/usr/bin/env python3
"""Every Lua script of wsgate is run on a real Redis Cluster by a test.

Usage: check_cluster_scripts.py SOURCE_ROOT

A script whose keys span two hash slots works on one Redis node and fails with CROSSSLOT on a
cluster, so each one must run there: finds every `const char NAME[] =` string in common/,
gateway/, processor/, api/ and tools/ that calls redis.call, and fails, naming it and its file,
unless NAME appears in tests/integration/redis_cluster_test.c (which runs it with its real keys)
or RUN_BY below names the integration test that drives it through a daemon and that test is in
REDIS_CLUSTER_TESTS of scripts/test.
"""

import os
import re
import sys

DIRS = ("common", "gateway", "processor", "api", "tools")
DEF = re.compile(r"^\s*(?:static\s+)?const\s+char\s+([A-Za-z_][A-Za-z0-9_]*)\[\]\s*=", re.M)
# Scripts private to a handler, which the cluster test cannot name: the test that runs them.
RUN_BY = {"JOIN_LUA": "processor_chat"}


def scripts(root):
    for d in DIRS:
        for dirpath, _, names in os.walk(os.path.join(root, d)):
            for name in sorted(names):
                if not name.endswith(".c"):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                for m in DEF.finditer(text):
                    # The initializer ends at `";` (a Lua line may hold a `;` itself).
                    end = re.compile(r'"\s*;').search(text, m.end())
                    if "redis.call" in text[m.end() : end.end() if end else len(text)]:
                        yield m.group(1), os.path.relpath(path, root)


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = argv[1]
    with open(os.path.join(root, "tests/integration/redis_cluster_test.c"), encoding="utf-8") as f:
        test = f.read()
    with open(os.path.join(root, "scripts/test"), encoding="utf-8") as f:
        m = re.search(r'^REDIS_CLUSTER_TESTS="([^"]*)"', f.read(), re.M)
    on_cluster = set(m.group(1).split()) if m else set()
    found, problems = 0, []
    for name, path in scripts(root):
        found += 1
        if re.search(r"\b%s\b" % re.escape(name), test):
            continue
        by = RUN_BY.get(name)
        if by is None:
            problems.append(f"{path}: {name} is not run by tests/integration/redis_cluster_test.c")
        elif by not in on_cluster:
            problems.append(f"{path}: {name} is run by {by}, not in REDIS_CLUSTER_TESTS")
    if found == 0:
        problems.append("no Lua script found: the pattern no longer matches the sources")
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{found} scripts, {len(problems)} not run on a cluster")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
