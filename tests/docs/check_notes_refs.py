#!/usr/bin/env python3
"""Every docs/notes/ pointer in the code resolves.

Usage: check_notes_refs.py SOURCE_ROOT

Finds each `docs/notes/<file>.md` and `docs/notes/<file>.md#<anchor>` in the files under
gateway/, processor/, common/, proto/ and tools/, and fails, naming the file and line, when the
note does not exist or has no `## <anchor>` heading. Notes say how to name anchors:
docs/notes/README.md.
"""

import os
import re
import sys

DIRS = ("gateway", "processor", "common", "proto", "tools")
REF = re.compile(r"docs/notes/([A-Za-z0-9._-]+\.md)(?:#([a-z0-9-]+))?")


def anchors(path):
    with open(path, encoding="utf-8") as f:
        return {line[3:].strip() for line in f if line.startswith("## ")}


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = argv[1]
    notes = {}
    problems = []
    refs = 0
    for d in DIRS:
        for dirpath, _, names in os.walk(os.path.join(root, d)):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                try:
                    with open(path, encoding="utf-8") as f:
                        lines = f.readlines()
                except (UnicodeDecodeError, OSError):
                    continue
                for n, line in enumerate(lines, 1):
                    for m in REF.finditer(line):
                        refs += 1
                        note, anchor = m.group(1), m.group(2)
                        where = f"{os.path.relpath(path, root)}:{n}"
                        if note not in notes:
                            p = os.path.join(root, "docs", "notes", note)
                            notes[note] = anchors(p) if os.path.isfile(p) else None
                        if notes[note] is None:
                            problems.append(f"{where}: docs/notes/{note} does not exist")
                        elif anchor and anchor not in notes[note]:
                            problems.append(f"{where}: docs/notes/{note} has no '## {anchor}'")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"\n{len(problems)} of {refs} docs/notes/ pointers do not resolve: fix the pointer, "
              "or add the section to the note.", file=sys.stderr)
        return 1
    print(f"{refs} docs/notes/ pointers resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
