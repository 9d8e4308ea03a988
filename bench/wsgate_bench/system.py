"""The machine a run measured: recorded in results.json beside the figures."""

import os
import platform
import subprocess
from pathlib import Path

from .common import REPO


def meminfo():
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0])
    return out


def _out(argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True).stdout


def machine():
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "model": model, "kernel": platform.release(),
            "mem_gib": round(meminfo()["MemTotal"] / 1024 / 1024, 1),
            "nofile": subprocess.run(["sh", "-c", "ulimit -Hn"], stdout=subprocess.PIPE,
                                     text=True).stdout.strip(),
            # The evidence that the limit cannot be raised here (no CAP_SYS_RESOURCE).
            "nofile_raise": subprocess.run(["bash", "-c", "ulimit -Hn 30000 && echo raised"],
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True).stdout.strip(),
            "nr_open": Path("/proc/sys/fs/nr_open").read_text().strip(),
            "libwebsockets": _out(["dpkg-query", "-W", "-f=${Version}", "libwebsockets17"]),
            "librdkafka": _out(["dpkg-query", "-W", "-f=${Version}", "librdkafka1"]),
            "commit": _out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).strip()}
