#!/usr/bin/env python3
"""Writes the fuzzer's seed corpus into tests/fuzz/corpus/ (committed; rerun after adding cases).

Seeds: every golden vector, plus hostile inputs built byte by byte (no MessagePack library, so the
bytes are exactly what is written here): truncations, counts and lengths of every width that the
input cannot back, deep nesting, wrong types for every key, invalid UTF-8 ids, duplicate keys,
signed integer encodings, unknown keys and the byte 0xc1.

Usage: tests/fuzz/make_corpus.py   (deletes and rewrites corpus/)
"""

import pathlib
import shutil
import struct

HERE = pathlib.Path(__file__).resolve().parent
GOLDEN = HERE.parent / "golden" / "vectors"
OUT = HERE / "corpus"


def s(text):
    """A MessagePack str, smallest header."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    n = len(raw)
    if n < 32:
        return bytes([0xA0 | n]) + raw
    if n < 256:
        return b"\xd9" + bytes([n]) + raw
    return b"\xda" + struct.pack(">H", n) + raw


def u(n):
    """A MessagePack uint, smallest encoding."""
    if n < 128:
        return bytes([n])
    if n < 256:
        return b"\xcc" + bytes([n])
    if n < 65536:
        return b"\xcd" + struct.pack(">H", n)
    if n < 2**32:
        return b"\xce" + struct.pack(">I", n)
    return b"\xcf" + struct.pack(">Q", n)


def m(pairs):
    """A map of (key, raw value bytes) pairs, keys as str unless already bytes."""
    body = b"".join((k if isinstance(k, bytes) else s(k)) + v for k, v in pairs)
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
    return head + body


BASE = [("v", u(1)), ("t", s("msg")), ("g", s("gw-1")), ("s", u(3)), ("u", s("alice")),
        ("c", u(42)), ("d", b"\xc4\x02hi")]
DELIVER = [("v", u(1)), ("t", s("deliver")), ("g", s("gw-1")), ("cs", b"\x92\x01\x02"),
           ("d", b"\xc4\x00")]


def with_field(base, key, value):
    """`base` with `key` set to raw `value` (replaced in place, or appended)."""
    pairs = [(k, value if k == key else v) for k, v in base]
    if key not in [k for k, _ in base]:
        pairs.append((key, value))
    return m(pairs)


def hostile():
    seeds = {}
    base = m(BASE)

    # Declared sizes the input cannot back, every width, top level and inside each field.
    bombs = {
        "array16": b"\xdc\xff\xff", "array32": b"\xdd\xff\xff\xff\xff",
        "map16": b"\xde\xff\xff", "map32": b"\xdf\xff\xff\xff\xff",
        "str8": b"\xd9\xff", "str16": b"\xda\xff\xff", "str32": b"\xdb\xff\xff\xff\xff",
        "bin8": b"\xc4\xff", "bin16": b"\xc5\xff\xff", "bin32": b"\xc6\xff\xff\xff\xff",
        "ext8": b"\xc7\xff\x01", "ext16": b"\xc8\xff\xff\x01", "ext32": b"\xc9\xff\xff\xff\xff\x01",
        "fixarray": b"\x9f", "fixmap": b"\x8f", "fixstr": b"\xbf",
    }
    for name, bomb in bombs.items():
        seeds[f"bomb-top-{name}"] = bomb
        for key in ("d", "u", "cs", "m", "zz"):
            seeds[f"bomb-{key}-{name}"] = with_field(BASE, key, bomb)
    seeds["bomb-nested-owed"] = with_field(BASE, "zz", b"\x92\xdc\x00\x03\x01\x01\x01")

    # Nesting around the caps (metadata 8, everything 64).
    for depth in (8, 9, 64, 65, 1000):
        seeds[f"deep-m-{depth}"] = with_field(BASE, "m", b"\x81\xa1a" * depth + b"\x01")
        seeds[f"deep-unknown-{depth}"] = with_field(BASE, "zz", b"\x91" * depth + b"\x01")

    # Every key with the wrong type.
    wrong = {"int": u(5), "neg": b"\xff", "str": s("x"), "bin": b"\xc4\x01x", "nil": b"\xc0",
             "bool": b"\xc3", "float": b"\xcb" + struct.pack(">d", 1.5), "array": b"\x91\x01",
             "map": b"\x81\x01\x02", "ext": b"\xd4\x01\x00"}
    for key in ("v", "t", "g", "s", "u", "c", "cs", "n", "q", "ts", "cc", "cr", "b", "m", "d"):
        for name, value in wrong.items():
            seeds[f"type-{key}-{name}"] = with_field(BASE, key, value)

    # Invalid UTF-8 in every string field.
    for name, raw in {"overlong": b"\xc0\xaf", "surrogate": b"\xed\xa0\x80",
                      "too-big": b"\xf4\x90\x80\x80", "cut": b"a\xe2\x82",
                      "continuation": b"\x80a"}.items():
        for key in ("u", "g", "cr", "t"):
            seeds[f"utf8-{key}-{name}"] = with_field(BASE + [("cc", u(1000))], key, s(raw))

    # Duplicates, missing fields, kinds, versions, close codes, targets.
    seeds["dup-u"] = m(BASE + [("u", s("mallory"))])
    seeds["dup-v"] = m(BASE + [("v", u(1))])
    seeds["dup-unknown"] = m(BASE + [("zz", u(1)), ("zz", u(2))])
    for i, (key, _) in enumerate(BASE):
        seeds[f"missing-{key}"] = m(BASE[:i] + BASE[i + 1:])
    for kind in ("connect", "disconnect", "deliver", "close", "bogus", "MSG", ""):
        seeds[f"kind-{kind or 'empty'}"] = with_field(BASE, "t", s(kind))
    for version in (0, 2, 255, 2**64 - 1):
        seeds[f"version-{version}"] = with_field(BASE, "v", u(version))
    for code in (999, 1000, 1004, 1005, 1006, 1015, 2999, 3000, 4999, 5000, 65535):
        seeds[f"close-{code}"] = m([("v", u(1)), ("t", s("close")), ("g", s("gw-1")),
                                    ("c", u(1)), ("cc", u(code)), ("cr", s("bye"))])
        seeds[f"disconnect-{code}"] = with_field(BASE, "cc", u(code))
    seeds["deliver-list"] = m(DELIVER)
    seeds["deliver-c-and-cs"] = m(DELIVER + [("c", u(1))])
    seeds["deliver-empty-cs"] = with_field(DELIVER, "cs", b"\x90")
    seeds["deliver-user"] = m([("v", u(1)), ("t", s("deliver")), ("g", s("gw-1")),
                               ("u", s("bob")), ("d", b"\xc4\x01x")])
    seeds["cr-without-cc"] = m(BASE + [("cr", s("bye"))])
    seeds["slot-2-31"] = with_field(BASE, "s", u(2**31))

    # Signed encodings of small numbers, and every width.
    for fmt, raw in {"int8": b"\xd0\x2a", "int16": b"\xd1\x00\x2a", "int32": b"\xd2\x00\x00\x00\x2a",
                     "int64": b"\xd3" + struct.pack(">q", 42), "uint64": b"\xcf" + struct.pack(">Q", 42)}.items():
        seeds[f"int-c-{fmt}"] = with_field(BASE, "c", raw)
        seeds[f"int-cs-{fmt}"] = with_field(DELIVER, "cs", b"\x91" + raw)

    # Unknown keys of every kind, payload as str, metadata, non-str keys, 0xc1 and trailing bytes.
    seeds["unknown-nested"] = m(BASE + [("zz", b"\x82\xa1a\x91\x92\x01\x02\xa1b\x81\xa1c\xc0"),
                                        ("future", b"\xc7\x02\x05\xab\xcd")])
    seeds["payload-str"] = with_field(BASE, "d", s("hello"))
    seeds["meta"] = with_field(BASE, "m", b"\x83\xa3sub\xa5alice\x01\x02\xc3\x91\xcb" +
                               struct.pack(">d", 0.25))
    seeds["key-int"] = m(BASE + [(b"\x07", u(1))])
    seeds["c1-top"] = b"\xc1"
    seeds["c1-value"] = with_field(BASE, "zz", b"\xc1")
    seeds["trailing"] = base + b"\xc0"
    seeds["two-envelopes"] = base + base

    # Truncations of a full envelope.
    for cut in range(0, len(base), 5):
        seeds[f"cut-{cut:03d}"] = base[:cut]
    return seeds


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    count = 0
    for path in sorted(GOLDEN.glob("*.msgpack")):
        shutil.copyfile(path, OUT / f"golden-{path.stem}")
        count += 1
    for name, data in sorted(hostile().items()):
        (OUT / name).write_bytes(data)
        count += 1
    print(f"wrote {count} seeds to {OUT}")


if __name__ == "__main__":
    main()
