/**
 * Prometheus metrics (prom-client) and health checks, off unless `metrics.listen` is configured.
 * Values are read from the daemon at scrape time, so the hot path pays nothing for them; only
 * the two histograms are fed as things happen (a write's outcome, a re-entanglement's end).
 *
 * Naming follows Prometheus' conventions (checked by `promtool check metrics` in
 * test/metrics.test.ts): counters end in `_total`, base units (seconds, bytes) in the name,
 * one gauge per state with the state as a label.
 *
 *   GET /metrics  the exposition
 *   GET /healthz  200 while the process serves (liveness)
 *   GET /readyz   200 once spookd has started and until it stops, else 503 (readiness)
 */
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from 'pino';
import { PairState } from '../../core/pair/lifecycle.js';
import { Role } from '../../core/qn/raft.js';
import { parseHostPort } from '../daemon/config.js';
import type { Spookd } from '../daemon/spookd.js';
import type { PeerLink } from '../daemon/spookd.js';
import type { DomainHost } from '../daemon/domains.js';
import type { Replica } from '../../core/pair/replica.js';
import type { WrapperCounters } from '../wrap/local.js';
import type { SpookEvent } from '../../core/pair/events.js';
import { buildInfo } from '../daemon/build-info.js';
import { bindFault } from '../daemon/preflight.js';

/** Connections the metrics listener holds at once (scrapers, probes); past it new ones are dropped. */
const METRICS_MAX_CONNECTIONS = 64;
/** A request must be read within this; a connection idle this long is closed. */
const METRICS_REQUEST_MS = 10_000;
const METRICS_IDLE_MS = 10_000;
/**
 * A scrape blocks the event loop for all of its run (a hub of 1,000 peers: 0.07-0.25 s, 1.4-2.9 MB), and a request
 * is ~35 octets: requests share one scrape, and the next starts no sooner than this many times the
 * last one's run after it ended (a tenth of the loop at most), and at most SCRAPE_WAIT_MAX_MS later.
 */
const SCRAPE_SPACING = 9;
const SCRAPE_WAIT_MAX_MS = 5_000;
/** Requests one connection may have unanswered (pipelined); a client past it is disconnected. */
const METRICS_PIPELINE_MAX = 8;

/** Where a committed or rejected write was decided. */
export type CommitScope = 'pair' | 'domain';

type Labels<L extends string> = Partial<Record<L, string | number>>;
/** A family's samples at scrape time: label values and the value. */
type Samples<L extends string> = Iterable<[Labels<L>, number]>;

export class Metrics {
  private server: Server | undefined;
  readonly registry = new Registry();
  private readonly commitSeconds: Histogram<'scope' | 'verdict'>;
  private readonly reentangleSeconds: Histogram<'peer'>;
  /** Per peer: when its pair left ENTANGLED for re-entanglement (the daemon's clock, ms). */
  private readonly reentangleFrom = new Map<string, number>();
  private readonly onEvent = (link: PeerLink, ev: SpookEvent): void => this.event(link, ev);
  /**
   * A peer removed (a reload; a rekey removes, then adds under the same name): what was timed for
   * its pair goes, its series too. Kept, the new pair's first formation was observed as one
   * re-entanglement from the old pair's decoherence (an hour gone: 3,600 s), and each removed
   * peer's series stayed exported.
   */
  private readonly onRemoved = (peer: string): void => {
    this.reentangleFrom.delete(peer);
    this.reentangleSeconds.remove({ peer });
  };
  /** The scrape the requests that arrive now will be answered from (not begun yet). */
  private nextScrape: Promise<string> | undefined;
  /** The last scrape begun (settled or not): the next one waits for it. */
  private lastScrape: Promise<unknown> = Promise.resolve();
  /** When the next scrape may begin (performance.now()). */
  private scrapeAt = 0;
  /** Unanswered requests per connection. */
  private readonly unanswered = new WeakMap<Socket, number>();

  constructor(
    private readonly d: Spookd,
    private readonly listen: string,
    private readonly log: Logger,
  ) {
    const r = this.registry;
    collectDefaultMetrics({ register: r });
    // prom-client's three gauges named *_total fail Prometheus' naming rules (promtool); the same
    // figures stay, by type, in nodejs_active_handles, nodejs_active_requests, nodejs_active_resources.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'])
      r.removeSingleMetric(name);
    const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[], read: () => Samples<L>): void => {
      new Gauge<L>({
        name,
        help,
        labelNames,
        registers: [r],
        collect() {
          this.reset();
          for (const [labels, v] of read()) this.set(labels, v);
        },
      });
    };
    // A counter kept by the daemon: mirrored at scrape time (reset, then the current total).
    const counter = <L extends string>(name: string, help: string, labelNames: readonly L[], read: () => Samples<L>): void => {
      new Counter<L>({
        name,
        help,
        labelNames,
        registers: [r],
        collect() {
          this.reset();
          for (const [labels, v] of read()) this.inc(labels, v);
        },
      });
    };
    const links = (): PeerLink[] => [...d.links.values()];
    const perLink = (read: (l: PeerLink) => number): (() => Samples<'peer'>) =>
      function* () {
        for (const l of links()) yield [{ peer: l.name }, read(l)];
      };

    const info = buildInfo();
    gauge('spook_build_info', 'Always 1; the labels say which spookd runs', ['version', 'commit', 'nodejs'] as const, () => [
      [{ version: info.version, commit: info.commit, nodejs: process.version }, 1],
    ]);
    gauge('spook_ready', '1 once spookd has started and until it stops (what /readyz answers)', [], () => [[{}, d.ready ? 1 : 0]]);

    // ---- pairs ----
    gauge('spook_pair_state', 'Lifecycle state of each pair (1 for the current state)', ['peer', 'state'] as const, function* () {
      for (const l of links()) for (const s of Object.values(PairState)) yield [{ peer: l.name, state: s }, l.pair.state === s ? 1 : 0];
    });
    gauge(
      'spook_pair_register_mismatch',
      '1 while the peer declares registers differently (the pair refuses writes until fixed)',
      ['peer'] as const,
      perLink((l) => (l.pair.registerMismatch ? 1 : 0)),
    );
    counter(
      'spook_pair_sent_bytes_total',
      'Bytes sent on the pair (UDP payloads)',
      ['peer'] as const,
      perLink((l) => l.pair.stats.bytesSent),
    );
    counter(
      'spook_pair_received_bytes_total',
      'Bytes received on the pair (UDP payloads)',
      ['peer'] as const,
      perLink((l) => l.pair.stats.bytesReceived),
    );
    counter(
      'spook_pair_reentanglements_total',
      'Re-entanglements completed',
      ['peer'] as const,
      perLink((l) => l.pair.stats.reentanglements),
    );
    counter(
      'spook_pair_full_transfers_total',
      'Full state transfers (the last resort of re-entanglement)',
      ['peer'] as const,
      perLink((l) => l.pair.stats.fullTransfers),
    );
    counter(
      'spook_pair_retransmit_timeouts_total',
      'Retransmission timeouts',
      ['peer'] as const,
      perLink((l) => l.pair.stats.retransmitTimeouts),
    );
    gauge(
      'spook_pair_rtt_seconds',
      'Smoothed round-trip time (0 before the first sample)',
      ['peer'] as const,
      perLink((l) => (l.pair.rttMs ?? 0) / 1000),
    );
    const perRegister = (read: (g: Replica) => number) =>
      function* (): Samples<'peer' | 'register'> {
        for (const l of links()) for (const g of l.pair.registers.values()) yield [{ peer: l.name, register: g.name }, read(g)];
      };
    gauge(
      'spook_register_version',
      'Committed version of each pair register',
      ['peer', 'register'] as const,
      perRegister((g) => g.version),
    );
    gauge(
      'spook_register_pending_candidates',
      'Own candidates awaiting their outcome',
      ['peer', 'register'] as const,
      perRegister((g) => g.pendingCount),
    );
    counter(
      'spook_frames_dropped_total',
      'Frames dropped by the daemon (wire checks, ETCP; peer="") and by pairs, by reason',
      ['reason', 'peer'] as const,
      function* () {
        for (const [reason, n] of Object.entries(d.drops)) yield [{ reason, peer: '' }, n];
        for (const l of links()) for (const [reason, n] of Object.entries(l.pair.stats.drops)) yield [{ reason, peer: l.name }, n];
      },
    );

    const tablePeer = (read: (v: NonNullable<ReturnType<typeof d.table.peer>>) => number): (() => Samples<'peer'>) =>
      function* () {
        for (const l of links()) {
          const v = d.table.peer(l.name);
          if (v) yield [{ peer: l.name }, read(v)];
        }
      };
    counter(
      'spook_etcp_handshakes_sent_total',
      'HandshakeInits sent to the peer (first contact, retries, rekeys)',
      ['peer'] as const,
      tablePeer((v) => v.handshakesSent),
    );
    counter(
      'spook_etcp_sessions_established_total',
      'ETCP sessions established with the peer (either side initiating)',
      ['peer'] as const,
      tablePeer((v) => v.sessionsEstablished),
    );
    gauge(
      'spook_etcp_unanswered_handshakes',
      'HandshakeInits sent since the last session came up (0 while one is up): rising means the peer does not answer',
      ['peer'] as const,
      tablePeer((v) => v.unanswered),
    );
    counter('spook_warnings_suppressed_total', 'Warnings not logged by the per-source and per-peer rate limits', [], () => [
      [{}, d.warns.suppressed],
    ]);

    // ---- QN domains ----
    const domains = (): DomainHost[] => [...d.domains.values()];
    const perDomain = (read: (h: DomainHost) => number) =>
      function* (): Samples<'domain'> {
        for (const h of domains()) yield [{ domain: h.cfg.name }, read(h)];
      };
    gauge(
      'spook_domain_role',
      "This member's Raft role in each domain (1 for the current role)",
      ['domain', 'role'] as const,
      function* () {
        for (const h of domains())
          for (const role of Object.values(Role)) yield [{ domain: h.cfg.name, role }, h.node.raft.role === role ? 1 : 0];
      },
    );
    gauge(
      'spook_domain_has_leader',
      '1 while this member knows a leader',
      ['domain'] as const,
      perDomain((h) => (h.node.raft.leader ? 1 : 0)),
    );
    gauge(
      'spook_domain_coherent',
      '1 while this member is coherent with its domain',
      ['domain'] as const,
      perDomain((h) => (h.node.coherenceState === 'coherent' ? 1 : 0)),
    );
    gauge(
      'spook_domain_fenced',
      '1 while this member is fenced (its store failed)',
      ['domain'] as const,
      perDomain((h) => (h.node.fencedCause ? 1 : 0)),
    );
    gauge(
      'spook_domain_term',
      'Current Raft term',
      ['domain'] as const,
      perDomain((h) => h.node.raft.term),
    );
    gauge(
      'spook_domain_commit_index',
      'Highest log index known committed',
      ['domain'] as const,
      perDomain((h) => h.node.raft.commit),
    );
    gauge(
      'spook_domain_applied_index',
      'Highest log index applied to the registers',
      ['domain'] as const,
      perDomain((h) => h.node.raft.applied),
    );
    gauge(
      'spook_domain_last_index',
      'Last index of the local log',
      ['domain'] as const,
      perDomain((h) => h.node.raft.lastIndex),
    );
    gauge(
      'spook_domain_pending_candidates',
      'Own candidates awaiting their outcome',
      ['domain'] as const,
      perDomain((h) => h.node.pendingCount),
    );
    gauge(
      'spook_domain_member_lag_entries',
      "Entries each member's announced commit index is behind this member's (members that announced one)",
      ['domain', 'member'] as const,
      function* () {
        for (const h of domains()) {
          const r = h.node.raft;
          for (const id of r.members) {
            const c = id === h.selfId ? r.commit : h.node.announcedCommit(id);
            if (c !== undefined) yield [{ domain: h.cfg.name, member: h.name(id) }, Math.max(0, r.commit - c)];
          }
        }
      },
    );
    const domainCounter = (name: string, help: string, read: (h: DomainHost) => number): void =>
      counter(name, help, ['domain'] as const, perDomain(read));
    domainCounter('spook_domain_leader_changes_total', 'Times the known leader changed', (h) => h.node.raft.stats.leaderChanges);
    domainCounter('spook_domain_elections_total', 'Elections this member started', (h) => h.node.raft.stats.elections);
    domainCounter('spook_domain_proposed_total', 'Candidates proposed here', (h) => h.node.stats.proposed);
    domainCounter('spook_domain_committed_total', 'Own candidates committed', (h) => h.node.stats.committed);
    domainCounter('spook_domain_rejected_total', 'Own candidates rejected', (h) => h.node.stats.rejected);
    domainCounter('spook_domain_partitions_total', 'Times this member became decoherent', (h) => h.node.stats.partitions);
    domainCounter('spook_domain_snapshots_sent_total', 'Full snapshots sent to lagging members', (h) => h.node.raft.stats.snapshotsSent);
    domainCounter(
      'spook_domain_members_lost_entries_total',
      'Times this leader found a member lacking entries it had acknowledged (its directory wiped or restored) and sent them again',
      (h) => h.node.raft.stats.lostEntries,
    );
    domainCounter('spook_domain_snapshots_installed_total', 'Full snapshots installed here', (h) => h.node.raft.stats.snapshotsInstalled);
    domainCounter('spook_domain_received_bytes_total', 'Bytes of domain messages received', (h) => h.node.stats.bytesIn);
    domainCounter('spook_domain_sent_bytes_total', 'Bytes of domain messages sent', (h) => h.node.stats.bytesOut);
    counter('spook_domain_messages_dropped_total', 'Domain messages dropped, by reason', ['domain', 'reason'] as const, function* () {
      for (const h of domains())
        for (const [reason, n] of Object.entries(h.node.stats.drops)) yield [{ domain: h.cfg.name, reason }, n ?? 0];
    });

    // ---- XDP fast path ----
    gauge(
      'spook_xdp_attached',
      '1 while the XDP program is attached (mode and interface as labels)',
      ['mode', 'interface'] as const,
      () => {
        const x = d.fastPath.status();
        return [[{ mode: x.mode ?? 'off', interface: x.interface ?? '' }, x.enabled ? 1 : 0]];
      },
    );
    counter(
      'spook_xdp_packets_total',
      'Packets the XDP program passed or dropped at the NIC, by verdict and reason (absent while XDP is off)',
      ['verdict', 'reason'] as const,
      function* () {
        for (const [name, n] of Object.entries(d.fastPath.status().counters ?? {}))
          yield name.startsWith('pass-') ? [{ verdict: 'pass', reason: name.slice(5) }, n] : [{ verdict: 'drop', reason: name }, n];
      },
    );

    // ---- wrappers: per wrapped port (this host's clients) and per recognised protocol ----
    const perWrapper = (read: (w: WrapperCounters) => number) =>
      function* (): Samples<'port' | 'protocol' | 'peer'> {
        for (const w of d.wraps.wrappers.values()) yield [{ port: w.port, protocol: w.protocol, peer: w.peer }, read(w)];
      };
    const wrapLabels = ['port', 'protocol', 'peer'] as const;
    counter(
      'spook_wrap_connections_total',
      'Connections intercepted on the wrapped port',
      wrapLabels,
      perWrapper((w) => w.connections),
    );
    gauge(
      'spook_wrap_active_connections',
      'Connections carried now',
      wrapLabels,
      perWrapper((w) => w.active),
    );
    counter(
      'spook_wrap_carried_bytes_total',
      'Bytes carried, by direction (up: client to server)',
      [...wrapLabels, 'direction'] as const,
      function* () {
        for (const w of d.wraps.wrappers.values()) {
          const l = { port: w.port, protocol: w.protocol, peer: w.peer };
          yield [{ ...l, direction: 'up' }, w.bytesUp];
          yield [{ ...l, direction: 'down' }, w.bytesDown];
        }
      },
    );
    counter(
      'spook_wrap_outages_total',
      'Link outages held (connections kept open across them)',
      wrapLabels,
      perWrapper((w) => w.outages),
    );
    counter(
      'spook_wrap_closes_total',
      'Wrapped connections ended, by reason (completed, hold-expired, client-reset, ...)',
      ['port', 'protocol', 'reason'] as const,
      function* () {
        for (const w of d.wraps.wrappers.values())
          for (const [reason, n] of Object.entries(w.closes)) yield [{ port: w.port, protocol: w.protocol, reason }, n];
      },
    );
    counter(
      'spook_wrap_delta_reference_bytes_total',
      'Delta mode: stream bytes sent to the peer as references instead of bytes',
      ['peer'] as const,
      function* () {
        for (const p of d.wraps.peerCounters()) yield [{ peer: p.peer }, p.refBytes];
      },
    );
    counter(
      'spook_wrap_delta_nacks_total',
      'Delta mode: references this side did not hold (each costs a round trip)',
      ['peer'] as const,
      function* () {
        for (const p of d.wraps.peerCounters()) yield [{ peer: p.peer }, p.nacksSent];
      },
    );
    counter(
      'spook_wrap_protocol_connections_total',
      'Carried connections by recognised protocol (from their first bytes)',
      ['protocol'] as const,
      function* () {
        for (const [protocol, c] of Object.entries(d.wraps.protocols.toJSON())) yield [{ protocol }, c.connections];
      },
    );

    // ---- histograms, fed as things happen ----
    this.commitSeconds = new Histogram({
      name: 'spook_commit_duration_seconds',
      help: 'From a write through the admin API to its outcome (committed or rejected), by scope',
      labelNames: ['scope', 'verdict'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [r],
    });
    this.reentangleSeconds = new Histogram({
      name: 'spook_reentanglement_duration_seconds',
      help: 'From a pair leaving ENTANGLED (decoherence) to entangled again, by peer',
      labelNames: ['peer'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900],
      registers: [r],
    });
    d.subscribers.add(this.onEvent);
    d.removals.add(this.onRemoved);
  }

  /** A write decided `seconds` after it was made (the admin API's view). */
  observeCommit(scope: CommitScope, verdict: 'committed' | 'rejected', seconds: number): void {
    this.commitSeconds.observe({ scope, verdict }, seconds);
  }

  private event(link: PeerLink, ev: SpookEvent): void {
    if (ev.type !== 'lifecycle') return;
    // Timed from leaving ENTANGLED (or a collapse in flight) only: a first formation is not a re-entanglement.
    const left = ev.from === PairState.ENTANGLED || ev.from === PairState.COLLAPSING;
    if (left && (ev.to === PairState.DECOHERENT || ev.to === PairState.REENTANGLING)) this.reentangleFrom.set(link.name, ev.at);
    else if (ev.to === PairState.ENTANGLED) {
      const from = this.reentangleFrom.get(link.name);
      this.reentangleFrom.delete(link.name);
      if (from !== undefined) this.reentangleSeconds.observe({ peer: link.name }, Math.max(0, ev.at - from) / 1000);
    } else if (ev.to === PairState.CLOSED) this.reentangleFrom.delete(link.name);
  }

  /**
   * The exposition, from a scrape begun after this call (so it is current), shared with every
   * request made before it begins: N requests at once, or pipelined, cost one scrape, not N.
   */
  private scrape(): Promise<string> {
    if (this.nextScrape) return this.nextScrape;
    const p: Promise<string> = this.lastScrape
      .then(() => new Promise<void>((r) => setTimeout(r, Math.max(0, this.scrapeAt - performance.now())).unref()))
      .then(async () => {
        if (this.nextScrape === p) this.nextScrape = undefined;
        const t0 = performance.now();
        try {
          return await this.registry.metrics();
        } finally {
          const end = performance.now();
          this.scrapeAt = end + Math.min(SCRAPE_WAIT_MAX_MS, SCRAPE_SPACING * (end - t0));
        }
      });
    this.nextScrape = p;
    this.lastScrape = p.catch(() => {});
    return p;
  }

  async start(): Promise<void> {
    const hp = parseHostPort(this.listen, true)!; // port 0 (any free port) only in tests: the configuration refuses it
    // Node checks headersTimeout and requestTimeout only every connectionsCheckingInterval (30 s by
    // default): headers trickled in held a connection 32-40 s, not about the 10 s below.
    this.server = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
      // Node reads pipelined requests ahead of the answers: a client sending many without reading
      // would have them all held (each ~2 KB of objects for ~35 octets sent).
      const sock = req.socket;
      const held = (this.unanswered.get(sock) ?? 0) + 1;
      if (held > METRICS_PIPELINE_MAX) {
        sock.destroy();
        return;
      }
      this.unanswered.set(sock, held);
      res.once('close', () => this.unanswered.set(sock, (this.unanswered.get(sock) ?? 1) - 1));
      const path = (req.url ?? '').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        return;
      }
      if (path === '/readyz') {
        const ready = this.d.ready;
        res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : 'not ready: starting or stopping\n');
        return;
      }
      if (path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('see /metrics, /healthz, /readyz\n');
        return;
      }
      this.scrape().then(
        (body) => {
          if (!res.destroyed) res.writeHead(200, { 'content-type': this.registry.contentType }).end(body);
        },
        (e: unknown) => {
          this.log.error({ err: e }, 'metrics scrape failed');
          if (!res.destroyed) res.writeHead(500, { 'content-type': 'text/plain' }).end('scrape failed; see the log\n');
        },
      );
    });
    // Whoever reaches the port is unauthenticated: a few scrapers at a time, each request read
    // within seconds, an idle connection closed soon; past the cap new ones are dropped (a flood of
    // idle connections held each 60-90 s and ran the daemon out of descriptors).
    this.server.maxConnections = METRICS_MAX_CONNECTIONS;
    this.server.headersTimeout = METRICS_REQUEST_MS;
    this.server.requestTimeout = METRICS_REQUEST_MS;
    this.server.keepAliveTimeout = METRICS_REQUEST_MS;
    this.server.timeout = METRICS_IDLE_MS;
    this.server.on('timeout', (socket: Socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', (e) => reject(bindFault(e, [[this.listen, 'metrics.listen']])));
      this.server!.listen(hp.port, hp.host, () => resolve());
    });
    this.log.info({ metrics: `http://${this.listen}/metrics` }, 'metrics listening');
  }

  async stop(): Promise<void> {
    this.d.subscribers.delete(this.onEvent);
    this.d.removals.delete(this.onRemoved);
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
