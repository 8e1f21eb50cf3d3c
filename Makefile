# Spook — build, test, demo. Every target installs what it needs (npm ci) by itself.
SHELL := /bin/bash
NODE_STAMP := node_modules/.stamp
BUILD_STAMP := dist/.stamp
TS_SOURCES := $(shell find wire crypto core drivers client cli testing tools bench -name '*.ts' 2>/dev/null)

.PHONY: docs
.PHONY: all build deps client-package test lint format demo demo-sim sim bench bench-link bench-domain bench-wrap bench-attack bench-compare bench-library bench-scale bench-snapshot etcd-deps redis-deps promtool-deps clean typecheck soak install uninstall check-prereqs

all: build

APT_STAMP := node_modules/.stamp-apt
BPF_OBJ := bpf/spook_xdp.o
MULTIARCH := $(shell uname -m)-linux-gnu

# Debian packages for the XDP build and the namespace tests, and libsodium (ETCP frames seal in
# one call each with it; spookd falls back to libcrypto without it), installed once, as root.
$(APT_STAMP): | $(NODE_STAMP)
	@if ! command -v clang >/dev/null || ! test -f /usr/include/bpf/bpf_helpers.h || ! command -v ip >/dev/null || ! test -f /usr/lib/$(MULTIARCH)/libsodium.so.23; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y clang llvm libbpf-dev libbpf1 bpftool iproute2 libsodium23; \
	fi
	touch $@

# Real servers and clients for the wrapper tests and `bench wrap` (started by the tests, in
# namespaces, as foreground processes: the packages' own services are never used).
WRAP_TEST_PKGS := openssh-server openssh-client postgresql postgresql-contrib samba smbclient slapd ldap-utils nginx mosquitto mosquitto-clients libcoap3-bin curl wireguard-go wireguard-tools
APT_TEST_STAMP := node_modules/.stamp-apt-test
$(APT_TEST_STAMP): | $(APT_STAMP)
	@missing=""; for b in /usr/sbin/sshd /usr/bin/scp /usr/sbin/smbd /usr/bin/smbclient /usr/sbin/slapd /usr/bin/ldapadd /usr/sbin/nginx /usr/sbin/mosquitto /usr/bin/mosquitto_pub /usr/bin/coap-server-notls /usr/bin/curl /usr/bin/wireguard-go /usr/bin/wg; do \
		test -x $$b || missing="$$missing $$b"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		echo "installing the wrapper tests' servers and clients (missing:$$missing)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(WRAP_TEST_PKGS); \
	fi
	touch $@

# etcd for `bench library` and its test (3 members started by the bench as foreground processes
# on loopback ports with a temporary data dir: the package's own service is never used).
etcd-deps: | $(NODE_STAMP)
	@if ! command -v etcd >/dev/null; then \
		echo "installing Debian's etcd-server (the baseline of bench library)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server; \
	fi

# Redis for `bench scale` (memory per key beside the hub's; started by the bench as a foreground
# process on a loopback port without persistence: the package's own service is never used).
redis-deps: | $(NODE_STAMP)
	@if ! command -v redis-server >/dev/null; then \
		echo "installing Debian's redis-server (the memory baseline of bench scale)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; \
	fi

# promtool for the tests only (test/metrics.test.ts: `promtool check metrics` on a live scrape):
# Debian's prometheus package; its service is never started by the tests.
promtool-deps: | $(NODE_STAMP)
	@if ! command -v promtool >/dev/null; then \
		echo "installing Debian's prometheus (promtool checks the metrics in make test)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; \
	fi

$(BPF_OBJ): bpf/spook_xdp.c bpf/spook_wire.h | $(APT_STAMP)
	clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I/usr/include/$(MULTIARCH) -Ibpf -Wall -Werror -c $< -o $@

bpf/spook_wrap.o: bpf/spook_wrap.c bpf/spook_wire.h | $(APT_STAMP)
	clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I/usr/include/$(MULTIARCH) -Ibpf -Wall -Werror -c $< -o $@

$(NODE_STAMP): package.json package-lock.json
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		echo "installing Node.js and npm from the distribution (Spook needs Node.js >= 20)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; \
	fi
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null || { echo "Spook needs Node.js >= 20 (found: $$(node -v 2>/dev/null || echo none)); see packaging/check-prereqs.sh" >&2; exit 1; }
	npm ci --no-audit --no-fund
	touch $@

check-prereqs:
	@packaging/check-prereqs.sh

# PREFIX (default /usr/local), DESTDIR, SYSCONFDIR (/etc), SYSTEMDDIR ($$PREFIX/lib/systemd/system).
install: build
	@packaging/install.sh install

uninstall:
	@packaging/install.sh uninstall

deps: $(NODE_STAMP)

$(BUILD_STAMP): $(NODE_STAMP) $(TS_SOURCES) tsconfig.json
	npx tsc -p tsconfig.json
	touch $@

MAN_PAGES := docs/man/spook.8 docs/man/spookd.8 docs/man/spookd.conf.5
COMPLETIONS := packaging/completion/spook.bash packaging/completion/_spook
build: $(BUILD_STAMP) $(BPF_OBJ) bpf/spook_wrap.o docs/ADMIN-API.md $(MAN_PAGES)

# The light client (packages/client, @spook/client): client/ alone, compiled without the daemon;
# `cd packages/client && npm pack` makes the installable tarball.
CLIENT_PKG := packages/client
client-package: $(NODE_STAMP)
	rm -rf $(CLIENT_PKG)/dist
	npx tsc -p tsconfig.client.json

typecheck: $(NODE_STAMP)
	npx tsc -p tsconfig.json --noEmit

# ESLint (typescript-eslint) for correctness, Prettier for layout; `make format` rewrites.
LINT_DIRS := wire crypto core drivers client cli testing tools bench test examples
lint: $(NODE_STAMP)
	npx eslint --max-warnings 0 .
	npx prettier --check --log-level warn $(LINT_DIRS) vitest.config.ts vitest.soak.config.ts eslint.config.js

format: $(NODE_STAMP)
	npx prettier --write --log-level warn $(LINT_DIRS) vitest.config.ts vitest.soak.config.ts eslint.config.js

test: build lint $(APT_TEST_STAMP) etcd-deps redis-deps promtool-deps
	npx vitest run --project sims --maxWorkers=2 --minWorkers=1
	npx vitest run --project serial --maxWorkers=1

# The main job: two spookd in network namespaces (loopback without root), pair, sync, cut, heal.
demo: build
	./bin/spook-lab demo link

# The foundation's demo: two in-process endpoints over the seeded lossy simulator.
demo-sim: build
	./bin/spook-lab demo

sim: build
	./bin/spook-lab sim --seeds 1000 --loss 0.3 --dup 0.05 --reorder 0.2 --cuts

bench: build
	./bin/spook-lab bench core

# The pair beside a one-member etcd (the same puts through etcd3, same run).
bench-link: build etcd-deps
	./bin/spook-lab bench link

# Wrapper vs direct TCP vs ssh -L, pgbench direct vs wrapped (root: namespaces).
bench-wrap: build $(APT_TEST_STAMP)
	./bin/spook-lab bench wrap

# One hub with 1,000 peers and a register of up to 10^7 keys; Redis memory per key in the same run (minutes).
bench-scale: build redis-deps
	./bin/spook-lab bench scale

# A large register's snapshot written in the background beside one written at once (same run).
bench-snapshot: build
	./bin/spook-lab bench snapshot

bench-domain: build
	./bin/spook-lab bench domain

# A victim pair's p99 commit latency unattacked and while one authorised peer attacks (loopback).
bench-attack: build
	./bin/spook-lab bench attack

# Library sets/s and watch events/s, Spook (pair, domain) vs etcd3 on a 3-member etcd, same run.
bench-library: build etcd-deps
	./bin/spook-lab bench library

# Spook vs Yjs vs Automerge; the JSON feeds the SVG charts in docs/plots (several minutes).
bench-compare: build
	./bin/spook-lab bench compare --out docs/plots/compare.json
	node dist/bench/plot.js docs/plots/compare.json docs/plots

clean:
	rm -rf dist $(BPF_OBJ) $(CLIENT_PKG)/dist

# The C twin of wire/constants.ts and wire/layouts.ts (a test fails when they drift; the
# _Static_asserts it carries fail the BPF build when a struct's size or an offset differs).
bpf/spook_wire.h: wire/constants.ts wire/layouts.ts tools/bpf-header.ts $(BUILD_STAMP)
	node dist/tools/bpf-header.js $@

# The admin protocol's reference, rendered from client/protocol.ts (a test fails when it is stale).
docs: docs/ADMIN-API.md $(MAN_PAGES)

docs/ADMIN-API.md: client/protocol.ts tools/admin-doc.ts $(BUILD_STAMP)
	node dist/tools/admin-doc.js $@

# Manual pages and shell completions, rendered from the command trees --help prints (tools/man.ts).
$(MAN_PAGES) $(COMPLETIONS) &: tools/man.ts docs/spookd.conf.example $(BUILD_STAMP)
	node dist/tools/man.js docs/man packaging/completion

soak: build $(APT_TEST_STAMP)
	./bin/spook-lab sim --seeds 20000 --loss 0.3 --dup 0.05 --reorder 0.2 --cuts
	./bin/spook-lab sim --seeds 5000 --seed-base 100000 --loss 0.1 --cuts --corrupt 0.03
	./bin/spook-lab sim --nodes 3 --partitions --crashes --cuts --membership --seeds 20000 --seed-base 1000000
	./bin/spook-lab sim --nodes 5 --partitions --crashes --cuts --seeds 10000 --seed-base 2000000 --loss 0.3 --dup 0.2 --reorder 0.3
	./bin/spook-lab sim --nodes 7 --partitions --crashes --cuts --seeds 2000 --seed-base 3000000
	./bin/spook-lab sim --nodes 3 --partitions --crashes --cuts --store-faults 0.01 --seeds 5000 --seed-base 7000000
	# Pairs with crashes, a faulty store and link cuts (restarts keep the sequencer's §8.5 rejections).
	./bin/spook-lab sim --crashes --store-faults 0.01 --seeds 5000 --seed-base 6000000
	./bin/spook-lab sim --crashes --cuts --seeds 5000 --seed-base 8000000
	./bin/spook-lab sim --wrap --seeds 20000 --seed-base 4000000
	./bin/spook-lab sim --wrap --small-cache --seeds 5000 --seed-base 5000000
	# Wrappers vs direct TCP through 2 and 10 min silent outages, ssh and streams (about 17 min, namespaces, root).
	npx vitest run --config vitest.soak.config.ts
