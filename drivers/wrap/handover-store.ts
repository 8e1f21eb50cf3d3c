/**
 * A restart of spookd under wrapped connections, through the service manager's descriptor
 * store (drivers/wrap/fdstore.ts): at stop, the wrap state (core/wrap/handover.ts) goes into a
 * memfd and, with every carried local socket, to $NOTIFY_SOCKET (FDSTORE=1); at start the next
 * process takes them back from LISTEN_FDS. A memfd rather than a file under the runtime
 * directory: it exists only inside the store, so a later unrelated start can never read a stale
 * state, and nothing is left on disk when the store is flushed (a stop rather than a restart).
 */
import type { Logger } from 'pino';
import { decodeHandover, encodeHandover, type HandoverState } from '../../core/wrap/handover.js';
import { closeQuietly, memfdWith, readWhole, sdNotify, storeFds, takeListenFds } from './fdstore.js';

export const STATE_FDNAME = 'spook-wrap-state';
const CONN_PREFIX = 'spook-wrap-';
export const connFdName = (i: number): string => `${CONN_PREFIX}${i}`;
/** The largest state read back (the per-peer quotas bound it far below this in practice). */
const MAX_STATE_BYTES = 2 ** 31 - 1;
/** Entries left out of a state named in its warning (the rest are counted). */
const DROPPED_NAMED = 8;

export interface Inherited {
  state: HandoverState;
  /** Descriptor by the index the state names (FDNAME spook-wrap-<index>). */
  fds: Map<number, number>;
}

/**
 * The state and sockets the previous process stored, or undefined (none, or refused: then every
 * inherited descriptor of ours is closed and the start is a fresh one, with a warning). Each name
 * taken is removed from the store, so a later restart never hands the same socket over twice.
 * A connection or peer of the state that does not check out is left out of it (a warning):
 * its socket stays among `fds`, unnamed by the state, and restoreHandover closes it; every
 * other peer's connections are taken over (one bad entry never costs every peer its own).
 */
export function takeHandover(
  log: Logger,
  env: NodeJS.ProcessEnv = process.env,
  listen: { fd: number; name: string }[] = takeListenFds(env),
): Inherited | undefined {
  const all = listen.filter((f) => f.name.startsWith(CONN_PREFIX));
  if (all.length === 0) return undefined;
  for (const f of all) sdNotify(`FDSTOREREMOVE=1\nFDNAME=${f.name}\n`, env);
  const closeAll = (): void => all.forEach((f) => closeQuietly(f.fd));
  const stateFd = all.find((f) => f.name === STATE_FDNAME);
  if (!stateFd) {
    log.warn({ descriptors: all.length }, 'wrap handover: sockets without a state: they are reset, a fresh start');
    closeAll();
    return undefined;
  }
  let state: HandoverState;
  let dropped = 0;
  const faults: string[] = [];
  try {
    state = decodeHandover(readWhole(stateFd.fd, MAX_STATE_BYTES), (e) => {
      if (dropped++ < DROPPED_NAMED) faults.push(e.message);
    });
  } catch (e) {
    log.warn({ error: (e as Error).message }, 'wrap handover refused: its sockets are reset, a fresh start');
    // Not the state's: `finally` closes it, and a second close could hit a descriptor reopened under its number.
    all.forEach((f) => f.fd !== stateFd.fd && closeQuietly(f.fd));
    return undefined;
  } finally {
    closeQuietly(stateFd.fd);
  }
  if (dropped > 0)
    log.warn({ dropped, faults }, 'wrap handover: entries of the state left out: their connections are reset, the others taken over');
  const fds = new Map<number, number>();
  for (const f of all) {
    const i = Number(f.name.slice(CONN_PREFIX.length));
    if (f.name !== STATE_FDNAME && Number.isSafeInteger(i) && i >= 0 && !fds.has(i)) fds.set(i, f.fd);
    else if (f.fd !== stateFd.fd) closeQuietly(f.fd);
  }
  return { state, fds };
}

/**
 * Store the state, then the sockets (index i as spook-wrap-<i>); throws with the failing call, after
 * taking back (FDSTOREREMOVE) what it stored. The state goes first: a store smaller than we were
 * told (FileDescriptorStoreMax= lowered, SPOOK_FDSTORE not) keeps the first descriptors and closes
 * the rest (systemd 252: "Cannot store more fds than FileDescriptorStoreMax="), so the state and the
 * first sockets go on and only the last connections are reset, instead of every socket arriving
 * without its state.
 */
export function storeHandover(socket: string, state: HandoverState, fds: number[]): void {
  const stored: string[] = [];
  try {
    const mem = memfdWith(STATE_FDNAME, encodeHandover(state));
    try {
      storeFds(socket, [{ name: STATE_FDNAME, fd: mem }]);
      stored.push(STATE_FDNAME);
    } finally {
      closeQuietly(mem);
    }
    fds.forEach((fd, i) => {
      storeFds(socket, [{ name: connFdName(i), fd }]);
      stored.push(connFdName(i));
    });
  } catch (e) {
    // Nothing half-stored for the next process: the caller closes these connections.
    for (const name of stored) sdNotify(`FDSTOREREMOVE=1\nFDNAME=${name}\n`, { NOTIFY_SOCKET: socket });
    throw e;
  }
}
