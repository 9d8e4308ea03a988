#!/usr/bin/env python3
"""A backend talking to wsgate-api with Python's standard library only (docs/API.md).

As a module:

    api = WsgateAPI("http://127.0.0.1:8080", "<secret>")
    api.send_user("42", "your order shipped", idempotency_key="order-42-shipped")
    api.send_users(["alice", "bob"], b"\\x00\\x01")          # bytes: a binary frame
    api.disconnect("mallory", code=4100, reason="banned")
    api.batch([{"command": "send", "user": "a", "data": "1"},
               {"command": "disconnect", "user": "a"}])

From the shell (WSGATE_API_URL and WSGATE_API_KEY, or --url and --key):

    backend.py send USER TEXT [--idempotency-key K]
    backend.py send-users USER[,USER...] TEXT
    backend.py disconnect USER [--code N] [--reason R]

Retries: a 503 (Kafka unavailable), 429 or a lost connection is retried with the same
Idempotency-Key, so the message is delivered once.
"""
import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid


class WsgateError(Exception):
    def __init__(self, status, body):
        super().__init__(f"{status}: {body.get('error')} (field: {body.get('field', '-')})")
        self.status = status
        self.body = body


class WsgateAPI:
    def __init__(self, url, key, timeout=15, retries=5):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.retries = retries

    def _post(self, path, body, idempotency_key=None):
        # One key for every attempt: the retries of one request are a no-op once it was accepted.
        key = idempotency_key or str(uuid.uuid4())
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url + path, data=data, method="POST", headers={
                "Authorization": "Bearer " + self.key,
                "Content-Type": "application/json",
                "Idempotency-Key": key,
            })
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                answer = json.loads(e.read() or b"{}")
                if e.code not in (409, 429, 503) or attempt == self.retries:
                    raise WsgateError(e.code, answer) from None
                time.sleep(float(e.headers.get("Retry-After", "1")))
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if attempt == self.retries:
                    raise
                time.sleep(1)

    @staticmethod
    def _data(payload):
        if isinstance(payload, bytes):
            return {"data_base64": base64.b64encode(payload).decode()}
        return {"data": payload}

    def send_user(self, user, payload, conn=None, idempotency_key=None):
        body = {"user": user, **self._data(payload)}
        if conn is not None:
            body["conn"] = str(conn)  # 64-bit ids: a string keeps them exact
        return self._post("/v1/send", body, idempotency_key)

    def send_users(self, users, payload, idempotency_key=None):
        return self._post("/v1/send", {"users": list(users), **self._data(payload)},
                          idempotency_key)

    def disconnect(self, user, conn=None, code=None, reason=None, idempotency_key=None):
        body = {"user": user}
        if conn is not None:
            body["conn"] = str(conn)
        if code is not None:
            body["code"] = code
        if reason is not None:
            body["reason"] = reason
        return self._post("/v1/disconnect", body, idempotency_key)

    def batch(self, commands, idempotency_key=None):
        return self._post("/v1/batch", {"commands": commands}, idempotency_key)


def main(argv):
    p = argparse.ArgumentParser(description="Send to wsgate users through wsgate-api.")
    p.add_argument("--url", default=os.environ.get("WSGATE_API_URL", "http://127.0.0.1:8080"))
    p.add_argument("--key", default=os.environ.get("WSGATE_API_KEY"))
    p.add_argument("--idempotency-key")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("user")
    s.add_argument("text")
    s = sub.add_parser("send-users")
    s.add_argument("users")
    s.add_argument("text")
    s = sub.add_parser("disconnect")
    s.add_argument("user")
    s.add_argument("--code", type=int)
    s.add_argument("--reason")
    a = p.parse_args(argv)
    if not a.key:
        p.error("give --key or set WSGATE_API_KEY")
    api = WsgateAPI(a.url, a.key)
    try:
        if a.cmd == "send":
            out = api.send_user(a.user, a.text, idempotency_key=a.idempotency_key)
        elif a.cmd == "send-users":
            out = api.send_users(a.users.split(","), a.text, idempotency_key=a.idempotency_key)
        else:
            out = api.disconnect(a.user, code=a.code, reason=a.reason,
                                 idempotency_key=a.idempotency_key)
    except WsgateError as e:
        print(f"backend.py: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
