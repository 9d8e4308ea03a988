"""The Centrifugo peer: built from the Go module proxy on first use, started as n nodes sharing
its Redis engine. The idle and round-trip scenarios measure it beside wsgate."""

import json
import os
import shutil
import subprocess
from pathlib import Path

from .common import log

VERSION = "v6.9.1"
MODULE = "github.com/centrifugal/centrifugo/v6"


class Centrifugo:
    def __init__(self, ctx):
        self.ctx = ctx
        self.error = None
        self.nodes = []

    def binary(self):
        env = os.environ.get("WSGATE_CENTRIFUGO_BIN")
        return Path(env) if env else self.ctx.cache / f"centrifugo-{VERSION}" / "centrifugo"

    def missing(self):
        """None when it can run; otherwise why not (with the command to fix it)."""
        if self.error:
            return self.error
        if not self.binary().exists():
            self.build()
        return self.error

    def build(self):
        go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists(
            "/usr/local/go/bin/go") else None)
        cmd = f"GOBIN={self.binary().parent} go install {MODULE}@{VERSION}"
        if not go:
            self.error = f"no Go toolchain to run `{cmd}`"
            return
        log(f"building Centrifugo from the Go module proxy (several minutes): {cmd}")
        env = dict(os.environ, GOBIN=str(self.binary().parent), GOFLAGS="-buildvcs=false")
        r = subprocess.run([go, "install", f"{MODULE}@{VERSION}"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=3600)
        if r.returncode != 0 or not self.binary().exists():
            self.error = f"`{cmd}` failed:\n{r.stdout[-1500:]}"

    def start(self, n):
        ctx = self.ctx
        self.nodes = []
        for i in range(n):
            port = ctx.port(400 + i)
            cfg = {"http_server": {"address": "127.0.0.1", "port": port},
                   "log": {"level": "warn"},
                   "engine": {"type": "redis",
                              "redis": {"address": [f"redis://127.0.0.1:{ctx.redis_port}"],
                                        "prefix": ctx.unique("cf")}},
                   "client": {"token": {"hmac_secret_key": ctx.secret},
                              "allowed_origins": ["http://127.0.0.1"]},
                   "channel": {"without_namespace": {"allow_subscribe_for_client": True,
                                                     "allow_publish_for_client": True}},
                   "usage_stats": {"disabled": True}}
            if i > 0:
                cfg["engine"]["redis"]["prefix"] = self.nodes[0].prefix
            f = ctx.run_dir / f"centrifugo{i}.json"
            f.write_text(json.dumps(cfg, indent=2))
            p = ctx.spawn(f"centrifugo{i}", [self.binary(), "-c", f])
            p.prefix = cfg["engine"]["redis"]["prefix"]
            p.url = f"ws://127.0.0.1:{port}/connection/websocket"
            self.nodes.append(p)
            ctx.wait_listening(p, f"centrifugo{i} to listen", f"http://127.0.0.1:{port}/", 30)
        return self.nodes

    def stop(self):
        for p in self.nodes:
            p.stop()
        self.nodes = []
