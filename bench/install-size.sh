#!/usr/bin/env bash
# Install size of the light client (@spook/client) against the full package (docs/BENCHMARKS.md,
# "Client install size"). Offline, from the npm cache `make deps` filled; prints bytes (du -sb).
#   client: make client-package; npm pack; npm install <tarball> --offline into an empty project.
#   full:   the production dependency tree (npm ci --omit=dev --offline of package.json and the
#           lock in an empty directory) plus the package's own files (npm pack of the product:
#           dist/{client,core,crypto,wire,drivers,cli} and bin/), as `npm install spook` would lay out.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d /tmp/spook-install-size-XXXX)
trap 'rm -rf "$T"' EXIT
make -s -C "$ROOT" build client-package >/dev/null

(cd "$ROOT/packages/client" && npm pack --silent --pack-destination "$T" >/dev/null)
mkdir "$T/app" && echo '{"name":"app","private":true,"type":"module"}' >"$T/app/package.json"
(cd "$T/app" && npm install "$T"/spook-client-*.tgz --offline --no-audit --no-fund --silent)
client=$(du -sb "$T/app/node_modules" | cut -f1)
client_pkgs=$(cd "$T/app" && npm ls --all --parseable 2>/dev/null | tail -n +2 | sort -u | wc -l)

mkdir "$T/deps" && cp "$ROOT/package.json" "$ROOT/package-lock.json" "$T/deps/"
(cd "$T/deps" && npm ci --omit=dev --offline --no-audit --no-fund --silent 2>/dev/null)
deps=$(du -sb "$T/deps/node_modules" | cut -f1)
deps_pkgs=$(cd "$T/deps" && npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | sort -u | wc -l)
koffi=$(du -sb "$T/deps/node_modules/koffi" | cut -f1)
mkdir -p "$T/own/dist" && cp -r "$ROOT/bin" "$ROOT/package.json" "$T/own/"
for d in client core crypto wire drivers cli; do cp -r "$ROOT/dist/$d" "$T/own/dist/"; done
own=$(du -sb "$T/own" | cut -f1)

echo "client (@spook/client, node_modules):          $client bytes ($client_pkgs package)"
echo "full (spook): production dependencies:          $deps bytes ($deps_pkgs packages; koffi alone $koffi)"
echo "full (spook): its own files:                    $own bytes"
echo "full (spook): total:                            $((deps + own)) bytes"
echo "ratio full/client:                              $(((deps + own) / client))"
