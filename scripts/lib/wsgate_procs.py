"""Child processes and servers for wsgate's Python runners, written once: scripts/bench (the
package bench/wsgate_bench) and the reliability suite (tests/chaos, run by scripts/chaos).

What is here: a child in a session (process group) of its own with its log, stopped with SIGTERM
then SIGKILL after a deadline; the set of children one run started, stopped however the run ends;
waiting for a condition with a deadline; free ports; HTTP GET and Prometheus /metrics; CPU and RSS
of a pid from /proc; the Kafka broker and redis-server that scripts/kafka and scripts/redis run.

Standard library only: Debian's python3 runs the benchmark, the venv's (scripts/setup) the chaos
suite. Every process is signalled by its pid, or by its own process group when started as a group
leader (wsgate-load's workers); never by name.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
# By name: Proc.signal() would shadow the module inside the class.
from signal import SIGCONT, SIGKILL, SIGTERM, Signals

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


class ProcError(Exception):
    """A child or a server did not do what was expected; the message says what and where."""


def _stderr(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# --- waiting -----------------------------------------------------------------------------------


def deadline(timeout: float):
    """Yields until timeout seconds have passed (at least once): the loop of every wait here."""
    end = time.monotonic() + timeout
    yield
    while time.monotonic() < end:
        yield


def wait_until(fn, timeout: float, what: str, interval: float = 0.1):
    """Calls fn() until it returns a truthy value (returned) or timeout seconds pass (ProcError
    naming `what`). fn may raise to give up early (a child that died)."""
    for _ in deadline(timeout):
        v = fn()
        if v:
            return v
        time.sleep(interval)
    raise ProcError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- ports and HTTP ----------------------------------------------------------------------------


def free_port() -> int:
    """A port the kernel says is free now (from its ephemeral range)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound now (a server that is exiting may still hold it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return 0, ""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {"name{labels}": value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def metric_sum(text: str, name: str) -> float:
    """Sum of every series of one metric in a /metrics answer."""
    pat = re.compile(r"^" + re.escape(name) + r"(\{[^}]*\})?\s+(\S+)$")
    return sum(float(m.group(2)) for m in map(pat.match, text.splitlines()) if m)


# --- /proc -------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def pid_cpu(pid: int) -> float:
    """CPU seconds (user + system) pid has used; 0 if it is gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """{tid: (comm, CPU seconds)} for every thread of pid (/proc/<pid>/task/*/stat); {} if gone."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    tck = os.sysconf("SC_CLK_TCK")
    for t in tids:
        try:
            text = Path(f"/proc/{pid}/task/{t}/stat").read_text()
            comm = text[text.index("(") + 1:text.rindex(")")]
            f = text.rsplit(")", 1)[1].split()
            out[int(t)] = (comm, (int(f[11]) + int(f[12])) / tck)
        except (OSError, IndexError, ValueError):
            continue
    return out


def sleeps(pid: int) -> int:
    """Voluntary context switches of pid's main thread so far (each a wait that ended: for an
    event loop, one per poll that blocked); 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def rss_kib(pid: int) -> int:
    """Resident set size of pid in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_pids(pid: int) -> list[int]:
    """The direct children of pid (nginx's workers)."""
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# --- child processes ---------------------------------------------------------------------------


class Proc:
    """A child started in a session of its own, stdout and stderr appended to log_path after a
    header line. group=True: the child leads a process group (wsgate-load and its workers) and
    signals go to the whole group."""

    def __init__(self, name: str, argv, log_path, env: dict | None = None, group: bool = False,
                 log=_stderr):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.group = group
        self._log = log
        # A log may be shared by every start of the same name: read only what this one wrote.
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            out.write(f"--- {datetime.datetime.now().isoformat()} {' '.join(self.argv)}\n"
                      .encode())
            out.flush()
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if not self.alive():
            return
        try:
            if self.group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int | None:
        """Exit status (negative: killed by that signal), or None if still running."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20.0, sig: int = SIGTERM) -> int | None:
        """sig (SIGCONT first, in case it was left stopped), then SIGKILL after timeout s."""
        if not self.alive():
            return self.popen.returncode
        self.signal(SIGCONT)
        self.signal(sig)
        rc = self.wait(timeout)
        if rc is None:
            self._log(f"{self.name} (pid {self.pid}) still running {timeout:.0f} s after "
                      f"{Signals(sig).name}; killing it")
            self.signal(SIGKILL)
            rc = self.wait(10)
        return rc

    def kill(self) -> None:
        """SIGKILL at once (and SIGCONT, so a stopped child dies now), then reap it."""
        if self.alive():
            self.signal(SIGCONT)
            self.signal(SIGKILL)
            self.wait(10)

    def pids(self) -> list[int]:
        """The process and its direct children."""
        return [self.pid] + child_pids(self.pid)

    def rss_kib(self, children_only: bool = False) -> int:
        return sum(rss_kib(p) for p in (self.pids()[1:] if children_only else [self.pid]))

    def cpu_s(self, children_only: bool = False) -> float:
        return sum(pid_cpu(p) for p in (self.pids()[1:] if children_only else [self.pid]))

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_start)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])


class ProcGroup:
    """Every child one run started: stop_all() or kill_all() from a finally block ends whatever is
    still alive, however the run ends."""

    def __init__(self, log=_stderr):
        self.procs: list[Proc] = []
        self.log = log

    def spawn(self, name: str, argv, log_path, env: dict | None = None, group: bool = False,
              cls=Proc) -> Proc:
        self.procs = [p for p in self.procs if p.alive()]
        p = cls(name, argv, log_path, env=env, group=group, log=self.log)
        self.procs.append(p)
        return p

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after timeout s, the last started first."""
        for p in reversed(self.procs):
            p.stop(timeout=timeout)
        self.procs.clear()

    def kill_all(self) -> None:
        for p in self.procs:
            p.kill()
        self.procs.clear()


# --- Kafka and Redis through scripts/kafka and scripts/redis -----------------------------------


class ScriptServers:
    """The Kafka broker and redis-server that scripts/kafka and scripts/redis start in
    env["WSGATE_RUN_DIR"] on env's ports (WSGATE_KAFKA_PORT, WSGATE_KAFKA_CONTROLLER_PORT,
    WSGATE_REDIS_PORT; WSGATE_ADMIN_BIN creates the topics). Each script's output is appended to
    script_log_dir/<name>-script.log."""

    PORT_VARS = {"kafka": "WSGATE_KAFKA_PORT", "redis": "WSGATE_REDIS_PORT"}

    def __init__(self, env: dict[str, str], script_log_dir):
        self.env = env
        self.run_dir = Path(env["WSGATE_RUN_DIR"])
        self.script_log_dir = Path(script_log_dir)

    def script(self, name: str, action: str, timeout: float | None = None) -> None:
        """scripts/<name> <action>; ProcError with the end of its output when it fails."""
        out = self.script_log_dir / f"{name}-script.log"
        start = out.stat().st_size if out.exists() else 0
        with open(out, "a") as f:
            try:
                rc = subprocess.call([str(SCRIPTS / name), action], env=self.env, stdout=f,
                                     stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = f"timed out after {timeout:.0f} s"
        if rc != 0:
            with open(out, errors="replace") as f:
                f.seek(start)
                tail = f.read()[-3000:]
            raise ProcError(f"scripts/{name} {action} failed (exit {rc}); see {out}:\n{tail}")

    def running(self, name: str) -> bool:
        return subprocess.run([str(SCRIPTS / name), "status"], env=self.env,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0

    def pid(self, name: str) -> int:
        """pid of the server scripts/<name> started (0 if none)."""
        return server_pid(self.run_dir, name, int(self.env[self.PORT_VARS[name]]))


def server_pid(run_dir, name: str, port: int) -> int:
    """pid from the pid file scripts/kafka or scripts/redis keeps in run_dir/<name>-<port>/."""
    try:
        return int((Path(run_dir) / f"{name}-{port}" / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
