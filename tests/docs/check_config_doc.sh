#!/usr/bin/env bash
# docs/CONFIG-*.md are generated from the programs' option tables (`PROGRAM --help-markdown`).
#
# usage: check_config_doc.sh PROGRAM DOC
#          fails when DOC differs from `PROGRAM --help-markdown`: prints the diff and the command
#          that regenerates DOC
#        check_config_doc.sh --covered DOCS_DIR NAME...
#          fails when DOCS_DIR holds a CONFIG-<name>.md whose name is not among NAME... (a CONFIG
#          file nobody checks)
set -euo pipefail

if [[ "${1:-}" == --covered ]]; then
  docs="$2"
  shift 2
  rc=0
  for f in "$docs"/CONFIG-*.md; do
    [[ -e "$f" ]] || continue
    name="${f##*/CONFIG-}"
    name="${name%.md}"
    if [[ " $* " != *" ${name} "* ]]; then
      printf '%s has no check: add its program to config_docs in tests/docs/meson.build\n' "$f" >&2
      rc=1
    fi
  done
  exit "$rc"
fi

# Absolute, so the printed command works from anywhere (meson runs tests in the build directory).
exe="$(cd "$(dirname "$1")" && pwd)/${1##*/}"
doc="$2"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
if ! "$exe" --help-markdown >"$out"; then
  printf '%s --help-markdown failed\n' "$exe" >&2
  exit 1
fi
if diff -u --label "$doc" --label "${exe##*/} --help-markdown" "$doc" "$out"; then
  exit 0
fi
printf '\n%s differs from the option table (diff above: - the file, + the program).\n' "$doc" >&2
printf 'Regenerate it after building:\n  %s --help-markdown > %s\n' "$exe" "$doc" >&2
exit 1
