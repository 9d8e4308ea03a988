#!/usr/bin/env python3
"""Renders a kustomization with the pinned kustomize and with the kustomize that the oldest
supported kubectl embeds (1.30: docs/KUBERNETES.md), and checks that both succeed and produce the
same objects.

Users apply with `kubectl apply -k`, whose kustomize lags the standalone one by years: a patch
file that only a newer kustomize reads (several documents in one file, or a `$patch: delete`
first) renders in our tests and fails for them (issue 22).

usage: render_compat.py [--expect-error REGEX] PATH
The kustomizes: $WSGATE_CACHE/go/bin/kustomize and $WSGATE_CACHE/go/kubectl-1.30/kustomize
(scripts/setup builds both). Exit status: 0 same render (or the expected error seen), 1 not,
77 a kustomize missing (skip).
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_render  # noqa: E402

# (what, path under $WSGATE_CACHE/go)
KUSTOMIZES = (
    ("pinned kustomize", os.path.join("bin", "kustomize")),
    ("kubectl 1.30's kustomize", os.path.join("kubectl-1.30", "kustomize")),
)


def render(exe, path):
    proc = subprocess.run([exe, "build", path], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()
    return proc.stdout, []


def key(obj):
    meta = obj.get("metadata") or {}
    return (obj.get("kind"), meta.get("namespace") or "", meta.get("name"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--expect-error")
    args = ap.parse_args()
    k8s_render.ensure_modules("yaml")
    import yaml

    go = os.path.join(k8s_render.cache_dir(), "go")
    errors, renders = [], []
    for what, rel in KUSTOMIZES:
        exe = os.path.join(go, rel)
        if not os.access(exe, os.X_OK):
            k8s_render.skip(f"no {what} at {exe}: run scripts/setup")
        out, err = render(exe, args.path)
        if out is None:
            # kustomize's error names the patch and the reason, then quotes the file's text.
            head = []
            for line in err:
                head.append(line.split(" from [")[0].strip())
                if " from [" in line or len(head) == 4:
                    break
            errors.append(f"{what} cannot render {args.path}: {' '.join(head) or '?'}")
            continue
        objs = {key(o): o for o in yaml.safe_load_all(out) if o}
        renders.append((what, objs))
        print(f"{what}: {len(objs)} objects")
    if len(renders) == 2:
        (wa, a), (wb, b) = renders
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                errors.append(f"{'/'.join(map(str, k))}: rendered by {wa if k in a else wb} only")
            elif a[k] != b[k]:
                errors.append(f"{'/'.join(map(str, k))}: {wa} and {wb} render it differently")
    return k8s_render.verdict(errors, args.expect_error, "difference(s)")


if __name__ == "__main__":
    sys.exit(main())
