#!/usr/bin/env python3
"""Tokens minted by an independent implementation (PyJWT over `cryptography`) against gw_jwt.

Keys are generated with the openssl command line, JWKS documents are written by PyJWT's own
to_jwk(), tokens are minted by PyJWT, and jwt_check (gw_jwt as the gateway uses it) judges them.
For every algorithm a valid token is accepted through a PEM key file (or secret file) and through
a JWKS document with kids; then wrong key, wrong kid, algorithm not allowed, alg none, HS256
signed with the RSA public key (algorithm confusion), expired, not yet valid, wrong iss and aud
are each refused with their own error.

The other direction too: wsgate-token mints with every algorithm and PyJWT verifies.

Usage: jwt_pyjwt_test.py JWT_CHECK WSGATE_TOKEN   (TAP on stdout; needs the venv's PyJWT and
       cryptography)
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import jwt
    from cryptography.hazmat.primitives import serialization
except ImportError as e:  # pragma: no cover
    print("1..0 # SKIP PyJWT/cryptography missing (%s): run scripts/setup" % e)
    sys.exit(0)

CHECK, TOKEN_TOOL = sys.argv[1], sys.argv[2]
ISS = "https://idp.example.com/realms/test"
AUD = "wsgate"
results = []


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def judge(tokens, *opts):
    """Runs jwt_check on the tokens; returns the list of (error name, user)."""
    p = subprocess.run([CHECK, *opts, *tokens], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("jwt_check %s failed: %s" % (" ".join(opts), p.stderr.strip()))
    return [tuple(line.split(" ", 1)) for line in p.stdout.splitlines()]


def expect(name, token, want, *opts, user="alice"):
    got = judge([token], *opts)[0]
    ok = got[0] == want and (want != "GW_JWT_OK" or got[1] == user)
    results.append((ok, "%s: got %s, want %s" % (name, " ".join(got), want)))


def claims(**over):
    now = int(time.time())
    c = {"sub": "alice", "iat": now, "exp": now + 600, "iss": ISS, "aud": AUD}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def main():
    d = tempfile.mkdtemp(prefix="wsgate-jwt-")
    try:
        return run(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(d):
    path = lambda n: os.path.join(d, n)
    # --- keys, by openssl ---
    gen = {
        "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "rsa2": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p256b": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "ed": ["-algorithm", "ED25519"],
        "ed2": ["-algorithm", "ED25519"],
    }
    priv, pub = {}, {}
    for name, args in gen.items():
        openssl("genpkey", *args, "-out", path(name + ".key"))
        openssl("pkey", "-in", path(name + ".key"), "-pubout", "-out", path(name + ".pub"))
        with open(path(name + ".key"), "rb") as f:
            priv[name] = serialization.load_pem_private_key(f.read(), password=None)
        with open(path(name + ".pub"), "rb") as f:
            pub[name] = f.read()
    # The RSA key also as a certificate: the PEM loader takes certificates too.
    openssl("req", "-x509", "-key", path("rsa.key"), "-subj", "/CN=wsgate-test", "-days", "1",
            "-out", path("rsa.crt"))
    secret, secret2 = os.urandom(64), os.urandom(64)
    with open(path("secret"), "wb") as f:
        f.write(secret)

    # --- a JWKS document, by PyJWT ---
    A = jwt.algorithms
    jwks = {"keys": [
        dict(json.loads(A.RSAAlgorithm.to_jwk(priv["rsa"].public_key())), kid="rsa-1", use="sig"),
        dict(json.loads(A.ECAlgorithm.to_jwk(priv["p256"].public_key())), kid="ec-1"),
        dict(json.loads(A.ECAlgorithm.to_jwk(priv["p384"].public_key())), kid="ec384-1"),
        dict(json.loads(A.OKPAlgorithm.to_jwk(priv["ed"].public_key())), kid="ed-1", alg="EdDSA"),
        dict(json.loads(A.HMACAlgorithm.to_jwk(secret)), kid="hs-1"),
        # Skipped, not refused: an encryption key and a key type we do not know.
        dict(json.loads(A.RSAAlgorithm.to_jwk(priv["rsa2"].public_key())), kid="enc-1", use="enc"),
        {"kty": "future", "kid": "x-1"},
    ]}
    with open(path("jwks.json"), "w") as f:
        json.dump(jwks, f)

    cases = [  # alg, signing key, PEM/secret option, kid in the JWKS
        ("HS256", secret, ["--secret-file", path("secret")], "hs-1"),
        ("HS384", secret, ["--secret-file", path("secret")], "hs-1"),
        ("HS512", secret, ["--secret-file", path("secret")], "hs-1"),
        ("RS256", priv["rsa"], ["--key-file", path("rsa.pub")], "rsa-1"),
        ("RS384", priv["rsa"], ["--key-file", path("rsa.crt")], "rsa-1"),
        ("RS512", priv["rsa"], ["--key-file", path("rsa.pub")], "rsa-1"),
        ("PS256", priv["rsa"], ["--key-file", path("rsa.pub")], "rsa-1"),
        ("ES256", priv["p256"], ["--key-file", path("p256.pub")], "ec-1"),
        ("ES384", priv["p384"], ["--key-file", path("p384.pub")], "ec384-1"),
        ("EdDSA", priv["ed"], ["--key-file", path("ed.pub")], "ed-1"),
    ]
    wrong = {"HS": secret2, "RS": priv["rsa2"], "PS": priv["rsa2"], "ES256": priv["p256b"],
             "ES384": priv["p256b"], "Ed": priv["ed2"]}
    jwks_opt = ["--jwks-file", path("jwks.json")]
    policy = ["--issuer", "https://other.example.com, " + ISS, "--audience", AUD]
    for alg, key, pem_opt, kid in cases:
        algs = ["--algs", alg]
        tok = jwt.encode(claims(), key, algorithm=alg)
        expect(alg + " valid (key file)", tok, "GW_JWT_OK", *algs, *pem_opt, *policy)
        tok = jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid})
        expect(alg + " valid (JWKS, kid)", tok, "GW_JWT_OK", *algs, *jwks_opt, *policy)
        expect(alg + " not allowed", tok, "GW_JWT_BAD_ALG", "--algs",
               "ES256" if alg != "ES256" else "RS256", *jwks_opt)
        bad = wrong.get(alg) or wrong[alg[:2]]
        if alg == "ES384":  # a P-256 key cannot sign ES384: sign with another P-384 key instead
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out",
                    path("p384b.key"))
            with open(path("p384b.key"), "rb") as f:
                bad = serialization.load_pem_private_key(f.read(), password=None)
        tok = jwt.encode(claims(), bad, algorithm=alg, headers={"kid": kid})
        expect(alg + " wrong key", tok, "GW_JWT_BAD_SIGNATURE", *algs, *jwks_opt)
        tok = jwt.encode(claims(), key, algorithm=alg, headers={"kid": "rotated-out"})
        expect(alg + " wrong kid", tok, "GW_JWT_UNKNOWN_KID", *algs, *jwks_opt)
        now = int(time.time())
        tok = jwt.encode(claims(exp=now - 120), key, algorithm=alg)
        expect(alg + " expired", tok, "GW_JWT_EXPIRED", *algs, *pem_opt, "--leeway", "30")
        tok = jwt.encode(claims(nbf=now + 120), key, algorithm=alg)
        expect(alg + " not yet valid", tok, "GW_JWT_NOT_YET_VALID", *algs, *pem_opt, "--leeway",
               "30")
        tok = jwt.encode(claims(iss="https://evil.example.com"), key, algorithm=alg)
        expect(alg + " wrong iss", tok, "GW_JWT_BAD_ISSUER", *algs, *pem_opt, *policy)
        tok = jwt.encode(claims(aud="billing"), key, algorithm=alg)
        expect(alg + " wrong aud", tok, "GW_JWT_BAD_AUDIENCE", *algs, *pem_opt, *policy)

    # Our minting, PyJWT's verification.
    keyfile = {"HS": path("secret"), "RS": path("rsa.key"), "PS": path("rsa.key"),
               "ES256": path("p256.key"), "ES384": path("p384.key"), "Ed": path("ed.key")}
    for alg, key, _, kid in cases:
        p = subprocess.run([TOKEN_TOOL, "--alg", alg, "--key-file",
                            keyfile.get(alg) or keyfile[alg[:2]], "--kid", kid, "--iss", ISS,
                            "--audience", AUD, "-u", "bob"], capture_output=True, text=True)
        verify_key = key if alg.startswith("HS") else key.public_key()
        try:
            got = jwt.decode(p.stdout.strip(), verify_key, algorithms=[alg], audience=AUD,
                             issuer=ISS)
            hdr = jwt.get_unverified_header(p.stdout.strip())
            ok, why = got["sub"] == "bob" and hdr["kid"] == kid, "sub %s kid %s" % (
                got["sub"], hdr["kid"])
        except Exception as e:  # noqa: BLE001 - any refusal is the failure reported
            ok, why = False, "%s %s" % (e, p.stderr.strip())
        results.append((ok, "wsgate-token %s verified by PyJWT: %s" % (alg, why)))

    # alg "none", minted by PyJWT itself, refused whatever the configuration.
    tok = jwt.encode(claims(), None, algorithm="none")
    expect("alg none", tok, "GW_JWT_BAD_ALG", "--algs", "HS256,RS256", *jwks_opt)
    # Algorithm confusion: HS256 "signed" with the RSA public key's PEM text as the secret (PyJWT
    # refuses to do that, so it is computed here with hmac). With the RSA key's kid the key type
    # does not fit; without a kid no HMAC key exists to try.
    for name, kid, opts, want in (
            ("confusion, kid of the RSA key", "rsa-1", jwks_opt, "GW_JWT_KEY_ALG_MISMATCH"),
            ("confusion, no kid, PEM key only", None, ["--key-file", path("rsa.pub")],
             "GW_JWT_NO_KEY"),
            ("confusion, no kid, with a secret", None,
             ["--key-file", path("rsa.pub"), "--secret-file", path("secret")],
             "GW_JWT_BAD_SIGNATURE")):
        hdr = {"alg": "HS256", "typ": "JWT"}
        if kid:
            hdr["kid"] = kid
        signing_input = b64(json.dumps(hdr).encode()) + "." + b64(json.dumps(claims()).encode())
        mac = hmac.new(pub["rsa"], signing_input.encode(), hashlib.sha256).digest()
        expect(name, signing_input + "." + b64(mac), want, "--algs", "RS256,HS256", *opts)

    print("1..%d" % len(results))
    for i, (ok, desc) in enumerate(results, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, desc))
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
