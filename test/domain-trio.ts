/**
 * A three-member QN domain (nodes 1, 2, 3) over a perfect in-memory network with a manual
 * clock, plus node 9: a configured peer (a link of every member) that is not a member.
 * Messages to 9 are captured, never delivered.
 */
import { DeltaOp } from '../wire/delta.js';
import { decodeEnvelope, encodeEnvelope, type QnBody } from '../wire/qn.js';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { DomainNode, type DomainEvent, type DomainNodeOptions } from '../core/qn/node.js';
import { driveReady, type DomainStore } from '../core/qn/persist.js';
import { Role } from '../core/qn/raft.js';
import { Rng } from '../testing/sim/rng.js';
import { publicKeyOf, type KeyPair } from '../crypto/primitives.js';
import { StaticRelaySealer } from '../core/qn/seal.js';

export const DOMAIN = 0x51_4e_7e_57;
export const OUTSIDER = 9;
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Options a test may set per node; `store` replaces the node's in-memory store (a file journal). */
type Extra = Partial<DomainNodeOptions> & { store?: DomainStore };

export class Trio {
  now = 0;
  readonly nodes = new Map<number, DomainNode>();
  readonly disks = new Map<number, MemDomainStore>();
  private readonly stores = new Map<number, DomainStore>();
  /** Messages released by a persisted Ready, not delivered yet. */
  private readonly queued = new Map<number, { to: number; bytes: Uint8Array }[]>();
  readonly cut = new Set<string>();
  readonly toOutsider: { from: number; bytes: Uint8Array }[] = [];
  readonly events = new Map<number, DomainEvent[]>();
  /** Sees every message delivered between members (a fuzzer's corpus). */
  tap: ((from: number, to: number, bytes: Uint8Array) => void) | undefined;
  private readonly rng: Rng;
  /** Static keys of 1, 2, 3 and the outsider: relayed messages are sealed with them (§15.5). */
  readonly keys = new Map<number, KeyPair>();
  private lastMoves: string[] = [];

  constructor(
    seed: number,
    readonly extra: Extra | ((id: number) => Extra) = {},
  ) {
    this.rng = new Rng(seed);
    for (const id of [1, 2, 3, OUTSIDER]) {
      const privateKey = this.rng.bytes(32);
      this.keys.set(id, { privateKey, publicKey: publicKeyOf(privateKey) });
    }
    for (const id of [1, 2, 3]) this.start(id);
  }

  start(id: number): DomainNode {
    if (!this.disks.has(id)) this.disks.set(id, new MemDomainStore());
    const { store: fileStore, ...extra } = typeof this.extra === 'function' ? this.extra(id) : this.extra;
    const store = fileStore ?? this.disks.get(id)!;
    this.stores.set(id, store);
    const n = new DomainNode(
      {
        domain: DOMAIN,
        name: 'trio',
        id,
        members: [1, 2, 3],
        links: [1, 2, 3, OUTSIDER].filter((x) => x !== id),
        registers: [{ name: 'kv', kind: 'map' }],
        seed: 7,
        stored: store.load(),
        random: (a, b) => this.rng.int(a, b),
        electionMs: 100,
        heartbeatMs: 20,
        relay: this.sealer(id),
        ...extra,
      },
      this.now,
    );
    this.nodes.set(id, n);
    if (!this.events.has(id)) this.events.set(id, []);
    this.drainEvents(id);
    return n;
  }

  sealer(id: number): StaticRelaySealer {
    return new StaticRelaySealer(this.keys.get(id)!, new Map([...this.keys].map(([i, k]) => [i, k.publicKey] as const)));
  }

  stop(id: number): void {
    this.nodes.delete(id);
    this.queued.delete(id);
  }

  isolate(id: number, on = true): void {
    for (const o of [1, 2, 3]) {
      if (o === id) continue;
      for (const k of [`${id}>${o}`, `${o}>${id}`]) on ? this.cut.add(k) : this.cut.delete(k);
    }
  }

  /** The node's Readies: writes to its store, then its events recorded and its messages queued. */
  private drainEvents(id: number): void {
    const n = this.nodes.get(id);
    if (!n) return;
    const q = this.queued.get(id) ?? [];
    this.queued.set(id, q);
    driveReady(
      n,
      this.stores.get(id)!,
      (to, bytes) => q.push({ to, bytes }),
      (ev) => this.events.get(id)!.push(ev),
    );
  }

  deliver(): void {
    // Bounded: a livelock between two nodes (an instant ping-pong) fails the test instead of hanging it.
    for (let moved = true, rounds = 0; moved; rounds++) {
      if (rounds > 10_000) throw new Error(`Trio: messages keep flowing without time passing (livelock): ${this.lastMoves.join(' | ')}`);
      if (rounds > 9_990) this.lastMoves = [];
      moved = false;
      for (const id of [...this.nodes.keys()]) {
        this.drainEvents(id);
        const txs = this.queued.get(id)!.splice(0);
        for (const tx of txs) {
          moved = true;
          if (rounds > 9_990 && this.lastMoves.length < 12)
            this.lastMoves.push(
              `${id}>${tx.to} ${JSON.stringify(decodeEnvelope(tx.bytes).body, (_k, v) => (v instanceof Uint8Array ? Array.from(v) : v))}`,
            );
          if (tx.to === OUTSIDER) this.toOutsider.push({ from: id, bytes: tx.bytes });
          else if (!this.cut.has(`${id}>${tx.to}`)) {
            this.tap?.(id, tx.to, tx.bytes);
            this.nodes.get(tx.to)?.handleDatagram(this.now, id, tx.bytes);
          }
        }
      }
    }
  }

  run(ms: number): void {
    for (const end = this.now + ms; this.now < end;) {
      this.now += 5;
      for (const n of this.nodes.values()) if (n.pollTimeout() <= this.now) n.handleTimeout(this.now);
      this.deliver();
    }
  }

  /** `body` from member (or link) `from` to `to`, directly, then everything that follows. */
  inject(from: number, to: number, body: QnBody): void {
    this.nodes.get(to)!.handleDatagram(this.now, from, encodeEnvelope({ domain: DOMAIN, from, to, ttl: 8, body }));
    this.deliver();
  }

  leader(): DomainNode | undefined {
    return [...this.nodes.values()].find((n) => n.raft.role === Role.Leader);
  }

  follower(): DomainNode | undefined {
    return [...this.nodes.values()].find((n) => n.raft.role === Role.Follower && n.raft.leader !== 0);
  }

  /** Propose a set at `at` (default the leader) and run until its outcome, at most 2 s. */
  put(key: string, value: string, at?: number): 'committed' | 'rejected' | 'pending' | string {
    const n = at === undefined ? this.leader() : this.nodes.get(at);
    if (!n) return 'no node';
    const r = n.propose(this.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(key), value: enc(value) } }]);
    if ('refused' in r) return `refused: ${r.refused}`;
    return this.await(n.id, r.seq, 2000);
  }

  /** Run until candidate `seq` of `id` has an outcome, at most `ms`. */
  await(id: number, seq: number, ms: number): 'committed' | 'rejected' | 'unknown' | 'pending' {
    for (let t = 0; t <= ms; t += 5) {
      this.deliver();
      const ev = this.events.get(id)!.find((e) => e.type === 'outcome' && e.seq === seq);
      if (ev && ev.type === 'outcome') return ev.unknown ? 'unknown' : ev.committed ? 'committed' : 'rejected';
      this.run(5);
    }
    return 'pending';
  }
}
