/**
 * The domain journal's record limit covers every record the store writes (rev 1.34): the writer
 * refuses a larger one, a rewrite splits its Append records within it, and a record above the
 * readers' limit that whole records follow is refused as damage, never cut as a torn tail.
 */
import { describe, expect, it } from 'vitest';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hash } from '../crypto/primitives.js';
import { FileDomainStore } from '../drivers/store/domain-store.js';
import { StoreError, readFramesChecked } from '../drivers/store/store.js';
import { MAX_QN_MESSAGE_LEN } from '../wire/qn.js';
import { JournalRecordType, MAX_JOURNAL_RECORD, MAX_PAIR_RECORD, decodeJournalRecord, frameRecord, readFrames } from '../wire/journal.js';
import { enc, tempDirs } from './helpers.js';

const tmp = tempDirs('journal-record-limit');
const sha = (...p: Uint8Array[]): Uint8Array => hash('SHA256', ...p);
const MiB = 1 << 20;

describe('journal record limit', () => {
  it('covers one QN message, with room for the indices the journal adds', () => {
    expect(MAX_JOURNAL_RECORD).toBeGreaterThanOrEqual(MAX_QN_MESSAGE_LEN + 4096 * 8);
  });

  it('the writer refuses a record above the limit, writing nothing', () => {
    const dir = tmp();
    const disk = new FileDomainStore(dir, 'always');
    disk.persist([{ kind: 'hard', term: 1, vote: 1 }]);
    const before = readFileSync(join(dir, 'journal'));
    const cmd = new Uint8Array(MAX_JOURNAL_RECORD);
    expect(() => disk.persist([{ kind: 'pending', seq: 1, cmd }])).toThrow(StoreError);
    expect(readFileSync(join(dir, 'journal'))).toEqual(before);
    disk.close();
    expect(() => frameRecord(new Uint8Array(11), sha, 10)).toThrow(RangeError);
  });

  it('a rewrite splits large entries into records within the limit, and reads them all back', () => {
    const dir = tmp();
    const disk = new FileDomainStore(dir, 'always');
    const entries = [1, 2, 3].map((index) => ({ term: 1, index, cmd: new Uint8Array(30 * MiB).fill(index) }));
    disk.persist([
      { kind: 'hard', term: 1, vote: 1 },
      // One Append each, as Raft writes them (at most one message's entries).
      ...entries.map((e) => ({ kind: 'append' as const, entries: [e] })),
      { kind: 'commit', index: 3 },
    ]);
    // A compaction that keeps them all rewrites the journal from the image.
    disk.persist([{ kind: 'compact', base: 0, baseTerm: 0, reset: false }]);
    disk.close();
    const buf = readFileSync(join(dir, 'journal'));
    const { records, end } = readFrames(buf, MAX_JOURNAL_RECORD, sha);
    expect(end).toBe(buf.length);
    const appends = records.map((r) => decodeJournalRecord(r.rec)).filter((r) => r.type === JournalRecordType.Append);
    expect(appends.length).toBe(2); // 60 MiB, then 30 MiB
    const again = new FileDomainStore(dir, 'always');
    expect(again.load().entries.map((e) => e.cmd[0])).toEqual([1, 2, 3]);
    again.close();
  }, 60_000);

  it('a record above the limit that whole records follow is damage, refused; at the very end, a tear', () => {
    const dir = tmp();
    const path = join(dir, 'log');
    const a = Buffer.from(frameRecord(enc('one'), sha));
    const big = Buffer.from(frameRecord(new Uint8Array(2048).fill(9), sha));
    const b = Buffer.from(frameRecord(enc('two'), sha));
    // Read with a limit of 1 KiB: `big` is over it.
    writeFileSync(path, Buffer.concat([a, big, b]));
    expect(() => readFramesChecked(path, readFileSync(path), 1024)).toThrow(/damaged record followed by whole records/);
    writeFileSync(path, Buffer.concat([a, big]));
    expect(readFramesChecked(path, readFileSync(path), 1024).end).toBe(a.length);
    appendFileSync(path, enc('x'));
    expect(readFramesChecked(path, readFileSync(path), MAX_PAIR_RECORD).end).toBe(a.length + big.length);
  });
});
