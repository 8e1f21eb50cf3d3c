import { type DropReason, DROP_REASON_NAMES } from './constants.js';

/** A frame or field that breaks docs/PROTOCOL.md. `field` names what is at fault. */
export class WireError extends Error {
  constructor(
    readonly reason: DropReason,
    readonly field: string,
    detail: string,
  ) {
    super(`${DROP_REASON_NAMES[reason]}: ${field}: ${detail}`);
    this.name = 'WireError';
  }
}
