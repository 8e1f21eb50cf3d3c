/**
 * CPU per committed write in a QN domain that declares many registers, writes going to one of
 * them (issue 16): three DomainNodes in one process over a perfect in-memory network, each
 * feeding a DomainChanges as spookd does (the change feeds' source), the leader proposing sets
 * on register r0; printed for one register (the baseline, same run) and for `registers`.
 *
 *   node dist/bench/domain-registers.js [registers=1000] [writes=20000]
 */
import { DomainNode } from '../core/qn/node.js';
import { DomainChanges } from '../core/qn/changes.js';
import { driveReady } from '../core/qn/persist.js';
import { Role } from '../core/qn/raft.js';
import { DeltaOp } from '../wire/delta.js';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { Rng } from '../testing/sim/rng.js';
import { printRegistersRatio } from './registers-ratio.js';

const IDS = [1, 2, 3];
/** Candidates the leader keeps in flight (each one set). */
const IN_FLIGHT = 64;

/** CPU µs per committed write for a domain of `n` registers, `writes` sets on r0. */
function cpuPerWrite(n: number, writes: number): number {
  const rng = new Rng(5);
  const registers = Array.from({ length: n }, (_, i) => ({ name: `r${i}`, kind: 'map' as const }));
  const queued: { from: number; to: number; bytes: Uint8Array }[] = [];
  let decided = 0;
  const nodes = new Map<number, { node: DomainNode; store: MemDomainStore }>();
  let now = 0;
  for (const id of IDS) {
    const store = new MemDomainStore();
    const changes = new DomainChanges({ maxRecords: 100_000, maxBytes: 8 << 20 });
    const node = new DomainNode(
      {
        domain: 1,
        name: 'bench',
        id,
        members: IDS,
        links: IDS.filter((x) => x !== id),
        registers,
        seed: 7,
        stored: store.load(),
        random: (a, b) => rng.int(a, b),
        electionMs: 100,
        heartbeatMs: 20,
        maxLogEntries: 100_000,
        observer: changes,
      },
      now,
    );
    nodes.set(id, { node, store });
  }
  const drain = (): void => {
    for (let moved = true; moved;) {
      moved = false;
      for (const [id, { node, store }] of nodes) {
        driveReady(
          node,
          store,
          (to, bytes) => queued.push({ from: id, to, bytes }),
          (ev) => void (ev.type === 'outcome' && ev.committed && decided++),
        );
      }
      for (const m of queued.splice(0)) {
        moved = true;
        nodes.get(m.to)!.node.handleDatagram(now, m.from, m.bytes);
      }
    }
  };
  const tick = (): void => {
    now += 1;
    for (const { node } of nodes.values()) if (node.pollTimeout() <= now) node.handleTimeout(now);
    drain();
  };
  const leader = (): DomainNode | undefined => [...nodes.values()].map((x) => x.node).find((x) => x.raft.role === Role.Leader);
  while (!leader() && now < 10_000) tick();
  const l = leader();
  if (!l) throw new Error('bench: no leader');
  const enc = new TextEncoder();
  let proposed = 0;
  const c0 = process.cpuUsage();
  for (let t = 0; decided < writes && t < 600_000; t++) {
    while (proposed < writes && proposed - decided < IN_FLIGHT) {
      const r = l.propose(now, [
        { register: 'r0', delta: { op: DeltaOp.Set, key: enc.encode(`k${proposed % 1000}`), value: enc.encode(`v${proposed}`) } },
      ]);
      if ('refused' in r) throw new Error(`bench: refused (${r.refused})`);
      proposed++;
    }
    tick();
  }
  const c = process.cpuUsage(c0);
  if (decided < writes) throw new Error(`bench: ${decided} of ${writes} writes committed with ${n} registers`);
  return (c.user + c.system) / writes;
}

printRegistersRatio(cpuPerWrite);
