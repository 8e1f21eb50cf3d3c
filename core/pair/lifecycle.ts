/**
 * The pair lifecycle as an explicit transition table (docs/PROTOCOL.md §6).
 * A transition not in the table throws: the state machine never moves silently.
 */

export enum PairState {
  FORMING = 'FORMING',
  ENTANGLED = 'ENTANGLED',
  COLLAPSING = 'COLLAPSING',
  DECOHERENT = 'DECOHERENT',
  REENTANGLING = 'REENTANGLING',
  CLOSED = 'CLOSED',
}

export enum LifecycleEvent {
  /** First contact: both ends already agree on every register. */
  FormedAligned = 'formed-aligned',
  /** First contact: some register needs catching up or reconciling. */
  FormedMisaligned = 'formed-misaligned',
  /** A collapse is in flight: committed here, not yet confirmed by the peer (or own candidates await their outcome). */
  CollapseStarted = 'collapse-started',
  /** Every collapse is confirmed by the peer with a matching hash, and no candidate awaits its outcome. */
  CollapseSettled = 'collapse-settled',
  /** Decoherence triggers (§7). */
  PeerSilent = 'peer-silent',
  HashMismatch = 'hash-mismatch',
  UnfillableGap = 'unfillable-gap',
  /** A valid frame from the peer after decoherence. */
  PeerHeard = 'peer-heard',
  /** Every register is at the peer's (version, hash). */
  Aligned = 'aligned',
  Close = 'close',
  /**
   * The driver fenced the pair: handling it threw, so an invariant no longer holds. The pair is
   * decoherent and no longer driven (no frame in or out) until the process restarts from disk.
   */
  InternalError = 'internal-error',
  /**
   * The peer's register manifest differs from this end's (§6.3): the pair is DECOHERENT and stays
   * so (no peer-heard) until a manifest equal to this end's arrives (the configuration was fixed).
   */
  RegisterMismatch = 'register-mismatch',
}

const S = PairState;
const E = LifecycleEvent;
const DECOHERE = [E.PeerSilent, E.HashMismatch, E.UnfillableGap, E.RegisterMismatch] as const;

/** The whole table. Anything absent is illegal. */
export const TRANSITIONS: ReadonlyMap<PairState, ReadonlyMap<LifecycleEvent, PairState>> = new Map([
  [
    S.FORMING,
    new Map([
      [E.FormedAligned, S.ENTANGLED],
      [E.FormedMisaligned, S.REENTANGLING],
      [E.RegisterMismatch, S.DECOHERENT],
      [E.Close, S.CLOSED],
    ]),
  ],
  [
    S.ENTANGLED,
    new Map<LifecycleEvent, PairState>([
      [E.CollapseStarted, S.COLLAPSING],
      ...DECOHERE.map((e) => [e, S.DECOHERENT] as const),
      [E.Close, S.CLOSED],
    ]),
  ],
  [
    S.COLLAPSING,
    new Map<LifecycleEvent, PairState>([
      [E.CollapseSettled, S.ENTANGLED],
      ...DECOHERE.map((e) => [e, S.DECOHERENT] as const),
      [E.Close, S.CLOSED],
    ]),
  ],
  [
    S.DECOHERENT,
    new Map([
      [E.PeerHeard, S.REENTANGLING],
      // A mismatch found (or changed) while decoherent for another cause: recorded as the cause.
      [E.RegisterMismatch, S.DECOHERENT],
      [E.Close, S.CLOSED],
    ]),
  ],
  [
    S.REENTANGLING,
    new Map<LifecycleEvent, PairState>([[E.Aligned, S.ENTANGLED], ...DECOHERE.map((e) => [e, S.DECOHERENT] as const), [E.Close, S.CLOSED]]),
  ],
  [S.CLOSED, new Map()],
]);
// Fencing is possible from every live state (it is the driver's last line of defence).
for (const s of [S.FORMING, S.ENTANGLED, S.COLLAPSING, S.DECOHERENT, S.REENTANGLING]) {
  (TRANSITIONS.get(s) as Map<LifecycleEvent, PairState>).set(E.InternalError, S.DECOHERENT);
}

export class IllegalTransition extends Error {
  constructor(
    readonly from: PairState,
    readonly event: LifecycleEvent,
  ) {
    super(`illegal lifecycle transition: ${event} in state ${from}`);
    this.name = 'IllegalTransition';
  }
}

export function nextState(from: PairState, event: LifecycleEvent): PairState {
  const to = TRANSITIONS.get(from)?.get(event);
  if (to === undefined) throw new IllegalTransition(from, event);
  return to;
}

export class Lifecycle {
  private current: PairState = PairState.FORMING;
  private enteredAt: number;

  constructor(now: number) {
    this.enteredAt = now;
  }

  get state(): PairState {
    return this.current;
  }

  get since(): number {
    return this.enteredAt;
  }

  can(event: LifecycleEvent): boolean {
    return TRANSITIONS.get(this.current)?.has(event) ?? false;
  }

  /** Apply `event`; returns the previous state. Throws IllegalTransition if the table has no entry. */
  fire(now: number, event: LifecycleEvent): PairState {
    const from = this.current;
    this.current = nextState(from, event);
    this.enteredAt = now;
    return from;
  }

  /** States in which collapse proceeds and writes are accepted without a policy. */
  get coherent(): boolean {
    return this.current === PairState.ENTANGLED || this.current === PairState.COLLAPSING;
  }
}
