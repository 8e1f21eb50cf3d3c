/**
 * The load generator of `spook-lab bench scale`: many authenticated peers of one hub spookd,
 * driven from one process with the project's own cores, as spookd drives them: per virtual
 * peer an EtcpEndpoint and a PeerTable (ETCP handshakes, sessions, rekeys; the hub its only
 * peer) and a HalfPair (ESTP) above it, on a UDP socket of its own (its own loopback address,
 * 127.1.x.y, so the hub's per-source handshake limits see distinct peers). The pairs' writes
 * are not persisted (a peer's durability is not what is measured; the hub's is).
 *
 * Run as a child process (`fork`) of bench/scale.ts, which talks to it over IPC:
 *   → { id, cmd: 'status' }                       ← { id, entangledIndexes, states }
 *   → { id, cmd: 'load', peer, keys, valueBytes, limitMs }
 *                                                  ← { id, committed, ms, stopped }
 *   → { cmd: 'halt' }   stop proposing (the parent's memory bound was reached)
 *   → { cmd: 'exit' }
 * Every loop is bounded in count and time; the process exits when its parent goes away.
 */
import { createSocket, type Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { EtcpEndpoint, MAX_SEALED_PAYLOAD, pairIdentity } from '../core/etcp/endpoint.js';
import { PeerTable, type Addr } from '../core/etcp/peers.js';
import { HalfPair, type RegisterSpec } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { ProposeError } from '../core/pair/replica.js';
import { publicKeyOf } from '../crypto/primitives.js';
import { DeltaOp } from '../wire/delta.js';
import { DeadlineHeap } from '../core/util/deadline-heap.js';

export interface SwarmInit {
  hub: Addr & { publicKey: string };
  /** Each virtual peer: its private key (base64) and where it binds. */
  peers: { privateKey: string; address: string; port: number }[];
  /** The hub's register, as spookd builds it from its configuration (the manifests must match). */
  register: RegisterSpec;
  timing: { keepaliveMs: number; silenceMs: number };
  /**
   * Peers come up one after another over this long (ms), as real ones would: started in the same
   * millisecond, their keepalives would stay in step and every second arrive at the hub as one
   * burst of N datagrams, more than its socket's receive buffer holds (the tail of the burst,
   * always the same peers, lost every time).
   */
  spreadMs: number;
}

const RECV_BUFFER_BYTES = 4 * 1024 * 1024;
const b64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));
const HUB = 'hub';

/** One peer of the hub: a socket, the ETCP table and the pair above it. */
class VirtualPeer {
  readonly table: PeerTable;
  readonly pair: HalfPair;
  committed = 0;

  constructor(
    readonly sock: Socket,
    init: SwarmInit,
    privateKey: Uint8Array,
    /** When it comes up (its first timer). */
    now: number,
  ) {
    const key = { privateKey, publicKey: publicKeyOf(privateKey) };
    const hubKey = b64(init.hub.publicKey);
    const etcp = new EtcpEndpoint({
      staticKey: key,
      peers: [{ name: HUB, publicKey: hubKey }],
      random: (n) => new Uint8Array(randomBytes(n)),
    });
    this.table = new PeerTable({
      etcp,
      localPublicKey: key.publicKey,
      peers: [{ name: HUB, publicKey: hubKey, endpoint: init.hub, pairState: () => this.pair.state, budgetMs: 1000 }],
      now,
      clock: () => performance.now(),
      timestamp: () => Date.now(),
      violationLimit: 100,
    });
    const ids = pairIdentity(key.publicKey, hubKey);
    this.pair = new HalfPair(
      {
        pairId: 0,
        localId: ids.localId,
        peerId: ids.peerId,
        seed: ids.seed,
        registers: [init.register],
        timing: init.timing,
        maxPayload: MAX_SEALED_PAYLOAD,
        sealer: { seal: (payload) => this.table.seal(HUB, payload) },
      },
      now,
    );
  }
}

export class Swarm {
  readonly peers: VirtualPeer[] = [];
  private readonly dirty = new Set<VirtualPeer>();
  /** Each peer's next deadline (its table's and its pair's): a turn touches only the due peers, as in spookd. */
  private readonly dues = new DeadlineHeap<VirtualPeer>();
  private flushQueued = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(private readonly init: SwarmInit) {}

  static async open(init: SwarmInit): Promise<Swarm> {
    const s = new Swarm(init);
    try {
      const t0 = performance.now();
      for (const [i, p] of init.peers.entries()) {
        // spookd's default receive buffer (udpReceiveBufferBytes): with Linux's ~200 KiB, the loading
        // peer's socket overflowed under the hub's collapses (~100,000 drops in a 14 s load of 10^6
        // keys), each loss a retransmission round. The kernel caps it at net.core.rmem_max.
        const sock = createSocket({ type: 'udp4', recvBufferSize: RECV_BUFFER_BYTES });
        await new Promise<void>((resolve, reject) => {
          sock.once('error', reject);
          sock.bind(p.port, p.address, () => {
            sock.off('error', reject);
            resolve();
          });
        });
        const up = t0 + (init.spreadMs * i) / init.peers.length;
        const vp = new VirtualPeer(sock, init, b64(p.privateKey), up);
        // Before it is up, a peer hears nothing (the hub's handshakes to it are retried).
        sock.on('message', (msg, r) => {
          if (performance.now() >= up) s.onDatagram(vp, new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), r);
        });
        sock.on('error', () => undefined);
        s.peers.push(vp);
        s.dues.set(vp, up);
      }
    } catch (e) {
      s.close();
      throw e;
    }
    s.schedule();
    return s;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const p of this.peers) p.sock.close();
  }

  /** The peers whose pair is entangled (COLLAPSING is an entangled pair committing). */
  entangledIndexes(): number[] {
    const out: number[] = [];
    this.peers.forEach((p, i) => {
      if (p.pair.state === PairState.ENTANGLED || p.pair.state === PairState.COLLAPSING) out.push(i);
    });
    return out;
  }

  states(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const p of this.peers) out[p.pair.state] = (out[p.pair.state] ?? 0) + 1;
    return out;
  }

  private onDatagram(vp: VirtualPeer, buf: Uint8Array, r: { address: string; port: number }): void {
    if (this.closed) return;
    const now = performance.now();
    vp.table.handleDatagram(now, { address: r.address, port: r.port }, buf);
    this.drain(vp, now);
  }

  /** spookd's drain for one peer: the table's datagrams and events; the pair handles payloads; the pair is pumped at the end of the turn. */
  private drain(vp: VirtualPeer, now: number): void {
    this.flushTable(vp);
    for (let ev = vp.table.pollEvent(); ev; ev = vp.table.pollEvent()) {
      if (ev.type === 'pair-payload') {
        vp.pair.handlePayload(now, ev.packetNumber, ev.payload, ev.wireBytes);
        vp.table.handlePairDrops(now, HUB, vp.pair.stats.drops);
      } else if (ev.type === 'established') {
        vp.pair.resetPacketSpace();
        for (const r of vp.pair.registers.values()) r.markStatusDirty();
      }
    }
    this.flushTable(vp);
    this.mark(vp);
  }

  mark(vp: VirtualPeer): void {
    this.dirty.add(vp);
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => this.flush());
    }
  }

  private flushTable(vp: VirtualPeer): void {
    for (let t = vp.table.pollTransmit(); t; t = vp.table.pollTransmit()) vp.sock.send(t.datagram, t.to.port, t.to.address);
  }

  /** The end of a turn: every touched pair collapses and sends; its events are read; the timer is re-armed. */
  private flush(): void {
    this.flushQueued = false;
    if (this.closed) return;
    const now = performance.now();
    const peers = [...this.dirty];
    this.dirty.clear();
    for (const vp of peers) {
      const to = vp.table.peer(HUB)!.addr;
      if (vp.table.canSend(HUB) && to)
        for (let d = vp.pair.pollTransmit(now); d; d = vp.pair.pollTransmit(now)) vp.sock.send(d, to.port, to.address);
      else vp.pair.collapse(now);
      for (let ev = vp.pair.pollEvent(); ev; ev = vp.pair.pollEvent())
        if (ev.type === 'outcome' && ev.verdict === 'committed') vp.committed++;
      vp.table.refresh(HUB); // the pair may have changed state (a decoherent one re-handshakes)
      const tt = vp.table.pollTimeout();
      let pt = vp.pair.pollTimeout();
      // Without a session a pair cannot send the ack it owes: poll again shortly (spookd's loop does the same).
      if (pt !== undefined && pt <= now && !vp.table.canSend(HUB)) pt = now + 5;
      this.dues.set(vp, tt === undefined ? pt : pt === undefined ? tt : Math.min(tt, pt));
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    const now = performance.now();
    const next = Math.min(now + 100, this.dues.peek() ?? Infinity);
    this.timer = setTimeout(() => this.tick(), Math.max(1, Math.ceil(next - now)));
  }

  private tick(): void {
    if (this.closed) return;
    const now = performance.now();
    const due: VirtualPeer[] = [];
    for (let vp = this.dues.popDue(now); vp; vp = this.dues.popDue(now)) due.push(vp);
    for (const vp of due) {
      vp.table.handleTimeout(now);
      const t = vp.pair.pollTimeout();
      if (t !== undefined && t <= now) vp.pair.handleTimeout(now);
      this.drain(vp, now);
    }
    this.schedule();
  }

  private halted = false;
  halt(): void {
    this.halted = true;
  }

  /**
   * Sets `keys` keys (`key-<i>`, `valueBytes` each) through peer `index`'s pair, as many
   * pending as its register allows, until all are committed, `limitMs` passes or `halt()`;
   * then waits (at most `limitMs` more) for the ones still pending to be decided.
   */
  async load(index: number, keys: number, valueBytes: number, limitMs: number): Promise<LoadResult> {
    const vp = this.peers[index];
    const st0 = { ...vp.pair.stats };
    /** What the loading peer sent meanwhile: its retransmission timeouts each resent a window of proposals. */
    const sent = () => ({
      retransmitTimeouts: vp.pair.stats.retransmitTimeouts - st0.retransmitTimeouts,
      datagramsSent: vp.pair.stats.datagramsSent - st0.datagramsSent,
    });
    const value = new Uint8Array(valueBytes).fill(0x76);
    const enc = new TextEncoder();
    const base = vp.committed;
    const t0 = performance.now();
    let proposed = 0;
    this.halted = false;
    // Stopped by a bound: the candidates still pending are decided before this returns (at most
    // limitMs more), so the next phase measures the hub without this load still flowing.
    const settle = async (stopped: string): Promise<LoadResult> => {
      const end = performance.now() + limitMs;
      while (vp.pair.register('kv').pendingCount > 0 && performance.now() < end) await new Promise((r) => setTimeout(r, 10));
      return { committed: vp.committed - base, ms: Math.round(performance.now() - t0), stopped, ...sent() };
    };
    for (;;) {
      const done = vp.committed - base;
      if (done >= keys) return { committed: done, ms: Math.round(performance.now() - t0), stopped: 'all committed', ...sent() };
      if (this.halted) return settle('memory bound');
      if (performance.now() - t0 > limitMs) return settle('time bound');
      const now = performance.now();
      if (vp.pair.state === PairState.ENTANGLED || vp.pair.state === PairState.COLLAPSING)
        for (let n = 0; n < 2048 && proposed < keys; n++) {
          try {
            vp.pair.propose(now, 'kv', { op: DeltaOp.Set, key: enc.encode(`key-${proposed}`), value });
            proposed++;
          } catch (e) {
            if (!(e instanceof ProposeError)) throw e;
            break; // too many pending: after the next commits
          }
        }
      this.mark(vp);
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

/** A load's end: keys committed, how long, why it stopped, and what the loading peer sent. */
export interface LoadResult {
  committed: number;
  ms: number;
  stopped: string;
  retransmitTimeouts: number;
  datagramsSent: number;
}

// ---- the child process ----

type Command =
  | { id: number; cmd: 'status' }
  | { id: number; cmd: 'load'; peer: number; keys: number; valueBytes: number; limitMs: number }
  | { cmd: 'halt' }
  | { cmd: 'exit' };

async function main(): Promise<void> {
  const init = await new Promise<SwarmInit>((resolve) => process.once('message', (m) => resolve(m as SwarmInit)));
  const swarm = await Swarm.open(init);
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0)); // an exit, so a --cpu-prof profile is written
  process.on('message', (m: Command) => {
    if (m.cmd === 'exit') {
      swarm.close();
      process.exit(0);
    } else if (m.cmd === 'halt') swarm.halt();
    else if (m.cmd === 'status') process.send!({ id: m.id, entangledIndexes: swarm.entangledIndexes(), states: swarm.states() });
    else if (m.cmd === 'load')
      void swarm.load(m.peer, m.keys, m.valueBytes, m.limitMs).then(
        (r) => process.send!({ id: m.id, ...r }),
        (e: unknown) => process.send!({ id: m.id, error: String(e) }),
      );
  });
  process.send!({ ready: true, peers: swarm.peers.length });
}

if (process.send && import.meta.url === pathToFileURL(process.argv[1]).href) void main();
