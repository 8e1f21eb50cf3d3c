#!/usr/bin/env bash
# make install / make uninstall. Honours PREFIX (default /usr/local), DESTDIR (staging root),
# SYSCONFDIR (default /etc) and SYSTEMDDIR (default $PREFIX/lib/systemd/system).
# Every file and every directory the install creates is listed in
# $PREFIX/lib/spook/.manifest, so uninstall removes exactly what install put there.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:?install or uninstall}
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
SYSTEMDDIR=${SYSTEMDDIR:-$PREFIX/lib/systemd/system}
lib="$DESTDIR$PREFIX/lib/spook"
manifest="$lib/.manifest"
record=$(mktemp)
# The folders of the installed tree (docs/ARCHITECTURE.md); the import-boundary test keeps them
# free of testing/ and bench/.
PRODUCT_DIRS="wire crypto core drivers client cli"
trap 'rm -f "$record"' EXIT

subst() { sed -e "s#@PREFIX@#$PREFIX#g" -e "s#@SYSCONFDIR@#$SYSCONFDIR#g" -e "s#@NAME@#${2:-}#g" "$1"; }
mkdirs() { # create DIR and its missing parents, recording each directory created
  local d=$1 missing=()
  # Stops at /: the staging root itself is made before (DESTDIR's own parents are not ours to record).
  while [ "$d" != / ] && [ ! -d "$DESTDIR$d" ]; do missing=("$d" ${missing[@]+"${missing[@]}"}); d=$(dirname "$d"); done
  for d in ${missing[@]+"${missing[@]}"}; do mkdir "$DESTDIR$d" && echo "dir $d" >> "$record"; done
}
put() { # put MODE SRC DEST (DEST without DESTDIR)
  mkdirs "$(dirname "$3")"
  install -m "$1" "$2" "$DESTDIR$3"
  echo "file $3" >> "$record"
}

uninstall() {
  [ -f "$manifest" ] || return 1
  local entries
  entries=$(cat "$manifest")
  grep '^file ' <<<"$entries" | cut -c6- | while IFS= read -r f; do rm -f "$DESTDIR$f"; done
  rm -rf "$lib"
  # Directories last, deepest first, and only the ones install created (if now empty).
  { grep '^dir ' <<<"$entries" || true; } | cut -c5- | sort -r | while IFS= read -r d; do rmdir "$DESTDIR$d" 2>/dev/null || true; done
}

case "$action" in
install)
  case "$PREFIX" in /*) ;; *) echo "install: PREFIX must be an absolute path (got '$PREFIX')" >&2; exit 1 ;; esac
  # A staging root that does not exist yet is made (as automake's installs do), not recorded.
  if [ -n "$DESTDIR" ] && [ ! -d "$DESTDIR" ]; then mkdir -p "$DESTDIR"; fi
  for f in dist/.stamp bpf/spook_xdp.o bpf/spook_wrap.o; do
    [ -e "$f" ] || { echo "install: $f missing; run make first" >&2; exit 1; }
  done
  if [ ! -f "$manifest" ] && [ -d "$lib" ] && [ -n "$(ls -A "$lib")" ]; then
    echo "install: $lib exists, is not empty and was not installed by this script; refusing to replace it" >&2
    exit 1
  fi
  if [ -f "$manifest" ]; then
    old=$(mktemp); cp "$manifest" "$old"; manifest_saved=$old
    uninstall
    # Keep the record of directories an earlier install created, so uninstall still removes them.
    grep '^dir ' "$manifest_saved" >> "$record" || true
    rm -f "$manifest_saved"
  fi
  mkdirs "$PREFIX/lib/spook"
  # The product only: no simulator, lab, benchmark, tool or test code (testing/, bench/, tools/, test/).
  cp -a package.json package-lock.json README.md docs "$lib/"
  # The commit this install was built from (spookd --version, spook_build_info); none outside a checkout.
  if commit=$(git rev-parse --short=12 HEAD 2>/dev/null); then
    git diff --quiet HEAD 2>/dev/null || commit="$commit+dirty"
    echo "$commit" > "$lib/COMMIT"
  fi
  mkdir -p "$lib/bin" "$lib/dist" && cp -a bin/spook bin/spookd "$lib/bin/"
  for d in $PRODUCT_DIRS; do cp -a "dist/$d" "$lib/dist/"; done
  mkdir -p "$lib/bpf" && cp -a bpf/spook_xdp.o bpf/spook_wire.h bpf/spook_xdp.c bpf/spook_wrap.o bpf/spook_wrap.c "$lib/bpf/"
  cp -a node_modules "$lib/"
  (cd "$lib" && npm prune --omit=dev --no-audit --no-fund >/dev/null 2>&1)
  # koffi ships prebuilt binaries for 18 systems (24 MB); keep this machine's (glibc and musl builds).
  arch=$(node -p 'process.arch')
  for b in "$lib"/node_modules/koffi/build/koffi/*/; do
    case "$(basename "$b")" in "linux_$arch"* | "musl_$arch"*) ;; *) rm -rf "$b" ;; esac
  done
  node -e 'require(process.argv[1])' "$lib/node_modules/koffi" ||
    { echo "install: koffi does not load from $lib/node_modules (this machine: linux $arch)" >&2; exit 1; }
  tmp=$(mktemp -d)
  for n in spook spookd; do
    subst packaging/launcher.in "$n" > "$tmp/$n"
    put 0755 "$tmp/$n" "$PREFIX/bin/$n"
  done
  put 0644 docs/spookd.conf.example "$SYSCONFDIR/spook/spookd.conf.example"
  # Manual pages and completions (rendered from the command trees by tools/man.ts).
  put 0644 docs/man/spook.8 "$PREFIX/share/man/man8/spook.8"
  put 0644 docs/man/spookd.8 "$PREFIX/share/man/man8/spookd.8"
  put 0644 docs/man/spookd.conf.5 "$PREFIX/share/man/man5/spookd.conf.5"
  put 0644 packaging/completion/spook.bash "$PREFIX/share/bash-completion/completions/spook"
  put 0644 packaging/completion/_spook "$PREFIX/share/zsh/site-functions/_spook"
  subst packaging/spookd.service.in > "$tmp/spookd.service"
  put 0644 "$tmp/spookd.service" "$SYSTEMDDIR/spookd.service"
  rm -rf "$tmp"
  sort -u "$record" > "$manifest"
  echo "installed Spook $(node -p "require('./package.json').version") under ${DESTDIR}${PREFIX} (unit: ${DESTDIR}${SYSTEMDDIR}/spookd.service)"
  ;;
uninstall)
  if ! uninstall; then echo "uninstall: nothing installed under ${DESTDIR}${PREFIX} (no $manifest)" >&2; exit 0; fi
  echo "uninstalled Spook from ${DESTDIR}${PREFIX}"
  ;;
*)
  echo "usage: $0 install|uninstall" >&2
  exit 2
  ;;
esac
