/**
 * The fragment queue full (§3.7.3): a large response waiting at the head of the outbox is kept
 * encoded, not encoded again for every datagram. In its own file: the encoder is wrapped to count.
 */
import { expect, it, vi } from 'vitest';

/** Bytes of large messages (longer than any payload) encoded, counted by wrapping the encoder. */
const encoded = vi.hoisted(() => ({ large: 0, bytes: 0 }));
vi.mock('../wire/messages.js', async (importOriginal) => {
  const mod = await importOriginal<typeof import('../wire/messages.js')>();
  return {
    ...mod,
    encodeMessage: (m: Parameters<typeof mod.encodeMessage>[0]) => {
      const raw = mod.encodeMessage(m);
      if (raw.length > 1500 && m.type === mod.MsgType.ReconEntries) {
        encoded.large++;
        encoded.bytes += raw.length;
      }
      return raw;
    },
  };
});

import { PairState } from '../core/pair/lifecycle.js';
import { type MapState } from '../core/register/map.js';
import { DeltaOp } from '../wire/delta.js';
import { SimWorld } from '../testing/sim/world.js';

const te = new TextEncoder();
const KiB = 1024;
const MiB = 1024 * KiB;

it('large reconciliation answers that find the fragment queue full are encoded once each, not once per datagram', () => {
  const w = new SimWorld(21, { loss: 0, reorder: 0, dup: 0, minDelayMs: 1, maxDelayMs: 4 });
  const [a, b] = w.addPair(['A', 'B'], {
    pairId: 9,
    seed: 5,
    registers: [{ name: 'kv', kind: 'map', log: { maxRecords: 2, maxBytes: 64 * MiB } }],
  });
  w.run(2000, () => a.pair.state === PairState.ENTANGLED && b.pair.state === PairState.ENTANGLED);
  const cut = (up: boolean) => () => {
    w.net.setLink('A', 'B', up);
    w.net.setLink('B', 'A', up);
  };
  const N = 48;
  const SZ = 256 * KiB;
  const writer = a.pair.role === 'sequencer' ? a : b;
  w.at(w.now + 1, cut(false));
  w.at(w.now + 10, () => {
    for (let i = 0; i < N; i++)
      writer.pair.propose(w.now, 'kv', { op: DeltaOp.Set, key: te.encode(`k${i}`), value: new Uint8Array(SZ).fill(i) });
  });
  const other = writer === a ? b : a;
  w.run(w.now + 8000, () => other.pair.state === PairState.DECOHERENT);
  w.at(w.now + 1, cut(true));
  encoded.large = 0;
  encoded.bytes = 0;
  const ok = w.run(
    w.now + 120_000,
    () =>
      other.pair.state === PairState.ENTANGLED && (other.pair.register('kv').state as MapState).get(te.encode(`k${N - 1}`)) !== undefined,
    1,
  );
  console.log(
    `${N} values of ${SZ / KiB} KiB reconciled: ${encoded.large} large ReconEntries encoded, ${(encoded.bytes / MiB).toFixed(1)} MiB`,
  );
  expect(ok).toBe(true);
  // Before: 4,409 encodings, 1,102 MiB, to send 12 MiB (the head of the outbox encoded again for each datagram while the queue was full).
  expect(encoded.large).toBeLessThanOrEqual(2 * N);
  expect(encoded.bytes).toBeLessThanOrEqual(2 * N * SZ + MiB);
});
