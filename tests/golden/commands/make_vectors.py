#!/usr/bin/env python3
"""Golden vectors of the command envelope (docs/PROTOCOL.md, "Commands").

Encodes each command below with a small MessagePack writer of its own (the subset the format
uses: map, str, uint, bin, bool, array; smallest forms), independent of msgpack-c, so the C
encoder (tests/unit/wsg_command_test.c compares its bytes with these files) and this script
check each other.

Usage: make_vectors.py DIR           rewrite DIR/<name>.msgpack
       make_vectors.py --check DIR   fail if a file differs from what this script writes
"""
import os
import struct
import sys


def pack(v):
    if isinstance(v, bool):
        return b"\xc3" if v else b"\xc2"
    if isinstance(v, int):
        assert v >= 0
        if v < 0x80:
            return bytes([v])
        for tag, fmt, lim in ((0xCC, ">B", 1 << 8), (0xCD, ">H", 1 << 16), (0xCE, ">I", 1 << 32),
                              (0xCF, ">Q", 1 << 64)):
            if v < lim:
                return bytes([tag]) + struct.pack(fmt, v)
    if isinstance(v, str):
        b = v.encode()
        n = len(b)
        if n < 32:
            return bytes([0xA0 | n]) + b
        if n < 256:
            return b"\xd9" + bytes([n]) + b
        return b"\xda" + struct.pack(">H", n) + b
    if isinstance(v, bytes):
        n = len(v)
        if n < 256:
            return b"\xc4" + bytes([n]) + v
        return b"\xc5" + struct.pack(">H", n) + v
    if isinstance(v, list):
        assert len(v) < 16
        return bytes([0x90 | len(v)]) + b"".join(pack(x) for x in v)
    if isinstance(v, dict):  # keys in insertion order: the order of the specification
        assert len(v) < 16
        return bytes([0x80 | len(v)]) + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(v)


TS = 1700000000123456
VECTORS = {
    "cmd_send_user": {"v": 1, "t": "send", "id": "order-42-shipped", "u": "42", "d": b"your order shipped", "ts": TS},
    "cmd_send_users": {"v": 1, "t": "send", "us": ["alice", "bob", "carol"], "b": True, "d": b"\x00\x01\x02", "ts": TS},
    "cmd_send_conn": {"v": 1, "t": "send", "u": "alice", "c": 18446744073709551615, "d": b"{\"to\":\"one tab\"}"},
    "cmd_disconnect_user": {"v": 1, "t": "disconnect", "u": "mallory", "cc": 4100, "cr": "banned"},
    "cmd_disconnect_conn": {"v": 1, "t": "disconnect", "id": "k1", "u": "alice", "c": 7},
    "cmd_publish": {"v": 1, "t": "publish", "ch": "match:7", "d": b"{\"score\":\"2-1\"}", "ts": TS},
    "cmd_presence": {"v": 1, "t": "presence", "ch": "match:7"},
    "cmd_history": {"v": 1, "t": "history", "ch": "match:7"},
    "cmd_info": {"v": 1, "t": "info"},
}


def main(argv):
    check = argv[1:2] == ["--check"]
    d = argv[2] if check else argv[1]
    bad = 0
    for name, cmd in VECTORS.items():
        path = os.path.join(d, name + ".msgpack")
        data = pack(cmd)
        if check:
            with open(path, "rb") as f:
                if f.read() != data:
                    print(f"{path}: differs from what make_vectors.py writes", file=sys.stderr)
                    bad += 1
        else:
            with open(path, "wb") as f:
                f.write(data)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
