/**
 * `spook-lab demo`: two in-process endpoints share a map register over a simulated lossy
 * network (10% loss, duplication, reordering). The script shows a cas conflict decided
 * identically at both ends, a link cut (decoherence, buffered writes, re-entanglement
 * from the log), a longer cut that outruns the log (range-hash reconciliation), and the
 * final (version, hash) at both ends.
 */
import { DeltaOp } from '../../wire/delta.js';
import { hashHex } from '../../core/register/hash.js';
import { PairState } from '../../core/pair/lifecycle.js';
import type { MapState } from '../../core/register/map.js';
import { SimWorld, type SimEndpoint } from './world.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

export interface DemoResult {
  aligned: boolean;
  final: { endpoint: string; version: number; hash: string; keys: number }[];
  reentanglements: { endpoint: string; method: string; bytes: number }[];
}

export function runDemo(print: (line: string) => void, seed = 42): DemoResult {
  const world = new SimWorld(seed, { loss: 0.1, dup: 0.02, reorder: 0.05, minDelayMs: 5, maxDelayMs: 25 });
  const when = (ms: number): string => `${(ms / 1000).toFixed(2).padStart(6)}s`;
  const reentanglements: DemoResult['reentanglements'] = [];
  const bytesAtStart = new Map<string, number>();
  const watched = new Set<string>(); // candidates whose outcome the demo prints
  let committedWhileApart = 0;
  world.onEvent = (ep, ev) => {
    switch (ev.type) {
      case 'lifecycle':
        if (ev.to === PairState.COLLAPSING || (ev.from === PairState.COLLAPSING && ev.to === PairState.ENTANGLED)) return; // steady-state churn
        if (ev.to === PairState.REENTANGLING) bytesAtStart.set(ep.name, ep.pair.stats.reentangleBytes);
        if (ep === a && ev.from === PairState.DECOHERENT) {
          print(`${when(ev.at)}  A  committed ${committedWhileApart} versions while decoherent (B unreachable)`);
          committedWhileApart = 0;
        }
        print(`${when(ev.at)}  ${ep.name}  ${ev.from.padEnd(12)} -> ${ev.to.padEnd(12)} ${ev.cause}`);
        return;
      case 'outcome':
        if (ev.verdict === 'rejected' || watched.has(`${ev.origin}:${ev.seq}`)) {
          print(
            `${when(ev.at)}  ${ep.name}  candidate ${ev.origin}:${ev.seq} ${ev.verdict}${ev.verdict === 'rejected' ? ` (${ev.reason})` : ''} in v${ev.version}`,
          );
        }
        return;
      case 'collapse':
        if (ep === a && a.pair.state === PairState.DECOHERENT) committedWhileApart++;
        return;
      case 'reentangled': {
        const bytes = ep.pair.stats.reentangleBytes - (bytesAtStart.get(ep.name) ?? 0);
        reentanglements.push({ endpoint: ep.name, method: ev.method, bytes });
        print(
          `${when(ev.at)}  ${ep.name}  register ${ev.register} re-entangled by ${ev.method} at v${ev.version} (${bytes} bytes on the wire while re-entangling)`,
        );
        return;
      }
      default:
        return;
    }
  };
  const pairs = world.addPair(['A', 'B'], {
    pairId: 1,
    seed: 0x5eed,
    registers: [{ name: 'config', kind: 'map', policy: 'buffer', log: { maxRecords: 256, maxBytes: 1 << 20 } }],
  });
  const [a, b] = pairs;
  const set = (ep: SimEndpoint, k: string, v: string): string => {
    const id = ep.pair.propose(world.now, 'config', { op: DeltaOp.Set, key: enc.encode(k), value: enc.encode(v) });
    return `${id.origin}:${id.seq}`;
  };
  const cas = (ep: SimEndpoint, k: string, expect: number, v: string): void => {
    const id = ep.pair.propose(world.now, 'config', { op: DeltaOp.Cas, key: enc.encode(k), expect, value: enc.encode(v) });
    watched.add(`${id.origin}:${id.seq}`);
  };
  const note = (at: number, line: string): void => world.at(at, () => print(`${when(at)}  --  ${line}`));

  print('Spook demo: endpoints A (sequencer) and B share map register "config" over a simulated network');
  print('with 10% loss, 2% duplication and 5% reordering. Times are simulated.');
  print('');
  world.at(500, () => {
    set(a, 'region', 'eu-west');
    set(b, 'owner', 'bob');
  });
  note(1000, 'A and B both cas "leader" expecting version 0 (absent): exactly one can win, at both ends');
  world.at(1000, () => {
    cas(a, 'leader', 0, 'A');
    cas(b, 'leader', 0, 'B');
  });
  note(3000, 'link A<->B cut for 8 s; A keeps writing, B buffers its writes (policy buffer)');
  world.at(3000, () => {
    world.net.setLink('A', 'B', false);
    world.net.setLink('B', 'A', false);
  });
  for (let i = 0; i < 100; i++) world.at(3100 + i * 70, () => set(a, `counter/${i % 20}`, `${i}`));
  world.at(9000, () => {
    for (let i = 0; i < 3; i++) watched.add(set(b, `b-buffered/${i}`, 'written during the cut'));
    print(`${when(world.now)}  B  3 writes buffered as candidates while ${b.pair.state}`);
  });
  note(11000, "link restored: B catches up from A's delta log, its buffered writes then collapse");
  world.at(11000, () => {
    world.net.setLink('A', 'B', true);
    world.net.setLink('B', 'A', true);
  });
  note(15000, "link cut again for 10 s while A writes 600 updates: more than A's 256-record log holds");
  world.at(15000, () => {
    world.net.setLink('A', 'B', false);
    world.net.setLink('B', 'A', false);
  });
  for (let i = 0; i < 600; i++) world.at(15100 + i * 15, () => set(a, `bulk/${i % 150}`, `${i}`));
  note(25000, "link restored: the log no longer covers B's gap, so B reconciles by range hashes");
  world.at(25000, () => {
    world.net.setLink('A', 'B', true);
    world.net.setLink('B', 'A', true);
  });
  world.run(25000);
  const aligned = world.run(120_000, () => {
    const ra = a.pair.register('config');
    const rb = b.pair.register('config');
    return (
      a.pair.state === PairState.ENTANGLED &&
      b.pair.state === PairState.ENTANGLED &&
      ra.version === rb.version &&
      ra.hash.hi === rb.hash.hi &&
      ra.hash.lo === rb.hash.lo &&
      ra.pendingCount + rb.pendingCount === 0
    );
  });

  print('');
  const final = [a, b].map((ep) => {
    const r = ep.pair.register('config');
    return { endpoint: ep.name, version: r.version, hash: hashHex(r.hash), keys: r.state.size() };
  });
  for (const f of final) print(`${f.endpoint}: version ${f.version}  hash ${f.hash}  keys ${f.keys}`);
  const leader = (a.pair.register('config').state as MapState).get(enc.encode('leader'));
  print(`leader = ${leader ? dec.decode(leader.value) : '(none)'} at both ends`);
  const fulls = a.pair.stats.fullTransfers + b.pair.stats.fullTransfers;
  print(`${aligned ? 'ALIGNED' : 'NOT ALIGNED'}: same (version, hash) at both ends; full state transfers: ${fulls}`);
  return { aligned, final, reentanglements };
}
