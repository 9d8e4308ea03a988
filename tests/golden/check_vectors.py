#!/usr/bin/env python3
"""Checks wsgate's golden vectors with an independent MessagePack implementation.

For every <name>.msgpack in the directory given as argument (default: ./vectors beside this file):
  1. decode it with Python's msgpack, render it as docs/PROTOCOL.md "JSON rendering" says and
     compare with <name>.json;
  2. build the envelope from <name>.json alone, encode it with Python's msgpack and compare the
     bytes with <name>.msgpack: proof that a producer in another language writes what wsgate
     writes, byte for byte.
Exits 0 when every vector passes, 1 otherwise (one line per problem on stderr).
"""

import base64
import json
import pathlib
import sys

try:
    import msgpack
except ImportError:
    sys.stderr.write(
        f"check_vectors.py: the Python package 'msgpack' is not installed for {sys.executable}.\n"
        "Run scripts/setup, then put its venv first on PATH (scripts/test does) and reconfigure,\n"
        "or: python3 -m venv /tmp/v && /tmp/v/bin/pip install msgpack\n")
    sys.exit(1)

# The order in which wsgate writes the keys (PROTOCOL.md, "Encoding rules").
KEY_ORDER = ["v", "t", "g", "s", "u", "c", "cs", "n", "q", "qs", "ch", "co", "ce", "rq", "rf", "ts", "cc", "cr", "b", "m", "d"]
KINDS = {"msg", "connect", "disconnect", "deliver", "close", "publish", "subscribe", "unsubscribe", "subscribe_request", "joinleave"}
MIN_VECTORS = 15


def render_value(value):
    """A MessagePack value inside `m` as JSON: bin as base64, ext as {"ext", "base64"}."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "base64": base64.b64encode(value.data).decode("ascii")}
    if isinstance(value, list):
        return [render_value(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = k if isinstance(k, str) else json.dumps(render_value(k), separators=(",", ":"))
            out[key] = render_value(v)
        return out
    return value


def render(env):
    """The decoded envelope as wsgate-dump prints it."""
    out = {}
    for key in KEY_ORDER:
        if key not in env:
            continue
        value = env[key]
        if key == "d":
            out["d"] = base64.b64encode(value).decode("ascii")
            try:
                # Python's codec is strict like wsgate's: no overlongs, surrogates or > U+10FFFF.
                out["d_text"] = value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        elif key == "m":
            out["m"] = render_value(value)
        else:
            out[key] = value
    return out


def envelope_from_json(doc):
    """Builds the envelope a Python producer would write, keys in wsgate's order."""
    env = {}
    for key in KEY_ORDER:
        if key not in doc:
            continue
        if key == "d":
            env["d"] = base64.b64decode(doc["d"], validate=True)
        else:
            env[key] = doc[key]
    return env


def check(path, problems):
    name = path.stem
    raw = path.read_bytes()
    doc = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))

    env = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    if not isinstance(env, dict):
        problems.append(f"{name}: not a map")
        return
    unknown = [k for k in env if k not in KEY_ORDER]
    if unknown:
        problems.append(f"{name}: keys wsgate does not write: {unknown}")
    order = [k for k in KEY_ORDER if k in env]
    if list(env) != order:
        problems.append(f"{name}: keys in order {list(env)}, expected {order}")
    if env.get("v") != 1 or env.get("t") not in KINDS:
        problems.append(f"{name}: v={env.get('v')!r} t={env.get('t')!r}")
    if "d" in env and not isinstance(env["d"], bytes):
        problems.append(f"{name}: d is {type(env['d']).__name__}, wsgate writes bin")

    rendered = render(env)
    if rendered != doc:
        problems.append(f"{name}: rendering differs\n  python: {json.dumps(rendered)}\n"
                        f"  file:   {json.dumps(doc)}")
    if "d_text" in doc and base64.b64decode(doc["d"]).decode("utf-8") != doc["d_text"]:
        problems.append(f"{name}: d_text is not the text of d")

    encoded = msgpack.packb(envelope_from_json(doc), use_bin_type=True)
    if encoded != raw:
        problems.append(f"{name}: Python encodes the JSON to different bytes\n"
                        f"  python: {encoded.hex()}\n  file:   {raw.hex()}")


def main(argv):
    directory = pathlib.Path(argv[1]) if len(argv) > 1 else pathlib.Path(__file__).parent / "vectors"
    paths = sorted(directory.glob("*.msgpack"))
    problems = []
    if len(paths) < MIN_VECTORS:
        problems.append(f"{directory}: {len(paths)} vectors, expected at least {MIN_VECTORS}")
    for path in paths:
        try:
            check(path, problems)
        except Exception as exc:  # a broken vector is a failure to report, not a crash
            problems.append(f"{path.stem}: {type(exc).__name__}: {exc}")
    for problem in problems:
        sys.stderr.write(f"check_vectors.py: {problem}\n")
    print(f"{len(paths)} vectors checked with msgpack {msgpack.version}, "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
