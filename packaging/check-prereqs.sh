#!/usr/bin/env bash
# Checks what building and running Spook needs; says what is missing and how to get it.
# Exit 0 when everything is there; 1 otherwise. `--quiet` prints only problems.
set -u
quiet=${1:-}
missing=0
say() { [ "$quiet" = --quiet ] || echo "ok: $*"; }
need() { echo "MISSING: $1 — $2" >&2; missing=1; }

if command -v node >/dev/null; then
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -ge 20 ]; then say "node $(node -v)"; else need "node >= 20 (found $(node -v))" "install Node.js 20 or newer (e.g. from nodejs.org or NodeSource)"; fi
else
  need "node" "install Node.js 20 or newer"
fi
command -v npm >/dev/null && say "npm $(npm -v 2>/dev/null)" || need "npm" "apt-get install npm (or with Node.js)"
command -v clang >/dev/null && say "clang" || need "clang (compiles the XDP program)" "apt-get install clang llvm"
[ -f /usr/include/bpf/bpf_helpers.h ] && say "libbpf headers" || need "libbpf headers" "apt-get install libbpf-dev"
ldconfig -p 2>/dev/null | grep -q 'libbpf.so.1' && say "libbpf.so.1" || need "libbpf.so.1 (loads the XDP program at run time)" "apt-get install libbpf1"
# Optional: without it the wrapper carrier seals through node:crypto (slower per record, same wire).
ldconfig -p 2>/dev/null | grep -q 'libcrypto.so.3' && say "libcrypto.so.3" || echo "note: libcrypto.so.3 absent (optional: the wrapper carrier and ETCP frames seal faster with it) — apt-get install libssl3" >&2
# Optional: ETCP Data frames seal in one call each through libsodium (else libcrypto's EVP, else node:crypto; same wire).
ldconfig -p 2>/dev/null | grep -q 'libsodium.so.23' && say "libsodium.so.23" || echo "note: libsodium.so.23 absent (optional: ETCP frames seal fastest with it) — apt-get install libsodium23" >&2
command -v ip >/dev/null && say "iproute2" || need "ip (iproute2: namespace tests, demo)" "apt-get install iproute2"
exit $missing
