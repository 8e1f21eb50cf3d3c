#!/usr/bin/env bash
# Provisions one lab host: prerequisites, `make install`, a host key, and (once every host
# has published its public key to /spook/vagrant/keys) a config pairing it with the others.
set -euo pipefail
name=$1
ip=$2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Debian 13 ships Node.js 20, which Spook needs (packaging/check-prereqs.sh says so if not).
apt-get install -y -q make nodejs npm clang llvm libbpf-dev libbpf1 bpftool iproute2 openssh-server
/spook/packaging/check-prereqs.sh --quiet
cp -a /spook /opt/spook-src
make -C /opt/spook-src install PREFIX=/usr/local
install -d -m 0700 /etc/spook
[ -f /etc/spook/private.key ] || spook keygen /etc/spook/private.key > /dev/null
mkdir -p /spook/vagrant/keys
spook pubkey /etc/spook/private.key > "/spook/vagrant/keys/$name.pub"
echo "$ip" > "/spook/vagrant/keys/$name.ip"
echo "$name: public key $(cat "/spook/vagrant/keys/$name.pub"); run vagrant/lab.sh once all three hosts are up"
