"""The nchan peer: Debian's nginx with libnginx-mod-nchan, installed on first use and run from a
configuration of its own on a port of its own (the packaged service is not used). The idle and
fan-out scenarios measure it beside wsgate."""

import os
import shutil
import subprocess
from pathlib import Path

from wsgate_procs import wait_until

from .common import log

MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
NGINX = Path("/usr/sbin/nginx")

CONF = """load_module {module};
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 19900; use epoll; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location ~ ^/sub/(\\w+)$ {{
      nchan_subscriber websocket;
      nchan_channel_id $1;
      nchan_subscriber_first_message newest;
    }}
    location ~ ^/pub/(\\w+)$ {{ nchan_publisher websocket http; nchan_channel_id $1; }}
  }}
}}
"""


class Nchan:
    def __init__(self, ctx):
        self.ctx = ctx
        self.error = ""

    def missing(self):
        """None when it can run; otherwise why not (with the command to fix it)."""
        if not NGINX.exists() or not MODULE.exists():
            self.install()
        if not NGINX.exists() or not MODULE.exists():
            return ("nginx or libnginx-mod-nchan is not installed and could not be: "
                    f"{self.error} (apt-get install "
                    "--no-install-recommends nginx libnginx-mod-nchan; on a machine with "
                    "systemd this also starts nginx on port 80: systemctl disable --now nginx)")
        return None

    def install(self):
        sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
        if sudo is None:
            self.error = "not root and no sudo"
            return
        log("installing Debian's nginx and libnginx-mod-nchan (the nchan peer)")
        r = subprocess.run(sudo + ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install",
                                   "-y", "-qq", "--no-install-recommends", "nginx",
                                   "libnginx-mod-nchan"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=1200)
        if r.returncode != 0:
            self.error = f"apt-get install failed: {r.stdout[-600:]}"

    def start(self, workers):
        """nginx with `workers` workers; .sub_url and .pub_url name one channel."""
        ctx = self.ctx
        d = ctx.run_dir / "nchan"
        d.mkdir(exist_ok=True)
        port = ctx.port(500)
        (d / "nginx.conf").write_text(CONF.format(module=MODULE, workers=workers, d=d, port=port))
        p = ctx.spawn("nginx", [NGINX, "-c", d / "nginx.conf", "-p", f"{d}/"])
        room = ctx.unique("r").replace("-", "_")
        p.sub_url = f"ws://127.0.0.1:{port}/sub/{room}"
        p.pub_url = f"ws://127.0.0.1:{port}/pub/{room}"
        ctx.wait_listening(p, "nginx to listen", f"http://127.0.0.1:{port}/", 20)
        wait_until(lambda: len(p.pids()) > workers, 10, "nginx workers")
        return p
