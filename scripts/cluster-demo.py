#!/usr/bin/env python3
"""`scripts/cluster demo`: two command-line chat clients talk through the local cluster.

alice and bob connect (by default alice to gateway 1 and bob to gateway 2, so every message
crosses gateways through Kafka), the script shows where Redis routes each of them, then: both
join a room, alice says something that bob must receive, bob sends alice a direct message that
she must receive, both leave. Every wait has a deadline; a missing frame fails the run (exit 1)
with what was received instead.

Runs in the venv scripts/setup makes (the `websockets` package). The JWT secret comes from
WSGATE_JWT_SECRET, set by scripts/cluster.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import websockets
import websockets.exceptions

SUBPROTOCOL = "wsgate.v1"
WAIT_S = 15.0


def say(text):
    print(text, flush=True)


class Client:
    def __init__(self, name, url, token):
        self.name = name
        self.url = url
        self.token = token
        self.ws = None
        self.seen = []
        self.next_id = 1

    async def connect(self):
        self.ws = await websockets.connect(
            "%s?token=%s" % (self.url, self.token),
            subprotocols=[SUBPROTOCOL],
            open_timeout=WAIT_S,
        )

    async def send(self, **cmd):
        cmd["id"] = "%s-%d" % (self.name, self.next_id)
        self.next_id += 1
        text = json.dumps(cmd)
        say("  %-5s -> %s" % (self.name, text))
        await self.ws.send(text)
        return cmd["id"]

    async def expect(self, what, match):
        """Reads frames until one satisfies match(frame); fails after WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        while True:
            for i, frame in enumerate(self.seen):
                if match(frame):
                    del self.seen[i]
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    "%s did not receive %s within %.0fs; frames received: %s"
                    % (self.name, what, WAIT_S, json.dumps(self.seen) or "none")
                )
            try:
                raw = await asyncio.wait_for(self.ws.recv(), timeout=left)
            except asyncio.TimeoutError:
                continue
            frame = json.loads(raw) if isinstance(raw, str) else {"binary": len(raw)}
            say("  %-5s <- %s" % (self.name, raw if isinstance(raw, str) else frame))
            if frame.get("wsgate") == "pub":
                # A room message: a publication on channel room:<room> whose data is the
                # message object as JSON text (docs/HANDLERS.md, "The chat handler").
                frame = dict(json.loads(frame["data"]), channel=frame["channel"])
            self.seen.append(frame)

    async def close(self):
        if self.ws is not None:
            await self.ws.close()


def mint(token_bin, user):
    r = subprocess.run([token_bin, "--user", user, "--ttl", "10m"], capture_output=True,
                       text=True, timeout=10, check=False)
    if r.returncode != 0:
        sys.exit("demo: wsgate-token failed: %s" % r.stderr.strip())
    return r.stdout.strip()


def redis(port, *args):
    """Runs and shows a redis-cli command, as a person would type it."""
    say("    $ redis-cli -c -p %d %s" % (port, " ".join(args)))
    r = subprocess.run(["redis-cli", "-c", "-p", str(port), *args], capture_output=True, text=True,
                       timeout=10, check=False)
    out = r.stdout.rstrip("\n")
    for line in out.splitlines() or ["(empty)"]:
        say("      " + line)
    return out.splitlines()


def show_route(port, user, names):
    """Where Redis routes `user`: its connections, each connection's gateway, that gateway's slot
    and the slot's holder (which must be that gateway). Returns the gateway ids."""
    say("  where is %s?" % user)
    flat = redis(port, "HGETALL", "wsgate:user:%s" % user)
    gateways = []
    for conn, gw in zip(flat[::2], flat[1::2]):
        slot = redis(port, "HGET", "wsgate:gw:%s" % gw, "slot")
        holder = redis(port, "GET", "wsgate:slot:%s" % slot[0]) if slot else []
        ok = bool(holder) and holder[0] == gw
        say("    => %s connection %s is on %s (%s), slot %s, outbound partition %s%s"
            % (user, conn, names.get(gw, "?"), gw, slot[0] if slot else "?",
               slot[0] if slot else "?", "" if ok else "  (slot NOT held by it!)"))
        if not ok:
            raise AssertionError("Redis routes %s to %s, which does not hold its slot" % (user, gw))
        gateways.append(gw)
    if not gateways:
        raise AssertionError("Redis has no connection of %s" % user)
    return gateways


async def wait_registered(port, user):
    """The gateway registers a connection in Redis right after the upgrade; wait for it."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        r = subprocess.run(["redis-cli", "-c", "-p", str(port), "HLEN", "wsgate:user:%s" % user],
                           capture_output=True, text=True, timeout=10, check=False)
        if r.stdout.strip() not in ("", "0"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("%s's connection never appeared in Redis" % user)


async def run(a):
    with open(a.cluster_json, encoding="utf-8") as f:
        names = {g["id"]: g["name"] for g in json.load(f)["gateways"]}
    alice = Client("alice", a.url_a, mint(a.token_bin, "alice"))
    bob = Client("bob", a.url_b, mint(a.token_bin, "bob"))
    room = a.room
    try:
        say("1. alice connects to %s, bob to %s" % (a.url_a, a.url_b))
        await alice.connect()
        await bob.connect()
        await wait_registered(a.redis_port, "alice")
        await wait_registered(a.redis_port, "bob")

        say("\n2. Routing according to Redis")
        gw_a = show_route(a.redis_port, "alice", names)
        gw_b = show_route(a.redis_port, "bob", names)
        if set(gw_a) & set(gw_b):
            say("    (alice and bob share a gateway: start the cluster with --gateways 2 or more"
                " to see messages cross gateways)")

        say("\n3. Both join room %r" % room)
        i = await alice.send(op="join", room=room)
        await alice.expect("joined", lambda f: f.get("type") == "joined" and f.get("id") == i)
        i = await bob.send(op="join", room=room)
        await bob.expect("joined", lambda f: f.get("type") == "joined" and f.get("id") == i)
        redis(a.redis_port, "SMEMBERS", "wsgate:chat:{u:alice}:rooms")
        # Presence: each gateway life (<gw id>#<boot>) counts in :pc and lists its own hash.
        for member in redis(a.redis_port, "HKEYS", "wsgate:ch:{c:room:%s}:pc" % room):
            redis(a.redis_port, "HVALS", "wsgate:ch:{c:room:%s}:p:%s" % (room, member))

        say("\n4. alice says hello; bob (on another gateway) receives it")
        text = "hello from alice at %d" % time.time()
        await alice.send(op="say", room=room, text=text)
        match = lambda f: (f.get("type") == "message" and f.get("from") == "alice"
                           and f.get("text") == text and f.get("channel") == "room:" + room)
        await bob.expect("alice's room message", match)
        await alice.expect("her own room message", match)

        say("\n5. bob sends alice a direct message")
        text = "psst alice, bob here (%d)" % time.time()
        await bob.send(op="dm", to="alice", text=text)
        await alice.expect("bob's direct message",
                           lambda f: f.get("type") == "dm" and f.get("from") == "bob" and f.get("text") == text)

        say("\n6. Both leave")
        for c in (alice, bob):
            i = await c.send(op="leave", room=room)
            await c.expect("left", lambda f, i=i: f.get("type") == "left" and f.get("id") == i)
    finally:
        await alice.close()
        await bob.close()
    say("\ndemo passed: a room message and a direct message crossed the cluster")


def main():
    p = argparse.ArgumentParser(description="two chat clients through the local wsgate cluster")
    p.add_argument("--token-bin", required=True)
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--room", default="lobby")
    p.add_argument("--url-a", required=True)
    p.add_argument("--url-b", required=True)
    p.add_argument("--cluster-json", required=True)
    a = p.parse_args()
    if not os.environ.get("WSGATE_JWT_SECRET"):
        sys.exit("demo: WSGATE_JWT_SECRET is not set (run it as `scripts/cluster demo`)")
    try:
        asyncio.run(run(a))
    except (AssertionError, OSError, websockets.exceptions.WebSocketException) as e:
        say("\ndemo FAILED: %s" % e)
        sys.exit(1)


if __name__ == "__main__":
    main()
