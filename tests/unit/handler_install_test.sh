#!/bin/sh
# handler_install_test.sh BUILD_DIR SOURCE_DIR LOADER MESON CC...
#
# The plugin contract as an out-of-tree author gets it: `meson install` (tag devel) into a
# temporary DESTDIR, then every processor/examples/*.c copied alone into a scratch directory and
# built with `cc $(pkg-config --cflags wsgate-handler) -shared -fPIC`, pkg-config seeing only the
# installed wsgate-handler.pc (PKG_CONFIG_LIBDIR) under that DESTDIR (PKG_CONFIG_SYSROOT_DIR);
# then LOADER opens each result the way --handler does (entry, ABI version, init). Fails if the
# header or the .pc is not installed, points elsewhere, or the header does not build a handler the
# processor accepts.
set -eu

build=$1 src=$2 loader=$3 meson=$4
shift 4
tmp=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-handler-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() {
  printf 'handler_install: %s\n' "$*" >&2
  exit 1
}

"$meson" install -C "$build" --no-rebuild --quiet --tags devel --destdir "$tmp/root" >"$tmp/install.log" 2>&1 ||
  {
    cat "$tmp/install.log" >&2
    fail "meson install --tags devel failed"
  }
pc=$(find "$tmp/root" -name wsgate-handler.pc)
[ -n "$pc" ] || fail "meson install put no wsgate-handler.pc under the DESTDIR"
header=$(find "$tmp/root" -path '*/include/wsgate/wsgate_handler.h')
[ -n "$header" ] || fail "meson install put no include/wsgate/wsgate_handler.h under the DESTDIR"

PKG_CONFIG_LIBDIR=$(dirname "$pc")
PKG_CONFIG_PATH=
PKG_CONFIG_SYSROOT_DIR="$tmp/root"
export PKG_CONFIG_LIBDIR PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
cflags=$(pkg-config --cflags wsgate-handler) || fail "pkg-config --cflags wsgate-handler failed"
printf 'pkg-config --cflags wsgate-handler: %s\n' "$cflags"

n=0
for example in "$src"/processor/examples/*.c; do
  name=$(basename "$example" .c)
  dir="$tmp/$name"
  mkdir "$dir"
  # Alone in its directory: "wsgate_handler.h" can only come from pkg-config's flags.
  cp "$example" "$dir/"
  # shellcheck disable=SC2086 # $cflags is a list of flags
  (cd "$dir" && "$@" -std=c11 -Wall -Wextra -Werror $cflags -shared -fPIC -fvisibility=hidden \
    -o "lib$name.so" "$name.c") || fail "$name.c does not build against the installed header"
  "$loader" "$dir/lib$name.so" || fail "lib$name.so built out of tree does not load"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || fail "no example in $src/processor/examples"
printf '%d example handler(s) built out of tree and loaded\n' "$n"
