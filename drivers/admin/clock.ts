/**
 * The admin API's one clock: every instant is wall-clock epoch milliseconds (an integer), every
 * duration milliseconds (`…Ms`). The cores run on spookd's monotonic clock (Spookd.now() is
 * performance.now()); an instant on it is anchored to the wall clock at the process's start, so
 * instants never go backwards when the wall clock is set.
 */
export const epochMs = (mono: number): number => Math.round(performance.timeOrigin + mono);

/** How long until a deadline on the monotonic clock (0 when due). */
export const inMs = (mono: number): number => Math.max(0, Math.round(mono - performance.now()));
