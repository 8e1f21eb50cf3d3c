/** `spook-lab bench`: benchmarks that print their figures beside a baseline measured in the same run. */
import { Command } from 'commander';
import { writeFileSync } from 'node:fs';

/**
 * Benchmarks load lazily: the comparison needs Yjs and Automerge, which are development
 * dependencies and absent from an installed tree; nothing else should pay for them.
 */
async function load<T>(path: string): Promise<T> {
  try {
    return (await import(path)) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') {
      process.stderr.write(
        `spook: this benchmark needs the development dependencies (${(e as Error).message.split('\n')[0]}); run it from a checkout after make\n`,
      );
      process.exit(1);
    }
    throw e;
  }
}
import { intArg } from '../../cli/args.js';

export function benchCommand(): Command {
  const bench = new Command('bench').description('Benchmarks (figures recorded in docs/BENCHMARKS.md)');
  bench
    .command('core')
    .description('ESTP core: delta apply rate vs a bare Map.set, bytes per delta, re-entanglement bytes vs full state')
    .option('--keys <n>', 'map size for the re-entanglement figures', intArg('--keys', 1), 1_000_000)
    .option('--deltas <n>', 'set deltas for the apply-rate figures', intArg('--deltas', 1000), 200_000)
    .option('--missed <n>', 'updates the follower misses during the cut', intArg('--missed', 1), 100)
    .option('--json', 'print one JSON object', false)
    .action(async (o: { keys: number; deltas: number; missed: number; json: boolean }) => {
      const { runCoreBench } = await load<typeof import('../../bench/core.js')>('../../bench/core.js');
      const r = runCoreBench(o);
      if (o.json) {
        console.log(JSON.stringify(r, null, 2));
        return;
      }
      const n = (x: number): string => x.toLocaleString('en-US');
      console.log(`apply (decode+apply+hash+log)  ${n(r.applyPerSec)} deltas/s`);
      console.log(`Map.set baseline               ${n(r.mapSetPerSec)} ops/s   ratio ${(r.applyVsMapSet * 100).toFixed(1)}% (goal >= 20%)`);
      console.log(
        `set delta (16 B key, 32 B val) ${r.bytesPerSetDelta} bytes encoded, ${r.wireBytesPerSetDelta} bytes on the wire in full frames`,
      );
      console.log(
        `re-entangle, ${r.missedUpdates} missed on ${n(r.stateKeys)} keys: ${n(r.reentangleBytes)} bytes in ${r.reentangleMs} ms by ${r.reentangleMethod}`,
      );
      console.log(`  same with the log compacted:  ${n(r.reconcileBytes)} bytes in ${r.reconcileMs} ms by ${r.reconcileMethod}`);
      console.log(
        `full state                     ${n(r.fullStateBytes)} bytes   log path ${r.reentangleVsFull} of full (goal <= 1e-3), reconcile ${r.reconcileVsFull}`,
      );
    });
  bench
    .command('snapshot')
    .description(
      "a large register's snapshot written in the background beside one written at once (the baseline, same run): longest event-loop block, wall time, commits meanwhile, memory",
    )
    .option('--keys <n>', 'entries in the register', intArg('--keys', 1000), 2_000_000)
    .option('--per-tick <n>', 'sets committed every millisecond meanwhile', intArg('--per-tick', 1), 10)
    .option('--domain', "a QN domain's snapshot (one member, FileDomainStore) instead of a pair register's", false)
    .option(
      '--replaced',
      "a reconciliation's replacement of a pair register (a batch written, synced and landed as spookd does) instead of a log snapshot",
      false,
    )
    .option('--json', 'print one JSON object', false)
    .action(async (o: { keys: number; perTick: number; domain: boolean; replaced: boolean; json: boolean }) => {
      const { runSnapshotBench } = await load<typeof import('../../bench/snapshot.js')>('../../bench/snapshot.js');
      const r = await runSnapshotBench(o);
      if (o.json) {
        console.log(JSON.stringify(r, null, 2));
        return;
      }
      const n = (x: number): string => x.toLocaleString('en-US');
      for (const [name, f] of [
        ['background', r.background],
        ['at once (baseline)', r.atOnce],
      ] as const)
        console.log(
          `${name.padEnd(20)} longest loop block ${n(f.maxLoopBlockMs)} ms (p99 gap ${f.p99LoopGapMs} ms), ${n(f.snapshotBytes)} bytes in ${n(f.snapshotMs)} ms, ${n(f.commitsDuring)} commits meanwhile, +${f.extraRssMb} MB RSS`,
        );
      console.log(
        `${r.kind}, ${n(r.keys)} keys: longest block ${r.loopBlockRatio} of the baseline's; the file loads back in ${n(r.restoreMs)} ms`,
      );
    });
  bench
    .command('link')
    .description(
      'two spookd over loopback UDP: committed deltas/s beside a one-member etcd under the same load (same run), bytes per delta, re-entanglement after a cut (SIGSTOP of the follower) under load',
    )
    .option('--deltas <n>', 'set deltas for the throughput figure', intArg('--deltas', 100), 20_000)
    .option('--cut-ms <ms>', 'how long the follower is stopped', intArg('--cut-ms', 100), 10_000)
    .option('--rate <n>', 'updates/s on the sequencer during the cut', intArg('--rate', 1), 1000)
    .option('--fsync <policy>', 'always | everysec | never', 'always')
    .option(
      '--base-port <port>',
      'first of two loopback UDP ports (the etcd baseline: base+10, base+11, TCP)',
      intArg('--base-port', 1024),
      47300,
    )
    .option('--no-etcd', 'skip the one-member etcd baseline (Debian etcd-server, `make etcd-deps`)')
    .option('--json', 'print one JSON object', false)
    .action(async (o: { deltas: number; cutMs: number; rate: number; fsync: string; basePort: number; etcd: boolean; json: boolean }) => {
      const { runLinkBench } = await load<typeof import('../../bench/link.js')>('../../bench/link.js');
      const r = await runLinkBench(o);
      if (o.json) console.log(JSON.stringify(r, null, 2));
      else for (const [k, v] of Object.entries(r)) console.log(`${k.padEnd(20)}${typeof v === 'object' ? JSON.stringify(v) : v}`);
    });
  bench
    .command('scale')
    .description(
      'one hub spookd with many authenticated peers (ETCP/ESTP cores driven from one process) and one large register: memory per pair and per key (Redis in the same run), p99 commit latency at the hub, re-entanglement of all peers after a hub outage',
    )
    .option('--peers <n>', 'peers of the hub', intArg('--peers', 2), 1000)
    .option('--keys <n>', 'keys peer 0 sets into its register (the target; what was reached is printed)', intArg('--keys', 1), 10_000_000)
    .option('--value-bytes <n>', 'bytes per value', intArg('--value-bytes', 1), 32)
    .option('--commits <n>', 'sets through the hub admin API for the latency figures', intArg('--commits', 1), 20_000)
    .option('--inflight <n>', 'of those, awaiting at once', intArg('--inflight', 1), 256)
    .option('--outage-ms <ms>', 'how long the hub is stopped (SIGSTOP)', intArg('--outage-ms', 0), 10_000)
    .option('--fsync <policy>', "the hub's: always | everysec | never", 'always')
    .option('--load-limit-ms <ms>', 'the most the key load may last', intArg('--load-limit-ms', 1000), 300_000)
    .option('--hub-rss-limit-mb <n>', "the key load stops when the hub's RSS passes this", intArg('--hub-rss-limit-mb', 64), 8192)
    .option('--wait-ms <ms>', 'bound of every other wait (entanglement, each latency phase)', intArg('--wait-ms', 1000), 180_000)
    .option('--ramp-ms <ms>', 'the peers come up one after another over this long', intArg('--ramp-ms', 0), 2000)
    .option('--no-redis', 'skip the Redis baseline (Debian redis-server, `make redis-deps`)')
    .option('--base-port <port>', 'hub base (UDP), peers base+1 on 127.1.x.y (UDP), Redis base+2 (TCP)', intArg('--base-port', 1024), 47600)
    .option('--json', 'print one JSON object', false)
    .action(async (o: Omit<import('../../bench/scale.js').ScaleBenchOptions, 'log'> & { json: boolean }) => {
      const { runScaleBench, formatScaleBench } = await load<typeof import('../../bench/scale.js')>('../../bench/scale.js');
      const r = await runScaleBench({ ...o, log: (l) => console.error(l) });
      if (o.json) console.log(JSON.stringify(r, null, 2));
      else for (const l of formatScaleBench(r)) console.log(l);
    });
  bench
    .command('domain')
    .description(
      'three spookd on loopback in a QN domain: committed collapses/s and p50/p99 against a 3-member etcd in the same run (etcd3 client, same load), pair sets/s on the same daemons, catch-up time and bytes after a follower misses updates, full state size',
    )
    .option('--deltas <n>', 'candidates for the throughput figure (also the number of keys)', intArg('--deltas', 100), 20_000)
    .option('--missed <n>', 'updates committed while a follower is stopped', intArg('--missed', 1), 10_000)
    .option('--gap-keys <n>', 'distinct keys the missed updates rewrite', intArg('--gap-keys', 1), 1_000)
    .option('--fsync <policy>', "Spook's: always | everysec | never (etcd always fsyncs)", 'always')
    .option('--limit-ms <ms>', 'the most one load phase may last', intArg('--limit-ms', 1000), 300_000)
    .option(
      '--base-port <port>',
      'Spook: base..base+2 (UDP); etcd: base+10..base+15 (TCP), all on loopback',
      intArg('--base-port', 1024),
      47400,
    )
    .option('--json', 'print one JSON object', false)
    .action(
      async (o: { deltas: number; missed: number; gapKeys: number; fsync: string; limitMs: number; basePort: number; json: boolean }) => {
        const { runDomainBench } = await load<typeof import('../../bench/domain.js')>('../../bench/domain.js');
        const r = await runDomainBench(o);
        if (o.json) console.log(JSON.stringify(r, null, 2));
        else for (const [k, v] of Object.entries(r)) console.log(`${k.padEnd(20)}${v}`);
      },
    );
  bench
    .command('library')
    .description(
      'the application library vs the etcd3 client on a 3-member etcd, same run: sets/s with N in flight (p50/p99 per call) and watch events/s delivered at the far end',
    )
    .option('--sets <n>', 'sets (etcd: puts) per system, each on its own key', intArg('--sets', 1), 20_000)
    .option('--inflight <n>', 'calls awaiting at once', intArg('--inflight', 1), 256)
    .option('--value-bytes <n>', 'bytes per value', intArg('--value-bytes', 8), 100)
    .option('--fsync <policy>', "Spook's: always | everysec | never (etcd always fsyncs)", 'always')
    .option('--no-domain', 'skip the 3-member Spook domain row')
    .option('--limit-ms <ms>', 'the most the load phase of one system may last', intArg('--limit-ms', 1000), 300_000)
    .option(
      '--base-port <port>',
      'Spook: base..base+2 (UDP); etcd: base+10..base+15 (TCP), all on loopback',
      intArg('--base-port', 1024),
      47900,
    )
    .option('--json', 'print one JSON object', false)
    .action(
      async (o: {
        sets: number;
        inflight: number;
        valueBytes: number;
        fsync: string;
        domain: boolean;
        limitMs: number;
        basePort: number;
        json: boolean;
      }) => {
        const { runLibraryBench, formatLibraryBench } = await load<typeof import('../../bench/library.js')>('../../bench/library.js');
        const r = await runLibraryBench({ ...o, log: o.json ? undefined : (l) => console.error(l) });
        if (o.json) console.log(JSON.stringify(r, null, 2));
        else for (const l of formatLibraryBench(r)) console.log(l);
      },
    );
  bench
    .command('wrap')
    .description(
      'two hosts in namespaces (root), wrapped vs direct and the tunnels users know, part by part (--only): transfers, pgbench, delta mode, connects, speed',
    )
    .option('--bytes <n>', 'bytes per transfer', intArg('--bytes', 1), 1 << 30)
    .option('--pgbench-seconds <n>', 'length of each pgbench run (0: skip)', intArg('--pgbench-seconds', 0), 10)
    .option('--base-port <port>', 'spookd UDP/TCP ports in the namespaces', intArg('--base-port', 1024), 47600)
    .option('--connections <n>', 'new connections per rate figure (speed part)', intArg('--connections', 10), 3000)
    .option('--only <parts>', 'run only these parts, comma-separated: base, connect, speed, resume, restart (default: all, in that order)')
    .option('--resume-long', 'the resume part also cuts for 2 min', false)
    .option('--json', 'print one JSON object', false)
    .action(
      async (o: {
        bytes: number;
        pgbenchSeconds: number;
        basePort: number;
        connections: number;
        only?: string;
        resumeLong: boolean;
        json: boolean;
      }) => {
        const { wrapBenchParts, runWrapBenchParts, formatWrapBenchParts } =
          await load<typeof import('../../bench/wrap-parts.js')>('../../bench/wrap-parts.js');
        let parts: ReturnType<typeof wrapBenchParts>;
        try {
          parts = wrapBenchParts(o.only);
        } catch (e) {
          process.stderr.write(`spook-lab: ${(e as Error).message}\n`);
          process.exit(2);
        }
        const r = await runWrapBenchParts(parts, { ...o, log: o.json ? undefined : (l) => console.error(l) });
        if (o.json) console.log(JSON.stringify(r, null, 2));
        else for (const l of formatWrapBenchParts(r)) console.log(l);
      },
    );
  bench
    .command('attack')
    .description(
      "three identities on loopback: a victim pair's p99 commit latency unattacked, then while one authorised peer floods reconciliation requests, handshakes and wrapped connections",
    )
    .option('--keys <n>', "entries in the attacked pair's map (what each reconciliation pin covers)", intArg('--keys', 1), 50_000)
    .option('--writes <n>', 'timed writes per phase, spread over it (at least 200 for a p99)', intArg('--writes', 100), 500)
    .option('--attack-ms <ms>', 'length of each attack (and the most a phase lasts)', intArg('--attack-ms', 1000), 10_000)
    .option('--recon-rate <n>', 'fresh-pin reconciliation requests per second', intArg('--recon-rate', 1), 50)
    .option(
      '--handshake-rate <n>',
      'HandshakeInits per second (half authorised and fresh, half an unauthorised replay)',
      intArg('--handshake-rate', 1),
      4000,
    )
    .option('--fsync <policy>', 'always | everysec | never', 'always')
    .option('--base-port <port>', 'first of three loopback UDP/TCP ports', intArg('--base-port', 1024), 47800)
    .option(
      '--attacker-nice <n>',
      "run the adversary under nice -n N (1-19): on one machine its own CPU use competes with the victim's; 0 does not",
      intArg('--attacker-nice', 0),
      0,
    )
    .option('--json', 'print one JSON object', false)
    .action(
      async (o: {
        keys: number;
        writes: number;
        attackMs: number;
        reconRate: number;
        handshakeRate: number;
        fsync: string;
        basePort: number;
        attackerNice: number;
        json: boolean;
      }) => {
        const { runAttackBench } = await load<typeof import('../../bench/attack.js')>('../../bench/attack.js');
        const r = await runAttackBench({ ...o, log: o.json ? undefined : (l) => console.error(l) });
        if (o.json) {
          console.log(JSON.stringify(r, null, 2));
          return;
        }
        console.log(
          `attacked map: ${r.keys.toLocaleString('en-US')} keys; ${r.reconRate} reconciliation requests/s, ${r.handshakeRate} handshakes/s; fsync ${r.fsync}${r.attackerNice ? `; adversary under nice -n ${r.attackerNice}` : ''}`,
        );
        console.log(
          `baseline: p99 ${r.baselineP99Ms.toFixed(1)} ms over ${r.baselineWrites} unattacked writes (the unattacked phases pooled)`,
        );
        console.log(
          'attack      writes  failed   p50 ms    p99 ms   p99 ratio (goal <= 2)  attacker sent/received  recovery ms  cpu ms v/x',
        );
        for (const p of r.phases) {
          const cells = [
            p.attack.padEnd(10),
            String(p.writes).padStart(7),
            String(p.failed).padStart(7),
            p.p50Ms.toFixed(1).padStart(8),
            p.p99Ms.toFixed(1).padStart(9),
            `${p.ratio.toFixed(2)}x`.padStart(11),
          ];
          console.log(
            `${cells.join(' ')}${' '.repeat(13)}${`${p.attackerSent}/${p.attackerReceived}`.padStart(22)}  ${String(p.recoveryMs).padStart(11)}  ${p.victimCpuMs}/${p.attackerCpuMs}${p.victimAlive ? '' : '  VICTIM DIED'}`,
          );
          if (p.attack !== 'none') {
            const v = Object.entries(p.victim).map(([k, n]) => `${k} ${n}`);
            console.log(
              `            victim: ${v.join(', ') || 'nothing counted'}; handshake replies: ${p.handshakeResponses} responses, ${p.cookieReplies} cookies`,
            );
          }
        }
      },
    );
  bench
    .command('xdp')
    .description(
      'ns per packet through BPF_PROG_TEST_RUN: valid, malformed, unknown-pair and non-ESTP packets vs a trivial XDP_PASS program (needs root)',
    )
    .option('--repeat <n>', 'repetitions per test run', intArg('--repeat', 1), 1_000_000)
    .option('--rounds <n>', 'test runs per packet kind (median reported)', intArg('--rounds', 1), 9)
    .option('--json', 'print one JSON object', false)
    .action(async (o: { repeat: number; rounds: number; json: boolean }) => {
      const { runXdpBench } = await load<typeof import('../../bench/xdp.js')>('../../bench/xdp.js');
      const r = runXdpBench(o.repeat, o.rounds);
      if (o.json) console.log(JSON.stringify(r, null, 2));
      else for (const [k, v] of Object.entries(r)) console.log(`${k.padEnd(18)}${v}`);
    });
  const list =
    (name: string) =>
    (v: string): number[] =>
      v.split(',').map((x) => intArg(name, 1)(x.trim()));
  bench
    .command('compare')
    .description(
      'Spook vs Yjs vs Automerge on one workload: bytes per update, catch-up bytes and time after K missed updates, updates/s, state memory',
    )
    .option('--sizes <list>', 'map sizes N', list('--sizes'), [1000, 10_000, 100_000, 1_000_000])
    .option('--ks <list>', 'missed updates K', list('--ks'), [10, 100, 1000, 10_000])
    .option('--updates <n>', 'steady-state updates per row', intArg('--updates', 10), 300)
    .option(
      '--warmup-ms <n>',
      'untimed rounds per system before its rows, for at least this long (JIT warm-up)',
      intArg('--warmup-ms', 0),
      1000,
    )
    .option('--max-yjs <n>', 'largest N for Yjs', intArg('--max-yjs', 1), 1_000_000)
    .option(
      '--max-yjs-websocket <n>',
      'largest N for Yjs over y-websocket (three docs; its bytes per update do not depend on N)',
      intArg('--max-yjs-websocket', 1),
      100_000,
    )
    .option('--max-automerge <n>', 'largest N for Automerge (its sync slows sharply with N)', intArg('--max-automerge', 1), 10_000)
    .option('--spacing <ms>', 'simulated ms between steady-state updates', intArg('--spacing', 0), 1)
    .option('--sparse-spacing <ms>', 'the same for the sparse figure (longer than maxAckDelayMs)', intArg('--sparse-spacing', 0), 100)
    .option('--out <file>', 'also write the rows as JSON to this file (input of bench/plot.ts)')
    .option('--json', 'print one JSON array', false)
    .option(
      '--breakdown',
      'only print what one Spook update puts on the wire, datagram by datagram (the profile behind bytes/update)',
      false,
    )
    .action(
      async (o: {
        sizes: number[];
        ks: number[];
        updates: number;
        warmupMs: number;
        maxYjs: number;
        maxYjsWebsocket: number;
        maxAutomerge: number;
        spacing: number;
        sparseSpacing: number;
        out?: string;
        json: boolean;
        breakdown: boolean;
      }) => {
        const { runCompare, updateBreakdown, websocketBreakdown } =
          await load<typeof import('../../bench/compare.js')>('../../bench/compare.js');
        if (o.breakdown) {
          const b = updateBreakdown();
          const w = websocketBreakdown();
          if (o.json) console.log(JSON.stringify({ ...b, 'yjs-websocket': w }, null, 2));
          else {
            for (const [side, r] of Object.entries(b)) {
              console.log(`a write at the ${side}: ${r.bytes} bytes (sealed UDP payloads)`);
              for (const d of r.datagrams)
                console.log(
                  `  +${String(d.atMs).padStart(2)} ms ${d.from.padEnd(10)} ${String(d.bytes).padStart(4)}  ${d.messages.join(' ')}`,
                );
            }
            console.log(`y-websocket, a write at one client: ${w.bytes} bytes (TLS records)`);
            for (const m of w.messages)
              console.log(`  ${m.hop.padEnd(28)} ${String(m.wire).padStart(4)}  update ${m.update}, sync message ${m.message}`);
          }
          return;
        }
        const rows = runCompare(
          {
            sizes: o.sizes,
            ks: o.ks,
            updates: o.updates,
            warmupMs: o.warmupMs,
            maxN: { yjs: o.maxYjs, 'yjs-websocket': Math.min(o.maxYjs, o.maxYjsWebsocket), automerge: o.maxAutomerge },
            spacingMs: o.spacing,
            sparseSpacingMs: o.sparseSpacing,
          },
          (r) => {
            if (!o.json)
              console.error(
                `${r.system.padEnd(13)} N=${String(r.n).padEnd(8)} K=${String(r.k).padEnd(6)} ${r.bytesPerUpdate} B/update (${r.bytesPerUpdateSparse} at ${r.sparseSpacingMs} ms)  catch-up ${r.catchUpBytes} B in ${r.catchUpMs} ms${r.catchUpPath ? ` by ${r.catchUpPath}` : ''}  ${r.updatesPerSec}/s  heap ${(r.stateHeapBytes / 1e6).toFixed(1)} MB  ${r.identical ? 'identical' : 'DIFFERENT'}`,
              );
          },
        );
        if (o.out) writeFileSync(o.out, `${JSON.stringify(rows, null, 2)}\n`);
        if (o.json) console.log(JSON.stringify(rows, null, 2));
      },
    );
  return bench;
}
