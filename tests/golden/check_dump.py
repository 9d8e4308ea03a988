#!/usr/bin/env python3
"""wsgate-dump --stdin against the golden vectors.

Feeds every vector in kcat's '%R%s' framing (4-byte big-endian signed length, then the bytes),
with a corrupt record and a null payload in the middle, and checks that
  - stdout is exactly the vectors' .json lines, in order (the dump and the golden vectors share
    one rendering);
  - each bad record gives one stderr line naming its position and error, and the dump goes on;
  - the exit status is 3 (finished, some records bad), 0 when all are good;
  - --user, --type and --count filter and stop as documented;
  - a stream cut inside a record, or input that is not '%R%s' framing, is a fatal error (1);
  - --commands renders the command vectors (../commands/) with the command's keys in wire order,
    filters them by --type and --user (u or one of us), and refuses envelopes (exit 3).

Usage: check_dump.py WSGATE_DUMP_BINARY VECTORS_DIR
"""

import json
import pathlib
import struct
import subprocess
import sys

TIMEOUT = 60


def frame(data):
    return struct.pack(">i", len(data)) + data


def run(dump, stream, *args):
    proc = subprocess.run([dump, "--stdin", *args], input=stream, capture_output=True,
                          timeout=TIMEOUT, check=False)
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


def main(argv):
    dump, directory = argv[1], pathlib.Path(argv[2])
    vectors = sorted(directory.glob("*.msgpack"))
    problems = []

    def expect(cond, what):
        if not cond:
            problems.append(what)

    good = b"".join(frame(p.read_bytes()) for p in vectors)
    expected = "".join(p.with_suffix(".json").read_text(encoding="utf-8") for p in vectors)
    expect(len(vectors) >= 15, f"only {len(vectors)} vectors in {directory}")

    status, out, err = run(dump, good)
    expect(status == 0, f"all good: exit {status}, stderr {err!r}")
    expect(out == expected, "all good: stdout differs from the .json files")
    expect(err == "", f"all good: stderr {err!r}")

    # A truncated envelope after the first vector, a null payload after the second.
    first = vectors[0].read_bytes()
    mixed = (frame(first) + frame(first[:-2]) + frame(vectors[1].read_bytes()) +
             struct.pack(">i", -1) + b"".join(frame(p.read_bytes()) for p in vectors[2:]))
    status, out, err = run(dump, mixed)
    lines = err.splitlines()
    expect(status == 3, f"bad records: exit {status}, expected 3")
    expect(out == expected, "bad records: the good records are not all printed, in order")
    expect(len(lines) == 2, f"bad records: {len(lines)} stderr lines, expected 2: {err!r}")
    if len(lines) == 2:
        expect("record 1 " in lines[0] and "TRUNCATED" in lines[0], f"line 1: {lines[0]!r}")
        expect("record 3 " in lines[1] and "null payload" in lines[1], f"line 2: {lines[1]!r}")

    status, out, _ = run(dump, good, "--user", "bob")
    expect(status == 0 and out == (directory / "deliver_user.json").read_text(encoding="utf-8"),
           f"--user bob: exit {status}, stdout {out!r}")
    status, out, _ = run(dump, good, "--type", "close")
    closes = sorted(p for p in vectors if p.stem.startswith("close"))
    expect(out == "".join(p.with_suffix(".json").read_text(encoding="utf-8") for p in closes),
           f"--type close: stdout {out!r}")
    status, out, _ = run(dump, good, "--count", "2")
    expect(status == 0 and len(out.splitlines()) == 2, f"--count 2: exit {status}, {out!r}")

    status, out, err = run(dump, good[:-1])
    expect(status == 1 and "input ends" in err, f"cut stream: exit {status}, stderr {err!r}")
    status, out, err = run(dump, b"not kcat framing at all")
    expect(status == 1 and "%R%s" in err, f"unframed input: exit {status}, stderr {err!r}")
    status, out, err = run(dump, b"")
    expect(status == 0 and out == "" and err == "", f"empty input: exit {status}")

    check_commands(dump, directory.parent / "commands", good, expect)

    for problem in problems:
        sys.stderr.write(f"check_dump.py: {problem}\n")
    print(f"wsgate-dump --stdin: {len(vectors)} vectors, {len(problems)} problems")
    return 1 if problems else 0


def check_commands(dump, directory, envelopes, expect):
    vectors = sorted(directory.glob("cmd_*.msgpack"))
    expect(len(vectors) >= 9, f"only {len(vectors)} command vectors in {directory}")
    stream = b"".join(frame(p.read_bytes()) for p in vectors)
    status, out, err = run(dump, stream, "--commands")
    lines = out.splitlines()
    expect(status == 0 and err == "", f"--commands: exit {status}, stderr {err!r}")
    expect(len(lines) == len(vectors), f"--commands: {len(lines)} lines for {len(vectors)}")
    wire = ["v", "t", "id", "u", "us", "c", "ch", "cc", "cr", "b", "d", "d_text", "ts"]
    for path, line in zip(vectors, lines):
        obj = json.loads(line)
        kind = path.stem.split("_")[1]
        expect(obj.get("t") == kind, f"{path.name}: t {obj.get('t')!r}, expected {kind!r}")
        keys = list(obj)
        expect(keys == sorted(keys, key=wire.index), f"{path.name}: keys out of order {keys}")
    users = next((json.loads(l) for l in lines if '"us":' in l), None)
    expect(users is not None, "--commands: no vector with us")
    if users:
        status, out, _ = run(dump, stream, "--commands", "--user", users["us"][-1])
        expect(status == 0 and [json.loads(l) for l in out.splitlines()] == [users],
               f"--commands --user {users['us'][-1]}: {out!r}")
    status, out, _ = run(dump, stream, "--commands", "--type", "publish")
    expect(status == 0 and len(out.splitlines()) == 1 and '"t":"publish"' in out,
           f"--commands --type publish: {out!r}")
    status, _, err = run(dump, stream, "--commands", "--type", "deliver")
    expect(status == 2 and "not a command type" in err, f"--type deliver: {status} {err!r}")
    status, out, err = run(dump, envelopes[:4 + struct.unpack(">i", envelopes[:4])[0]],
                           "--commands")
    expect(status == 3 and out == "" and len(err.splitlines()) == 1,
           f"an envelope through --commands: exit {status}, stderr {err!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
