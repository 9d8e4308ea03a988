"""Process and server plumbing for wsgate's reliability suite (tests/chaos).

What is here: the Kafka broker and redis-server of a run (started through scripts/kafka and
scripts/redis, stopped and restarted in place for the fault scenarios), a small RESP client, a
"cluster" per scenario (unique topics, consumer group and Redis prefix, so scenarios never see each
other's traffic), gateways and processors as child processes with their /metrics and /readyz.

Spawning, stopping, waiting with a deadline, ports and the calls to scripts/kafka and scripts/redis
are scripts/lib/wsgate_procs.py's, shared with scripts/bench. Every process this module starts is
recorded and signalled by pid only; Runner.close() (called from a finally block) kills whatever is
still alive.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The process plumbing shared with scripts/bench (spawn, stop, wait, ports, /proc, the servers).
sys.path.insert(0, str(REPO / "scripts" / "lib"))

import wsgate_procs  # noqa: E402
from wsgate_procs import (ProcError, ProcGroup, ScriptServers, deadline, free_port,  # noqa: E402,F401
                          parse_metrics, pid_alive, rss_kib, wait_until)


class ChaosError(ProcError):
    """A precondition of the suite failed (a daemon did not start, a server did not come back).
    The shared plumbing raises its base, ProcError: catch that."""


def log(msg: str) -> None:
    # One write per line: stderr writes through, and print() would write the newline separately,
    # letting a TAP line (stdout, same file under scripts/test) land between the two.
    sys.stderr.write(f"# {time.strftime('%H:%M:%S')} {msg}\n")
    sys.stderr.flush()


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    return wsgate_procs.http_get(f"http://127.0.0.1:{port}{path}", timeout)


def metrics(port: int) -> dict[str, float]:
    """Prometheus text of /metrics as {"name{labels}": value}; {} if it does not answer."""
    status, body = http_get(port, "/metrics")
    return parse_metrics(body) if status == 200 else {}


# --- Redis ------------------------------------------------------------------------------------


class Redis:
    """A minimal blocking RESP2 client: enough for HGETALL, GET, EXISTS, SCAN-free inspection."""

    def __init__(self, port: int, timeout: float = 2.0):
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""
        self.others: dict[int, Redis] = {}  # the cluster nodes MOVED named, kept open

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.buf = b""

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None
        for other in self.others.values():
            other.close()
        self.others = {}

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"bad RESP reply {line!r}")

    def cmd(self, *args):
        """One command; reconnects once if the connection broke (Redis was restarted). On a
        Redis Cluster, follows one MOVED to the node serving the key (loopback), like
        redis-cli -c."""
        try:
            return self._cmd(*args)
        except RuntimeError as e:
            moved = str(e).split()
            if len(moved) != 3 or moved[0] != "MOVED":
                raise
            port = int(moved[2].rsplit(":", 1)[1])
            other = self.others.setdefault(port, Redis(port, self.timeout))
            try:
                return other._cmd(*args)
            except (OSError, ConnectionError, RuntimeError):
                other.close()  # a node killed or failed over: connect afresh next time
                self.others.pop(port, None)
                raise

    def _cmd(self, *args):
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self._connect()
                parts = [f"*{len(args)}\r\n".encode()]
                for a in args:
                    b = a if isinstance(a, bytes) else str(a).encode()
                    parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
                self.sock.sendall(b"".join(parts))
                return self._reply()
            except (OSError, ConnectionError):
                self.close()
                if attempt:
                    raise

    def hgetall(self, key: str) -> dict[str, str]:
        r = self.cmd("HGETALL", key) or []
        return dict(zip(r[0::2], r[1::2]))

    def keys_matching(self, pattern: str) -> list[str]:
        """SCAN (inspection only, as the docs' redis-cli examples)."""
        cursor, out = "0", []
        while True:
            cursor, batch = self.cmd("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            out.extend(batch)
            if cursor == "0":
                return out


# --- child processes --------------------------------------------------------------------------


class Proc(wsgate_procs.Proc):
    """A daemon of a scenario: /metrics and /readyz on http_port; extra holds its port, id, url."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http_port = 0
        self.extra: dict = {}

    def stop(self, timeout: float = 15.0) -> int | None:
        return super().stop(timeout)

    def metrics(self) -> dict[str, float]:
        return metrics(self.http_port)

    def ready(self) -> bool:
        return http_get(self.http_port, "/readyz")[0] == 200

    def tail(self, n: int = 30) -> str:
        return super().tail(n)


class Runner:
    """Owns every child process and the run's Kafka and Redis."""

    def __init__(self, run_dir: Path, kafka_port: int, controller_port: int, redis_port: int,
                 bins: dict[str, str]):
        self.run_dir = run_dir
        self.kafka_port = kafka_port
        self.controller_port = controller_port
        self.redis_port = redis_port
        self.bins = bins
        self.procs = ProcGroup(log)
        self.kafka_owned = False
        self.redis_owned = False
        self.kafka_respawned: subprocess.Popen | None = None
        run_dir.mkdir(parents=True, exist_ok=True)
        self.servers = ScriptServers(self.script_env(), run_dir)
        # A Redis Cluster (scripts/redis --cluster), started by the scenarios that need it: six
        # ports from here, their bus ports 10000 higher (below the ephemeral range by default).
        self.redis_cluster_port = int(os.environ.get("WSGATE_CHAOS_REDIS_CLUSTER_PORT", "22001"))
        self.redis_cluster_owned = False
        self.cluster_servers = ScriptServers(
            {**self.script_env(), "WSGATE_REDIS_CLUSTER_MODE": "1",
             "WSGATE_REDIS_CLUSTER_PORT": str(self.redis_cluster_port)}, run_dir)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def script_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "WSGATE_RUN_DIR": str(self.run_dir),
            "WSGATE_KAFKA_PORT": str(self.kafka_port),
            "WSGATE_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "WSGATE_REDIS_PORT": str(self.redis_port),
            "WSGATE_ADMIN_BIN": self.bins["admin"],
        })
        return env

    def _script(self, name: str, action: str) -> None:
        self.servers.script(name, action)

    # Kafka -------------------------------------------------------------------------------------

    def kafka_dir(self) -> Path:
        return self.run_dir / f"kafka-{self.kafka_port}"

    def kafka_pid(self) -> int:
        return self.servers.pid("kafka")

    def start_servers(self) -> None:
        t0 = time.monotonic()
        self.redis_owned = True
        self._script("redis", "start")
        self.kafka_owned = True
        self._script("kafka", "start")
        log(f"Kafka {self.bootstrap} and Redis 127.0.0.1:{self.redis_port} up in "
            f"{time.monotonic() - t0:.1f}s")

    def kafka_stop_in_place(self) -> tuple[list[str], str, dict[str, str]]:
        """Stops the broker JVM with SIGTERM (a controlled shutdown) but keeps its data, and
        returns what restarts it exactly as scripts/kafka started it: argv, cwd, environment."""
        pid = self.kafka_pid()
        if not pid:
            raise ChaosError("no Kafka pid file")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        cwd = os.readlink(f"/proc/{pid}/cwd")
        envb = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        env = dict(e.decode().split("=", 1) for e in envb if b"=" in e)
        os.kill(pid, signal.SIGTERM)
        if self.kafka_respawned is not None and self.kafka_respawned.pid == pid:
            self.kafka_respawned.wait(60)
        else:
            wait_until(lambda: not Path(f"/proc/{pid}").exists() or
                       Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z",
                       60, "the Kafka broker to exit after SIGTERM", 0.1)
        return [a.decode() for a in argv], cwd, env

    def kafka_start_in_place(self, saved) -> None:
        """Restarts the broker stopped by kafka_stop_in_place on the same data directory."""
        argv, cwd, env = saved
        logf = self.kafka_dir() / "broker.log"
        before = logf.read_text(errors="replace").count("Kafka Server started")
        with open(logf, "a") as out:
            self.kafka_respawned = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                                    stdout=out, stderr=subprocess.STDOUT,
                                                    start_new_session=True)
        (self.kafka_dir() / "kafka.pid").write_text(f"{self.kafka_respawned.pid}\n")

        def started():
            if self.kafka_respawned.poll() is not None:
                raise ChaosError(f"the restarted Kafka broker exited; see {logf}")
            return logf.read_text(errors="replace").count("Kafka Server started") > before

        wait_until(started, 90, "the restarted Kafka broker", 0.2)

    # Redis -------------------------------------------------------------------------------------

    def redis_pid(self) -> int:
        return self.servers.pid("redis")

    def redis_restart_empty(self) -> None:
        """redis-server stopped without saving and started again with nothing in it."""
        self._script("redis", "stop")
        self._script("redis", "start")

    def start_redis_cluster(self) -> None:
        """3 primaries and 3 replicas on redis_cluster_port..+5; once per run."""
        if not self.redis_cluster_owned:
            self.redis_cluster_owned = True
            self.cluster_servers.script("redis", "start")

    def stop_redis_cluster(self) -> None:
        if self.redis_cluster_owned:
            self.redis_cluster_owned = False
            self.cluster_servers.script("redis", "stop")

    def stop_servers(self) -> None:
        errors = []
        try:
            self.stop_redis_cluster()
        except ProcError as e:
            errors.append(str(e))
        for name, owned in (("kafka", self.kafka_owned), ("redis", self.redis_owned)):
            if not owned:
                continue
            if name == "kafka" and pid_alive(self.kafka_pid()):
                # A scenario may have left it stopped (SIGSTOP). A broker this suite restarted is
                # not scripts/kafka's child, but its pid file was rewritten, so the script stops
                # it like its own.
                os.kill(self.kafka_pid(), signal.SIGCONT)
            try:
                self._script(name, "stop")
            except ProcError as e:
                errors.append(str(e))
        if self.kafka_respawned is not None:
            try:
                self.kafka_respawned.wait(30)
            except subprocess.TimeoutExpired:
                self.kafka_respawned.kill()
        if errors:
            raise ChaosError("; ".join(errors))

    # daemons -----------------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env_extra: dict[str, str] | None = None,
              log_path: Path | None = None) -> Proc:
        log_path = log_path or (self.run_dir / f"{name}.log")
        env = dict(os.environ)
        # Nothing from a developer's shell configures the daemons behind our flags' backs.
        for k in list(env):
            if k.startswith("WSGATE_") and k not in ("WSGATE_LOG_LEVEL",):
                del env[k]
        env.update(env_extra or {})
        return self.procs.spawn(name, argv, log_path, env=env, cls=Proc)

    def close(self) -> None:
        self.procs.kill_all()

    def admin(self, *args: str) -> str:
        r = subprocess.run([self.bins["admin"], "-b", self.bootstrap, *args], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise ChaosError(f"wsgate-admin {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def chaos_kafka(self, *args: str) -> str:
        r = subprocess.run([self.bins["chaos_kafka"], "-b", self.bootstrap, *args],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise ChaosError(f"chaos-kafka {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def offsets(self, group: str, topic: str) -> dict[int, tuple[int, int]]:
        """{partition: (committed, end)} of group on topic."""
        out = {}
        for line in self.chaos_kafka("offsets", "-g", group, "-t", topic).splitlines():
            p, c, e = (int(x) for x in line.split())
            out[p] = (c, e)
        return out


# --- a cluster per scenario ---------------------------------------------------------------------


class Cluster:
    """Gateways and processors sharing topics, a consumer group and a Redis prefix of their own."""

    IN_PARTITIONS = 4
    OUT_PARTITIONS = 4

    def __init__(self, runner: Runner, name: str, lease_ttl: str = "3s", lease_renew: str = "1s",
                 redis_cluster: bool = False):
        self.r = runner
        self.redis_cluster = redis_cluster
        self.name = name
        tag = f"{name}-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
        self.in_topic = f"chaos.{tag}.in"
        self.out_topic = f"chaos.{tag}.out"
        self.group = f"chaos.{tag}"
        self.prefix = f"chaos:{tag}:"
        self.lease_ttl = lease_ttl
        self.lease_renew = lease_renew
        self.gateways: list[Proc] = []
        self.processors: list[Proc] = []
        self.redis = Redis(runner.redis_cluster_port if redis_cluster else runner.redis_port)
        runner.admin("topics", "ensure", "--topic", self.in_topic, "--partitions",
                     str(self.IN_PARTITIONS), "--topic", self.out_topic, "--partitions",
                     str(self.OUT_PARTITIONS))

    def common_flags(self) -> list[str]:
        redis = (["--redis-cluster", f"127.0.0.1:{self.r.redis_cluster_port}"] if self.redis_cluster
                 else ["--redis-host", "127.0.0.1", "--redis-port", str(self.r.redis_port)])
        return ["--kafka-brokers", self.r.bootstrap, *redis, "--redis-prefix", self.prefix,
                "--inbound-topic", self.in_topic, "--outbound-topic", self.out_topic,
                "--http-addr", "127.0.0.1"]

    def start_gateway(self, extra: list[str] | None = None, wait: bool = True,
                      wrapper: list[str] | None = None) -> Proc:
        i = len(self.gateways) + 1
        port, http_port = free_port(), free_port()
        gw_id = f"{self.name}-gw{i}"
        argv = (wrapper or []) + [self.r.bins["gateway"], *self.common_flags(),
                                  "--listen-addr", "127.0.0.1", "--listen-port", str(port),
                                  "--http-port", str(http_port), "--gateway-id", gw_id,
                                  "--advertise-addr", f"127.0.0.1:{port}",
                                  "--insecure-dev-user", "--lease-ttl", self.lease_ttl,
                                  "--lease-renew", self.lease_renew, "--drain-window", "1s",
                                  # The close phase lasts until 4 s before the grace ends: 8 s
                                  # leaves 3 s after the last 1001 for the close handshakes
                                  # (docs/RELIABILITY.md, known bug 4, is what 5 s does).
                                  "--drain-grace", "8s",
                                  # Every client of a scenario comes from 127.0.0.1, as from one
                                  # NAT: the per-address caps are off unless a scenario sets them.
                                  "--max-conns-per-addr", "0", "--max-pending-per-addr", "0",
                                  "--max-upgrades-per-addr", "0", *(extra or [])]
        p = self.r.spawn(f"{self.name}-gw{i}", argv)
        p.http_port = http_port
        p.extra.update(port=port, id=gw_id, url=f"ws://127.0.0.1:{port}/")
        self.gateways.append(p)
        if wait:
            self.wait_ready(p, 60 if wrapper else 30)
        return p

    def start_processor(self, extra: list[str] | None = None, wait: bool = True,
                        wrapper: list[str] | None = None) -> Proc:
        i = len(self.processors) + 1
        http_port = free_port()
        argv = (wrapper or []) + [self.r.bins["processor"], *self.common_flags(),
                                  "--http-port", str(http_port), "--handler", "echo",
                                  "--group-id", self.group,
                                  # No commands topic: wsgate_processor_assigned_partitions then
                                  # counts the inbound partitions only, which group_settled sums.
                                  "--commands-topic", "",
                                  # A dead processor's partitions move after 6 s (the broker's
                                  # group.min.session.timeout.ms), not librdkafka's 45 s default.
                                  "-X", "session.timeout.ms=6000",
                                  "-X", "heartbeat.interval.ms=1000", *(extra or [])]
        p = self.r.spawn(f"{self.name}-proc{i}", argv)
        p.http_port = http_port
        self.processors.append(p)
        if wait:
            self.wait_ready(p, 60 if wrapper else 30)
        return p

    @staticmethod
    def wait_ready(p: Proc, timeout: float = 30) -> None:
        def ready():
            if not p.alive():
                raise ChaosError(f"{p.name} exited during start-up (status {p.popen.returncode}):"
                                 f"\n{p.tail(15)}")
            return p.ready()

        try:
            wait_until(ready, timeout, f"{p.name} /readyz", 0.1)
        except ChaosError:
            log(f"{p.name} log:\n{p.tail(20)}")
            raise

    def urls(self) -> list[str]:
        return [g.extra["url"] for g in self.gateways]

    def gw_record(self, gw: Proc) -> dict[str, str]:
        return self.redis.hgetall(f"{self.prefix}gw:{gw.extra['id']}")

    def slot_holder(self, slot: str | int) -> str | None:
        return self.redis.cmd("GET", f"{self.prefix}slot:{slot}")

    def routes(self, users) -> dict[str, dict[str, str]]:
        """{user: {conn_id: gw_id}} for the given users."""
        return {u: self.redis.hgetall(f"{self.prefix}user:{u}") for u in users}

    def route_problems(self, users, expect_conns: int | None = None) -> list[str]:
        """What is wrong with the routing of `users` now: entries pointing at a gateway without a
        lease, a gateway whose record and slot key disagree, a user with the wrong number of
        connections. Empty when the routing is consistent."""
        problems = []
        live = {}
        for g in self.gateways:
            if not g.alive():
                continue
            rec = self.gw_record(g)
            if not rec:
                problems.append(f"{g.extra['id']} has no gateway record")
                continue
            holder = self.slot_holder(rec.get("slot", "?"))
            if holder != g.extra["id"]:
                problems.append(f"{g.extra['id']} claims slot {rec.get('slot')} held by {holder}")
            live[g.extra["id"]] = rec
        for u, conns in self.routes(users).items():
            for conn, gw in conns.items():
                if gw not in live:
                    problems.append(f"user {u} connection {conn} routes to {gw}, which holds no "
                                    "lease")
            if expect_conns is not None and len(conns) != expect_conns:
                problems.append(f"user {u} has {len(conns)} connection entries, expected "
                                f"{expect_conns}")
        return problems

    def stop_all(self) -> list[str]:
        """SIGTERM every daemon still alive; returns complaints about exit statuses."""
        bad = []
        for p in self.gateways + self.processors:
            if p.alive():
                rc = p.stop()
                if rc != 0:
                    bad.append(f"{p.name} exited with status {rc}")
        self.redis.close()
        return bad
