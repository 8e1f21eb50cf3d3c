/**
 * The files that keep HandshakeInit timestamps across restarts (PROTOCOL.md §12.2.1): a peer's
 * `last-init` (the highest accepted from it) and this host's `@init-lease` (none sent above it).
 * Each holds one decimal integer and a newline, replaced atomically (written aside, fsynced,
 * renamed): a crash or a failed write leaves the old value or the new, never an empty file.
 */
import { readFileSync } from 'node:fs';
import { replaceFile, writeAtomic } from '../store/store.js';

/** In `<dataDir>`; `@` is in no peer name, so no peer's directory can be called this. */
export const INIT_LEASE_FILE = '@init-lease';

/** The timestamp in `path`; undefined if there is no such file. Anything but one safe non-negative integer throws. */
export function readTimestamp(path: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  // Not Number(): it reads '' (a torn write) and ' ' as 0, '0x10' as 16, '1e3' as 1000.
  if (!/^\d{1,16}\n?$/.test(text) || !Number.isSafeInteger(Number(text)))
    throw new Error(`not a timestamp: ${JSON.stringify(text.slice(0, 40))}`);
  return Number(text);
}

/**
 * Replace `path` (in directory `dir`, which exists) with `ts`: written aside, then renamed over
 * it, so a reader sees the old value or the new. `durable`: fsynced first (the file) and after
 * (the directory), two fsyncs on the event loop. `last-init` is not durable: it is rewritten for
 * each accepted init (a hub re-handshaking 1,000 peers would block 0.5-1 s in fsyncs), a crash
 * leaves the value before at worst (an init accepted since stays refused for the process's
 * life, and replays of it after a restart cost a DH and form nothing), and a damaged one is
 * taken as the host's clock at start.
 */
export function writeTimestamp(path: string, ts: number, dir: string, durable = true): void {
  const data = Buffer.from(`${ts}\n`);
  if (durable) writeAtomic(path, data, dir);
  else replaceFile(path, data);
}
