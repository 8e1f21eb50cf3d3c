/**
 * A reload (SIGHUP, `spook reload`), as `wg syncconf`: the configuration read again and applied
 * to the running daemon, each change made without touching what did not change. Applied: peers
 * (added, removed, rekeyed, moved), wrappers (added, removed, reset, or updated in place),
 * wrap.allow, and pair registers' quotas. Everything else that differs is named by its field path
 * (`registers[config].kind`, `wrap.intercept`) and needs a restart.
 *
 * One function for both paths (`reloadFromFile`); Spookd.reload() refuses a second one while one
 * runs. The daemon's configuration (`Spookd.cfg`) is what runs: after a reload, the file's values
 * for what was applied, the old ones for what was refused or needs a restart.
 */
import { refusalSubject, type ReloadReport } from '../../client/protocol.js';
import { transportOf, wrapperKey, type WrapperKey } from '../../core/wrap/protocols.js';
import { parseDestination } from '../wrap/policy.js';
import { MapState } from '../../core/register/map.js';
import { mapMaxBytes, type Quota } from '../../core/register/quota.js';
import { ConfigError, loadConfig, type SpookdConfig } from './config.js';
import { decodeKey, encodeKey } from './keys.js';
import { checkPaths, formatProblems } from './preflight.js';
import { resolveEndpoints, type NamedEndpoint } from './resolve.js';
import type { Spookd } from './spookd.js';

export type { ReloadReport } from '../../client/protocol.js';

type Peer = SpookdConfig['peers'][number];
type Register = SpookdConfig['registers'][number];
type Wrapper = SpookdConfig['wrap']['wrappers'][number];

/** A pair register's fields a reload applies in place: its quota (core/register/quota.ts). */
export const LIVE_LIMITS = ['maxKeys', 'maxBytes', 'maxValueBytes'] as const;
/** A wrapper's fields a reload changes in place (for connections opened from then on); the rest reset it. */
const LIVE_WRAPPER_FIELDS = ['hold', 'delta', 'whenDown', 'connectTimeout'] as const;

/** Read `path`, check it as a start would, and apply it to `d`; logs what it did. Throws ConfigError, changing nothing, if the file is bad. */
export async function reloadFromFile(d: Spookd, path: string): Promise<ReloadReport> {
  let next: SpookdConfig;
  let named: Map<string, NamedEndpoint>;
  try {
    const read = loadConfig(path);
    const problems = checkPaths(read, d.key);
    if (problems.length > 0)
      throw new ConfigError(
        formatProblems(path, problems),
        problems.map((p) => p.field),
      );
    // A name that does not resolve now is not fatal, as at a start: its peer is added without an endpoint and looked up again.
    ({ cfg: next, named } = await resolveEndpoints(read, d.nameLookup));
    // A running peer whose name does not resolve now keeps the address it has (a resolver's hiccup moves nothing).
    const was = new Map(d.cfg.peers.map((x) => [x.name, x.endpoint]));
    next = {
      ...next,
      peers: next.peers.map((x) => (x.endpoint === undefined && named.has(x.name) ? { ...x, endpoint: was.get(x.name) } : x)),
    };
  } catch (e) {
    d.log.error(`reload failed, nothing changed: ${(e as Error).message}`);
    throw e;
  }
  try {
    const r = await applyConfig(d, next, path);
    // The peers given by name that run now (added by this reload too) are looked up again while they do not answer.
    const running = new Set(d.cfg.peers.map((x) => x.name));
    d.setNamed(new Map([...named].filter(([peer]) => running.has(peer))));
    logReport(d, r);
    return r;
  } catch (e) {
    // A bug (each change is made alone and a failed one refused): say so, never "nothing changed".
    d.log.error(
      { err: e },
      `reload failed partway: what it changed before stays applied (the running configuration says what runs): ${(e as Error).message}`,
    );
    throw e;
  }
}

function logReport(d: Spookd, r: ReloadReport): void {
  const w = r.wrappers;
  d.log.info(
    { ...r },
    `reloaded ${r.config}: ${r.added.length} peer(s) added, ${r.removed.length} removed, ${r.rekeyed.length} rekeyed, ${r.moved.length} moved; ` +
      `${w.added.length} wrapper(s) added, ${w.removed.length} removed, ${w.reset.length} reset, ${w.updated.length} updated; ` +
      `${r.limits.length} register(s) with new limits${r.allowChanged ? '; wrap.allow replaced' : ''}`,
  );
  if (w.reset.length > 0) d.log.warn({ wrappers: w.reset }, `wrappers reset (their connections too): ${w.reset.join(', ')}`);
  for (const l of r.limits)
    for (const o of l.over)
      d.log.warn(
        { register: l.register, peer: o.peer, keys: o.keys, bytes: o.bytes },
        `register ${l.register} of pair ${o.peer} holds more than its new limits (${o.keys} keys, ${o.bytes} bytes): kept, further growth refused`,
      );
  if (r.needRestart.length > 0) d.log.warn({ fields: r.needRestart }, `changed, applied only at a restart: ${r.needRestart.join(', ')}`);
  for (const x of r.refused) d.log.warn({ ...x }, `reload left ${refusalSubject(x)} as it was: ${x.reason}`);
}

// ---- what differs ----

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const named = (v: unknown): v is { name: string }[] => Array.isArray(v) && v.every((x) => isObject(x) && typeof x.name === 'string');
const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** The paths of the fields of `b` that differ from `a`'s: objects by key, lists of named items by name (`domains[d].members`), else whole. */
function diffPaths(a: unknown, b: unknown, path: string, out: string[]): void {
  if (same(a, b)) return;
  if (isObject(a) && isObject(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) diffPaths(a[k], b[k], path ? `${path}.${k}` : k, out);
    return;
  }
  if (named(a) && named(b)) {
    const am = new Map(a.map((x) => [x.name, x]));
    const bm = new Map(b.map((x) => [x.name, x]));
    for (const n of new Set([...am.keys(), ...bm.keys()])) diffPaths(am.get(n), bm.get(n), `${path}[${n}]`, out);
    return;
  }
  out.push(path);
}

/** What applies only at a restart: everything but peers, wrappers, wrap.allow and pair registers' quotas. */
export function restartFields(current: SpookdConfig, next: SpookdConfig): string[] {
  const strip = (c: SpookdConfig): Record<string, unknown> => ({
    ...c,
    peers: undefined,
    registers: c.registers.map((r) =>
      Object.fromEntries(Object.entries(r).filter(([k]) => !(LIVE_LIMITS as readonly string[]).includes(k))),
    ),
    wrap: { ...c.wrap, wrappers: undefined, allow: undefined },
  });
  const out: string[] = [];
  diffPaths(strip(current), strip(next), '', out);
  return out;
}

const keyOf = (w: Wrapper): WrapperKey => wrapperKey(transportOf(w.protocol), w.port);

/** The name of the peer `ref` (a name or a public key) in `peers`, or `ref` itself. */
function peerIn(peers: readonly Peer[], ref: string): string {
  if (peers.some((p) => p.name === ref)) return ref;
  try {
    const k = encodeKey(decodeKey(ref, 'peer'));
    return peers.find((p) => p.publicKey === k)?.name ?? ref;
  } catch {
    return ref;
  }
}

// ---- applying ----

/** What a reload has made run so far (applyConfig): the running configuration is rebuilt from it, even if the reload fails partway. */
interface Applied {
  /** Running wrappers by key. */
  running: Map<WrapperKey, Wrapper>;
  allow: SpookdConfig['wrap']['allow'];
  /** Pair registers as they run (the old ones, each replaced once its new quota applies). */
  registers: Register[];
  /** Peers whose endpoint did not move (the change failed): their old entry still runs. */
  unmoved: Set<string>;
}

/**
 * Apply `next` to `d`, whose running configuration is `d.cfg`; then `d.cfg` is what runs. Each
 * change is made alone (a failed one is `refused`); should something still throw, `d.cfg` is
 * what runs all the same (never the configuration from before the changes already made).
 */
export async function applyConfig(d: Spookd, next: SpookdConfig, config = '(configuration)'): Promise<ReloadReport> {
  const current = d.cfg;
  const applied: Applied = {
    running: new Map(current.wrap.wrappers.map((w) => [keyOf(w), w])),
    allow: current.wrap.allow,
    registers: [...current.registers],
    unmoved: new Set(),
  };
  try {
    return await applyChanges(d, current, next, config, applied);
  } finally {
    d.cfg = running(d, current, next, applied);
  }
}

/** The running configuration after `applied`: each running pair's entry, the file's where the reload applied it, else the old one. */
function running(d: Spookd, current: SpookdConfig, next: SpookdConfig, applied: Applied): SpookdConfig {
  const was = new Map(current.peers.map((p) => [p.name, p]));
  const now = new Map(next.peers.map((p) => [p.name, p]));
  const keyIs = (p: Peer | undefined, key: Uint8Array): boolean =>
    p !== undefined && Buffer.from(decodeKey(p.publicKey, p.name)).equals(key);
  const peers: Peer[] = [];
  for (const [name, link] of d.links) {
    const p = [applied.unmoved.has(name) ? undefined : now.get(name), was.get(name)].find((x) => keyIs(x, link.publicKey));
    if (p) peers.push(p);
  }
  return {
    ...current,
    peers,
    registers: applied.registers,
    wrap: { ...current.wrap, wrappers: [...applied.running.values()], allow: applied.allow },
  };
}

async function applyChanges(d: Spookd, current: SpookdConfig, next: SpookdConfig, config: string, applied: Applied): Promise<ReloadReport> {
  const { running, registers, unmoved } = applied;
  const r: ReloadReport = {
    config,
    added: [],
    removed: [],
    rekeyed: [],
    moved: [],
    wrappers: { added: [], removed: [], reset: [], updated: [] },
    allowChanged: false,
    limits: [],
    needRestart: restartFields(current, next),
    refused: [],
  };
  const attempt = async (refusal: { peer: string } | { wrapper: string } | { register: string } | { field: string }, f: () => unknown) => {
    try {
      await f();
      return true;
    } catch (e) {
      r.refused.push({ ...refusal, reason: (e as Error).message });
      return false;
    }
  };

  const was = new Map(current.peers.map((p) => [p.name, p]));
  const now = new Map(next.peers.map((p) => [p.name, p]));
  /** Peers whose pair goes (removed, or rekeyed): their wrappers go first (removePeer refuses while one names it). */
  const going = new Set([...was.keys()].filter((n) => !now.has(n) || now.get(n)!.publicKey !== was.get(n)!.publicKey));

  // Wrappers: the running ones (keyed), what the file says, and what is to be done.
  const wanted = new Map(next.wrap.wrappers.map((w) => [keyOf(w), w]));
  const toRemove: WrapperKey[] = [];
  const toAdd: WrapperKey[] = [];
  const toUpdate: WrapperKey[] = [];
  for (const [k, w] of running) {
    const n = wanted.get(k);
    const peer = peerIn(current.peers, w.peer);
    if (!n) toRemove.push(k);
    else if (n.protocol !== w.protocol || peerIn(next.peers, n.peer) !== peer || going.has(peer)) {
      toRemove.push(k);
      toAdd.push(k);
    } else if (LIVE_WRAPPER_FIELDS.some((f) => !same(w[f], n[f]))) toUpdate.push(k);
  }
  for (const k of wanted.keys()) if (!running.has(k)) toAdd.push(k);

  for (const k of toRemove) {
    const w = running.get(k)!;
    if (await attempt({ wrapper: k }, () => d.wraps.remove(w.port, transportOf(w.protocol)))) {
      running.delete(k);
      if (!toAdd.includes(k)) r.wrappers.removed.push(k);
    }
  }

  // Peers: as `wg syncconf`, each one alone.
  const peerAttempt = (name: string, f: () => unknown): Promise<boolean> => attempt({ peer: name }, f);
  for (const [name] of was) if (!now.has(name) && (await peerAttempt(name, () => d.removePeer(name)))) r.removed.push(name);
  for (const [name, p] of now) {
    const old: Peer | undefined = was.get(name);
    if (!old) {
      if (await peerAttempt(name, () => d.addPeer(p))) r.added.push(name);
    } else if (old.publicKey !== p.publicKey) {
      if ((await peerAttempt(name, () => d.removePeer(name))) && (await peerAttempt(name, () => d.addPeer(p)))) r.rekeyed.push(name);
    } else if (old.endpoint !== p.endpoint) {
      if (await peerAttempt(name, () => d.moveEndpoint(name, p.endpoint))) r.moved.push(name);
      else unmoved.add(name);
    }
  }

  for (const k of toAdd) {
    const w = wanted.get(k)!;
    if (await attempt({ wrapper: k }, () => d.wraps.add(d.wrapperSpec(w)))) {
      running.set(k, w);
      (toRemove.includes(k) ? r.wrappers.reset : r.wrappers.added).push(k);
    }
  }
  for (const k of toUpdate) {
    const w = wanted.get(k)!;
    const update = (): void => {
      const s = d.wrapperSpec(w);
      d.wraps.update(k, { holdMs: s.holdMs, delta: s.delta, whenDown: s.whenDown, connectTimeoutMs: s.connectTimeoutMs });
    };
    if (await attempt({ wrapper: k }, update)) {
      running.set(k, w);
      r.wrappers.updated.push(k);
    }
  }

  // The dial policy holds peers by name, and a rule may name a key: compiled again whenever the
  // rules or the peers changed, so a key's grant follows the key, never a name it had.
  const peersChanged = r.added.length + r.removed.length + r.rekeyed.length > 0;
  if (!same(current.wrap.allow, next.wrap.allow) || peersChanged) {
    // Rule by rule: one naming a peer not configured (its addition refused) is left out and
    // reported; the others, and every revocation, apply (a rule left out grants nothing).
    const kept: SpookdConfig['wrap']['allow'] = [];
    for (const [i, rule] of next.wrap.allow.entries())
      if (await attempt({ field: `wrap.allow[${i}]` }, () => parseDestination(d.allowRules([rule])[0].to))) kept.push(rule);
    const rules = d.allowRules(kept);
    if (!same(d.wraps.policy.rules, rules)) {
      d.wraps.setAllow(rules);
      r.allowChanged = true;
    }
    applied.allow = kept;
  }

  // Pair registers' quotas: the same register in both (adding one, or changing its kind, needs a restart).
  const nextRegs = new Map(next.registers.map((x) => [x.name, x]));
  for (const [i, reg] of current.registers.entries()) {
    const n = nextRegs.get(reg.name);
    const changed = n ? LIVE_LIMITS.filter((f) => reg[f] !== n[f]) : [];
    if (!n || changed.length === 0 || n.kind !== reg.kind) continue;
    const quota: Quota = { maxKeys: n.maxKeys, maxBytes: n.maxBytes, maxValueBytes: n.maxValueBytes };
    if (await attempt({ register: reg.name }, () => d.setRegisterQuota(reg.name, quota))) {
      registers[i] = { ...reg, ...quota };
      r.limits.push({ register: reg.name, changed: [...changed], over: overQuota(d, reg.name, quota) });
    }
  }
  return r;
}

/** The pairs whose register `name` holds more than `q` allows (kept; growth refused). */
function overQuota(d: Spookd, name: string, q: Quota): ReloadReport['limits'][number]['over'] {
  const over: ReloadReport['limits'][number]['over'] = [];
  for (const link of d.links.values()) {
    const r = link.pair.registers.get(name);
    if (!r) continue;
    const map = r.state instanceof MapState;
    const keys = map ? r.state.size() : 0;
    const bytes = r.state.fullTransferBytes();
    if (keys > q.maxKeys || bytes > (map ? mapMaxBytes(q) : q.maxBytes)) over.push({ peer: link.name, keys, bytes });
  }
  return over;
}
