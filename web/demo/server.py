#!/usr/bin/env python3
"""The browser demo's server, for the local cluster only (scripts/cluster runs it).

DEVELOPMENT ONLY. It hands a signed token for any user name to anyone who asks: it binds to
127.0.0.1 and refuses to bind anywhere else. A real deployment mints tokens in its own identity
service after a real sign-in.

Serves:
  GET /, /demo.js, /style.css   the page (the files beside this script, nothing else)
  GET /wsgate-client.js         the client library as one ES module (clients/js, built by
                                scripts/cluster with the toolchain of scripts/setup: --client-js)
  GET /api/config               the cluster's layout (cluster.json written by scripts/cluster)
  GET /api/token?user=U         {"token","user","exp"}: a JWT minted by wsgate-token with the
                                cluster's development secret
  GET /api/where?user=U         where Redis routes U: {"user", "connections": [{"conn",
                                "gateway", "name", "slot", "addr"}]} from HGETALL
                                <prefix>user:U and HGETALL <prefix>gw:<id> (the documented keys)

Standard library only (Debian's python3 runs it). Threads: one per request (ThreadingHTTPServer);
each /api/where opens its own short Redis connection.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
MAX_USER_BYTES = 256  # WSG_MAX_USER_LEN
REDIS_TIMEOUT_S = 2.0
MAX_CONNECTIONS_SHOWN = 64
TOKEN_TTL = "1h"


class RedisError(Exception):
    pass


class Redis:
    """The few RESP2 commands this page needs, over one blocking socket with a deadline."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REDIS_TIMEOUT_S)
        self.buf = b""

    def close(self):
        self.sock.close()

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a.encode() if isinstance(a, str) else a
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        try:
            self.sock.sendall(b"".join(out))
            return self._reply()
        except RedisError as e:
            # A Redis Cluster (scripts/cluster up --redis-cluster): follow one MOVED to the node
            # serving the key, like redis-cli -c; the local cluster is on loopback.
            moved = str(e).split()
            if len(moved) != 3 or moved[0] != "MOVED":
                raise
            self.close()
            self.sock = socket.create_connection(
                ("127.0.0.1", int(moved[2].rsplit(":", 1)[1])), timeout=REDIS_TIMEOUT_S)
            self.buf = b""
            self.sock.sendall(b"".join(out))
            return self._reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RedisError("Redis closed the connection")
            self.buf += chunk
            if len(self.buf) > 1 << 20:
                raise RedisError("Redis reply line too long")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RedisError("Redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def _reply(self, depth=0):
        if depth > 4:
            raise RedisError("Redis reply nested too deeply")
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            if n > 100000:
                raise RedisError("Redis reply too long")
            return None if n < 0 else [self._reply(depth + 1) for _ in range(n)]
        raise RedisError("unexpected Redis reply %r" % line[:20])


def valid_user(user):
    return user and len(user.encode()) <= MAX_USER_BYTES and all(ord(c) >= 0x20 for c in user)


class Handler(BaseHTTPRequestHandler):
    server_version = "wsgate-demo"

    def log_message(self, fmt, *args):
        sys.stderr.write("web: %s %s\n" % (self.address_string(), fmt % args))

    def send_body(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status, obj):
        self.send_body(status, json.dumps(obj).encode(), "application/json")

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path in STATIC:
            name, ctype = STATIC[url.path]
            with open(os.path.join(HERE, name), "rb") as f:
                return self.send_body(HTTPStatus.OK, f.read(), ctype)
        if url.path == "/wsgate-client.js":
            try:
                with open(self.server.client_js, "rb") as f:
                    body = f.read()
            except OSError as e:
                return self.send_json(HTTPStatus.NOT_FOUND, {"error": "client library not built: %s" % e})
            return self.send_body(HTTPStatus.OK, body, "text/javascript; charset=utf-8")
        if url.path == "/favicon.ico":
            return self.send_body(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if url.path == "/api/config":
            return self.send_json(HTTPStatus.OK, self.server.cluster())
        if url.path in ("/api/token", "/api/where"):
            user = (query.get("user") or [""])[0]
            if not valid_user(user):
                return self.send_json(
                    HTTPStatus.BAD_REQUEST,
                    {"error": "user: give 1..256 bytes of UTF-8 without control characters"},
                )
            if url.path == "/api/token":
                return self.token(user)
            return self.where(user)
        self.send_json(HTTPStatus.NOT_FOUND, {"error": "no such page"})

    def token(self, user):
        with open(self.server.secret_file, encoding="utf-8") as f:
            secret = f.readline().rstrip("\n")
        env = dict(os.environ, WSGATE_JWT_SECRET=secret)
        try:
            r = subprocess.run(
                [self.server.token_bin, "--user", user, "--ttl", TOKEN_TTL, "--json"],
                env=env, capture_output=True, text=True, timeout=5, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "wsgate-token: %s" % e})
        if r.returncode != 0:
            return self.send_json(HTTPStatus.BAD_REQUEST, {"error": r.stderr.strip()})
        self.send_body(HTTPStatus.OK, r.stdout.encode(), "application/json")

    def where(self, user):
        cfg = self.server.cluster()
        prefix = cfg.get("redis_prefix", "wsgate:")
        names = {g["id"]: g["name"] for g in cfg.get("gateways", [])}
        try:
            r = Redis(cfg["redis_port"])
            try:
                flat = r.command("HGETALL", prefix + "user:" + user) or []
                conns = []
                records = {}
                for conn, gw in list(zip(flat[::2], flat[1::2]))[:MAX_CONNECTIONS_SHOWN]:
                    if gw not in records:
                        rec = r.command("HGETALL", prefix + "gw:" + gw) or []
                        records[gw] = dict(zip(rec[::2], rec[1::2]))
                    rec = records[gw]
                    conns.append({
                        "conn": conn, "gateway": gw, "name": names.get(gw, "?"),
                        "slot": rec.get("slot"), "addr": rec.get("addr"),
                        "alive": bool(rec),
                    })
            finally:
                r.close()
        except (OSError, RedisError) as e:
            return self.send_json(HTTPStatus.BAD_GATEWAY, {"error": "redis: %s" % e})
        self.send_json(HTTPStatus.OK, {"user": user, "connections": conns})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port, config, secret_file, token_bin, client_js):
        super().__init__(("127.0.0.1", port), Handler)
        self.client_js = client_js
        self.config_path = config
        self.secret_file = secret_file
        self.token_bin = token_bin

    def cluster(self):
        # Read at every request: `scripts/cluster up` rewrites it when the gateways change.
        with open(self.config_path, encoding="utf-8") as f:
            return json.load(f)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--config", required=True, help="cluster.json written by scripts/cluster")
    p.add_argument("--secret-file", required=True)
    p.add_argument("--token-bin", required=True, help="path of wsgate-token")
    p.add_argument("--client-js", required=True,
                   help="the client library's bundle (clients/js/build.mjs: wsgate-client.min.js)")
    a = p.parse_args()
    for path in (a.config, a.secret_file, a.token_bin, a.client_js):
        if not os.path.exists(path):
            p.error("%s does not exist" % path)
    try:
        srv = Server(a.port, a.config, a.secret_file, a.token_bin, a.client_js)
    except OSError as e:
        sys.exit("web: cannot listen on 127.0.0.1:%d: %s" % (a.port, e))
    sys.stderr.write("web: serving the demo on http://127.0.0.1:%d/ (development only)\n" % a.port)
    sys.stderr.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
