/**
 * Prometheus metrics (prom-client), off unless `metrics.listen` is configured. Values are
 * read from the daemon at scrape time, so the hot path pays nothing for them.
 */
import { createServer, type Server } from 'node:http';
import { Gauge, Registry } from 'prom-client';
import type { WrapperCounters } from '../wrap/local.js';
import type { Logger } from 'pino';
import { PairState } from '../../core/pair/lifecycle.js';
import { parseHostPort } from '../daemon/config.js';
import type { Spookd } from '../daemon/spookd.js';
import type { Replica } from '../../core/pair/replica.js';

export class Metrics {
  private server: Server | undefined;
  readonly registry = new Registry();

  constructor(
    private readonly d: Spookd,
    private readonly listen: string,
    private readonly log: Logger,
  ) {
    const r = this.registry;
    const pairGauge = (name: string, help: string, read: (l: typeof d.links extends Map<string, infer L> ? L : never) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['peer'],
        registers: [r],
        collect() {
          this.reset();
          for (const l of d.links.values()) this.set({ peer: l.name }, read(l));
        },
      });
    };
    new Gauge({
      name: 'spook_pair_state',
      help: 'Lifecycle state of each pair (1 for the current state)',
      labelNames: ['peer', 'state'],
      registers: [r],
      collect() {
        this.reset();
        for (const l of d.links.values())
          for (const s of Object.values(PairState)) this.set({ peer: l.name, state: s }, l.pair.state === s ? 1 : 0);
      },
    });
    pairGauge('spook_pair_bytes_sent_total', 'Bytes sent on the pair', (l) => l.pair.stats.bytesSent);
    pairGauge('spook_pair_bytes_received_total', 'Bytes received on the pair', (l) => l.pair.stats.bytesReceived);
    pairGauge('spook_pair_reentanglements_total', 'Re-entanglements completed', (l) => l.pair.stats.reentanglements);
    pairGauge('spook_pair_full_transfers_total', 'Full state transfers (the last resort)', (l) => l.pair.stats.fullTransfers);
    pairGauge('spook_pair_retransmit_timeouts_total', 'Retransmission timeouts', (l) => l.pair.stats.retransmitTimeouts);
    pairGauge('spook_pair_rtt_seconds', 'Smoothed round-trip time', (l) => (l.pair.rttMs ?? 0) / 1000);
    const registerGauge = (name: string, help: string, read: (g: Replica) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['peer', 'register'],
        registers: [r],
        collect() {
          this.reset();
          for (const l of d.links.values())
            for (const g of l.pair.registers.values()) this.set({ peer: l.name, register: g.name }, read(g));
        },
      });
    };
    registerGauge('spook_register_version', 'Committed version of each register', (g) => g.version);
    registerGauge('spook_register_pending_candidates', 'Own candidates awaiting their outcome', (g) => g.pendingCount);
    new Gauge({
      name: 'spook_frames_dropped_total',
      help: 'Frames dropped by the daemon (wire checks, ETCP) and by pairs, by reason',
      labelNames: ['reason', 'peer'],
      registers: [r],
      collect() {
        this.reset();
        for (const [reason, n] of Object.entries(d.drops)) this.set({ reason, peer: '' }, n);
        for (const l of d.links.values())
          for (const [reason, n] of Object.entries(l.pair.stats.drops)) this.set({ reason, peer: l.name }, n);
      },
    });
    // Wrappers: per wrapped port (this host's clients) and per recognised protocol (both sides).
    const wrapGauge = (name: string, help: string, read: (w: WrapperCounters) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['port', 'protocol', 'peer'],
        registers: [r],
        collect() {
          this.reset();
          for (const w of d.wraps.wrappers.values()) this.set({ port: String(w.port), protocol: w.protocol, peer: w.peer }, read(w));
        },
      });
    };
    wrapGauge('spook_wrap_connections_total', 'Connections intercepted on the wrapped port', (w) => w.connections);
    wrapGauge('spook_wrap_active_connections', 'Connections carried now', (w) => w.active);
    wrapGauge('spook_wrap_bytes_up_total', 'Client-to-server bytes carried', (w) => w.bytesUp);
    wrapGauge('spook_wrap_bytes_down_total', 'Server-to-client bytes carried', (w) => w.bytesDown);
    wrapGauge('spook_wrap_outages_total', 'Link outages held (connections kept open across them)', (w) => w.outages);
    new Gauge({
      name: 'spook_wrap_closes_total',
      help: 'Wrapped connections ended, by reason (completed, hold-expired, client-reset, ...)',
      labelNames: ['port', 'protocol', 'reason'],
      registers: [r],
      collect() {
        this.reset();
        for (const w of d.wraps.wrappers.values())
          for (const [reason, n] of Object.entries(w.closes)) this.set({ port: String(w.port), protocol: w.protocol, reason }, n);
      },
    });
    new Gauge({
      name: 'spook_wrap_delta_bytes_total',
      help: 'Delta mode: stream bytes sent to the peer as references instead of bytes',
      labelNames: ['peer'],
      registers: [r],
      collect() {
        this.reset();
        for (const p of d.wraps.peerCounters()) this.set({ peer: p.peer }, p.refBytes);
      },
    });
    new Gauge({
      name: 'spook_wrap_delta_nacks_total',
      help: 'Delta mode: references this side did not hold (each costs a round trip)',
      labelNames: ['peer'],
      registers: [r],
      collect() {
        this.reset();
        for (const p of d.wraps.peerCounters()) this.set({ peer: p.peer }, p.nacksSent);
      },
    });
    new Gauge({
      name: 'spook_wrap_protocol_connections_total',
      help: 'Carried connections by recognised protocol (from their first bytes)',
      labelNames: ['protocol'],
      registers: [r],
      collect() {
        this.reset();
        for (const [protocol, c] of Object.entries(d.wraps.protocols.toJSON())) this.set({ protocol }, c.connections);
      },
    });
  }

  async start(): Promise<void> {
    const hp = parseHostPort(this.listen)!;
    this.server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('see /metrics\n');
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (e: unknown) => res.writeHead(500).end(String(e)),
      );
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(hp.port, hp.host, () => resolve());
    });
    this.log.info({ metrics: `http://${this.listen}/metrics` }, 'metrics listening');
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
