#!/usr/bin/env bash
# Run on the host machine after `vagrant up`: writes each VM's spookd.conf (pairing it with
# the other two, shared registers `config` and `journal`, and a three-node QN domain `lab`
# with a QSCS group), starts spookd on every VM, shows the pairs and the domain from
# spook1, and wraps SSH from spook1 to spook2: spook1's ssh client is unmodified, its
# connection to 192.168.56.12:22 is intercepted by spook1's spookd and carried to spook2's.
set -euo pipefail
cd "$(dirname "$0")"
hosts=(spook1 spook2 spook3)
for h in "${hosts[@]}"; do
  peers=""
  for p in "${hosts[@]}"; do
    [ "$p" = "$h" ] && continue
    peers+="  - name: $p
    publicKey: $(cat "keys/$p.pub")
    endpoint: $(cat "keys/$p.ip"):51900
"
  done
  conf="listen: 0.0.0.0:51900
privateKeyFile: /etc/spook/private.key
dataDir: /var/lib/spook
adminSocket: /run/spook/admin.sock
peers:
${peers}registers:
  - name: config
    kind: map
  - name: journal
    kind: stream
domains:
  - name: lab
    members: [$(printf '%s\n' "${hosts[@]}" | grep -vx "$h" | paste -sd, -)]
    registers:
      - name: kv
        kind: map
      - name: meta
        kind: map
    groups:
      - name: settings
        registers: [kv, meta]
"
  vagrant ssh "$h" -c "echo '$conf' | sudo tee /etc/spook/spookd.conf >/dev/null && sudo spookd --config /etc/spook/spookd.conf --check-config && sudo systemctl daemon-reload && sudo systemctl enable --now spookd"
done
sleep 3
vagrant ssh spook1 -c 'sudo spook pairs'
vagrant ssh spook1 -c 'sudo spook set --peer spook2 config hello from-spook1'
vagrant ssh spook2 -c 'sudo spook get --peer spook1 config hello'
vagrant ssh spook1 -c 'sudo spook domain show lab'
vagrant ssh spook2 -c "sudo spook domain propose -d lab --op 'set kv colour blue' --op 'set meta colour-set-by spook2'"
vagrant ssh spook3 -c 'sudo spook domain get -d lab kv colour && sudo spook group show settings'

# SSH wrapped from spook1 to spook2: a key for spook1's vagrant user, authorised on spook2.
vagrant ssh spook1 -c 'test -f ~/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N "" -f ~/.ssh/id_ed25519'
vagrant ssh spook1 -c 'cat ~/.ssh/id_ed25519.pub' | vagrant ssh spook2 -c 'cat >> ~/.ssh/authorized_keys'
vagrant ssh spook1 -c 'sudo spook wrap add ssh --port 22 --peer spook2 --hold 60s'
spook2_ip=$(cat keys/spook2.ip)
vagrant ssh spook1 -c "ssh -o StrictHostKeyChecking=accept-new vagrant@$spook2_ip 'echo wrapped: \$(hostname)'"
vagrant ssh spook1 -c 'sudo spook wrap stats'
