"""One invocation of the runner: its directories and secret, the binaries, Kafka and Redis, ports,
topics and names, the wsgate daemons and the load generator wsgate-load. The scenarios receive it
and keep nothing of their own between runs."""

import json
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from wsgate_procs import (ProcError, ProcGroup, ScriptServers, free_port, http_get, metric_sum,
                          pid_cpu, port_free, server_pid, wait_until)

from .common import REPO, BenchError, log


class Context:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.repeats = 1 if args.quick else args.repeats
        # --quick (scripts/test) never shares the full run's state: prepare() empties runs/.
        self.run_dir = (Path(os.environ.get("WSGATE_RUN_DIR", "/tmp/wsgate-bench")) /
                        ("bench-quick" if args.quick else "bench"))
        self.base = int(os.environ.get("WSGATE_BENCH_PORT_BASE", "31000"))
        self.cache = Path(os.environ.get("WSGATE_CACHE", Path.home() / ".cache" / "wsgate"))
        self.procs = ProcGroup(log)
        self.servers = None
        self.started = []  # the servers this invocation started: it stops them
        self.seq = 0
        self.loads = {}  # load-average samples per scenario
        self.bins = {}
        self.quick_ports = {}
        self.peers = {}  # kind -> peer (centrifugo, nchan), made on first use
        self.quick_results = []  # --quick: one bool per check

    # --- set-up --------------------------------------------------------------------------------

    def prepare(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs = self.run_dir / "logs"
        self.raw = self.run_dir / "runs"
        shutil.rmtree(self.raw, ignore_errors=True)  # one invocation's runs, numbered in order
        self.logs.mkdir(exist_ok=True)
        self.raw.mkdir(exist_ok=True)
        self.secret_file = self.run_dir / "jwt-secret"
        if not self.secret_file.exists():
            self.secret_file.write_text(secrets.token_hex(24) + "\n")
            self.secret_file.chmod(0o600)
        self.secret = self.secret_file.read_text().strip()
        if self.quick:
            kafka = os.environ.get("WSGATE_TEST_KAFKA")
            redis_port = os.environ.get("WSGATE_TEST_REDIS_PORT")
            if not kafka or not redis_port:
                log("WSGATE_TEST_KAFKA / WSGATE_TEST_REDIS_PORT not set (scripts/test exports "
                    "them): skipped")
                print("0 passed, 0 failed, 1 skipped", flush=True)
                sys.exit(77)
            self.kafka = kafka
            self.redis_port = int(redis_port)
            self.find_binaries()
        else:
            self.find_binaries()
            self.start_servers()

    def find_binaries(self):
        names = {"gateway": "WSGATE_GATEWAY_BIN", "processor": "WSGATE_PROCESSOR_BIN",
                 "admin": "WSGATE_ADMIN_BIN", "load": "WSGATE_LOAD_BIN",
                 "lws_echo": "WSGATE_LWS_ECHO_BIN", "api": "WSGATE_API_BIN"}
        given = {k: os.environ.get(v) for k, v in names.items()}
        if all(given.values()):
            self.bins = {k: Path(v) for k, v in given.items()}
            self.build_dir = None
        else:
            self.build_dir = Path(os.environ.get("WSGATE_BENCH_BUILD_DIR", REPO / "build-bench"))
            targets = {"gateway": "gateway/wsgate-gateway",
                       "processor": "processor/wsgate-processor",
                       "admin": "tools/wsgate-admin", "load": "bench/load/wsgate-load",
                       "lws_echo": "bench/lws_echo", "api": "api/wsgate-api"}
            if not (self.build_dir / "build.ninja").exists():
                log(f"configuring {self.build_dir} (buildtype=release)")
                self.check_call(["meson", "setup", self.build_dir, "--buildtype=release"])
            self.check_call(["ninja", "-C", self.build_dir] + list(targets.values()))
            self.bins = {k: self.build_dir / v for k, v in targets.items()}
        for k, p in self.bins.items():
            if not os.access(p, os.X_OK):
                raise BenchError(f"{k} binary {p} is missing or not executable")

    def check_call(self, argv, env=None, timeout=1800):
        argv = [str(a) for a in argv]
        r = subprocess.run(argv, env=env, timeout=timeout, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-3000:]}")
        return r.stdout

    def server_env(self):
        env = dict(os.environ)
        env.setdefault("WSGATE_RUN_DIR", str(self.run_dir.parent))
        env.setdefault("WSGATE_KAFKA_PORT", "59092")
        env.setdefault("WSGATE_KAFKA_CONTROLLER_PORT", "59093")
        env.setdefault("WSGATE_REDIS_PORT", "56479")
        env["WSGATE_ADMIN_BIN"] = str(self.bins["admin"])
        return env

    def start_servers(self):
        """Kafka and Redis through scripts/kafka and scripts/redis, unless already running (a
        previous invocation's, kept for the next)."""
        self.servers = ScriptServers(self.server_env(), self.logs)
        env = self.servers.env
        self.kafka = f"127.0.0.1:{env['WSGATE_KAFKA_PORT']}"
        self.redis_port = int(env["WSGATE_REDIS_PORT"])
        for name in ("kafka", "redis"):
            if not self.servers.running(name):
                log(f"starting {name}")
                self.servers.script(name, "start", timeout=180)
                self.started.append(name)

    def stop_servers(self):
        for name in ("redis", "kafka"):
            if name in self.started:
                try:
                    self.servers.script(name, "stop", timeout=120)
                except ProcError as e:
                    log(f"stopping {name}: {e}")
        self.started = []

    def scaled(self, n):
        return max(10, int(n * self.args.scale))

    def port(self, offset):
        """base + offset; in --quick, a port the kernel says is free (scripts/test may run beside
        a full benchmark run, or two test runs beside each other)."""
        if not self.quick:
            port = self.base + offset
            # A server of the previous step may still be exiting; anything else is a clash.
            wait_until(lambda: port_free(port), 20, f"port {port} to be free (in use by another "
                       "program? set WSGATE_BENCH_PORT_BASE)", 0.2)
            return port
        if offset not in self.quick_ports:
            self.quick_ports[offset] = free_port()
        return self.quick_ports[offset]

    def unique(self, what):
        self.seq += 1
        return f"bench{os.getpid()}-{self.seq}-{what}"

    def topics(self, scn, inbound=8, outbound=16):
        t_in, t_out = f"{self.unique(scn)}.in", f"{self.unique(scn)}.out"
        self.check_call([self.bins["admin"], "-b", self.kafka, "topics", "ensure", "--topic", t_in,
                         "--partitions", inbound, "--topic", t_out, "--partitions", outbound],
                        timeout=120)
        return t_in, t_out

    def sample_load(self, scn):
        self.loads.setdefault(scn, []).append(os.getloadavg()[0])

    def peer(self, kind):
        """The Centrifugo or nchan peer of this invocation (built or installed on first use)."""
        if kind not in self.peers:
            from . import centrifugo, nchan
            self.peers[kind] = {"centrifugo": centrifugo.Centrifugo,
                                "nchan": nchan.Nchan}[kind](self)
        return self.peers[kind]

    # --- processes -----------------------------------------------------------------------------

    def spawn(self, name, argv, log_path=None, group=False):
        return self.procs.spawn(name, argv, log_path or self.logs / f"{name}.log", group=group)

    def died(self, p):
        raise BenchError(f"{p.name} exited at start:\n{p.tail()}")

    def wait_listening(self, p, what, url, timeout):
        """Until something answers HTTP at url (any status), or p dies."""
        wait_until(lambda: http_get(url)[0] != 0 or (not p.alive() and self.died(p)), timeout,
                   what)

    def wait_ready(self, p, url, timeout=90):
        def ready():
            if not p.alive():
                self.died(p)
            return http_get(url)[0] == 200
        wait_until(ready, timeout, f"{p.name} to be ready ({url})", 0.2)

    # --- wsgate daemons ------------------------------------------------------------------------

    def start_gateway(self, i, topics, prefix, extra=()):
        port, http = self.port(i), self.port(100 + i)
        argv = [self.bins["gateway"], "--kafka-brokers", self.kafka, "--redis-port",
                self.redis_port, "--listen-addr", "127.0.0.1", "--listen-port", port,
                "--http-addr", "127.0.0.1", "--http-port", http, "--jwt-secret-file",
                self.secret_file, "--max-upgrades-per-sec", "0",
                # All clients share 127.0.0.1: per-address caps would cap the benchmark itself.
                "--max-conns-per-addr", "0", "--max-pending-per-addr", "0",
                "--max-upgrades-per-addr", "0",
                # The per-connection and per-user defaults of issue 16 would pace or refuse the
                # load itself; the gateway-wide send-queue bound stays, far above any step's need.
                "--rate-msgs", "0", "--rate-bytes", "0", "--max-conns-per-user", "0",
                "--sendq-max", "4g", "--inbound-topic", topics[0],
                "--outbound-topic", topics[1], "--redis-prefix", prefix, "--gateway-id",
                f"bench-gw{i}-{os.getpid()}", "--log-level", "warn",
                # Drain is not measured here: close fast when a step is over.
                "--drain-window", "1s", "--drain-grace", "10s", *extra,
                *getattr(self.args, "gateway_arg", [])]
        p = self.spawn(f"gateway{i}", argv)
        p.url = f"ws://127.0.0.1:{port}/"
        p.metrics_url = f"http://127.0.0.1:{http}/metrics"
        self.wait_ready(p, f"http://127.0.0.1:{http}/readyz")
        return p

    def start_processor(self, i, topics, prefix, handler, group, extra=()):
        http = self.port(200 + i)
        argv = [self.bins["processor"], "--kafka-brokers", self.kafka, "--redis-port",
                self.redis_port, "--handler", handler, "--inbound-topic", topics[0],
                "--outbound-topic", topics[1], "--group-id", group, "--redis-prefix", prefix,
                "--http-addr", "127.0.0.1", "--http-port", http, "--log-level", "warn", *extra,
                *getattr(self.args, "processor_arg", [])]
        p = self.spawn(f"processor{i}", argv)
        p.metrics_url = f"http://127.0.0.1:{http}/metrics"
        self.wait_ready(p, f"http://127.0.0.1:{http}/readyz")
        return p

    def commands_topic(self, scn, partitions=8):
        t = f"{self.unique(scn)}.cmd"
        self.check_call([self.bins["admin"], "-b", self.kafka, "topics", "ensure", "--topic", t,
                         "--partitions", partitions], timeout=120)
        return t

    def start_api(self, i, topics, cmd_topic, prefix, extra=()):
        """wsgate-api on base+600+i (ops base+700+i) with a fresh key; p.key is its secret."""
        port, http = self.port(600 + i), self.port(700 + i)
        keys = self.run_dir / f"api{i}.keys"
        key = secrets.token_hex(24)
        keys.write_text(f"bench {key}\n")
        keys.chmod(0o600)
        argv = [self.bins["api"], "--kafka-brokers", self.kafka, "--redis-port", self.redis_port,
                "--commands-topic", cmd_topic, "--outbound-topic", topics[1], "--keys-file", keys,
                "--listen-addr", "127.0.0.1", "--listen-port", port, "--http-addr", "127.0.0.1",
                "--http-port", http, "--redis-prefix", prefix,
                # One key sends everything: the per-key limit would cap the benchmark itself.
                "--rate-limit", "0", "--log-level", "warn", *extra]
        p = self.spawn(f"api{i}", argv)
        p.url = f"http://127.0.0.1:{port}"
        p.key = key
        p.metrics_url = f"http://127.0.0.1:{http}/metrics"
        self.wait_ready(p, f"http://127.0.0.1:{http}/readyz")
        return p

    def start_lws_echo(self, i, ping=30, sink=False):
        port = self.port(300 + i)
        p = self.spawn(f"lws_echo{i}", [self.bins["lws_echo"], "--port", port, "--ping-interval",
                                        ping, *(["--sink"] if sink else [])])
        p.url = f"ws://127.0.0.1:{port}/"
        wait_until(lambda: "listening" in p.tail(3) or (not p.alive() and self.died(p)), 10,
                   "lws_echo to listen")
        return p

    def lws_received(self, lws):
        """Messages lws_echo has received so far (it prints the count on SIGUSR1)."""
        pat = re.compile(r"lws_echo: received (\d+) messages")
        before = len(pat.findall(lws.log_text()))
        lws.signal(signal.SIGUSR1)

        def answered():
            found = pat.findall(lws.log_text())
            return int(found[-1]) + 1 if len(found) > before else None
        return wait_until(answered, 5, "lws_echo to report its count", 0.02) - 1

    def metric(self, procs, name):
        return sum(metric_sum(http_get(p.metrics_url)[1], name) for p in procs)

    # --- the load generator --------------------------------------------------------------------

    def load_argv(self, mode, urls, conns, *extra, auth="jwt", procs=1):
        argv = [self.bins["load"], "--mode", mode, "--url", ",".join(urls), "--conns", conns,
                "--procs", procs, "--output", "json"]
        if auth == "jwt":
            argv += ["--jwt-secret-file", self.secret_file]
        elif auth == "dev":
            argv += ["--dev-user"]
        return [str(a) for a in argv + list(extra)]

    def load(self, name, mode, urls, conns, *extra, auth="jwt", procs=1, timeout=900,
             cpu=None, servers=("kafka", "redis"), env=None):
        """Runs wsgate-load to completion; returns its JSON result (also kept in runs/). With
        cpu={name: Proc}, res["cpu"] holds the CPU seconds each of those (plus Kafka, Redis and
        the load generator itself) used during the run."""
        argv = self.load_argv(mode, urls, conns, *extra, auth=auth, procs=procs)
        if cpu is not None:
            c0, ru0 = self.cpu_of(cpu, servers), resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, env=dict(os.environ, **env) if env else None)
        if cpu is not None:
            c1, ru1 = self.cpu_of(cpu, servers), resource.getrusage(resource.RUSAGE_CHILDREN)
            used = {k: c1[k] - c0[k] for k in c0}
            used["wsgate-load"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        self.seq += 1
        out = self.raw / f"{self.seq:03d}-{name}.json"
        out.write_text(r.stdout)
        (self.raw / f"{self.seq:03d}-{name}.cmd").write_text(" ".join(argv) + "\n" + r.stderr)
        if r.returncode != 0:
            raise BenchError(f"wsgate-load failed ({r.returncode}): {' '.join(argv)}\n"
                             f"{r.stderr[-2000:]}")
        res = json.loads(r.stdout)
        res["_cmd"] = " ".join(argv)
        if cpu is not None:
            res["cpu"] = used
        return res

    def server_pid(self, name):
        """pid of the Kafka broker or redis-server scripts/kafka and scripts/redis started."""
        port = (self.kafka.rsplit(":", 1)[1] if name == "kafka" else self.redis_port)
        return server_pid(self.run_dir.parent, name, int(port)) or None

    def cpu_of(self, procs, servers=("kafka", "redis")):
        out = {k: p() if callable(p) else p.cpu_s() for k, p in procs.items()}
        for name in servers:
            pid = self.server_pid(name)
            if pid:
                out[name] = pid_cpu(pid)
        return out

    def load_bg(self, name, mode, urls, conns, *extra, auth="jwt", procs=1):
        """Starts wsgate-load in the background (its own process group); see wait_phase()."""
        argv = self.load_argv(mode, urls, conns, *extra, auth=auth, procs=procs)
        self.seq += 1
        p = self.spawn(f"load-{name}", argv, self.raw / f"{self.seq:03d}-{name}.log", group=True)
        p.cmd = " ".join(argv)
        return p

    def wait_phase(self, p, timeout=300):
        """Waits for a background wsgate-load to say all connections are open; returns
        (ready, failed)."""
        pat = re.compile(r"wsgate-load: (\d+) ready, (\d+) failed after")

        def phase():
            m = pat.search(p.tail(40))
            if m:
                return int(m.group(1)), int(m.group(2))
            if not p.alive():
                raise BenchError(f"{p.name} ended while connecting:\n{p.tail()}")
            return None
        return wait_until(phase, timeout, f"{p.name} to open its connections", 0.2)

    def load_result(self, p, timeout=600):
        p.popen.wait(timeout)
        rc = p.stop()
        text = p.log_text()
        start = text.rfind("\n{\n")
        if rc != 0 or start < 0:
            raise BenchError(f"{p.name} failed ({rc}):\n{p.tail()}")
        res = json.loads(text[start + 1:text.rfind("}") + 1])
        res["_cmd"] = p.cmd
        return res
