import { describe, expect, it } from 'vitest';
import { IllegalTransition, Lifecycle, LifecycleEvent, PairState, nextState } from '../core/pair/lifecycle.js';

const S = PairState;
const E = LifecycleEvent;

const STATES = Object.values(PairState) as PairState[];
const EVENTS = Object.values(LifecycleEvent) as LifecycleEvent[];

/**
 * The expected table, written from the design independently of the source:
 *   FORMING -formed-aligned-> ENTANGLED, FORMING -formed-misaligned-> REENTANGLING,
 *   ENTANGLED -collapse-started-> COLLAPSING, COLLAPSING -collapse-settled-> ENTANGLED,
 *   ENTANGLED/COLLAPSING/REENTANGLING -peer-silent|hash-mismatch|unfillable-gap-> DECOHERENT,
 *   DECOHERENT -peer-heard-> REENTANGLING, REENTANGLING -aligned-> ENTANGLED,
 *   every state except CLOSED -close-> CLOSED,
 *   every state except CLOSED -internal-error-> DECOHERENT (the driver fenced the pair),
 *   every state except CLOSED -register-mismatch-> DECOHERENT (the peer's manifest differs, §6.3).
 */
const EXPECTED: Array<[PairState, LifecycleEvent, PairState]> = [
  [S.FORMING, E.FormedAligned, S.ENTANGLED],
  [S.FORMING, E.FormedMisaligned, S.REENTANGLING],
  [S.ENTANGLED, E.CollapseStarted, S.COLLAPSING],
  [S.COLLAPSING, E.CollapseSettled, S.ENTANGLED],
  [S.DECOHERENT, E.PeerHeard, S.REENTANGLING],
  [S.REENTANGLING, E.Aligned, S.ENTANGLED],
];
for (const from of [S.ENTANGLED, S.COLLAPSING, S.REENTANGLING]) {
  for (const ev of [E.PeerSilent, E.HashMismatch, E.UnfillableGap]) EXPECTED.push([from, ev, S.DECOHERENT]);
}
for (const from of [S.FORMING, S.ENTANGLED, S.COLLAPSING, S.DECOHERENT, S.REENTANGLING]) {
  EXPECTED.push([from, E.Close, S.CLOSED], [from, E.InternalError, S.DECOHERENT], [from, E.RegisterMismatch, S.DECOHERENT]);
}

function expected(from: PairState, ev: LifecycleEvent): PairState | undefined {
  return EXPECTED.find(([f, e]) => f === from && e === ev)?.[2];
}

/** Events that drive a fresh Lifecycle (in FORMING) into each state. */
const PATH: Record<PairState, LifecycleEvent[]> = {
  [S.FORMING]: [],
  [S.ENTANGLED]: [E.FormedAligned],
  [S.COLLAPSING]: [E.FormedAligned, E.CollapseStarted],
  [S.DECOHERENT]: [E.FormedAligned, E.HashMismatch],
  [S.REENTANGLING]: [E.FormedMisaligned],
  [S.CLOSED]: [E.Close],
};

function lifecycleIn(state: PairState): Lifecycle {
  const lc = new Lifecycle(0);
  PATH[state].forEach((ev, i) => lc.fire(i + 1, ev));
  expect(lc.state).toBe(state);
  return lc;
}

// The enums are what the table above assumes (6 states, 12 events).
describe('vocabulary', () => {
  it('has the six states and twelve events of the design', () => {
    expect([...STATES].sort()).toEqual(['CLOSED', 'COLLAPSING', 'DECOHERENT', 'ENTANGLED', 'FORMING', 'REENTANGLING']);
    expect([...EVENTS].sort()).toEqual(
      [
        'aligned',
        'close',
        'collapse-settled',
        'collapse-started',
        'formed-aligned',
        'formed-misaligned',
        'hash-mismatch',
        'internal-error',
        'peer-heard',
        'peer-silent',
        'register-mismatch',
        'unfillable-gap',
      ].sort(),
    );
    expect(EXPECTED).toHaveLength(30);
  });
});

// nextState agrees with the design table on every one of the 60 (state, event) pairs.
describe('nextState: every (state, event) pair', () => {
  for (const from of STATES) {
    for (const ev of EVENTS) {
      const to = expected(from, ev);
      if (to !== undefined) {
        it(`${from} -${ev}-> ${to}`, () => {
          expect(nextState(from, ev)).toBe(to);
        });
      } else {
        it(`${from} -${ev}-> IllegalTransition`, () => {
          let err: unknown;
          try {
            nextState(from, ev);
          } catch (e) {
            err = e;
          }
          expect(err).toBeInstanceOf(IllegalTransition);
          const ill = err as IllegalTransition;
          expect(ill.from).toBe(from);
          expect(ill.event).toBe(ev);
          expect(ill.message).toContain(from);
          expect(ill.message).toContain(ev);
        });
      }
    }
  }
});

// The Lifecycle object reports `can`, fires legal events, and is untouched by an illegal one.
describe('Lifecycle', () => {
  it('starts in FORMING at the given time', () => {
    const lc = new Lifecycle(1234);
    expect(lc.state).toBe(S.FORMING);
    expect(lc.since).toBe(1234);
    expect(lc.coherent).toBe(false);
  });

  for (const from of STATES) {
    it(`in ${from}: can() matches the table, fire() moves or throws without changing state`, () => {
      for (const ev of EVENTS) {
        const lc = lifecycleIn(from);
        const sinceBefore = lc.since;
        const to = expected(from, ev);
        expect(lc.can(ev), `${from} can ${ev}`).toBe(to !== undefined);
        if (to !== undefined) {
          expect(lc.fire(999, ev)).toBe(from);
          expect(lc.state).toBe(to);
          expect(lc.since).toBe(999);
        } else {
          expect(() => lc.fire(999, ev)).toThrow(IllegalTransition);
          expect(lc.state).toBe(from);
          expect(lc.since).toBe(sinceBefore);
        }
      }
    });
  }

  it('CLOSED is terminal: nothing can fire', () => {
    const lc = lifecycleIn(S.CLOSED);
    for (const ev of EVENTS) expect(lc.can(ev)).toBe(false);
  });

  it('coherent only in ENTANGLED and COLLAPSING', () => {
    for (const s of STATES) expect(lifecycleIn(s).coherent, s).toBe(s === S.ENTANGLED || s === S.COLLAPSING);
  });

  it('walks a full decoherence and re-entanglement cycle', () => {
    const lc = new Lifecycle(0);
    const steps: Array<[LifecycleEvent, PairState]> = [
      [E.FormedAligned, S.ENTANGLED],
      [E.CollapseStarted, S.COLLAPSING],
      [E.CollapseSettled, S.ENTANGLED],
      [E.CollapseStarted, S.COLLAPSING],
      [E.PeerSilent, S.DECOHERENT],
      [E.PeerHeard, S.REENTANGLING],
      [E.UnfillableGap, S.DECOHERENT],
      [E.PeerHeard, S.REENTANGLING],
      [E.Aligned, S.ENTANGLED],
      [E.Close, S.CLOSED],
    ];
    steps.forEach(([ev, to], i) => {
      lc.fire(10 * (i + 1), ev);
      expect(lc.state).toBe(to);
      expect(lc.since).toBe(10 * (i + 1));
    });
  });
});
