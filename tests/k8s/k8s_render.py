"""Shared helpers of the k8s tests: find the tools, render an overlay, load the YAML.

The tests run under whatever python3 meson found at configure time. PyYAML and
kubernetes-validate live in the venv that scripts/setup builds ($WSGATE_CACHE/venv), so when
they cannot be imported the script re-executes itself with the venv's interpreter; only if that
does not exist either does it skip (exit 77), saying what to run.
"""
import os
import shutil
import subprocess
import sys

SKIP = 77


def cache_dir():
    return os.environ.get("WSGATE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "wsgate")


def skip(msg):
    print(f"SKIP: {msg}", flush=True)
    sys.exit(SKIP)


def ensure_modules(*modules):
    """Imports MODULES, re-executing under the venv's python3 once if one is missing."""
    missing = []
    for m in modules:
        try:
            __import__(m)
        except ImportError:
            missing.append(m)
    if not missing:
        return
    venv_py = os.path.join(cache_dir(), "venv", "bin", "python3")
    if os.environ.get("WSGATE_K8S_REEXEC") != "1" and os.access(venv_py, os.X_OK):
        env = dict(os.environ, WSGATE_K8S_REEXEC="1")
        os.execve(venv_py, [venv_py] + sys.argv, env)
    skip(f"Python module(s) {', '.join(missing)} not found in {sys.executable} nor in "
         f"{venv_py}: run scripts/setup (it installs kubernetes-validate and PyYAML there)")


def kustomize_cmd():
    """The command that renders a kustomization: our pinned kustomize first, then kubectl's."""
    env_bin = os.environ.get("WSGATE_KUSTOMIZE")
    if env_bin:
        return [env_bin, "build"]
    cached = os.path.join(cache_dir(), "go", "bin", "kustomize")
    if os.access(cached, os.X_OK):
        return [cached, "build"]
    on_path = shutil.which("kustomize")
    if on_path:
        return [on_path, "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    skip(f"no kustomize: neither {cached} (scripts/setup builds it), kustomize nor kubectl on PATH")


def overlay_args(doc, *modules, flags=()):
    """The command line every overlay check takes (PATH [--expect-error REGEX], and the boolean
    FLAGS), parsed, once the Python MODULES it needs are importable."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--expect-error")
    for flag in flags:
        ap.add_argument(flag, action="store_true")
    args = ap.parse_args()
    ensure_modules(*modules)
    return args


def render(path):
    """Renders the kustomization at PATH; returns its objects (dicts), in order."""
    import yaml

    cmd = kustomize_cmd() + [path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RenderError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def verdict(errors, expect_error, what="problem(s)"):
    """Prints ERRORS and the verdict; returns the exit status. With EXPECT_ERROR (a fixture that
    must fail) success is an error matching it."""
    import re

    for e in errors:
        print(f"ERROR: {e}")
    if expect_error:
        if any(re.search(expect_error, e) for e in errors):
            print(f"PASS: failed as expected ({expect_error!r} matched)")
            return 0
        print(f"FAIL: expected an error matching {expect_error!r}, got {len(errors)} other error(s)")
        return 1
    if errors:
        print(f"FAIL: {len(errors)} {what}")
        return 1
    print("PASS")
    return 0


class RenderError(Exception):
    pass


def describe(obj):
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')}"
