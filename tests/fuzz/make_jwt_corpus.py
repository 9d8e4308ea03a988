#!/usr/bin/env python3
"""Writes the seed corpus of jwt_fuzz into tests/fuzz/corpus-jwt/ (run by hand; the files are
committed). The first byte of each seed picks jwt_fuzz's mode: 0 JWKS, 1 token, 2 header/claims."""
import base64
import hashlib
import hmac
import json
import os

SECRET = b"jwt-fuzz-secret-0123456789abcdef0123456789"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus-jwt")


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def hs256(header, claims):
    si = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
    return si + b"." + b64(hmac.new(SECRET, si, hashlib.sha256).digest())


claims = {"sub": "alice", "exp": 1700000600, "nbf": 1699999000, "iss": "https://a",
          "aud": ["x", "wsgate"]}
seeds = {
    "jwks-ec": b"\x00" + json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "e",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}).encode(),
    "jwks-rsa-oct-okp": b"\x00" + json.dumps({"keys": [
        {"kty": "RSA", "kid": "r", "use": "sig", "alg": "RS256", "e": "AQAB",
         "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
              "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5"
              "v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD0"
              "8qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU"
              "8awapJzKnqDKgw"},
        {"kty": "oct", "kid": "h", "k": b64(SECRET).decode()},
        {"kty": "OKP", "crv": "Ed25519", "kid": "d",
         "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "EC", "crv": "P-521", "kid": "skip"}, {"kty": "RSA", "use": "enc"}]}).encode(),
    "token-hs256": b"\x01" + hs256({"alg": "HS256", "typ": "JWT"}, claims),
    "token-kid": b"\x01" + hs256({"alg": "HS256", "kid": "rsa"}, claims),
    "token-es256-badsig": b"\x01" + b64(b'{"alg":"ES256","kid":"ec"}') + b"." +
        b64(json.dumps(claims).encode()) + b"." + b64(bytes(64)),
    "parts-signed": b"\x02" + json.dumps({"alg": "HS256"}).encode() + b"\x00" +
        json.dumps(claims).encode() + b"\x00",
    "parts-rs256": b"\x02" + b'{"alg":"RS256","kid":"rsa"}\x00{"sub":"a","exp":1}\x00' + bytes(256),
}
os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
